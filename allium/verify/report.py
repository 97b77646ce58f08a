"""The spec-vs-tests report and its renderers: text, JSON and JUnit XML.

Findings are ordinary allium :class:`~allium.diagnostics.Diagnostic` values
(so ``--format sarif`` and exit codes work as for spec checks); the report adds
the coverage numbers per component, and one entry per obligation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from allium.diagnostics import Diagnostic, Severity, has_failures, render_text, summary_line
from allium.source import SourceFile, Span

# Finding codes, one per kind of drift between spec and tests.
UNCOVERED = "allium.verify.uncovered"
ORPHAN_TAG = "allium.verify.orphanTag"
STALE_UNIT = "allium.verify.staleUnit"
EDITED_OUTPUT = "allium.verify.editedOutput"
VACUOUS_TEST = "allium.verify.vacuousTest"
TEST_FAILED = "allium.verify.testFailed"
COVERAGE_BELOW_MINIMUM = "allium.verify.coverageBelowMinimum"
COLLECT_FAILED = "allium.verify.collectFailed"
FINDING_CODES = (UNCOVERED, ORPHAN_TAG, STALE_UNIT, EDITED_OUTPUT, VACUOUS_TEST, TEST_FAILED,
                 COVERAGE_BELOW_MINIMUM, COLLECT_FAILED)

REPORT_VERSION = 1


@dataclass
class ObligationResult:
    id: str
    category: str
    description: str
    component: str
    span: Span | None
    tests: list[str] = field(default_factory=list)  # node ids of the tests tagged with it
    vacuous: list[str] = field(default_factory=list)  # of those, the vacuous ones
    failed: list[str] = field(default_factory=list)  # of those, the failed ones (with run)

    @property
    def status(self) -> str:
        """covered | uncovered | vacuous | failed. Only `covered` counts towards coverage."""
        if not self.tests:
            return "uncovered"
        if self.failed:
            return "failed"
        if len(self.vacuous) == len(self.tests):
            return "vacuous"
        return "covered"

    def location(self) -> str:
        return _where(self.span)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id, "category": self.category, "description": self.description,
            "component": self.component, "status": self.status,
            "location": self.span.to_json() if self.span else None,
            "tests": self.tests, "vacuous_tests": self.vacuous, "failed_tests": self.failed,
        }


@dataclass
class ComponentSummary:
    name: str
    file: str
    obligations: list[ObligationResult]

    @property
    def total(self) -> int:
        return len(self.obligations)

    @property
    def covered(self) -> int:
        return sum(1 for o in self.obligations if o.status == "covered")

    @property
    def percent(self) -> float:
        return percent(self.covered, self.total)

    @property
    def gaps(self) -> list[ObligationResult]:
        return [o for o in self.obligations if o.status != "covered"]

    def to_json(self) -> dict[str, object]:
        return {
            "component": self.name, "file": self.file, "covered": self.covered, "total": self.total,
            "percent": round(self.percent, 1),
            "gaps": [{"id": g.id, "status": g.status, "location": g.span.to_json() if g.span else None,
                      "description": g.description} for g in self.gaps],
        }


@dataclass
class VerifyReport:
    spec_files: list[str]
    package_root: Path
    components: list[ComponentSummary]
    findings: list[Diagnostic]  # allium.verify.* diagnostics
    spec_diagnostics: list[Diagnostic]  # from checking the specs themselves
    sources: dict[str, SourceFile]  # for carets under findings (specs and test files)
    tests: int = 0
    tagged_tests: int = 0
    ran: bool = False
    min_coverage: float = 100.0
    seconds: float = 0.0  # the whole verify_package call
    collect_seconds: float = 0.0  # of which the pytest subprocess
    failures: list[dict[str, object]] = field(default_factory=list)  # failed test -> obligations/rules/spans

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [*self.spec_diagnostics, *self.findings]

    @property
    def obligations(self) -> list[ObligationResult]:
        return [o for c in self.components for o in c.obligations]

    @property
    def covered(self) -> int:
        return sum(c.covered for c in self.components)

    @property
    def total(self) -> int:
        return sum(c.total for c in self.components)

    @property
    def coverage(self) -> float:
        return percent(self.covered, self.total)

    def codes(self) -> list[str]:
        return sorted(d.code for d in self.findings)

    def by_code(self, code: str) -> list[Diagnostic]:
        return [d for d in self.findings if d.code == code]

    @property
    def exit_code(self) -> int:
        """0 clean, 1 findings (errors or warnings, in the specs or the package)."""
        return 1 if has_failures(self.diagnostics) else 0


def percent(covered: int, total: int) -> float:
    return 100.0 if total == 0 else 100.0 * covered / total


def _where(span: Span | None) -> str:
    return f"{span.file}:{span.start.line}:{span.start.column}" if span else "-"


# ---------------------------------------------------------------- text


def render_summary(report: VerifyReport) -> str:
    """The coverage table and the list of gaps: what a person reads first."""
    width = max([len("component"), *(len(c.name) for c in report.components)])
    head = f"{'component':<{width}}  {'covered':>7}  {'total':>5}  {'coverage':>8}  {'gaps':>4}"
    lines = [head, "-" * len(head)]
    for comp in report.components:
        lines.append(f"{comp.name:<{width}}  {comp.covered:>7}  {comp.total:>5}  "
                     f"{comp.percent:>7.1f}%  {len(comp.gaps):>4}")
    lines.append("-" * len(head))
    lines.append(f"{'total':<{width}}  {report.covered:>7}  {report.total:>5}  "
                 f"{report.coverage:>7.1f}%  {report.total - report.covered:>4}")
    gaps = [g for c in report.components for g in c.gaps]
    if gaps:
        lines.append("")
        lines.append("gaps:")
        idw = max(len(g.id) for g in gaps)
        for gap in gaps:
            lines.append(f"  {gap.status:<9} {gap.id:<{idw}}  {gap.location()}")
    verb = "ran" if report.ran else "collected"
    lines.append("")
    lines.append(f"{report.tests} tests {verb} ({report.tagged_tests} tagged) in {report.package_root}; "
                 f"minimum coverage {report.min_coverage:g}%")
    return "\n".join(lines)


def render_report_text(report: VerifyReport) -> str:
    """Findings (with carets) first, then the coverage summary and one status line."""
    parts = []
    if report.diagnostics:
        parts.append(render_text(report.diagnostics, report.sources, summary=False))
        parts.append("")
    parts.append(render_summary(report))
    parts.append(summary_line(report.diagnostics, len(report.spec_files)))
    return "\n".join(parts)


# ---------------------------------------------------------------- json


def report_json(report: VerifyReport) -> dict[str, object]:
    diagnostics = sorted(report.diagnostics, key=Diagnostic.sort_key)
    return {
        "version": REPORT_VERSION,
        **package_json(report),
        "diagnostics": [d.to_json() for d in diagnostics],
        "summary": {s.value: sum(1 for d in diagnostics if d.severity is s) for s in Severity},
        "exit_code": report.exit_code,
    }


def package_json(report: VerifyReport) -> dict[str, object]:
    """What the check found in the package: `allium check`'s `package` object."""
    return {
        "package": str(report.package_root),
        "spec_files": report.spec_files,
        "ran": report.ran,
        "tests": report.tests,
        "tagged_tests": report.tagged_tests,
        "coverage": {
            "covered": report.covered, "total": report.total,
            "percent": round(report.coverage, 1), "minimum": report.min_coverage,
            "components": [c.to_json() for c in report.components],
        },
        "obligations": [o.to_json() for o in report.obligations],
        "failures": report.failures,
    }


def render_report_json(report: VerifyReport) -> str:
    return json.dumps(report_json(report), indent=2)


# ---------------------------------------------------------------- junit


def junit_xml(report: VerifyReport) -> ET.Element:
    """One <testsuite> per component, one <testcase> per obligation.

    CI dashboards then show spec obligations, not test functions: an uncovered,
    vacuous or failed obligation is a failing test case.
    """
    suites = ET.Element("testsuites", name="allium", tests=str(report.total),
                        failures=str(report.total - report.covered))
    for comp in report.components:
        suite = ET.SubElement(suites, "testsuite", name=comp.name, tests=str(comp.total),
                              failures=str(len(comp.gaps)), file=comp.file)
        for ob in comp.obligations:
            case = ET.SubElement(suite, "testcase", classname=comp.name, name=ob.id,
                                 file=ob.span.file if ob.span else comp.file,
                                 line=str(ob.span.start.line if ob.span else 0))
            if ob.status != "covered":
                failure = ET.SubElement(case, "failure", type=ob.status, message=_junit_message(ob))
                failure.text = "\n".join([f"{ob.description} ({ob.location()})",
                                          *(f"test: {t}" for t in ob.tests)])
    return suites


def _junit_message(ob: ObligationResult) -> str:
    if ob.status == "uncovered":
        return "no test is tagged with this obligation"
    if ob.status == "vacuous":
        return "every test tagged with it is vacuous: " + ", ".join(ob.vacuous)
    return "tagged test failed: " + ", ".join(ob.failed)


def write_junit(report: VerifyReport, path: str | Path) -> None:
    tree = ET.ElementTree(junit_xml(report))
    ET.indent(tree)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def file_span(file: str, line: int, column: int = 1) -> Span:
    """A span at a line of a test or output file (no offsets: only line/col are shown)."""
    from allium.source import Position

    pos = Position(line, column, 0, 0)
    return Span(file, pos, pos)

