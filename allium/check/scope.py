"""Name references in rules, each with the names bound where it occurs.

:func:`rule_refs` walks a rule clause by clause and yields every
:class:`Ref`: the name, its syntactic role and the set of names in scope
there. Passes decide what an unbound name means (undefined binding, undefined
type ...); this module only knows the scoping rules:

* the `when:` binding and trigger parameters are visible everywhere;
* `let` names are visible in their whole block (order-insensitive, as JUXT);
* `for` names inside their body only; lambda parameters inside the lambda;
* the right side of `where`/`with` is evaluated per element, where bare names
  are the element's fields, so it is not walked for bindings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from allium import ast
from allium.check import queries

ROOT = "root"  # `x` in `x.y.z`
BARE = "bare"  # a name used as a value
FUNC = "func"  # `f` in `f(...)`
LOOKUP = "lookup"  # `E` in `E{...}`
SHORTHAND = "shorthand"  # `k` in `E{k}` (short for `k: k`)
OPERAND = "operand"  # a bare name where no enum literal can stand (`x + 1`, `exists x`)

# Operators whose bare-name operands must be values, never enum literals.
_VALUE_OPS = frozenset({"+", "-", "*", "/", "<", "<=", ">", ">="})
_VALUE_UNARY = frozenset({"exists", "-"})


@dataclass(frozen=True, slots=True)
class Ref:
    name: ast.Name
    role: str
    bound: frozenset[str]


def _operand(expr: ast.Expr | None, bound: frozenset[str]) -> Iterator[Ref]:
    """Like expr_refs, but a bare name here is a value (a binding), not a literal."""
    if isinstance(expr, ast.Name):
        yield Ref(expr, OPERAND, bound)
    else:
        yield from expr_refs(expr, bound)


def expr_refs(expr: ast.Expr | None, bound: frozenset[str]) -> Iterator[Ref]:
    if expr is None:
        return
    if isinstance(expr, ast.Name):
        yield Ref(expr, BARE, bound)
    elif isinstance(expr, ast.Member):
        if isinstance(expr.target, ast.Name):
            yield Ref(expr.target, ROOT, bound)
        else:
            yield from expr_refs(expr.target, bound)
    elif isinstance(expr, ast.Call):
        if isinstance(expr.func, ast.Name):
            yield Ref(expr.func, FUNC, bound)
        else:
            yield from expr_refs(expr.func, bound)
        for arg in expr.args:
            yield from expr_refs(arg.value, bound)
    elif isinstance(expr, ast.Lookup):
        if isinstance(expr.entity, ast.Name):
            yield Ref(expr.entity, LOOKUP, bound)
        else:
            yield from expr_refs(expr.entity, bound)
        for arg in expr.args:
            if arg.name is None and isinstance(arg.value, ast.Name):
                yield Ref(arg.value, SHORTHAND, bound)
            else:
                yield from expr_refs(arg.value, bound)
    elif isinstance(expr, ast.BinOp):
        if expr.op in _VALUE_OPS:
            yield from _operand(expr.left, bound)
            yield from _operand(expr.right, bound)
        elif expr.op in ("where", "with"):
            yield from _operand(expr.left, bound)
        else:
            yield from expr_refs(expr.left, bound)
            if expr.op == "in":
                yield from _operand(expr.right, bound)
            else:
                yield from expr_refs(expr.right, bound)
    elif isinstance(expr, ast.Unary):
        if expr.op in _VALUE_UNARY:
            yield from _operand(expr.operand, bound)
        else:
            yield from expr_refs(expr.operand, bound)
    elif isinstance(expr, (ast.SetLiteral, ast.ListLiteral)):
        for item in expr.items:
            yield from expr_refs(item, bound)
    elif isinstance(expr, ast.ObjectLiteral):
        for arg in expr.fields:
            yield from expr_refs(arg.value, bound)
    elif isinstance(expr, ast.Lambda):
        yield from expr_refs(expr.body, bound | {expr.param})
    elif isinstance(expr, ast.IfExpr):
        for condition, value in expr.branches:
            yield from expr_refs(condition, bound)
            yield from expr_refs(value, bound)
        yield from expr_refs(expr.otherwise, bound)
    elif isinstance(expr, ast.ForExpr):
        yield from _operand(expr.source, bound)
        yield from expr_refs(expr.body, bound | set(expr.names))
    # Literal, GenericType: nothing to resolve


def stmt_refs(stmts: Iterable[ast.Stmt], bound: frozenset[str]) -> Iterator[Ref]:
    stmts = tuple(stmts)
    inner = bound | {s.name for s in stmts if isinstance(s, ast.LetStmt)}
    for stmt in stmts:
        if isinstance(stmt, ast.ExprStmt):
            yield from expr_refs(stmt.expr, inner)
        elif isinstance(stmt, ast.LetStmt):
            yield from expr_refs(stmt.value, inner)
        elif isinstance(stmt, ast.IfStmt):
            for branch in stmt.branches:
                yield from expr_refs(branch.condition, inner)
                yield from stmt_refs(branch.body, inner)
        elif isinstance(stmt, ast.ForStmt):
            yield from _operand(stmt.source, inner)
            yield from stmt_refs(stmt.body, inner | set(stmt.names))


def trigger_bindings(when: ast.WhenClause | None) -> set[str]:
    """Names a `when:` clause binds: its `x:` binding and trigger call parameters."""
    if when is None:
        return set()
    out: set[str] = {when.binding} if when.binding else set()
    for call in queries.trigger_calls(when.trigger):
        for arg in call.args:
            if arg.name is not None:
                out.add(arg.name)  # `name: Type`
            elif isinstance(arg.value, ast.Name):
                out.add(arg.value.name)
            elif isinstance(arg.value, ast.Unary) and isinstance(arg.value.operand, ast.Name):
                out.add(arg.value.operand.name)  # optional parameter `x?`
    return out


def clause_refs(clauses: Iterable[ast.Clause], bound: frozenset[str]) -> Iterator[Ref]:
    clauses = tuple(clauses)
    inner = bound | {c.name for c in clauses if isinstance(c, ast.LetClause)}
    for clause in clauses:
        if isinstance(clause, ast.RequiresClause):
            for condition in clause.conditions:
                yield from expr_refs(condition, inner)
        elif isinstance(clause, ast.EnsuresClause):
            yield from stmt_refs(clause.body, inner)
        elif isinstance(clause, ast.LetClause):
            yield from expr_refs(clause.value, inner)
        elif isinstance(clause, ast.ForClause):
            yield from _operand(clause.source, inner)
            yield from clause_refs(clause.clauses, inner | set(clause.names))
        elif isinstance(clause, ast.IfClause):
            for branch in clause.branches:
                yield from expr_refs(branch.condition, inner)
                yield from clause_refs(branch.clauses, inner)


def rule_refs(rule: ast.RuleDecl, base: frozenset[str]) -> Iterator[Ref]:
    """Every name referenced in the rule's requires/ensures/let/for/if clauses."""
    bound = base | trigger_bindings(rule.when)
    yield from clause_refs(rule.clauses, frozenset(bound))
