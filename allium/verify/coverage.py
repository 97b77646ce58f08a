"""`verify_package`: the spec-vs-tests check, from spec paths to a :class:`VerifyReport`.

Steps: check the specs; derive their obligations; collect (or run) the
package's tests in a subprocess; then match tags to obligations, judge each
tagged test statically for vacuity, compare the lockfile with today's specs
and files, and sum coverage per component (spec module).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from allium import ast
from allium.diagnostics import Diagnostic, error, info, warning
from allium.source import SourceFile, Span
from allium.verify.collect import Collection, CollectedTest, CollectError, start_pytest
from allium.verify.flow import PHRASES
from allium.verify.markers import qualified_tag
from allium.verify.package import PackageLayout, find_package
from allium.verify.report import (COLLECT_FAILED, COVERAGE_BELOW_MINIMUM, ORPHAN_TAG, TEST_FAILED,
                                  UNCOVERED, VACUOUS_TEST, ComponentSummary, ObligationResult,
                                  VerifyReport, file_span)
from allium.verify.terms import subject_terms, vocabulary
from allium.verify.vacuity import Vacuity, find_vacuous, tag_location


def verify_package(
    spec_paths: Iterable[str | Path],
    package_dir: str | Path | PackageLayout,
    *,
    run: bool = False,
    timeout: float = 120,
    min_coverage: float = 100.0,
    obligations: Sequence[Any] | None = None,
    strict_vacuity: bool = True,
) -> VerifyReport:
    """Check a generated package against its specs. ``obligations`` overrides ``allium.plan``.

    ``strict_vacuity`` adds the data-flow vacuity rules (:mod:`allium.verify.flow`).
    """
    from allium.check import check_paths, discover
    from allium.verify.drift import find_drift

    start = time.perf_counter()
    spec_files = discover(spec_paths)  # usage errors before any process is started
    layout = package_dir if isinstance(package_dir, PackageLayout) else find_package(package_dir)
    findings: list[Diagnostic] = []
    pending = None
    try:
        # pytest imports the package while we check the specs: the two cost about the same
        pending = start_pytest(layout.tests_dir, root=layout.root, timeout=timeout, run=run)
    except CollectError as exc:
        findings.append(error(COLLECT_FAILED, str(exc)))
    collection = Collection(root=layout.root, ran=run)
    try:
        checked = check_paths(spec_files)
        if obligations is None:
            obligations = derive_all(checked.modules.values())
        drift = find_drift(layout, checked.modules)
        if pending is not None:
            collection = pending.wait()
    except CollectError as exc:
        findings.append(error(COLLECT_FAILED, str(exc)))
    finally:
        if pending is not None:
            pending.cancel()  # no-op once waited for; otherwise leave no stray pytest behind
    assert obligations is not None  # derived above, before anything that raises CollectError
    report = analyse(obligations, collection, checked.modules, min_coverage=min_coverage,
                     sources=dict(checked.sources), findings=findings, strict_vacuity=strict_vacuity)
    report.findings.extend(drift)
    report.spec_files = list(checked.files)
    report.spec_diagnostics = list(checked.diagnostics)
    report.collect_seconds = collection.seconds
    report.seconds = time.perf_counter() - start
    return report


def derive_all(modules: Iterable[ast.Module]) -> list[Any]:
    from allium.plan import derive_obligations

    return [o for module in modules for o in derive_obligations(module)]


def analyse(
    obligations: Sequence[Any],
    collection: Collection,
    modules: Mapping[str, ast.Module],
    *,
    min_coverage: float = 100.0,
    sources: dict[str, SourceFile] | None = None,
    findings: list[Diagnostic] | None = None,
    strict_vacuity: bool = True,
) -> VerifyReport:
    """Everything after collection: pure, so tests can feed hand-built inputs."""
    findings = findings if findings is not None else []
    sources = sources if sources is not None else {}
    all_results = [_result(o) for o in obligations]
    results = _by_tag(all_results)
    for tag, tests in collection.by_obligation().items():
        for res in results.get(tag, ()):
            _add(res.tests, (t.nodeid for t in tests))

    vocab = vocabulary(modules.values())
    tagged = [(t.nodeid, tuple(o for o in t.obligations if o in results)) for t in collection.tagged]
    vacuous = find_vacuous([(n, ids) for n, ids in tagged if ids], collection.root,
                           lambda tag: subject_terms(results[tag][0].id, vocab),  # the id, unqualified
                           flow=strict_vacuity)
    for v in vacuous:
        for res in results[v.obligation]:
            _add(res.vacuous, (v.nodeid,))
    failures = [t for t in collection.tests if t.failed]
    for test in failures:
        for tag in test.obligations:
            for res in results.get(tag, ()):
                _add(res.failed, (test.nodeid,))

    components = summarise(all_results)
    report = VerifyReport(
        spec_files=sorted(modules), package_root=collection.root, components=components,
        findings=findings, spec_diagnostics=[], sources=sources, tests=len(collection.tests),
        tagged_tests=len(collection.tagged), ran=collection.ran, min_coverage=min_coverage,
    )
    below = report.coverage < min_coverage
    findings.extend(uncovered_findings(all_results, gate_failed=below))
    findings.extend(orphan_findings(collection, results))
    findings.extend(vacuous_findings(vacuous, collection.root))
    failed, report.failures = failure_findings(failures, results, collection.root)
    findings.extend(failed)
    if below:
        findings.append(error(
            COVERAGE_BELOW_MINIMUM,
            f"obligation coverage {report.coverage:.1f}% ({report.covered}/{report.total}) "
            f"is below the minimum of {min_coverage:g}%",
        ))
    _add_test_sources(report, collection.root)
    return report


def _by_tag(all_results: Sequence[ObligationResult]) -> dict[str, list[ObligationResult]]:
    """The obligations each tag discharges.

    Ids are unique within a module, not across modules (two modules may each
    have `config-default.max_entries`), so a bare id discharges the id wherever
    it occurs, and a qualified tag (markers.qualified_tag) only that
    component's.
    """
    results: dict[str, list[ObligationResult]] = {}
    for res in all_results:
        results.setdefault(res.id, []).append(res)
        if res.component:
            results.setdefault(qualified_tag(res.component, res.id), []).append(res)
    return results


def _add(nodeids: list[str], new: Iterable[str]) -> None:
    """Extend `nodeids` in order, once each: a test may reach one obligation by both tag forms."""
    nodeids.extend(n for n in new if n not in nodeids)


def _result(ob: Any) -> ObligationResult:
    span: Span | None = getattr(ob, "span", None)
    component = getattr(ob, "component", None) or (Path(span.file).stem if span else "")
    return ObligationResult(ob.id, getattr(ob, "category", ""), getattr(ob, "description", ""),
                            component, span)


def summarise(results: Iterable[ObligationResult]) -> list[ComponentSummary]:
    """Group per component (spec module), in component-name order, obligations in plan order."""
    groups: dict[str, ComponentSummary] = {}
    for res in results:
        if res.component not in groups:
            groups[res.component] = ComponentSummary(res.component, res.span.file if res.span else "", [])
        groups[res.component].obligations.append(res)
    return [groups[name] for name in sorted(groups)]


# ---------------------------------------------------------------- findings


def construct_of(obligation_id: str) -> str:
    """The construct an obligation hangs off: `rule-failure.ShipOrder.1` -> `ShipOrder`."""
    parts = obligation_id.split(".")
    return parts[1] if len(parts) > 1 else obligation_id


def uncovered_findings(results: Iterable[ObligationResult], *, gate_failed: bool) -> list[Diagnostic]:
    """One finding per construct (rule, entity, ...) listing its untagged obligations.

    An error only when coverage is under the minimum: below-gate gaps block,
    tolerated gaps are still listed (as info) so nobody forgets them.
    """
    groups: dict[tuple[str, str], list[ObligationResult]] = {}
    for res in results:
        if res.status == "uncovered":
            groups.setdefault((res.component, construct_of(res.id)), []).append(res)
    make = error if gate_failed else info
    out = []
    for (_, construct), gaps in groups.items():
        noun = "obligation" if len(gaps) == 1 else "obligations"
        ids = ", ".join(g.id for g in gaps)
        out.append(make(
            UNCOVERED, f"{construct}: {len(gaps)} {noun} without a test: {ids}", gaps[0].span,
            *(f"{g.id} ({g.location()}): {g.description}" for g in gaps),
        ))
    return out


def orphan_findings(collection: Collection, results: Mapping[str, object]) -> list[Diagnostic]:
    out = []
    for test in collection.tagged:
        for oid in test.obligations:
            if oid not in results:
                line, col = tag_location(collection.root, test.nodeid, oid)
                out.append(warning(
                    ORPHAN_TAG,
                    f"test {_name(test.nodeid)} is tagged '{oid}', which is not an obligation of the spec",
                    file_span(_display(collection.root, test.file), line, col),
                    f"test: {test.nodeid}", _suggest(oid, results),
                ))
    return out


def vacuous_findings(vacuous: Sequence[Vacuity], root: Path) -> list[Diagnostic]:
    out = []
    for v in vacuous:
        why = ("it asserts nothing" if v.reason == "no-assert"
               else f"it {v.detail}" if v.reason == "unrelated" else f"no assertion can fail because of the code: {v.detail}")
        out.append(warning(
            VACUOUS_TEST, f"test {_name(v.nodeid)} is vacuous for '{v.obligation}': {why}",
            file_span(_display(root, v.nodeid.split("::", 1)[0]), v.line),
            f"test: {v.nodeid}", f"vacuity rule: {v.reason} ({_VACUITY_RULES.get(v.reason, PHRASES.get(v.reason))})",
        ))
    return out


_VACUITY_RULES = {
    "no-assert": "no assert, pytest.raises/warns/fail or assert* call, in the test or its same-file helpers",
    "unrelated": "the test, its same-file helpers and fixtures name nothing the obligation is about",
}


def failure_findings(
    failures: Sequence[CollectedTest], results: Mapping[str, list[ObligationResult]], root: Path,
) -> tuple[list[Diagnostic], list[dict[str, object]]]:
    """testFailed findings, each pointing at the spec (first obligation) with the test in notes."""
    diags: list[Diagnostic] = []
    mapped: list[dict[str, object]] = []
    for test in failures:
        known = [res for o in test.obligations for res in results.get(o, ())]
        constructs = list(dict.fromkeys(construct_of(o.id) for o in known))
        span = known[0].span if known else file_span(_display(root, test.file), 1)
        about = f" (discharging {', '.join(o.id for o in known)})" if known else " (untagged)"
        diags.append(error(
            TEST_FAILED, f"test {_name(test.nodeid)} {test.outcome}{about}", span,
            f"test: {test.nodeid}", f"message: {test.message or test.outcome}",
            *(f"{o.id} -> {construct_of(o.id)} at {o.location()}" for o in known),
        ))
        mapped.append({
            "nodeid": test.nodeid, "outcome": test.outcome, "message": test.message,
            "rules": constructs,
            "obligations": [{"id": o.id, "location": o.span.to_json() if o.span else None} for o in known],
        })
    return diags, mapped


def _suggest(oid: str, results: Mapping[str, object]) -> str:
    import difflib

    close = difflib.get_close_matches(oid, list(results), n=1, cutoff=0.75)
    return f"did you mean '{close[0]}'?" if close else "remove the tag or restore the obligation in the spec"


def _name(nodeid: str) -> str:
    return nodeid.split("::", 1)[-1]


def _display(root: Path, rel: str) -> str:
    path = root / rel
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _add_test_sources(report: VerifyReport, root: Path) -> None:
    """Load the test files findings point at, so text output shows the offending line."""
    for diag in report.findings:
        if diag.span is None or diag.file in report.sources:
            continue
        if diag.code in (ORPHAN_TAG, VACUOUS_TEST) and Path(diag.file).is_file():
            report.sources[diag.file] = SourceFile.read(diag.file)

