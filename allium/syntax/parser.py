"""Builds the Lark parser once (grammar tables cached on disk).

lark's runtime (`build_parser().parse`) is the reference: syntax errors are
diagnosed from its exceptions.  Valid specs take the engine (engine.py),
which runs the same tables and lexer regexes without building a parse tree.
This package is the only one that imports lark.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

from lark import Lark

from allium.syntax.engine import Engine
from allium.syntax.postlex import AlliumPostLexer

GRAMMAR_PATH = Path(__file__).with_name("allium.lark")


def _cache_path() -> str:
    # Lark keys its cache on grammar text and options, so a stale file is never
    # reused; we only choose where it lives.
    root = Path(tempfile.gettempdir()) / "allium-lark-cache"
    root.mkdir(exist_ok=True)
    return str(root / "allium.lark.cache")


@lru_cache(maxsize=1)
def build_parser() -> Lark:
    return Lark(
        GRAMMAR_PATH.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=AlliumPostLexer(),
        propagate_positions=True,
        maybe_placeholders=False,
        cache=_cache_path(),
    )


@lru_cache(maxsize=1)
def build_engine() -> Engine:
    return Engine(build_parser())


