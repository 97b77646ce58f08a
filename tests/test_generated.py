"""The committed generated/ package: reproducible from its transcripts, and true to the spec.

generated/ was produced by `allium generate --provider exchange` (see the README); these
tests pin that a replay of the recorded transcripts rebuilds it byte for byte, and that
its tests cover every obligation of the showcase specs, non-vacuously, and pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from allium.generate import lockfile
from allium.generate.runner import Generator
from allium.generate.units import load_plan
from allium.providers.replay import ReplayProvider
from allium.providers.transcripts import TranscriptStore
from allium.verify.coverage import verify_package
from tests.trees import file_tree

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"
SPECS = sorted((ROOT / "specs").glob("*.allium"))

pytestmark = pytest.mark.skipif(not (GENERATED / lockfile.LOCKFILE_NAME).exists(), reason="nothing generated")



def test_replaying_the_transcripts_rebuilds_generated_byte_for_byte(tmp_path: Path) -> None:
    lock = lockfile.load(GENERATED / lockfile.LOCKFILE_NAME)
    plan = load_plan(SPECS, package=lock.package)
    store = TranscriptStore(ROOT / ".allium" / "transcripts")
    out = tmp_path / "generated"
    # Start from the lockfile alone: replay must find every unit's answer from it.
    out.mkdir()
    (out / lockfile.LOCKFILE_NAME).write_bytes((GENERATED / lockfile.LOCKFILE_NAME).read_bytes())
    Generator(plan, ReplayProvider(store), store, out, jobs=1).run(list(plan.units), pin_to_lockfile=True)
    assert file_tree(out) == file_tree(GENERATED)


def test_generated_tests_cover_every_obligation_and_pass() -> None:
    report = verify_package([str(p) for p in SPECS], GENERATED, run=True, timeout=300)
    # The notes carry each failing test's own message: a CI log must say why, not only which.
    findings = [" | ".join([f"{d.code}: {d.message}", *d.notes])
                for d in report.diagnostics if d.severity.value != "info"]
    assert findings == []
    assert report.total == 1058 and report.covered == report.total
    assert report.failures == []
