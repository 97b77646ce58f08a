"""Which lexer alternatives can match at a given first character.

lark's scanner is one regex, `(?P<A>...)|(?P<B>...)|...`, and Python's `re`
tries the alternatives in order, so every `:` is first offered to the three
newline terminals, both qualified-name forms, numbers, names, strings...
About 40% of the front end's instructions went there.  A regex that cannot
start with the next character cannot match there, so for each ASCII
character we keep only the alternatives that can, in their original order:
the first one to match is then the one the whole regex would have chosen.

The first characters come from Python's own regex parser (reached through
internals.py, which checks it is still there), and every doubt
widens them: a construct this module does not know, a character class
spelled by category, a case-insensitive flag, or a pattern that can match
the empty string all count as "can start with anything".

Two more savings, both exact:

* Alternatives that begin with the same atomic group, `(?>HEAD)TAIL`, are
  tried as one, `(?>HEAD)(?:TAIL1(?P<A>)|TAIL2(?P<B>)|...)`: an atomic group
  matches one way or not at all, so each original alternative would have
  matched HEAD to the same place, and now HEAD is scanned once.  The empty
  named group closes last, so `lastgroup` still names the alternative.
  Allium's three newline terminals differ only in what follows the run.
* A character that only one single-character literal terminal can start
  (`:`, `(`, `,` ...) needs no regex at all: see :func:`single_chars`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from allium.syntax.internals import regex_parser

ASCII = [chr(i) for i in range(128)]


def first_chars(regex: str, flags: int = 0) -> frozenset[str] | None:
    """The ASCII characters a match of `regex` can start with; None if it could start with any."""
    parsed = regex_parser().parse(regex, flags)
    if parsed.state.flags & re.IGNORECASE:  # given, or set inline by `(?i)`
        return None
    chars, nullable = _sequence(parsed)
    return None if chars is None or nullable else frozenset(chars)


def dispatch(alternatives: Iterable[tuple[str, str]], flags: int) -> dict[str, str]:
    """For each ASCII character, the scanner regex narrowed to what can match there.

    `alternatives` are (name, regex) in scanner order; characters that no
    alternative can start with are left out (the caller's full regex will
    report them).
    """
    named = [(name, regex, first_chars(regex, flags)) for name, regex in alternatives]
    out: dict[str, str] = {}
    joined: dict[tuple[tuple[str, str], ...], str] = {}  # one string per distinct narrowing
    for char in ASCII:
        kept = tuple((name, regex) for name, regex, firsts in named if firsts is None or char in firsts)
        if kept:
            out[char] = joined.get(kept) or joined.setdefault(kept, _alternation(kept))
    return out


def single_chars(alternatives: Iterable[tuple[str, str]], flags: int, table: dict[str, str]) -> dict[str, str]:
    """Characters that are a whole token by themselves: char -> terminal name.

    That is where the narrowed alternatives for a character (`table`, from
    :func:`dispatch`) are exactly one regex matching that one character and
    nothing else: the token there is then that character, whatever follows.
    """
    out: dict[str, str] = {}
    for name, regex in alternatives:
        char = _literal_char(regex, flags)
        if char is not None and table.get(char) == f"(?P<{name}>{regex})":
            out[char] = name
    return out


def _literal_char(regex: str, flags: int) -> str | None:
    parsed = regex_parser().parse(regex, flags)
    if parsed.state.flags & re.IGNORECASE or len(parsed.data) != 1:
        return None
    op, av = parsed.data[0]
    return chr(av) if op is regex_parser().LITERAL else None


def _alternation(alternatives: tuple[tuple[str, str], ...]) -> str:
    """`(?P<A>a)|(?P<B>b)|...`, with neighbours that share an atomic head tried as one."""
    parts: list[str] = []
    run: list[tuple[str, str]] = []  # (name, tail) under the head `head`
    head: str | None = None
    for name, regex in alternatives:
        split = _atomic_head(regex)
        if split is not None and split[0] == head:
            run.append((name, split[1]))
            continue
        parts.extend(_factored(head, run))
        head, run = (split[0], [(name, split[1])]) if split else (None, [(name, regex)])
    parts.extend(_factored(head, run))
    return "|".join(parts)


def _factored(head: str | None, run: list[tuple[str, str]]) -> list[str]:
    if head is None or len(run) < 2:
        return [f"(?P<{name}>{head or ''}{tail})" for name, tail in run]
    tails = "|".join(f"{tail}(?P<{name}>)" for name, tail in run)
    return [f"{head}(?:{tails})"]


def _atomic_head(regex: str) -> tuple[str, str] | None:
    """`regex` as (`(?>...)`, the rest) when it starts with an atomic group."""
    if not regex.startswith("(?>"):
        return None
    depth, index, in_class = 0, 0, False
    while index < len(regex):
        char = regex[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if regex.startswith("]", index + 1) or regex.startswith("^]", index + 1):
                index += 1 + regex.startswith("^", index + 1)  # a leading `]` is literal
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return regex[: index + 1], regex[index + 1 :]
        index += 1
    return None  # pragma: no cover - not a valid regex


def _sequence(items: Iterable[tuple[Any, Any]]) -> tuple[set[str] | None, bool]:
    """First characters of a sequence of regex items, and whether it can match empty."""
    chars: set[str] = set()
    for op, av in items:
        first, nullable = _item(op, av)
        if first is None:
            return None, True
        chars |= first
        if not nullable:
            return chars, False
    return chars, True


def _item(op: Any, av: Any) -> tuple[set[str] | None, bool]:
    c = regex_parser()
    if op is c.LITERAL:
        return {chr(av)}, False
    if op is c.IN:
        return _class(av), False
    if op is c.SUBPATTERN:
        _group, add_flags, _del_flags, pattern = av
        if add_flags & re.IGNORECASE:
            return None, True
        return _sequence(pattern)
    if op is c.ATOMIC_GROUP:
        return _sequence(av)
    if op in c.REPEATS:
        low, _high, pattern = av
        chars, nullable = _sequence(pattern)
        return chars, nullable or low == 0
    if op is c.BRANCH:
        union: set[str] = set()
        any_nullable = False
        for pattern in av[1]:
            first, nullable = _sequence(pattern)
            if first is None:
                return None, True
            union |= first
            any_nullable = any_nullable or nullable
        return union, any_nullable
    if op in c.ZERO_WIDTH:
        return set(), True  # a lookaround or anchor only narrows what follows
    return None, True  # NOT_LITERAL, ANY, back references...: anything


def _class(items: Iterable[tuple[Any, Any]]) -> set[str] | None:
    c = regex_parser()
    chars: set[str] = set()
    for op, av in items:
        if op is c.LITERAL:
            chars.add(chr(av))
        elif op is c.RANGE:
            low, high = av
            chars.update(chr(i) for i in range(low, min(high, 127) + 1))
        else:  # NEGATE, CATEGORY (\w, \s...): not worth being exact
            return None
    return chars
