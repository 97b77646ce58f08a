"""The wall: every read of a lark or CPython internal, each checked when read.

The engine (lalr.py, firsts.py, reductions.py) runs lark's compiled tables
itself, which needs things neither lark nor Python promise to keep: the LALR
table and its Shift marker, the contextual lexer's per-state scanners and
their compiled regexes, the keyword callback, Token's slots and
`re._parser`.  They are read here and
nowhere else, and each read checks the shape it expects (lark's version,
the classes, the fields).  When one is not there, :class:`InternalsChanged`
says which; grammar.py then warns once and parses with lark's own runtime,
which needs none of this (slower, same results).

What the parser's reductions are is read off the grammar's compiled rules
(`Lark.rules`: expansion, alias, options), as lark's ParseTreeBuilder reads
them, not off the callback chains lark builds from them: a wrapper lark adds
to those chains some day cannot make the engine build a different tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

import lark
from lark import Token

SUPPORTED_LARK = (1, 3)  # major, minor: pyproject.toml pins lark>=1.3,<1.4 to match
TOKEN_SLOTS = ("type", "start_pos", "value", "line", "column", "end_line", "end_column", "end_pos")


class InternalsChanged(Exception):
    """lark or Python no longer has what the engine reads (the message says what)."""


def _need(condition: object, what: str) -> None:
    if not condition:
        raise InternalsChanged(f"{what} (lark {lark.__version__}, Python {_python()})")


def _python() -> str:
    import sys

    return ".".join(map(str, sys.version_info[:3]))


def check_runtime() -> None:
    """What the engine relies on at every parse, even with tables from the cache.

    Cheap (no grammar work): lark's version, and Token's slots, which the
    engine and postlexer set directly rather than through Token().
    """
    version = tuple(int(part) for part in re.findall(r"\d+", lark.__version__)[:2])
    _need(version == SUPPORTED_LARK, f"the engine is written for lark {SUPPORTED_LARK[0]}.{SUPPORTED_LARK[1]}.x")
    _need(getattr(Token, "__slots__", None) == TOKEN_SLOTS, f"lark's Token no longer has the slots {TOKEN_SLOTS}")
    _need(callable(getattr(Token, "new_borrow_pos", None)), "lark's Token has no new_borrow_pos")


# ---------------------------------------------------------------- the LALR table


class Table(NamedTuple):
    """The LALR table as plain data: state -> symbol -> next state (a shift) or the rule to reduce by."""

    states: dict[int, dict[str, tuple[bool, Any]]]
    start: int
    end: int


def parse_table(parser: Any) -> Table:
    from lark.parsers import lalr_analysis

    shift = getattr(lalr_analysis, "Shift", None)
    reduce = getattr(lalr_analysis, "Reduce", None)
    _need(shift is not None and reduce is not None, "lark.parsers.lalr_analysis has no Shift/Reduce actions")
    inner = _path(parser, "parser.parser.parser", "lark's LALR parser (Lark.parser.parser.parser)")
    table: Any = getattr(inner, "parse_table", None)
    _need(all(hasattr(table, a) for a in ("states", "start_states", "end_states")),
          "lark's LALR parser has no parse_table with states, start_states and end_states")
    states: dict[int, dict[str, tuple[bool, Any]]] = {}
    for state, actions in table.states.items():
        row = states[state] = {}
        for symbol, entry in actions.items():
            _need(isinstance(entry, tuple) and len(entry) == 2 and entry[0] in (shift, reduce),
                  "an LALR table entry is not (Shift or Reduce, argument)")
            row[symbol] = (entry[0] is shift, entry[1])
    return Table(states, table.start_states["start"], table.end_states["start"])


def _path(obj: Any, dotted: str, what: str) -> Any:
    for name in dotted.split("."):
        obj = getattr(obj, name, None)
        _need(obj is not None, f"cannot find {what}")
    return obj


# ---------------------------------------------------------------- rules


class Reduction(NamedTuple):
    """How lark's tree builder would reduce by one rule (see ParseTreeBuilder)."""

    size: int  # symbols in the expansion
    origin: str  # the rule reduced to
    kept: tuple[tuple[int, str, bool], ...]  # (index, symbol, is an inlined `_rule`) of each child kept
    expand1: bool  # `?rule`: a single kept child stands for the rule
    name: str  # the tree's name: the builder method called
    is_token_rule: bool  # one child, a terminal, kept


# The symbol name given to each token of a `!rule` (`!surface_keyword: "exposes" | ...`),
# whose tokens lark keeps, the anonymous ones too.
KEYWORD = "keyword"


def reductions(parser: Any) -> dict[Any, Reduction]:
    """Each compiled rule of `parser`'s grammar -> how it reduces, for the engine.

    The rules lark's tree builder would wrap in placeholders or ambiguity
    handling are refused: the grammar is compiled without either.
    """
    _need(getattr(parser.options, "maybe_placeholders", True) is False, "the grammar must not use placeholders")
    for rule in getattr(parser, "rules", ()):
        options = rule.options
        _need(all(hasattr(options, a) for a in ("keep_all_tokens", "expand1", "template_source", "empty_indices")),
              "lark's RuleOptions lost keep_all_tokens, expand1, template_source or empty_indices")
        _need(not options.empty_indices, f"rule {rule.origin.name} has placeholders")
    return rule_shapes(parser)


def rule_shapes(parser: Any) -> dict[Any, Reduction]:
    """Each compiled rule -> which children lark's tree builder keeps, and under what name.

    Lark.rules (origin, alias, expansion, options) is what lark's own tree
    builder reads too; the AST builder's children are named from it on both
    runtimes (children.py).
    """
    out: dict[Any, Reduction] = {}
    for rule in getattr(parser, "rules", ()):
        options = rule.options
        expansion = list(rule.expansion)
        kept = tuple(
            (index, KEYWORD if symbol.is_term and options.keep_all_tokens else str(symbol.name),
             not symbol.is_term and symbol.name.startswith("_"))
            for index, symbol in enumerate(expansion)
            if options.keep_all_tokens or not (symbol.is_term and symbol.filter_out)
        )
        out[rule] = Reduction(
            size=len(expansion),
            origin=str(rule.origin.name),
            kept=kept,
            expand1=bool(options.expand1 and not rule.alias),
            name=str(rule.alias or getattr(options, "template_source", None) or rule.origin.name),
            is_token_rule=len(expansion) == 1 and expansion[0].is_term,
        )
    _need(out, "Lark.rules is empty or missing")
    return out


# ---------------------------------------------------------------- lexers


class Scanner(NamedTuple):
    """The contextual lexer's root scanner (over every terminal), as plain data."""

    alternatives: list[tuple[str, str]]  # (terminal, regex), in the scanner's order
    pattern: str  # the one regex, `(?P<A>...)|(?P<B>...)|...`
    flags: int
    ignore: frozenset[str]
    newline: frozenset[str]
    keywords: dict[str, dict[str, str]]  # regex terminal -> {literal: keyword terminal}
    blank: str  # the %ignore regex for runs of blanks
    accepts: dict[int, frozenset[str]]  # parser state -> the terminals its scanner reads


def contextual_lexer(parser: Any) -> Any:
    from lark.lexer import ContextualLexer

    lexer = _path(parser, "parser.lexer.lexer", "lark's lexer (Lark.parser.lexer.lexer)")
    _need(isinstance(lexer, ContextualLexer), "the grammar is not lexed by lark's ContextualLexer")
    _need(hasattr(lexer, "root_lexer") and isinstance(getattr(lexer, "lexers", None), dict),
          "ContextualLexer has no root_lexer and per-state lexers")
    return lexer


def _regexes(lexer: Any) -> list[Any]:
    """A basic lexer's compiled regexes (lark builds them on first use)."""
    scanner = getattr(lexer, "scanner", None)
    mres: Any = getattr(scanner, "_mres", None)
    _need(isinstance(mres, list) and all(isinstance(m, re.Pattern) for m in mres),
          "a lark scanner has no compiled regexes (_mres)")
    return mres


def root_scanner(parser: Any) -> Scanner:
    contextual = contextual_lexer(parser)
    root = contextual.root_lexer
    mres = _regexes(root)  # first: building the scanner sets `callback`
    for attribute in ("terminals", "ignore_types", "newline_types", "callback"):
        _need(hasattr(root, attribute), f"lark's root lexer has no {attribute}")
    _need(len(mres) == 1, "the root scanner is split into several regexes (over Python's group limit)")
    scanner = root.scanner
    _need(hasattr(scanner, "terminals") and hasattr(scanner, "g_regex_flags"),
          "lark's scanner has no terminals or g_regex_flags")
    alternatives = [(str(t.name), t.pattern.to_regexp()) for t in scanner.terminals]
    whole = "|".join(f"(?P<{name}>{regex})" for name, regex in alternatives)
    _need(whole == mres[0].pattern, "the root scanner's regex is not the alternation of its terminals")
    ignore = frozenset(root.ignore_types)
    blanks = [t for t in root.terminals if t.name in ignore and re.fullmatch(t.pattern.to_regexp(), " \t")]
    _need(len(blanks) == 1, "the grammar has no single %ignore terminal for blanks")
    return Scanner(
        alternatives=alternatives,
        pattern=mres[0].pattern,
        flags=mres[0].flags,
        ignore=ignore,
        newline=frozenset(root.newline_types),
        keywords={str(name): _keyword_map(cb) for name, cb in root.callback.items()},
        blank=blanks[0].pattern.to_regexp(),
        accepts={state: frozenset(t.name for t in lexer.terminals) for state, lexer in contextual.lexers.items()},
    )


def _keyword_map(callback: Any) -> dict[str, str]:
    """The keywords lark folds into a regex terminal (NAME "entity" -> ENTITY), first one winning."""
    from lark.lexer import PatternStr, UnlessCallback

    _need(isinstance(callback, UnlessCallback), f"unexpected lexer callback {callback!r}")
    keywords: dict[str, str] = {}
    for terminal in getattr(callback.scanner, "terminals", ()):
        _need(isinstance(terminal.pattern, PatternStr) and not terminal.pattern.flags,
              f"keyword {terminal.name} is not a plain string")
        keywords.setdefault(terminal.pattern.value, terminal.name)
    return keywords


def state_lexers(parser: Any) -> dict[frozenset[str], Any]:
    """lark's per-state lexers, keyed by the terminals they read (their scanners compile on first use).

    Keyed by terminal set, not state number: LALR state numbers differ
    between two compilations of the same grammar (hash randomisation), and
    the engine's tables may come from another process than this Lark.
    """
    lexers = contextual_lexer(parser).lexers.values()
    _need(all(hasattr(lexer, "terminals") for lexer in lexers), "a state's lexer has no terminals")
    return {frozenset(t.name for t in lexer.terminals): lexer for lexer in lexers}


def state_scan(lexer: Any, text: str, pos: int) -> tuple[str, str] | None:
    """The (terminal, text) one state's lexer reads at `pos`, keywords folded; None if it reads nothing."""
    for regex in _regexes(lexer):  # first: building the scanner sets `callback`
        match = regex.match(text, pos)
        if match:
            break
    else:
        return None
    kind, value = str(match.lastgroup), match.group()
    callbacks: Any = getattr(lexer, "callback", None)
    _need(isinstance(callbacks, dict), "a state's lexer has no callback table")
    callback = callbacks.get(kind)
    if callback is not None:
        kind = callback(Token(kind, value)).type
    return kind, value


# ---------------------------------------------------------------- the reference runtime


def parser_state_symbols(state: Any) -> set[str] | None:
    """The symbols lark's parser state (of an UnexpectedToken) can take, or None if unreadable."""
    try:
        return set(state.parse_conf.parse_table.states[state.position].keys())
    except (AttributeError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- Python's regex parser


class RegexParser(NamedTuple):
    """`re._parser.parse` and the op codes of what it returns (Python 3.11 to 3.13)."""

    parse: Callable[[str, int], Any]
    LITERAL: Any
    IN: Any
    RANGE: Any
    SUBPATTERN: Any
    ATOMIC_GROUP: Any
    BRANCH: Any
    REPEATS: frozenset[Any]
    ZERO_WIDTH: frozenset[Any]


@cache
def regex_parser() -> RegexParser:
    try:
        from re import _constants as c
        from re import _parser
    except ImportError as exc:
        raise InternalsChanged(f"Python's regex parser is not where it was: {exc} (Python {_python()})") from None
    names = ("LITERAL", "IN", "RANGE", "SUBPATTERN", "ATOMIC_GROUP", "BRANCH", "MAX_REPEAT", "MIN_REPEAT",
             "POSSESSIVE_REPEAT", "AT", "ASSERT", "ASSERT_NOT")
    missing = [name for name in names if not hasattr(c, name)]
    _need(not missing and callable(getattr(_parser, "parse", None)), f"re._constants lacks {missing} or re._parser.parse")
    parsed = _parser.parse("a[b-c]", 0)
    _need(list(parsed.data) == [(c.LITERAL, 97), (c.IN, [(c.RANGE, (98, 99))])] and hasattr(parsed, "state"),
          "re._parser.parse no longer returns (op, argument) items")
    return RegexParser(
        _parser.parse, c.LITERAL, c.IN, c.RANGE, c.SUBPATTERN, c.ATOMIC_GROUP, c.BRANCH,
        frozenset({c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT}), frozenset({c.AT, c.ASSERT, c.ASSERT_NOT}),
    )
