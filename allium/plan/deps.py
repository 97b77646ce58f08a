"""Rule dependency analysis: what a rule reads, writes, creates and emits.

Attached to every rule-derived obligation, in the shape of JUXT's
`dependencies` object (sorted lists, empty lists left out).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from allium import ast
from allium.plan import patterns


@dataclass(frozen=True)
class ModuleContext:
    entity_names: frozenset[str]
    deferred_names: frozenset[str]
    emitted: frozenset[str]  # trigger names some rule's ensures emits


def module_context(module: ast.Module) -> ModuleContext:
    entities = frozenset(
        d.name for d in module.entities if d.kind in ("entity", "external", "variant")
    )
    deferred = frozenset(d.name.rsplit(".", 1)[-1] for d in module.of_type(ast.DeferredDecl))
    emitted: set[str] = set()
    for rule in module.rules:
        for clause in rule.ensures:
            emitted.update(patterns.emitted_triggers(clause, set()))
    return ModuleContext(entities, deferred, frozenset(emitted))


def trigger_source(rule: ast.RuleDecl, ctx: ModuleContext) -> str:
    clause = next((c for c in rule.clauses if isinstance(c, ast.WhenClause)), None)
    return _classify(clause.trigger if clause else None, ctx)


def _classify(trigger: ast.Expr | None, ctx: ModuleContext) -> str:
    if trigger is None:
        return "external"
    if isinstance(trigger, ast.BinOp):
        if trigger.op in ("transitions_to", "becomes"):
            return "state_transition"
        if patterns.is_temporal(trigger):
            return "temporal"
        if trigger.op == "or":  # `when: A(x) or B(y)`: the first classifiable side wins
            left = _classify(trigger.left, ctx)
            return left if left != "external" else _classify(trigger.right, ctx)
    if patterns.is_creation_call(trigger):
        return "creation"
    if patterns.bare_call_name(trigger) in ctx.emitted:
        return "chained"
    return "external"


def _entity_refs(expr: ast.Expr, names: frozenset[str]) -> Iterator[str]:
    """Entity names an expression mentions, resolving `order.x` to `Order`."""
    skip: set[int] = set()
    for node in expr.walk():
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            skip.add(id(node.func))  # a trigger name, not an entity reference
        if isinstance(node, ast.Name) and id(node) not in skip and node.name in names:
            yield node.name
        elif isinstance(node, ast.Member) and isinstance(node.target, ast.Name):
            cap = patterns.capitalise(node.target.name)
            if cap in names:
                yield cap


def _written(expr: ast.Expr, names: frozenset[str]) -> str | None:
    if isinstance(expr, ast.BinOp) and expr.op in ("=", "transitions_to", "becomes"):
        left = expr.left
        if isinstance(left, ast.Member) and isinstance(left.target, ast.Name):
            for candidate in (left.target.name, patterns.capitalise(left.target.name)):
                if candidate in names:
                    return candidate
    return None


def _deferred_refs(expr: ast.Expr, names: frozenset[str]) -> Iterator[str]:
    for node in expr.walk():
        if isinstance(node, ast.Name) and node.name in names:
            yield node.name


def _clause_exprs(clause: ast.Clause) -> list[ast.Expr]:
    if isinstance(clause, ast.WhenClause):
        return [clause.trigger] if clause.trigger is not None else []
    if isinstance(clause, ast.RequiresClause):
        return list(clause.conditions)
    if isinstance(clause, ast.EnsuresClause):
        return list(patterns.stmt_exprs(clause.body))
    return []


def rule_dependencies(rule: ast.RuleDecl, ctx: ModuleContext) -> dict[str, object]:
    read: set[str] = set()
    written: set[str] = set()
    created: set[str] = set()
    removed: set[str] = set()
    deferred: set[str] = set()
    emissions: set[str] = set()
    for clause in rule.all_clauses():
        found = _clause_exprs(clause)
        for expr in found:
            deferred.update(_deferred_refs(expr, ctx.deferred_names))
        if isinstance(clause, (ast.WhenClause, ast.RequiresClause)):
            for expr in found:
                read.update(_entity_refs(expr, ctx.entity_names))
        elif isinstance(clause, ast.EnsuresClause):
            written.update(w for w in (_written(e, ctx.entity_names) for e in found) if w)
            for node in patterns.nodes_in(found):
                created.update(_some(patterns.created_entity(node)))
                removed.update(_some(patterns.removed_entity(node)))
            emissions.update(patterns.emitted_triggers(clause, ctx.entity_names))
    out: dict[str, object] = {}
    for key, values in (
        ("entities_read", read),
        ("entities_written", written),
        ("entities_created", created),
        ("entities_removed", removed),
        ("deferred_specs", deferred),
        ("trigger_emissions", emissions),
    ):
        if values:
            out[key] = sorted(values)
    out["trigger_source"] = trigger_source(rule, ctx)
    return out


def _some(value: str | None) -> Iterable[str]:
    return (value,) if value is not None else ()
