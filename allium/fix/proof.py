"""Red and green: run a fix's tests against a generated tree rebuilt in a scratch folder.

The scratch folder mirrors the repository's layout (``generated/...`` and the
named test files at their own paths), so test ids read the same in the
repository, in the evidence and in the scratch run. Tests outside
``generated/`` find the tree under test through ``ALLIUM_GENERATED``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from allium.fix.evidence import Evidence, get_blob

OUTPUT = "generated"
FAILING = ("failed", "error")


@dataclass(frozen=True)
class ProofResult:
    side: str
    outcomes: dict[str, str]  # test id -> passed | failed | error | skipped | missing
    log: str

    def all(self, wanted: Sequence[str]) -> bool:
        return bool(self.outcomes) and all(o in wanted for o in self.outcomes.values())


def tree_for(root: Path, evidence: Evidence, side: str) -> dict[str, bytes]:
    """The generated tree of one side. `before` is the previous package run
    under the fix's own tests: red means the new tests catch the old code."""
    if side == "after":
        return {p: get_blob(root, h) for p, h in evidence.after.items()}
    files = {p: get_blob(root, h) for p, h in evidence.before.items() if not p.startswith("tests/")}
    files.update({p: get_blob(root, h) for p, h in evidence.after.items() if p.startswith("tests/")})
    return files


def current_tree(root: Path) -> dict[str, bytes]:
    base = root / OUTPUT
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*.py"))}


def run_proof(root: Path, evidence: Evidence, side: str, tree: Mapping[str, bytes] | None = None,
              timeout: float = 600.0) -> ProofResult:
    """Run the evidence's tests on one side (`before`, `after`, or a given tree).

    With a given tree (today's generated/), the named tests outside it are
    today's too where they still exist: a later fix may have taught them a new
    API (signed votes, say), and "the fix still holds" means today's tests
    pass on today's code. The stored copies prove red and green as recorded."""
    files = dict(tree) if tree is not None else tree_for(root, evidence, side)
    extra = {p: get_blob(root, h) for p, h in evidence.test_files.items()}
    if tree is not None:
        extra = {p: (root / p).read_bytes() if (root / p).is_file() else data for p, data in extra.items()}
    return run_tests(files, extra, evidence.tests, side, timeout)


def run_tests(tree: Mapping[str, bytes], extra: Mapping[str, bytes], tests: Sequence[str], side: str,
              timeout: float = 600.0) -> ProofResult:
    with tempfile.TemporaryDirectory(prefix="allium-fix-") as tmp:
        scratch = Path(tmp)
        for rel, data in tree.items():
            _write(scratch / OUTPUT / rel, data)
        for rel, data in extra.items():
            _write(scratch / rel, data)
        (scratch / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        outcomes: dict[str, str] = {}
        logs: list[str] = []
        # One pytest run per test file: pytest gives up on the whole run when
        # one named file cannot be collected, and the old code often cannot
        # satisfy a new test file's imports while the other files run fine.
        by_file: dict[str, list[str]] = {}
        for test in tests:
            by_file.setdefault(test.split("::")[0], []).append(test)
        for file_tests in by_file.values():
            found, log = _run_pytest(scratch, file_tests, timeout)
            outcomes.update(found)
            logs.append(log)
    return ProofResult(side, {t: outcomes[t] for t in tests}, "\n".join(logs))


def _run_pytest(scratch: Path, tests: Sequence[str], timeout: float) -> tuple[dict[str, str], str]:
    report = scratch / "report.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, "ALLIUM_GENERATED": str(scratch / OUTPUT), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(scratch),
               "-c", str(scratch / "pytest.ini"), f"--allium-report={report}", *tests]
    try:
        done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {t: "error" for t in tests}, f"timed out after {timeout:.0f}s"
    log = done.stdout + done.stderr
    items = _report_items(report)
    return {t: _outcome(t, items, log) for t in tests}, log


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _report_items(report: Path) -> dict[str, str]:
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {t["nodeid"]: t.get("outcome") or "error" for t in data.get("tests", [])}


def _outcome(test: str, items: Mapping[str, str], log: str) -> str:
    """One named test's outcome; a name selecting several items (parameters) fails if any does.

    A test whose file cannot even be collected (it imports a name the old code
    lacks) is an `error`, kept apart from an assertion `failed` so a reader can
    tell a weak red from a strong one."""
    mine = [o for nodeid, o in items.items() if nodeid == test or nodeid.startswith(test + "[")
            or nodeid.startswith(test + "::")]
    if not mine:
        return "error" if f"ERROR collecting {test.split('::')[0]}" in log else "missing"
    for bad in ("error", "failed"):
        if bad in mine:
            return bad
    return "passed" if all(o == "passed" for o in mine) else mine[0]
