"""Declarations nothing refers to: entities, fields, values/enums, actors.

A reference anywhere in the check set counts (cross-module use is use), except
inside the declaration itself. Field use is name-based and deliberately
generous (member access, named arguments, bare names in derived values and
`where` filters): a field is only reported when its name occurs nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from allium import ast
from allium.check import queries
from allium.check.context import CheckContext
from allium.check.symbols import SymbolTable
from allium.diagnostics import Diagnostic, info, warning


@dataclass
class Usage:
    # bare name -> ids of the declarations mentioning it
    by_decl: dict[str, set[int]] = field(default_factory=dict)
    # names used as members, argument names, bare names or graph fields
    field_names: set[str] = field(default_factory=set)

    def mentioned_outside(self, name: str, decl: ast.Decl) -> bool:
        return bool(self.by_decl.get(name, set()) - {id(decl)})


_CACHE: dict[int, tuple[SymbolTable, Usage]] = {}


def usage_of(context: CheckContext) -> Usage:
    table = context.symbols
    cached = _CACHE.get(id(table))
    if cached is not None and cached[0] is table:
        return cached[1]
    usage = Usage()
    for syms in table.modules.values():
        for decl in syms.module.decls:
            _collect(decl, context.nodes(decl), usage)
    _CACHE.clear()
    _CACHE[id(table)] = (table, usage)
    return usage


def _mention(usage: Usage, name: str, decl: ast.Decl) -> None:
    bare = queries.bare(name)
    usage.by_decl.setdefault(bare, set()).add(id(decl))
    # `Users` is the collection of `User`; record the singular stems too.
    if bare.endswith("s"):
        for stem in (bare[:-1], bare[:-2], bare[:-3] + "y"):
            if stem:
                usage.by_decl.setdefault(stem, set()).add(id(decl))


def _collect(decl: ast.Decl, nodes: tuple[ast.Node, ...], usage: Usage) -> None:
    for node in nodes:
        if isinstance(node, ast.Name):
            _mention(usage, node.name, decl)
            usage.field_names.add(node.name)
        elif isinstance(node, ast.Member):
            usage.field_names.add(node.name)
        elif isinstance(node, ast.Arg) and node.name:
            usage.field_names.add(node.name)
        elif isinstance(node, ast.TransitionGraph):
            usage.field_names.add(node.field)
        elif isinstance(node, ast.ContractRef):
            _mention(usage, node.name, decl)
        elif isinstance(node, ast.Field) and node.owner:
            _mention(usage, node.owner, decl)
    if isinstance(decl, ast.EntityDecl) and decl.base:
        _mention(usage, decl.base, decl)
    elif isinstance(decl, ast.DefaultDecl):
        _mention(usage, decl.type, decl)
    elif isinstance(decl, ast.ActorDecl):
        for _, expr in decl.clauses:
            for name in queries.names_in(expr):
                _mention(usage, name.name, decl)
                usage.field_names.add(name.name)
    elif isinstance(decl, ast.DeferredDecl):
        # `deferred Order.fraud_check` mentions Order and its member.
        head, _, rest = decl.name.partition(".")
        _mention(usage, head, decl)
        usage.field_names.update(rest.split("."))


def check_unused_entities(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    usage = usage_of(context)
    for entity in module.of_type(ast.EntityDecl):
        if usage.mentioned_outside(entity.name, entity):
            continue
        if entity.kind == "value":
            yield warning(
                "allium.definition.unused",
                f"Value '{entity.name}' is declared but not referenced elsewhere.",
                entity.name_span or entity.span,
            )
        elif entity.kind != "variant":
            yield warning(
                "allium.entity.unused",
                f"Entity '{entity.name}' is declared but not referenced elsewhere in this specification.",
                entity.name_span or entity.span,
            )
    for enum in module.of_type(ast.EnumDecl):
        if not usage.mentioned_outside(enum.name, enum):
            yield warning(
                "allium.definition.unused",
                f"Enum '{enum.name}' is declared but not referenced elsewhere.",
                enum.name_span or enum.span,
            )


def check_unused_fields(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Fields of entities, external entities and variants, as JUXT checks.

    A value type's fields are not reported: a value is compared and passed
    whole (value equality), so a field nothing names still counts.
    """
    usage = usage_of(context)
    for entity in module.of_type(ast.EntityDecl):
        if entity.kind == "value":
            continue
        for f in entity.fields:
            if f.name not in usage.field_names:
                yield info(
                    "allium.field.unused",
                    f"Field '{entity.name}.{f.name}' is declared but not referenced elsewhere.",
                    f.span,
                )


def check_unused_actors(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    usage = usage_of(context)
    for actor in module.of_type(ast.ActorDecl):
        if not usage.mentioned_outside(actor.name, actor):
            yield info(
                "allium.actor.unused",
                f"Actor '{actor.name}' is not used by any surface.",
                actor.span,
            )
