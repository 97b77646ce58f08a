"""The pytest plugin, exercised the way users meet it: in a separate pytest run."""

from __future__ import annotations

import json

import pytest

TESTS = '''
import pytest

@pytest.mark.allium("rule-success.EntryExpires")
def test_expiry_drops_entry():
    assert 1 + 1 == 2

@pytest.mark.allium("rule-failure.EntryExpires.1", "transition-edge.Entry.live.expired")
def test_expiry_refused_when_fresh():
    assert "fresh" == "stale"

@pytest.mark.allium("rule-success.ReplayAnswer")
def test_replay():
    assert True

def test_untagged():
    assert True
'''


@pytest.fixture
def package(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_generated=TESTS)
    return pytester


def test_marker_is_registered_for_strict_runs(package: pytest.Pytester) -> None:
    result = package.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    assert "Unknown pytest.mark.allium" not in result.stdout.str()


def test_select_by_obligation_glob(package: pytest.Pytester) -> None:
    result = package.runpytest_subprocess("--allium-obligation", "rule-success.*")
    result.assert_outcomes(passed=2, deselected=2)


def test_a_component_qualified_tag_is_selected_like_a_bare_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_generated=(
        "import pytest\n\n"
        "@pytest.mark.allium('warden:config-default.max_entries')\ndef test_cap():\n    assert True\n\n"
        "@pytest.mark.allium('registrar:rule-success.Load')\ndef test_load():\n    assert True\n"
    ))  # fmt: skip
    pytester.runpytest_subprocess("--allium-obligation", "config-default.*").assert_outcomes(passed=1, deselected=1)
    pytester.runpytest_subprocess("--allium-obligation", "warden:*").assert_outcomes(passed=1, deselected=1)
    pytester.runpytest_subprocess("--allium-rule", "Load").assert_outcomes(passed=1, deselected=1)


def test_select_by_rule_name(package: pytest.Pytester) -> None:
    result = package.runpytest_subprocess("--allium-rule", "EntryExpires")
    result.assert_outcomes(passed=1, failed=1, deselected=2)


def test_select_by_entity_in_transition_id(package: pytest.Pytester) -> None:
    result = package.runpytest_subprocess("--allium-rule", "Entry")
    result.assert_outcomes(failed=1, deselected=3)


def test_json_report_maps_tests_to_obligations_and_outcomes(package: pytest.Pytester) -> None:
    report = package.path / "out" / "report.json"
    package.runpytest_subprocess(f"--allium-report={report}")
    data = json.loads(report.read_text())
    by_test = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    assert by_test["test_expiry_drops_entry"]["outcome"] == "passed"
    failed = by_test["test_expiry_refused_when_fresh"]
    assert failed["outcome"] == "failed"
    assert failed["obligations"] == ["rule-failure.EntryExpires.1", "transition-edge.Entry.live.expired"]
    assert "assert 'fresh' == 'stale'" in failed["message"]
    assert by_test["test_untagged"]["obligations"] == []
    assert data["obligations"]["rule-success.ReplayAnswer"] == ["test_generated.py::test_replay"]
    assert sorted(data["obligations"]) == [
        "rule-failure.EntryExpires.1",
        "rule-success.EntryExpires",
        "rule-success.ReplayAnswer",
        "transition-edge.Entry.live.expired",
    ]


def test_report_path_that_is_not_a_plain_file_is_written_through(package: pytest.Pytester) -> None:
    """The report is written beside its path and renamed over it: fine for a file, never for a
    link or a device (run as root, `--allium-report=/dev/null` once replaced /dev/null itself)."""
    target = package.path / "real.json"
    target.write_text("")
    link = package.path / "link.json"
    link.symlink_to(target)
    package.runpytest_subprocess(f"--allium-report={link}")
    assert link.is_symlink()
    assert json.loads(target.read_text())["version"] == 1


def test_setup_error_is_reported_as_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fix='''
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("no database")

@pytest.mark.allium("rule-success.Commit")
def test_commit(broken):
    assert True
'''
    )
    report = pytester.path / "r.json"
    pytester.runpytest_subprocess(f"--allium-report={report}")
    (entry,) = json.loads(report.read_text())["tests"]
    assert entry["outcome"] == "error"
    assert "no database" in entry["message"]


def test_non_string_marker_argument_warns(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad='''
import pytest

@pytest.mark.allium(42)
def test_x():
    assert True
'''
    )
    result = pytester.runpytest_subprocess("--allium-rule", "X")
    result.stdout.fnmatch_lines(["*allium marker arguments must be obligation id strings*"])
