"""The postlexer: Allium's braces-plus-indentation layout, as tokens.

Allium declarations are brace blocks whose members end at newlines, while
clause bodies inside them (``ensures:``, ``for``/``if`` bodies, annotation
prose) are delimited by indentation.  The lexer hands us raw newline runs
(with the comment lines they swallowed); this class turns them into

* ``_NL`` at the end of each logical line inside a declaration block,
* ``_INDENT``/``_DEDENT`` around the body of a clause that ends in ``:`` (or of
  a line-final ``implies`` whose consequences are indented below it),
* nothing at all inside parentheses, brackets and literal braces, or when the
  line continues (it ends in an operator, or the next line starts with one),
* ``PROSE`` carrying the comment lines indented under ``@guidance``,
  ``@invariant Name``, ``@guarantee Name``, v1 ``guidance:`` and the
  ``answer:``/``rationale:`` of a resolved question.

Every comment it sees is recorded in :attr:`comments` so the AST builder can
attach doc comments, read the version marker and honour ``allium-ignore``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from lark import Token
from lark.lark import PostLex

# Words that open a declaration whose `{` starts a member block rather than a
# set, object or lookup literal.
DECLARATION_WORDS = frozenset(
    {
        "entity", "external", "value", "variant", "enum", "rule", "invariant",
        "contract", "surface", "actor", "config", "given", "transitions",
        "resolved",
    }
)
# A line ending in one of these continues on the next line.
CONTINUATION_TYPES = frozenset({"COMPARE_OP", "ADD_OP", "MUL_OP", "LAMBDA_ARROW"})
CONTINUATION_WORDS = frozenset(
    {
        "=", ",", "|", ".", "?.", "->", "??", "-", "and", "or", "implies", "not",
        "in", "where", "with", "exists", "transitions_to", "becomes", "includes",
        "excludes", "contains",
    }
)
# lark names the `"@guidance"` and `"@guarantee"` literals __ANON_n, so
# annotations are recognised by their text, not their terminal name.
ANNOTATIONS = frozenset({"@guidance", "@invariant", "@guarantee"})
PROSE_CLAUSES = frozenset({"guidance", "answer", "rationale", "guarantee"})
NEWLINE_TYPES = frozenset({"_NL", "_NL_ELSE", "_NL_CONT"})
# The token texts the loop below acts on; any other token passes straight through.
LAYOUT_VALUES = ANNOTATIONS | {":", "{", "}", "(", ")", "[", "]"}


@dataclass(frozen=True, slots=True)
class Comment:
    line: int  # 1-based
    column: int  # 1-based
    offset: int  # character offset of the leading `--`
    text: str  # without the leading `--` and one following space
    trailing: bool  # shares its line with code

    @property
    def raw(self) -> str:
        return "--" + (" " + self.text if self.text else "")


@dataclass(slots=True)
class _Block:
    """One level of brace nesting; `indents` is None inside literals and brackets."""

    indents: list[int] | None
    fresh: bool = False  # a declaration block whose first line we have not seen
    opener: Token | None = None  # the `{`, `(` or `[` that opened it


class AlliumPostLexer(PostLex):
    # RBRACE: a `}` closing a one-line block is lexed before we insert the
    # _NL that ends its last member, so it must be lexable in any state.
    always_accept = ("_NL", "_NL_ELSE", "_NL_CONT", "RBRACE")

    def __init__(self) -> None:
        self.comments: list[Comment] = []
        # For error messages: the last tokens handed on, and the open blocks.
        self.recent: deque[Token] = deque(maxlen=3)
        self.blocks: list[_Block] = []

    # lark calls process() once per parse
    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        self.comments = []
        self.recent.clear()
        blocks: list[_Block] = [_Block([0])]
        self.blocks = blocks
        recent = self.recent
        prev: Token | None = None  # last token handed to the parser
        line_first: Token | None = None  # first token of the current logical line
        line_indent = 0
        prose_indent: int | None = None  # set when the line opened a prose body

        def emit(token: Token) -> Token:
            nonlocal prev
            prev = token
            recent.append(token)
            return token

        def synth(kind: str, like: Token) -> Token:
            # Zero-width at the start of `like` (the newline run), so that a
            # declaration's span ends at its `}`, not on the following line.
            return _zero_width(kind, like.start_pos, like.line, like.column)

        def synth_after(kind: str, like: Token) -> Token:
            # Zero-width just after `like` (the last token of the file).
            return _zero_width(kind, like.end_pos, like.end_line, like.end_column)

        for token in stream:
            kind = token.type
            if kind in NEWLINE_TYPES:
                comments, indent = self._scan_newline(token)
                block = blocks[-1]
                if prose_indent is not None:
                    prose, comments = _take_prose(comments, prose_indent)
                    prose_indent = None
                    if prose is not None:
                        prose_token = _prose_token(prose, token)
                        yield emit(prose_token)
                        # What follows is placed after the prose, so that an
                        # annotation's span covers its body.
                        token = synth_after(kind, prose_token)
                self.comments.extend(comments)
                if block.indents is None or prev is None:
                    continue
                if block.fresh:
                    block.fresh = False
                    block.indents = [indent]
                    line_first, line_indent = None, indent
                    continue
                stack = block.indents
                if prev.value == "implies" and kind != "_NL_CONT" and indent > stack[-1] and prev.type != "NAME":
                    # `cond implies` over indented consequence lines: a block, like `:`
                    yield emit(synth("_NL", token))
                    stack.append(indent)
                    yield emit(synth("_INDENT", token))
                    line_first, line_indent = None, indent
                    continue
                if kind == "_NL_CONT" or _continues(prev):
                    continue
                if kind == "_NL_ELSE" and indent >= stack[-1]:
                    continue  # `else` continuing an inline `if` on the line above
                if indent > stack[-1]:
                    if prev.value != ":":
                        continue  # deeper without a block opener: a wrapped line
                    yield emit(synth("_NL", token))
                    stack.append(indent)
                    yield emit(synth("_INDENT", token))
                else:
                    yield emit(synth("_NL", token))
                    while len(stack) > 1 and indent < stack[-1]:
                        stack.pop()
                        yield emit(synth("_DEDENT", token))
                line_first, line_indent = None, indent
                continue

            if line_first is None:
                line_first = token
            value = token.value
            if value not in LAYOUT_VALUES:  # most tokens: nothing to track
                prev = token
                recent.append(token)
                yield token
                continue
            if value in ANNOTATIONS and kind != "STRING":
                prose_indent = line_indent
            elif value == ":" and line_first.value in PROSE_CLAUSES and prev is line_first:
                prose_indent = line_indent
            elif value == "{":
                is_block = _opens_block(line_first, prev, blocks[-1])
                yield emit(token)
                blocks.append(_Block([0], True, token) if is_block else _Block(None, False, token))
                continue
            elif value in ("(", "["):
                blocks.append(_Block(None, False, token))
            elif value in (")", "]") and len(blocks) > 1 and blocks[-1].indents is None:
                blocks.pop()
            elif value == "}" and len(blocks) > 1:
                block = blocks.pop()
                if block.indents is not None:
                    if prev is not None and prev.value != "{" and prev.type not in ("_NL", "_DEDENT"):
                        yield emit(synth("_NL", token))
                    for _ in block.indents[1:] if not block.fresh else ():
                        yield emit(synth("_DEDENT", token))
            yield emit(token)

        if any(block.indents is None for block in blocks):
            return  # an unclosed bracket: let the parser report it at end of file
        if prev is not None and prev.type not in ("_NL", "_DEDENT"):
            yield synth_after("_NL", prev)
        for block in reversed(blocks):
            for _ in (block.indents or [0])[1:]:
                yield synth_after("_DEDENT", prev) if prev is not None else Token("_DEDENT", "")

    def _scan_newline(self, token: Token) -> tuple[list[Comment], int]:
        """The comments inside a newline run, and the indentation it ends at."""
        text = token.value
        indent = len(text[text.rfind("\n") + 1 :].expandtabs(4))
        if "--" not in text:
            return [], indent  # most runs: a line break and the next line's indentation
        comments: list[Comment] = []
        line = token.line or 1
        offset = token.start_pos or 0
        column = token.column or 1
        pos = 0
        first = True
        while True:
            dash = text.find("--", pos)
            nl = text.find("\n", pos)
            if dash != -1 and (nl == -1 or dash < nl):
                end = nl if nl != -1 else len(text)
                body = text[dash + 2 : end].rstrip("\r")
                comments.append(
                    Comment(
                        line,
                        column + dash - pos if first else dash - pos + 1,
                        offset + dash,
                        body[1:] if body.startswith(" ") else body,
                        first,
                    )
                )
            if nl == -1:
                break
            pos = nl + 1
            line += 1
            first = False
        return comments, indent


def _zero_width(kind: str, pos: int | None, line: int | None, column: int | None) -> Token:
    """An empty lark Token at one place, without Token()'s argument handling (~30k per MB)."""
    token = str.__new__(Token, "")
    token.type, token.value = kind, ""
    token.start_pos, token.line, token.column = pos, line, column
    token.end_pos, token.end_line, token.end_column = pos, line, column
    return token


def _continues(prev: Token) -> bool:
    """Does a line ending in `prev` carry on onto the next line?"""
    if prev.type in CONTINUATION_TYPES:
        return True
    return prev.type != "NAME" and prev.value in CONTINUATION_WORDS


def _opens_block(line_first: Token, prev: Token | None, enclosing: _Block) -> bool:
    if prev is None or enclosing.indents is None:
        return False
    if prev.value in ("config", "given") or (prev.type == "QNAME" and prev.value.endswith("/config")):
        return True
    if prev.type not in ("NAME", "QNAME", "STRING"):
        return False
    return line_first.type != "NAME" and line_first.value in DECLARATION_WORDS


def _take_prose(comments: list[Comment], indent: int) -> tuple[list[Comment] | None, list[Comment]]:
    """Split off the comment lines that form an annotation's body.

    The body is the same-line comment (v1 `guidance: -- text`) plus the run of
    following comment lines indented deeper than the annotation.
    """
    taken: list[Comment] = []
    rest = list(comments)
    if rest and rest[0].trailing:
        taken.append(rest.pop(0))
    expected_line = (taken[0].line if taken else (rest[0].line - 1 if rest else 0)) + 1
    while rest and rest[0].column - 1 > indent and rest[0].line == expected_line:
        taken.append(rest.pop(0))
        expected_line += 1
    return (taken or None), rest


def _prose_token(comments: list[Comment], like: Token) -> Token:
    text = "\n".join(c.text for c in comments)
    token = Token.new_borrow_pos("PROSE", text, like)
    token.line = comments[0].line
    token.column = comments[0].column
    token.start_pos = comments[0].offset
    token.end_line = comments[-1].line
    token.end_pos = comments[-1].offset + len(comments[-1].raw)
    token.end_column = comments[-1].column + len(comments[-1].raw)
    return token
