"""Render an :class:`allium.ast.Module` back to canonical Allium text.

The output is deterministic (a function of the AST alone, never of the
original layout) so it can sit in the cacheable prompt prefix and feed the
spec-slice hashes. It round-trips: ``parse(canonical(parse(x)))`` equals
``parse(x)`` modulo spans, module comments and suppressions.

Canonical choices, each made so that re-parsing rebuilds the same node:

* four-space indentation, one declaration per paragraph, a blank line between;
* top-level doc comments are kept (they are part of the AST); other comments,
  which the AST does not hold, are lost;
* entity members are grouped: fields, transition graphs, invariants, then
  annotations (the AST stores them grouped, so source interleaving is gone);
* expressions are printed on one line with the fewest parentheses the grammar
  needs; ``if``/``for``/lambda expressions are bracketed whenever something
  could follow them on the same line;
* v1 spellings (``guidance:``, ``guarantee:``) come out as ``@guidance`` and
  ``@guarantee``, which build the same nodes;
* a resolved question's single-line answer or rationale is a string, a
  multi-line one is indented comment prose.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from allium import ast

INDENT = "    "
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Binding strength of each binary operator (higher binds tighter), mirroring
# the expression ladder in allium.lark.
_FILTER, _IMPLIES, _OR, _AND, _NOT, _COMPARE = 1, 2, 3, 4, 5, 6
_UNION, _COALESCE, _ADD, _MUL, _NEG, _POSTFIX, _ATOM = 7, 8, 9, 10, 11, 12, 13
# Open-ended expressions (`x => body`, `if a: b`, `for x in xs: y`) swallow
# whatever follows them, so they rank below everything.
_OPEN = 0

_BINARY: dict[str, int] = {
    "where": _FILTER, "with": _FILTER, "->": _FILTER,
    "implies": _IMPLIES, "or": _OR, "and": _AND,
    "|": _UNION, "??": _COALESCE,
    "+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "%": _MUL,
}
_COMPARE_OPS = frozenset(
    {"=", "!=", "<=", ">=", "<", ">", "in", "not in", "transitions_to", "becomes",
     "includes", "excludes", "contains"}
)


# ---------------------------------------------------------------- public API


def canonical_module(module: ast.Module) -> str:
    """The whole module as canonical text, ending in one newline."""
    parts: list[str] = []
    if module.version is not None:
        parts.append(f"-- allium: {module.version}")
    for decl in module.decls:
        text = canonical_decl(decl).rstrip("\n")
        if isinstance(decl, ast.UseDecl) and parts and parts[-1].startswith("use "):
            parts[-1] += "\n" + text  # imports read best as one paragraph
        else:
            parts.append(text)
    return "\n\n".join(parts) + "\n"


def canonical_decl(decl: ast.Decl) -> str:
    """One top-level declaration (with its doc comment), ending in a newline."""
    lines = list(_doc_lines(decl))
    lines.extend(_decl_lines(decl))
    return "\n".join(lines) + "\n"


def canonical_expr(expr: ast.Expr) -> str:
    return _expr(expr, _OPEN)


# ---------------------------------------------------------------- declarations


def _doc_lines(decl: ast.Decl) -> Iterator[str]:
    doc = getattr(decl, "doc_comment", None)
    if doc:
        yield from _comment_lines(doc, "")


def _comment_lines(text: str, indent: str) -> Iterator[str]:
    for line in text.split("\n"):
        yield f"{indent}-- {line}" if line else f"{indent}--"


def _decl_lines(decl: ast.Decl) -> list[str]:
    renderer = _DECLS.get(type(decl))
    if renderer is None:
        raise TypeError(f"cannot render declaration {type(decl).__name__}")
    return renderer(decl)


def _block(header: str, body: Iterable[str]) -> list[str]:
    """`header {` ... `}`; an empty body closes on the same line."""
    inner = [INDENT + line if line else line for line in body]
    if not inner:
        return [header + " {}"]
    return [header + " {", *inner, "}"]


def _use(decl: ast.UseDecl) -> list[str]:
    alias = f" as {decl.name}" if decl.name else ""
    return [f"use {_string(decl.path)}{alias}"]


def _module_decl(decl: ast.ModuleDecl) -> list[str]:
    return [f"module {decl.name}"]


def _given(decl: ast.GivenDecl) -> list[str]:
    return _block("given", (f"{b.name}: {_type(b.type)}" for b in decl.bindings))


def _entity(decl: ast.EntityDecl) -> list[str]:
    header = {
        "entity": f"entity {decl.name}",
        "external": f"external entity {decl.name}",
        "value": f"value {decl.name}",
        "variant": f"variant {decl.name}: {decl.base}",
    }[decl.kind]
    groups: list[list[str]] = [[_field(f) for f in decl.fields]]
    groups.extend(_transitions(graph) for graph in decl.transitions)
    groups.extend(_invariant(inv) for inv in decl.invariants)
    groups.extend(_annotation(ann) for ann in decl.annotations)
    body: list[str] = []
    for group in (g for g in groups if g):
        body.extend([""] * bool(body) + group)  # a blank line between member groups
    return _block(header, body)


def _field(f: ast.Field) -> str:
    name = f"{f.owner}.{f.name}" if f.owner else f.name
    if f.params:
        name += "(" + ", ".join(f.params) + ")"
    text = f"{name}: {_expr(f.value, _FILTER)}"
    return text + (f" when {_expr(f.when, _FILTER)}" if f.when is not None else "")


def _transitions(graph: ast.TransitionGraph) -> list[str]:
    body = [f"{e.source} -> {e.target}" for e in graph.edges]
    if graph.terminals:
        body.append("terminal: " + ", ".join(graph.terminals))
    return _block(f"transitions {graph.field}", body)


def _invariant(decl: ast.InvariantDecl) -> list[str]:
    return _block(f"invariant {decl.name}", _stmts(decl.body))


def _enum(decl: ast.EnumDecl) -> list[str]:
    if not decl.values:
        return [f"enum {decl.name} {{}}"]
    return [f"enum {decl.name} {{ {' | '.join(decl.values)} }}"]


def _config(decl: ast.ConfigDecl) -> list[str]:
    return _block(decl.name, (_config_param(p) for p in decl.params))


def _config_param(p: ast.ConfigParam) -> str:
    if p.type is not None and p.default is not None:
        # `name: T = d` parses as one comparison that the builder splits, so
        # print it as that comparison to get d's parentheses right.
        return f"{p.name}: {_expr(ast.BinOp(p.span, '=', p.type, p.default), _FILTER)}"
    if p.type is not None:
        return f"{p.name}: {_type(p.type)}"
    # `name = d` always means "no type", whatever d looks like.
    return f"{p.name} = {_expr(p.default, _FILTER)}" if p.default is not None else f"{p.name} = null"


def _default(decl: ast.DefaultDecl) -> list[str]:
    name = "" if decl.name == decl.type else f" {decl.name}"
    return [f"default {decl.type}{name} = {_expr(decl.value, _FILTER)}"]


def _rule(decl: ast.RuleDecl) -> list[str]:
    return _block(f"rule {decl.name}", _clauses(decl.clauses))


def _contract(decl: ast.ContractDecl) -> list[str]:
    body: list[str] = []
    for sig in decl.signatures:
        params = ", ".join(f"{p.name}: {_type(p.type)}" for p in sig.params)
        body.append(f"{sig.name}: ({params}) -> {_type(sig.returns)}")
    for ann in decl.annotations:
        body.extend(_annotation(ann))
    return _block(f"contract {decl.name}", body)


def _actor(decl: ast.ActorDecl) -> list[str]:
    body = [f"{name}: {_expr(value, _FILTER)}" for name, value in decl.clauses]
    for ann in decl.annotations:
        body.extend(_annotation(ann))
    return _block(f"actor {decl.name}", body)


def _surface(decl: ast.SurfaceDecl) -> list[str]:
    return _block(f"surface {decl.name}", _surface_members(decl.members))


def _deferred(decl: ast.DeferredDecl) -> list[str]:
    hint = f" {_string(decl.hint)}" if decl.hint is not None else ""
    return [f"deferred {decl.name}{hint}"]


def _open_question(decl: ast.OpenQuestion) -> list[str]:
    return [f"open question {_string(decl.name)}"]


def _resolved_question(decl: ast.ResolvedQuestion) -> list[str]:
    pairs = [("answer", decl.answer), ("rationale", decl.rationale), *decl.extra]
    body: list[str] = []
    for key, value in pairs:
        if not value and key in ("answer", "rationale"):
            continue  # absent and empty build the same node
        body.extend(_qa(key, value))
    return _block(f"resolved question {_string(decl.name)}", body)


def _qa(key: str, value: str) -> list[str]:
    if "\n" not in value:
        return [f"{key}: {_string(value)}"]
    return [f"{key}:", *_comment_lines(value, INDENT)]


# ---------------------------------------------------------------- annotations


def _annotation(ann: ast.Annotation) -> list[str]:
    head = f"@{ann.kind}" + (f" {ann.name}" if ann.name else "")
    if not ann.prose:
        return [head]
    return [head, *_comment_lines(ann.prose, INDENT)]


# ---------------------------------------------------------------- rule clauses


def _clauses(clauses: Sequence[ast.Clause]) -> list[str]:
    out: list[str] = []
    for clause in clauses:
        out.extend(_clause(clause))
    return out


def _clause(c: ast.Clause) -> list[str]:
    if isinstance(c, ast.WhenClause):
        if c.trigger is None:
            return ["when:"]
        binding = f"{c.binding}: " if c.binding else ""
        return [f"when: {binding}{_expr(c.trigger, _FILTER)}"]
    if isinstance(c, ast.RequiresClause):
        if len(c.conditions) == 1:
            return [f"requires: {_expr(c.conditions[0], _FILTER)}"]
        return ["requires:", *(INDENT + _expr(e, _FILTER) for e in c.conditions)]
    if isinstance(c, ast.EnsuresClause):
        return _ensures(c)
    if isinstance(c, ast.LetClause):
        return [f"let {c.name} = {_expr(c.value, _FILTER)}"]
    if isinstance(c, ast.ForClause):
        return [f"for {_for_head(c.names, c.source)}:", *_indent(_clauses(c.clauses))]
    if isinstance(c, ast.IfClause):
        return _if_branches(c.branches, lambda b: _clauses(b.clauses))
    if isinstance(c, ast.OtherClause):
        return [f"{c.keyword}: " + ", ".join(_expr(v, _FILTER) for v in c.values)]
    if isinstance(c, ast.AnnotationClause):
        return _annotation(c.annotation)
    raise TypeError(f"cannot render clause {type(c).__name__}")


def _ensures(c: ast.EnsuresClause) -> list[str]:
    body = _stmts(c.body)
    if len(body) == 1 and not isinstance(c.body[0], (ast.IfStmt, ast.ForStmt)):
        return [f"ensures: {body[0]}"]
    return ["ensures:", *_indent(body)]


def _if_branches(branches: Sequence, body_of) -> list[str]:
    out: list[str] = []
    for i, branch in enumerate(branches):
        if branch.condition is None:
            head = "else:"
        else:
            head = ("if " if i == 0 else "else if ") + _expr(branch.condition, _FILTER) + ":"
        out.append(head)
        out.extend(_indent(body_of(branch)))
    return out


def _indent(lines: Iterable[str]) -> list[str]:
    return [INDENT + line if line else line for line in lines]


# ---------------------------------------------------------------- statements


def _stmts(stmts: Sequence[ast.Stmt]) -> list[str]:
    out: list[str] = []
    for stmt in stmts:
        out.extend(_stmt(stmt))
    return out


def _stmt(s: ast.Stmt) -> list[str]:
    if isinstance(s, ast.ExprStmt):
        # A bare `if`/`for` at the start of a line would be read as a block statement.
        level = _ATOM if isinstance(s.expr, (ast.IfExpr, ast.ForExpr)) else _FILTER
        return [_expr(s.expr, level)]
    if isinstance(s, ast.LetStmt):
        return [f"let {s.name} = {_expr(s.value, _FILTER)}"]
    if isinstance(s, ast.IfStmt):
        return _if_branches(s.branches, lambda b: _stmts(b.body))
    if isinstance(s, ast.ForStmt):
        return [f"for {_for_head(s.names, s.source)}:", *_indent(_stmts(s.body))]
    raise TypeError(f"cannot render statement {type(s).__name__}")


def _for_head(names: Sequence[str], source: ast.Expr) -> str:
    target = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
    return f"{target} in {_expr(source, _FILTER)}"


# ---------------------------------------------------------------- surfaces


def _surface_members(members: Sequence[ast.SurfaceMember]) -> list[str]:
    out: list[str] = []
    for m in members:
        out.extend(_surface_member(m))
    return out


def _surface_member(m: ast.SurfaceMember) -> list[str]:
    if isinstance(m, ast.Facing):
        binding = f"{m.binding}: " if m.binding else ""
        return [f"facing {binding}{_expr(m.type, _FILTER)}"]
    if isinstance(m, ast.Context):
        return [f"context {m.binding}: {_expr(m.type, _FILTER)}"]
    if isinstance(m, ast.SurfaceLet):
        return [f"let {m.name} = {_expr(m.value, _FILTER)}"]
    if isinstance(m, ast.SurfaceBlock):
        return [f"{m.kind}:", *_indent(_surface_items(m.items))]
    if isinstance(m, ast.ContractsBlock):
        return ["contracts:", *(f"{INDENT}{r.direction} {r.name}" for r in m.refs)]
    if isinstance(m, ast.SurfaceFor):
        return [f"for {_for_head(m.names, m.source)}:", *_indent(_surface_members(m.members))]
    if isinstance(m, ast.SurfaceRequires):
        return [f"requires: {_expr(m.condition, _FILTER)}"]
    if isinstance(m, ast.SurfaceAnnotation):
        return _annotation(m.annotation)
    raise TypeError(f"cannot render surface member {type(m).__name__}")


def _surface_items(items: Sequence[ast.SurfaceItem | ast.SurfaceItemFor]) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, ast.SurfaceItemFor):
            out.append(f"for {_for_head(item.names, item.source)}:")
            out.extend(_indent(_surface_items(item.items)))
        else:
            when = f" when {_expr(item.when, _FILTER)}" if item.when is not None else ""
            out.append(_expr(item.expr, _FILTER) + when)
    return out


# ---------------------------------------------------------------- expressions


def _type(expr: ast.Expr) -> str:
    """Types use the expression printer: the type grammar is a subset of it."""
    return _expr(expr, _FILTER)


def _expr(e: ast.Expr, min_level: int) -> str:
    text, level = _expr_level(e)
    return f"({text})" if level < min_level else text


def _expr_level(e: ast.Expr) -> tuple[str, int]:
    if isinstance(e, ast.Name):
        return e.name, _ATOM
    if isinstance(e, ast.Literal):
        return _literal(e), _ATOM
    if isinstance(e, ast.Member):
        return f"{_expr(e.target, _POSTFIX)}{'?.' if e.optional else '.'}{e.name}", _POSTFIX
    if isinstance(e, ast.Call):
        return f"{_expr(e.func, _POSTFIX)}({_args(e.args)})", _POSTFIX
    if isinstance(e, ast.Lookup):
        return f"{_expr(e.entity, _POSTFIX)}{{{_args(e.args)}}}", _POSTFIX
    if isinstance(e, ast.BinOp):
        return _binop(e)
    if isinstance(e, ast.Unary):
        return _unary(e)
    if isinstance(e, ast.SetLiteral):
        return "{" + ", ".join(_expr(i, _OPEN) for i in e.items) + "}", _ATOM
    if isinstance(e, ast.ObjectLiteral):
        return "{" + _args(e.fields) + "}", _ATOM
    if isinstance(e, ast.ListLiteral):
        return "[" + ", ".join(_expr(i, _OPEN) for i in e.items) + "]", _ATOM
    if isinstance(e, ast.GenericType):
        return f"{e.name}<{', '.join(_expr(a, _FILTER) for a in e.args)}>", _ATOM
    if isinstance(e, ast.Lambda):
        return f"{e.param} => {_expr(e.body, _OPEN)}", _OPEN
    if isinstance(e, ast.IfExpr):
        return _if_expr(e), _OPEN
    if isinstance(e, ast.ForExpr):
        return f"for {_for_head(e.names, e.source)}: {_expr(e.body, _OPEN)}", _OPEN
    raise TypeError(f"cannot render expression {type(e).__name__}")


def _literal(e: ast.Literal) -> str:
    if e.kind == "string":
        return _string(e.value)
    if e.kind == "backtick":
        return f"`{e.value}`"
    return e.value  # number, duration: stored as written (minus `_`)


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _args(args: Sequence[ast.Arg]) -> str:
    return ", ".join(_arg(a) for a in args)


def _arg(a: ast.Arg) -> str:
    value = _expr(a.value, _OPEN)
    if a.name is None:
        return value
    key = a.name if _IDENT.fullmatch(a.name) else _string(a.name)
    return f"{key}: {value}"


def _binop(e: ast.BinOp) -> tuple[str, int]:
    if e.op in _COMPARE_OPS:
        # Comparisons do not chain: both sides are union expressions.
        return f"{_expr(e.left, _UNION)} {e.op} {_expr(e.right, _UNION)}", _COMPARE
    level = _BINARY.get(e.op)
    if level is None:
        raise TypeError(f"unknown binary operator {e.op!r}")
    if e.op == "implies":  # right-associative
        left, right = _expr(e.left, _OR), _expr(e.right, _IMPLIES)
    elif e.op == "->":  # projection: the right side is a postfix expression
        left, right = _expr(e.left, _FILTER), _expr(e.right, _POSTFIX)
    else:
        left, right = _expr(e.left, level), _expr(e.right, level + 1)
    return f"{left} {e.op} {right}", level


def _unary(e: ast.Unary) -> tuple[str, int]:
    if e.op in ("not", "exists"):
        return f"{e.op} {_expr(e.operand, _NOT)}", _NOT
    if e.op == "-":
        operand = _expr(e.operand, _NEG)
        # `--x` would start a comment.
        return ("- " if operand.startswith("-") else "-") + operand, _NEG
    if e.op == "?":
        return f"{_expr(e.operand, _POSTFIX)}?", _POSTFIX
    raise TypeError(f"unknown unary operator {e.op!r}")


def _if_expr(e: ast.IfExpr) -> str:
    parts = []
    for i, (cond, value) in enumerate(e.branches):
        head = "if" if i == 0 else "else if"
        # A branch value followed by `else` must not be open-ended.
        parts.append(f"{head} {_expr(cond, _FILTER)}: {_expr(value, _FILTER)}")
    if e.otherwise is not None:
        parts.append(f"else: {_expr(e.otherwise, _OPEN)}")
    return " ".join(parts)


_DECLS: dict[type, Callable[[Any], list[str]]] = {
    ast.UseDecl: _use,
    ast.ModuleDecl: _module_decl,
    ast.GivenDecl: _given,
    ast.EntityDecl: _entity,
    ast.EnumDecl: _enum,
    ast.ConfigDecl: _config,
    ast.DefaultDecl: _default,
    ast.RuleDecl: _rule,
    ast.InvariantDecl: _invariant,
    ast.ContractDecl: _contract,
    ast.ActorDecl: _actor,
    ast.SurfaceDecl: _surface,
    ast.DeferredDecl: _deferred,
    ast.OpenQuestion: _open_question,
    ast.ResolvedQuestion: _resolved_question,
}
