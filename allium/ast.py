"""The typed Allium syntax tree.

Frozen, slotted dataclasses with a :class:`~allium.source.Span` on every node.
Nothing here imports lark, click or jinja2: later stages (check, plan, prompt)
work on these nodes only, and tests can build them by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar, Union

from allium.source import Span


@dataclass(frozen=True, slots=True)
class Node:
    span: Span

    KIND: ClassVar[str] = "node"

    def children(self) -> Iterator["Node"]:
        for f in fields(self):
            if f.name == "span":
                continue
            value = getattr(self, f.name)
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                for item in value:
                    if isinstance(item, Node):
                        yield item
                    elif isinstance(item, tuple):
                        yield from (x for x in item if isinstance(x, Node))

    def walk(self) -> Iterator["Node"]:
        """This node and every node below it, depth first, in source order."""
        yield self
        for child in self.children():
            yield from child.walk()


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Expr(Node):
    pass


@dataclass(frozen=True, slots=True)
class Name(Expr):
    """An identifier; qualified names keep their `alias/` prefix (`oauth/Session`)."""

    name: str


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    kind: str  # number | string | backtick | duration
    value: str


@dataclass(frozen=True, slots=True)
class Member(Expr):
    target: Expr
    name: str
    optional: bool = False  # `?.`


@dataclass(frozen=True, slots=True)
class Arg(Node):
    name: str | None
    value: Expr


@dataclass(frozen=True, slots=True)
class Call(Expr):
    """`f(x)`, `Trigger(a, b)`, `Entity.created(k: v)`, `xs.any(x => ...)`."""

    func: Expr
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Lookup(Expr):
    """Join lookup `Entity{field, other: value}`."""

    entity: Expr
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class BinOp(Expr):
    """Binary operators, including `where`, `with`, `->`, `in`, `transitions_to`."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Unary(Expr):
    op: str  # not | exists | - | ?
    operand: Expr


@dataclass(frozen=True, slots=True)
class SetLiteral(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class ObjectLiteral(Expr):
    fields: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class ListLiteral(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Lambda(Expr):
    param: str
    body: Expr


@dataclass(frozen=True, slots=True)
class IfExpr(Expr):
    branches: tuple[tuple[Expr, Expr], ...]  # (condition, value)
    otherwise: Expr | None


@dataclass(frozen=True, slots=True)
class ForExpr(Expr):
    """`for x in xs: body`, in an invariant (quantifier) or a derived value."""

    names: tuple[str, ...]
    source: Expr
    body: Expr


@dataclass(frozen=True, slots=True)
class GenericType(Expr):
    name: str
    args: tuple[Expr, ...]


# ---------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class Stmt(Node):
    pass


@dataclass(frozen=True, slots=True)
class ExprStmt(Stmt):
    expr: Expr


@dataclass(frozen=True, slots=True)
class LetStmt(Stmt):
    name: str
    value: Expr


@dataclass(frozen=True, slots=True)
class IfBranch(Node):
    condition: Expr | None  # None for `else`
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class IfStmt(Stmt):
    branches: tuple[IfBranch, ...]


@dataclass(frozen=True, slots=True)
class ForStmt(Stmt):
    names: tuple[str, ...]
    source: Expr
    body: tuple[Stmt, ...]


# ---------------------------------------------------------------- annotations


@dataclass(frozen=True, slots=True)
class Annotation(Node):
    """`@guidance`, `@invariant Name`, `@guarantee Name` (and v1 `guidance:`).

    `prose` is the body text verbatim, one line per comment line, with the
    leading `--` and one space removed.
    """

    kind: str  # guidance | invariant | guarantee
    name: str | None
    prose: str


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True, slots=True)
class Decl(Node):
    name: str

    @property
    def doc(self) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class UseDecl(Decl):
    """`use "path" as alias`; `name` is the alias (empty when absent)."""

    path: str


@dataclass(frozen=True, slots=True)
class ModuleDecl(Decl):
    pass


@dataclass(frozen=True, slots=True)
class Binding(Node):
    name: str
    type: Expr


@dataclass(frozen=True, slots=True)
class GivenDecl(Decl):
    bindings: tuple[Binding, ...]


@dataclass(frozen=True, slots=True)
class Field(Node):
    """An entity member `name: expr [when status = a | b]`.

    `kind` is decided syntactically: `type` (including optional and generic
    types), `enum` (inline `a | b`), `variants` (discriminator `A | B`),
    `relationship` (`T with x = this`), `projection` (`xs where ...`) or
    `derived` (anything else, including parameterised values).
    """

    name: str
    kind: str
    value: Expr
    when: Expr | None = None
    params: tuple[str, ...] = ()
    owner: str | None = None  # `Other.name:` declares the member on Other


@dataclass(frozen=True, slots=True)
class Edge(Node):
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class TransitionGraph(Node):
    field: str
    edges: tuple[Edge, ...]
    terminals: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InvariantDecl(Decl):
    """`invariant Name { ... }` at module or entity level."""

    body: tuple[Stmt, ...]
    doc_comment: str | None = None

    @property
    def doc(self) -> str | None:
        return self.doc_comment


@dataclass(frozen=True, slots=True)
class EntityDecl(Decl):
    kind: str  # entity | external | value | variant
    base: str | None
    fields: tuple[Field, ...]
    transitions: tuple[TransitionGraph, ...]
    invariants: tuple[InvariantDecl, ...]
    annotations: tuple[Annotation, ...]
    doc_comment: str | None = None

    @property
    def doc(self) -> str | None:
        return self.doc_comment

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True, slots=True)
class EnumDecl(Decl):
    values: tuple[str, ...]
    doc_comment: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigParam(Node):
    name: str
    type: Expr | None
    default: Expr | None


@dataclass(frozen=True, slots=True)
class ConfigDecl(Decl):
    """`config { ... }` (name ``config``) or `alias/config { ... }` overrides."""

    params: tuple[ConfigParam, ...]


@dataclass(frozen=True, slots=True)
class DefaultDecl(Decl):
    type: str
    value: Expr


# ---- rules


@dataclass(frozen=True, slots=True)
class Clause(Node):
    KIND: ClassVar[str] = "clause"


@dataclass(frozen=True, slots=True)
class WhenClause(Clause):
    binding: str | None
    trigger: Expr | None  # None for an empty `when:` (the checker reports it)


@dataclass(frozen=True, slots=True)
class RequiresClause(Clause):
    conditions: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class EnsuresClause(Clause):
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class LetClause(Clause):
    name: str
    value: Expr


@dataclass(frozen=True, slots=True)
class ForClause(Clause):
    names: tuple[str, ...]
    source: Expr
    clauses: tuple[Clause, ...]


@dataclass(frozen=True, slots=True)
class IfClauseBranch(Node):
    condition: Expr | None
    clauses: tuple[Clause, ...]


@dataclass(frozen=True, slots=True)
class IfClause(Clause):
    branches: tuple[IfClauseBranch, ...]


@dataclass(frozen=True, slots=True)
class OtherClause(Clause):
    """A clause the references do not define (`produces:` ...), kept for the checker."""

    keyword: str
    values: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class AnnotationClause(Clause):
    annotation: Annotation


@dataclass(frozen=True, slots=True)
class RuleDecl(Decl):
    clauses: tuple[Clause, ...]
    doc_comment: str | None = None

    @property
    def doc(self) -> str | None:
        return self.doc_comment

    def all_clauses(self) -> Iterator[Clause]:
        """Every clause, descending into rule-level `for` and `if`."""
        stack = list(reversed(self.clauses))
        while stack:
            clause = stack.pop()
            yield clause
            if isinstance(clause, ForClause):
                stack.extend(reversed(clause.clauses))
            elif isinstance(clause, IfClause):
                for branch in reversed(clause.branches):
                    stack.extend(reversed(branch.clauses))

    @property
    def when(self) -> WhenClause | None:
        return next((c for c in self.all_clauses() if isinstance(c, WhenClause)), None)

    @property
    def requires(self) -> tuple[RequiresClause, ...]:
        return tuple(c for c in self.all_clauses() if isinstance(c, RequiresClause))

    @property
    def ensures(self) -> tuple[EnsuresClause, ...]:
        return tuple(c for c in self.all_clauses() if isinstance(c, EnsuresClause))

    @property
    def annotations(self) -> tuple[Annotation, ...]:
        return tuple(c.annotation for c in self.all_clauses() if isinstance(c, AnnotationClause))


# ---- contracts, actors, surfaces


@dataclass(frozen=True, slots=True)
class Param(Node):
    name: str
    type: Expr


@dataclass(frozen=True, slots=True)
class Signature(Node):
    name: str
    params: tuple[Param, ...]
    returns: Expr


@dataclass(frozen=True, slots=True)
class ContractDecl(Decl):
    signatures: tuple[Signature, ...]
    annotations: tuple[Annotation, ...]
    doc_comment: str | None = None


@dataclass(frozen=True, slots=True)
class ActorDecl(Decl):
    clauses: tuple[tuple[str, Expr], ...]
    annotations: tuple[Annotation, ...]
    doc_comment: str | None = None

    def clause(self, name: str) -> Expr | None:
        return next((e for n, e in self.clauses if n == name), None)


@dataclass(frozen=True, slots=True)
class SurfaceMember(Node):
    pass


@dataclass(frozen=True, slots=True)
class Facing(SurfaceMember):
    binding: str | None
    type: Expr


@dataclass(frozen=True, slots=True)
class Context(SurfaceMember):
    binding: str
    type: Expr  # may be `T where predicate`


@dataclass(frozen=True, slots=True)
class SurfaceLet(SurfaceMember):
    name: str
    value: Expr


@dataclass(frozen=True, slots=True)
class SurfaceItem(Node):
    expr: Expr
    when: Expr | None


@dataclass(frozen=True, slots=True)
class SurfaceItemFor(Node):
    names: tuple[str, ...]
    source: Expr
    items: tuple[Union["SurfaceItem", "SurfaceItemFor"], ...]


@dataclass(frozen=True, slots=True)
class SurfaceBlock(SurfaceMember):
    kind: str  # exposes | provides | related | timeout
    items: tuple[SurfaceItem | SurfaceItemFor, ...]


@dataclass(frozen=True, slots=True)
class ContractRef(Node):
    direction: str  # demands | fulfils
    name: str


@dataclass(frozen=True, slots=True)
class ContractsBlock(SurfaceMember):
    refs: tuple[ContractRef, ...]


@dataclass(frozen=True, slots=True)
class SurfaceFor(SurfaceMember):
    names: tuple[str, ...]
    source: Expr
    members: tuple[SurfaceMember, ...]


@dataclass(frozen=True, slots=True)
class SurfaceRequires(SurfaceMember):
    condition: Expr


@dataclass(frozen=True, slots=True)
class SurfaceAnnotation(SurfaceMember):
    annotation: Annotation


@dataclass(frozen=True, slots=True)
class SurfaceDecl(Decl):
    members: tuple[SurfaceMember, ...]
    doc_comment: str | None = None

    def all_members(self) -> Iterator[SurfaceMember]:
        for member in self.members:
            yield member
            if isinstance(member, SurfaceFor):
                yield from member.members

    @property
    def annotations(self) -> tuple[Annotation, ...]:
        return tuple(
            m.annotation for m in self.all_members() if isinstance(m, SurfaceAnnotation)
        )


# ---- the rest


@dataclass(frozen=True, slots=True)
class DeferredDecl(Decl):
    """`deferred Name.path ["hint"]`; `hint` also picks up a `-- see:` comment."""

    hint: str | None


@dataclass(frozen=True, slots=True)
class OpenQuestion(Decl):
    """`open question "..."`; `name` is the question text."""


@dataclass(frozen=True, slots=True)
class ResolvedQuestion(Decl):
    """allium's extension: a settled question, its answer and why.

    `name` is the question text.
    """

    answer: str
    rationale: str
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Module(Node):
    path: str
    version: int | None  # from the `-- allium: N` marker; None when missing
    version_span: Span | None
    decls: tuple[Decl, ...]
    # line -> codes suppressed by an `-- allium-ignore` comment on the line before
    suppressions: tuple[tuple[int, tuple[str, ...]], ...]
    comments: tuple[tuple[int, str], ...]

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [d for d in self.decls if isinstance(d, kind)]

    @property
    def entities(self) -> list[EntityDecl]:
        return self.of_type(EntityDecl)

    @property
    def rules(self) -> list[RuleDecl]:
        return self.of_type(RuleDecl)

    @property
    def uses(self) -> list[UseDecl]:
        return self.of_type(UseDecl)


# ---------------------------------------------------------------- JSON


def to_json(node: Any) -> Any:
    """A stable, plain-data form: every node is an object with a `node` tag."""
    if isinstance(node, Span):
        return node.to_json()
    if is_dataclass(node) and isinstance(node, Node):
        out: dict[str, Any] = {"node": type(node).__name__}
        for f in fields(node):
            out[f.name] = to_json(getattr(node, f.name))
        return out
    if isinstance(node, tuple):
        return [to_json(item) for item in node]
    return node
