"""Invariant purity (rules 55/56): no `now`, no creation, mutation or emission."""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check import queries
from allium.check.context import CheckContext
from allium.diagnostics import Diagnostic, error

_MUTATORS = frozenset({"created", "add", "remove", "removed"})


def _invariants(module: ast.Module) -> Iterator[ast.InvariantDecl]:
    for decl in module.decls:
        if isinstance(decl, ast.InvariantDecl):
            yield decl
        elif isinstance(decl, ast.EntityDecl):
            yield from decl.invariants


def check_invariant_purity(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    for inv in _invariants(module):
        for node in context.nodes(inv):
            if isinstance(node, ast.Name) and node.name == "now":
                yield error(
                    "allium.invariant.volatileNow",
                    f"Invariant '{inv.name}' references `now`, which is volatile; invariants must be "
                    "pure (compare stored timestamps instead).",
                    node.span,
                )
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Member) and func.name in _MUTATORS:
                    what = f"`.{func.name}()`"
                elif isinstance(func, ast.Name) and queries.is_upper(func.name):
                    what = f"the trigger emission `{func.name}(...)`"
                else:
                    continue
                yield error(
                    "allium.invariant.sideEffect",
                    f"Invariant '{inv.name}' uses {what}; invariants must not have side effects.",
                    node.span,
                )
