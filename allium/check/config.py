"""Config blocks: references resolve (rule 27) and keys are unique (rule 26)."""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check.context import CheckContext
from allium.diagnostics import Diagnostic, error, warning


def check_config_references(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    table, syms = context.symbols, context.of(module)
    for decl in module.decls:
        for node in context.nodes(decl):
            if not (isinstance(node, ast.Member) and isinstance(node.target, ast.Name)):
                continue
            head = node.target.name
            if head == "config":
                target = syms
            elif head.endswith("/config"):
                imported = table.imported(syms, head.split("/", 1)[0])
                if imported is None:
                    continue  # alias problems belong to the reference pass
                target = imported
            else:
                continue
            if node.name not in target.config:
                yield warning(
                    "allium.config.undefinedReference",
                    f"'{head}.{node.name}' is not a declared config parameter.",
                    node.span,
                )


def check_config_keys(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    for decl in module.of_type(ast.ConfigDecl):
        seen: set[str] = set()
        for param in decl.params:
            if param.name in seen:
                yield error(
                    "allium.config.duplicateKey",
                    f"Config parameter '{param.name}' is declared more than once.",
                    param.span,
                )
            seen.add(param.name)
