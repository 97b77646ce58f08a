"""Qualified references `alias/Name`: the alias must be imported, and when the
imported module is part of the check set it must declare (or, for triggers,
handle or emit) the name."""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check.context import CheckContext
from allium.diagnostics import Diagnostic, error, warning


def check_qualified_references(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    table, syms = context.symbols, context.of(module)
    seen: set[tuple[int, str]] = set()
    for decl in module.decls:
        if isinstance(decl, ast.UseDecl):
            continue
        for name in context.nodes(decl):
            if not isinstance(name, ast.Name) or "/" not in name.name or (name.span.start.offset, name.name) in seen:
                continue
            seen.add((name.span.start.offset, name.name))
            alias, bare = name.name.split("/", 1)
            if alias not in syms.imports:
                yield error(
                    "allium.reference.undefinedImportedAlias",
                    f"Reference '{name.name}' uses alias '{alias}', which no `use` declares.",
                    name.span,
                )
                continue
            target = table.imported(syms, alias)
            if target is not None and not target.declares_any(bare):
                yield warning(
                    "allium.reference.unknownName",
                    f"Reference '{name.name}' names '{bare}', which imported module '{alias}' does not define.",
                    name.span,
                )
