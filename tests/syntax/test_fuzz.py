"""Mutation fuzzing: whatever real specs turn into, parsing ends in a clean result.

Hypothesis takes real corpus files (or, without the corpus, a few built-in
specs), deletes, duplicates and swaps tokens and lines, and checks that
parse_text never raises and returns either a Module or at least one error
Diagnostic whose span lies inside the file.
"""

from __future__ import annotations

import re
from functools import lru_cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allium.diagnostics import Severity
from allium.syntax import parse_text

from .conftest import CORPUS

BUILTIN = [
    """-- allium: 3
module shop

use "./payments.allium" as pay

given {
    clock: Clock
}

config {
    grace: Duration = 3.days
    limit: Integer = 10
}

enum Channel { web | phone }

entity Order {
    status: pending | paid | shipped | cancelled
    total: Decimal
    paid_at: Timestamp when status = paid | shipped
    lines: OrderLine with order = this
    big_lines: lines where amount > 100 -> product
    is_late: now > created_at + config.grace
    discount(rate): total * rate

    transitions status {
        pending -> paid
        paid -> shipped
        pending -> cancelled
        terminal: shipped, cancelled
    }

    invariant Positive { total >= 0 }
}

rule Pay {
    when: PaymentReceived(order, amount)
    requires: order.status = pending
    requires:
        amount >= order.total
        not exists Refund{order: order}
    let fee = amount * 0.02 ?? 0
    ensures:
        order.status = paid
        for line in order.lines:
            line.reserved = true
        if fee > 10:
            FeeCharged(order, fee)
        else:
            Ledger.created(order: order, fee: fee)
    @guidance
        -- Charge the card once.
}

surface Checkout {
    facing buyer: Customer
    context order: Order where buyer = buyer
    exposes:
        order.total
        order.status when order.status != cancelled
    provides:
        Pay(order) when order.status = pending
    contracts:
        demands pay/Gateway
}

deferred Pricing.discounts "see: pricing.allium"
open question "Do we ship abroad?"
resolved question "Who refunds?" {
    answer: "Finance."
    rationale:
        -- Support cannot move money.
}
""",
    """-- allium: 1
entity Invitation {
    expires_at: Timestamp
    status: sent | accepted | expired
    guidance:
        -- Never edit a sent invitation.
}

rule Expire {
    when: invite: Invitation.expires_at <= now
    requires: invite.status = sent
    ensures: invite.status = expired
    guidance: -- Runs hourly.
}

invariant OneLive {
    for a in Invitations:
        for b in Invitations:
            a != b implies a.email != b.email or a.status = expired
}

contract Codec {
    encode: (v: Any) -> ByteArray
    @invariant Roundtrip
        -- decode(encode(v)) = v
}

actor Admin {
    identified_by: User where role = admin
}

default Role viewer = { name: "viewer", permissions: { "read" } }
""",
]

TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|--[^\n]*|[A-Za-z_][A-Za-z0-9_]*|\d+|\s+|\?\?|\?\.|->|=>|[<>!=]=|.', re.S)
MAX_SEED_CHARS = 12_000  # keep each example quick


@lru_cache(maxsize=1)
def seeds() -> tuple[str, ...]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.is_file():
        return tuple(BUILTIN)
    texts = []
    for line in manifest.read_text(encoding="utf-8").splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 5 and cols[4] in ("1", "2", "3"):
            path = CORPUS / cols[0]
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            if 0 < len(text) <= MAX_SEED_CHARS:
                texts.append(text)
    return tuple(texts) + tuple(BUILTIN) if texts else tuple(BUILTIN)


MUTATIONS = ("delete_token", "duplicate_token", "swap_tokens", "delete_line", "duplicate_line", "swap_lines")


def mutate(text: str, ops: list[tuple[str, int, int]]) -> str:
    for kind, i, j in ops:
        if kind.endswith("line") or kind.endswith("lines"):
            parts = text.splitlines(keepends=True)
        else:
            parts = TOKEN.findall(text)
        if not parts:
            continue
        a, b = i % len(parts), j % len(parts)
        if kind.startswith("delete"):
            del parts[a]
        elif kind.startswith("duplicate"):
            parts.insert(a, parts[a])
        else:
            parts[a], parts[b] = parts[b], parts[a]
        text = "".join(parts)
    return text


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    ops=st.lists(
        st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 16), st.integers(0, 1 << 16)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_specs_give_a_module_or_a_clean_diagnostic(seed, ops):
    pool = seeds()
    text = mutate(pool[seed % len(pool)], ops)
    result = parse_text(text, "fuzz.allium")  # must not raise
    errs = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    assert result.module is not None or errs, "no module and no error"
    lines = max(1, result.source.line_count)
    for diag in result.diagnostics:
        assert diag.span is not None, diag
        assert 1 <= diag.span.start.line <= lines, (diag, lines)
        assert diag.span.start.offset <= diag.span.end.offset <= len(result.source.text)
        assert diag.message and not re.search(r"__ANON|\$END|Token\(|Traceback", diag.message), diag.message
    if result.module is not None:
        for node in result.module.walk():
            assert 0 <= node.span.start.offset <= node.span.end.offset <= len(text), node


def test_mutate_helper_changes_text():
    text = BUILTIN[1]
    assert mutate(text, [("delete_line", 0, 0)]) == text.split("\n", 1)[1]
    assert mutate(text, [("duplicate_token", 0, 0)]).startswith("-- allium: 1-- allium: 1\n")
    assert mutate("a b", [("swap_tokens", 0, 2)]) == "b a"
