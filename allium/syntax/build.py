"""Lark parse tree -> typed AST (allium.ast).

One method per grammar rule.  Each receives the rule's ``meta`` (positions)
and its already-transformed children; tokens arrive as lark Tokens and leave
as plain strings, so no lark type escapes this module.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import cache
from typing import Any

from lark import Token, Transformer, Tree, v_args
from lark.exceptions import GrammarError, VisitError
from lark.tree import Meta

from allium import ast
from allium.diagnostics import Diagnostic, error, warning
from allium.source import Position, SourceFile, Span, _new_position
from allium.syntax.internals import is_meta_rule_method, rule_function

PRIMITIVE_TYPES = frozenset(
    {"String", "Integer", "Decimal", "Boolean", "Timestamp", "Duration", "Any", "ByteArray"}
)


@cache
def _rule_functions(cls: type) -> dict[str, Any]:
    """Rule name -> the plain function under lark's @v_args wrapper, per builder class.

    Fetching a wrapped method from an instance makes lark build a new wrapper
    (functools.update_wrapper and all), ~60 times per parsed file.
    """
    functions: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if is_meta_rule_method(value):
                functions[name] = rule_function(value)
            elif name in functions:
                del functions[name]  # overridden by something that is not a rule method
    return functions


# `_tuple_new(Span, nine_fields)`: a Span from its flat fields (see
# allium.source.Span) without its __new__; called directly, as a partial()
# around it costs ~200 instructions per AST node.
_tuple_new = tuple.__new__


# What the engine passes for lark's Meta: the node's (first token, last
# token, depth), the first None for a node without tokens.  Tokens carry
# their lines and columns, so spans are made without searching the line table.
TokenInfo = tuple


class _Branch(tuple):
    """(condition, value) of an inline `else if`; a marker type for if_expr."""


@v_args(meta=True)
class AstBuilder(Transformer):
    def __init__(self, source: SourceFile) -> None:
        super().__init__(visit_tokens=False)
        self.source = source
        self._text = source.text
        self._chars_are_bytes = source.chars_are_bytes
        self._line_starts = source.line_starts
        self._byte_offset = source.byte_offset  # for files that are not all ASCII
        self._positions: dict[int, Position] = {}
        self._path = source.path
        self._handlers: dict[str, Any] = {}
        # Forms accepted though not canonical Allium, each with its canonical
        # form; parse_source() reports them.
        self.diagnostics: list[Diagnostic] = []
        # v1 spellings (`guidance:`), reported by parse_source() outside v1 files.
        self.v1_forms: list[Diagnostic] = []

    # ------------------------------------------------------------ transforming

    def transform(self, tree: Tree) -> Any:
        """lark's Transformer.transform with the per-node method lookup hoisted out.

        Same results and the same VisitError wrapping; lark re-wraps every
        method on every node, which was a third of the build time.
        """
        handlers = self._handlers

        def build(node: Tree) -> Any:
            children = [build(c) if isinstance(c, Tree) else c for c in node.children]
            data = node.data
            handler = handlers.get(data)
            if handler is None:
                handler = handlers[data] = self._handler(data)
            try:
                return handler(children, node.meta)
            except GrammarError:
                raise
            except Exception as exc:
                raise VisitError(data, node, exc) from exc

        return build(tree)

    def _reduction_method(self, data: str) -> Any:
        """The method for rule `data` as a callable (meta, children): what the engine calls.

        Underscored because @v_args wraps every public method as a rule.
        """
        function = _rule_functions(type(self)).get(data)
        if function is not None:
            return function.__get__(self)
        handler = self._handler(data)  # pragma: no cover - every rule has a meta method
        return lambda meta, children: handler(children, meta)

    def _token_reduction_method(self, data: str) -> Any:
        """The method for rule `data`, whose one child is a token, as a callable (token).

        The engine calls these for `name`, `number`... (a third of its
        reductions) without the meta and list a rule method takes; a rule
        with no `_token_<rule>` method gets its rule method, wrapped.
        """
        method = getattr(self, f"_token_{data}", None)
        if method is not None:
            return method
        rule = self._reduction_method(data)
        return lambda token: rule((token, token, 1), [token])

    def _handler(self, data: str) -> Any:
        try:
            method = getattr(self, data)
        except AttributeError:
            return lambda children, meta: self.__default__(data, children, meta)
        wrapper = getattr(method, "visit_wrapper", None)
        if is_meta_rule_method(method):
            bound = rule_function(method)
            return lambda children, meta: bound(meta, children)
        if wrapper is not None:
            return lambda children, meta: wrapper(method, data, children, meta)
        return lambda children, meta: method(children)  # pragma: no cover - every method takes meta

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

    def _span(self, meta: Meta | TokenInfo, children: list[Any] | None = None) -> Span:
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
    def _tokens(children: list[Any], kind: str | None = None) -> list[Token]:
        return [c for c in children if isinstance(c, Token) and (kind is None or c.type == kind)]

    @staticmethod
    def _nodes(children: list[Any], kind: type = ast.Node) -> list[Any]:
        return [c for c in children if isinstance(c, kind)]

    def _loose(self, code: str, message: str, span: Span) -> None:
        """Accept a form authors write that is not canonical, with a warning naming the canonical form."""
        self.diagnostics.append(warning(code, message, span))

    # ------------------------------------------------------------ module

    def start(self, meta: Meta, children: list[Any]) -> list[ast.Decl]:
        return [c for c in children if isinstance(c, ast.Decl)]

    def use_decl(self, meta: Meta, c: list[Any]) -> ast.UseDecl:
        path = _unquote(c[0])
        alias = str(c[1]) if len(c) > 1 else ""
        return ast.UseDecl(self._span(meta), alias, path, self._tok_span(c[0]))

    def module_decl(self, meta: Meta, c: list[Any]) -> ast.ModuleDecl:
        return ast.ModuleDecl(self._span(meta), c[0])

    def qname(self, meta: Meta, c: list[Token]) -> str:
        return ".".join(str(t) for t in c)

    def given_decl(self, meta: Meta, c: list[Any]) -> ast.GivenDecl:
        return ast.GivenDecl(self._span(meta), "given", tuple(self._nodes(c, ast.Binding)))

    def binding(self, meta: Meta, c: list[Any]) -> ast.Binding:
        return ast.Binding(self._span(meta), str(c[0]), c[1])

    # ------------------------------------------------------------ entities

    def entity_body(self, meta: Meta, c: list[Any]) -> list[Any]:
        return c

    def _entity(self, meta: Meta, kind: str, name: Token, body: list[Any], base: str | None = None) -> ast.EntityDecl:
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

    def entity_decl(self, meta: Meta, c: list[Any]) -> ast.EntityDecl:
        return self._entity(meta, "entity", c[0], c[1])

    def external_entity_decl(self, meta: Meta, c: list[Any]) -> ast.EntityDecl:
        return self._entity(meta, "external", c[0], c[1])

    def value_decl(self, meta: Meta, c: list[Any]) -> ast.EntityDecl:
        return self._entity(meta, "value", c[0], c[1])

    def variant_decl(self, meta: Meta, c: list[Any]) -> ast.EntityDecl:
        return self._entity(meta, "variant", c[0], c[2], base=c[1])

    def dotted_name(self, meta: Meta, c: list[Token]) -> tuple[str, str]:
        return (str(c[0]), str(c[1]))

    def field(self, meta: Meta, c: list[Any]) -> ast.Field:
        owner = None
        name = c[0]
        if isinstance(name, tuple):
            owner, name = name
        value = c[1]
        when = c[2].expr if len(c) > 2 else None
        return ast.Field(self._span(meta), str(name), classify_field(value), value, when, (), owner)

    def param_field(self, meta: Meta, c: list[Any]) -> ast.Field:
        params = tuple(str(t) for t in c if isinstance(t, Token))[1:]
        exprs = self._nodes(c, ast.Expr)
        when = self._nodes(c, _FieldWhen)
        return ast.Field(
            self._span(meta), str(c[0]), "derived", exprs[0], when[0].expr if when else None, params
        )

    def field_when(self, meta: Meta, c: list[Any]) -> _FieldWhen:
        return _FieldWhen(c[0])

    def transitions_block(self, meta: Meta, c: list[Any]) -> ast.TransitionGraph:
        edges = tuple(x for x in c if isinstance(x, ast.Edge))
        terminals: list[str] = []
        for x in c:
            if isinstance(x, _Terminals):
                terminals.extend(x)
        return ast.TransitionGraph(self._span(meta), str(c[0]), edges, tuple(terminals))

    def edge(self, meta: Meta, c: list[Token]) -> ast.Edge:
        return ast.Edge(self._span(meta), str(c[0]), str(c[1]))

    def terminal_clause(self, meta: Meta, c: list[Token]) -> _Terminals:
        return _Terminals(str(t) for t in c[1:])  # c[0] is the keyword

    def entity_invariant(self, meta: Meta, c: list[Any]) -> ast.InvariantDecl:
        return ast.InvariantDecl(self._span(meta), str(c[0]), tuple(c[1]))

    invariant_decl = entity_invariant

    def unseparated_enum_value(self, meta: Meta, c: list[Token]) -> Token:
        self._loose(
            "allium.syntax.enumSeparator",
            f"enum value '{c[0]}' is not separated from the one before; write `a | b` (or one value per line)",
            self._span(meta),
        )
        return c[0]

    def enum_decl(self, meta: Meta, c: list[Token]) -> ast.EnumDecl:
        values = tuple(str(t) for t in c[1:])
        return ast.EnumDecl(self._span(meta), str(c[0]), values, name_span=self._tok_span(c[0]))

    def empty_enum(self, meta: Meta, c: list[Token]) -> ast.EnumDecl:
        return ast.EnumDecl(self._span(meta), str(c[0]), (), name_span=self._tok_span(c[0]))

    # ------------------------------------------------------------ config, defaults

    def config_target(self, meta: Meta, c: list[Token]) -> str:
        return str(c[0]) if c else "config"

    def config_decl(self, meta: Meta, c: list[Any]) -> ast.ConfigDecl:
        return ast.ConfigDecl(self._span(meta), c[0], tuple(self._nodes(c, ast.ConfigParam)))

    def config_param(self, meta: Meta, c: list[Any]) -> ast.ConfigParam:
        value: ast.Expr = c[1]
        if isinstance(value, ast.BinOp) and value.op == "=":
            return ast.ConfigParam(self._span(meta), str(c[0]), value.left, value.right)
        if is_type_like(value):
            return ast.ConfigParam(self._span(meta), str(c[0]), value, None)
        return ast.ConfigParam(self._span(meta), str(c[0]), None, value)

    def config_param_untyped(self, meta: Meta, c: list[Any]) -> ast.ConfigParam:
        return ast.ConfigParam(self._span(meta), str(c[0]), None, c[-1])

    def default_decl(self, meta: Meta, c: list[Any]) -> ast.DefaultDecl:
        type_name = c[0]
        name = str(c[1]) if len(c) == 3 else type_name
        return ast.DefaultDecl(self._span(meta), name, type_name, c[-1])

    # ------------------------------------------------------------ rules

    def rule_decl(self, meta: Meta, c: list[Any]) -> ast.RuleDecl:
        return ast.RuleDecl(self._span(meta), str(c[0]), tuple(self._clauses(c[1:])))

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

    def when_clause(self, meta: Meta, c: list[Any]) -> ast.WhenClause:
        binding, trigger = c[0] if c else (None, None)
        return ast.WhenClause(self._span(meta), binding, trigger)

    def trigger(self, meta: Meta, c: list[Any]) -> tuple[str | None, ast.Expr]:
        if len(c) == 2:
            return str(c[0]), c[1]
        return None, c[0]

    def requires_clause(self, meta: Meta, c: list[Any]) -> ast.RequiresClause | _Clauses:
        conditions = tuple(x for x in c if not isinstance(x, ast.LetClause))
        requires = ast.RequiresClause(self._span(meta), conditions)
        if len(conditions) == len(c):
            return requires
        # `let` lines in a requires block become rule-level lets ahead of it:
        # lets are pure, and one block stays one requires (one rule-failure).
        return _Clauses((*(x for x in c if isinstance(x, ast.LetClause)), requires))

    def ensures_clause(self, meta: Meta, c: list[Any]) -> ast.EnsuresClause:
        return ast.EnsuresClause(self._span(meta), tuple(c))

    def _empty_clause(self, meta: Meta, keyword: str) -> _Clauses:
        self._loose(
            "allium.syntax.emptyClause",
            f"'{keyword}:' has no body; list its items on indented lines, "
            "or drop the clause and keep any note under it as a comment",
            self._span(meta),
        )
        return _Clauses(())

    def empty_requires(self, meta: Meta, c: list[Any]) -> _Clauses:
        return self._empty_clause(meta, "requires")

    def empty_ensures(self, meta: Meta, c: list[Any]) -> _Clauses:
        return self._empty_clause(meta, "ensures")

    def let_clause(self, meta: Meta, c: list[Any]) -> ast.LetClause:
        return ast.LetClause(self._span(meta), str(c[0]), c[1])

    def rule_for(self, meta: Meta, c: list[Any]) -> ast.ForClause:
        names, source = c[0]
        return ast.ForClause(self._span(meta), names, source, tuple(self._clauses(c[1:])))

    def rule_if(self, meta: Meta, c: list[Any]) -> ast.IfClause:
        rest = [x for x in c[1:] if isinstance(x, ast.IfClauseBranch)]
        body = [x for x in c[1:] if not isinstance(x, ast.IfClauseBranch)]
        first = ast.IfClauseBranch(self._span(meta), c[0], tuple(self._clauses(body)))
        return ast.IfClause(self._span(meta), (first, *rest))

    def rule_elif(self, meta: Meta, c: list[Any]) -> ast.IfClauseBranch:
        return ast.IfClauseBranch(self._span(meta), c[0], tuple(self._clauses(c[1:])))

    def rule_else(self, meta: Meta, c: list[Any]) -> ast.IfClauseBranch:
        return ast.IfClauseBranch(self._span(meta), None, tuple(self._clauses(c)))

    def other_clause(self, meta: Meta, c: list[Any]) -> ast.OtherClause:
        return ast.OtherClause(self._span(meta), str(c[0]), tuple(c[1:]))

    # ------------------------------------------------------------ statements

    def block_body(self, meta: Meta, c: list[Any]) -> list[ast.Stmt]:
        return c

    def expr_stmt(self, meta: Meta | TokenInfo, c: list[Any]) -> ast.Stmt:
        expr = c[0]
        if isinstance(expr, ast.ForExpr):  # `for x in xs: stmt` on one line
            return ast.ForStmt(expr.span, expr.names, expr.source, (ast.ExprStmt(expr.body.span, expr.body),))
        return ast.ExprStmt(self._span(meta, c), expr)

    def guarded_stmt(self, meta: Meta, c: list[Any]) -> ast.IfStmt:
        """`x.status = b when x.n > 0`: the same as a one-branch `if`."""
        body = self.expr_stmt((None, None, 0), c[:1])
        span = self._span(meta)
        return ast.IfStmt(span, (ast.IfBranch(span, c[1], (body,)),))

    def block_assign_stmt(self, meta: Meta, c: list[Any]) -> ast.ExprStmt:
        span = self._span(meta)
        return ast.ExprStmt(span, ast.BinOp(span, "=" if c[1] == "==" else str(c[1]), c[0], c[2]))

    def implies_block(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        consequence = c[1]
        for line in c[2:]:  # several consequences hold together
            consequence = ast.BinOp(_join(consequence.span, line.span), "and", consequence, line)
        return ast.BinOp(self._span(meta), "implies", c[0], consequence)

    def implies_stmt(self, meta: Meta, c: list[Any]) -> ast.ExprStmt:
        return ast.ExprStmt(c[0].span, c[0])

    def let_stmt(self, meta: Meta, c: list[Any]) -> ast.LetStmt:
        return ast.LetStmt(self._span(meta), str(c[0]), c[1])

    def suite(self, meta: Meta, c: list[Any]) -> tuple[ast.Stmt, ...]:
        return tuple(c)

    def if_stmt(self, meta: Meta, c: list[Any]) -> ast.IfStmt:
        first = ast.IfBranch(self._span(meta), c[0], c[1])
        return ast.IfStmt(self._span(meta), (first, *c[2:]))

    def elif_branch(self, meta: Meta, c: list[Any]) -> ast.IfBranch:
        return ast.IfBranch(self._span(meta), c[0], c[1])

    def else_branch(self, meta: Meta, c: list[Any]) -> ast.IfBranch:
        return ast.IfBranch(self._span(meta), None, _suite(c[0]))

    def for_stmt(self, meta: Meta, c: list[Any]) -> ast.ForStmt:
        names, source = c[0]
        return ast.ForStmt(self._span(meta), names, source, tuple(c[1:]))

    def for_head(self, meta: Meta, c: list[Any]) -> tuple[tuple[str, ...], ast.Expr]:
        return tuple(str(t) for t in c[:-1]), c[-1]

    # ------------------------------------------------------------ contracts, actors

    def contract_decl(self, meta: Meta, c: list[Any]) -> ast.ContractDecl:
        return ast.ContractDecl(
            self._span(meta), str(c[0]), tuple(self._nodes(c, ast.Signature)), tuple(self._nodes(c, ast.Annotation))
        )

    def signature(self, meta: Meta, c: list[Any]) -> ast.Signature:
        return ast.Signature(self._span(meta), str(c[0]), tuple(self._nodes(c[1:-1], ast.Param)), c[-1])

    def param(self, meta: Meta, c: list[Any]) -> ast.Param:
        return ast.Param(self._span(meta), str(c[0]), c[1])

    def actor_decl(self, meta: Meta, c: list[Any]) -> ast.ActorDecl:
        clauses = tuple(x for x in c[1:] if isinstance(x, tuple))
        return ast.ActorDecl(self._span(meta), str(c[0]), clauses, tuple(self._nodes(c, ast.Annotation)))

    def actor_clause(self, meta: Meta, c: list[Any]) -> tuple[str, ast.Expr]:
        return str(c[0]), c[1]

    def actor_within(self, meta: Meta, c: list[Any]) -> tuple[str, ast.Expr]:
        return "within", c[0]

    # ------------------------------------------------------------ surfaces

    def surface_decl(self, meta: Meta, c: list[Any]) -> ast.SurfaceDecl:
        return ast.SurfaceDecl(self._span(meta), str(c[0]), tuple(self._members(c[1:])))

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

    def unnamed_facing(self, meta: Meta, c: list[Any]) -> ast.Facing:
        name = _binding_name(c[0])
        self._loose(
            "allium.syntax.facingWithoutBinding",
            f"'facing:' has no binding name; write 'facing {name}: ...'",
            self._span(meta),
        )
        return ast.Facing(self._span(meta), None, c[0])

    def facing_clause(self, meta: Meta, c: list[Any]) -> ast.Facing:
        if len(c) == 2:
            return ast.Facing(self._span(meta), str(c[0]), c[1], self._tok_span(c[0]))
        return ast.Facing(self._span(meta), None, c[0])

    def context_clause(self, meta: Meta, c: list[Any]) -> ast.Context:
        return ast.Context(self._span(meta), str(c[0]), c[1], self._tok_span(c[0]))

    def surface_requires(self, meta: Meta, c: list[Any]) -> ast.SurfaceRequires:
        return ast.SurfaceRequires(self._span(meta), c[0])

    def surface_keyword(self, meta: Meta, c: list[Token]) -> str:
        return str(c[0])

    def surface_block(self, meta: Meta, c: list[Any]) -> ast.SurfaceBlock:
        return ast.SurfaceBlock(self._span(meta), c[0], tuple(c[1:]))

    def empty_surface_block(self, meta: Meta, c: list[Any]) -> _Clauses:
        return self._empty_clause(meta, c[0])

    def surface_item(self, meta: Meta, c: list[Any]) -> ast.SurfaceItem:
        return ast.SurfaceItem(self._span(meta), c[0], c[1] if len(c) > 1 else None)

    def surface_item_for(self, meta: Meta, c: list[Any]) -> ast.SurfaceItemFor:
        names, source = c[0]
        return ast.SurfaceItemFor(self._span(meta), names, source, tuple(c[1:]))

    def surface_for(self, meta: Meta, c: list[Any]) -> ast.SurfaceFor:
        names, source = c[0]
        return ast.SurfaceFor(self._span(meta), names, source, tuple(self._members(c[1:])))

    def contracts_block(self, meta: Meta, c: list[Any]) -> ast.ContractsBlock:
        return ast.ContractsBlock(self._span(meta), tuple(c))

    def contract_ref(self, meta: Meta, c: list[Any]) -> ast.ContractRef:
        return ast.ContractRef(self._span(meta), c[0], c[1])

    def contract_direction(self, meta: Meta, c: list[Token]) -> str:
        return str(c[0])

    # ------------------------------------------------------------ annotations

    def _annotation(self, meta: Meta, kind: str, c: list[Any], named: bool) -> ast.Annotation:
        tokens = [t for t in c if isinstance(t, Token)]
        name = str(tokens[1 if kind == "invariant" else 0]) if named else None
        prose = next((str(t) for t in tokens if t.type == "PROSE"), "")
        strings = [t for t in tokens if t.type == "STRING"]
        if not prose and strings:
            prose = _unquote(strings[0])
        return ast.Annotation(self._span(meta), kind, name, prose)

    def _v3_annotation(self, meta: Meta, kind: str, c: list[Any], named: bool) -> ast.Annotation:
        """An `@` annotation; its body must be comment lines indented below it (v3 rule 67)."""
        annotation = self._annotation(meta, kind, c, named)
        prose = next((t for t in c if isinstance(t, Token) and t.type == "PROSE"), None)
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

    def guidance_annotation(self, meta: Meta, c: list[Any]) -> ast.Annotation:
        return self._v3_annotation(meta, "guidance", c, named=False)

    def invariant_annotation(self, meta: Meta, c: list[Any]) -> ast.Annotation:
        return self._v3_annotation(meta, "invariant", c, named=True)

    def guarantee_annotation(self, meta: Meta, c: list[Any]) -> ast.Annotation:
        return self._v3_annotation(meta, "guarantee", c, named=True)

    def _v1_clause(self, meta: Meta, kind: str, c: list[Any], named: bool) -> ast.Annotation:
        annotation = self._annotation(meta, kind, c, named)
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

    def v1_guidance(self, meta: Meta, c: list[Any]) -> ast.Annotation:
        return self._v1_clause(meta, "guidance", c, named=False)

    def v1_guarantee(self, meta: Meta, c: list[Any]) -> ast.Annotation:
        return self._v1_clause(meta, "guarantee", c, named=True)

    # ------------------------------------------------------------ deferred, questions

    def deferred_decl(self, meta: Meta, c: list[Any]) -> ast.DeferredDecl:
        hint = _unquote(c[1]) if len(c) > 1 else None
        return ast.DeferredDecl(self._span(meta), c[0], hint)

    def open_question(self, meta: Meta, c: list[Token]) -> ast.OpenQuestion:
        return ast.OpenQuestion(self._span(meta), _unquote(c[0]))

    def resolved_question(self, meta: Meta, c: list[Any]) -> ast.ResolvedQuestion:
        answers: dict[str, Any] = dict(x for x in c[1:] if isinstance(x, tuple))
        extra = tuple((k, v) for k, v in answers.items() if k not in ("answer", "rationale"))
        return ast.ResolvedQuestion(
            self._span(meta), _unquote(c[0]), answers.get("answer", ""), answers.get("rationale", ""), extra
        )

    def qa_clause(self, meta: Meta, c: list[Token]) -> tuple[str, str]:
        value = c[1]
        return str(c[0]), _unquote(value) if value.type == "STRING" else str(value)

    # ------------------------------------------------------------ types

    def named_type(self, meta: Meta, c: list[Any]) -> ast.Name:
        return ast.Name(self._span(meta), c[0])

    def generic_type(self, meta: Meta, c: list[Any]) -> ast.GenericType:
        head = str(c[0])[:-1]
        args = tuple(
            ast.Name(self._tok_span(x), "*") if isinstance(x, Token) else x for x in c[1:]
        )
        return ast.GenericType(self._span(meta), head, args)

    def optional_type(self, meta: Meta, c: list[Any]) -> ast.Unary:
        return ast.Unary(self._span(meta), "?", c[0])

    def union_type(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return ast.BinOp(self._span(meta), "|", c[0], c[1])

    # ------------------------------------------------------------ expressions

    def _bin(self, meta: Meta, op: str, c: list[Any]) -> ast.BinOp:
        exprs = self._nodes(c, ast.Expr)
        return ast.BinOp(self._span(meta), op, exprs[0], exprs[1])

    def where_expr(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "where", c)

    def with_expr(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "with", c)

    def project_expr(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "->", c)

    def implies(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "implies", c)

    def or_(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "or", c)

    def and_(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "and", c)

    def in_(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "in", c)

    def not_in(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "not in", c)

    def transitions_to(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "transitions_to", c)

    def becomes(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "becomes", c)

    def union(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "|", c)

    def coalesce(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return self._bin(meta, "??", c)

    def arith(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return ast.BinOp(self._span(meta), str(c[1]), c[0], c[2])

    def compare(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        op = str(c[1])
        node = ast.BinOp(self._span(meta), "=" if op == "==" else op, c[0], c[2])
        right = c[2]
        if node.op != "=" and isinstance(right, ast.BinOp) and right.op in _COMPARISONS:
            if "(" not in self._text[c[1].end_pos : right.span[3]]:
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

    def word_op(self, meta: Meta, c: list[Token]) -> str:
        return str(c[0])

    def word_binop(self, meta: Meta, c: list[Any]) -> ast.BinOp:
        return ast.BinOp(self._span(meta), c[1], c[0], c[2])

    def not_(self, meta: Meta, c: list[Any]) -> ast.Unary:
        return ast.Unary(self._span(meta), "not", c[0])

    def exists(self, meta: Meta, c: list[Any]) -> ast.Unary:
        return ast.Unary(self._span(meta), "exists", c[0])

    def neg(self, meta: Meta, c: list[Any]) -> ast.Unary:
        return ast.Unary(self._span(meta), "-", c[0])

    def optional(self, meta: Meta, c: list[Any]) -> ast.Unary:
        return ast.Unary(self._span(meta), "?", c[0])

    def attr(self, meta: Meta, c: list[Any]) -> ast.Expr:
        target, name = c[0], str(c[1])
        if isinstance(target, ast.Literal) and target.kind == "number":
            return ast.Literal(self._span(meta), "duration", f"{target.value}.{name}")
        return ast.Member(self._span(meta), target, name)

    def opt_attr(self, meta: Meta, c: list[Any]) -> ast.Member:
        return ast.Member(self._span(meta), c[0], str(c[1]), optional=True)

    def call(self, meta: Meta, c: list[Any]) -> ast.Call:
        return ast.Call(self._span(meta), c[0], tuple(self._args(c[1:])))

    def lookup(self, meta: Meta, c: list[Any]) -> ast.Lookup:
        return ast.Lookup(self._span(meta), c[0], tuple(self._args(c[1:])))

    def _args(self, items: list[Any]) -> list[ast.Arg]:
        return [x if isinstance(x, ast.Arg) else ast.Arg(x.span, None, x) for x in items]

    def named_arg(self, meta: Meta, c: list[Any]) -> ast.Arg:
        key = c[0]
        name = _unquote(key) if key.type == "STRING" else str(key)
        return ast.Arg(self._span(meta), name, c[1])

    def config_arg(self, meta: Meta, c: list[Any]) -> ast.Arg:
        return ast.Arg(self._span(meta), "config", c[0])

    def uncommaed_arg(self, meta: Meta, c: list[Any]) -> ast.Arg:
        self._loose(
            "allium.syntax.missingComma",
            f"missing ',' before argument '{c[0]}'; separate arguments with commas, one per line is fine",
            self._tok_span(c[0]),
        )
        return ast.Arg(self._span(meta), str(c[0]), c[1])

    def name(self, meta: Meta, c: list[Token]) -> ast.Name:
        return self._token_name(c[0])

    def _token_name(self, token: Token) -> ast.Name:
        return ast.Name(self._tok_span(token), token.value)

    def config_name(self, meta: Meta, c: list[Any]) -> ast.Name:
        return ast.Name(self._span(meta, c), "config")

    def number(self, meta: Meta, c: list[Token]) -> ast.Literal:
        return self._token_number(c[0])

    def _token_number(self, token: Token) -> ast.Literal:
        return ast.Literal(self._tok_span(token), "number", token.value.replace("_", ""))

    def string(self, meta: Meta, c: list[Token]) -> ast.Literal:
        return self._token_string(c[0])

    def _token_string(self, token: Token) -> ast.Literal:
        return ast.Literal(self._tok_span(token), "string", _unquote(token))

    def backtick(self, meta: Meta, c: list[Token]) -> ast.Literal:
        return ast.Literal(self._span(meta, c), "backtick", str(c[0])[1:-1])

    def brace_literal(self, meta: Meta, c: list[Any]) -> ast.Expr:
        args = self._args(c)
        if args and all(a.name is not None for a in args):
            return ast.ObjectLiteral(self._span(meta), tuple(args))
        return ast.SetLiteral(self._span(meta), tuple(a.value for a in args))

    def list_literal(self, meta: Meta, c: list[Any]) -> ast.ListLiteral:
        return ast.ListLiteral(self._span(meta), tuple(a.value for a in self._args(c)))

    def lambda_(self, meta: Meta, c: list[Any]) -> ast.Lambda:
        return ast.Lambda(self._span(meta), str(c[0]), c[-1])

    def inline_elif(self, meta: Meta, c: list[Any]) -> _Branch:
        return _Branch((c[0], c[1]))

    def if_expr(self, meta: Meta, c: list[Any]) -> ast.IfExpr:
        branches: list[tuple[ast.Expr, ast.Expr]] = [(c[0], c[1])]
        otherwise = None
        for item in c[2:]:
            if isinstance(item, _Branch):
                branches.append((item[0], item[1]))
            else:
                otherwise = item
        return ast.IfExpr(self._span(meta), tuple(branches), otherwise)

    def block_if_expr(self, meta: Meta, c: list[Any]) -> ast.IfExpr:
        branches: list[tuple[ast.Expr, ast.Expr]] = [(c[0], c[1])]
        otherwise = None
        for item in c[2:]:
            if isinstance(item, _Branch):
                branches.append((item[0], item[1]))
            else:
                otherwise = item
        return ast.IfExpr(self._span(meta), tuple(branches), otherwise)

    block_elif = inline_elif

    def block_else(self, meta: Meta, c: list[Any]) -> ast.Expr:
        return c[0]

    def for_expr(self, meta: Meta, c: list[Any]) -> ast.ForExpr:
        names, source = c[0]
        return ast.ForExpr(self._span(meta), names, source, c[1])


# lark calls the `lambda` rule's method by that name, a Python keyword.
setattr(AstBuilder, "lambda", AstBuilder.lambda_)


class _FieldWhen:
    __slots__ = ("expr",)

    def __init__(self, expr: ast.Expr) -> None:
        self.expr = expr


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
