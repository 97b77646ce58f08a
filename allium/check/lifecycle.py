"""Status fields and transition graphs (rules 7-9, 7a-7d) and `.created()` status.

Each pass reports on the module that declares the entity (or, for rule
effects, the module holding the rule), so a cross-module check set reports
every finding once.
"""

from __future__ import annotations

from collections.abc import Iterator

from allium import ast
from allium.check import scope
from allium.check.context import CheckContext
from allium.check.effects import Effects, StatusField, effects_of, field_values
from allium.diagnostics import Diagnostic, error, warning
from allium.source import Span

# JUXT's name-based guess for terminal states when there is no graph.
LIKELY_TERMINAL = frozenset(
    {"completed", "cancelled", "canceled", "expired", "closed", "deleted", "archived", "failed", "rejected", "done"}
)


def _local_fields(module: ast.Module, effects: Effects) -> Iterator[StatusField]:
    for sf in effects.status_fields.values():
        if sf.syms.module is module:
            yield sf


def _edges(graph: ast.TransitionGraph) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in graph.edges}


def check_undeclared_transitions(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """7a: a rule may only produce transitions the graph declares (JUXT: warning)."""
    effects = effects_of(context.symbols)
    for a in effects.assignments:
        if a.syms.module is not module or a.sources is None:
            continue
        sf = effects.status_fields[(id(a.entity), a.field)]
        if sf.graph is None:
            continue
        edges = _edges(sf.graph)
        for source in sorted(a.sources):
            if source != a.target and source in sf.values and (source, a.target) not in edges:
                yield warning(
                    "allium.status.undeclaredTransition",
                    f"Rule '{a.rule.name}' produces transition '{source}' → '{a.target}' on entity "
                    f"'{a.entity.name}', but this edge is not in the declared transition graph.",
                    a.span,
                )


def check_undefined_status_values(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rule 9 and `.created(status: x)`: only declared values may be assigned."""
    effects = effects_of(context.symbols)
    for a in effects.assignments:
        sf = effects.status_fields[(id(a.entity), a.field)]
        if a.syms.module is module and a.target not in sf.values:
            yield error(
                "allium.status.undefinedValue",
                f"Rule '{a.rule.name}' sets '{a.entity.name}.{a.field}' to '{a.target}', which is not one of its values.",
                a.span,
            )
    for c in effects.creations:
        if c.syms.module is not module:
            continue
        for fname, value in c.args.items():
            field = effects.status_fields.get((id(c.entity), fname))
            if field and isinstance(value, ast.Name) and value.name[:1].islower() and value.name not in field.values:
                if _is_literal_in_rule(value.name, c.rule):
                    yield error(
                        "allium.created.invalidStatus",
                        f"'{c.entity.name}.created' sets {fname} to '{value.name}', which is not a declared value.",
                        value.span,
                    )


def _is_literal_in_rule(name: str, rule: ast.RuleDecl) -> bool:
    bound = scope.trigger_bindings(rule.when)
    lets = {c.name for c in rule.all_clauses() if isinstance(c, ast.LetClause)}
    return name not in bound and name not in lets


def check_created_status(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """`.created()` on an entity with a transition graph must set the initial state."""
    effects = effects_of(context.symbols)
    for c in effects.creations:
        if c.syms.module is not module:
            continue
        for graph in c.entity.transitions:
            if graph.field not in c.args:
                yield warning(
                    "allium.created.missingStatus",
                    f"'{c.entity.name}.created(...)' does not set '{graph.field}', but the entity "
                    "has a transition graph for it; the initial state must be explicit.",
                    c.span,
                )


def _assigned(effects: Effects, sf: StatusField) -> set[str]:
    out = {a.target for a in effects.assignments_to(sf)}
    for c in effects.creations_of(sf.entity):
        value = c.args.get(sf.field.name)
        if isinstance(value, ast.Name):
            out.add(value.name)
    return out


def _creation_is_dynamic(effects: Effects, sf: StatusField) -> bool:
    for c in effects.creations_of(sf.entity):
        value = c.args.get(sf.field.name)
        if value is not None and not isinstance(value, ast.Name):
            return True
    return False


def _exits(effects: Effects, sf: StatusField) -> set[str]:
    """States some rule moves away from (an unguarded rule may leave any state)."""
    out: set[str] = set()
    for a in effects.assignments_to(sf):
        sources = a.sources if a.sources is not None else frozenset(sf.values)
        out |= {s for s in sources if s != a.target}
    return out


def check_status_reachability(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """Rules 7/8: every value is assigned somewhere; every non-terminal value has an exit."""
    effects = effects_of(context.symbols)
    for sf in _local_fields(module, effects):
        key = (id(sf.entity), sf.field.name)
        if key in effects.dynamic or _creation_is_dynamic(effects, sf):
            continue  # assigned from a variable: any value may be reached
        assigned, exits = _assigned(effects, sf), _exits(effects, sf)
        terminals = set(sf.graph.terminals) if sf.graph else LIKELY_TERMINAL
        for value in sf.values:
            where = f"Status '{value}' in entity '{sf.entity.name}'"
            if value not in assigned:
                yield warning(
                    "allium.status.unreachableValue",
                    f"{where} is never assigned by any rule ensures clause.",
                    _value_span(sf.field, value),
                )
            if value not in terminals and value not in exits:
                yield warning(
                    "allium.status.noExit",
                    f"{where} has no observed transition to a different status.",
                    _value_span(sf.field, value),
                )


def _value_span(field: ast.Field, value: str) -> Span:
    """Where `value` is written in the field (`status: a | b`), else its type (a named enum)."""
    for node in field.value.walk():
        if isinstance(node, ast.Name) and node.name == value:
            return node.span
    return field.value.span


def check_graph_structure(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """7b/7d: graph states and field values correspond; non-terminals have out-edges."""
    table, syms = context.symbols, context.of(module)
    for entity in module.of_type(ast.EntityDecl):
        for graph in entity.transitions:
            f = entity.field(graph.field)
            if f is None:
                yield error(
                    "allium.transition.undefinedField",
                    f"Entity '{entity.name}' declares transitions for '{graph.field}', which is not a field.",
                    graph.span,
                )
                continue
            values = field_values(table, syms, f)
            if values is None:
                continue
            yield from _graph_correspondence(entity, graph, values)


def _graph_correspondence(
    entity: ast.EntityDecl, graph: ast.TransitionGraph, values: tuple[str, ...]
) -> Iterator[Diagnostic]:
    where = f"{entity.name}.{graph.field}"
    in_graph = {e.source for e in graph.edges} | {e.target for e in graph.edges} | set(graph.terminals)
    for value in values:
        if value not in in_graph:
            yield error(
                "allium.transition.unlistedValue",
                f"Value '{value}' of {where} appears in no edge and is not terminal.",
                graph.span,
            )
    for edge in graph.edges:
        for state in (edge.source, edge.target):
            if state not in values:
                yield error(
                    "allium.transition.undefinedState",
                    f"Transition graph for {where} uses '{state}', which is not a value of the field.",
                    edge.span,
                )
    for state in graph.terminals:
        if state not in values:
            yield error(
                "allium.transition.undefinedState",
                f"Terminal state '{state}' of {where} is not a value of the field.",
                graph.span,
            )
    sources = {e.source for e in graph.edges}
    for value in values:
        if value in in_graph and value not in sources and value not in graph.terminals:
            yield error(
                "allium.transition.noOutboundEdge",
                f"State '{value}' of {where} is not terminal but has no outbound edge.",
                graph.span,
            )
    for edge in graph.edges:
        if edge.source in graph.terminals:
            yield error(
                "allium.transition.terminalHasExit",
                f"Terminal state '{edge.source}' of {where} has an outbound edge to '{edge.target}'.",
                edge.span,
            )


def check_witnessed_edges(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """7c: each declared edge is produced by at least one rule."""
    effects = effects_of(context.symbols)
    for sf in _local_fields(module, effects):
        key = (id(sf.entity), sf.field.name)
        if sf.graph is None or key in effects.dynamic:
            continue
        witnessed: set[tuple[str, str]] = set()
        for a in effects.assignments_to(sf):
            sources = a.sources if a.sources is not None else frozenset(sf.values)
            witnessed |= {(s, a.target) for s in sources}
        for edge in sf.graph.edges:
            if (edge.source, edge.target) not in witnessed:
                yield warning(
                    "allium.transition.unwitnessedEdge",
                    f"No rule produces the transition '{edge.source}' → '{edge.target}' on "
                    f"{sf.entity.name}.{sf.field.name}.",
                    edge.span,
                )
