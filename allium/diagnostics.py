"""One diagnostic type for the whole toolchain, and its renderers.

Stages return diagnostics as data; only the CLI decides how to print them and
which exit code they imply. The JSON shape matches JUXT's ``allium check``
(``code``, ``location{file,line,col}``, ``message``, ``severity``) so scripts
written against either tool keep working.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from allium.source import SourceFile, Span


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def file(self) -> str:
        return self.span.file if self.span else ""

    def sort_key(self) -> tuple[str, int, int, str]:
        if self.span is None:
            return ("", 0, 0, self.code)
        return (self.span.file, self.span.start.line, self.span.start.column, self.code)

    def to_json(self) -> dict[str, object]:
        location: dict[str, object] = {"file": self.file, "line": 0, "col": 0}
        if self.span is not None:
            location = {
                "file": self.span.file,
                "line": self.span.start.line,
                "col": self.span.start.column,
                "end_line": self.span.end.line,
                "end_col": self.span.end.column,
            }
        out: dict[str, object] = {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "location": location,
        }
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def error(code: str, message: str, span: Span | None = None, *notes: str) -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, message, span, tuple(notes))


def warning(code: str, message: str, span: Span | None = None, *notes: str) -> Diagnostic:
    return Diagnostic(code, Severity.WARNING, message, span, tuple(notes))


def info(code: str, message: str, span: Span | None = None, *notes: str) -> Diagnostic:
    return Diagnostic(code, Severity.INFO, message, span, tuple(notes))


def has_failures(diagnostics: Iterable[Diagnostic]) -> bool:
    """Errors and warnings fail a check; infos never do."""
    return any(d.severity is not Severity.INFO for d in diagnostics)


# ---------------------------------------------------------------- text


def render_caret(source: SourceFile, span: Span) -> list[str]:
    """The offending line with a caret (and tildes) under the span."""
    line = span.start.line
    text = source.line_text(line).replace("\t", " ")
    gutter = f"{line:>4} | "
    width = 1
    if span.end.line == line:
        width = max(1, span.end.column - span.start.column)
    width = min(width, max(1, len(text) - span.start.column + 1))
    marker = " " * (span.start.column - 1) + "^" + "~" * (width - 1)
    return [gutter + text, " " * (len(gutter) - 2) + "| " + marker]


def render_text(
    diagnostics: Sequence[Diagnostic],
    sources: dict[str, SourceFile],
    *,
    summary: bool = True,
) -> str:
    """Human output: grouped by file, one caret per finding, one summary line."""
    lines: list[str] = []
    for diag in sorted(diagnostics, key=Diagnostic.sort_key):
        # A finding about no file in particular (a package's coverage) has no place to name.
        where = f"{diag.span.file}:{diag.span.start.line}:{diag.span.start.column}: " if diag.span else ""
        lines.append(f"{where}{diag.severity.value}[{diag.code}]: {diag.message}")
        source = sources.get(diag.file)
        if source is not None and diag.span is not None:
            lines.extend(render_caret(source, diag.span))
        lines.extend(f"     = note: {note}" for note in diag.notes)
    if summary:
        lines.append(summary_line(diagnostics, len(sources)))
    return "\n".join(lines)


def summary_line(diagnostics: Sequence[Diagnostic], files: int) -> str:
    counts = {s: 0 for s in Severity}
    for diag in diagnostics:
        counts[diag.severity] += 1
    noun = "file" if files == 1 else "files"
    return (
        f"{files} {noun} checked: {counts[Severity.ERROR]} error(s), "
        f"{counts[Severity.WARNING]} warning(s), {counts[Severity.INFO]} info"
    )


# ---------------------------------------------------------------- sarif


_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def render_sarif(diagnostics: Sequence[Diagnostic], tool_version: str, *, failure: str | None = None) -> str:
    """SARIF 2.1.0; `failure` is why the run could not finish (an unsuccessful invocation)."""
    rules = sorted({d.code for d in diagnostics})
    results = []
    for diag in sorted(diagnostics, key=Diagnostic.sort_key):
        result: dict[str, object] = {
            "ruleId": diag.code,
            "ruleIndex": rules.index(diag.code),
            "level": _SARIF_LEVEL[diag.severity],
            "message": {"text": diag.message},
        }
        if diag.span is not None:
            result["locations"] = [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": diag.span.file},
                        "region": {
                            "startLine": diag.span.start.line,
                            "startColumn": diag.span.start.column,
                            "endLine": diag.span.end.line,
                            "endColumn": diag.span.end.column,
                        },
                    }
                }
            ]
        results.append(result)
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "allium",
                        "version": tool_version,
                        "informationUri": "https://github.com/juxt/allium",
                        "rules": [{"id": code, "name": code} for code in rules],
                    }
                },
                "results": results,
                "invocations": [_invocation(failure)],
            }
        ],
    }
    return json.dumps(log, indent=2)


def _invocation(failure: str | None) -> dict[str, object]:
    if failure is None:
        return {"executionSuccessful": True}
    return {
        "executionSuccessful": False,
        "toolExecutionNotifications": [{"level": "error", "message": {"text": failure}}],
    }
