"""Collection in a subprocess: reports, collection errors, timeouts, package discovery."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from allium.errors import UsageError
from allium.verify.collect import CollectError, collect_tests, parse_report, pytest_command, run_tests
from allium.verify.coverage import verify_package
from allium.verify.package import find_package
from allium.verify.report import COLLECT_FAILED


def _package(root: Path, tests: str, name: str = "test_x.py") -> Path:
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "tests" / name).write_text(textwrap.dedent(tests))
    return root


MIXED = '''
import pytest

@pytest.mark.allium("rule-success.A")
def test_ok():
    assert True

@pytest.mark.allium("rule-failure.A.1", "rule-success.B")
def test_bad():
    assert 1 == 2

def test_plain():
    pass
'''


def test_run_reports_outcomes_and_messages(tmp_path: Path) -> None:
    root = _package(tmp_path, MIXED)
    ran = run_tests(root / "tests", root=root, timeout=60)
    assert ran.ran
    outcomes = {t.nodeid: (t.obligations, t.outcome) for t in ran.tests}
    assert outcomes == {
        "tests/test_x.py::test_ok": (("rule-success.A",), "passed"),
        "tests/test_x.py::test_bad": (("rule-failure.A.1", "rule-success.B"), "failed"),
        "tests/test_x.py::test_plain": ((), "passed"),
    }
    [bad] = [t for t in ran.tests if t.failed]
    assert "assert 1 == 2" in bad.message
    assert [t.nodeid for t in ran.tagged] == ["tests/test_x.py::test_ok", "tests/test_x.py::test_bad"]
    assert sorted(ran.by_obligation()) == ["rule-failure.A.1", "rule-success.A", "rule-success.B"]


def test_collection_error_becomes_a_finding_with_pytest_output(tmp_path: Path) -> None:
    root = _package(tmp_path, "import no_such_module_for_allium\n\ndef test_a():\n    assert True\n")
    spec = tmp_path / "s.allium"
    spec.write_text("-- allium: 3\nentity A {\n    n: Integer\n}\n")
    report = verify_package([spec], root, timeout=60)
    [diag] = report.by_code(COLLECT_FAILED)
    assert diag.message.startswith(f"pytest could not collect the tests in {root / 'tests'} (exit code 2)")
    assert "No module named 'no_such_module_for_allium'" in diag.message  # pytest's own output
    assert report.codes() == sorted([COLLECT_FAILED, "allium.verify.coverageBelowMinimum",
                                     "allium.verify.uncovered"])


def test_collection_timeout(tmp_path: Path) -> None:
    root = _package(tmp_path, "import time\ntime.sleep(30)\n\ndef test_a():\n    pass\n")
    with pytest.raises(CollectError, match=r"pytest timed out after 0.5 s collecting"):
        collect_tests(root / "tests", root=root, timeout=0.5)


def test_command_isolates_the_package_from_the_surrounding_project(tmp_path: Path) -> None:
    root = _package(tmp_path, "def test_a():\n    pass\n")
    cmd = pytest_command(root / "tests", root, tmp_path / "r.json", run=False)
    assert "--collect-only" in cmd and f"--confcutdir={root}" in cmd and "-c" in cmd
    (root / "pytest.ini").write_text("[pytest]\n")
    assert "-c" not in pytest_command(root / "tests", root, tmp_path / "r.json", run=True)


def test_report_version_is_checked(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="unsupported"):
        parse_report({"version": 99, "tests": []}, tmp_path)


def test_find_package(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "generated" / "tests").mkdir(parents=True)
    (project / "generated" / "allium.lock").write_text("{}")
    for given in (project, project / "generated", project / "generated" / "allium.lock"):
        layout = find_package(given)
        assert layout.root == (project / "generated").resolve()
        assert layout.lockfile == layout.root / "allium.lock"
        assert layout.tests_dir == layout.root / "tests"
    plain = find_package(tmp_path / "proj" / "generated" / "tests")
    assert plain.lockfile is None and plain.tests_dir == plain.root
    with pytest.raises(UsageError):
        find_package(tmp_path / "missing")
