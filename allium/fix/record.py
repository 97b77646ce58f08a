"""Driving and recording one fix: what a spec edit touches, and the proof it holds.

``status`` answers "what will this edit regenerate, and which obligations does
it add or change?" against a git revision (default HEAD: the state before the
edit). ``record`` runs after ``allium generate``: it stores the previous and
the new generated trees, the spec diff and the obligation changes, and runs the
named tests on both sides; it keeps nothing unless they fail before and pass
after. ``verify`` reruns that proof from the stored evidence.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from allium.errors import UsageError
from allium.fix import evidence as ev
from allium.fix import gitrev
from allium.fix.proof import FAILING, OUTPUT, ProofResult, current_tree, run_proof, run_tests

LOCK = "allium.lock"


@dataclass(frozen=True)
class Status:
    stale_units: list[str]
    obligations: dict[str, dict[str, list[str]]]  # added/changed/removed -> unit -> ids

    def render(self) -> str:
        lines = [f"stale units: {', '.join(self.stale_units) or '-'}"]
        for kind in ("added", "changed", "removed"):
            for unit, ids in sorted(self.obligations.get(kind, {}).items()):
                lines.extend(f"  {kind:8} {unit}: {oid}" for oid in ids)
        if len(lines) == 1:
            lines.append("  no obligation added, changed or removed")
        return "\n".join(lines)


def _fingerprints(spec_dir: Path) -> dict[str, dict[str, str]]:
    """unit -> obligation id -> hash of its description and the spec text it comes from."""
    from allium.generate.units import build_plan, load_spec_set

    files = sorted(spec_dir.glob("*.allium"))
    if not files:
        return {}
    plan = build_plan(load_spec_set(files), root=spec_dir)
    texts = {f.stem: f.read_text(encoding="utf-8") for f in files}
    out: dict[str, dict[str, str]] = {}
    for unit, obligations in plan.obligations.items():
        text = texts.get(unit, "")
        for o in obligations:
            source = text[o.span.start.offset:o.span.end.offset]
            digest = hashlib.sha256(f"{o.description}\0{source}".encode()).hexdigest()
            out.setdefault(unit, {})[o.id] = digest
    return out


def obligation_changes(root: Path, rev: str, specs: str = "specs") -> dict[str, dict[str, list[str]]]:
    """Obligations added, changed (same id, new wording or spec text) or removed since `rev`."""
    with tempfile.TemporaryDirectory(prefix="allium-fix-specs-") as tmp:
        for rel, data in gitrev.files_at(root, rev, specs).items():
            target = Path(tmp) / Path(rel).relative_to(specs)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        old = _fingerprints(Path(tmp))
    new = _fingerprints(root / specs)
    changes: dict[str, dict[str, list[str]]] = {"added": {}, "changed": {}, "removed": {}}
    for unit in sorted(set(old) | set(new)):
        before, after = old.get(unit, {}), new.get(unit, {})
        found = {
            "added": [i for i in after if i not in before],
            "changed": [i for i in after if i in before and before[i] != after[i]],
            "removed": [i for i in before if i not in after],
        }
        for kind, ids in found.items():
            if ids:
                changes[kind][unit] = ids
    return changes


def status(root: Path, rev: str = "HEAD", specs: str = "specs") -> Status:
    """Stale units (against the current lockfile) and obligation changes since `rev`."""
    from allium.generate import lockfile
    from allium.generate.units import build_plan, load_spec_set

    plan = build_plan(load_spec_set(sorted((root / specs).glob("*.allium"))), root=root / specs)
    lock = lockfile.load(root / OUTPUT / LOCK)
    stale = lockfile.stale_units(lock, {u.name: u.slice_hash for u in plan.units})
    return Status(sorted(stale), obligation_changes(root, rev, specs))


def _regenerated_units(root: Path, rev: str) -> list[str]:
    """Units whose request changed between the lockfile at `rev` and the current one."""
    old_text = gitrev.files_at(root, rev, f"{OUTPUT}/{LOCK}").get(f"{OUTPUT}/{LOCK}", b"{}")
    old = json.loads(old_text or b"{}").get("units", {})
    new = json.loads((root / OUTPUT / LOCK).read_text(encoding="utf-8")).get("units", {})
    return sorted(u for u in new if old.get(u, {}).get("request_hash") != new[u].get("request_hash"))


def record(root: Path, name: str, tests: Sequence[str], summary: str, rev: str = "HEAD",
           specs: str = "specs") -> tuple[ev.Evidence, ProofResult, ProofResult]:
    """Record a fix whose regeneration is in the working tree (not yet committed).

    Raises UsageError, keeping nothing, unless every named test fails on the
    previous tree and passes on the new one."""
    if not tests:
        raise UsageError("name at least one test that proves the fix (--test ID)")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"fix name {name!r}: use letters, digits, '-' and '_'")
    prefix = f"{OUTPUT}/"
    before = {p[len(prefix):]: d for p, d in gitrev.files_at(root, rev, OUTPUT).items()
              if p.endswith(".py")}
    after = current_tree(root)
    if before == after:
        raise UsageError(f"{OUTPUT}/ is unchanged since {rev}: run allium generate first")
    extra = {t.split("::")[0] for t in tests if not t.startswith(prefix)}
    missing = [p for p in sorted(extra) if not (root / p).is_file()]
    if missing:
        raise UsageError(f"test file not found: {missing[0]}")
    extra_files = {p: (root / p).read_bytes() for p in sorted(extra)}
    red_tree = {p: d for p, d in before.items() if not p.startswith("tests/")}
    red_tree.update({p: d for p, d in after.items() if p.startswith("tests/")})
    red = run_tests(red_tree, extra_files, tests, "before")
    green = run_tests(after, extra_files, tests, "after")
    if not (red.all(FAILING) and green.all(("passed",))):
        raise UsageError("no proof, nothing recorded:\n" + render_proof(red, green))
    package = json.loads((root / OUTPUT / LOCK).read_text(encoding="utf-8")).get("package", "")
    evidence = ev.Evidence(
        name=name, summary=summary, package=package, units=_regenerated_units(root, rev),
        obligations=obligation_changes(root, rev, specs), tests=list(tests),
        before=ev.put_tree(root, before), after=ev.put_tree(root, after),
        test_files=ev.put_tree(root, extra_files), red=red.outcomes, green=green.outcomes,
    )
    ev.save(root, evidence, gitrev.spec_diff(root, rev, specs))
    return evidence, red, green


def render_proof(red: ProofResult, green: ProofResult, current: ProofResult | None = None) -> str:
    sides = [red, green] + ([current] if current else [])
    lines = [f"  {'test':70} " + " ".join(f"{s.side:>8}" for s in sides)]
    for test in red.outcomes:
        lines.append(f"  {test:70} " + " ".join(f"{s.outcomes.get(test, '-'):>8}" for s in sides))
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    evidence: ev.Evidence
    red: ProofResult
    green: ProofResult
    current: ProofResult

    @property
    def ok(self) -> bool:
        return (self.red.all(FAILING) and self.green.all(("passed",))
                and self.current.all(("passed",)))


def verify(root: Path, names: Sequence[str] = (), jobs: int | None = None) -> list[Verdict]:
    """Re-prove every recorded fix (or the named ones) from the repository alone.

    Red on the stored previous tree, green on the stored fixed tree, and green
    on today's generated/ too: a later regeneration must not undo a fix. The
    sides run as separate pytest processes, `jobs` at a time (default: one
    per CPU)."""
    from concurrent.futures import ThreadPoolExecutor

    fixes = [ev.load_evidence(root, n) for n in names] if names else ev.load_all(root)
    today = current_tree(root)
    for evidence in fixes:  # refuse edited evidence before running anything
        for tree in (evidence.before, evidence.after, evidence.test_files):
            for digest in tree.values():
                ev.get_blob(root, digest)
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        runs = [(pool.submit(run_proof, root, e, "before"), pool.submit(run_proof, root, e, "after"),
                 pool.submit(run_proof, root, e, "current", today)) for e in fixes]
        return [Verdict(e, red.result(), green.result(), now.result()) for e, (red, green, now) in zip(fixes, runs, strict=True)]
