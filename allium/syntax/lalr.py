"""The front end's fast path: lex, lay out, parse and build the AST in one pass.

lark compiles allium.lark into LALR tables and lexer regexes; tables_from()
copies what the engine needs into plain data, which grammar.py caches, and
this module runs them.  lark's own runtime builds a parse tree that build.py
then walks a second time, and at ~140,000 tokens per MB that double handling
was most of the parse time.  Here each LALR reduction runs a function written
for its rule (reductions.py), which calls the AstBuilder method for the rule
at once, so no parse tree exists, and source positions travel on a stack
beside the values.

Lexing is still contextual (a terminal is only produced where the parser can
take it), done in two steps: one regex over every terminal (narrowed to those
that can start with the next character, see firsts.py), and only when its
answer is not acceptable in the current parser state, that state's own
scanner.  Both order their alternatives alike, so where the first answer is
acceptable the state's scanner would have given the same one; most states'
scanners are then never compiled.

Where the input stops being Allium the engine raises :class:`SyntaxFailure`,
carrying what lark's runtime would have put in its exception (the token, the
parser state), so the syntax diagnostics read the same either way.  Input
the engine cannot handle raises :class:`EngineError`, and the caller
re-parses with lark's runtime.  What the engine reads of lark's internals it
reads through internals.py, which checks it.  tests/syntax/test_engine.py
holds the two runtimes to identical ASTs, comments and diagnostics.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from lark import Lark, Token

from allium.syntax import internals
from allium.syntax.firsts import dispatch, single_chars
from allium.syntax.postlex import AlliumPostLexer, Comment
from allium.syntax.children import MANY, NONE, ONE, VALUE, Binding, ChildrenError, Grammar, bindings
from allium.syntax.reductions import BUILD, LIST, PASS, TOKEN_RULE, compile_reducers, load_reducers
from allium.syntax.reductions import ONE as ONE_CHILD

# AST depth beyond which a spec is refused: the checker, planner and JSON
# writer walk the AST recursively and must stay inside Python's stack.
MAX_DEPTH = 150


class EngineError(Exception):
    """The engine met input it does not handle; lark's runtime will explain it."""


class SyntaxFailure(Exception):
    """The input is not Allium from here: at `token` in parser `state`, or at an unreadable `offset`."""

    def __init__(self, token: Token | None = None, state: int | None = None, offset: int | None = None) -> None:
        super().__init__(token, state, offset)
        self.token, self.state, self.offset = token, state, offset
        self.postlexer: AlliumPostLexer | None = None  # its open blocks and recent tokens, at the failure


class Engine:
    def __init__(self, tables: dict[str, Any], lark: Callable[[], Lark]) -> None:
        """`tables` as made by :func:`tables_from`; `lark` gives the Lark parser when
        a state's own scanner is needed (rarely: see _contextual_token)."""
        # States are numbered 0..n-1: lists index faster than dicts look up.
        self._rows: list[dict[str, Any]] = _by_state(tables["rows"])
        self._reducers = load_reducers(tables["reducers"], MAX_DEPTH)
        self._start, self._end = tables["start"], tables["end"]
        self._units: dict[tuple[int, int, str], int] = {}
        self._lark = lark
        self._lexers: dict[frozenset[str], Any] | None = None  # lark's, when first needed
        self._flags: int = tables["flags"]
        self._match = re.compile(tables["pattern"], self._flags).match
        # First character -> the `match` of the root regex narrowed to it; an
        # exact dict, as Python specialises subscripts of those, filled on first use.
        self._matchers: dict[str, Callable[..., Any]] = {}
        self._patterns: dict[str, str] = tables["dispatch"]
        self._singles: dict[str, str] = tables["singles"]
        self._ignore: frozenset[str] = tables["ignore"]
        self._newline: frozenset[str] = tables["newline"]
        self._blanks: Callable[..., Any] = re.compile(tables["blanks"]).match
        self._keywords: dict[str, dict[str, str]] = tables["keywords"]
        self._accepts: list[frozenset[str]] = _by_state(tables["accepts"])

    # ------------------------------------------------------------ parsing

    def parse(self, text: str, builder: Any) -> tuple[Any, list[Comment]]:
        """The AST of `text` (the `start` rule's value) and the comments seen."""
        postlexer = AlliumPostLexer()
        try:
            return self._parse(text, postlexer, _Handlers(builder)), postlexer.comments
        except SyntaxFailure as failure:
            failure.postlexer = postlexer
            raise

    def expected(self, state: int) -> list[str]:
        """Every symbol parser `state` can take next (terminals and rules)."""
        return list(self._rows[state].keys())

    def _parse(self, text: str, postlexer: AlliumPostLexer, handlers: _Handlers) -> Any:
        rows, reducers = self._rows, self._reducers
        units = self._units
        states = [self._start]
        values: list[Any] = []
        # Per value: its first and last token (None when it has none) and its depth.
        infos: list[tuple[Token | None, Token | None, int]] = []
        token = None
        for token in postlexer.process(self._tokens(text, states)):
            kind = token.type
            while True:
                try:  # a subscript, not .get(): no method call, and the try costs nothing until it fails
                    entry = rows[states[-1]][kind]
                except KeyError:
                    raise SyntaxFailure(token, states[-1]) from None
                if type(entry) is int:  # shift
                    states.append(entry)
                    values.append(token)
                    infos.append((token, token, 0))
                    break
                how = entry[2]
                if how is None:  # unit rules: only the state on top changes
                    key = (states[-2], states[-1], kind)
                    try:
                        states[-1] = units[key]
                    except KeyError:
                        states[-1] = self._unit_chain(*key)
                    continue
                reducers[how](values, states, infos, handlers)
                states.append(rows[states[-1]][entry[1]])
        end = self._end
        while True:
            entry = rows[states[-1]].get("$END")
            if entry is None:
                end_token = Token.new_borrow_pos("$END", "", token) if token is not None else Token("$END", "", 0, 1, 1)
                raise SyntaxFailure(end_token, states[-1])
            if type(entry) is int:  # pragma: no cover - LALR never shifts the end marker
                raise EngineError(token)
            if entry[2] is None:
                del states[-1]
            else:
                reducers[entry[2]](values, states, infos, handlers)
            states.append(rows[states[-1]][entry[1]])
            if states[-1] == end:
                return values[-1]

    def _unit_chain(self, below: int, top: int, kind: str) -> int:
        """Where a run of unit reductions ends, seeing `kind`, with `below` under `top`.

        An expression climbs a dozen `?rule: next_level` reductions between
        each token; those leave the values alone and keep `below` in place, so
        the state they end in depends on these three things only.
        """
        rows = self._rows
        start = top
        entry = rows[top].get(kind)
        while type(entry) is tuple and entry[2] is None:
            top = rows[below][entry[1]]
            entry = rows[top].get(kind)
        self._units[below, start, kind] = top
        return top

    # ------------------------------------------------------------ lexing

    def _tokens(self, text: str, states: list[int]) -> Iterator[Token]:
        """lark's contextual lexer, for the parser state on top of `states`."""
        matchers, ignore, newline, singles = self._matchers, self._ignore, self._newline, self._singles
        keywords, accepts = self._keywords, self._accepts
        new = str.__new__
        blanks = self._blanks
        token: Token | None
        pos, size, line, line_start = 0, len(text), 1, 0
        while pos < size:
            char = text[pos]
            if char == " ":
                # Most tokens follow a space.  A blank run not followed by a
                # comment or line break can only be the %ignore terminal, so
                # skip it without trying every terminal first.
                after = pos + 1
                if after < size and text[after] not in " \t\f-\r\n":
                    pos = after  # the commonest case: one space
                    continue
                after = blanks(text, pos).end()
                if after < size and text[after] not in "-\r\n":
                    pos = after
                    continue
            kind = singles.get(char)
            if kind is not None and kind in accepts[states[-1]]:
                # `:`, `(`, `,` ...: a token by itself, no regex needed.  Such
                # a terminal is never ignored, folded or a line break.
                token = new(Token, char)
                token.type, token.value, token.start_pos = kind, char, pos
                token.line, token.column = line, pos - line_start + 1
                pos += 1
                token.end_line, token.end_column, token.end_pos = line, pos - line_start + 1, pos
                yield token
                continue
            try:
                match = matchers[char](text, pos)
            except KeyError:
                match = self._matcher(char)(text, pos)
            if match is None:
                raise SyntaxFailure(offset=pos)
            kind = match.lastgroup
            value = match.group()
            if kind not in ignore:
                base = kind
                folded = keywords.get(kind)
                if folded is not None:
                    kind = folded.get(value, kind)
                if kind not in accepts[states[-1]]:
                    if kind is not base and base in accepts[states[-1]]:
                        kind = base  # a keyword where only a name fits: this state's scanner says NAME too
                    else:
                        kind, value = self._contextual_token(text, pos, states[-1], kind, value, line, line_start)
                token = new(Token, value)
                token.type, token.value, token.start_pos = kind, value, pos
                token.line, token.column = line, pos - line_start + 1
            else:
                token = None
            if kind in newline:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = pos + value.rindex("\n") + 1
            pos += len(value)
            if token is not None:
                token.end_line, token.end_column, token.end_pos = line, pos - line_start + 1, pos
                yield token

    def _matcher(self, char: str) -> Callable[..., Any]:
        pattern = self._patterns.get(char)
        # Other characters (non-ASCII, or none can start a token) get the
        # whole regex, which says what it says about them.
        match = self._match if pattern is None else re.compile(pattern, self._flags).match
        self._matchers[char] = match
        return match

    def _state_lexer(self, state: int) -> Any:
        if self._lexers is None:
            self._lexers = internals.state_lexers(self._lark())
        return self._lexers[self._accepts[state]]

    def _contextual_token(
        self, text: str, pos: int, state: int, kind: str, value: str, line: int, line_start: int
    ) -> tuple[str, str]:
        """The token `state`'s own scanner reads at `pos` (lark compiles it on first use).

        `kind` and `value` are what the scanner over all terminals read there,
        which is what lark reports when this state's scanner reads nothing.
        """
        scanned = internals.state_scan(self._state_lexer(state), text, pos)
        if scanned is None:
            column = pos - line_start + 1
            end_line = line + value.count("\n")
            end_column = len(value) - value.rindex("\n") if end_line > line else column + len(value)
            token = Token(kind, value, pos, line, column, end_line, end_column, pos + len(value))
            raise SyntaxFailure(token, state)
        kind, value = scanned
        if kind in self._ignore:  # pragma: no cover - the root scanner would have read it
            raise EngineError(pos)
        return kind, value


def _by_state(table: dict[int, Any]) -> list[Any]:
    if sorted(table) != list(range(len(table))):  # pragma: no cover - lark numbers its states densely
        raise TypeError("parser states are not numbered 0..n-1")
    return [table[state] for state in range(len(table))]


class _Handlers(dict):
    """Method name -> the builder's bound method, looked up on first use in a parse."""

    def __init__(self, builder: Any) -> None:
        super().__init__()
        self._builder = builder

    def __missing__(self, name: str) -> Callable[..., Any]:
        method = self[name] = getattr(self._builder, name)
        return method


def tables_from(parser: Lark, builder: type) -> dict[str, Any]:
    """Everything the engine needs from lark's compiled grammar, as plain data.

    Plain data (dicts, tuples, strings) so that grammar.py can keep it in a
    marshal file and start the engine without loading lark's own cache.
    `builder` is the AST builder class, whose methods name the children they
    take (children.py).  Raises internals.InternalsChanged when lark's
    internals are not as read, ChildrenError when grammar and builder disagree.
    """
    internals.check_runtime()
    table = internals.parse_table(parser)
    shapes = internals.reductions(parser)
    grammar = Grammar(shapes.values())
    bound = bindings(grammar, builder)
    # A reduce action is (size, goto symbol, None for a unit rule or the
    # index of its reducer); rules that reduce alike share one reducer.
    hows: dict[tuple[int, Any], int] = {}
    reductions: dict[Any, tuple[int, str, int | None]] = {}
    for rule, reduction in shapes.items():
        how = _how(reduction, grammar, bound)
        index = None if how is None else hows.setdefault(_plain((reduction.size, how)), len(hows))
        reductions[rule] = (reduction.size, reduction.origin, index)
    rows: dict[int, dict[str, Any]] = {}
    for state, actions in table.states.items():
        rows[state] = row = {}
        for kind, (shift, arg) in actions.items():
            if not shift and arg not in reductions:
                raise internals.InternalsChanged(f"the LALR table reduces by a rule not in Lark.rules: {arg}")
            row[kind] = arg if shift else reductions[arg]
    scanner = internals.root_scanner(parser)
    return _plain({
        "rows": rows,
        "start": table.start,
        "end": table.end,
        "pattern": scanner.pattern,
        "flags": scanner.flags,
        "ignore": scanner.ignore,
        "newline": scanner.newline,
        "blanks": scanner.blank,  # the grammar's `%ignore /[ \t\f]+/`, to skip blanks in one step
        "keywords": scanner.keywords,
        "accepts": scanner.accepts,
    }) | _lexer_tables(scanner) | {"reducers": compile_reducers(list(hows))}


def _lexer_tables(scanner: internals.Scanner) -> dict[str, Any]:
    """The root regex narrowed per first character, and the characters that
    are a token by themselves (see firsts.py)."""
    table = dispatch(scanner.alternatives, scanner.flags)
    # The engine's shortcut makes plain tokens: nothing ignored, folded or counted as a line break.
    special = scanner.ignore | scanner.newline | set(scanner.keywords)
    singles = single_chars(scanner.alternatives, scanner.flags, table)
    return _plain({"dispatch": table, "singles": {c: n for c, n in singles.items() if n not in special}})


def _plain(value: Any) -> Any:
    """`value` with every str subclass (lark names some things with Tokens) made a str."""
    if isinstance(value, str):
        return sys.intern(str(value))  # interned: marshal then writes each name once
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, frozenset):
        return frozenset(_plain(v) for v in value)
    return value


def _how(reduction: internals.Reduction, grammar: Grammar, bound: dict[Any, Binding]) -> Any:
    """How the engine reduces by a rule (see reductions.py): None for a unit rule."""
    kinds = [(index, grammar.kind(symbol, inline)) for index, symbol, inline in reduction.kept]
    kinds = [(index, kind) for index, kind in kinds if kind != NONE]
    single = len(kinds) == 1 and kinds[0][1] in (VALUE, ONE)
    if reduction.origin.startswith("_"):  # inlined into its parent
        if grammar.kind(reduction.origin, True) == ONE:
            return None if reduction.size == 1 else (ONE_CHILD, kinds[0][0])
        return (LIST, tuple((index, kind == MANY) for index, kind in kinds))
    if reduction.expand1:
        if not single:
            raise ChildrenError(f"an alternative of ?{reduction.origin} with other than one child needs an alias")
        return None if reduction.size == 1 else (PASS, kinds[0][0])
    binding = bound[reduction.name, reduction.kept, reduction.size]
    args = tuple((arg.param, arg.many, arg.parts) for arg in binding.args)
    if reduction.is_token_rule and len(args) == 1 and not args[0][1]:
        return (TOKEN_RULE, binding.method, args[0][0])
    return (BUILD, binding.method, args)
