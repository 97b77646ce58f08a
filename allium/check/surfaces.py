"""Surfaces: bindings used (rule 32) and `related:` targets defined (rule 31)."""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check import queries
from allium.check.context import CheckContext
from allium.diagnostics import Diagnostic, error, warning


def _used_names(surface: ast.SurfaceDecl, skip: ast.SurfaceMember) -> set[str]:
    out: set[str] = set()
    for member in surface.members:
        if member is not skip:
            out.update(n.name for n in queries.names_in(member))
    return out


def check_surface_bindings(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    for surface in module.of_type(ast.SurfaceDecl):
        has_provides = any(
            isinstance(m, ast.SurfaceBlock) and m.kind == "provides" for m in surface.all_members()
        )
        for member in surface.members:
            if isinstance(member, ast.Context):
                binding, kind = member.binding, "context"
            elif isinstance(member, ast.Facing) and has_provides and member.binding:
                binding, kind = member.binding, "facing"
            else:
                continue
            if binding == "_" or binding in _used_names(surface, member):
                continue
            yield warning(
                "allium.surface.unusedBinding",
                f"Surface '{surface.name}' binds {kind} '{binding}' but never uses it.",
                member.binding_span or member.span,
            )


def check_related_surfaces(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    table, syms = context.symbols, context.of(module)
    for surface in module.of_type(ast.SurfaceDecl):
        for item in queries.surface_items(surface, "related"):
            expr = item.expr.func if isinstance(item.expr, ast.Call) else item.expr
            if not isinstance(expr, ast.Name):
                continue
            target, bare, resolvable = table.split(syms, expr.name)
            if resolvable and (target is None or bare not in target.surfaces):
                yield error(
                    "allium.surface.relatedUndefined",
                    f"Surface '{surface.name}' relates to '{expr.name}', which is not a declared surface.",
                    expr.span,
                )
