"""The wall around lark's and Python's internals (allium/syntax/internals.py).

When something the engine reads is gone, parsing must go on through lark's
own runtime with the same results, and say so once; a bug in the AST
builder must read as a bug in allium, never as a syntax error in the spec.
"""

from __future__ import annotations

import json
import warnings

import lark
import pytest
from click.testing import CliRunner

from allium.ast import to_json
from allium.cli import main
from allium.errors import InternalError
from allium.syntax import build, internals, parse_text
from allium.syntax import grammar as grammar_module

from .conftest import src

SPEC = src("entity Order {\n    total: Integer\n    status: pending | shipped\n}\n\nrule Ship {\n"
           "    when: ShipOrder(order)\n    requires: order.total > 0\n    ensures: order.status = shipped\n}")
BROKEN = src("entity Order {\n    total Integer\n}")


@pytest.fixture
def fresh_engine(tmp_path, monkeypatch):
    """No engine built yet in this process, and an empty cache: the tables are read off lark again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    grammar_module.build_engine.cache_clear()
    monkeypatch.setattr(grammar_module, "_SAID", set())
    yield
    grammar_module.build_engine.cache_clear()


def results(text: str):
    result = parse_text(text, "s.allium")
    return (to_json(result.module) if result.module else None), [d.to_json() for d in result.diagnostics]


def _lark_1_4(monkeypatch):
    monkeypatch.setattr(lark, "__version__", "1.4.0")


def _no_shift_action(monkeypatch):
    from lark.parsers import lalr_analysis

    monkeypatch.delattr(lalr_analysis, "Shift")


def _no_scanner_regexes(monkeypatch):
    monkeypatch.setattr(internals, "_regexes", _missing("a lark scanner has no compiled regexes (_mres)"))


def _no_rule_options(monkeypatch):
    from lark.grammar import RuleOptions

    monkeypatch.delattr(RuleOptions, "__slots__", raising=False)
    monkeypatch.setattr(internals, "reductions", _missing("lark's RuleOptions lost keep_all_tokens"))


def _missing(message: str):
    def fail(*_args, **_kwargs):
        raise internals.InternalsChanged(message)

    return fail


@pytest.mark.parametrize("simulate", [_lark_1_4, _no_shift_action, _no_scanner_regexes, _no_rule_options])
def test_a_missing_internal_falls_back_to_lark_with_one_warning_and_the_same_results(fresh_engine, monkeypatch,
                                                                                     tmp_path, simulate):
    expected = [results(SPEC), results(BROKEN)]
    grammar_module.build_engine.cache_clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))  # tables read off lark again, not loaded
    simulate(monkeypatch)
    with pytest.warns(RuntimeWarning, match="parsing with lark's own runtime, about 4x slower: ") as caught:
        assert grammar_module.build_engine() is None
        assert [results(SPEC), results(BROKEN)] == expected
        assert [results(SPEC), results(BROKEN)] == expected
    assert len([w for w in caught if "lark's own runtime" in str(w.message)]) == 1


def test_the_check_names_what_changed(monkeypatch):
    _lark_1_4(monkeypatch)
    with pytest.raises(internals.InternalsChanged, match=r"written for lark 1\.3\.x \(lark 1\.4\.0, Python 3"):
        internals.check_runtime()


def test_the_regex_parser_check_names_a_missing_op_code(monkeypatch):
    from re import _constants  # type: ignore[attr-defined]

    internals.regex_parser.cache_clear()
    monkeypatch.delattr(_constants, "ATOMIC_GROUP")  # re's compiler keeps its own copy
    try:
        with pytest.raises(internals.InternalsChanged, match=r"re._constants lacks \['ATOMIC_GROUP'\]"):
            internals.regex_parser()
    finally:
        internals.regex_parser.cache_clear()


def test_a_state_scanner_read_at_run_time_falls_back_too(fresh_engine, monkeypatch):
    # `order.total/count`: only the state's own scanner reads `total` there.
    text = src("entity A {\n    x: order.total/count\n}")
    expected = results(text)
    grammar_module.build_engine.cache_clear()
    monkeypatch.setattr(internals, "state_scan", _missing("a state's lexer has no callback table"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert results(text) == expected
    assert [str(w.message) for w in caught] == [
        "parsing with lark's own runtime, about 4x slower: a state's lexer has no callback table"]


# ---------------------------------------------------------------- builder bugs


def _broken_entity_decl(self, meta, name, entity_body):
    raise KeyError("no such child")


@pytest.mark.parametrize("runtime", ["engine", "lark"])
def test_a_builder_bug_is_an_internal_error_not_a_syntax_error(fresh_engine, monkeypatch, runtime):
    if runtime == "lark":
        import allium.syntax as syntax

        monkeypatch.setattr(syntax, "build_engine", lambda: None)
    monkeypatch.setattr(build.AstBuilder, "entity_decl", _broken_entity_decl)
    with pytest.raises(InternalError) as caught:
        parse_text(SPEC, "s.allium")
    message = str(caught.value)
    assert message.startswith("internal error while building the AST of s.allium: KeyError: 'no such child' at ")
    assert "test_internals.py" in message and "in _broken_entity_decl" in message
    assert "This is a bug in allium, not in your input" in message


def test_the_cli_reports_a_builder_bug_as_internal_in_json(fresh_engine, monkeypatch, tmp_path):
    monkeypatch.setattr(build.AstBuilder, "entity_decl", _broken_entity_decl)
    path = tmp_path / "s.allium"
    path.write_text(SPEC)
    result = CliRunner().invoke(main, ["check", str(path), "--format", "json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["error"]["kind"] == "internal"
    assert "bug in allium" in document["error"]["message"]
    assert "syntax" not in json.dumps(document["diagnostics"])
