"""`analyse` on hand-built obligations and collections: no subprocess, no spec files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from allium.diagnostics import Severity
from allium.source import Position, Span
from allium.verify.collect import CollectedTest, Collection
from allium.verify.coverage import analyse
from allium.verify.report import (COVERAGE_BELOW_MINIMUM, ORPHAN_TAG, TEST_FAILED, UNCOVERED, VACUOUS_TEST,
                                  render_report_text, report_json)


def _ob(oid: str, component: str, line: int) -> SimpleNamespace:
    pos = Position(line, 5, 0, 0)
    return SimpleNamespace(id=oid, category=oid.split(".")[0].replace("-", "_"), description=f"verify {oid}",
                           component=component, span=Span(f"{component}.allium", pos, pos))


OBLIGATIONS = [
    _ob("config-default.max_entries", "registrar", 3),
    _ob("config-default.max_entries", "warden", 4),
    _ob("rule-success.Admit", "warden", 10),
    _ob("rule-failure.Admit.1", "warden", 11),
    _ob("rule-failure.Admit.2", "warden", 12),
]


def _collection(tmp_path: Path, *tests: CollectedTest, ran: bool = False) -> Collection:
    return Collection(root=tmp_path, tests=list(tests), ran=ran)


def test_an_id_in_two_modules_is_discharged_in_both(tmp_path: Path) -> None:
    # the test file does not exist: vacuity cannot judge it and stays silent
    tagged = CollectedTest("tests/test_w.py::test_cap", ("config-default.max_entries", "rule-success.Admit"))
    report = analyse(OBLIGATIONS, _collection(tmp_path, tagged), {})
    covered = [(o.component, o.id) for o in report.obligations if o.status == "covered"]
    assert covered == [("registrar", "config-default.max_entries"), ("warden", "config-default.max_entries"),
                       ("warden", "rule-success.Admit")]
    assert [(c.name, c.covered, c.total) for c in report.components] == [("registrar", 1, 1), ("warden", 2, 4)]


def test_a_component_qualified_tag_discharges_only_that_component(tmp_path: Path) -> None:
    tagged = CollectedTest("tests/test_w.py::test_cap", ("warden:config-default.max_entries",), "failed")
    report = analyse(OBLIGATIONS, _collection(tmp_path, tagged, ran=True), {}, min_coverage=0)
    by_key = {(o.component, o.id): o for o in report.obligations}
    assert by_key["warden", "config-default.max_entries"].status == "failed"
    assert by_key["registrar", "config-default.max_entries"].status == "uncovered"
    assert report.by_code(ORPHAN_TAG) == []


def test_both_tag_forms_on_one_test_count_it_once(tmp_path: Path) -> None:
    tagged = CollectedTest("tests/test_w.py::test_cap",
                           ("config-default.max_entries", "warden:config-default.max_entries"), "failed")
    report = analyse(OBLIGATIONS, _collection(tmp_path, tagged, ran=True), {}, min_coverage=0)
    [warden] = [o for o in report.obligations if o.component == "warden" and o.id == "config-default.max_entries"]
    assert (warden.tests, warden.failed) == (["tests/test_w.py::test_cap"], ["tests/test_w.py::test_cap"])


def test_a_qualified_tag_is_judged_for_vacuity_like_a_bare_one(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_w.py").write_text(
        'import pytest\n\n\n@pytest.mark.allium("warden:rule-success.Admit")\ndef test_admit():\n    pass\n'
    )
    tagged = CollectedTest("tests/test_w.py::test_admit", ("warden:rule-success.Admit",))
    report = analyse(OBLIGATIONS, _collection(tmp_path, tagged), {}, min_coverage=0)
    [admit] = [o for o in report.obligations if o.id == "rule-success.Admit"]
    assert admit.status == "vacuous"
    [finding] = report.by_code(VACUOUS_TEST)
    assert finding.message == "test test_admit is vacuous for 'warden:rule-success.Admit': it asserts nothing"
    assert finding.span.start.line == 5  # the test's def


def test_a_tag_qualified_with_the_wrong_component_is_an_orphan(tmp_path: Path) -> None:
    tagged = CollectedTest("tests/test_w.py::test_admit", ("registrar:rule-success.Admit",))
    report = analyse(OBLIGATIONS, _collection(tmp_path, tagged), {}, min_coverage=0)
    [orphan] = report.by_code(ORPHAN_TAG)
    assert "'registrar:rule-success.Admit', which is not an obligation of the spec" in orphan.message
    assert all(o.status == "uncovered" for o in report.obligations)


def test_uncovered_obligations_are_grouped_by_rule(tmp_path: Path) -> None:
    report = analyse(OBLIGATIONS, _collection(tmp_path), {}, min_coverage=0)
    messages = sorted(d.message for d in report.by_code(UNCOVERED))
    assert messages == [
        "Admit: 3 obligations without a test: rule-success.Admit, rule-failure.Admit.1, rule-failure.Admit.2",
        "max_entries: 1 obligation without a test: config-default.max_entries",
        "max_entries: 1 obligation without a test: config-default.max_entries",
    ]
    assert {d.severity for d in report.by_code(UNCOVERED)} == {Severity.INFO}  # gate met: listed, not failing
    assert report.codes().count(COVERAGE_BELOW_MINIMUM) == 0 and report.exit_code == 0
    assert report.coverage == 0.0


def test_failures_without_tags_and_orphans_without_suggestion(tmp_path: Path) -> None:
    report = analyse(OBLIGATIONS, _collection(
        tmp_path,
        CollectedTest("tests/test_w.py::test_plain", (), "failed", message="boom"),
        CollectedTest("tests/test_w.py::test_old", ("rule-success.Retired",), "passed"),
        ran=True,
    ), {}, min_coverage=0)
    [failed] = report.by_code(TEST_FAILED)
    assert failed.message == "test test_plain failed (untagged)"
    assert failed.notes == ("test: tests/test_w.py::test_plain", "message: boom")
    [orphan] = report.by_code(ORPHAN_TAG)
    assert orphan.notes[-1] == "remove the tag or restore the obligation in the spec"
    assert report.failures == [{"nodeid": "tests/test_w.py::test_plain", "outcome": "failed", "message": "boom",
                                "rules": [], "obligations": []}]


def test_empty_spec_is_fully_covered_and_renders(tmp_path: Path) -> None:
    report = analyse([], _collection(tmp_path), {})
    assert (report.covered, report.total, report.coverage, report.findings) == (0, 0, 100.0, [])
    assert report_json(report)["coverage"]["percent"] == 100.0
    assert "total" in render_report_text(report)
