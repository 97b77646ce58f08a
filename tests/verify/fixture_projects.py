"""Fixture projects for the verify tests: copy one to a temp dir and (re)write its lockfile."""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def relock(project: Path, package: str = "cachepkg") -> None:
    """Write ``generated/allium.lock`` for the project as it is now (as `allium generate` would)."""
    from allium.generate import lockfile as lf
    from allium.generate.units import load_plan

    specs = sorted((project / "specs").glob("*.allium"))
    plan = load_plan(specs, package=package, obligations=lambda m: ())
    out = project / "generated"
    units = {}
    for unit in plan.units:
        files = {f: lf.sha256_file(out / f) for f in unit.files if (out / f).is_file()}
        units[unit.name] = lf.UnitLock(unit.slice_hash, "0" * 64, files, model="fixture")
    spec_files = lf.spec_file_hashes(project / "specs", [p.name for p in specs])
    lf.save(lf.Lockfile(package, spec_files, units), out / "allium.lock")


def copy_fixture(name: str, dest: Path) -> Path:
    """A fresh, relocked copy of fixtures/<name> at dest (so edits never touch the repo).

    A fixture whose folder holds a file ``BASE`` naming another fixture is that
    fixture with its own files laid over it: the `weak` and `gaps` projects share
    `covered`'s specs and package and differ only in their tests."""
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", "BASE")
    base = FIXTURES / name / "BASE"
    if base.is_file():
        shutil.copytree(FIXTURES / base.read_text(encoding="utf-8").strip(), dest, ignore=ignore)
    shutil.copytree(FIXTURES / name, dest, ignore=ignore, dirs_exist_ok=True)
    relock(dest)
    return dest
