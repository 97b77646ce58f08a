"""allium fix: status, record and verify on a small repository built in a temporary folder.

The fixture repository has one spec, a generated package with a bug (an
increment that adds two), and a test that catches it. "Regeneration" is
simulated by writing the fixed module, which is all `record` looks at.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from allium.errors import UsageError
from allium.fix import evidence as ev
from allium.fix.record import record, status, verify

SPEC = Path(__file__).resolve().parents[1] / "generate" / "fixtures" / "e2e" / "counters.allium"

BUGGY = "def increment(value: int) -> int:\n    return value + 2\n"
FIXED = "def increment(value: int) -> int:\n    return value + 1\n"
TEST = ("from app.counters import increment\n\n\n"
        "def test_increment_adds_one():\n    assert increment(41) == 42\n\n\n"
        "def test_increment_is_an_int():\n    assert isinstance(increment(0), int)\n")
CONFTEST = ("import sys\nfrom pathlib import Path\n\n"
            "sys.path.insert(0, str(Path(__file__).resolve().parent.parent))\n")


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "specs").mkdir(parents=True)
    shutil.copy(SPEC, root / "specs" / "counters.allium")
    out = root / "generated"
    (out / "app").mkdir(parents=True)
    (out / "tests").mkdir()
    (out / "app" / "__init__.py").write_text("")
    (out / "app" / "counters.py").write_text(BUGGY)
    (out / "tests" / "conftest.py").write_text(CONFTEST)
    (out / "tests" / "test_counters.py").write_text(TEST)
    lock = {"format": 1, "package": "app", "spec_files": {}, "units": {"counters": {"request_hash": "old", "spec_slice": "old", "files": {}}}}
    (out / "allium.lock").write_text(json.dumps(lock))
    git(root, "init", "-q")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "buggy")
    return root


def regenerate(root: Path) -> None:
    """What `allium generate` leaves behind after the spec edit: the fixed module, a new request."""
    (root / "generated" / "app" / "counters.py").write_text(FIXED)
    lock = json.loads((root / "generated" / "allium.lock").read_text())
    lock["units"]["counters"]["request_hash"] = "new"
    (root / "generated" / "allium.lock").write_text(json.dumps(lock))


TEST_ID = "generated/tests/test_counters.py::test_increment_adds_one"


def test_record_keeps_red_green_evidence_and_verify_reproves_it(repo: Path) -> None:
    spec = repo / "specs" / "counters.allium"
    spec.write_text(spec.read_text().replace("counter.value < 100", "counter.value < 99"))
    regenerate(repo)
    evidence, red, green = record(repo, "adds-two", [TEST_ID], "increment added two")
    assert red.outcomes == {TEST_ID: "failed"} and green.outcomes == {TEST_ID: "passed"}
    assert evidence.units == ["counters"]
    assert evidence.obligations["changed"] == {"counters": ["rule-success.Increment", "rule-failure.Increment.1"]}
    saved = json.loads((repo / "fixes" / "adds-two" / "fix.json").read_text())
    assert saved["red"] == {TEST_ID: "failed"} and saved["summary"] == "increment added two"
    assert "-    requires: counter.value < 100" in (repo / "fixes" / "adds-two" / "spec.diff").read_text()
    # The evidence holds both trees: the bytes of the buggy module are in a blob.
    buggy = ev.get_blob(repo, evidence.before["app/counters.py"])
    assert buggy.decode() == BUGGY
    [verdict] = verify(repo)
    assert verdict.ok and verdict.red.outcomes[TEST_ID] == "failed"
    assert verdict.current.outcomes[TEST_ID] == "passed"


def test_a_test_that_passes_on_the_old_code_is_no_proof(repo: Path) -> None:
    regenerate(repo)
    weak = "generated/tests/test_counters.py::test_increment_is_an_int"
    with pytest.raises(UsageError, match="no proof"):
        record(repo, "weak", [weak], "")
    assert not (repo / "fixes" / "weak").exists()


def test_record_needs_a_regeneration_and_a_test(repo: Path) -> None:
    with pytest.raises(UsageError, match="unchanged"):
        record(repo, "nothing", [TEST_ID], "")
    with pytest.raises(UsageError, match="at least one test"):
        record(repo, "nothing", [], "")
    with pytest.raises(UsageError, match="fix name"):
        record(repo, "../escape", [TEST_ID], "")


def test_verify_fails_when_today_s_code_undoes_the_fix(repo: Path) -> None:
    regenerate(repo)
    record(repo, "adds-two", [TEST_ID], "")
    (repo / "generated" / "app" / "counters.py").write_text(BUGGY)
    [verdict] = verify(repo)
    assert not verdict.ok and verdict.current.outcomes[TEST_ID] == "failed"
    assert verdict.green.outcomes[TEST_ID] == "passed"  # the recorded proof still stands


def test_verify_refuses_an_edited_blob(repo: Path) -> None:
    regenerate(repo)
    evidence, _, _ = record(repo, "adds-two", [TEST_ID], "")
    (repo / "fixes" / "blobs" / evidence.after["app/counters.py"]).write_text(BUGGY)
    with pytest.raises(UsageError, match="does not match its hash"):
        verify(repo)


def test_status_names_stale_units_and_obligation_changes(repo: Path) -> None:
    spec = repo / "specs" / "counters.allium"
    spec.write_text(spec.read_text().replace(
        "    ensures: counter.value = counter.value + 1",
        "    requires: counter.name != \"\"\n    ensures: counter.value = counter.value + 1"))
    found = status(repo)
    assert found.stale_units == ["counters"]  # the lockfile's slice hash is not this spec's
    assert found.obligations["added"] == {"counters": ["rule-failure.Increment.2"]}
    assert "added    counters: rule-failure.Increment.2" in found.render()


def test_recording_again_leaves_no_unused_blobs(repo: Path) -> None:
    regenerate(repo)
    record(repo, "adds-two", [TEST_ID], "first")
    (repo / "generated" / "app" / "counters.py").write_text(FIXED + "\n# tidied\n")
    shutil.rmtree(repo / "fixes" / "adds-two")
    evidence, _, _ = record(repo, "adds-two", [TEST_ID], "second")
    used = set(evidence.before.values()) | set(evidence.after.values())
    assert {p.name for p in (repo / "fixes" / "blobs").iterdir()} == used
