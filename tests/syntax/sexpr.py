"""A compact S-expression view of AST expressions, for readable assertions.

`a or b and c` shows as `(or a (and b c))`; calls, members and literals read
much as they were written, so a table row states the tree it expects.
"""

from __future__ import annotations

from allium import ast


def show(node) -> str:  # noqa: C901 - one branch per node type
    if node is None:
        return "None"
    if isinstance(node, ast.Name):
        return node.name
    if isinstance(node, ast.Literal):
        if node.kind == "string":
            return f'"{node.value}"'
        if node.kind == "backtick":
            return f"`{node.value}`"
        return node.value
    if isinstance(node, ast.Member):
        return f"{show(node.target)}{'?.' if node.optional else '.'}{node.name}"
    if isinstance(node, ast.Arg):
        return f"{node.name}: {show(node.value)}" if node.name is not None else show(node.value)
    if isinstance(node, ast.Call):
        return f"{show(node.func)}({', '.join(show(a) for a in node.args)})"
    if isinstance(node, ast.Lookup):
        return f"{show(node.entity)}{{{', '.join(show(a) for a in node.args)}}}"
    if isinstance(node, ast.BinOp):
        return f"({node.op} {show(node.left)} {show(node.right)})"
    if isinstance(node, ast.Unary):
        return f"({node.op} {show(node.operand)})"
    if isinstance(node, ast.SetLiteral):
        return "{" + ", ".join(show(i) for i in node.items) + "}"
    if isinstance(node, ast.ObjectLiteral):
        return "{" + ", ".join(show(f) for f in node.fields) + "}"
    if isinstance(node, ast.ListLiteral):
        return "[" + ", ".join(show(i) for i in node.items) + "]"
    if isinstance(node, ast.Lambda):
        return f"({node.param} => {show(node.body)})"
    if isinstance(node, ast.IfExpr):
        parts = " ".join(f"[{show(c)} {show(v)}]" for c, v in node.branches)
        tail = f" else {show(node.otherwise)}" if node.otherwise is not None else ""
        return f"(if {parts}{tail})"
    if isinstance(node, ast.ForExpr):
        return f"(for {','.join(node.names)} in {show(node.source)}: {show(node.body)})"
    if isinstance(node, ast.GenericType):
        return f"{node.name}<{', '.join(show(a) for a in node.args)}>"
    if isinstance(node, ast.ExprStmt):
        return show(node.expr)
    if isinstance(node, ast.LetStmt):
        return f"(let {node.name} {show(node.value)})"
    if isinstance(node, ast.ForStmt):
        return f"(for {','.join(node.names)} in {show(node.source)}: {'; '.join(show(s) for s in node.body)})"
    if isinstance(node, ast.IfStmt):
        out = []
        for branch in node.branches:
            cond = "else" if branch.condition is None else show(branch.condition)
            out.append(f"[{cond}: {'; '.join(show(s) for s in branch.body)}]")
        return "(if " + " ".join(out) + ")"
    raise TypeError(f"no S-expression for {type(node).__name__}")
