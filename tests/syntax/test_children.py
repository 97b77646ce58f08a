"""Builder methods get their children by name (allium/syntax/children.py).

Which child goes to which parameter is decided by grammar symbol, per
alternative, and checked when the tables are built: a grammar edit that
leaves a child or a parameter unmatched must fail there, not hand a method
the wrong child.
"""

from __future__ import annotations

from typing import Any

import pytest
from lark import Lark

from allium.syntax import internals
from allium.syntax.children import ChildrenError, Grammar, ReferenceTree, TreeBuilder, bindings, takes

GRAMMAR = r"""
start: _item*
_item: pair | swap | group
pair: NAME "=" NAME ("as" NAME)? ";"
swap: NAME "<->" NAME ";"
group: "(" _names? ")" ";"
_names: NAME ("," NAME)*
NAME: /[a-z]+/
%ignore " "
"""


def parse(text: str, builder: Any) -> Any:
    parser = Lark(GRAMMAR, parser="lalr", maybe_placeholders=False, tree_class=ReferenceTree,
                  propagate_positions=True)
    grammar = Grammar(internals.rule_shapes(parser).values())
    return TreeBuilder(grammar, type(builder)).build(builder, parser.parse(text))


def grammar_of(text: str) -> Grammar:
    parser = Lark(text, parser="lalr", maybe_placeholders=False)
    return Grammar(internals.rule_shapes(parser).values())


class Builder:
    def start(self, meta, item: list[Any]) -> list[Any]:
        return item

    @takes(target="NAME", source="NAME", alias="NAME")
    def pair(self, meta, target, source, alias=None):
        return ("pair", str(target), str(source), None if alias is None else str(alias))

    @takes(left="NAME", right="NAME")
    def swap(self, meta, left, right):
        return ("swap", str(left), str(right))

    def group(self, meta, names: list[Any]):
        return ("group", [str(n) for n in names])


def test_children_arrive_by_name_in_the_order_the_method_lists_them():
    assert parse("a = b; c = d as e; x <-> y;", Builder()) == [
        ("pair", "a", "b", None),
        ("pair", "c", "d", "e"),
        ("swap", "x", "y"),
    ]


def test_a_repeat_is_one_list_and_an_absent_one_an_empty_list():
    assert parse("(a, b, c); ();", Builder()) == [("group", ["a", "b", "c"]), ("group", [])]


def test_a_child_no_parameter_takes_is_refused():
    class Missing(Builder):
        @takes(target="NAME", source="NAME")  # the `as NAME` alternative has a third NAME
        def pair(self, meta, target, source):
            return None

    with pytest.raises(ChildrenError, match="rule 'pair': no parameter of the builder method takes its child NAME"):
        bindings(grammar_of(GRAMMAR), Missing)


def test_a_parameter_some_alternative_leaves_empty_needs_a_default():
    class NoDefault(Builder):
        @takes(target="NAME", source="NAME", alias="NAME")
        def pair(self, meta, target, source, alias):
            return None

    with pytest.raises(ChildrenError, match="'alias' may be left without a child, so needs a default"):
        bindings(grammar_of(GRAMMAR), NoDefault)


def test_a_rule_without_a_method_and_a_misspelt_takes_are_refused():
    class Unnamed(Builder):
        swap = None  # type: ignore[assignment]

    with pytest.raises(ChildrenError, match="rule 'swap' has no builder method"):
        bindings(grammar_of(GRAMMAR), Unnamed)

    class Misspelt(Builder):
        @takes(lefft="NAME", right="NAME")
        def swap(self, meta, left, right):
            return None

    with pytest.raises(ChildrenError, match="@takes names 'lefft', which it has no parameter for"):
        bindings(grammar_of(GRAMMAR), Misspelt)


def test_a_parameter_that_takes_a_repeat_is_a_list_in_every_alternative():
    class Single(Builder):
        @takes(only="_names")
        def group(self, meta, only=None):
            return None

    # `only` takes a list in one alternative, so it is a list in every one.
    assert [arg.many for b in bindings(grammar_of(GRAMMAR), Single).values() if b.method == "group"
            for arg in b.args] == [True, True]
