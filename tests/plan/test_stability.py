"""Ids must not move when other declarations are added or edited."""

from __future__ import annotations

import pytest

from tests.plan import specs
from tests.plan.conftest import ids

SPECS = {
    "lifecycle": specs.LIFECYCLE,
    "temporal": specs.TEMPORAL,
    "surface": specs.SURFACE,
    "config": specs.CONFIG,
    "branches": specs.BRANCHES,
}
PREFIX_IDS = [
    "entity-fields.Widget",
    "entity-optional.Widget.size",
    "rule-success.PolishWidget",
    "rule-failure.PolishWidget.1",
]


@pytest.mark.parametrize("name", SPECS)
def test_inserting_unrelated_declarations_at_the_top(name: str) -> None:
    before = ids(SPECS[name])
    after = ids(specs.with_prefix(SPECS[name]))
    assert after[: len(PREFIX_IDS)] == PREFIX_IDS
    assert after[len(PREFIX_IDS):] == before


def test_editing_one_rule_leaves_the_others_alone() -> None:
    edited = specs.LIFECYCLE.replace(
        "    requires: order.status = pending\n",
        "    requires: order.status = pending\n    requires: order.customer.email != \"\"\n",
    )
    before, after = ids(specs.LIFECYCLE), ids(edited)
    assert set(after) - set(before) == {"rule-failure.ConfirmOrder.2"}
    assert set(before) <= set(after)


def test_adding_a_surface_clause_keeps_the_first_clause_ids() -> None:
    edited = specs.SURFACE.replace(
        "    exposes:\n        ticket.assignee\n",
        "    exposes:\n        ticket.assignee\n    provides:\n        Escalate(agent, ticket)\n",
    )
    assert set(ids(edited)) - set(ids(specs.SURFACE)) == {"surface-provides.TicketDesk.3"}


def test_moving_declarations_keeps_ids() -> None:
    # Swap the two top-level rules of BRANCHES: same ids, new order.
    head, send, review = _split_rules(specs.BRANCHES)
    swapped = head + review + "\n" + send
    assert sorted(ids(swapped)) == sorted(ids(specs.BRANCHES))


def _split_rules(text: str) -> tuple[str, str, str]:
    first = text.index("rule SendInvoice")
    second = text.index("rule ReviewInvoice")
    return text[:first], text[first:second].rstrip("\n") + "\n", text[second:]
