"""First-character narrowing of the lexer's regex (firsts.py).

The narrowing is only sound if it never drops an alternative that could
match, so the fixtures pin what each regex construct contributes, and the
property test holds the engine's narrowed matchers to the whole regex at
every position of arbitrary text.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allium.syntax.firsts import dispatch, first_chars
from allium.syntax.parser import build_engine

UPPER = frozenset(string.ascii_uppercase)

FIRSTS = [
    # (regex, the first characters it can start with; None = any)
    ("abc", {"a"}),
    ("[A-Z][a-z]*", UPPER),
    ("a?b", {"a", "b"}),
    ("a*+b", {"a", "b"}),
    ("(x|y)z", {"x", "y"}),
    ("(?:--)?\\n", {"-", "\n"}),
    ("(?>ab|c)", {"a", "c"}),
    ("\\bfoo", {"f"}),  # an anchor is zero-width
    ("(?=a)b", {"b"}),  # a lookahead only narrows: widening is safe
    ("(?P<n>q)r", {"q"}),
    ("[a-c_]", {"a", "b", "c", "_"}),
    ("x*", None),  # can match the empty string
    ("a|", None),
    ("[^a]", None),
    ("\\w+", None),
    (".", None),
    ("(?i)a", None),  # case-insensitive, inline
    ("(?i:a)b", None),
    ("(a)\\1", {"a"}),
    ("(a?)\\1b", None),  # a back reference: anything
]


@pytest.mark.parametrize(("regex", "expected"), FIRSTS, ids=[r for r, _ in FIRSTS])
def test_first_chars(regex: str, expected: set[str] | None) -> None:
    assert first_chars(regex) == (None if expected is None else frozenset(expected))


def test_first_chars_honours_a_case_insensitive_flag() -> None:
    assert first_chars("a", re.IGNORECASE) is None


def test_dispatch_keeps_scanner_order_and_drops_what_cannot_start() -> None:
    table = dispatch([("ARROW", "->"), ("MINUS", "-"), ("NAME", "[a-z]+"), ("ANY", "x?y?")], 0)
    assert table["-"] == "(?P<ARROW>->)|(?P<MINUS>-)|(?P<ANY>x?y?)"
    assert table["q"] == "(?P<NAME>[a-z]+)|(?P<ANY>x?y?)"
    # A nullable alternative can match anywhere, so every character keeps it.
    assert all("(?P<ANY>x?y?)" in pattern for pattern in table.values())
    assert len(table) == 128


def test_dispatch_leaves_out_characters_nothing_starts_with() -> None:
    table = dispatch([("A", "a"), ("B", "b+")], 0)
    assert set(table) == {"a", "b"}


# Allium's own characters, its likely typos, and some that are neither.
TEXT = st.text(alphabet=string.printable + "é→\u00a0", max_size=60)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_narrowed_matchers_agree_with_the_whole_regex(text: str) -> None:
    engine = build_engine()
    for pos in range(len(text)):
        whole = engine._match(text, pos)
        narrowed = engine._matchers[text[pos]](text, pos)
        assert (whole is None) == (narrowed is None), (text, pos)
        if whole is not None:
            assert (narrowed.lastgroup, narrowed.group()) == (whole.lastgroup, whole.group()), (text, pos)


def test_narrowed_matchers_agree_on_allium_text() -> None:
    text = (
        "-- allium: 3\nentity Order {\n    status: pending | shipped  -- note\n"
        "    total: Decimal\n}\nrule Ship {\n    when: ShipOrder(order)\n"
        "    requires: order.status = pending and order.total >= 0\n"
        "    ensures: order.status = shipped\n        -- more\n}\n"
        'surface S { exposes: a/b.c ?? "x\\"y" `t` 1_000.5 => Set<A> @guidance @invariant }\n'
    )
    engine = build_engine()
    for pos in range(len(text)):
        whole = engine._match(text, pos)
        narrowed = engine._matchers[text[pos]](text, pos)
        assert (whole and (whole.lastgroup, whole.group())) == (narrowed and (narrowed.lastgroup, narrowed.group()))
