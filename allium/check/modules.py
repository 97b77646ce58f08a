"""Module-level hygiene: `use` paths, deferred hints, external entity sources."""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check import queries
from allium.check.context import CheckContext
from allium.diagnostics import Diagnostic, info, warning


def check_use_paths(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    for use in module.uses:
        if context.symbols.resolve_path(module.path, use.path) is None:
            alias = f" as {use.name}" if use.name else ""
            yield warning(
                "allium.use.unresolvedPath",
                f"`use \"{use.path}\"{alias}` does not resolve to a file in the checked set.",
                use.path_span or use.span,
            )


def check_deferred_hints(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    for decl in module.of_type(ast.DeferredDecl):
        if not (decl.hint or "").strip():
            yield warning(
                "allium.deferred.missingLocationHint",
                f"Deferred specification '{decl.name}' should include a location hint "
                "(a quoted path or URL, or a `-- see:` comment).",
                decl.span,
            )


def check_external_sources(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """An external entity in a module that imports nothing has no known governing spec."""
    if module.uses:
        return
    in_rules = {
        queries.bare(n.name) for rule in module.rules for n in context.nodes(rule) if isinstance(n, ast.Name)
    }
    for entity in module.of_type(ast.EntityDecl):
        if entity.kind != "external":
            continue
        make = info if entity.name in in_rules else warning
        yield make(
            "allium.externalEntity.missingSourceHint",
            f"External entity '{entity.name}' has no obvious governing specification import in this module.",
            entity.name_span or entity.span,
        )
