"""Which child of a grammar rule is which: the AST builder's methods get them by name.

A builder method takes `meta` and then one keyword parameter per kind of
child.  `@takes(alias="NAME", path="STRING")` says which grammar symbols a
parameter takes; without it a parameter takes the symbol spelt like it
(`name` takes NAME, `expr` takes expr, `rule_member` takes `_rule_member`).
The tokens of a `!rule` (`!surface_keyword: "exposes" | ...`) are `keyword`.

Which child goes to which parameter is worked out here, once per grammar,
from the grammar's compiled rules: lark expands each `?`, `*` and `(a | b)`
into separate alternatives, and for each alternative every kept child is
matched by its symbol to the first parameter that takes it and is still
free (two parameters may take the same symbol, `left` and `right` of `a in
b`: they are filled in the order the method lists them).  A parameter that
takes a repeat (`x*`, `_args`) gets a list of everything it matched; one that
matches nothing in an alternative gets its default (a list: empty).  A child
no parameter takes, or a parameter without a default that can be left
unmatched, is a ChildrenError when the tables are built, so a grammar edit
cannot silently hand a method the wrong child, as indexing `c[2]` could.

An inlined `_rule` whose every alternative yields one value (`_field_name:
NAME | dotted_name`) passes that value on; one that can yield several
(`_rule_member`, a repeat) passes a list.  The engine's generated reductions
(reductions.py) and the walk over lark's own parse tree (:func:`build_tree`)
call the builder from the same :class:`Binding`\\ s.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

from lark import Token, Tree

from allium.syntax.internals import Reduction

F = TypeVar("F", bound=Callable[..., Any])

VALUE, ONE, MANY, NONE = "value", "one", "many", "none"  # what a kept child yields


class ChildrenError(Exception):
    """The grammar and the builder's named children do not fit (a bug in allium)."""


def takes(**symbols: str | tuple[str, ...]) -> Callable[[F], F]:
    """Name the grammar symbols each parameter of a builder method takes."""

    def mark(method: F) -> F:
        method.__allium_takes__ = {  # type: ignore[attr-defined]
            param: (symbol,) if isinstance(symbol, str) else symbol for param, symbol in symbols.items()
        }
        return method

    return mark


class Arg(NamedTuple):
    param: str
    many: bool  # a list of everything matched
    parts: tuple[tuple[int, bool], ...]  # (expansion index, the child is a list to splice)


class Binding(NamedTuple):
    """How to call the builder for one alternative of a rule."""

    method: str
    args: tuple[Arg, ...]
    pattern: tuple[tuple[str, str], ...]  # per kept child: (VALUE/ONE/MANY, symbol), to recognise it in lark's tree


Pattern = tuple[tuple[str, str], ...]


class Grammar:
    """The grammar's compiled rules, grouped: inlined `_rule`s and the rest by builder method."""

    def __init__(self, shapes: Iterable[Reduction]) -> None:
        self.inline: dict[str, list[Reduction]] = defaultdict(list)
        self.methods: dict[str, list[Reduction]] = defaultdict(list)
        for shape in shapes:
            if shape.origin.startswith("_"):
                self.inline[shape.origin].append(shape)
            elif not shape.expand1:
                self.methods[shape.name].append(shape)
        self._kinds: dict[str, str] = {}
        self._elements: dict[str, frozenset[str]] = {}

    def kind(self, symbol: str, inline: bool) -> str:
        """What a kept child of this symbol yields: VALUE, or for an inlined rule ONE, MANY or NONE."""
        if not inline:
            return VALUE
        known = self._kinds.get(symbol)
        if known is None:
            self._kinds[symbol] = MANY  # a rule that recurses into itself repeats
            counts = {tuple(self.kind(s, i) for _, s, i in alt.kept if self.kind(s, i) != NONE)
                      for alt in self.inline[symbol]}
            if all(not kinds for kinds in counts):
                known = NONE
            elif all(kinds in ((VALUE,), (ONE,)) for kinds in counts):
                known = ONE
            else:
                known = MANY
            self._kinds[symbol] = known
        return known

    def elements(self, symbol: str) -> frozenset[str]:
        """The symbols a repeat lark made up (`__rule_decl_star_12`) is a list of."""
        known = self._elements.get(symbol)
        if known is None:
            self._elements[symbol] = frozenset()
            found: set[str] = set()
            for alt in self.inline[symbol]:
                for _, child, inline in alt.kept:
                    if child == symbol or (inline and self.kind(child, inline) == NONE):
                        continue
                    found |= self.elements(child) if _made_up(child) else {child}
            known = self._elements[symbol] = frozenset(found)
        return known


Taker = Callable[[str, str], bool]  # does this parameter take a child of this symbol?


def _made_up(symbol: str) -> bool:
    return symbol.startswith("__")  # lark's names for the rules of `x*`, `x+`, `(a b)*`


def _claims(method: Any) -> tuple[list[str], Taker, dict[str, bool]]:
    """The method's child parameters, whether one takes a symbol, and whether each has a default."""
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError) as exc:  # pragma: no cover - builder methods are plain functions
        raise ChildrenError(f"{method!r}: {exc}") from exc
    params = [p for p in signature.parameters.values() if p.name not in ("self", "meta")]
    declared: dict[str, tuple[str, ...]] = getattr(method, "__allium_takes__", {})
    for name in declared:
        if name not in {p.name for p in params}:
            raise ChildrenError(f"{method.__qualname__}: @takes names {name!r}, which it has no parameter for")

    def claims(param: str, symbol: str) -> bool:
        if param in declared:
            return symbol in declared[param]
        return symbol.lower().lstrip("_") == param

    defaults = {p.name: p.default is not inspect.Parameter.empty for p in params}
    return [p.name for p in params], claims, defaults


def bindings(grammar: Grammar, builder: type) -> dict[tuple[str, tuple[tuple[int, str, bool], ...], int], Binding]:
    """(method, kept children, size) of every alternative -> its Binding."""
    out: dict[tuple[str, tuple[tuple[int, str, bool], ...], int], Binding] = {}
    for method, alternatives in grammar.methods.items():
        function = getattr(builder, method, None)
        if function is None:
            raise ChildrenError(f"the grammar's rule {method!r} has no builder method")
        params, claims, defaults = _claims(function)
        taker = _taker(grammar, claims)
        many = {
            param
            for alt in alternatives
            for _, symbol, inline in alt.kept
            if grammar.kind(symbol, inline) == MANY
            for param in params
            if taker(param, symbol)
        }
        for alt in alternatives:
            out[_key(alt)] = _bind(method, alt, grammar, params, many, defaults, taker)
    return out


def _taker(grammar: Grammar, claims: Taker) -> Taker:
    def takes_child(param: str, symbol: str) -> bool:
        if claims(param, symbol):
            return True
        elements = grammar.elements(symbol) if _made_up(symbol) else frozenset()
        return bool(elements) and all(claims(param, element) for element in elements)

    return takes_child


def _bind(
    method: str,
    alt: Reduction,
    grammar: Grammar,
    params: list[str],
    many: set[str],
    defaults: dict[str, bool],
    taker: Taker,
) -> Binding:
    parts: dict[str, list[tuple[int, bool]]] = {param: [] for param in params}
    pattern = []
    for index, symbol, inline in alt.kept:
        kind = grammar.kind(symbol, inline)
        if kind == NONE:
            continue
        pattern.append((kind, symbol))
        free = [p for p in params if taker(p, symbol) and (p in many or not parts[p])]
        if not free:
            raise ChildrenError(f"rule {method!r}: no parameter of the builder method takes its child {symbol}")
        parts[free[0]].append((index, kind == MANY))
    args = []
    for param in params:
        if parts[param] or param in many:
            args.append(Arg(param, param in many, tuple(parts[param])))
        elif not defaults[param]:
            raise ChildrenError(f"rule {method!r}: {param!r} may be left without a child, so needs a default")
    return Binding(method, tuple(args), tuple(pattern))


def _key(shape: Reduction) -> tuple[str, tuple[tuple[int, str, bool], ...], int]:
    return (shape.name, shape.kept, shape.size)


def arguments(binding: Binding, children: dict[int, Any]) -> dict[str, Any]:
    """The keyword arguments for `binding`, from its children by expansion index."""
    out = {}
    for param, many, parts in binding.args:
        if not many:
            out[param] = children[parts[0][0]]
        else:
            items: list[Any] = []
            for index, splice in parts:
                if splice:
                    items.extend(children[index])
                else:
                    items.append(children[index])
            out[param] = items
    return out


# ---------------------------------------------------------------- lark's own runtime


class ReferenceTree(Tree):
    """lark's parse tree, with each inlined `_rule`'s children kept together as one child.

    lark splices an inlined rule's children into its parent (reading the
    inlined node's `children`); here that node offers itself instead, so
    the parent's method can tell which children came from where, as the
    engine can.  A class (not a function) for lark's `tree_class`, as lark's
    grammar cache is keyed on the option's text.
    """

    def __init__(self, data: str, children: list[Any], meta: Any = None) -> None:
        self.data = data
        self._meta = meta
        if data.startswith("_"):
            items: list[Any] | None = None
            for child in children:  # an inlined rule inside this one: splice its items
                inner = child.items if isinstance(child, ReferenceTree) else None
                if items is None:
                    # A repeat's list is ours to extend (as lark does), or
                    # every `x*` would copy its list once per item.
                    items = inner if inner is not None else [child]
                elif inner is not None:
                    items.extend(inner)
                else:
                    items.append(child)
            self.items: list[Any] | None = [] if items is None else items
            self._children: list[Any] = []
        else:
            self.items = None
            self._children = children

    @property
    def children(self) -> list[Any]:
        return [self] if self.items is not None else self._children

    @children.setter
    def children(self, value: list[Any]) -> None:
        self._children = value


class TreeBuilder:
    """Calls the AST builder over lark's parse tree, as the engine calls it while parsing."""

    def __init__(self, grammar: Grammar, builder: type) -> None:
        self._grammar = grammar
        bound = bindings(grammar, builder)
        # (method, number of children) -> the alternatives that have that many
        self._alternatives: dict[tuple[str, int], list[tuple[Pattern, Binding, tuple[int, ...]]]] = (
            defaultdict(list)
        )
        for (method, kept, _size), binding in bound.items():
            positions = tuple(index for index, symbol, inline in kept if grammar.kind(symbol, inline) != NONE)
            alike = self._alternatives[method, len(positions)]
            for pattern, other, others in alike:
                if _overlap(pattern, binding.pattern) and _relative(other, others) != _relative(binding, positions):
                    raise ChildrenError(f"rule {method!r}: two alternatives look alike in lark's tree but differ")
            alike.append((binding.pattern, binding, positions))

    def build(self, builder: Any, tree: Any) -> Any:
        if not isinstance(tree, Tree):
            return tree
        children: list[Any] = tree.children
        binding, positions = self._match(tree.data, children)
        values: dict[int, Any] = {}
        for (kind, _), index, child in zip(binding.pattern, positions, children, strict=True):
            if kind == VALUE:
                values[index] = self.build(builder, child)
            elif kind == ONE:
                values[index] = self.build(builder, child.items[0])
            else:
                values[index] = [self.build(builder, item) for item in child.items]
        return getattr(builder, binding.method)(tree.meta, **arguments(binding, values))

    def _match(self, method: str, children: list[Any]) -> tuple[Binding, tuple[int, ...]]:
        alike = self._alternatives.get((method, len(children)), [])
        if len(alike) == 1:  # lark built the node by one of them: the only one this size
            return alike[0][1], alike[0][2]
        for pattern, binding, positions in alike:
            if all(_fits(p, c) for p, c in zip(pattern, children, strict=True)):
                return binding, positions
        raise ChildrenError(f"rule {method!r}: no alternative has the children {children!r}")


def _fits(expected: tuple[str, str], child: Any) -> bool:
    kind, symbol = expected
    if kind == VALUE:
        if isinstance(child, ReferenceTree) and child.items is not None:
            return False
        # A terminal is a token of that type; a rule may also stand for one token (`?member: NAME`).
        return child.type == symbol if symbol.isupper() and isinstance(child, Token) else not symbol.isupper()
    return isinstance(child, ReferenceTree) and child.data == symbol


def _overlap(one: Pattern, other: Pattern) -> bool:
    """Could the same children fit both patterns?"""
    if len(one) != len(other):
        return False
    for (kind, symbol), (other_kind, other_symbol) in zip(one, other, strict=True):
        if (kind == VALUE) != (other_kind == VALUE):
            return False
        if (kind != VALUE or (symbol.isupper() and other_symbol.isupper())) and symbol != other_symbol:
            return False
    return True


def _relative(binding: Binding, positions: tuple[int, ...]) -> tuple[Any, ...]:
    """The binding with children counted among the kept ones, not in the expansion."""
    where = {index: n for n, index in enumerate(positions)}
    return tuple((arg.param, arg.many, tuple((where[i], s) for i, s in arg.parts)) for arg in binding.args)
