"""Sum types: discriminators and variants (rules 15-19)."""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check import queries
from allium.check.context import CheckContext
from allium.check.effects import Effects, RuleWalker
from allium.check.symbols import SymbolTable
from allium.diagnostics import Diagnostic, error


def _variants_of(table: SymbolTable, base: ast.EntityDecl) -> dict[str, ast.EntityDecl]:
    out: dict[str, ast.EntityDecl] = {}
    for syms in table.modules.values():
        for entity in syms.entities.values():
            if entity.kind == "variant" and entity.base and queries.bare(entity.base) == base.name:
                out[entity.name] = entity
    return out


def discriminator(entity: ast.EntityDecl) -> ast.Field | None:
    """The field listing variant names (`kind: A | B`), if any."""
    for f in entity.fields:
        if f.kind in ("variants", "enum") and any(queries.is_upper(n) for n in queries.pipe_names(f.value)):
            return f
    return None


def check_discriminators(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    table = context.symbols
    for entity in module.of_type(ast.EntityDecl):
        f = discriminator(entity)
        if f is None:
            continue
        names = queries.pipe_names(f.value)
        lower = [n for n in names if not queries.is_upper(n)]
        if lower:
            yield error(
                "allium.sum.invalidDiscriminator",
                f"Discriminator '{entity.name}.{f.name}' mixes enum literals ({', '.join(lower)}) with "
                "variant names; a discriminator lists only capitalised variant names.",
                f.span,
            )
            continue
        variants = _variants_of(table, entity)
        if not variants:
            yield error(
                "allium.sum.v1InlineEnum",
                f"Field '{entity.name}.{f.name}' lists capitalised values but no `variant X : "
                f"{entity.name}` is declared; use a named enum or declare the variants.",
                f.span,
            )
            continue
        for name in names:
            if name not in variants:
                yield error(
                    "allium.sum.discriminatorUnknownVariant",
                    f"Discriminator '{entity.name}.{f.name}' names '{name}', but no `variant {name} : "
                    f"{entity.name}` is declared.",
                    f.span,
                )


def check_variant_listed(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rule 17: every variant appears in its base's discriminator."""
    table, syms = context.symbols, context.of(module)
    for variant in module.of_type(ast.EntityDecl):
        if variant.kind != "variant" or not variant.base:
            continue
        base = table.entity(syms, variant.base)
        f = discriminator(base) if base else None
        if base is not None and (f is None or variant.name not in queries.pipe_names(f.value)):
            yield error(
                "allium.sum.variantMissingInDiscriminator",
                f"Variant '{variant.name}' extends '{base.name}', but '{base.name}' has no "
                "discriminator field listing it.",
                variant.span,
            )


def _is_sum_base(table: SymbolTable, entity: ast.EntityDecl) -> bool:
    f = discriminator(entity)
    return f is not None and bool(_variants_of(table, entity))


def check_base_instantiation(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rule 19: a base entity with a discriminator is created via a variant."""
    table, syms = context.symbols, context.of(module)
    if not any(_is_sum_base(table, e) for s in table.modules.values() for e in s.entities.values()):
        return
    for rule in module.rules:
        for node in context.nodes(rule):
            if not isinstance(node, ast.Call):
                continue
            target = queries.created_target(node)
            entity = table.entity(syms, target) if target else None
            if entity is not None and _is_sum_base(table, entity):
                names = ", ".join(_variants_of(table, entity))
                yield error(
                    "allium.sum.baseInstantiation",
                    f"Rule '{rule.name}' creates '{entity.name}' directly; create one of its variants ({names}).",
                    node.span,
                )


def check_variant_field_access(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rule 18: variant-only fields are read only under a type guard on the discriminator."""
    table, syms = context.symbols, context.of(module)
    if not any(_is_sum_base(table, e) for s in table.modules.values() for e in s.entities.values()):
        return  # no sum types in the check set: nothing to guard
    for rule in module.rules:
        walker = RuleWalker(table, syms, rule, Effects())
        walker.run()
        guarded = _guarded_variants(context.nodes(rule))
        for node in context.nodes(rule):
            if not (isinstance(node, ast.Member) and isinstance(node.target, ast.Name)):
                continue
            base = walker.env.get(node.target.name)
            if base is None or base.kind == "variant" or not _is_sum_base(table, base):
                continue
            if base.field(node.name) is not None:
                continue
            owners = [v for v in _variants_of(table, base).values() if v.field(node.name) is not None]
            if owners and not any(v.name in guarded.get(node.target.name, ()) for v in owners):
                yield error(
                    "allium.sum.unguardedVariantFieldAccess",
                    f"Rule '{rule.name}' reads '{node.target.name}.{node.name}', a field of variant "
                    f"{' / '.join(v.name for v in owners)}, outside a type guard "
                    f"(e.g. `requires: {node.target.name}.{getattr(discriminator(base), 'name', 'kind')} = {owners[0].name}`).",
                    node.span,
                )


def _guarded_variants(nodes: tuple[ast.Node, ...]) -> dict[str, set[str]]:
    """binding -> variant names some requires/if condition compares its discriminator to."""
    out: dict[str, set[str]] = {}
    for node in nodes:
        if isinstance(node, ast.BinOp) and node.op in ("=", "in") and isinstance(node.left, ast.Member):
            if isinstance(node.left.target, ast.Name):
                values = node.right.items if isinstance(node.right, ast.SetLiteral) else (node.right,)
                for v in values:
                    if isinstance(v, ast.Name) and queries.is_upper(v.name):
                        out.setdefault(node.left.target.name, set()).add(v.name)
    return out
