"""The typed AST (allium.ast) from the grammar's rules: one builder method per rule.

Each method receives the rule's ``meta`` (positions) and its children,
already built, as keyword arguments named for what they are (children.py
works out which child is which from the grammar; `@takes` says which
grammar symbols a parameter takes when its name does not).  Tokens arrive
as lark Tokens and leave as plain strings, so no lark type escapes this
module.  The engine calls these methods while it parses, with an info
tuple for ``meta``; lark's own runtime calls them over its parse tree
(children.TreeBuilder), with lark's Meta.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any, Union

from lark import Token
from lark.tree import Meta

from allium import ast
from allium.diagnostics import Diagnostic, error, warning
from allium.source import Position, SourceFile, Span, _new_position
from allium.syntax.children import takes

PRIMITIVE_TYPES = frozenset(
    {"String", "Integer", "Decimal", "Boolean", "Timestamp", "Duration", "Any", "ByteArray"}
)


# `_tuple_new(Span, nine_fields)`: a Span from its flat fields (see
# allium.source.Span) without its __new__; called directly, as a partial()
# around it costs ~200 instructions per AST node.
_tuple_new = tuple.__new__


# What the engine passes for lark's Meta: the node's (first token, last
# token, depth), the first None for a node without tokens.  Tokens carry
# their lines and columns, so spans are made without searching the line table.
TokenInfo = tuple
Where = Union[Meta, TokenInfo]  # what a builder method gets for `meta`


_Head = tuple[tuple[str, ...], ast.Expr]  # a `for` head: its names and what they range over


def _binary(op: str, left: str, right: str) -> Any:
    """The builder method for a binary operator rule whose operands are the grammar symbols `left`, `right`."""

    @takes(left=left, right=right)
    def method(self: AstBuilder, meta: Where, left: ast.Expr, right: ast.Expr) -> ast.BinOp:
        return ast.BinOp(self._span(meta), op, left, right)

    return method


def _unary(op: str, operand: str) -> Any:
    """The builder method for a prefix or postfix operator rule."""

    @takes(operand=operand)
    def method(self: AstBuilder, meta: Where, operand: ast.Expr) -> ast.Unary:
        return ast.Unary(self._span(meta), op, operand)

    return method


def _present(branch: Any) -> tuple[Any, ...]:
    """An optional `else` branch as zero or one branches."""
    return () if branch is None else (branch,)


class AstBuilder:
    def __init__(self, source: SourceFile) -> None:
        self.source = source
        self._text = source.text
        self._chars_are_bytes = source.chars_are_bytes
        self._line_starts = source.line_starts
        self._byte_offset = source.byte_offset  # for files that are not all ASCII
        self._positions: dict[int, Position] = {}
        self._path = source.path
        # Forms accepted though not canonical Allium, each with its canonical
        # form; parse_source() reports them.
        self.diagnostics: list[Diagnostic] = []
        # v1 spellings (`guidance:`), reported by parse_source() outside v1 files.
        self.v1_forms: list[Diagnostic] = []

    # ------------------------------------------------------------ helpers

    def _position(self, offset: int) -> Position:
        """source.position(offset), memoised, with byte offsets in O(line) not O(file)."""
        text = self._text
        clamped = offset if 0 <= offset <= len(text) else max(0, min(offset, len(text)))
        index = bisect_right(self._line_starts, clamped) - 1
        position = self._token_position(clamped, index + 1, clamped - self._line_starts[index] + 1)
        self._positions[offset] = position
        return position

    def _token_position(self, offset: int, line: int, column: int) -> Position:
        """The memoised Position of `offset`, whose line and column are known."""
        byte_offset = offset if self._chars_are_bytes else self._byte_offset(offset, line)
        position = self._positions[offset] = _new_position((line, column, offset, byte_offset))
        return position

    def _make_span(self, start: int, end: int) -> Span:
        """Equivalent to source.span(start, end)."""
        positions = self._positions
        if end < start:
            end = start
        first = positions.get(start) or self._position(start)
        last = positions.get(end) or self._position(end)
        return _tuple_new(Span, (self._path, *first, *last))

    def _span(self, meta: Where, children: list[Any] | None = None) -> Span:
        if meta.__class__ is tuple:
            first, last, _depth = meta
            if first is None:
                return self._children_span(children)
            offset, end_offset = first.start_pos, last.end_pos
            if self._chars_are_bytes:
                if end_offset <= offset:
                    line, column = first.line, first.column
                    return _tuple_new(Span, (self._path, line, column, offset, offset, line, column, offset, offset))
                return _tuple_new(
                    Span,
                    (self._path, first.line, first.column, offset, offset,
                     last.end_line, last.end_column, end_offset, end_offset),
                )  # fmt: skip
            line, column = first.line, first.column
            byte_offset = self._byte_offset(offset, line)
            if end_offset <= offset:
                return _tuple_new(
                    Span, (self._path, line, column, offset, byte_offset, line, column, offset, byte_offset)
                )
            end_line = last.end_line
            return _tuple_new(
                Span,
                (self._path, line, column, offset, byte_offset,
                 end_line, last.end_column, end_offset, self._byte_offset(end_offset, end_line)),
            )  # fmt: skip
        assert isinstance(meta, Meta)  # lark's runtime; the engine passes tuples (above)
        if not meta.empty:
            return self._make_span(meta.start_pos, meta.end_pos)
        return self._children_span(children)

    def _children_span(self, children: list[Any] | None) -> Span:
        """A node without tokens: where its first child is, else the start of the file."""
        for child in children or ():
            if isinstance(child, ast.Node):
                return child.span
            if isinstance(child, Token) and child.start_pos is not None:
                return self._make_span(child.start_pos, child.end_pos or child.start_pos)
        return self._make_span(0, 0)

    def _tok_span(self, token: Token) -> Span:
        """The span of one token, from the positions it carries (the engine's and lark's tokens alike)."""
        return self._span((token, token, 1))

    @staticmethod
    def _nodes(children: list[Any], kind: type = ast.Node) -> list[Any]:
        return [c for c in children if isinstance(c, kind)]

    def _loose(self, code: str, message: str, span: Span) -> None:
        """Accept a form authors write that is not canonical, with a warning naming the canonical form."""
        self.diagnostics.append(warning(code, message, span))

    # ------------------------------------------------------------ module

    @takes(decls="_decl")
    def start(self, meta: Where, decls: list[Any]) -> list[ast.Decl]:
        return [c for c in decls if isinstance(c, ast.Decl)]

    @takes(path="STRING", alias="NAME")
    def use_decl(self, meta: Where, path: Token, alias: Token | None = None) -> ast.UseDecl:
        return ast.UseDecl(self._span(meta), "" if alias is None else str(alias), _unquote(path), self._tok_span(path))

    def module_decl(self, meta: Where, qname: str) -> ast.ModuleDecl:
        return ast.ModuleDecl(self._span(meta), qname)

    @takes(parts=("NAME", "QNAME"))
    def qname(self, meta: Where, parts: list[Token]) -> str:
        return ".".join(str(t) for t in parts)

    @takes(bindings="_given_line")
    def given_decl(self, meta: Where, bindings: list[ast.Binding]) -> ast.GivenDecl:
        return ast.GivenDecl(self._span(meta), "given", tuple(bindings))

    def binding(self, meta: Where, name: Token, type_expr: ast.Expr) -> ast.Binding:
        return ast.Binding(self._span(meta), str(name), type_expr)

    # ------------------------------------------------------------ entities

    @takes(members="_entity_member")
    def entity_body(self, meta: Where, members: list[Any]) -> list[Any]:
        return members

    def _entity(self, meta: Where, kind: str, name: Token, body: list[Any], base: str | None = None) -> ast.EntityDecl:
        annotations = [m for m in body if isinstance(m, ast.Annotation)]
        return ast.EntityDecl(
            self._span(meta),
            str(name),
            kind,
            base,
            tuple(m for m in body if isinstance(m, ast.Field)),
            tuple(m for m in body if isinstance(m, ast.TransitionGraph)),
            tuple(m for m in body if isinstance(m, ast.InvariantDecl)),
            tuple(annotations),
            name_span=self._tok_span(name),
        )

    def entity_decl(self, meta: Where, name: Token, entity_body: list[Any]) -> ast.EntityDecl:
        return self._entity(meta, "entity", name, entity_body)

    def external_entity_decl(self, meta: Where, name: Token, entity_body: list[Any]) -> ast.EntityDecl:
        return self._entity(meta, "external", name, entity_body)

    def value_decl(self, meta: Where, name: Token, entity_body: list[Any]) -> ast.EntityDecl:
        return self._entity(meta, "value", name, entity_body)

    def variant_decl(self, meta: Where, name: Token, qname: str, entity_body: list[Any]) -> ast.EntityDecl:
        return self._entity(meta, "variant", name, entity_body, base=qname)

    @takes(owner="NAME", name="NAME")
    def dotted_name(self, meta: Where, owner: Token, name: Token) -> tuple[str, str]:
        return (str(owner), str(name))

    @takes(name="_field_name", value=("expr", "_block_expr"), when="field_when")
    def field(
        self, meta: Where, name: Token | tuple[str, str], value: ast.Expr, when: ast.Expr | None = None
    ) -> ast.Field:
        owner, bare = name if isinstance(name, tuple) else (None, str(name))
        return ast.Field(self._span(meta), bare, classify_field(value), value, when, (), owner)

    @takes(name="NAME", params="_param_names", value=("expr", "_block_expr"), when="field_when")
    def param_field(
        self, meta: Where, name: Token, params: list[Token], value: ast.Expr, when: ast.Expr | None = None
    ) -> ast.Field:
        return ast.Field(self._span(meta), str(name), "derived", value, when, tuple(str(t) for t in params))

    def field_when(self, meta: Where, expr: ast.Expr) -> ast.Expr:
        return expr

    @takes(name="NAME", items="_transition_line")
    def transitions_block(self, meta: Where, name: Token, items: list[Any]) -> ast.TransitionGraph:
        edges = tuple(x for x in items if isinstance(x, ast.Edge))
        terminals: list[str] = []
        for x in items:
            if isinstance(x, _Terminals):
                terminals.extend(x)
        return ast.TransitionGraph(self._span(meta), str(name), edges, tuple(terminals))

    @takes(source="_state", target="_state")
    def edge(self, meta: Where, source: Token, target: Token) -> ast.Edge:
        return ast.Edge(self._span(meta), str(source), str(target))

    @takes(keyword="TERMINAL", states="enum_value")
    def terminal_clause(self, meta: Where, keyword: Token, states: list[Token]) -> _Terminals:
        return _Terminals(str(t) for t in states)

    def entity_invariant(self, meta: Where, name: Token, block_body: list[ast.Stmt]) -> ast.InvariantDecl:
        return ast.InvariantDecl(self._span(meta), str(name), tuple(block_body))

    invariant_decl = entity_invariant

    def unseparated_enum_value(self, meta: Where, enum_value: Token) -> Token:
        self._loose(
            "allium.syntax.enumSeparator",
            f"enum value '{enum_value}' is not separated from the one before; write `a | b` (or one value per line)",
            self._span(meta),
        )
        return enum_value

    @takes(name="NAME", values=("enum_value", "unseparated_enum_value"))
    def enum_decl(self, meta: Where, name: Token, values: list[Token]) -> ast.EnumDecl:
        return ast.EnumDecl(self._span(meta), str(name), tuple(str(t) for t in values), name_span=self._tok_span(name))

    def empty_enum(self, meta: Where, name: Token) -> ast.EnumDecl:
        return ast.EnumDecl(self._span(meta), str(name), (), name_span=self._tok_span(name))

    # ------------------------------------------------------------ config, defaults

    def config_target(self, meta: Where, qname: Token | None = None) -> str:
        return "config" if qname is None else str(qname)

    @takes(params="_config_line")
    def config_decl(self, meta: Where, config_target: str, params: list[ast.ConfigParam]) -> ast.ConfigDecl:
        return ast.ConfigDecl(self._span(meta), config_target, tuple(params))

    def config_param(self, meta: Where, name: Token, expr: ast.Expr) -> ast.ConfigParam:
        if isinstance(expr, ast.BinOp) and expr.op == "=":
            return ast.ConfigParam(self._span(meta), str(name), expr.left, expr.right)
        if is_type_like(expr):
            return ast.ConfigParam(self._span(meta), str(name), expr, None)
        return ast.ConfigParam(self._span(meta), str(name), None, expr)

    def config_param_untyped(self, meta: Where, name: Token, expr: ast.Expr) -> ast.ConfigParam:
        return ast.ConfigParam(self._span(meta), str(name), None, expr)

    @takes(type_name="qname", name="NAME", value="expr")
    def default_decl(self, meta: Where, type_name: str, value: ast.Expr, name: Token | None = None) -> ast.DefaultDecl:
        return ast.DefaultDecl(self._span(meta), type_name if name is None else str(name), type_name, value)

    # ------------------------------------------------------------ rules

    @takes(members="_rule_member")
    def rule_decl(self, meta: Where, name: Token, members: list[Any]) -> ast.RuleDecl:
        return ast.RuleDecl(self._span(meta), str(name), tuple(self._clauses(members)))

    def _clauses(self, items: list[Any]) -> list[ast.Clause]:
        out: list[ast.Clause] = []
        for item in items:
            if isinstance(item, ast.Annotation):
                out.append(ast.AnnotationClause(item.span, item))
            elif isinstance(item, ast.Clause):
                out.append(item)
            elif isinstance(item, _Clauses):
                out.extend(item)
        return out

    def when_clause(self, meta: Where, trigger: tuple[str | None, ast.Expr] | None = None) -> ast.WhenClause:
        binding, expr = trigger if trigger is not None else (None, None)
        return ast.WhenClause(self._span(meta), binding, expr)

    def trigger(self, meta: Where, expr: ast.Expr, name: Token | None = None) -> tuple[str | None, ast.Expr]:
        return (None if name is None else str(name)), expr

    @takes(items=("expr", "_block_expr", "_requires_item"))
    def requires_clause(self, meta: Where, items: list[Any]) -> ast.RequiresClause | _Clauses:
        conditions = tuple(x for x in items if not isinstance(x, ast.LetClause))
        requires = ast.RequiresClause(self._span(meta), conditions)
        if len(conditions) == len(items):
            return requires
        # `let` lines in a requires block become rule-level lets ahead of it:
        # lets are pure, and one block stays one requires (one rule-failure).
        return _Clauses((*(x for x in items if isinstance(x, ast.LetClause)), requires))

    @takes(stmts=("simple_stmt", "_compound_stmt", "_stmt"))
    def ensures_clause(self, meta: Where, stmts: list[ast.Stmt]) -> ast.EnsuresClause:
        return ast.EnsuresClause(self._span(meta), tuple(stmts))

    def _empty_clause(self, meta: Where, keyword: str) -> _Clauses:
        self._loose(
            "allium.syntax.emptyClause",
            f"'{keyword}:' has no body; list its items on indented lines, "
            "or drop the clause and keep any note under it as a comment",
            self._span(meta),
        )
        return _Clauses(())

    def empty_requires(self, meta: Where) -> _Clauses:
        return self._empty_clause(meta, "requires")

    def empty_ensures(self, meta: Where) -> _Clauses:
        return self._empty_clause(meta, "ensures")

    @takes(name="NAME", value=("expr", "_block_expr"))
    def let_clause(self, meta: Where, name: Token, value: ast.Expr) -> ast.LetClause:
        return ast.LetClause(self._span(meta), str(name), value)

    @takes(members="_rule_member")
    def rule_for(self, meta: Where, for_head: _Head, members: list[Any]) -> ast.ForClause:
        names, source = for_head
        return ast.ForClause(self._span(meta), names, source, tuple(self._clauses(members)))

    @takes(condition="expr", body="_rule_suite", elifs="rule_elif", otherwise="rule_else")
    def rule_if(
        self,
        meta: Where,
        condition: ast.Expr,
        body: list[Any],
        elifs: list[ast.IfClauseBranch],
        otherwise: ast.IfClauseBranch | None = None,
    ) -> ast.IfClause:
        first = ast.IfClauseBranch(self._span(meta), condition, tuple(self._clauses(body)))
        return ast.IfClause(self._span(meta), (first, *elifs, *_present(otherwise)))

    @takes(condition="expr", body="_rule_suite")
    def rule_elif(self, meta: Where, condition: ast.Expr, body: list[Any]) -> ast.IfClauseBranch:
        return ast.IfClauseBranch(self._span(meta), condition, tuple(self._clauses(body)))

    @takes(body="_rule_suite")
    def rule_else(self, meta: Where, body: list[Any]) -> ast.IfClauseBranch:
        return ast.IfClauseBranch(self._span(meta), None, tuple(self._clauses(body)))

    @takes(keyword="NAME", values="expr")
    def other_clause(self, meta: Where, keyword: Token, values: list[ast.Expr]) -> ast.OtherClause:
        return ast.OtherClause(self._span(meta), str(keyword), tuple(values))

    # ------------------------------------------------------------ statements

    @takes(stmts="_stmt")
    def block_body(self, meta: Where, stmts: list[ast.Stmt]) -> list[ast.Stmt]:
        return stmts

    def expr_stmt(self, meta: Where, expr: ast.Expr) -> ast.Stmt:
        if isinstance(expr, ast.ForExpr):  # `for x in xs: stmt` on one line
            return ast.ForStmt(expr.span, expr.names, expr.source, (ast.ExprStmt(expr.body.span, expr.body),))
        return ast.ExprStmt(self._span(meta, [expr]), expr)

    @takes(stmt="expr", guard="expr")
    def guarded_stmt(self, meta: Where, stmt: ast.Expr, guard: ast.Expr) -> ast.IfStmt:
        """`x.status = b when x.n > 0`: the same as a one-branch `if`."""
        body = self.expr_stmt((None, None, 0), stmt)
        span = self._span(meta)
        return ast.IfStmt(span, (ast.IfBranch(span, guard, (body,)),))

    @takes(target="union_expr", op="COMPARE_OP", value="_value_block")
    def block_assign_stmt(self, meta: Where, target: ast.Expr, op: Token, value: ast.Expr) -> ast.ExprStmt:
        span = self._span(meta)
        return ast.ExprStmt(span, ast.BinOp(span, "=" if op == "==" else str(op), target, value))

    @takes(condition="or_expr", consequences="expr")
    def implies_block(self, meta: Where, condition: ast.Expr, consequences: list[ast.Expr]) -> ast.BinOp:
        consequence, *more = consequences
        for line in more:  # several consequences hold together
            consequence = ast.BinOp(_join(consequence.span, line.span), "and", consequence, line)
        return ast.BinOp(self._span(meta), "implies", condition, consequence)

    def implies_stmt(self, meta: Where, implies_block: ast.BinOp) -> ast.ExprStmt:
        return ast.ExprStmt(implies_block.span, implies_block)

    @takes(name="NAME", value=("expr", "_block_expr"))
    def let_stmt(self, meta: Where, name: Token, value: ast.Expr) -> ast.LetStmt:
        return ast.LetStmt(self._span(meta), str(name), value)

    @takes(stmts="_stmt")
    def suite(self, meta: Where, stmts: list[ast.Stmt]) -> tuple[ast.Stmt, ...]:
        return tuple(stmts)

    @takes(condition="expr", body="suite", elifs="elif_", otherwise="else_")
    def if_stmt(
        self,
        meta: Where,
        condition: ast.Expr,
        body: tuple[ast.Stmt, ...],
        elifs: list[ast.IfBranch],
        otherwise: ast.IfBranch | None = None,
    ) -> ast.IfStmt:
        first = ast.IfBranch(self._span(meta), condition, body)
        return ast.IfStmt(self._span(meta), (first, *elifs, *_present(otherwise)))

    @takes(condition="expr", body="suite")
    def elif_branch(self, meta: Where, condition: ast.Expr, body: tuple[ast.Stmt, ...]) -> ast.IfBranch:
        return ast.IfBranch(self._span(meta), condition, body)

    @takes(body=("suite", "simple_stmt"))
    def else_branch(self, meta: Where, body: tuple[ast.Stmt, ...] | ast.Stmt) -> ast.IfBranch:
        return ast.IfBranch(self._span(meta), None, _suite(body))

    @takes(body="_stmt")
    def for_stmt(self, meta: Where, for_head: _Head, body: list[ast.Stmt]) -> ast.ForStmt:
        names, source = for_head
        return ast.ForStmt(self._span(meta), names, source, tuple(body))

    @takes(names="NAME", source="expr")
    def for_head(self, meta: Where, names: list[Token], source: ast.Expr) -> _Head:
        return tuple(str(t) for t in names), source

    # ------------------------------------------------------------ contracts, actors

    @takes(members="_contract_member")
    def contract_decl(self, meta: Where, name: Token, members: list[Any]) -> ast.ContractDecl:
        return ast.ContractDecl(
            self._span(meta),
            str(name),
            tuple(self._nodes(members, ast.Signature)),
            tuple(self._nodes(members, ast.Annotation)),
        )

    @takes(name="NAME", params="_params", returns="type_expr")
    def signature(self, meta: Where, name: Token, params: list[ast.Param], returns: ast.Expr) -> ast.Signature:
        return ast.Signature(self._span(meta), str(name), tuple(params), returns)

    def param(self, meta: Where, name: Token, type_expr: ast.Expr) -> ast.Param:
        return ast.Param(self._span(meta), str(name), type_expr)

    @takes(members="_actor_member")
    def actor_decl(self, meta: Where, name: Token, members: list[Any]) -> ast.ActorDecl:
        clauses = tuple(x for x in members if isinstance(x, tuple))
        return ast.ActorDecl(self._span(meta), str(name), clauses, tuple(self._nodes(members, ast.Annotation)))

    def actor_clause(self, meta: Where, name: Token, expr: ast.Expr) -> tuple[str, ast.Expr]:
        return str(name), expr

    def actor_within(self, meta: Where, expr: ast.Expr) -> tuple[str, ast.Expr]:
        return "within", expr

    # ------------------------------------------------------------ surfaces

    @takes(members="_surface_member")
    def surface_decl(self, meta: Where, name: Token, members: list[Any]) -> ast.SurfaceDecl:
        return ast.SurfaceDecl(self._span(meta), str(name), tuple(self._members(members)))

    def _members(self, items: list[Any]) -> list[ast.SurfaceMember]:
        out: list[ast.SurfaceMember] = []
        for item in items:
            if isinstance(item, ast.Annotation):
                out.append(ast.SurfaceAnnotation(item.span, item))
            elif isinstance(item, ast.LetClause):
                out.append(ast.SurfaceLet(item.span, item.name, item.value))
            elif isinstance(item, ast.SurfaceMember):
                out.append(item)
        return out

    def unnamed_facing(self, meta: Where, expr: ast.Expr) -> ast.Facing:
        self._loose(
            "allium.syntax.facingWithoutBinding",
            f"'facing:' has no binding name; write 'facing {_binding_name(expr)}: ...'",
            self._span(meta),
        )
        return ast.Facing(self._span(meta), None, expr)

    def facing_clause(self, meta: Where, expr: ast.Expr, name: Token | None = None) -> ast.Facing:
        if name is not None:
            return ast.Facing(self._span(meta), str(name), expr, self._tok_span(name))
        return ast.Facing(self._span(meta), None, expr)

    def context_clause(self, meta: Where, name: Token, expr: ast.Expr) -> ast.Context:
        return ast.Context(self._span(meta), str(name), expr, self._tok_span(name))

    def surface_requires(self, meta: Where, expr: ast.Expr) -> ast.SurfaceRequires:
        return ast.SurfaceRequires(self._span(meta), expr)

    def surface_keyword(self, meta: Where, keyword: Token) -> str:
        return str(keyword)

    @takes(kind="surface_keyword", items=("_surface_items_inline", "_surface_item"))
    def surface_block(
        self, meta: Where, kind: str, items: list[ast.SurfaceItem | ast.SurfaceItemFor]
    ) -> ast.SurfaceBlock:
        return ast.SurfaceBlock(self._span(meta), kind, tuple(items))

    def empty_surface_block(self, meta: Where, surface_keyword: str) -> _Clauses:
        return self._empty_clause(meta, surface_keyword)

    @takes(expr="expr", when="expr")
    def surface_item(self, meta: Where, expr: ast.Expr, when: ast.Expr | None = None) -> ast.SurfaceItem:
        return ast.SurfaceItem(self._span(meta), expr, when)

    @takes(items="_surface_item")
    def surface_item_for(
        self, meta: Where, for_head: _Head, items: list[ast.SurfaceItem | ast.SurfaceItemFor]
    ) -> ast.SurfaceItemFor:
        names, source = for_head
        return ast.SurfaceItemFor(self._span(meta), names, source, tuple(items))

    @takes(members="_surface_member")
    def surface_for(self, meta: Where, for_head: _Head, members: list[Any]) -> ast.SurfaceFor:
        names, source = for_head
        return ast.SurfaceFor(self._span(meta), names, source, tuple(self._members(members)))

    @takes(refs="contract_ref")
    def contracts_block(self, meta: Where, refs: list[ast.ContractRef]) -> ast.ContractsBlock:
        return ast.ContractsBlock(self._span(meta), tuple(refs))

    def contract_ref(self, meta: Where, contract_direction: str, qname: str) -> ast.ContractRef:
        return ast.ContractRef(self._span(meta), contract_direction, qname)

    def contract_direction(self, meta: Where, keyword: Token) -> str:
        return str(keyword)

    # ------------------------------------------------------------ annotations

    def _annotation(
        self, meta: Where, kind: str, name: Token | None, prose: Token | None, string: Token | None = None
    ) -> ast.Annotation:
        text = str(prose) if prose is not None else ""
        if not text and string is not None:
            text = _unquote(string)
        return ast.Annotation(self._span(meta), kind, None if name is None else str(name), text)

    def _v3_annotation(self, meta: Where, kind: str, name: Token | None, prose: Token | None) -> ast.Annotation:
        """An `@` annotation; its body must be comment lines indented below it (v3 rule 67)."""
        annotation = self._annotation(meta, kind, name, prose)
        head = annotation.span.start.line
        if prose is None or prose.end_line == head:
            label = f"@{kind}" + (f" {annotation.name}" if annotation.name else "")
            where = "its comment is on the annotation's line" if prose is not None else "it has none"
            self.diagnostics.append(
                error(
                    "allium.annotation.missingBody",
                    f"'{label}' must be followed by at least one indented comment line ({where})",
                    annotation.span,
                    "write the text on the lines below, indented: `-- ...`",
                )
            )
        return annotation

    def guidance_annotation(self, meta: Where, prose: Token | None = None) -> ast.Annotation:
        return self._v3_annotation(meta, "guidance", None, prose)

    @takes(keyword="INVARIANT_AT", name="NAME", prose="PROSE")
    def invariant_annotation(
        self, meta: Where, keyword: Token, name: Token, prose: Token | None = None
    ) -> ast.Annotation:
        return self._v3_annotation(meta, "invariant", name, prose)

    def guarantee_annotation(self, meta: Where, name: Token, prose: Token | None = None) -> ast.Annotation:
        return self._v3_annotation(meta, "guarantee", name, prose)

    def _v1_clause(self, meta: Where, kind: str, annotation: ast.Annotation) -> ast.Annotation:
        name = f" {annotation.name}" if annotation.name else ""
        self.v1_forms.append(
            warning(
                "allium.annotation.v1Clause",
                f"the v1 '{kind}:' clause was replaced by '@{kind}{name}' in Allium v2; "
                f"write '@{kind}{name}' with the text on indented comment lines below",
                annotation.span,
            )
        )
        return annotation

    def v1_guidance(self, meta: Where, prose: Token | None = None, string: Token | None = None) -> ast.Annotation:
        return self._v1_clause(meta, "guidance", self._annotation(meta, "guidance", None, prose, string))

    def v1_guarantee(self, meta: Where, name: Token, prose: Token | None = None) -> ast.Annotation:
        return self._v1_clause(meta, "guarantee", self._annotation(meta, "guarantee", name, prose))

    # ------------------------------------------------------------ deferred, questions

    @takes(qname="qname", hint="STRING")
    def deferred_decl(self, meta: Where, qname: str, hint: Token | None = None) -> ast.DeferredDecl:
        return ast.DeferredDecl(self._span(meta), qname, None if hint is None else _unquote(hint))

    def open_question(self, meta: Where, string: Token) -> ast.OpenQuestion:
        return ast.OpenQuestion(self._span(meta), _unquote(string))

    @takes(question="STRING", answers="_qa_line")
    def resolved_question(self, meta: Where, question: Token, answers: list[tuple[str, str]]) -> ast.ResolvedQuestion:
        given: dict[str, Any] = dict(answers)
        extra = tuple((k, v) for k, v in given.items() if k not in ("answer", "rationale"))
        return ast.ResolvedQuestion(
            self._span(meta), _unquote(question), given.get("answer", ""), given.get("rationale", ""), extra
        )

    @takes(key="NAME", value=("STRING", "PROSE"))
    def qa_clause(self, meta: Where, key: Token, value: Token) -> tuple[str, str]:
        return str(key), _unquote(value) if value.type == "STRING" else str(value)

    # ------------------------------------------------------------ types

    def named_type(self, meta: Where, qname: str) -> ast.Name:
        return ast.Name(self._span(meta), qname)

    @takes(head="GENERIC_OPEN", args="_type_args")
    def generic_type(self, meta: Where, head: Token, args: list[Any]) -> ast.GenericType:
        types = tuple(ast.Name(self._tok_span(x), "*") if isinstance(x, Token) else x for x in args)
        return ast.GenericType(self._span(meta), str(head)[:-1], types)

    def optional_type(self, meta: Where, type_atom: ast.Expr) -> ast.Unary:
        return ast.Unary(self._span(meta), "?", type_atom)

    union_type = _binary("|", "type_expr", "type_atom")

    # ------------------------------------------------------------ expressions

    where_expr = _binary("where", "filter_expr", "implies_expr")
    with_expr = _binary("with", "filter_expr", "implies_expr")
    project_expr = _binary("->", "filter_expr", "postfix")
    implies = _binary("implies", "or_expr", "implies_expr")
    or_ = _binary("or", "or_expr", "and_expr")
    and_ = _binary("and", "and_expr", "not_expr")
    in_ = _binary("in", "union_expr", "union_expr")
    not_in = _binary("not in", "union_expr", "union_expr")
    transitions_to = _binary("transitions_to", "union_expr", "union_expr")
    becomes = _binary("becomes", "union_expr", "union_expr")
    union = _binary("|", "union_expr", "coalesce_expr")
    coalesce = _binary("??", "coalesce_expr", "add_expr")

    @takes(left=("add_expr", "mul_expr"), op=("ADD_OP", "MUL_OP"), right=("mul_expr", "unary_expr"))
    def arith(self, meta: Where, left: ast.Expr, op: Token, right: ast.Expr) -> ast.BinOp:
        return ast.BinOp(self._span(meta), str(op), left, right)

    @takes(left="union_expr", op="COMPARE_OP", right="compare_expr")
    def compare(self, meta: Where, left: ast.Expr, op: Token, right: ast.Expr) -> ast.BinOp:
        node = ast.BinOp(self._span(meta), "=" if op == "==" else str(op), left, right)
        if node.op != "=" and isinstance(right, ast.BinOp) and right.op in _COMPARISONS:
            if "(" not in self._text[op.end_pos : right.span[3]]:
                # `x.flag = x.n > 0` assigns a comparison; `0 < n < 10` is not a range.
                self.diagnostics.append(
                    error(
                        "allium.syntax.chainedComparison",
                        f"comparisons do not chain: '{op}' applies to the comparison on its right; "
                        "write `a < b and b < c`, or parenthesise what you mean",
                        node.span,
                    )
                )
        return node

    def word_op(self, meta: Where, keyword: Token) -> str:
        return str(keyword)

    @takes(left="union_expr", op="word_op", right="union_expr")
    def word_binop(self, meta: Where, left: ast.Expr, op: str, right: ast.Expr) -> ast.BinOp:
        return ast.BinOp(self._span(meta), op, left, right)

    not_ = _unary("not", "not_expr")
    exists = _unary("exists", "not_expr")
    neg = _unary("-", "unary_expr")
    optional = _unary("?", "postfix")

    @takes(target="postfix", member="member")
    def attr(self, meta: Where, target: ast.Expr, member: Token) -> ast.Expr:
        if isinstance(target, ast.Literal) and target.kind == "number":
            return ast.Literal(self._span(meta), "duration", f"{target.value}.{member}")
        return ast.Member(self._span(meta), target, str(member))

    @takes(target="postfix", member="member")
    def opt_attr(self, meta: Where, target: ast.Expr, member: Token) -> ast.Member:
        return ast.Member(self._span(meta), target, str(member), optional=True)

    @takes(target="postfix", args="_args")
    def call(self, meta: Where, target: ast.Expr, args: list[Any]) -> ast.Call:
        return ast.Call(self._span(meta), target, tuple(self._args(args)))

    @takes(target="postfix", args="_args")
    def lookup(self, meta: Where, target: ast.Expr, args: list[Any]) -> ast.Lookup:
        return ast.Lookup(self._span(meta), target, tuple(self._args(args)))

    def _args(self, items: list[Any]) -> list[ast.Arg]:
        return [x if isinstance(x, ast.Arg) else ast.Arg(x.span, None, x) for x in items]

    @takes(key=("NAME", "STRING"), value="expr")
    def named_arg(self, meta: Where, key: Token, value: ast.Expr) -> ast.Arg:
        return ast.Arg(self._span(meta), _unquote(key) if key.type == "STRING" else str(key), value)

    def config_arg(self, meta: Where, expr: ast.Expr) -> ast.Arg:
        return ast.Arg(self._span(meta), "config", expr)

    def uncommaed_arg(self, meta: Where, name: Token, expr: ast.Expr) -> ast.Arg:
        self._loose(
            "allium.syntax.missingComma",
            f"missing ',' before argument '{name}'; separate arguments with commas, one per line is fine",
            self._tok_span(name),
        )
        return ast.Arg(self._span(meta), str(name), expr)

    # Leaves: a third of all nodes.  The engine's `meta` for a one-token
    # rule is (token, token, 1), which _span turns into the token's span.
    @takes(token=("NAME", "QNAME"))
    def name(self, meta: Where, token: Token) -> ast.Name:
        return ast.Name(self._span(meta), token.value)

    def config_name(self, meta: Where) -> ast.Name:
        return ast.Name(self._span(meta), "config")

    def number(self, meta: Where, number: Token) -> ast.Literal:
        return ast.Literal(self._span(meta), "number", number.value.replace("_", ""))

    def string(self, meta: Where, string: Token) -> ast.Literal:
        return ast.Literal(self._span(meta), "string", _unquote(string))

    def backtick(self, meta: Where, backtick: Token) -> ast.Literal:
        return ast.Literal(self._span(meta, [backtick]), "backtick", str(backtick)[1:-1])

    @takes(args="_args")
    def brace_literal(self, meta: Where, args: list[Any]) -> ast.Expr:
        items = self._args(args)
        if items and all(a.name is not None for a in items):
            return ast.ObjectLiteral(self._span(meta), tuple(items))
        return ast.SetLiteral(self._span(meta), tuple(a.value for a in items))

    @takes(args="_args")
    def list_literal(self, meta: Where, args: list[Any]) -> ast.ListLiteral:
        return ast.ListLiteral(self._span(meta), tuple(a.value for a in self._args(args)))

    @takes(param="NAME", arrow="LAMBDA_ARROW", body="expr")
    def lambda_(self, meta: Where, param: Token, arrow: Token, body: ast.Expr) -> ast.Lambda:
        return ast.Lambda(self._span(meta), str(param), body)

    # `if` and `for` expressions, on one line or with each part on its own
    # indented line (`_expr_suite`): one rule each in the grammar, one method.
    @takes(condition="expr", value=("expr", "_expr_suite"))
    def elif_expr(self, meta: Where, condition: ast.Expr, value: ast.Expr) -> tuple[ast.Expr, ast.Expr]:
        return (condition, value)

    @takes(
        condition="expr",
        then=("expr", "_expr_suite"),
        elifs=("inline_elif", "block_elif"),
        otherwise=("expr", "_block_else"),
    )
    def if_expr(
        self,
        meta: Where,
        condition: ast.Expr,
        then: ast.Expr,
        elifs: list[tuple[ast.Expr, ast.Expr]],
        otherwise: ast.Expr | None = None,
    ) -> ast.IfExpr:
        return ast.IfExpr(self._span(meta), ((condition, then), *elifs), otherwise)

    @takes(body=("expr", "_expr_suite"))
    def for_expr(self, meta: Where, for_head: _Head, body: ast.Expr) -> ast.ForExpr:
        names, source = for_head
        return ast.ForExpr(self._span(meta), names, source, body)

# lark calls the `lambda` rule's method by that name, a Python keyword.
setattr(AstBuilder, "lambda", AstBuilder.lambda_)


_COMPARISONS = frozenset({"=", "!=", "<", "<=", ">", ">="})


class _Terminals(tuple):
    pass


class _Clauses(tuple):
    """Several rule clauses (or none) from one grammar rule; _clauses() splices them in."""


def _suite(body: Any) -> tuple[ast.Stmt, ...]:
    """A branch body: an indented suite (a tuple) or one statement on the `else:` line."""
    return body if isinstance(body, tuple) else (body,)


def _join(first: Span, last: Span) -> Span:
    """The span from the start of `first` to the end of `last`."""
    return _tuple_new(Span, (*first[:5], *last[5:]))


def _binding_name(type_expr: ast.Expr) -> str:
    """A binding name for a facing type, for the message: `User` -> `user`."""
    if isinstance(type_expr, ast.Name):
        base = type_expr.name.split("/")[-1]
        return base[:1].lower() + base[1:]
    return "name"


def _unquote(token: Any) -> str:
    text = str(token)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


# ---------------------------------------------------------------- classification


def is_type_like(expr: ast.Expr) -> bool:
    """Does this expression read as a type (`T`, `T?`, `Set<T>`, `a | b`)?"""
    if isinstance(expr, ast.Name):
        return expr.name.split("/")[-1][:1].isupper()
    if isinstance(expr, ast.GenericType):
        return True
    if isinstance(expr, ast.Unary) and expr.op == "?":
        return is_type_like(expr.operand) or isinstance(expr.operand, ast.Name)
    if isinstance(expr, ast.BinOp) and expr.op == "|":
        return _union_names(expr) is not None
    return False


def _union_names(expr: ast.Expr) -> list[str] | None:
    if isinstance(expr, ast.BinOp) and expr.op == "|":
        left, right = _union_names(expr.left), _union_names(expr.right)
        return None if left is None or right is None else left + right
    if isinstance(expr, ast.Name):
        return [expr.name]
    if isinstance(expr, ast.Literal) and expr.kind == "backtick":
        return [expr.value]
    return None


def union_names(expr: ast.Expr) -> list[str] | None:
    """The names of a `a | b | c` union, or None if it is not one."""
    return _union_names(expr)


def classify_field(value: ast.Expr) -> str:
    if isinstance(value, ast.BinOp):
        if value.op == "with":
            return "relationship"
        if value.op in ("where", "->"):
            return "projection"
        if value.op == "|":
            names = _union_names(value)
            if names is not None:
                if all(n[:1].isupper() for n in names) and all("/" not in n for n in names):
                    return "variants"
                return "enum"
    if isinstance(value, ast.Literal) and value.kind == "backtick":
        return "enum"
    if is_type_like(value):
        return "type"
    return "derived"
