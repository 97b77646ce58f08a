"""Canonical Allium text: deterministic, and it parses back to the same AST."""

from __future__ import annotations

from pathlib import Path

import pytest

from allium.prompt.canonical import canonical_module
from allium.syntax import parse_file, parse_text
from .helpers import shape

SPECS = sorted((Path(__file__).parents[2] / "specs").glob("*.allium"))
FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.allium"))


def _roundtrip(text: str, path: str = "<input>") -> tuple[object, str]:
    first = parse_text(text, path)
    assert first.ok, first.diagnostics
    canonical = canonical_module(first.module)
    second = parse_text(canonical, path)
    assert second.ok, f"canonical text does not parse: {second.diagnostics}\n{canonical}"
    assert shape(second.module.decls) == shape(first.module.decls)
    assert second.module.version == first.module.version
    return first.module, canonical


@pytest.mark.parametrize("spec", SPECS + FIXTURES, ids=lambda p: p.name)
def test_showcase_specs_round_trip(spec: Path) -> None:
    module = parse_file(str(spec)).module
    assert module is not None
    _, canonical = _roundtrip(spec.read_text(encoding="utf-8"), str(spec))
    # A fixed point: canonical text renders to itself.
    assert canonical_module(parse_text(canonical, str(spec)).module) == canonical


def test_showcase_specs_are_present() -> None:
    assert len(SPECS) == 13


def test_layout_does_not_matter() -> None:
    a = "-- allium: 3\nrule R {\n    when: X(a)\n    requires: a.b = 1 and a.c = 2\n    ensures: a.d = 3\n}\n"
    b = ("-- allium: 3\n\n\nrule   R {\n  when:  X(a)\n  requires:\n      a.b = 1\n          and a.c = 2\n"
         "  -- a comment the AST does not keep\n  ensures:\n      a.d = 3\n}\n")
    assert canonical_module(parse_text(a).module) == canonical_module(parse_text(b).module)


EXPRESSIONS = [
    "(a or b) and c",
    "a or b and c",
    "not (a and b)",
    "(not a) = b",
    "a implies b implies c",
    "(a implies b) implies c",
    "a - (b - c)",
    "(a - b) - c",
    "a * (b + c)",
    "- -a",
    "-(a + b)",
    "(a | b)?",
    "(a ?? b).c",
    "(a = b) = c",
    "xs where (x implies y)",
    "xs -> (a.b)",
    "xs.any(x => x.v > 1 and x.w)",
    "(x => x) = y",
    "(if a: b else: c) + 1",
    "if a: (if b: c) else: d",
    "f(k: v, \"odd key\": 1, [1, 2], {a, b}, {k: v})",
    '"quote \\" and backslash \\\\"',
    "`weird value`",
    "8.hours + 1.5.minutes",
    "Set<List<Integer>>",
    "Order{id: x}?.status",
    "a not in {b, c}",
    "x transitions_to done",
    "(for x in xs: x.v) = 1",
    "exists Account{id: x} or not exists y",
]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_expression_round_trips(expr: str) -> None:
    _roundtrip(f"-- allium: 3\nentity E {{\n    v: {expr}\n}}\n")


def test_statements_clauses_and_questions_round_trip() -> None:
    text = '''-- allium: 3
use "./other.allium" as other
given {
    clock: Clock
}
default other/Policy strict = Policy{level: 2}
config {
    limit: Integer = 3
    ratio = 0.5
    other_limit: Integer
}
other/config {
    limit: 8.hours
}
variant Card : Payment {
    last4: String
}
external entity Clock {
    now: Timestamp
}
rule R {
    when: item: Item.status becomes ready
    for x in item.parts:
        requires: x.ok
        if x.big:
            ensures: x.flag = true
        else:
            ensures: x.flag = false
    ensures:
        let y = item.count + 1
        for (a, b) in item.pairs:
            a.n = b.n
        if y > 2:
            item.count = y
        else if y = 2:
            item.count = 0
        else:
            Notified(item: item)
    produces: Event, Other
    guidance: -- v1 style guidance
}
actor Admin {
    identified_by: User where role = admin
    within: Org
}
surface S {
    facing u: Admin
    context o: Order where status = open
    let total = o.total
    requires: o.visible
    exposes:
        o.id
        for l in o.lines:
            l.sku when l.visible
    provides:
        Pay(u, o) when o.status = open
    contracts:
        demands other/Gateway
        fulfils Notify
    @guidance
        -- multi-line
        --
        -- prose with a blank line
}
deferred Order.refund "https://example.com/refunds"
open question "What \\"quoted\\" thing?"
resolved question "Q?" {
    answer: "single line"
    rationale:
        -- two
        -- lines
    owner: "team"
}
enum Empty {}
'''
    _roundtrip(text)
