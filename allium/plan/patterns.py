"""Small syntactic questions about expressions and rule bodies.

These mirror the pattern matches in JUXT's `test_plan.rs` closely enough that
ids agree with `allium plan`; where this module is deliberately more thorough
the package docstring says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet

from allium import ast

COMPARISONS = frozenset({"=", "!=", "<", "<=", ">", ">="})

StateInfo = tuple[str, str, str]  # (object variable, field, state)


def capitalise(name: str) -> str:
    return name[:1].upper() + name[1:]


def is_upper(name: str) -> bool:
    return name[:1].isupper()


def is_now(expr: ast.Expr) -> bool:
    return isinstance(expr, ast.Name) and expr.name == "now"


def is_temporal(expr: ast.Expr | None) -> bool:
    """A `when:` trigger that compares against `now` (`x.deadline <= now`).

    JUXT only looks at the right-hand side; `now >= x` is the same trigger,
    so either side counts here.
    """
    if not isinstance(expr, ast.BinOp):
        return False
    if expr.op in COMPARISONS:
        return is_now(expr.right) or is_now(expr.left)
    if expr.op in ("and", "or"):
        return is_temporal(expr.left) or is_temporal(expr.right)
    return False


def is_creation_call(node: ast.Node) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Member)
        and node.func.name == "created"
    )


def created_entity(node: ast.Node) -> str | None:
    if is_creation_call(node):
        target = node.func.target  # type: ignore[attr-defined]
        if isinstance(target, ast.Name) and is_upper(target.name):
            return target.name
    return None


def removed_entity(node: ast.Node) -> str | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Member):
        target = node.func.target
        if node.func.name in ("remove", "removed") and isinstance(target, ast.Name) and is_upper(target.name):
            return target.name
    return None


def bare_call_name(node: ast.Node) -> str | None:
    """`Trigger(args)` -> "Trigger"; member calls and lowercase calls -> None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and is_upper(node.func.name):
        return node.func.name
    return None


# ---------------------------------------------------------------- statements


def stmt_exprs(stmts: Iterable[ast.Stmt]) -> Iterator[ast.Expr]:
    """Every expression in an ensures body, descending into if/for/let."""
    for stmt in stmts:
        if isinstance(stmt, ast.ExprStmt):
            yield stmt.expr
        elif isinstance(stmt, ast.LetStmt):
            yield stmt.value
        elif isinstance(stmt, ast.IfStmt):
            for branch in stmt.branches:
                if branch.condition is not None:
                    yield branch.condition
                yield from stmt_exprs(branch.body)
        elif isinstance(stmt, ast.ForStmt):
            yield stmt.source
            yield from stmt_exprs(stmt.body)


def nodes_in(exprs: Iterable[ast.Expr]) -> Iterator[ast.Node]:
    for expr in exprs:
        yield from expr.walk()


def ensures_has_creation(clause: ast.EnsuresClause) -> bool:
    return any(is_creation_call(n) for n in nodes_in(stmt_exprs(clause.body)))


def emitted_triggers(clause: ast.EnsuresClause, entity_names: AbstractSet[str]) -> list[str]:
    """Trigger names an ensures clause emits, first occurrence first."""
    seen: dict[str, None] = {}
    for node in nodes_in(stmt_exprs(clause.body)):
        name = bare_call_name(node)
        if name is not None and name not in entity_names:
            seen.setdefault(name)
    return list(seen)


# ---------------------------------------------------------------- states


# Names that are literals, never states: `x.f = null` clears a field, it does
# not move a status (JUXT's parser makes these literals, not identifiers).
_LITERAL_NAMES = frozenset({"null", "true", "false"})


def eq_state(expr: ast.Expr) -> StateInfo | None:
    """`obj.field = state` -> (obj, field, state); `field = state` -> ("", field, state)."""
    if not (isinstance(expr, ast.BinOp) and expr.op == "=" and isinstance(expr.right, ast.Name)):
        return None
    if expr.right.name in _LITERAL_NAMES:
        return None
    left = expr.left
    if isinstance(left, ast.Member):
        obj = left.target.name if isinstance(left.target, ast.Name) else ""
        return obj, left.name, expr.right.name
    if isinstance(left, ast.Name):
        return "", left.name, expr.right.name
    return None


def states_in(expr: ast.Expr) -> list[StateInfo]:
    """Source states a requires condition pins: `=`, `in {a, b}`, and/or of those."""
    single = eq_state(expr)
    if single is not None:
        return [single]
    if not isinstance(expr, ast.BinOp):
        return []
    if expr.op == "in" and isinstance(expr.left, ast.Member) and isinstance(expr.right, ast.SetLiteral):
        if not isinstance(expr.left.target, ast.Name):
            return []
        obj, fld = expr.left.target.name, expr.left.name
        return [(obj, fld, i.name) for i in expr.right.items if isinstance(i, ast.Name)]
    if expr.op in ("and", "or"):
        return states_in(expr.left) + states_in(expr.right)
    return []


def union_names(expr: ast.Expr) -> list[str]:
    """`a | b | c` (or a set literal `{a, b}`) -> ["a", "b", "c"]."""
    if isinstance(expr, ast.Name):
        return [expr.name]
    if isinstance(expr, ast.BinOp) and expr.op == "|":
        return union_names(expr.left) + union_names(expr.right)
    if isinstance(expr, ast.SetLiteral):
        return [i.name for i in expr.items if isinstance(i, ast.Name)]
    return []


def when_condition(expr: ast.Expr | None) -> tuple[str, list[str]] | None:
    """A field's `when status = a | b` (or `status in {a, b}`) -> ("status", [a, b])."""
    if not isinstance(expr, ast.BinOp) or expr.op not in ("=", "in"):
        return None
    left = expr.left
    status = left.name if isinstance(left, (ast.Name, ast.Member)) else None
    states = union_names(expr.right)
    if status is None or not states:
        return None
    return status, states


def exposed_names(item: ast.Node) -> list[str]:
    """Field names of the member accesses a surface `exposes:` item shows."""
    if isinstance(item, ast.SurfaceItem):
        return [item.expr.name] if isinstance(item.expr, ast.Member) else []
    if isinstance(item, ast.SurfaceItemFor):
        return [n for sub in item.items for n in exposed_names(sub)]
    return []
