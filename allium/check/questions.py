"""Open questions are unfinished spec; resolved questions must be complete."""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check.context import CheckContext
from allium.diagnostics import Diagnostic, error, warning


def check_questions(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    for decl in module.decls:
        if isinstance(decl, ast.OpenQuestion):
            yield warning("allium.openQuestion.present", f"open question: {decl.name}", decl.span)
        elif isinstance(decl, ast.ResolvedQuestion):
            for part in ("answer", "rationale"):
                if not getattr(decl, part).strip():
                    yield error(
                        f"allium.resolvedQuestion.missing{part.title()}",
                        f"resolved question \"{decl.name}\" has no {part}",
                        decl.span,
                    )
