"""Drift between the lockfile and today: stale units and hand-edited outputs.

The lockfile records, per unit, the hash of the spec slice the unit was
generated from and the hash of every file it wrote. A unit whose slice hash no
longer matches was generated from a spec that has since changed; an output
whose bytes no longer match was edited (or deleted) by hand, and will be
overwritten or silently disagree with its transcript.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from allium import ast
from allium.diagnostics import Diagnostic, warning
from allium.verify.package import PackageLayout
from allium.verify.report import EDITED_OUTPUT, STALE_UNIT, file_span


def find_drift(layout: PackageLayout, modules: Mapping[str, ast.Module]) -> list[Diagnostic]:
    """staleUnit and editedOutput findings; none when the package has no lockfile."""
    if layout.lockfile is None:
        return []
    from allium.generate import lockfile as lf  # deferred: only packages with a lockfile need it

    lock = lf.load(layout.lockfile)
    if lock is None:
        return []
    return [*_stale(lock, modules), *_edited(lock, layout)]


def current_slices(modules: Mapping[str, ast.Module], package: str) -> tuple[dict[str, str], dict[str, str]]:
    """(unit -> spec slice hash, unit -> spec file) for the spec set as it is now."""
    from allium.generate.units import DEFAULT_PACKAGE, build_plan

    # Obligations play no part in slice hashes; skip deriving them twice.
    plan = build_plan(modules, package=package or DEFAULT_PACKAGE, obligations=lambda m: ())
    hashes = {u.name: u.slice_hash for u in plan.units}
    files = {name: plan.modules[name].path for name in hashes}
    return hashes, files


def _stale(lock: object, modules: Mapping[str, ast.Module]) -> list[Diagnostic]:
    from allium.generate import lockfile as lf
    from allium.generate.units import PlanError

    try:
        hashes, files = current_slices(modules, getattr(lock, "package", ""))
    except PlanError as exc:
        return [warning(STALE_UNIT, f"cannot tell which units are stale: {exc}")]
    out = []
    for name in lf.stale_units(lock, hashes):  # type: ignore[arg-type]
        known = name in lock.units  # type: ignore[attr-defined]
        why = ("its spec slice changed since it was generated" if known
               else "it has never been generated (not in the lockfile)")
        out.append(warning(
            STALE_UNIT, f"unit '{name}' is stale: {why}", file_span(files[name], 1),
            "regenerate it with `allium generate`",
        ))
    for name in lf.removed_units(lock, hashes):  # type: ignore[arg-type]
        out.append(warning(STALE_UNIT, f"unit '{name}' is in the lockfile but no longer in the spec set"))
    return out


def _edited(lock: object, layout: PackageLayout) -> list[Diagnostic]:
    from allium.generate import lockfile as lf

    out = []
    for edit in lf.hand_edits(lock, layout.root):  # type: ignore[arg-type]
        path = layout.root / edit.path
        what = "was edited by hand" if edit.change == "modified" else "was deleted"
        out.append(warning(
            EDITED_OUTPUT, f"generated file {edit.path} (unit '{edit.unit}') {what} since generation",
            file_span(_display(path), 1),
            "its sha256 no longer matches generated/allium.lock; move the change into the spec or regenerate",
        ))
    return out


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
