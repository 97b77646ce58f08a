"""The showcase specs in specs/ must check clean and yield their obligations.

This pins both: a spec edit that introduces an error or a warning, or that
breaks obligation derivation, fails here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from allium.check import check_paths
from allium.diagnostics import Severity, render_text
from allium.plan import plan_for

SPECS = Path(__file__).resolve().parent.parent / "specs"
COMPONENTS = {"core", "usher", "warden", "registrar", "arbiter", "clerk", "ledger", "cluster", "api",
              "store", "eventlog", "node", "main"}


def test_showcase_checks_without_errors_or_warnings() -> None:
    report = check_paths([SPECS])
    assert {Path(f).stem for f in report.files} == COMPONENTS
    blocking = [d for d in report.diagnostics if d.severity is not Severity.INFO]
    assert blocking == [], render_text(blocking, report.sources)


def test_showcase_plan_derives_unique_obligations_per_component(capsys) -> None:
    report = check_paths([SPECS])
    modules = [report.modules[f] for f in report.files]
    obligations = plan_for(modules)
    per_component = Counter(o.component for o in obligations)
    with capsys.disabled():
        print(f"\nshowcase: {len(obligations)} obligations across {len(per_component)} components")
    assert set(per_component) == COMPONENTS
    for component in COMPONENTS:
        ids = [o.id for o in obligations if o.component == component]
        assert len(ids) == len(set(ids)), component
    # The rules the issue names explicitly must be there, with their failures.
    ids = {o.id for o in obligations}
    assert "rule-success.EntryExpires" in ids
    assert any(i.startswith("rule-failure.EntryExpires.") for i in ids)
    assert any(i.startswith("invariant.") and "Conserv" in i for i in ids)
