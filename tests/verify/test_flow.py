"""Data-flow vacuity (allium.verify.flow): each class on the `weak` fixture, exact findings."""

from __future__ import annotations

import textwrap
from pathlib import Path

from allium.verify.coverage import verify_package
from allium.verify.report import VACUOUS_TEST
from allium.verify.vacuity import find_vacuous

SWALLOWED = "is swallowed: an except or suppress() catches its failure and does not re-raise"


def test_each_vacuity_class_is_found_with_a_one_line_reason(project) -> None:
    root = project("weak")
    report = verify_package([root / "specs"], root / "generated", run=True)
    found = {(d.message.split("'")[1], d.span.start.line): d.message.split(": ", 2)[2]
             for d in report.by_code(VACUOUS_TEST)}
    assert found == {
        ("config-default.ttl", 24): "line 24: `assert True` is a constant: it cannot fail",
        ("rule-success.StoreEntry", 36): "line 36: `assert entry.status == entry.status` is always true",
        ("rule-entity-creation.StoreEntry.1", 42): "line 42: `assert isinstance(entry, Entry)` checks only a type",
        ("rule-failure.StoreEntry.1", 48):
            "line 48: `with pytest.raises(KeyError)` expects an exception from code that never touches the package",
        ("rule-success.EntryExpires", 57):
            "line 57: `assert expected['status'] == 'expired', entry` checks only values the test built itself",
        ("transition-edge.Entry.live.expired", 65): "line 65: `assert entry.status == 'expired'` cannot be reached",
        ("temporal.EntryExpires", 74): "line 74: `assert entry.status == 'live'` comes after the test has returned",
        ("rule-failure.EntryExpires.1", 82): f"line 82: `assert cache.tick(T0 + TTL) == []` {SWALLOWED}",
        ("transition-rejected.Entry.status", 91): f"line 91: `assert entry.status == 'live'` {SWALLOWED}",
    }
    # a type check is what a fields obligation needs; the contrast test is strong
    assert {o.id for o in report.obligations if o.status == "covered"} == {
        "entity-fields.Entry", "transition-terminal.Entry.status"}
    # the lexical rules alone accept every one of them
    lexical = verify_package([root / "specs"], root / "generated", strict_vacuity=False)
    assert lexical.by_code(VACUOUS_TEST) == []


def _judge(tmp_path: Path, body: str) -> list[tuple[str, str]]:
    (tmp_path / "test_x.py").write_text(textwrap.dedent(body))
    import ast

    tree = ast.parse((tmp_path / "test_x.py").read_text())
    names = [f.name for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test")]
    found = find_vacuous([(f"test_x.py::{n}", ("rule-success.R",)) for n in names], tmp_path,
                         lambda oid: frozenset(), flow=True)
    return [(v.nodeid.split("::")[1], v.reason) for v in found]


def test_strong_tests_are_never_flagged(tmp_path: Path) -> None:
    """Unsure is tainted: values that pass through the package, fixtures, helpers and unknown names."""
    assert _judge(tmp_path, '''
        import pytest
        from pkg import make, Thing

        @pytest.fixture
        def thing():
            return Thing()

        def built():
            return make()

        def test_passed_through_a_call(thing):
            items = []
            thing.fill(items)
            assert items == [1]

        def test_receiver_changed_by_argument():
            seen = []
            seen.append(make())
            assert seen

        def test_via_helper():
            value = built()
            assert value == 2

        def test_unknown_name():
            assert mystery() == 3

        def test_loop_over_result():
            for x in make():
                assert x > 0

        def test_raises_call_form():
            pytest.raises(ValueError, make, -1)

        def test_except_that_reraises():
            try:
                assert make() == 1
            except AssertionError:
                raise

        def test_conditional_return_then_assert():
            if make() is None:
                return
            assert make() == 1
    ''') == []


def test_parametrize_values_are_self_built(tmp_path: Path) -> None:
    assert _judge(tmp_path, '''
        import pytest
        from pkg import make

        @pytest.mark.parametrize("n", [1, 2])
        def test_param_only(n):
            make(n + 1)  # a new value: n itself cannot be changed by the call
            assert n > 0

        @pytest.mark.parametrize("n", [1, 2])
        def test_param_through_package(n):
            assert make(n) > 0
    ''') == [("test_param_only", "self-built")]
