"""verify_package end to end on the fixture projects: every finding, asserted exactly.

Each scenario costs one subprocess pytest run (about a second), so the reports
are built once per module and shared by the tests that read them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from allium.diagnostics import Severity
from allium.verify.collect import collect_tests
from allium.verify.coverage import analyse, verify_package
from allium.verify.package import find_package
from allium.verify.report import (COVERAGE_BELOW_MINIMUM, EDITED_OUTPUT, ORPHAN_TAG, STALE_UNIT, TEST_FAILED,
                                  UNCOVERED, VACUOUS_TEST, VerifyReport, render_report_json,
                                  render_report_text, write_junit)

from fixture_projects import relock

ALL_OBLIGATIONS = [
    "config-default.ttl",
    "transition-edge.Entry.live.expired",
    "transition-rejected.Entry.status",
    "transition-terminal.Entry.status",
    "entity-fields.Entry",
    "rule-success.StoreEntry",
    "rule-failure.StoreEntry.1",
    "rule-entity-creation.StoreEntry.1",
    "rule-success.EntryExpires",
    "temporal.EntryExpires",
    "rule-failure.EntryExpires.1",
]


def verify(root: Path, **options) -> VerifyReport:
    return verify_package([root / "specs"], root / "generated", timeout=60, **options)


def findings(report: VerifyReport) -> list[tuple[str, str]]:
    """(code, message) of every verify finding, sorted: the exact set a scenario must produce."""
    return sorted((d.code, d.message) for d in report.findings)


def _row(text: str, first: str) -> list[str]:
    """The summary table row starting with ``first``, split into cells."""
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [first])


# ---------------------------------------------------------------- full coverage


@pytest.fixture(scope="module")
def covered(project: Callable[[str], Path]) -> VerifyReport:
    return verify(project("covered"))


def test_full_coverage_is_clean(covered: VerifyReport) -> None:
    assert findings(covered) == []
    assert [o.id for o in covered.obligations] == ALL_OBLIGATIONS
    assert all(o.status == "covered" for o in covered.obligations)
    assert (covered.covered, covered.total, covered.coverage) == (11, 11, 100.0)
    assert (covered.tests, covered.tagged_tests, covered.ran) == (9, 9, False)
    # the spec's own info diagnostic does not fail the check
    assert [d.code for d in covered.spec_diagnostics] == ["allium.rule.unreachableTrigger"]
    assert covered.exit_code == 0


def test_full_coverage_text_table(covered: VerifyReport) -> None:
    text = render_report_text(covered)
    assert _row(text, "cache") == ["cache", "11", "11", "100.0%", "0"]
    assert _row(text, "total") == ["total", "11", "11", "100.0%", "0"]
    assert "gaps:" not in text
    assert "9 tests collected (9 tagged)" in text


# ---------------------------------------------------------------- gaps: uncovered, orphan, vacuous


@pytest.fixture(scope="module")
def gaps_root(project: Callable[[str], Path]) -> Path:
    return project("gaps")


@pytest.fixture(scope="module")
def gaps(gaps_root: Path) -> VerifyReport:
    return verify(gaps_root)


def test_gaps_findings_are_exact(gaps: VerifyReport) -> None:
    assert findings(gaps) == [
        (COVERAGE_BELOW_MINIMUM, "obligation coverage 72.7% (8/11) is below the minimum of 100%"),
        (ORPHAN_TAG, "test test_store_refuses_existing_key is tagged 'rule-failure.StoreEntry.2', "
                     "which is not an obligation of the spec"),
        (UNCOVERED, "EntryExpires: 1 obligation without a test: rule-failure.EntryExpires.1"),
        (VACUOUS_TEST, "test test_expired_is_terminal is vacuous for 'transition-terminal.Entry.status': "
                       "it asserts nothing"),
        (VACUOUS_TEST, "test test_ttl_default is vacuous for 'config-default.ttl': "
                       "it never touches any of: ttl"),
    ]
    assert gaps.exit_code == 1


def test_uncovered_points_at_the_spec(gaps: VerifyReport) -> None:
    [diag] = gaps.by_code(UNCOVERED)
    assert diag.severity is Severity.ERROR
    assert (Path(diag.span.file).name, diag.span.start.line) == ("cache.allium", 29)
    assert diag.notes == (
        f"rule-failure.EntryExpires.1 ({diag.span.file}:29:5): "
        "Verify rule EntryExpires is rejected when requires clause fails",
    )


def test_orphan_tag_points_at_the_tag_and_suggests(gaps: VerifyReport) -> None:
    [diag] = gaps.by_code(ORPHAN_TAG)
    assert diag.file.endswith("generated/tests/test_cache.py")
    assert (diag.span.start.line, diag.span.start.column) == (46, 50)
    assert diag.notes == ("test: tests/test_cache.py::test_store_refuses_existing_key",
                          "did you mean 'rule-failure.StoreEntry.1'?")


def test_vacuous_findings_name_the_rule_that_fired(gaps: VerifyReport) -> None:
    rules = {d.message.split()[1]: d.notes[1].split(" (")[0] for d in gaps.by_code(VACUOUS_TEST)}
    assert rules == {"test_expired_is_terminal": "vacuity rule: no-assert",
                     "test_ttl_default": "vacuity rule: unrelated"}
    statuses = {o.id: o.status for o in gaps.obligations if o.status != "covered"}
    assert statuses == {"config-default.ttl": "vacuous", "transition-terminal.Entry.status": "vacuous",
                        "rule-failure.EntryExpires.1": "uncovered"}


def test_gaps_summary_lists_gaps_with_spec_locations(gaps: VerifyReport) -> None:
    text = render_report_text(gaps)
    assert _row(text, "component") == ["component", "covered", "total", "coverage", "gaps"]
    assert _row(text, "cache") == ["cache", "8", "11", "72.7%", "3"]
    gap_lines = [line.split() for line in text.splitlines() if line.startswith("  ")
                 and line.split()[0] in ("vacuous", "uncovered")]
    assert [(g[0], g[1], g[2].rsplit("/", 1)[-1]) for g in gap_lines] == [
        ("vacuous", "config-default.ttl", "cache.allium:5:5"),
        ("vacuous", "transition-terminal.Entry.status", "cache.allium:14:5"),
        ("uncovered", "rule-failure.EntryExpires.1", "cache.allium:29:5"),
    ]


def test_gaps_json_has_the_same_numbers(gaps: VerifyReport) -> None:
    data = json.loads(render_report_json(gaps))
    [component] = data["coverage"]["components"]
    assert (component["component"], component["covered"], component["total"], component["percent"]) == \
        ("cache", 8, 11, 72.7)
    assert [(g["id"], g["status"], g["location"]["line"]) for g in component["gaps"]] == [
        ("config-default.ttl", "vacuous", 5),
        ("transition-terminal.Entry.status", "vacuous", 14),
        ("rule-failure.EntryExpires.1", "uncovered", 29),
    ]
    assert data["coverage"]["covered"] == 8 and data["coverage"]["total"] == 11
    codes = sorted(d["code"] for d in data["diagnostics"] if d["code"].startswith("allium.verify."))
    assert codes == sorted(gaps.codes())
    assert data["exit_code"] == 1


def test_junit_has_one_case_per_obligation(gaps: VerifyReport, tmp_path: Path) -> None:
    write_junit(gaps, tmp_path / "junit.xml")
    root = ET.parse(tmp_path / "junit.xml").getroot()
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ALL_OBLIGATIONS
    failed = {c.get("name"): c.find("failure").get("type") for c in cases if c.find("failure") is not None}
    assert failed == {"config-default.ttl": "vacuous", "transition-terminal.Entry.status": "vacuous",
                      "rule-failure.EntryExpires.1": "uncovered"}
    assert root.get("tests") == "11" and root.get("failures") == "3"


def test_min_coverage_gate(gaps_root: Path, gaps: VerifyReport) -> None:
    """Under a lower minimum, gaps are listed as info; the warnings still fail the check."""
    layout = find_package(gaps_root / "generated")
    collection = collect_tests(layout.tests_dir, root=layout.root)
    from allium.check import check_paths
    from allium.verify.coverage import derive_all

    checked = check_paths([gaps_root / "specs"])
    lenient = analyse(derive_all(checked.modules.values()), collection, checked.modules, min_coverage=70)
    assert COVERAGE_BELOW_MINIMUM not in lenient.codes()
    [uncovered] = lenient.by_code(UNCOVERED)
    assert uncovered.severity is Severity.INFO
    assert lenient.exit_code == 1  # orphan tag and vacuous tests are warnings


# ---------------------------------------------------------------- drift: stale units, hand edits


def test_stale_unit_after_spec_edit(project: Callable[[str], Path]) -> None:
    root = project("covered")
    spec = root / "specs" / "cache.allium"
    spec.write_text(spec.read_text().replace("ttl: Duration = 5.minutes", "ttl: Duration = 10.minutes"))
    report = verify(root)
    assert findings(report) == [
        (STALE_UNIT, "unit 'cache' is stale: its spec slice changed since it was generated"),
    ]
    [diag] = report.findings
    assert diag.span.file == str(spec) and diag.severity is Severity.WARNING
    assert report.exit_code == 1


def test_hand_edited_generated_file(project: Callable[[str], Path]) -> None:
    root = project("covered")
    module = root / "generated" / "cachepkg" / "cache.py"
    module.write_text(module.read_text() + "\nDEBUG = True  # added by hand\n")
    report = verify(root)
    assert findings(report) == [
        (EDITED_OUTPUT, "generated file cachepkg/cache.py (unit 'cache') was edited by hand since generation"),
    ]
    assert report.findings[0].span.file.endswith("generated/cachepkg/cache.py")


# ---------------------------------------------------------------- --run: failures mapped to rules


@pytest.fixture(scope="module")
def broken(project: Callable[[str], Path]) -> VerifyReport:
    """The implementation forgets StoreEntry's `requires` (relocked, so it is not a hand edit)."""
    root = project("covered")
    module = root / "generated" / "cachepkg" / "cache.py"
    text = module.read_text()
    guard = "        if key in self.entries:\n            raise KeyError(key)\n"
    assert guard in text
    module.write_text(text.replace(guard, ""))
    relock(root)
    return verify(root, run=True)


def test_failing_test_is_mapped_to_its_rule(broken: VerifyReport) -> None:
    assert findings(broken) == [
        (COVERAGE_BELOW_MINIMUM, "obligation coverage 90.9% (10/11) is below the minimum of 100%"),
        (TEST_FAILED, "test test_store_refuses_existing_key failed (discharging rule-failure.StoreEntry.1)"),
    ]
    [diag] = broken.by_code(TEST_FAILED)
    assert (Path(diag.span.file).name, diag.span.start.line) == ("cache.allium", 22)
    assert diag.notes[0] == "test: tests/test_cache.py::test_store_refuses_existing_key"
    assert diag.notes[1].startswith("message: ") and "DID NOT RAISE" in diag.notes[1]
    assert diag.notes[2].startswith("rule-failure.StoreEntry.1 -> StoreEntry at ")
    [failure] = broken.failures
    assert failure["rules"] == ["StoreEntry"]
    assert [o["id"] for o in failure["obligations"]] == ["rule-failure.StoreEntry.1"]
    assert broken.ran and broken.exit_code == 1
    statuses = {o.id: o.status for o in broken.obligations if o.status != "covered"}
    assert statuses == {"rule-failure.StoreEntry.1": "failed"}
