"""Per-declaration obligation emitters, walked in source order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from allium import ast
from allium.plan import patterns
from allium.plan.crossing import when_crossings
from allium.plan.deps import ModuleContext, module_context
from allium.plan.emit import Emitter
from allium.plan.model import Obligation
from allium.plan.rules import rule_obligations
from allium.source import SourceFile


def derive_obligations(module: ast.Module, source: str | None = None) -> list[Obligation]:
    """Every obligation for one module, in source order, then the when-crossing pass.

    `source` is the module's text, used for invariant `expression`s; when
    omitted it is read from `module.path` if that file exists.
    """
    em = Emitter(Path(module.path).stem, source if source is not None else _read(module.path), [])
    ctx = module_context(module)
    for decl in module.decls:
        handler = _handler(decl)
        if handler is not None:
            em.construct = _construct(decl)
            handler(em, decl, ctx)
    em.out.extend(when_crossings(module, em.component))
    return dedupe(em.out)


def plan_for(modules: Sequence[ast.Module]) -> list[Obligation]:
    """Obligations for several modules, in the order given (sort paths first for determinism)."""
    return [o for m in modules for o in derive_obligations(m)]


def dedupe(obligations: list[Obligation]) -> list[Obligation]:
    """Make ids unique within a module: a repeat (only possible for duplicate
    declarations, which the checker reports) gets `~2`, `~3`, ..."""
    seen: dict[str, int] = {}
    out: list[Obligation] = []
    for ob in obligations:
        n = seen.get(ob.id, 0) + 1
        seen[ob.id] = n
        if n > 1:
            ob = Obligation(**{**_fields(ob), "id": f"{ob.id}~{n}"})
        out.append(ob)
    return out


def _fields(ob: Obligation) -> dict[str, Any]:
    return {k: getattr(ob, k) for k in Obligation.__dataclass_fields__}


def _read(path: str) -> str | None:
    try:
        return SourceFile.read(path).text if Path(path).is_file() else None
    except OSError:
        return None


def _construct(decl: ast.Decl) -> str:
    if isinstance(decl, ast.EntityDecl):
        return {"external": "external entity"}.get(decl.kind, decl.kind) + f" {decl.name}"
    if isinstance(decl, ast.ConfigDecl):
        return decl.name
    keyword = {ast.EnumDecl: "enum", ast.RuleDecl: "rule", ast.SurfaceDecl: "surface",
               ast.ContractDecl: "contract", ast.InvariantDecl: "invariant"}[type(decl)]
    return f"{keyword} {decl.name}"


Handler = Callable[[Emitter, Any, ModuleContext], None]


def _handler(decl: ast.Decl) -> Handler | None:
    if isinstance(decl, ast.EntityDecl):
        return {"value": _value, "variant": _variant}.get(decl.kind, _entity)
    handlers: dict[type, Handler] = {
        ast.EnumDecl: _enum,
        ast.ConfigDecl: _config,
        ast.RuleDecl: rule_obligations,
        ast.SurfaceDecl: _surface,
        ast.ContractDecl: _contract,
        ast.InvariantDecl: _invariant,
    }
    return handlers.get(type(decl))


# ---------------------------------------------------------------- entities


def _entity(em: Emitter, decl: ast.EntityDecl, ctx: ModuleContext) -> None:
    # The AST keeps fields, graphs and invariants apart; JUXT emits them in
    # the order they are written, so merge them back by offset.
    items: list[ast.Node] = [*decl.fields, *decl.transitions, *decl.invariants]
    for item in sorted(items, key=lambda n: n.span.start.offset):
        if isinstance(item, ast.Field):
            _when_presence(em, decl.name, item)
        elif isinstance(item, ast.TransitionGraph):
            _transitions(em, decl.name, item)
        elif isinstance(item, ast.InvariantDecl):
            _entity_invariant(em, decl.name, item)
    _field_obligations(em, decl)


def _when_presence(em: Emitter, entity: str, f: ast.Field) -> None:
    cond = patterns.when_condition(f.when)
    if cond is None:
        return
    status, states = cond
    em.add(
        "when_presence", (entity, f.name),
        f"Verify {entity}.{f.name} is present when {status} in {{{', '.join(states)}}} and absent otherwise",
        f.span,
        detail={"entity": entity, "field": f.name, "status_field": status, "qualifying_states": states},
    )


def edge_parts(entity: str, graph: ast.TransitionGraph, edge: ast.Edge) -> tuple[str, ...]:
    # JUXT leaves the field out, so two graphs on one entity can collide;
    # the field is kept for every graph except `status`, the usual one.
    if graph.field == "status":
        return entity, edge.source, edge.target
    return entity, graph.field, edge.source, edge.target


def _transitions(em: Emitter, entity: str, graph: ast.TransitionGraph) -> None:
    where = f"{entity}.{graph.field}"
    for edge in graph.edges:
        em.add(
            "transition_edge", edge_parts(entity, graph, edge),
            f"Verify transition {edge.source} -> {edge.target} on {where} is reachable via a witnessing rule",
            edge.span,
            detail={"entity": entity, "field": graph.field, "from": edge.source, "to": edge.target},
        )
    em.add("transition_rejected", (entity, graph.field),
           f"Verify undeclared transitions on {where} are rejected", graph.span)
    if graph.terminals:
        em.add(
            "transition_terminal", (entity, graph.field),
            f"Verify terminal states on {where} have no outbound transitions", graph.span,
            detail={"entity": entity, "field": graph.field, "states": list(graph.terminals)},
        )


def _entity_invariant(em: Emitter, entity: str, inv: ast.InvariantDecl) -> None:
    em.add(
        "invariant", (entity, inv.name),
        f"Verify invariant {inv.name} holds after any field mutation on {entity}",
        inv.span, expression=_body_text(em, inv),
    )


def _body_text(em: Emitter, inv: ast.InvariantDecl) -> str | None:
    return em.source(inv.body[0].span, inv.body[-1].span) if inv.body else None


def _stored(decl: ast.EntityDecl) -> list[ast.Field]:
    # Parameterised derived values are functions, not fields an instance
    # carries; `Other.name:` members belong to Other.
    return [f for f in decl.fields if not f.params and f.owner is None]


def _is_derived(f: ast.Field) -> bool:
    # A bare lowercase name (`status: done`) is a one-value enum, not a computation.
    return f.kind == "derived" and not isinstance(f.value, ast.Name)


def _field_obligations(em: Emitter, decl: ast.EntityDecl) -> None:
    name = decl.name
    stored = _stored(decl)
    if stored:
        em.add("entity_fields", (name,), f"Verify all declared fields on {name} are present with correct types",
               decl.span, detail={"fields": [f.name for f in stored]})
    for f in stored:
        if isinstance(f.value, ast.Unary) and f.value.op == "?":
            em.add("entity_optional", (name, f.name),
                   f"Verify optional field {name}.{f.name} accepts null and non-null values", f.span)
    kinds = (
        ("entity_relationship", lambda f: f.kind == "relationship",
         "Verify relationship {} navigates to the correct related entities"),
        ("projection", lambda f: f.kind == "projection", "Verify projection {} filters correctly"),
        ("derived", _is_derived, "Verify derived value {} computes correctly"),
    )
    for category, wanted, text in kinds:
        for f in decl.fields:
            if wanted(f):
                owner = f.owner or name
                em.add(category, (owner, f.name), text.format(f"{owner}.{f.name}"), f.span)


def _value(em: Emitter, decl: ast.EntityDecl, ctx: ModuleContext) -> None:
    em.add("value_equality", (decl.name,), f"Verify value type {decl.name} has structural equality", decl.span)
    stored = _stored(decl)
    if stored:
        em.add("entity_fields", (decl.name,),
               f"Verify all declared fields on {decl.name} are present with correct types",
               decl.span, detail={"fields": [f.name for f in stored]})


def _variant(em: Emitter, decl: ast.EntityDecl, ctx: ModuleContext) -> None:
    em.add("sum_type_variant", (decl.name,),
           f"Verify variant {decl.name} has its specific fields accessible within a type guard", decl.span)


def _enum(em: Emitter, decl: ast.EnumDecl, ctx: ModuleContext) -> None:
    em.add("enum_comparable", (decl.name,), f"Verify fields typed with enum {decl.name} are comparable", decl.span)


# ---------------------------------------------------------------- config, contracts, invariants


def _config(em: Emitter, decl: ast.ConfigDecl, ctx: ModuleContext) -> None:
    if decl.name != "config":
        _config_overrides(em, decl)
        return
    for p in decl.params:
        if p.default is not None:
            em.add("config_default", (p.name,), f"Verify config parameter {p.name} has its declared default", p.span)
        else:
            em.add("config_required", (p.name,),
                   f"Verify omitting mandatory config parameter {p.name} is an error", p.span)


def _config_overrides(em: Emitter, decl: ast.ConfigDecl) -> None:
    # `alias/config { p: v }` sets an imported module's parameters (every
    # entry is a value, even one that looks like a type). The alias keeps
    # the ids apart from a local parameter of the same name.
    alias = decl.name[: -len("/config")]
    for p in decl.params:
        em.add("config_default", (f"{alias}/{p.name}",),
               f"Verify config parameter {alias}/{p.name} takes the overriding value", p.span)


def _contract(em: Emitter, decl: ast.ContractDecl, ctx: ModuleContext) -> None:
    for sig in decl.signatures:
        em.add("contract_signature", (decl.name, sig.name),
               f"Verify implementation satisfies contract {decl.name}.{sig.name}", sig.span)


def _invariant(em: Emitter, decl: ast.InvariantDecl, ctx: ModuleContext) -> None:
    em.add(
        "invariant", (decl.name,),
        f"Verify invariant {decl.name} holds after every state-changing rule that touches constrained entities",
        decl.span, expression=_body_text(em, decl),
    )


# ---------------------------------------------------------------- surfaces


def _surface(em: Emitter, decl: ast.SurfaceDecl, ctx: ModuleContext) -> None:
    name = decl.name
    em.add("surface_actor", (name,), f"Verify surface {name} is accessible only to the specified actor", decl.span)
    counts = {"exposes": 0, "provides": 0}
    for member in decl.all_members():
        if not isinstance(member, ast.SurfaceBlock) or member.kind not in counts:
            continue
        counts[member.kind] += 1
        # JUXT repeats the bare id for every clause; later clauses get an ordinal.
        parts = (name,) if counts[member.kind] == 1 else (name, counts[member.kind])
        if member.kind == "exposes":
            items = [n for item in member.items for n in patterns.exposed_names(item)]
            em.add("surface_exposure", parts, f"Verify each exposed item on {name} is accessible", member.span,
                   detail={"surface": name, "items": items} if items else None)
        else:
            em.add("surface_provides", parts,
                   f"Verify provided operations on {name} appear/hide based on when conditions", member.span)
