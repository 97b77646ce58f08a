"""Small, pure helpers over expressions, statements and clauses.

Kept free of diagnostics so the symbol table and every pass can share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from allium import ast


def is_upper(name: str) -> bool:
    bare = name.rsplit("/", 1)[-1]
    return bool(bare) and bare[0].isupper()


def bare(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def pipe_names(expr: ast.Expr) -> list[str]:
    """`a | b | c` (left-nested BinOps) as ['a', 'b', 'c']; other leaves are skipped."""
    return [n.name for n in pipe_items(expr) if isinstance(n, ast.Name)]


def pipe_items(expr: ast.Expr) -> list[ast.Expr]:
    if isinstance(expr, ast.BinOp) and expr.op == "|":
        return pipe_items(expr.left) + pipe_items(expr.right)
    return [expr]


def graph_states(graph: ast.TransitionGraph) -> list[str]:
    seen: dict[str, None] = {}
    for edge in graph.edges:
        seen.setdefault(edge.source)
        seen.setdefault(edge.target)
    for terminal in graph.terminals:
        seen.setdefault(terminal)
    return list(seen)


def call_name(expr: ast.Expr) -> str | None:
    """`Name(...)` -> 'Name' (qualified names kept), else None."""
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        return expr.func.name
    return None


def created_target(expr: ast.Expr) -> str | None:
    """`X.created(...)` or bare `X.created` -> 'X'."""
    inner = expr.func if isinstance(expr, ast.Call) else expr
    if isinstance(inner, ast.Member) and inner.name == "created" and isinstance(inner.target, ast.Name):
        return inner.target.name
    return None


def trigger_calls(trigger: ast.Expr | None) -> list[ast.Call]:
    """External/chained trigger calls of a `when:` (`A(x)`, `A(x) or B(y)`)."""
    if trigger is None:
        return []
    if isinstance(trigger, ast.BinOp) and trigger.op == "or":
        return trigger_calls(trigger.left) + trigger_calls(trigger.right)
    if isinstance(trigger, ast.Call) and isinstance(trigger.func, ast.Name) and is_upper(trigger.func.name):
        return [trigger]
    return []


def trigger_call_name(rule: ast.RuleDecl) -> str | None:
    when = rule.when
    calls = trigger_calls(when.trigger) if when else []
    return call_name(calls[0]) if calls else None


def iter_stmts(stmts: Iterable[ast.Stmt]) -> Iterator[ast.Stmt]:
    """Every statement, descending into `if` branches and `for` bodies."""
    for stmt in stmts:
        yield stmt
        if isinstance(stmt, ast.IfStmt):
            for branch in stmt.branches:
                yield from iter_stmts(branch.body)
        elif isinstance(stmt, ast.ForStmt):
            yield from iter_stmts(stmt.body)


def emitted_triggers(stmts: Iterable[ast.Stmt]) -> set[str]:
    """Trigger names emitted by `ensures:` statements (`Name(...)` calls)."""
    out: set[str] = set()
    for stmt in iter_stmts(stmts):
        if isinstance(stmt, ast.ExprStmt):
            for call in _and_items(stmt.expr):
                name = call_name(call)
                if name is not None and is_upper(name):
                    out.add(name)
    return out


def _and_items(expr: ast.Expr) -> list[ast.Expr]:
    if isinstance(expr, ast.BinOp) and expr.op == "and":
        return _and_items(expr.left) + _and_items(expr.right)
    return [expr]


def conjuncts(expr: ast.Expr) -> list[ast.Expr]:
    return _and_items(expr)


def surface_items(surface: ast.SurfaceDecl, kind: str) -> Iterator[ast.SurfaceItem]:
    for member in surface.all_members():
        if isinstance(member, ast.SurfaceBlock) and member.kind == kind:
            yield from _flatten_items(member.items)


def _flatten_items(items: Iterable[ast.SurfaceItem | ast.SurfaceItemFor]) -> Iterator[ast.SurfaceItem]:
    for item in items:
        if isinstance(item, ast.SurfaceItemFor):
            yield from _flatten_items(item.items)
        else:
            yield item


def exprs_in(node: ast.Node) -> Iterator[ast.Expr]:
    """Every expression node at or below `node`."""
    for sub in node.walk():
        if isinstance(sub, ast.Expr):
            yield sub


def names_in(node: ast.Node) -> Iterator[ast.Name]:
    for sub in node.walk():
        if isinstance(sub, ast.Name):
            yield sub


def member_chain(expr: ast.Expr) -> tuple[str, list[str]] | None:
    """`a.b.c` -> ('a', ['b', 'c']) when the root is a plain name."""
    path: list[str] = []
    while isinstance(expr, ast.Member):
        path.append(expr.name)
        expr = expr.target
    if isinstance(expr, ast.Name):
        return expr.name, list(reversed(path))
    return None


def type_name(expr: ast.Expr | None) -> str | None:
    """The entity-ish type a field/param type names: `T`, `T?`, `List<T>`, `Set<T>`."""
    if expr is None:
        return None
    if isinstance(expr, ast.Unary) and expr.op == "?":
        return type_name(expr.operand)
    if isinstance(expr, ast.Name):
        return expr.name
    if isinstance(expr, ast.GenericType) and expr.args:
        return type_name(expr.args[-1])
    return None


def type_refs(expr: ast.Expr | None) -> Iterator[ast.Name]:
    """Uppercase names used as types in a type expression."""
    if expr is None:
        return
    for name in names_in(expr):
        if is_upper(name.name):
            yield name
