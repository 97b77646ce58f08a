"""The pytest plugin allium installs (entry point ``pytest11: allium``).

* registers ``@pytest.mark.allium("<obligation id>", ...)``;
* ``--allium-obligation ID`` / ``--allium-rule NAME`` select the tests that
  discharge an obligation (a trailing ``*`` matches a prefix) or any
  obligation of a rule, entity or surface;
* ``--allium-report FILE`` writes JSON: test id -> obligations -> outcome.

It deliberately imports nothing from the rest of allium, so a generated
package's plain ``pytest`` run pays nothing for it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from allium.verify.markers import tag_id

MARKER = "allium"
REPORT_VERSION = 1


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("allium", "allium spec obligations")
    group.addoption(
        "--allium-obligation", action="append", default=[], metavar="ID",
        help="run only tests tagged with this obligation id (glob; repeatable)",
    )
    group.addoption(
        "--allium-rule", action="append", default=[], metavar="NAME",
        help="run only tests tagged with an obligation of this rule/entity/surface (repeatable)",
    )
    group.addoption(
        "--allium-report", default=None, metavar="FILE",
        help="write a JSON report of test -> obligations -> outcome",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(*obligation_ids): the allium spec obligations this test discharges"
    )
    path = config.getoption("--allium-report", default=None)
    if path:
        config.stash[_REPORT_KEY] = _Report(Path(path))
        config.pluginmanager.register(config.stash[_REPORT_KEY], "allium-report")


def obligations_of(item: pytest.Item) -> tuple[str, ...]:
    """Every obligation id an item's allium markers name, in order, deduplicated."""
    ids: list[str] = []
    for mark in item.iter_markers(name=MARKER):
        for arg in mark.args:
            if isinstance(arg, str) and arg.strip():
                ids.append(arg.strip())
            else:
                warnings.warn(
                    pytest.PytestWarning(f"{item.nodeid}: allium marker arguments must be obligation id strings, got {arg!r}"),
                    stacklevel=2,
                )
    return tuple(dict.fromkeys(ids))


def rule_of(obligation_id: str) -> str | None:
    """`rule-failure.ShipOrder.1` -> `ShipOrder` (the construct after the category)."""
    parts = obligation_id.split(".")
    return parts[1] if len(parts) > 1 else None


def _selected(tags: tuple[str, ...], patterns: list[str], rules: list[str]) -> bool:
    # A tag may name one component's obligation (markers.qualified_tag):
    # patterns match it with or without the component.
    ids = {*tags, *map(tag_id, tags)}
    if patterns and any(fnmatch.fnmatchcase(i, p) for i in ids for p in patterns):
        return True
    return bool(rules) and any(rule_of(i) in rules for i in ids)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    patterns = config.getoption("--allium-obligation")
    rules = config.getoption("--allium-rule")
    if not patterns and not rules:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if _selected(obligations_of(item), patterns, rules) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class _Report:
    """Collects outcomes per test and writes them at the end of the session."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tests: dict[str, dict[str, Any]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.tests[item.nodeid] = {
                "nodeid": item.nodeid,
                "obligations": list(obligations_of(item)),
                "outcome": "not run",
                "duration": 0.0,
                "message": None,
            }

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.get(report.nodeid)
        if entry is None:
            return
        entry["duration"] = round(entry["duration"] + report.duration, 6)
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome: str = report.outcome
            if report.when == "setup" and report.failed:
                outcome = "error"
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            entry["outcome"] = outcome
        elif report.when == "teardown" and report.failed:
            entry["outcome"] = "error"
        if report.failed and entry["message"] is None:
            entry["message"] = _summary(report)

    def pytest_sessionfinish(self) -> None:
        obligations: dict[str, list[str]] = {}
        for entry in self.tests.values():
            for oid in entry["obligations"]:
                obligations.setdefault(oid, []).append(entry["nodeid"])
        document = {
            "version": REPORT_VERSION,
            "tests": list(self.tests.values()),
            "obligations": dict(sorted(obligations.items())),
        }
        text = json.dumps(document, indent=2) + "\n"
        if self.path.is_symlink() or self.path.exists() and not self.path.is_file():
            # a link, a device, a pipe: write through it; renaming over it would replace it
            with open(self.path, "w", encoding="utf-8") as out:
                out.write(text)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)  # readers never see half a report


def _summary(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return f"{crash.path}:{crash.lineno}: {crash.message}"
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else "failed"


_REPORT_KEY = pytest.StashKey[_Report]()
