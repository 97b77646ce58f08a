"""The typed Allium syntax tree.

Frozen, slotted dataclasses with a :class:`~allium.source.Span` on every node.
Nothing here imports lark, click or jinja2: later stages (check, plan, prompt)
work on these nodes only, and tests can build them by hand.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterator
from dataclasses import MISSING, FrozenInstanceError, dataclass, fields, is_dataclass
from typing import Any, ClassVar, TypeVar, Union, dataclass_transform

from allium.source import Span

_NODE_CLASSES: list[type] = []
_N = TypeVar("_N", bound=type)


# Tells type checkers that @node makes a frozen dataclass, so they see each
# node's constructor; at run time it only marks the function.
@dataclass_transform(frozen_default=True)
def node(cls: _N) -> _N:
    """A frozen, slotted dataclass, its methods shared or compiled in one batch.

    `@dataclass(frozen=True)` compiles six methods per class at import time,
    and with ~70 node classes that was 60-80 ms of every allium command.
    Here dataclasses only records the fields; equality, hashing, repr and
    immutability come from :class:`Node`, and every `__init__` is compiled
    together by :func:`_compile_inits` at the end of this module.  Instances
    behave as frozen dataclasses: `fields`, `replace`, `==`, `hash` and
    FrozenInstanceError on assignment.
    """
    made: Any = dataclass(slots=True, init=False, repr=False, eq=False)(cls)
    made._fields = tuple(f.name for f in fields(made))
    made._child_fields = tuple(name for name in made._fields if name != "span")
    _NODE_CLASSES.append(made)
    return made


@node
class Node:
    span: Span

    KIND: ClassVar[str] = "node"
    _fields: ClassVar[tuple[str, ...]] = ()
    _child_fields: ClassVar[tuple[str, ...]] = ()

    def children(self) -> Iterator[Node]:
        for name in self._child_fields:
            value = getattr(self, name)
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                for item in value:
                    if isinstance(item, Node):
                        yield item
                    elif isinstance(item, tuple):
                        yield from (x for x in item if isinstance(x, Node))

    def walk(self) -> Iterator[Node]:
        """This node and every node below it, depth first, in source order."""
        yield self
        for child in self.children():
            yield from child.walk()

    # What @dataclass(frozen=True) would generate, written once.

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self._fields])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__class__.__qualname__}({inner})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __getstate__(self) -> list[Any]:
        return list(self._values())

    def __setstate__(self, state: list[Any]) -> None:
        for name, value in zip(self._fields, state, strict=True):
            object.__setattr__(self, name, value)


# ---------------------------------------------------------------- expressions


@node
class Expr(Node):
    pass


@node
class Name(Expr):
    """An identifier; qualified names keep their `alias/` prefix (`oauth/Session`)."""

    name: str


@node
class Literal(Expr):
    kind: str  # number | string | backtick | duration
    value: str


@node
class Member(Expr):
    target: Expr
    name: str
    optional: bool = False  # `?.`


@node
class Arg(Node):
    name: str | None
    value: Expr


@node
class Call(Expr):
    """`f(x)`, `Trigger(a, b)`, `Entity.created(k: v)`, `xs.any(x => ...)`."""

    func: Expr
    args: tuple[Arg, ...]


@node
class Lookup(Expr):
    """Join lookup `Entity{field, other: value}`."""

    entity: Expr
    args: tuple[Arg, ...]


@node
class BinOp(Expr):
    """Binary operators, including `where`, `with`, `->`, `in`, `transitions_to`."""

    op: str
    left: Expr
    right: Expr


@node
class Unary(Expr):
    op: str  # not | exists | - | ?
    operand: Expr


@node
class SetLiteral(Expr):
    items: tuple[Expr, ...]


@node
class ObjectLiteral(Expr):
    fields: tuple[Arg, ...]


@node
class ListLiteral(Expr):
    items: tuple[Expr, ...]


@node
class Lambda(Expr):
    param: str
    body: Expr


@node
class IfExpr(Expr):
    branches: tuple[tuple[Expr, Expr], ...]  # (condition, value)
    otherwise: Expr | None


@node
class ForExpr(Expr):
    """`for x in xs: body`, in an invariant (quantifier) or a derived value."""

    names: tuple[str, ...]
    source: Expr
    body: Expr


@node
class GenericType(Expr):
    name: str
    args: tuple[Expr, ...]


# ---------------------------------------------------------------- statements


@node
class Stmt(Node):
    pass


@node
class ExprStmt(Stmt):
    expr: Expr


@node
class LetStmt(Stmt):
    name: str
    value: Expr


@node
class IfBranch(Node):
    condition: Expr | None  # None for `else`
    body: tuple[Stmt, ...]


@node
class IfStmt(Stmt):
    branches: tuple[IfBranch, ...]


@node
class ForStmt(Stmt):
    names: tuple[str, ...]
    source: Expr
    body: tuple[Stmt, ...]


# ---------------------------------------------------------------- annotations


@node
class Annotation(Node):
    """`@guidance`, `@invariant Name`, `@guarantee Name` (and v1 `guidance:`).

    `prose` is the body text verbatim, one line per comment line, with the
    leading `--` and one space removed.
    """

    kind: str  # guidance | invariant | guarantee
    name: str | None
    prose: str


# ---------------------------------------------------------------- declarations


@node
class Decl(Node):
    name: str

    @property
    def doc(self) -> str | None:
        return None


@node
class UseDecl(Decl):
    """`use "path" as alias`; `name` is the alias (empty when absent)."""

    path: str
    path_span: Span | None = None  # the quoted path, where diagnostics about it point


@node
class ModuleDecl(Decl):
    pass


@node
class Binding(Node):
    name: str
    type: Expr


@node
class GivenDecl(Decl):
    bindings: tuple[Binding, ...]


@node
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


@node
class Edge(Node):
    source: str
    target: str


@node
class TransitionGraph(Node):
    field: str
    edges: tuple[Edge, ...]
    terminals: tuple[str, ...]


@node
class InvariantDecl(Decl):
    """`invariant Name { ... }` at module or entity level."""

    body: tuple[Stmt, ...]
    doc_comment: str | None = None

    @property
    def doc(self) -> str | None:
        return self.doc_comment


@node
class EntityDecl(Decl):
    kind: str  # entity | external | value | variant
    base: str | None
    fields: tuple[Field, ...]
    transitions: tuple[TransitionGraph, ...]
    invariants: tuple[InvariantDecl, ...]
    annotations: tuple[Annotation, ...]
    doc_comment: str | None = None
    name_span: Span | None = None  # the name, where diagnostics about the declaration point

    @property
    def doc(self) -> str | None:
        return self.doc_comment

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


@node
class EnumDecl(Decl):
    values: tuple[str, ...]
    doc_comment: str | None = None
    name_span: Span | None = None


@node
class ConfigParam(Node):
    name: str
    type: Expr | None
    default: Expr | None


@node
class ConfigDecl(Decl):
    """`config { ... }` (name ``config``) or `alias/config { ... }` overrides."""

    params: tuple[ConfigParam, ...]


@node
class DefaultDecl(Decl):
    type: str
    value: Expr


# ---- rules


@node
class Clause(Node):
    KIND: ClassVar[str] = "clause"


@node
class WhenClause(Clause):
    binding: str | None
    trigger: Expr | None  # None for an empty `when:` (the checker reports it)


@node
class RequiresClause(Clause):
    conditions: tuple[Expr, ...]


@node
class EnsuresClause(Clause):
    body: tuple[Stmt, ...]


@node
class LetClause(Clause):
    name: str
    value: Expr


@node
class ForClause(Clause):
    names: tuple[str, ...]
    source: Expr
    clauses: tuple[Clause, ...]


@node
class IfClauseBranch(Node):
    condition: Expr | None
    clauses: tuple[Clause, ...]


@node
class IfClause(Clause):
    branches: tuple[IfClauseBranch, ...]


@node
class OtherClause(Clause):
    """A clause the references do not define (`produces:` ...), kept for the checker."""

    keyword: str
    values: tuple[Expr, ...]


@node
class AnnotationClause(Clause):
    annotation: Annotation


@node
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


@node
class Param(Node):
    name: str
    type: Expr


@node
class Signature(Node):
    name: str
    params: tuple[Param, ...]
    returns: Expr


@node
class ContractDecl(Decl):
    signatures: tuple[Signature, ...]
    annotations: tuple[Annotation, ...]
    doc_comment: str | None = None


@node
class ActorDecl(Decl):
    clauses: tuple[tuple[str, Expr], ...]
    annotations: tuple[Annotation, ...]
    doc_comment: str | None = None

    def clause(self, name: str) -> Expr | None:
        return next((e for n, e in self.clauses if n == name), None)


@node
class SurfaceMember(Node):
    pass


@node
class Facing(SurfaceMember):
    binding: str | None
    type: Expr
    binding_span: Span | None = None


@node
class Context(SurfaceMember):
    binding: str
    type: Expr  # may be `T where predicate`
    binding_span: Span | None = None


@node
class SurfaceLet(SurfaceMember):
    name: str
    value: Expr


@node
class SurfaceItem(Node):
    expr: Expr
    when: Expr | None


@node
class SurfaceItemFor(Node):
    names: tuple[str, ...]
    source: Expr
    items: tuple[Union[SurfaceItem, SurfaceItemFor], ...]


@node
class SurfaceBlock(SurfaceMember):
    kind: str  # exposes | provides | related | timeout
    items: tuple[SurfaceItem | SurfaceItemFor, ...]


@node
class ContractRef(Node):
    direction: str  # demands | fulfils
    name: str


@node
class ContractsBlock(SurfaceMember):
    refs: tuple[ContractRef, ...]


@node
class SurfaceFor(SurfaceMember):
    names: tuple[str, ...]
    source: Expr
    members: tuple[SurfaceMember, ...]


@node
class SurfaceRequires(SurfaceMember):
    condition: Expr


@node
class SurfaceAnnotation(SurfaceMember):
    annotation: Annotation


@node
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


@node
class DeferredDecl(Decl):
    """`deferred Name.path ["hint"]`; `hint` also picks up a `-- see:` comment."""

    hint: str | None


@node
class OpenQuestion(Decl):
    """`open question "..."`; `name` is the question text."""


@node
class ResolvedQuestion(Decl):
    """allium's extension: a settled question, its answer and why.

    `name` is the question text.
    """

    answer: str
    rationale: str
    extra: tuple[tuple[str, str], ...] = ()


@node
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


# ---------------------------------------------------------------- constructors


def _compile_inits(classes: list[type]) -> None:
    """Give every node class an `__init__` like the one dataclasses would write.

    One compile for all classes instead of one per class; each field is
    stored through its slot descriptor, which bypasses Node.__setattr__.
    """
    namespace: dict[str, Any] = {}
    source: list[str] = []
    for i, cls in enumerate(classes):
        params, body = [], []
        for f in fields(cls):
            setter = f"_set{i}_{f.name}"
            namespace[setter] = getattr(cls, f.name).__set__
            if f.default is not MISSING:
                namespace[f"_default{i}_{f.name}"] = f.default
                params.append(f"{f.name}=_default{i}_{f.name}")
            else:
                params.append(f.name)
            body.append(f"    {setter}(self, {f.name})")
        source.append(f"def _init{i}(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"]))
    exec(compile("\n\n".join(source), "<allium.ast constructors>", "exec"), namespace)
    for i, cls in enumerate(classes):
        init = namespace[f"_init{i}"]
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses a direct assignment to __init__


_compile_inits(_NODE_CLASSES)
