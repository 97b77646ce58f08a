"""Categories, details, dependencies, spans and expressions of single obligations."""

from __future__ import annotations

from allium.plan import CATEGORIES, ORACLE_CATEGORIES
from tests.plan import specs
from tests.plan.conftest import by_id, plan


def test_category_vocabulary() -> None:
    assert len(ORACLE_CATEGORIES) == 24
    assert set(CATEGORIES) - ORACLE_CATEGORIES == {"rule_branch", "rule_chained", "config_required"}
    for ob in plan(specs.LIFECYCLE + specs.BRANCHES.split("\n", 1)[1]):
        assert ob.id.startswith(CATEGORIES[ob.category] + ".")


def test_transition_edge_detail_and_span() -> None:
    ob = by_id(specs.LIFECYCLE)["transition-edge.Order.confirmed.shipped"]
    assert ob.category == "transition_edge"
    assert ob.detail == {"entity": "Order", "field": "status", "from": "confirmed", "to": "shipped"}
    assert ob.source_construct == "entity Order"
    assert ob.span.start.line == 17
    assert ob.component == "spec"


def test_terminal_states_in_declared_order() -> None:
    ob = by_id(specs.LIFECYCLE)["transition-terminal.Order.status"]
    assert ob.detail["states"] == ["delivered", "cancelled"]


def test_when_presence_detail() -> None:
    ob = by_id(specs.LIFECYCLE)["when-presence.Order.tracking_number"]
    assert ob.detail == {
        "entity": "Order",
        "field": "tracking_number",
        "status_field": "status",
        "qualifying_states": ["shipped", "delivered"],
    }
    assert ob.description == "Verify Order.tracking_number is present when status in {shipped, delivered} and absent otherwise"


def test_when_set_and_clear_detail() -> None:
    obs = by_id(specs.LIFECYCLE)
    assert obs["when-clear.ShipOrder.Order.warehouse"].detail == {
        "rule": "ShipOrder",
        "entity": "Order",
        "field": "warehouse",
        "source_state": "confirmed",
        "target_state": "shipped",
        "qualifying_states": ["confirmed"],
    }
    # `requires: status in {pending, confirmed}`: only the edge out of the set clears.
    assert obs["when-clear.CancelOrder.Order.warehouse"].detail["source_state"] == "confirmed"
    assert obs["when-set.CancelOrder.Order.cancelled_reason"].detail["source_state"] == "pending"
    assert obs["when-set.ShipOrder.Order.tracking_number"].source_construct == "rule ShipOrder"


def test_invariant_expressions_are_source_text() -> None:
    assert by_id(specs.LIFECYCLE)["invariant.Order.NonNegativeTotal"].expression == "this.total >= 0"
    assert by_id(specs.CONFIG)["invariant.PositiveBalances"].expression == "for a in Accounts: a.balance >= 0"


def test_rule_failure_span_is_its_requires_clause() -> None:
    obs = by_id(specs.LIFECYCLE)
    assert obs["rule-failure.ShipOrder.2"].span.start.line == obs["rule-failure.ShipOrder.1"].span.start.line + 1


def test_trigger_sources() -> None:
    temporal = by_id(specs.TEMPORAL)
    assert temporal["temporal.ExpireHold"].dependencies["trigger_source"] == "temporal"
    assert temporal["temporal.ExpireHold"].detail == {"cases": ["before", "at", "after"]}
    assert temporal["rule-success.ExpireHold"].dependencies == {
        "entities_read": ["Hold"],
        "entities_written": ["Hold"],
        "trigger_source": "temporal",
    }
    assert temporal["rule-entity-creation.PlaceHold.1"].dependencies == {
        "entities_created": ["Hold"],
        "trigger_source": "external",
    }
    branches = by_id(specs.BRANCHES)
    assert branches["rule-success.ReviewInvoice"].dependencies["trigger_source"] == "chained"
    assert branches["rule-success.SendInvoice"].dependencies == {
        "entities_read": ["Invoice"],
        "entities_written": ["Invoice"],
        "trigger_emissions": ["Notified", "ReviewRequested"],
        "trigger_source": "external",
    }


def test_state_transition_trigger() -> None:
    text = specs.LIFECYCLE + """
rule NotifyShipped {
    when: order: Order.status transitions_to shipped
    ensures: Email.created(to: order.customer.email)
}
"""
    ob = by_id(text)["rule-entity-creation.NotifyShipped.1"]
    assert ob.dependencies["trigger_source"] == "state_transition"
    assert ob.dependencies["entities_created"] == ["Email"]


def test_branch_detail() -> None:
    obs = by_id(specs.BRANCHES)
    assert obs["rule-branch.SendInvoice.1"].detail == {
        "rule": "SendInvoice", "branch": "if", "condition": "invoice.total > 1000"
    }
    assert obs["rule-branch.SendInvoice.2"].detail["branch"] == "else"
    assert obs["rule-chained.SendInvoice.ReviewRequested"].detail == {
        "rule": "SendInvoice", "trigger": "ReviewRequested"
    }


def test_surface_exposure_items() -> None:
    obs = by_id(specs.SURFACE)
    assert obs["surface-exposure.TicketDesk"].detail == {"surface": "TicketDesk", "items": ["title", "status"]}
    assert obs["surface-exposure.TicketDesk.2"].detail == {"surface": "TicketDesk", "items": ["assignee"]}
    assert obs["surface-provides.TicketDesk"].detail is None


def test_entity_fields_lists_stored_fields_in_order() -> None:
    ob = by_id(specs.CONFIG)["entity-fields.Account"]
    assert ob.detail == {"fields": ["balance", "owner", "entries", "large_entries", "is_overdrawn", "entry_count"]}


def test_a_spec_saved_with_crlf_line_ends_plans_as_with_lf() -> None:
    spec = (
        "-- allium: 3\nentity Account {\n    balance: Decimal\n}\n"
        "invariant Bounded {\n    for a in Accounts:\n        a.balance >= 0\n            and a.balance <= 100\n}\n"
    )
    lf, crlf = plan(spec), plan(spec.replace("\n", "\r\n"))
    assert [(o.id, o.description, o.expression) for o in crlf] == [(o.id, o.description, o.expression) for o in lf]
    expression = by_id(spec)["invariant.Bounded"].expression
    assert "\n" in expression and "\r" not in expression


WHEN_FIELDS_SET_BEFORE_THE_STATUS = """-- allium: 3
entity Shipment {
    code: String
}
entity Order {
    status: pending | shipped
    shipment: Shipment when status = shipped
    note: String when status = pending
    transitions status {
        pending -> shipped
        terminal: shipped
    }
}
rule Ship {
    when: Ship(order)
    requires: order.status = pending
    ensures:
        order.shipment = Shipment.created(code: "x")
        order.note = null
        order.status = shipped
}
"""


def test_a_when_field_assigned_a_created_value_or_null_before_the_status_still_crosses() -> None:
    # `order.note = null` is not a move to a state named null: the status
    # assignment after it is the rule's target, as in JUXT's plan.
    obs = by_id(WHEN_FIELDS_SET_BEFORE_THE_STATUS)
    assert obs["when-set.Ship.Order.shipment"].detail["target_state"] == "shipped"
    assert obs["when-clear.Ship.Order.note"].detail["source_state"] == "pending"
