"""Parsing: source text -> :class:`allium.ast.Module` plus diagnostics.

The only package that imports lark.  Parsing never raises on bad input: a
syntax error becomes a diagnostic with a position and a readable message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lark import Token
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

from allium import ast
from allium.diagnostics import Diagnostic, error, warning
from allium.errors import InternalError
from allium.source import SourceFile
from allium.syntax import messages
from allium.syntax.build import AstBuilder
from allium.syntax.lalr import MAX_DEPTH, Engine, EngineError, SyntaxFailure
from allium.syntax.internals import InternalsChanged, parser_state_symbols
from allium.syntax.grammar import build_engine, build_parser, build_tree_builder, falling_back
from allium.syntax.postlex import AlliumPostLexer, Comment
from allium.syntax.reductions import TooDeep

SUPPORTED_VERSIONS = (1, 2, 3)
_MARKER = re.compile(r"^\s*--\s*allium:\s*(\S+)\s*$")
_IGNORE = re.compile(r"^\s*allium-ignore\s+([A-Za-z0-9._,\- \t]+)$")
_SEE = re.compile(r"^see:\s*(\S+)")


@dataclass(frozen=True)
class ParseResult:
    source: SourceFile
    module: ast.Module | None  # None when the file has a syntax error
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return self.module is not None


def parse_source(source: SourceFile) -> ParseResult:
    diagnostics = list(_encoding_diagnostics(source))
    diagnostics.extend(_version_diagnostics(source))
    version = _version(source)
    engine = build_engine()
    if engine is None:  # lark's internals changed; grammar.py said so once
        return _reference_result(source, version, diagnostics)
    builder = AstBuilder(source)
    try:
        decls, comments = engine.parse(source.text, builder)
    except TooDeep as exc:
        diagnostics.append(
            error(
                "allium.syntax.tooDeep",
                f"expressions and blocks nest more than {MAX_DEPTH} levels deep here; split them up",
                source.span(exc.offset, exc.offset),
            )
        )
        return ParseResult(source, None, tuple(diagnostics))
    except SyntaxFailure as failure:
        diagnostics.append(_failure_diagnostic(engine, source, failure))
        return ParseResult(source, None, tuple(diagnostics))
    except EngineError:  # pragma: no cover - input the engine does not handle: lark's runtime explains it
        return _reference_result(source, version, diagnostics)
    except InternalsChanged as exc:  # read at run time (a state's own scanner): lark's runtime needs none
        falling_back(exc)
        return _reference_result(source, version, diagnostics)
    except Exception as exc:  # noqa: BLE001 - a bug in allium, not in the spec
        raise InternalError.from_exception(f"building the AST of {source.path}", exc) from exc
    return _finish(source, builder, (decls, comments), version, diagnostics)


def _reference_result(source: SourceFile, version: int | None, diagnostics: list[Diagnostic]) -> ParseResult:
    builder = AstBuilder(source)  # a fresh one: the engine's may hold half a parse's findings
    return _finish(source, builder, _reference_parse(source, builder), version, diagnostics)


def _finish(
    source: SourceFile,
    builder: AstBuilder,
    parsed: tuple[list[ast.Decl], list[Comment]] | Diagnostic,
    version: int | None,
    diagnostics: list[Diagnostic],
) -> ParseResult:
    if isinstance(parsed, Diagnostic):
        return ParseResult(source, None, (*diagnostics, parsed))
    decls, comments = parsed
    diagnostics.extend(builder.diagnostics)
    if version in (2, 3):  # v1 spells annotations as clauses; unmarked files are not judged
        diagnostics.extend(builder.v1_forms)
    decls = _attach_hints(decls, comments, source)
    module = ast.Module(
        source.span(0, len(source.text)),
        source.path,
        version,
        _version_span(source),
        tuple(decls),
        _suppressions(comments),
        tuple((c.line, c.text) for c in comments),
    )
    return ParseResult(source, module, tuple(diagnostics))


def _reference_parse(
    source: SourceFile, builder: AstBuilder | None = None
) -> tuple[list[ast.Decl], list[Comment]] | Diagnostic:
    """Parse with lark's own runtime: slower, but its exceptions explain syntax errors."""
    parser = build_parser()
    postlexer = parser.options.postlex
    assert isinstance(postlexer, AlliumPostLexer)
    try:
        tree = parser.parse(source.text)
    except UnexpectedInput as exc:
        return _syntax_diagnostic(source, exc, postlexer)
    except (LarkError, RecursionError) as exc:  # pragma: no cover - defensive
        return error("allium.syntax.error", f"could not parse: {exc}", source.span(0, 0))
    try:
        decls = build_tree_builder().build(builder or AstBuilder(source), tree)
    except InternalsChanged as exc:  # Lark.rules, which names the builder's children: nothing to fall back to
        raise InternalError(f"internal error while building the AST of {source.path}: {exc}") from exc
    except RecursionError:  # pragma: no cover - the engine refuses these first
        return error("allium.syntax.tooDeep", "expressions and blocks nest too deeply", source.span(0, 0))
    except Exception as exc:  # noqa: BLE001 - the builder failed: a bug in allium, not a syntax error in the spec
        raise InternalError.from_exception(f"building the AST of {source.path}", exc) from exc
    return decls, list(postlexer.comments)


def parse_text(text: str, path: str = "<input>") -> ParseResult:
    """Parse `text` as the contents of file `path` (a leading byte-order mark is set aside)."""
    return parse_source(SourceFile.from_text(path, text))


def parse_file(path: str) -> ParseResult:
    return parse_source(SourceFile.read(path))


def _encoding_diagnostics(source: SourceFile):
    if source.undecodable is None:
        return
    offset, byte = source.undecodable
    what = f"byte 0x{byte:02x}" if byte is not None else "a lone surrogate"
    yield error(
        "allium.source.encoding",
        f"{what} is not UTF-8: spec files are read as UTF-8 (allium reads each such byte as '?')",
        source.span(offset, offset + 1),
        "save the file as UTF-8",
    )


# ---------------------------------------------------------------- version marker


def _marker(source: SourceFile) -> re.Match[str] | None:
    return _MARKER.match(source.line_text(1))


def _version(source: SourceFile) -> int | None:
    match = _marker(source)
    if match and match.group(1).isdigit():
        return int(match.group(1))
    return None


def _version_span(source: SourceFile):
    return source.span(0, len(source.line_text(1))) if _marker(source) else None


def _version_diagnostics(source: SourceFile):
    match = _marker(source)
    if match is None:
        yield warning(
            "allium.version.missing",
            "missing version marker; expected '-- allium: 3' as the first line",
            source.span(0, 0),
        )
    elif not match.group(1).isdigit() or int(match.group(1)) not in SUPPORTED_VERSIONS:
        yield error(
            "allium.version.unsupported",
            f"unsupported allium version {match.group(1)}; this parser supports versions 1, 2 and 3",
            source.span(match.start(1), match.end(1)),
        )


# ---------------------------------------------------------------- comments


def _suppressions(comments: list[Comment]) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """`-- allium-ignore a, b` silences those codes on its own line and the next."""
    out: list[tuple[int, tuple[str, ...]]] = []
    for comment in comments:
        match = _IGNORE.match(comment.text)
        if match:
            codes = tuple(c.strip() for c in match.group(1).split(",") if c.strip())
            out.append((comment.line, codes))
    return tuple(out)


def _attach_hints(decls: list[ast.Decl], comments: list[Comment], source: SourceFile) -> list[ast.Decl]:
    """Fill in what only comments carry: doc comments and deferred `-- see:` hints."""
    trailing = {c.line: c for c in comments if c.trailing}
    by_line = {c.line: c for c in comments if not c.trailing}
    out: list[ast.Decl] = []
    for decl in decls:
        if isinstance(decl, ast.DeferredDecl) and decl.hint is None:
            comment = trailing.get(decl.span.start.line)
            if comment is not None:
                match = _SEE.match(comment.text)
                hint = match.group(1) if match else _url(comment.text)
                if hint:
                    decl = _replace(decl, hint=hint)
        doc = _doc_comment(decl.span.start.line, by_line)
        if doc and hasattr(decl, "doc_comment"):
            decl = _replace(decl, doc_comment=doc)
        out.append(decl)
    return out


def _doc_comment(line: int, by_line: dict[int, Comment]) -> str | None:
    """The run of comment lines directly above a declaration, separators dropped."""
    lines: list[str] = []
    current = line - 1
    while current in by_line:
        text = by_line[current].text
        if _MARKER.match("--" + text) or set(text.strip()) <= {"-", "="}:
            break
        lines.append(text)
        current -= 1
    return "\n".join(reversed(lines)) or None


def _url(text: str) -> str | None:
    match = re.search(r"https?://\S+", text)
    return match.group(0) if match else None


def _replace(node, **changes):
    import dataclasses

    return dataclasses.replace(node, **changes)


# ---------------------------------------------------------------- syntax errors


def _syntax_diagnostic(source: SourceFile, exc: UnexpectedInput, postlexer: AlliumPostLexer) -> Diagnostic:
    """The diagnostic for one of lark's exceptions (the reference runtime)."""
    if isinstance(exc, UnexpectedCharacters):
        return _unreadable(source, exc.pos_in_stream or 0)
    if isinstance(exc, UnexpectedToken):
        return _unexpected_token(source, exc.token, _parser_expected(exc), set(exc.expected), postlexer)
    if isinstance(exc, UnexpectedEOF):  # pragma: no cover - LALR reports $END as a token
        return _unexpected_end(source, exc.expected, postlexer)
    return error("allium.syntax.error", str(exc), source.span(0, 0))  # pragma: no cover


def _failure_diagnostic(engine: Engine, source: SourceFile, failure: SyntaxFailure) -> Diagnostic:
    """The diagnostic for where the engine stopped: the same lark's runtime gives."""
    if failure.token is None or failure.state is None or failure.postlexer is None:
        return _unreadable(source, failure.offset or 0)
    symbols = engine.expected(failure.state)
    return _unexpected_token(
        source, failure.token, _terminals(symbols), {s for s in symbols if s.isupper()}, failure.postlexer
    )


def _unreadable(source: SourceFile, offset: int) -> Diagnostic:
    char = source.text[offset : offset + 1]
    if char == '"':
        return error(
            "allium.syntax.unterminatedString",
            "unterminated string: expected a closing '\"' on the same line",
            source.span(offset, offset + 1),
        )
    return error(
        "allium.syntax.unexpectedCharacter",
        f"unexpected character {char!r}" + (" (strings use double quotes)" if char == "'" else ""),
        source.span(offset, offset + 1),
    )


def _unexpected_token(
    source: SourceFile, token: Token, expected: set[str], raw_expected: set[str], postlexer: AlliumPostLexer
) -> Diagnostic:
    """`expected`: the terminals the parser could take; `raw_expected`: what lark's exception listed."""
    recent = list(postlexer.recent)
    if token.type == "$END":
        return _unexpected_end(source, raw_expected, postlexer)
    # recent[-1] is the failing token itself when the postlexer emitted it.
    if recent and recent[-1] is token:
        recent = recent[:-1]
    if _expects_indented_value(expected, recent):
        # `name:` with nothing after it: the value is missing, not a block.
        colon = recent[-2]
        after = colon.end_pos or 0  # _expects_indented_value checked it is there
        return error(
            "allium.syntax.unexpectedToken",
            f"expected an expression after '{colon.value}', found end of line",
            source.span(after, after),
        )
    where = messages.misplaced_keyword(token, recent) or token
    start = where.start_pos if where.start_pos is not None else len(source.text)
    end = where.end_pos if where.end_pos is not None and where.value else start + 1
    if token.type in ("_NL", "_INDENT", "_DEDENT") and recent and recent[-1].end_pos is not None:
        # "found end of line": the line that ended is the one the postlexer
        # last handed on, which may be above a `}` the _NL borrowed its place from.
        if recent[-1].type not in ("_NL", "_INDENT", "_DEDENT"):
            start = end = recent[-1].end_pos
    message = messages.unexpected_token_message(token, expected, recent, _patterns())
    if (
        where is token
        and " name '" in messages.context_phrase(recent)
        and recent[-1].end_line is not None
        and token.line is not None
        and token.line > recent[-1].end_line
        and recent[-1].end_pos is not None
    ):
        # `entity Foo` then a member on the next line: the `{` is missing
        # at the end of the declaration's line, so point there.
        start = end = recent[-1].end_pos
    notes = _open_bracket_notes(postlexer, token)
    return error("allium.syntax.unexpectedToken", message, source.span(start, end), *notes)


def _parser_expected(exc: UnexpectedToken) -> set[str]:
    """What the parser (not the lexer) would accept at the failure point.

    When the contextual lexer fails, lark reports the lexer's terminal set,
    which includes terminals we accept everywhere for the postlexer's sake.
    """
    keys = parser_state_symbols(exc.state)
    return set(exc.expected) if keys is None else _terminals(keys)


def _terminals(symbols) -> set[str]:
    # The table also holds goto entries for rules (lowercase); keep terminals.
    return {k for k in symbols if k.isupper() or k.startswith("__") or k == "$END"}


def _patterns() -> dict[str, str]:
    return {t.name: t.pattern.value for t in build_parser().terminals if t.name.startswith("__ANON")}


def _expects_indented_value(expected: set[str], recent: list) -> bool:
    return (
        expected <= {"_INDENT", "_NL_CONT", "_NL_ELSE"}
        and len(recent) >= 2
        and recent[-1].type == "_NL"
        and recent[-2].value == ":"
        and recent[-2].end_pos is not None
    )


def _open_bracket_notes(postlexer: AlliumPostLexer, token) -> list[str]:
    """Name a `(` or `[` left open on an earlier line: the usual cause of a confusing error."""
    for block in reversed(postlexer.blocks[1:]):
        opener = block.opener
        if block.indents is None and opener is not None and opener.value in "([":
            if token.line is not None and opener.line is not None and opener.line < token.line:
                closer = {"(": ")", "[": "]"}[opener.value]
                return [f"the '{opener.value}' opened at line {opener.line}, column {opener.column} is not closed with '{closer}'"]
            return []
    return []


def _unexpected_end(source: SourceFile, expected, postlexer: AlliumPostLexer) -> Diagnostic:
    # Point just after the last thing written, not at an empty last line.
    end = len(source.text.rstrip())
    open_blocks = [b.opener for b in postlexer.blocks[1:] if b.opener is not None]
    if open_blocks:
        opener = open_blocks[-1]
        closer = {"{": "}", "(": ")", "[": "]"}[opener.value]
        return error(
            "allium.syntax.unclosedBlock",
            f"expected '{closer}' to close the '{opener.value}' opened at line {opener.line}, found end of file",
            source.span(end, end),
            f"the block starts at line {opener.line}, column {opener.column}",
        )
    return error(
        "allium.syntax.unexpectedEnd",
        f"expected {messages.expected_phrase(expected)}, found end of file",
        source.span(end, end),
    )
