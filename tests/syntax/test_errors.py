"""Syntax errors: position, words a person reads, a caret, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from allium.cli import main
from allium.diagnostics import render_text
from allium.syntax import parse_text

from .conftest import errors

REPO = Path(__file__).resolve().parents[2]

# (id, source, line, col, message regex, extra assertion on the diagnostic or None)
ERROR_CASES = [
    (
        "missing_lbrace_after_entity_name",
        "-- allium: 3\n\nentity Foo\n    bar: String\n}\n",
        3,
        11,
        r"^expected '\{' after entity name 'Foo', found name 'bar'$",
    ),
    (
        "missing_lbrace_same_line",
        "-- allium: 3\nrule Close when: X() }\n",
        2,
        12,
        r"^expected '\{' after rule name 'Close', found 'when'$",
    ),
    (
        "unclosed_entity_brace",
        "-- allium: 3\n\nentity Foo {\n    bar: String\n\n\n",
        4,
        16,
        r"^expected '\}' to close the '\{' opened at line 3, found end of file$",
    ),
    (
        "unclosed_rule_brace_after_ensures_block",
        "-- allium: 3\nrule R {\n    when: X(a)\n    ensures:\n        a.done = true\n",
        5,
        22,
        r"expected '\}' to close the '\{' opened at line 2",
    ),
    (
        "unclosed_paren_names_the_paren",
        "-- allium: 3\nrule R {\n    when: X(a, b\n    ensures: Y()\n}\n",
        4,
        5,
        r"expected .*'\)'.* after 'b', found 'ensures'",
    ),
    (
        "mismatched_closer",
        "-- allium: 3\nrule R {\n    when: X(a)\n    ensures: Y(z: {1, 2)\n}\n",
        4,
        24,
        r"^expected '\}' after '2', found '\)'$",
    ),
    (
        "extra_closing_brace",
        "-- allium: 3\nentity A {\n    x: String\n}\n}\n",
        5,
        1,
        r"found '\}'$",
    ),
    (
        "missing_colon_in_field",
        "-- allium: 3\nentity A {\n    x String\n}\n",
        3,
        7,
        r"^expected ':'.* after 'x', found name 'String'$",
    ),
    (
        "missing_value_after_colon",
        "-- allium: 3\nentity A {\n    x:\n    y: String\n}\n",
        3,
        7,
        r"^expected an expression after ':', found end of line$",
    ),
    (
        "rule_without_name",
        "-- allium: 3\nrule {\n    when: X()\n}\n",
        2,
        6,
        r"^expected a name after 'rule', found '\{'$",
    ),
    (
        "entity_inside_contract",
        "-- allium: 3\ncontract C {\n    entity Sneaky {\n        x: String\n    }\n}\n",
        3,
        5,
        r"^an entity declaration is not allowed here, found 'entity'$",
    ),
    (
        "transition_without_arrow",
        "-- allium: 3\nentity E {\n    s: a | b\n    transitions s {\n        a b\n    }\n}\n",
        5,
        11,
        r"^expected '->' after 'a', found name 'b'$",
    ),
    (
        "unexpected_character",
        "-- allium: 3\nentity A {\n    x: String $\n}\n",
        3,
        15,
        r"^unexpected character '\$'$",
    ),
    (
        "single_quoted_string",
        "-- allium: 3\nrule R {\n    when: X()\n    requires: 'a' in tags\n}\n",
        4,
        15,
        r"^unexpected character \"'\" \(strings use double quotes\)$",
    ),
    (
        "unterminated_string",
        '-- allium: 3\nopen question "what now\n',
        2,
        15,
        r"^unterminated string",
    ),
    (
        "stray_top_level_words",
        "-- allium: 3\nnamespace billing\n",
        2,
        1,
        r"^expected .*'entity'.*|^expected .*'actor'.*, found name 'namespace'$",
    ),
    (
        "empty_when_value_in_ensures",
        "-- allium: 3\nrule R {\n    when: X()\n    ensures: a = \n}\n",
        4,
        17,
        r"^expected an expression after '=', found end of line$",
    ),
]


@pytest.mark.parametrize(
    "source,line,col,pattern", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_syntax_error_position_and_words(source, line, col, pattern):
    result = parse_text(source, "bad.allium")
    assert result.module is None
    [diag] = errors(result)
    assert diag.code.startswith("allium.syntax."), diag.code
    assert re.search(pattern, diag.message), diag.message
    # Lark's terminal names never reach a person.
    assert not re.search(r"\b(LBRACE|RBRACE|LPAR|RPAR|COLON|_NL|_INDENT|_DEDENT|__ANON\w*|\$END)\b", diag.message)
    assert (diag.span.start.line, diag.span.start.column) == (line, col), diag.message
    assert 1 <= diag.span.start.line <= result.source.line_count


def test_render_text_shows_file_line_col_and_caret():
    source = "-- allium: 3\n\nentity Foo\n    bar: String\n}\n"
    result = parse_text(source, "specs/foo.allium")
    text = render_text(result.diagnostics, {"specs/foo.allium": result.source})
    lines = text.splitlines()
    assert lines[0] == (
        "specs/foo.allium:3:11: error[allium.syntax.unexpectedToken]: "
        "expected '{' after entity name 'Foo', found name 'bar'"
    )
    assert lines[1] == "   3 | entity Foo"
    assert lines[2] == "     |           ^"
    assert lines[-1].startswith("1 file checked: 1 error(s)")


def test_caret_underlines_the_offending_token():
    result = parse_text("-- allium: 3\nentity A {\n    x String\n}\n", "a.allium")
    text = render_text(result.diagnostics, {"a.allium": result.source}, summary=False)
    assert text.splitlines()[1:3] == ["   3 |     x String", "     |       ^~~~~~"]


def test_unclosed_brace_note_names_the_opening_line():
    result = parse_text("-- allium: 3\nsurface S {\n    facing u: User\n", "s.allium")
    [diag] = result.diagnostics
    assert diag.code == "allium.syntax.unclosedBlock"
    assert diag.span.start.line == 3
    assert diag.notes == ("the block starts at line 2, column 11",)


def test_multiple_unclosed_blocks_report_the_innermost():
    result = parse_text("-- allium: 3\nrule R {\n    when: X(a)\n    ensures: Y(z: f(a\n", "r.allium")
    [diag] = result.diagnostics
    assert "'(' opened at line 4" in diag.message
    assert diag.span.start.line == 4


@pytest.mark.parametrize(
    "source",
    [
        "",
        "\n\n\n",
        "-- allium: 3\n",
        "-- allium: 3",
        "}",
        "{",
        ")))",
        "-- allium: 3\n@guidance\n",
        "-- allium: 3\nentity",
        "-- allium: 3\nentity A {\n\tx: String\n}\n",
        "-- allium: 3\r\nentity A {\r\n    x: String\r\n}\r\n",
        "\ufeff-- allium: 3\nentity A {}\n",
        "-- allium: 3\nrule R {\n    ensures:\n",
        "-- allium: 3\nrule R {\n    ensures:\n        if a:\n",
        "-- allium: 3\nresolved question \"q\" {\n    answer:\n",
        "-- allium: 3\nentity A {\n    x: (((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))\n}\n",
        "-- allium: 3\nentity A {\n    x: " + "not " * 300 + "a\n}\n",
        "\x00\x01\x02",
        "-- allium: 3\n-- lone surrogate \ud800 in a comment\nentity A {\n    x: String\n}\n",
        "\ud800entity",
        "-- allium: 3\nentity A { x: \"\\\" }\n",
    ],
)
def test_odd_inputs_never_raise(source):
    result = parse_text(source, "odd.allium")
    assert result.module is not None or errors(result)
    for diag in result.diagnostics:
        assert diag.span is not None
        assert 1 <= diag.span.start.line <= max(1, result.source.line_count)


def test_version_error_and_syntax_error_are_both_reported():
    result = parse_text("-- allium: 9\nentity {\n", "v.allium")
    codes = sorted(d.code for d in result.diagnostics)
    assert codes[0] == "allium.syntax.unexpectedToken"
    assert "allium.version.unsupported" in codes


# ---------------------------------------------------------------- the CLI


BAD = "-- allium: 3\n\nentity Foo\n    bar: String\n}\n"


def test_cli_parse_bad_file_with_click_runner(tmp_path):
    path = tmp_path / "bad.allium"
    path.write_text(BAD)
    result = CliRunner().invoke(main, ["parse", str(path)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{path}:3:11: error[allium.syntax.unexpectedToken]: expected '{{' after entity name 'Foo'" in result.output
    assert "     |           ^" in result.output
    assert "Traceback" not in result.output


def test_cli_parse_bad_file_subprocess(tmp_path):
    path = tmp_path / "bad.allium"
    path.write_text(BAD)
    proc = subprocess.run(
        [sys.executable, "-m", "allium", "parse", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "expected '{' after entity name 'Foo', found name 'bar'" in proc.stdout
    assert f"{path}:3:11:" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_cli_parse_json_flag_on_bad_file_reports_instead_of_crashing(tmp_path):
    path = tmp_path / "bad.allium"
    path.write_text(BAD)
    result = CliRunner().invoke(main, ["parse", str(path), "--json"])
    assert result.exit_code == 1
    assert "expected '{' after entity name 'Foo'" in result.output
    assert "Traceback" not in result.output


def test_cli_parse_format_json_has_juxt_shape(tmp_path):
    import json

    path = tmp_path / "bad.allium"
    path.write_text(BAD)
    result = CliRunner().invoke(main, ["parse", str(path), "--format", "json"])
    assert result.exit_code == 1
    document = json.loads(result.output)
    [diag] = document["diagnostics"]
    assert diag["code"] == "allium.syntax.unexpectedToken"
    assert diag["severity"] == "error"
    assert diag["location"]["line"] == 3 and diag["location"]["col"] == 11
    assert diag["location"]["file"] == str(path)


def test_cli_parse_good_file_json_ast(tmp_path):
    import json

    path = tmp_path / "good.allium"
    path.write_text("-- allium: 3\nentity Foo {\n    bar: String\n}\n")
    result = CliRunner().invoke(main, ["parse", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)["module"]
    assert data["node"] == "Module"
    assert data["decls"][0]["name"] == "Foo"


def test_cli_parse_missing_file_is_a_usage_error_not_a_traceback(tmp_path):
    result = CliRunner().invoke(main, ["parse", str(tmp_path / "nope.allium")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_lone_surrogates_keep_character_offsets():
    text = "-- allium: 3\n-- \udc80\nentity A {\n    x: String\n}\n"
    result = parse_text(text)
    entity = result.module.entities[0]
    assert entity.span.start.offset == text.index("entity")
    assert entity.span.start.byte_offset == entity.span.start.offset  # the surrogate became one '?'


@pytest.mark.parametrize("command", ["plan", "check"])
def test_cli_plan_and_check_report_a_bad_file_instead_of_crashing(tmp_path, command):
    path = tmp_path / "bad.allium"
    path.write_text(BAD)
    result = CliRunner().invoke(main, [command, str(path)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{path}:3:11: error[allium.syntax.unexpectedToken]: expected '{{' after entity name 'Foo'" in result.output
