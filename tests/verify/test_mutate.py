"""`allium check --mutate` on the `mutate` fixture, and the pieces it is made of."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from fixture_projects import FIXTURES, relock

from allium.verify.coverage import verify_package
from allium.verify.mutants import mutants_of
from allium.verify.mutate import mutate_package
from allium.verify.mutreport import (
    MUTATION_BUDGET,
    NO_CODE_MAPPED,
    NO_MUTANT_KILLED,
    mutation_findings,
    render_mutation_text,
)
from allium.verify.package import find_package
from allium.verify.workers import Worker, scrubbed_env

SURVIVORS = [
    "shop/shop.py:23 place_order: `0` -> `1`",
    "shop/shop.py:32 apply_discount: `order.total <= 100` -> `order.total < 100`",
    "shop/shop.py:32 apply_discount: `100` -> `101`",
    "shop/shop.py:34 apply_discount: `order.total = order.total - 10` -> `pass`",
    "shop/shop.py:34 apply_discount: `order.total - 10` -> `order.total + 10`",
    "shop/shop.py:34 apply_discount: `10` -> `11`",
    "shop/shop.py:35 apply_discount: `order.discounted = True` -> `pass`",
    "shop/shop.py:35 apply_discount: `True` -> `False`",
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mutate") / "mutate"
    shutil.copytree(FIXTURES / "mutate", root, ignore=shutil.ignore_patterns("__pycache__"))
    relock(root, package="shop")
    return root


def _gate(root: Path, **options):
    report = verify_package([root / "specs"], root / "generated", run=True)
    assert report.findings == []  # fully covered, nothing vacuous: only mutation can tell these tests apart
    return mutate_package(report, find_package(root / "generated"), jobs=1, **options)


def test_the_gate_tells_a_killing_test_from_one_that_kills_nothing(shop: Path) -> None:
    mutation = _gate(shop)
    status = {o.result.id: o.status for o in mutation.obligations}
    assert status == {
        "entity-fields.Order": "unmapped",  # its test runs no function of shop.py
        "rule-success.PlaceOrder": "kills", "rule-entity-creation.PlaceOrder.1": "kills",
        "rule-failure.PlaceOrder.1": "kills", "rule-failure.ApplyDiscount.1": "kills",
        "rule-success.ApplyDiscount": "kills-none",
    }
    findings = mutation_findings(mutation)
    assert [(d.code, d.severity.value, d.span.start.line) for d in findings] == [
        (NO_CODE_MAPPED, "info", 4), (NO_MUTANT_KILLED, "warning", 15)]
    killed_none = findings[1]
    assert killed_none.message == ("the tests of 'rule-success.ApplyDiscount' kill none of the 9 mutants "
                                   "of the code mapped to it")
    assert killed_none.notes[0] == "test: tests/test_shop.py::test_discount_keeps_the_total_positive"
    assert killed_none.notes[1].startswith("surviving mutant (")
    assert any(n.startswith("-") for n in killed_none.notes) and any(n.startswith("+") for n in killed_none.notes)
    assert sorted(r.mutant.short() for r in mutation.survivors()) == sorted(SURVIVORS)
    score = mutation.by_component()["shop"]
    assert (score.killed, score.survived) == (7, 8)
    rules = mutation.by_rule()
    assert (rules["shop.PlaceOrder"].killed, rules["shop.PlaceOrder"].survived) == (5, 1)
    text = render_mutation_text(mutation)
    assert "shop            15       7         8   46.7%" in text
    assert "4/5 obligations with mapped code kill a mutant" in text


def test_results_are_cached_until_something_they_depend_on_changes(shop: Path, tmp_path: Path) -> None:
    first = _gate(shop, cache_dir=tmp_path)
    again = _gate(shop, cache_dir=tmp_path)
    assert again.cached_units == ["shop"] and first.cached_units == []
    assert [(r.mutant.id, r.status) for r in again.mutants] == [(r.mutant.id, r.status) for r in first.mutants]
    assert [o.status for o in again.obligations] == [o.status for o in first.obligations]
    test_file = shop / "generated" / "tests" / "test_shop.py"
    original = test_file.read_text()
    try:
        test_file.write_text(original.replace("assert order.total > 0", "assert order.total == 140"))
        relock(shop, package="shop")
        stronger = _gate(shop, cache_dir=tmp_path)
    finally:
        test_file.write_text(original)
        relock(shop, package="shop")
    assert stronger.cached_units == []
    assert {o.result.id: o.status for o in stronger.obligations}["rule-success.ApplyDiscount"] == "kills"


def test_a_spent_budget_runs_nothing_more_and_says_so(shop: Path) -> None:
    mutation = _gate(shop, budget=0.0)
    assert mutation.budget_hit
    assert {r.status for r in mutation.mutants} == {"not-run"}
    codes = [d.code for d in mutation_findings(mutation)]
    assert MUTATION_BUDGET in codes and NO_MUTANT_KILLED not in codes


def test_operators() -> None:
    source = textwrap.dedent('''\
        def f(a, b):
            """Docstrings and annotations are left alone."""
            if a < b and not a:
                raise ValueError("message text is left alone")
            a.total += 2
            log(a)
            return a * b == "x"
    ''')
    found = {(m.line, m.operator, m.description) for m in mutants_of(source, "m.py", "m")}
    assert found == {
        (3, "remove-guard", "`a < b and (not a)` -> `False`"),
        (3, "boolean", "`a < b and (not a)` -> `a < b or not a`"),
        (3, "boundary", "`a < b` -> `a <= b`"),
        (3, "boolean", "`not a` -> `a`"),
        (4, "remove-raise", "`raise ValueError('message text is left alone')` -> `pass`"),
        (5, "arithmetic", "`a.total += 2` -> `a.total -= 2`"),
        (5, "constant", "`2` -> `3`"),
        (6, "remove-statement", "`log(a)` -> `pass`"),
        (7, "remove-return", "`return a * b == 'x'` -> `return None`"),
        (7, "negate", "`a * b == 'x'` -> `a * b != 'x'`"),
        (7, "arithmetic", "`a * b` -> `a / b`"),
        (7, "constant", "`'x'` -> `'XXx'`"),
    }


def test_model_code_runs_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    env = scrubbed_env({"EXTRA": "1"})
    assert "ANTHROPIC_API_KEY" not in env and "GITHUB_TOKEN" not in env
    assert env["PATH"] == os.environ["PATH"] and env["EXTRA"] == "1"


def test_worker_kills_a_hanging_mutant_and_carries_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    (tmp_path / "loop.py").write_text("def count(n):\n    i = 0\n    while i < n:\n        i += 1\n    return i\n")
    (tmp_path / "test_loop.py").write_text(textwrap.dedent('''\
        import os
        from loop import count

        def test_count():
            assert count(3) == 3

        def test_no_secrets_reach_model_code():
            assert "ANTHROPIC_API_KEY" not in os.environ
    '''))
    worker = Worker(tmp_path, tmp_path)
    try:
        trace = worker.call({"op": "trace", "files": [str(tmp_path / "loop.py")]}, 60)
        assert trace is not None
        assert {n: t["outcome"] for n, t in trace["tests"].items()} == {
            "test_loop.py::test_count": "passed", "test_loop.py::test_no_secrets_reach_model_code": "passed"}
        assert trace["tests"]["test_loop.py::test_count"]["lines"] == {str(tmp_path / "loop.py"): [1, 2, 3, 4, 5]}
        [hang] = [m for m in mutants_of((tmp_path / "loop.py").read_text(), "loop.py", "loop")
                  if m.description == "`i += 1` -> `i -= 1`"]
        request = {"op": "mutant", "id": hang.id, "module": "loop", "qualname": "count",
                   "code": base64.b64encode(hang.code).decode(), "tests": ["test_loop.py::test_count"]}
        assert worker.call(request, 2.0) is None  # timed out: the worker was replaced
        [wrong] = [m for m in mutants_of((tmp_path / "loop.py").read_text(), "loop.py", "loop")
                   if m.operator == "remove-return"]
        request.update(id=wrong.id, code=base64.b64encode(wrong.code).decode())
        answer = worker.call(request, 30)
        assert answer is not None and answer["killed_by"] == "test_loop.py::test_count"
    finally:
        worker.close()


def test_cli_json_and_sarif_carry_scores_and_survivors(shop: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    base = [sys.executable, "-m", "allium", "check", "specs", "--package", "generated", "--mutate",
            "--mutate-jobs", "1", "--mutate-cache", str(tmp_path)]
    done = subprocess.run([*base, "--format", "json"], check=False, cwd=shop, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    mutation = json.loads(done.stdout)["mutation"]
    assert mutation["components"]["shop"] == {"killed": 7, "survived": 8, "not_scored": 0, "score": 46.7}
    assert mutation["rules"]["shop.PlaceOrder"]["score"] == 83.3
    sarif = json.loads(subprocess.run([*base, "--format", "sarif"], check=False, cwd=shop, capture_output=True, text=True,
                                      timeout=120).stdout)
    run = sarif["runs"][0]
    assert run["properties"]["mutation"]["components"]["shop"]["score"] == 46.7
    survived = [r for r in run["results"] if r["ruleId"] == "allium.verify.mutantSurvived"]
    assert len(survived) == len(SURVIVORS)
    assert survived[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "generated/shop/shop.py"


def test_a_test_failing_unmutated_is_left_out(tmp_path: Path) -> None:
    root = tmp_path / "mutate"
    shutil.copytree(FIXTURES / "mutate", root, ignore=shutil.ignore_patterns("__pycache__"))
    tests = root / "generated" / "tests" / "test_shop.py"
    tests.write_text(tests.read_text().replace("assert book.orders == []", "assert book.orders == [None]"))
    relock(root, package="shop")
    report = verify_package([root / "specs"], root / "generated", run=True)
    mutation = mutate_package(report, find_package(root / "generated"), jobs=1)
    failing = "tests/test_shop.py::test_place_order_refuses_a_zero_total"
    assert mutation.trace_failures == [failing]
    assert all(failing not in r.tests for r in mutation.mutants)
    status = {o.result.id: o.status for o in mutation.obligations}
    assert status["rule-success.PlaceOrder"] == "kills"
    assert status["rule-failure.PlaceOrder.1"] == "not-run"  # its one test fails anyway: not a kill
    assert f"left out (failing unmutated): {failing}" in render_mutation_text(mutation)
