"""Exact obligation ids for representative specs.

Where JUXT's `allium plan` is right, the expected lists below are its output
verbatim (checked with /work/oracle/bin/allium during development); the
lines marked `# ours` are deliberate deviations or allium-only categories.
"""

from __future__ import annotations

import pytest

from tests.plan import specs
from tests.plan.conftest import ids

LIFECYCLE = [
    "entity-fields.Customer",
    "when-presence.Order.tracking_number",
    "when-presence.Order.warehouse",
    "when-presence.Order.cancelled_reason",
    "transition-edge.Order.pending.confirmed",
    "transition-edge.Order.confirmed.shipped",
    "transition-edge.Order.shipped.delivered",
    "transition-edge.Order.pending.cancelled",
    "transition-edge.Order.confirmed.cancelled",
    "transition-rejected.Order.status",
    "transition-terminal.Order.status",
    "invariant.Order.NonNegativeTotal",
    "entity-fields.Order",
    "entity-optional.Order.cancelled_reason",
    "entity-optional.Order.note",
    "rule-success.ConfirmOrder",
    "rule-failure.ConfirmOrder.1",
    "rule-success.ShipOrder",
    "rule-failure.ShipOrder.1",
    "rule-failure.ShipOrder.2",
    "rule-success.CancelOrder",
    "rule-failure.CancelOrder.1",
    "when-set.ConfirmOrder.Order.warehouse",
    "when-set.ShipOrder.Order.tracking_number",
    "when-clear.ShipOrder.Order.warehouse",
    "when-clear.CancelOrder.Order.warehouse",
    "when-set.CancelOrder.Order.cancelled_reason",
]

TEMPORAL = [
    "config-default.hold_window",
    "entity-fields.Hold",
    "rule-success.ExpireHold",
    "temporal.ExpireHold",
    "rule-failure.ExpireHold.1",
    "rule-success.PlaceHold",
    "rule-entity-creation.PlaceHold.1",
]

SURFACE = [
    "entity-fields.Ticket",
    "entity-optional.Ticket.assignee",
    "surface-actor.TicketDesk",
    "surface-exposure.TicketDesk",
    "surface-provides.TicketDesk",
    "surface-provides.TicketDesk.2",  # ours: JUXT repeats the bare id
    "surface-exposure.TicketDesk.2",  # ours: JUXT repeats the bare id
    "rule-success.CloseTicket",
    "rule-failure.CloseTicket.1",
]

CONFIG = [
    "config-default.max_retries",
    "config-default.base_delay",
    "config-required.api_key",  # ours: no default to verify
    "value-equality.Money",
    "entity-fields.Money",
    "enum-comparable.Priority",
    "invariant.PositiveBalances",
    "entity-fields.Account",
    "entity-relationship.Account.entries",
    "projection.Account.large_entries",
    "derived.Account.is_overdrawn",
    "derived.Account.entry_count",  # ours: JUXT only counts operator expressions
    "contract-signature.Ledger.post",
    "contract-signature.Ledger.balance_of",
]

BRANCHES = [
    "entity-fields.Invoice",
    "rule-success.SendInvoice",
    "rule-failure.SendInvoice.1",
    "rule-branch.SendInvoice.1",  # ours from here on, bar rule-success/failure
    "rule-branch.SendInvoice.2",
    "rule-chained.SendInvoice.ReviewRequested",
    "rule-chained.SendInvoice.Notified",
    "rule-success.ReviewInvoice",
    "rule-branch.ReviewInvoice.1",
    "rule-failure.ReviewInvoice.1",
    "rule-chained.ReviewInvoice.Escalated",
    "rule-branch.ReviewInvoice.2",
    "rule-chained.ReviewInvoice.Notified",
]

TABLE = [
    ("lifecycle", specs.LIFECYCLE, LIFECYCLE),
    ("temporal", specs.TEMPORAL, TEMPORAL),
    ("surface", specs.SURFACE, SURFACE),
    ("config", specs.CONFIG, CONFIG),
    ("branches", specs.BRANCHES, BRANCHES),
]


@pytest.mark.parametrize("name, text, expected", TABLE, ids=[t[0] for t in TABLE])
def test_exact_ids(name: str, text: str, expected: list[str]) -> None:
    assert ids(text) == expected


@pytest.mark.parametrize("name, text, expected", TABLE, ids=[t[0] for t in TABLE])
def test_ids_are_unique(name: str, text: str, expected: list[str]) -> None:
    found = ids(text)
    assert len(found) == len(set(found))


@pytest.mark.parametrize("name, text, expected", TABLE, ids=[t[0] for t in TABLE])
def test_same_ids_every_run(name: str, text: str, expected: list[str]) -> None:
    assert ids(text) == ids(text)


SECOND_GRAPH = """\
-- allium: 3

entity Subscription {
    status: trial | active | cancelled
    payment_status: pending | paid | failed

    transitions status {
        trial -> active
        active -> cancelled
        terminal: cancelled
    }

    transitions payment_status {
        pending -> paid
        pending -> failed
    }
}
"""


def test_second_graph_keeps_its_field_in_edge_ids() -> None:
    assert ids(SECOND_GRAPH) == [
        "transition-edge.Subscription.trial.active",
        "transition-edge.Subscription.active.cancelled",
        "transition-rejected.Subscription.status",
        "transition-terminal.Subscription.status",
        "transition-edge.Subscription.payment_status.pending.paid",
        "transition-edge.Subscription.payment_status.pending.failed",
        "transition-rejected.Subscription.payment_status",
        "entity-fields.Subscription",
    ]


def test_rule_level_for_shares_the_failure_counter() -> None:
    text = """\
-- allium: 3

entity Task {
    status: open | done
}

rule CloseAll {
    when: CloseAll(project)
    requires: project.active
    for task in project.tasks where status = open:
        requires: task.blocked = false
        ensures: task.status = done
}
"""
    assert ids(text) == [
        "entity-fields.Task",
        "rule-success.CloseAll",
        "rule-failure.CloseAll.1",
        "rule-failure.CloseAll.2",
    ]


def test_creation_counter_counts_clauses_not_calls() -> None:
    text = """\
-- allium: 3

rule Spawn {
    when: Spawn(owner)
    ensures:
        Task.created(owner: owner)
        Task.created(owner: owner)
    ensures:
        let note = Note.created(owner: owner)
}
"""
    assert ids(text) == [
        "rule-success.Spawn",
        "rule-entity-creation.Spawn.1",
        "rule-entity-creation.Spawn.2",  # ours: JUXT misses creation under `let`
    ]


def test_config_override_ids_carry_the_alias() -> None:
    text = """\
-- allium: 3

use "github.com/example/billing/abc123" as billing

billing/config {
    trial_period: 14.days
    currency: USD
}

config {
    trial_period: Duration = billing/config.trial_period
}
"""
    assert ids(text) == [
        "config-default.billing/trial_period",
        "config-default.billing/currency",
        "config-default.trial_period",
    ]


def test_variant_declarations() -> None:
    text = """\
-- allium: 3

entity Shape {
    kind: Circle | Square
}

variant Circle : Shape {
    radius: Decimal
}
"""
    assert ids(text) == ["entity-fields.Shape", "sum-type-variant.Circle"]


def test_duplicate_declarations_still_get_unique_ids() -> None:
    text = """\
-- allium: 3

rule Twice {
    when: Twice(x)
    ensures: Done(x)
}

rule Twice {
    when: Twice(x)
    ensures: Done(x)
}
"""
    found = ids(text)
    assert found == [
        "rule-success.Twice",
        "rule-chained.Twice.Done",
        "rule-success.Twice~2",
        "rule-chained.Twice.Done~2",
    ]


def test_wider_matching_than_juxt() -> None:
    text = """\
-- allium: 3

entity Group {
    name: String
}

entity Claim {
    status: open | denied | closed
    denial_reason: String? when status in {denied, closed}
    stage: done
    Group.claims: Claim with group = this
}

rule Lapse {
    when: claim: now >= claim.opened_at + 30.days
    ensures: claim.status = closed
}
"""
    assert ids(text) == [
        "entity-fields.Group",
        "when-presence.Claim.denial_reason",  # ours: JUXT only reads `when s = a | b`
        "entity-fields.Claim",
        "entity-optional.Claim.denial_reason",
        "entity-relationship.Group.claims",  # ours: JUXT skips `Other.f:` members
        "rule-success.Lapse",
        "temporal.Lapse",  # ours: `now` on the left
    ]
