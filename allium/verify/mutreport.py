"""Findings and output for `allium check --mutate`: text, JSON and SARIF additions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from allium.diagnostics import Diagnostic, error, info, warning
from allium.verify.mutate import MutationReport
from allium.verify.report import VerifyReport, file_span

NO_MUTANT_KILLED = "allium.verify.noMutantKilled"
NO_CODE_MAPPED = "allium.verify.noCodeMapped"
MUTANT_SURVIVED = "allium.verify.mutantSurvived"
MUTATION_BUDGET = "allium.verify.mutationBudget"
MUTATION_SCORE_BELOW_MINIMUM = "allium.verify.mutationScoreBelowMinimum"
MUTATION_CODES = (NO_MUTANT_KILLED, NO_CODE_MAPPED, MUTANT_SURVIVED, MUTATION_BUDGET, MUTATION_SCORE_BELOW_MINIMUM)


def mutation_findings(mutation: MutationReport, *, min_score: float = 0.0) -> list[Diagnostic]:
    """Per obligation: kills none (warning, with a surviving mutant's diff) or has no code (info)."""
    by_id = {r.mutant.id: r for r in mutation.mutants}
    out: list[Diagnostic] = []
    for ob in mutation.obligations:
        res = ob.result
        if ob.status == "kills-none":
            survivor = by_id[ob.survivor] if ob.survivor else None
            notes = [f"test: {t}" for t in res.tests]
            if survivor is not None:
                notes.append(f"surviving mutant ({survivor.mutant.operator}): {survivor.mutant.short()}")
                notes.extend(survivor.mutant.diff.splitlines())
            n = len(ob.mutants)
            out.append(warning(
                NO_MUTANT_KILLED,
                f"the tests of '{res.id}' kill none of the {n} mutant{'s' if n != 1 else ''} of the code mapped to it",
                res.span, *notes))
        elif ob.status == "unmapped":
            out.append(info(
                NO_CODE_MAPPED,
                f"'{res.id}' has no code to mutate: its tests run no function of {res.component}'s own files "
                "and no function is marked @implements for it", res.span, *(f"test: {t}" for t in res.tests)))
    if mutation.budget_hit:
        not_run = sum(1 for r in mutation.mutants if r.status == "not-run")
        out.append(warning(MUTATION_BUDGET, f"the mutation time budget ran out: {not_run} mutants were not run; "
                                            "their obligations are not judged"))
    for component, score in mutation.by_component().items():
        if score.killed + score.survived and score.percent < min_score:
            out.append(error(MUTATION_SCORE_BELOW_MINIMUM,
                             f"{component}: mutation score {score.percent:.1f}% is below the minimum of {min_score:g}%"))
    return out


def survivor_findings(mutation: MutationReport, root: Path) -> list[Diagnostic]:
    """Every surviving mutant as an info at its place in the generated code (for SARIF viewers)."""
    out = []
    for r in mutation.survivors():
        m = r.mutant
        why = "no tagged test runs this line" if not r.tests else f"{len(r.tests)} tagged tests run it and pass"
        out.append(info(MUTANT_SURVIVED, f"mutant survived ({m.operator}): {m.description} in {m.qualname}; {why}",
                        file_span(_display(root / m.file), m.line), *m.diff.splitlines()))
    return out


def render_mutation_text(mutation: MutationReport) -> str:
    """Scores per component, the weakest rules, and every survivor on one line."""
    scores = mutation.by_component()
    width = max([len("component"), *(len(c) for c in scores)])
    head = f"{'component':<{width}}  {'mutants':>7}  {'killed':>6}  {'survived':>8}  {'score':>6}"
    lines = ["mutation (spec-scoped):", head, "-" * len(head)]
    for name, s in scores.items():
        cached = " (cached)" if name in mutation.cached_units else ""
        lines.append(f"{name:<{width}}  {s.killed + s.survived + s.other:>7}  {s.killed:>6}  {s.survived:>8}  "
                     f"{s.percent:>5.1f}%{cached}")
    weak = [(r, s) for r, s in mutation.by_rule().items() if s.survived]
    if weak:
        lines += ["", "rules with surviving mutants (score, survivors):"]
        lines += [f"  {r:<40} {s.percent:>5.1f}%  {s.survived}" for r, s in sorted(weak, key=lambda x: x[1].percent)]
    survivors = mutation.survivors()
    if survivors:
        lines += ["", f"surviving mutants ({len(survivors)}):"]
        lines += [f"  {r.mutant.short()}  [{r.mutant.operator}]" + ("" if r.tests else " (no test runs it)")
                  for r in sorted(survivors, key=lambda r: (r.mutant.file, r.mutant.line))]
    if mutation.trace_failures:
        lines += ["", f"left out (failing unmutated): {', '.join(mutation.trace_failures)}"]
    total = sum(len(o.mutants) > 0 for o in mutation.obligations)
    kills = sum(o.status == "kills" for o in mutation.obligations)
    lines += ["", f"{kills}/{total} obligations with mapped code kill a mutant; {len(mutation.mutants)} mutants in "
                  f"{mutation.seconds:.1f}s" + (" (budget ran out)" if mutation.budget_hit else "")]
    return "\n".join(lines)


def add_to_json(document: dict[str, Any], mutation: MutationReport) -> dict[str, Any]:
    document["mutation"] = mutation.to_json()
    return document


def add_to_sarif(sarif_text: str, mutation: MutationReport) -> str:
    """The scores go in the run's properties; survivors are already results (survivor_findings)."""
    document = json.loads(sarif_text)
    for run in document.get("runs", []):
        run.setdefault("properties", {})["mutation"] = {
            "components": {c: s.to_json() for c, s in mutation.by_component().items()},
            "rules": {r: s.to_json() for r, s in mutation.by_rule().items()},
        }
    return json.dumps(document, indent=2)


def merge(report: VerifyReport, mutation: MutationReport, *, min_score: float = 0.0) -> None:
    report.findings.extend(mutation_findings(mutation, min_score=min_score))


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
