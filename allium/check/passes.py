"""The ordered list of checker passes.

Order matters only for readability of output (diagnostics are sorted by
position before printing); each pass is independent and side-effect free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from allium import ast
from allium.check.context import CheckContext
from allium.check import questions
from allium.diagnostics import Diagnostic

Pass = Callable[[ast.Module, CheckContext], Iterator[Diagnostic]]

PASSES: tuple[Pass, ...] = (
    questions.check_questions,
)


def run_passes(modules: dict[str, ast.Module]) -> list[Diagnostic]:
    context = CheckContext.build(modules)
    out: list[Diagnostic] = []
    for module in modules.values():
        for check in PASSES:
            out.extend(check(module, context))
    return out
