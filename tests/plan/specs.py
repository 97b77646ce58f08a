"""Small inline specs, each exercising one corner of the obligation taxonomy."""

LIFECYCLE = """\
-- allium: 3

entity Customer {
    email: String
}

entity Order {
    customer: Customer
    status: pending | confirmed | shipped | delivered | cancelled
    tracking_number: String when status = shipped | delivered
    warehouse: String when status = confirmed
    cancelled_reason: String? when status = cancelled
    note: String?

    transitions status {
        pending -> confirmed
        confirmed -> shipped
        shipped -> delivered
        pending -> cancelled
        confirmed -> cancelled
        terminal: delivered, cancelled
    }

    invariant NonNegativeTotal { this.total >= 0 }
}

rule ConfirmOrder {
    when: ConfirmOrder(order)
    requires: order.status = pending
    ensures:
        order.status = confirmed
        order.warehouse = "north"
}

rule ShipOrder {
    when: ShipOrder(order, tracking)
    requires: order.status = confirmed
    requires: tracking != ""
    ensures:
        order.status = shipped
        order.tracking_number = tracking
}

rule CancelOrder {
    when: CancelOrder(order, reason)
    requires: order.status in {pending, confirmed}
    ensures:
        order.status = cancelled
        order.cancelled_reason = reason
}
"""

TEMPORAL = """\
-- allium: 3

config {
    hold_window: Duration = 24.hours
}

entity Hold {
    status: active | expired
    placed_at: Timestamp
}

rule ExpireHold {
    when: hold: Hold.placed_at + config.hold_window <= now
    requires: hold.status = active
    ensures: hold.status = expired
}

rule PlaceHold {
    when: PlaceHold(item)
    ensures: Hold.created(item: item, status: active, placed_at: now)
}
"""

SURFACE = """\
-- allium: 3

entity Ticket {
    status: open | closed
    title: String
    assignee: String?
}

actor Agent {
    identified_by: User where role = agent
}

surface TicketDesk {
    facing agent: Agent
    context ticket: Ticket

    exposes:
        ticket.title
        ticket.status
    provides:
        CloseTicket(agent, ticket) when ticket.status = open
    provides:
        ReopenTicket(agent, ticket) when ticket.status = closed
    exposes:
        ticket.assignee
}

rule CloseTicket {
    when: CloseTicket(agent, ticket)
    requires: ticket.status = open
    ensures: ticket.status = closed
}
"""

CONFIG = """\
-- allium: 3

config {
    max_retries: Integer = 3
    base_delay: Duration = 5.seconds
    api_key: String
}

value Money {
    amount: Decimal
    currency: String
}

enum Priority { low | normal | high }

invariant PositiveBalances {
    for a in Accounts: a.balance >= 0
}

entity Account {
    balance: Decimal
    owner: User
    entries: Entry with account = this
    large_entries: entries where amount > 1000
    is_overdrawn: balance < 0
    entry_count: entries.count
}

contract Ledger {
    post: (entry: Entry) -> Boolean
    balance_of: (account: Account) -> Decimal
}
"""

BRANCHES = """\
-- allium: 3

entity Invoice {
    status: draft | sent | paid
    total: Decimal
}

rule SendInvoice {
    when: SendInvoice(invoice)
    requires: invoice.status = draft
    ensures:
        invoice.status = sent
        if invoice.total > 1000:
            ReviewRequested(invoice)
        else:
            Notified(invoice)
}

rule ReviewInvoice {
    when: ReviewRequested(invoice)
    if invoice.total > 5000:
        requires: invoice.status = sent
        ensures: Escalated(invoice)
    else:
        ensures: Notified(invoice)
}
"""

UNRELATED_PREFIX = """\
entity Widget {
    label: String
    size: Integer?
}

rule PolishWidget {
    when: PolishWidget(widget)
    requires: widget.size > 0
    ensures: widget.label = "polished"
}

"""


def with_prefix(spec: str, prefix: str = UNRELATED_PREFIX) -> str:
    """The same spec with unrelated declarations inserted after the version marker."""
    marker, rest = spec.split("\n", 1)
    return f"{marker}\n\n{prefix}{rest}"
