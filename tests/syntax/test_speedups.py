"""The parser's speed-ups (parser.py, build.py) must not change a single result.

Compares parse_text against stock lark: a parser built without _speed_up, and
lark's own Transformer.transform with SourceFile.span for positions.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from lark import Lark, Transformer
from lark.exceptions import UnexpectedInput

from allium.source import SourceFile
from allium.syntax import parse_text
from allium.syntax import parser as parser_module
from allium.syntax.build import AstBuilder
from allium.syntax.postlex import AlliumPostLexer

from .conftest import CORPUS
from .test_constructs import RESOLVED
from .test_fuzz import BUILTIN


@lru_cache(maxsize=1)
def stock_parser() -> Lark:
    return Lark(
        parser_module.GRAMMAR_PATH.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=AlliumPostLexer(),
        propagate_positions=True,
        maybe_placeholders=False,
    )


class _StockBuilder(AstBuilder):
    def _make_span(self, start, end):
        return self.source.span(start, end)


def stock_decls(text: str):
    source = SourceFile("s.allium", text)
    try:
        tree = stock_parser().parse(text)
    except UnexpectedInput as exc:
        return ("error", type(exc).__name__, getattr(exc, "line", None), getattr(exc, "column", None))
    return Transformer.transform(_StockBuilder(source), tree)


def fast_decls(text: str):
    source = SourceFile("s.allium", text)
    parser = parser_module.build_parser()
    try:
        tree = parser.parse(text)
    except UnexpectedInput as exc:
        return ("error", type(exc).__name__, getattr(exc, "line", None), getattr(exc, "column", None))
    return AstBuilder(source).transform(tree)


def test_speedups_are_installed():
    parser = parser_module.build_parser()
    assert isinstance(parser.parser.parser.parser, parser_module._FastParser)


def samples() -> list[str]:
    texts = list(BUILTIN) + ["-- allium: 3\n" + RESOLVED, "-- allium: 3\nentity A {\n  x: (a + b) * -c ?? d\n}\n"]
    manifest = CORPUS / "MANIFEST.tsv"
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines()[1:][::7]:  # every 7th file
            cols = line.split("\t")
            if len(cols) >= 5 and cols[4] in ("1", "2", "3"):
                texts.append((CORPUS / cols[0]).read_text(encoding="utf-8"))
    return texts


@pytest.mark.parametrize("index", range(len(samples())))
def test_fast_parse_equals_stock_lark(index):
    text = samples()[index]
    assert fast_decls(text) == stock_decls(text)


@pytest.mark.parametrize(
    "text",
    [
        "-- allium: 3\nentity Foo\n    bar: String\n",
        "-- allium: 3\nrule R {\n    when: X(a, b\n    ensures: Y()\n}\n",
        "-- allium: 3\nentity A {\n    x: 'q'\n}\n",
        "-- allium: 3\nentity A {\n    x: String\n",
    ],
)
def test_fast_parse_fails_where_stock_lark_fails(text):
    assert fast_decls(text) == stock_decls(text)
    assert parse_text(text).module is None
