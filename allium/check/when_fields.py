"""State-dependent field presence (`field: T when status = a | b`): rules 7f-7i."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from allium import ast
from allium.check import queries
from allium.check.context import CheckContext
from allium.check.effects import Assignment, effects_of, field_values
from allium.diagnostics import Diagnostic, error


@dataclass(frozen=True)
class WhenSpec:
    field: ast.Field
    status_field: str
    states: tuple[str, ...]


def when_spec(f: ast.Field) -> WhenSpec | None:
    cond = f.when
    if isinstance(cond, ast.BinOp) and cond.op == "=" and isinstance(cond.left, ast.Name):
        return WhenSpec(f, cond.left.name, tuple(queries.pipe_names(cond.right)))
    if isinstance(cond, ast.BinOp) and cond.op == "in" and isinstance(cond.left, ast.Name):
        if isinstance(cond.right, ast.SetLiteral):
            names = tuple(i.name for i in cond.right.items if isinstance(i, ast.Name))
            return WhenSpec(f, cond.left.name, names)
    return None


def check_when_declarations(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """7f: `when` states are values of the status field; 7g: that field has a graph."""
    table, syms = context.symbols, context.of(module)
    for entity in module.of_type(ast.EntityDecl):
        graphs = {g.field for g in entity.transitions}
        for f in entity.fields:
            spec = when_spec(f) if f.when is not None else None
            if spec is None:
                continue
            status = entity.field(spec.status_field)
            if status is None or spec.status_field not in graphs:
                yield error(
                    "allium.when.missingTransitions",
                    f"Field '{entity.name}.{f.name}' is present `when {spec.status_field} = ...`, "
                    f"but '{spec.status_field}' has no `transitions` block.",
                    f.when.span,
                )
                continue
            values = field_values(table, syms, status) or ()
            for state in spec.states:
                if state not in values:
                    yield error(
                        "allium.when.undefinedState",
                        f"Field '{entity.name}.{f.name}' is present when {spec.status_field} = "
                        f"'{state}', which is not a value of '{spec.status_field}'.",
                        f.when.span,
                    )


def _sets_field(a: Assignment, fname: str, clear: bool) -> bool:
    """Whether the assignment's statement block (or its rule) assigns obj.fname."""
    for stmt in queries.iter_stmts(_rule_stmts(a.rule)):
        if not isinstance(stmt, ast.ExprStmt):
            continue
        for part in queries.conjuncts(stmt.expr):
            if isinstance(part, ast.BinOp) and part.op == "=" and isinstance(part.left, ast.Member):
                chain = queries.member_chain(part.left.target)
                if chain and (chain[0], *chain[1]) == a.obj and part.left.name == fname:
                    is_null = isinstance(part.right, ast.Name) and part.right.name == "null"
                    if is_null == clear:
                        return True
    return False


def _rule_stmts(rule: ast.RuleDecl) -> list[ast.Stmt]:
    return [stmt for clause in rule.ensures for stmt in clause.body]


def check_when_obligations(module: ast.Module, context: CheckContext) -> Iterator[Diagnostic]:
    """7h/7i: entering a field's `when` set must set it; leaving must clear it."""
    effects = effects_of(context.symbols)
    for a in effects.assignments:
        if a.syms.module is not module or a.sources is None:
            continue
        for f in a.entity.fields:
            spec = when_spec(f) if f.when is not None else None
            if spec is None or spec.status_field != a.field:
                continue
            inside = set(spec.states)
            entering = a.target in inside and any(s not in inside for s in a.sources)
            leaving = a.target not in inside and any(s in inside for s in a.sources)
            optional = isinstance(f.value, ast.Unary) and f.value.op == "?"
            # `T? when ...` may stay null inside the set, so only leaving obliges.
            if entering and not optional and not _sets_field(a, f.name, clear=False):
                yield error(
                    "allium.when.missingSet",
                    f"Rule '{a.rule.name}' moves {a.entity.name}.{a.field} to '{a.target}', where "
                    f"'{f.name}' must be present, but does not set it.",
                    a.span,
                )
            if leaving and not _sets_field(a, f.name, clear=True):
                yield error(
                    "allium.when.missingClear",
                    f"Rule '{a.rule.name}' moves {a.entity.name}.{a.field} to '{a.target}', where "
                    f"'{f.name}' must be absent, but does not clear it (`= null`).",
                    a.span,
                )
    for c in effects.creations:
        if c.syms.module is not module:
            continue
        for f in c.entity.fields:
            spec = when_spec(f) if f.when is not None else None
            if spec is None:
                continue
            state = c.args.get(spec.status_field)
            if isinstance(f.value, ast.Unary) and f.value.op == "?":
                continue
            if isinstance(state, ast.Name) and state.name in spec.states and f.name not in c.args:
                yield error(
                    "allium.when.missingSet",
                    f"'{c.entity.name}.created' starts in '{state.name}', where '{f.name}' must be "
                    "present, but does not set it.",
                    c.span,
                )
