"""The when-crossing pass: `when-set` / `when-clear` obligations.

A rule that moves an entity's status into a field's `when` set must set the
field; one that moves it out must clear it. Follows JUXT's algorithm: the
target state is the first `obj.field = state` in a top-level ensures, the
source states come from the first top-level requires, and the entity is
guessed by capitalising `obj` (`order` -> `Order`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from allium import ast
from allium.plan import patterns
from allium.plan.patterns import StateInfo
from allium.plan.model import Obligation, make_id


@dataclass(frozen=True)
class WhenField:
    entity: str
    field: str
    status_field: str
    states: tuple[str, ...]


@dataclass
class EntityInfo:
    when_fields: list[WhenField] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)  # every graph of the entity, as JUXT does
    states: list[str] = field(default_factory=list)


def _entity_infos(module: ast.Module) -> dict[str, EntityInfo]:
    # Declaration order, where JUXT iterates a HashMap: same ids, stable order.
    infos: dict[str, EntityInfo] = {}
    for decl in module.entities:
        if decl.kind not in ("entity", "external"):
            continue
        info = infos.setdefault(decl.name, EntityInfo())
        for f in decl.fields:
            cond = patterns.when_condition(f.when)
            if cond is not None:
                info.when_fields.append(WhenField(decl.name, f.name, cond[0], tuple(cond[1])))
        for graph in decl.transitions:
            for edge in graph.edges:
                info.edges.append((edge.source, edge.target))
            for state in [s for e in graph.edges for s in (e.source, e.target)] + list(graph.terminals):
                if state not in info.states:
                    info.states.append(state)
    return {name: info for name, info in infos.items() if info.when_fields}


def _source_states(rule: ast.RuleDecl) -> list[StateInfo]:
    first = next((c for c in rule.clauses if isinstance(c, ast.RequiresClause)), None)
    if first is None:
        return []
    return [s for cond in first.conditions for s in patterns.states_in(cond)]


def _target_state(rule: ast.RuleDecl) -> StateInfo | None:
    for clause in rule.clauses:
        if isinstance(clause, ast.EnsuresClause):
            for stmt in clause.body:
                if isinstance(stmt, ast.ExprStmt) and (found := patterns.eq_state(stmt.expr)) is not None:
                    return found
    return None


def when_crossings(module: ast.Module, component: str) -> list[Obligation]:
    infos = _entity_infos(module)
    if not infos:
        return []
    out: list[Obligation] = []
    for rule in module.rules:
        target = _target_state(rule)
        if target is None:
            continue
        sources = _source_states(rule)
        for entity, info in infos.items():
            if _matches(entity, info, target):
                out.extend(_crossings(rule, info, target, _for_entity(sources, entity, target[1]), component))
    return out


def _matches(entity: str, info: EntityInfo, target: StateInfo) -> bool:
    obj, _, value = target
    return patterns.capitalise(obj) == entity if obj else value in info.states


def _for_entity(sources: list[StateInfo], entity: str, status_field: str) -> list[str]:
    return [
        value for obj, fld, value in sources
        if fld == status_field and (not obj or patterns.capitalise(obj) == entity)
    ]


def _crossings(
    rule: ast.RuleDecl, info: EntityInfo, target: StateInfo, sources: list[str], component: str
) -> list[Obligation]:
    _, status_field, to = target
    out: list[Obligation] = []
    for wf in info.when_fields:
        if wf.status_field != status_field:
            continue
        entering = to in wf.states
        if not sources:
            # No source state known: conservatively require the set when some edge reaches the target.
            if entering and any(t == to for _, t in info.edges):
                out.append(_obligation("when_set", rule, wf, "unknown", to, component))
            continue
        done: set[str] = set()
        for src in sources:
            if (src, to) not in info.edges:
                continue
            leaving_from = src in wf.states
            kind = "when_set" if entering and not leaving_from else "when_clear" if leaving_from and not entering else None
            if kind is not None and kind not in done:
                done.add(kind)
                out.append(_obligation(kind, rule, wf, src, to, component))
    return out


def _obligation(kind: str, rule: ast.RuleDecl, wf: WhenField, src: str, to: str, component: str) -> Obligation:
    verb, edge = ("sets", "entering") if kind == "when_set" else ("clears", "leaving")
    path = f"from {src} to {to}" if src != "unknown" else f"to {to}"
    description = (
        f"Verify rule {rule.name} {verb} {wf.entity}.{wf.field} when transitioning {wf.status_field} "
        f"{path} ({edge} when set {{{', '.join(wf.states)}}})"
    )
    detail = {
        "rule": rule.name,
        "entity": wf.entity,
        "field": wf.field,
        "source_state": src,
        "target_state": to,
        "qualifying_states": list(wf.states),
    }
    return Obligation(
        make_id(kind, rule.name, wf.entity, wf.field), kind, description, f"rule {rule.name}", rule.span, component,
        detail=detail,
    )
