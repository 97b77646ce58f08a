"""Builds the Lark parser once (cached on disk) and runs it.

This module and its siblings are the only ones that import lark.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedToken
from lark.grammar import Rule
from lark.lexer import ContextualLexer, PatternStr, Scanner, UnlessCallback
from lark.parse_tree_builder import ExpandSingleChild, PropagatePositions
from lark.parsers.lalr_analysis import Shift
from lark.parsers.lalr_interactive_parser import InteractiveParser
from lark.parsers.lalr_parser import _Parser
from lark.parsers.lalr_parser_state import ParseConf, ParserState

from allium.syntax.postlex import AlliumPostLexer

GRAMMAR_PATH = Path(__file__).with_name("allium.lark")


def _cache_path() -> str:
    # Lark keys its cache on grammar text and options, so a stale file is never
    # reused; we only choose where it lives.
    root = Path(tempfile.gettempdir()) / "allium-lark-cache"
    root.mkdir(exist_ok=True)
    return str(root / "allium.lark.cache")


class _PropagatePositions(PropagatePositions):
    """lark's PropagatePositions, minus the work a unit reduction does not need.

    Expressions pass through a dozen single-child `?rule` levels on their way
    from `atom` to `expr`; at each, lark recomputes the child's own positions
    onto itself.  Skipping that self-assignment leaves every meta identical
    and roughly halves parse time.
    """

    def __call__(self, children):
        res = self.node_builder(children)
        if len(children) == 1 and res is children[0]:
            return res  # `?rule` inlined its only child: its meta is already right
        if isinstance(res, Tree):
            _propagate(res.meta, children)
        return res


def _propagate(res_meta, children) -> None:
    # Same rule as lark's PropagatePositions (lark 1.x, no node_filter): a node
    # starts where its first positioned child's container starts and ends where
    # its last one's ends.  Tokens have no container; metas built here always do.
    first = None
    for c in children:
        if type(c) is Token:
            line, column, start_pos = c.line, c.column, c.start_pos
            first = c
            break
        if isinstance(c, Tree):
            meta = c.meta
            if not meta.empty:
                line = getattr(meta, "container_line", meta.line)
                column = getattr(meta, "container_column", meta.column)
                start_pos = getattr(meta, "container_start_pos", meta.start_pos)
                first = meta
                break
        elif isinstance(c, Token):  # pragma: no cover - Token subclasses
            line, column, start_pos = c.line, c.column, c.start_pos
            first = c
            break
    if first is not None:
        if not hasattr(res_meta, "line"):
            res_meta.line, res_meta.column, res_meta.start_pos = line, column, start_pos
            res_meta.empty = False
        res_meta.container_line, res_meta.container_column, res_meta.container_start_pos = line, column, start_pos
    last = None
    for c in reversed(children):
        if type(c) is Token:
            end_line, end_column, end_pos = c.end_line, c.end_column, c.end_pos
            last = c
            break
        if isinstance(c, Tree):
            meta = c.meta
            if not meta.empty:
                end_line = getattr(meta, "container_end_line", meta.end_line)
                end_column = getattr(meta, "container_end_column", meta.end_column)
                end_pos = getattr(meta, "container_end_pos", meta.end_pos)
                last = meta
                break
        elif isinstance(c, Token):  # pragma: no cover - Token subclasses
            end_line, end_column, end_pos = c.end_line, c.end_column, c.end_pos
            last = c
            break
    if last is not None:
        if not hasattr(res_meta, "end_line"):
            res_meta.end_line, res_meta.end_column, res_meta.end_pos = end_line, end_column, end_pos
            res_meta.empty = False
        res_meta.container_end_line = end_line
        res_meta.container_end_column = end_column
        res_meta.container_end_pos = end_pos


class _FastParserState(ParserState):
    """lark's ParserState with a leaner LALR loop (same tables, same results).

    Each parse-table row is converted, on first use, into `kind -> entry`
    where a shift or goto entry is the next state (an int) and a reduce entry
    is (size, origin name, callback); the callback is None for a unit
    reduction that passes its only child through unchanged (an inlined
    `?rule`), which is most reductions in an expression.
    """

    __slots__ = ()
    _rules: dict = {}
    _rows: dict = {}

    def feed_token(self, token: Token, is_end: bool = False) -> Any:
        state_stack = self.state_stack
        value_stack = self.value_stack
        rows = self._rows
        kind = token.type
        while True:
            state = state_stack[-1]
            row = rows.get(state)
            if row is None:
                row = self._row(state)
            try:
                entry = row[kind]
            except KeyError:
                states = self.parse_conf.states
                expected = {s for s in states[state].keys() if s.isupper()}
                raise UnexpectedToken(token, expected, state=self, interactive_parser=None) from None
            if type(entry) is int:  # shift
                state_stack.append(entry)
                value_stack.append(token)
                return None
            size, origin, callback = entry
            if callback is None:  # size 1, value unchanged
                del state_stack[-1]
            else:
                if size:
                    children = value_stack[-size:]
                    del state_stack[-size:]
                    del value_stack[-size:]
                else:
                    children = []
                value_stack.append(callback(children))
            below = state_stack[-1]
            goto = rows.get(below)
            if goto is None:
                goto = self._row(below)
            state_stack.append(goto[origin])
            if is_end and state_stack[-1] == self.parse_conf.end_state:
                return value_stack[-1]

    def _row(self, state: int) -> dict:
        rules = self._rules
        row = {
            kind: (arg if action is Shift else rules[arg])
            for kind, (action, arg) in self.parse_conf.states[state].items()
        }
        self._rows[state] = row
        return row


class _FastParser(_Parser):
    def __init__(self, parse_table, callbacks, debug: bool = False) -> None:
        super().__init__(parse_table, callbacks, debug)
        rules = {}
        for rule, callback in callbacks.items():
            size = len(rule.expansion)
            passthrough = (
                size == 1
                and type(callback) is _PropagatePositions
                and type(callback.node_builder) is ExpandSingleChild
            )
            rules[rule] = (size, rule.origin.name, None if passthrough else callback)
        namespace = {"__slots__": (), "_rules": rules, "_rows": {}}
        self._state_class = type("_AlliumParserState", (_FastParserState,), namespace)

    def parse(self, lexer, start, value_stack=None, state_stack=None, start_interactive=False):
        parse_conf = ParseConf(self.parse_table, self.callbacks, start)
        parser_state = self._state_class(parse_conf, lexer, state_stack, value_stack)
        if start_interactive:  # pragma: no cover - we never parse interactively
            return InteractiveParser(self, parser_state, parser_state.lexer)
        return self.parse_from_state(parser_state)


class _KeywordCallback:
    """lark's UnlessCallback (is this NAME a keyword?) as a dict lookup, not a regex per name."""

    __slots__ = ("keywords",)

    def __init__(self, keywords: dict[str, str]) -> None:
        self.keywords = keywords

    def __call__(self, token: Token) -> Token:
        kind = self.keywords.get(token.value)
        if kind is not None:
            token.type = kind
        return token


def _fast_next_token(lexer: Any, scanner: Any) -> Any:
    """lark's BasicLexer.next_token with its per-token lookups bound once.

    Same tokens, positions and line counting; on no match it defers to lark's
    own method, which raises the UnexpectedCharacters lark would.
    """
    original = type(lexer).next_token
    mres = scanner._mres
    ignore_types = lexer.ignore_types
    newline_types = lexer.newline_types
    callbacks = lexer.callback

    def next_token(lex_state: Any, parser_state: Any = None) -> Token:
        line_ctr = lex_state.line_ctr
        text = lex_state.text
        raw, end = text.text, text.end
        while line_ctr.char_pos < end:
            pos = line_ctr.char_pos
            for mre in mres:
                m = mre.match(raw, pos, end)
                if m:
                    break
            else:
                return original(lexer, lex_state, parser_state)
            value = m.group(0)
            kind = m.lastgroup
            ignored = kind in ignore_types
            token = None
            if not ignored or kind in callbacks:
                token = Token(kind, value, pos, line_ctr.line, line_ctr.column)
            line_ctr.feed(value, kind in newline_types)
            if token is not None:
                token.end_line = line_ctr.line
                token.end_column = line_ctr.column
                token.end_pos = line_ctr.char_pos
                if kind in callbacks:
                    token = callbacks[kind](token)
                if not ignored:
                    lex_state.last_token = token
                    return token
        raise EOFError(lexer)

    return next_token


def _fast_keywords(lexer: Any) -> None:
    """Once `lexer` builds its scanner (lark does that lazily), swap its keyword callbacks."""
    build = lexer._build_scanner

    def _build_scanner():
        scanner = build()
        if type(scanner).match is Scanner.match and not lexer.user_callbacks:
            lexer.next_token = _fast_next_token(lexer, scanner)
        for name, callback in list(lexer.callback.items()):
            if type(callback) is not UnlessCallback:
                continue
            terminals = callback.scanner.terminals
            if all(isinstance(t.pattern, PatternStr) and not t.pattern.flags for t in terminals):
                keywords: dict[str, str] = {}
                for terminal in terminals:  # first wins, as in the scanner's alternation
                    keywords.setdefault(terminal.pattern.value, terminal.name)
                lexer.callback[name] = _KeywordCallback(keywords)
        return scanner

    lexer._build_scanner = _build_scanner


def _speed_up(parser: Lark) -> Lark:
    """Swap in the faster position propagation and LALR loop, if lark is laid out as we expect."""
    try:
        lalr = parser.parser.parser  # Lark -> ParsingFrontend -> LALR_Parser
        inner = lalr.parser  # -> _Parser
        callbacks = inner.callbacks
    except AttributeError:  # pragma: no cover - a lark without this layout: keep its own
        return parser
    states = inner.parse_table.states
    if (
        type(inner) is not _Parser
        or any(not isinstance(rule, Rule) for rule in callbacks)
        or any(type(state) is not int for state in states)
    ):
        return parser  # pragma: no cover - token callbacks or another parser: keep lark's loop
    for rule, callback in list(callbacks.items()):
        if type(callback) is PropagatePositions and callback.node_filter is None:
            callbacks[rule] = _PropagatePositions(callback.node_builder)
    lalr.parser = _FastParser(inner.parse_table, callbacks, inner.debug)
    contextual = getattr(getattr(parser.parser, "lexer", None), "lexer", None)  # PostLexConnector -> lexer
    if isinstance(contextual, ContextualLexer):
        for lexer in {id(x): x for x in [*contextual.lexers.values(), contextual.root_lexer]}.values():
            if hasattr(lexer, "_build_scanner") and getattr(lexer, "_scanner", True) is None:
                _fast_keywords(lexer)
    return parser


@lru_cache(maxsize=1)
def build_parser() -> Lark:
    return _speed_up(
        Lark(
            GRAMMAR_PATH.read_text(encoding="utf-8"),
            parser="lalr",
            lexer="contextual",
            postlex=AlliumPostLexer(),
            propagate_positions=True,
            maybe_placeholders=False,
            cache=_cache_path(),
        )
    )


def parse_tree(text: str) -> tuple[Tree, AlliumPostLexer]:
    parser = build_parser()
    tree = parser.parse(text)
    return tree, parser.options.postlex
