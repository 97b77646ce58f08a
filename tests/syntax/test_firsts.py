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

from allium.syntax.firsts import _atomic_head, dispatch, first_chars, single_chars
from allium.syntax.grammar import build_engine

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


HEADS = [
    # (regex, its atomic head and the rest; None = it has none)
    ("(?>ab)c", ("(?>ab)", "c")),
    ("(?>a)", ("(?>a)", "")),
    ("(?>(a|b)+)(?=c)", ("(?>(a|b)+)", "(?=c)")),
    ("(?>\\))x", ("(?>\\))", "x")),  # an escaped parenthesis
    ("(?>[)(])x", ("(?>[)(])", "x")),  # parentheses in a class
    ("(?>[])]+)y", ("(?>[])]+)", "y")),  # a leading `]` is literal in a class
    ("(?>[^]a])z", ("(?>[^]a])", "z")),
    ("(?:a)b", None),
    ("a(?>b)", None),
]


@pytest.mark.parametrize(("regex", "expected"), HEADS, ids=[r for r, _ in HEADS])
def test_atomic_head(regex: str, expected: tuple[str, str] | None) -> None:
    assert _atomic_head(regex) == expected


def test_dispatch_scans_a_shared_atomic_head_once() -> None:
    table = dispatch([("A", "(?>x+)y"), ("B", "(?>x+)(?=z)"), ("C", "(?>x+)"), ("D", "x"), ("E", "(?>x+)q")], 0)
    # Neighbours only: D between them keeps E apart, as the order must stay.
    assert table["x"] == "(?>x+)(?:y(?P<A>)|(?=z)(?P<B>)|(?P<C>))|(?P<D>x)|(?P<E>(?>x+)q)"


# Alternatives sharing heads, with groups and lookaheads in the tails.
SHARED = [("A", "(?>(x|y)+)(?=(z))"), ("B", "(?>(x|y)+)y"), ("C", "(?>(x|y)+)"), ("D", "[xyz]"), ("E", "(?>z+)")]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="xyz", max_size=12))
def test_factored_alternatives_match_as_the_plain_alternation(text: str) -> None:
    plain = re.compile("|".join(f"(?P<{name}>{regex})" for name, regex in SHARED))
    table = dispatch(SHARED, 0)
    for pos in range(len(text)):
        whole = plain.match(text, pos)
        narrowed = re.compile(table[text[pos]]).match(text, pos)
        assert (whole.lastgroup, whole.group()) == (narrowed.lastgroup, narrowed.group()), (text, pos)


def test_single_chars_are_characters_only_one_literal_can_start() -> None:
    alternatives = [("ARROW", "->"), ("MINUS", "-"), ("COLON", ":"), ("LPAR", "\\("), ("NAME", "[a-z]+")]
    alternatives += [("PLUSES", "\\++"), ("PLUS", "\\+")]
    # `-` may start `->`; `+` may start `++` (and PLUS comes second).
    assert singles(alternatives, 0) == {":": "COLON", "(": "LPAR"}
    # Case-insensitive: `a` is also `A`.  Anything that may start anywhere shadows all.
    assert singles([("A", "(?i)a"), ("B", "b")], 0) == {}
    assert singles([("COLON", ":")], re.IGNORECASE) == {}


def singles(alternatives: list[tuple[str, str]], flags: int) -> dict[str, str]:
    return single_chars(alternatives, flags, dispatch(alternatives, flags))


# Allium's own characters, its likely typos, and some that are neither.
TEXT = st.text(alphabet=string.printable + "é→\u00a0", max_size=60)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_narrowed_matchers_agree_with_the_whole_regex(text: str) -> None:
    engine = build_engine()
    for pos in range(len(text)):
        whole = engine._match(text, pos)
        narrowed = engine._matcher(text[pos])(text, pos)
        assert (whole is None) == (narrowed is None), (text, pos)
        if whole is not None:
            assert (narrowed.lastgroup, narrowed.group()) == (whole.lastgroup, whole.group()), (text, pos)
        single = engine._singles.get(text[pos])
        if single is not None:  # the engine takes these without a regex
            assert (whole.lastgroup, whole.group()) == (single, text[pos]), (text, pos)


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
        narrowed = engine._matcher(text[pos])(text, pos)
        assert (whole and (whole.lastgroup, whole.group())) == (narrowed and (narrowed.lastgroup, narrowed.group()))
