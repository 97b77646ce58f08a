"""What rules do to lifecycle fields: status assignments and entity creations.

Computed once per check set (every module's rules, since a rule in one module
may move an entity declared in another) and shared by the lifecycle passes.
Binding types come from the trigger, typed parameters, `let`/`for` sources,
`given` and defaults; an untyped parameter falls back to its name (`order` ->
`Order`) or to the only entity whose field can hold the assigned value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from allium import ast
from allium.check import queries, scope
from allium.check.symbols import ModuleSymbols, SymbolTable
from allium.source import Span


@dataclass(frozen=True)
class StatusField:
    entity: ast.EntityDecl
    field: ast.Field
    values: tuple[str, ...]
    graph: ast.TransitionGraph | None
    syms: ModuleSymbols


@dataclass(frozen=True)
class Assignment:
    rule: ast.RuleDecl
    entity: ast.EntityDecl
    field: str
    target: str
    sources: frozenset[str] | None  # None: no guard narrows the source state
    obj: tuple[str, ...]  # the assigned object's path, e.g. ('order',)
    stmts: tuple[ast.Stmt, ...]  # the statements the assignment sits among
    span: Span
    syms: ModuleSymbols


@dataclass(frozen=True)
class Creation:
    rule: ast.RuleDecl
    entity: ast.EntityDecl
    args: dict[str, ast.Expr]
    span: Span
    syms: ModuleSymbols


@dataclass
class Effects:
    status_fields: dict[tuple[int, str], StatusField] = field(default_factory=dict)
    assignments: list[Assignment] = field(default_factory=list)
    creations: list[Creation] = field(default_factory=list)
    # (entity id, field) assigned from a non-literal somewhere: reachability unknown
    dynamic: set[tuple[int, str]] = field(default_factory=set)
    # Indexes for RuleWalker._guess, so guessing stays constant-time per assignment
    # (a scan of every status field per rule made checking quadratic in spec size).
    _by_name: dict[tuple[str, str], ast.EntityDecl] | None = None
    _guesses: dict[tuple[str, frozenset[str]], ast.EntityDecl | None] = field(default_factory=dict)

    _assigned: dict[tuple[int, str], list[Assignment]] | None = None
    _created: dict[int, list[Creation]] | None = None

    def assignments_to(self, sf: StatusField) -> list[Assignment]:
        """The assignments to one status field (indexed: a scan per field was quadratic)."""
        if self._assigned is None:
            self._assigned = {}
            for a in self.assignments:
                self._assigned.setdefault((id(a.entity), a.field), []).append(a)
        return self._assigned.get((id(sf.entity), sf.field.name), [])

    def creations_of(self, entity: ast.EntityDecl) -> list[Creation]:
        if self._created is None:
            self._created = {}
            for c in self.creations:
                self._created.setdefault(id(c.entity), []).append(c)
        return self._created.get(id(entity), [])

    def status_entity_named(self, name: str, fname: str) -> ast.EntityDecl | None:
        if self._by_name is None:
            self._by_name = {}
            for sf in self.status_fields.values():
                self._by_name.setdefault((sf.entity.name, sf.field.name), sf.entity)
        return self._by_name.get((name, fname))

    def only_entity_holding(self, fname: str, wanted: frozenset[str]) -> ast.EntityDecl | None:
        """The one entity whose status field ``fname`` can hold every value in ``wanted``, if just one."""
        key = (fname, wanted)
        if key not in self._guesses:
            candidates = [sf.entity for sf in self.status_fields.values()
                          if sf.field.name == fname and wanted <= set(sf.values)]
            self._guesses[key] = candidates[0] if len(candidates) == 1 else None
        return self._guesses[key]


_CACHE: dict[int, tuple[Any, Effects]] = {}


def effects_of(table: SymbolTable) -> Effects:
    cached = _CACHE.get(id(table))
    if cached is not None and cached[0] is table:
        return cached[1]
    result = _build(table)
    _CACHE.clear()  # one check set at a time; keeps memory flat across test runs
    _CACHE[id(table)] = (table, result)
    return result


def field_values(table: SymbolTable, syms: ModuleSymbols, f: ast.Field) -> tuple[str, ...] | None:
    """The values an enum-like field can hold (inline or a named enum), else None."""
    if f.kind == "enum":
        return tuple(queries.pipe_names(f.value))
    name = queries.type_name(f.value) if f.kind == "type" else None
    if name is None:
        return None
    target, bare, _ = table.split(syms, name)
    if target is not None and bare in target.enums:
        return target.enums[bare].values
    return None


def _status_fields(table: SymbolTable) -> dict[tuple[int, str], StatusField]:
    out: dict[tuple[int, str], StatusField] = {}
    for syms in table.modules.values():
        for entity in syms.entities.values():
            graphs = {g.field: g for g in entity.transitions}
            for f in entity.fields:
                values = field_values(table, syms, f)
                if values is None:
                    continue
                graph = graphs.get(f.name)
                # Without a graph only `status` is treated as a state machine (as JUXT).
                lowercase = all(v[:1].islower() for v in values)
                if entity.kind == "value":
                    continue  # values are immutable: no lifecycle
                inline_status = f.kind == "enum" and f.name == "status" and len(values) >= 2
                if graph is not None or (inline_status and lowercase):
                    out[(id(entity), f.name)] = StatusField(entity, f, values, graph, syms)
    return out


def _build(table: SymbolTable) -> Effects:
    effects = Effects(_status_fields(table))
    for syms in table.modules.values():
        for rule in syms.rules.values():
            RuleWalker(table, syms, rule, effects).run()
    return effects


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


class RuleWalker:
    """Walks one rule, inferring binding types (`env`) and recording its effects."""

    def __init__(self, table: SymbolTable, syms: ModuleSymbols, rule: ast.RuleDecl, effects: Effects):
        self.table, self.syms, self.rule, self.effects = table, syms, rule, effects
        self.env: dict[str, ast.EntityDecl | None] = {}
        self.bound: set[str] = set(syms.given) | set(syms.defaults)

    # ---- binding types

    def run(self) -> None:
        for name, binding in self.syms.given.items():
            self.env[name] = self._entity(queries.type_name(binding.type))
        for name, default in self.syms.defaults.items():
            self.env[name] = self._entity(default.type)
        when = self.rule.when
        guards: dict[tuple[tuple[str, ...], str], frozenset[str]] = {}
        if when is not None:
            self.bound |= scope.trigger_bindings(when)
            self._bind_trigger(when, guards)
        self._clauses(self.rule.clauses, guards)

    def _entity(self, name: str | None) -> ast.EntityDecl | None:
        return self.table.entity(self.syms, name) if name else None

    def _bind_trigger(self, when: ast.WhenClause, guards: dict) -> None:
        trigger = when.trigger
        for call in queries.trigger_calls(trigger):
            for arg in call.args:
                if arg.name is not None:
                    self.env[arg.name] = self._entity(queries.type_name(arg.value))
        if trigger is None or when.binding is None:
            return
        subject = trigger.left if isinstance(trigger, ast.BinOp) else trigger
        chain = queries.member_chain(subject) if isinstance(subject, ast.Expr) else None
        if chain is None:
            return
        entity = self._entity(chain[0]) if queries.is_upper(chain[0]) else None
        self.env[when.binding] = entity
        # `x: E.status becomes v` fires with x already in state v.
        if (
            isinstance(trigger, ast.BinOp)
            and trigger.op in ("becomes", "transitions_to")
            and len(chain[1]) == 1
            and isinstance(trigger.right, ast.Name)
        ):
            guards[((when.binding,), chain[1][0])] = frozenset({trigger.right.name})

    def type_of(self, expr: ast.Expr) -> ast.EntityDecl | None:
        if isinstance(expr, ast.Name):
            if expr.name in self.env:
                return self.env[expr.name]
            return self._collection(expr.name)
        if isinstance(expr, ast.Member):
            owner = self.type_of(expr.target)
            if owner is None:
                return None
            f = owner.field(expr.name)
            return self._field_type(owner, f) if f else None
        if isinstance(expr, ast.Lookup) and isinstance(expr.entity, ast.Name):
            return self._entity(expr.entity.name)
        if isinstance(expr, ast.BinOp) and expr.op == "where":
            return self.type_of(expr.left)
        if isinstance(expr, ast.Call):
            created = queries.created_target(expr)
            return self._entity(created) if created else None
        return None

    def _collection(self, name: str) -> ast.EntityDecl | None:
        if not queries.is_upper(name):
            return None
        for stem in (name, name[:-1], name[:-2], name[:-3] + "y"):
            found = self._entity(stem) if stem else None
            if found is not None:
                return found
        return None

    def _field_type(self, owner: ast.EntityDecl, f: ast.Field) -> ast.EntityDecl | None:
        owner_syms = self.table.owner_of(owner) or self.syms
        if f.kind == "type":
            name = queries.type_name(f.value)
        elif f.kind == "relationship" and isinstance(f.value, ast.BinOp):
            name = queries.type_name(f.value.left)
        else:
            return None
        return self.table.entity(owner_syms, name) if name else None

    # ---- clauses

    def _clauses(self, clauses: tuple[ast.Clause, ...], guards: dict) -> None:
        guards = dict(guards)
        for clause in clauses:
            if isinstance(clause, ast.LetClause):
                self.bound.add(clause.name)
                self.env[clause.name] = self.type_of(clause.value)
            elif isinstance(clause, ast.RequiresClause):
                for condition in clause.conditions:
                    _collect_guards(condition, guards)
        for clause in clauses:
            if isinstance(clause, ast.EnsuresClause):
                self._stmts(clause.body, guards)
            elif isinstance(clause, ast.ForClause):
                self._bind_for(clause.names, clause.source)
                self._clauses(clause.clauses, guards)
            elif isinstance(clause, ast.IfClause):
                for branch in clause.branches:
                    inner = dict(guards)
                    if branch.condition is not None:
                        _collect_guards(branch.condition, inner)
                    self._clauses(branch.clauses, inner)

    def _bind_for(self, names: tuple[str, ...], source: ast.Expr) -> None:
        self.bound.update(names)
        if len(names) == 1:
            self.env[names[0]] = self.type_of(source)

    def _stmts(self, stmts: tuple[ast.Stmt, ...], guards: dict) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.LetStmt):
                self.bound.add(stmt.name)
                self.env[stmt.name] = self.type_of(stmt.value)
        for stmt in stmts:
            if isinstance(stmt, ast.ExprStmt):
                self._effect(stmt.expr, stmts, guards)
            elif isinstance(stmt, ast.IfStmt):
                for branch in stmt.branches:
                    inner = dict(guards)
                    if branch.condition is not None:
                        _collect_guards(branch.condition, inner)
                    self._stmts(branch.body, inner)
            elif isinstance(stmt, ast.ForStmt):
                self._bind_for(stmt.names, stmt.source)
                self._stmts(stmt.body, guards)
            if isinstance(stmt, (ast.ExprStmt, ast.LetStmt)):
                expr = stmt.expr if isinstance(stmt, ast.ExprStmt) else stmt.value
                self._creations(expr)

    def _creations(self, expr: ast.Expr) -> None:
        for node in expr.walk():
            if isinstance(node, ast.Call):
                target = queries.created_target(node)
                entity = self._entity(target) if target else None
                if entity is not None:
                    args = {a.name: a.value for a in node.args if a.name}
                    self.effects.creations.append(Creation(self.rule, entity, args, node.span, self.syms))

    def _effect(self, expr: ast.Expr, stmts: tuple[ast.Stmt, ...], guards: dict) -> None:
        for part in queries.conjuncts(expr):
            if not (isinstance(part, ast.BinOp) and part.op == "=" and isinstance(part.left, ast.Member)):
                continue
            obj = queries.member_chain(part.left.target)
            if obj is None:
                continue
            path = (obj[0], *obj[1])
            fname = part.left.name
            value = part.right
            literal = isinstance(value, ast.Name) and value.name not in self.bound and not queries.is_upper(value.name)
            name = value.name if isinstance(value, ast.Name) else None
            sources = guards.get((path, fname))
            entity = self.type_of(part.left.target)
            if entity is None and not obj[1]:
                entity = self._guess(obj[0], fname, name if literal else None, sources)
            elif entity is None:
                # `loan.book.status` with `loan` untyped: guess the root, then type every hop;
                # the root's own guess says nothing about where the chain ends.
                entity = self._through(self._guess(obj[0], "", None, None, by_name_only=True), obj[1])
            if entity is None:
                continue
            key = (id(entity), fname)
            if key not in self.effects.status_fields:
                continue
            if not literal or name is None:
                if not (isinstance(value, ast.Name) and value.name == "null"):
                    self.effects.dynamic.add(key)
                continue
            self.effects.assignments.append(
                Assignment(
                    self.rule, entity, fname, name, sources,
                    path, stmts, part.span, self.syms,
                )
            )

    def _through(self, entity: ast.EntityDecl | None, hops: Sequence[str]) -> ast.EntityDecl | None:
        """The entity at the end of ``hops`` from ``entity``, or None when any hop is untyped."""
        for hop in hops:
            f = entity.field(hop) if entity is not None else None
            entity = self._field_type(entity, f) if entity is not None and f is not None else None
        return entity

    def _guess(
        self, root: str, fname: str, value: str | None, sources: frozenset[str] | None,
        by_name_only: bool = False,
    ) -> ast.EntityDecl | None:
        """The entity an untyped binding must be: its status field holds the target and the guarded states."""
        if by_name_only:
            return self._entity(_camel(root))
        if value is None:
            return None
        by_name = self.effects.status_entity_named(_camel(root), fname)
        if by_name is not None:
            return by_name  # `ticket` is a Ticket, even when the value is misspelt
        return self.effects.only_entity_holding(fname, frozenset({value} | set(sources or ())))


def _collect_guards(condition: ast.Expr, guards: dict) -> None:
    """`x.f = a`, `x.f in {a, b}` (and conjunctions) narrow x.f's source state."""
    for part in queries.conjuncts(condition):
        if not isinstance(part, ast.BinOp) or not isinstance(part.left, ast.Member):
            continue
        obj = queries.member_chain(part.left.target)
        if obj is None:
            continue
        key = ((obj[0], *obj[1]), part.left.name)
        if part.op == "=" and isinstance(part.right, ast.Name):
            guards[key] = frozenset({part.right.name})
        elif part.op == "in" and isinstance(part.right, ast.SetLiteral):
            names = [i.name for i in part.right.items if isinstance(i, ast.Name)]
            if len(names) == len(part.right.items):
                guards[key] = frozenset(names)
