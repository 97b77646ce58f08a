"""Builds the parser once per process, from caches kept per user.

lark compiles allium.lark into LALR tables and lexer regexes; its runtime
(`build_parser().parse`) is the reference and the defensive fallback.  The
engine (lalr.py) runs the same tables from plain data that this module
keeps in a marshal file, so a command starts without loading lark's own
cache; lark's Lark object is then only built when something needs it.
This package is the only one that imports lark.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import lark
from lark import Lark

from allium.syntax import build, children, firsts, internals, lalr, reductions
from allium.syntax.build import AstBuilder
from allium.syntax.children import Grammar, ReferenceTree, TreeBuilder
from allium.syntax.lalr import Engine, tables_from
from allium.syntax.postlex import AlliumPostLexer

GRAMMAR_PATH = Path(__file__).with_name("allium.lark")
# The modules whose code makes the engine's tables (the reducers' source
# among them, and the builder methods' named children).  Their text is part of the cache key, so tables made by one
# version of them are never run by another; a hand-bumped format number
# was missed once.
TABLE_SOURCES = tuple(
    Path(str(module.__file__)) for module in (build, children, firsts, internals, lalr, reductions)
)
_TABLE_KEYS = frozenset(
    {"rows", "start", "end", "pattern", "flags", "ignore", "newline", "blanks", "keywords", "accepts"}
    | {"dispatch", "singles", "reducers"}
)


_REFUSED: set[Path] = set()  # cache folders already warned about


def cache_dir() -> Path | None:
    """The user's own cache folder for allium, or None when there is none to write.

    Per user, not the shared temp folder: lark's cache is a pickle, and a
    file another user could plant there would run as code when loaded.
    """
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    folder = Path(base) / "allium"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = folder.stat()
    except OSError:
        return None
    # Both caches hold what becomes code when loaded (a pickle, compiled
    # reducers), so a folder someone else owns or can write to is not used.
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        if folder not in _REFUSED:  # said once, not silent: without a cache each run compiles (~0.5 s)
            _REFUSED.add(folder)
            why = "owned by another user" if info.st_uid != os.getuid() else "writable by other users"
            warnings.warn(f"not using the cache folder {folder}: it is {why}", RuntimeWarning, stacklevel=2)
        return None
    return folder if os.access(folder, os.W_OK) else None


@lru_cache(maxsize=1)
def build_parser() -> Lark:
    folder = cache_dir()
    return Lark(
        GRAMMAR_PATH.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=AlliumPostLexer(),
        propagate_positions=True,
        maybe_placeholders=False,
        tree_class=ReferenceTree,  # keeps each inlined rule's children together (children.py)
        # lark checks the grammar and options in its cache file but keeps one
        # file: named by the grammar, two checkouts with different grammars
        # no longer rebuild (~0.3 s) and overwrite each other's every run.
        cache=str(folder / f"grammar-{_grammar_digest()}.lark-cache") if folder else False,
    )


@lru_cache(maxsize=1)
def build_tree_builder() -> TreeBuilder:
    """What calls the AST builder over lark's own parse tree (the reference runtime)."""
    return TreeBuilder(Grammar(internals.rule_shapes(build_parser()).values()), AstBuilder)


def _grammar_digest() -> str:
    return hashlib.sha256(GRAMMAR_PATH.read_bytes()).hexdigest()[:20]


@lru_cache(maxsize=1)
def build_engine() -> Engine | None:
    """The engine, or None when lark's internals are not what it reads.

    Then every parse goes through lark's own runtime (about a quarter of the speed,
    the same results), and the user is told once, with what changed.
    """
    try:
        internals.check_runtime()
        return Engine(_engine_tables(), build_parser)
    except internals.InternalsChanged as exc:
        falling_back(exc)
        return None


_SAID: set[str] = set()


def falling_back(exc: internals.InternalsChanged) -> None:
    """Say, once per reason, that parsing goes through lark's own runtime, and why."""
    if str(exc) not in _SAID:
        _SAID.add(str(exc))
        warnings.warn(f"parsing with lark's own runtime, about 4x slower: {exc}", RuntimeWarning, stacklevel=3)


def _engine_tables() -> dict[str, Any]:
    digest = hashlib.sha256(GRAMMAR_PATH.read_bytes())
    for source in TABLE_SOURCES:
        digest.update(source.read_bytes())
    digest.update(f"|lark {lark.__version__}|python {sys.version_info[:2]}".encode())
    key = digest.hexdigest()[:20]
    folder = cache_dir()
    path = folder / f"engine-{key}.marshal" if folder else None
    if path is not None:
        try:
            tables = marshal.loads(path.read_bytes())
            if isinstance(tables, dict) and tables.keys() == _TABLE_KEYS:
                return tables
        except (OSError, EOFError, ValueError, TypeError):
            pass  # absent or unreadable: rebuild it below
    tables = tables_from(build_parser(), AstBuilder)
    if path is not None:
        # Write then rename, so a concurrent run never reads half a file.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".engine-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(marshal.dumps(tables))
            os.replace(temporary, path)
        except (OSError, ValueError):
            Path(temporary).unlink(missing_ok=True)
    return tables
