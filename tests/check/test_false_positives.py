"""Valid constructs the checker once flagged, or easily could: each must be clean."""

from __future__ import annotations

import pytest

from allium.diagnostics import Severity
from tests.check.helpers import check_text, found

VALID: dict[str, str] = {
    "an untyped trigger parameter's chain is typed by its last hop, not its root name": """
        entity Book {
            status: available | lent
            transitions status {
                available -> lent
                lent -> available
            }
        }
        entity Loan {
            book: Book
            status: open | returned
            transitions status {
                open -> returned
                terminal: returned
            }
        }
        rule Lend {
            when: Lend(book)
            requires: book.status = available
            ensures:
                book.status = lent
                Loan.created(book: book, status: open)
        }
        rule Return {
            when: Return(loan)
            requires: loan.status = open
            requires: loan.book.status = lent
            ensures:
                loan.status = returned
                loan.book.status = available
        }
        surface Desk {
            provides:
                Lend(book)
                Return(loan)
        }
    """,
    "lowercase argument to a trigger emission is a literal": """
        entity User {
            email: String
        }
        rule Register {
            when: Register(email)
            ensures:
                User.created(email: email)
                Welcome(email: email, template: welcome_email)
        }
        rule SendWelcome {
            when: Welcome(email, template)
            ensures: Mail(to: email, template: template)
        }
        surface Signup {
            provides: Register(email)
        }
    """,
    "enum literals on the right of = and in sets": """
        enum Tier { basic | gold }
        entity Account {
            tier: Tier
            status: open | closed
            transitions status {
                open -> closed
                terminal: closed
            }
        }
        rule Open {
            when: Open(tier)
            ensures: Account.created(tier: tier, status: open)
        }
        rule Close {
            when: Close(account)
            requires: account.tier in {basic, gold}
            requires: account.status = open
            ensures: account.status = closed
        }
        surface Desk {
            provides:
                Open(tier)
                Close(account)
        }
    """,
    "optional when-field need not be set on entry": """
        entity Order {
            status: pending | cancelled
            cancelled_by: String? when status = cancelled
            transitions status {
                pending -> cancelled
                terminal: cancelled
            }
        }
        rule Place {
            when: Place()
            ensures: Order.created(status: pending)
        }
        rule Cancel {
            when: Cancel(order)
            requires: order.status = pending
            ensures: order.status = cancelled
        }
        surface Shop {
            provides:
                Place()
                Cancel(order)
        }
    """,
    "inline derived-condition and created() triggers": """
        entity Claim {
            items: Integer
            flagged: Boolean
        }
        rule Open {
            when: Open(items)
            ensures: Claim.created(items: items, flagged: false)
        }
        rule Flag {
            when: claim: Claim.items > 10
            requires: not claim.flagged
            ensures: claim.flagged = true
        }
        rule Audit {
            when: Claim.created()
            ensures: Audited()
        }
        rule Log {
            when: Audited()
            ensures: Logged()
        }
        surface Intake {
            provides: Open(items)
        }
    """,
    "fields used only in where filters and derived values": """
        entity Replica {
            active: Boolean
            live: Boolean
            is_eligible: active and live
        }
        rule Join {
            when: Join()
            ensures: Replica.created(active: true, live: true)
        }
        rule Count {
            when: Count()
            let eligible = Replicas where is_eligible
            requires: eligible.count > 0
            ensures: Counted(n: eligible.count)
        }
        rule Record {
            when: Counted(n)
            ensures: Recorded(n: n)
        }
        surface Ops {
            provides:
                Join()
                Count()
        }
    """,
    "lambda, for and let scopes": """
        entity Team {
            size: Integer
        }
        entity Member {
            team: Team
            active: Boolean
        }
        rule Grow {
            when: Grow(team)
            let members = Members where team = team
            requires: members.any(m => m.active)
            ensures:
                for m in members:
                    m.active = true
                let n = members.count
                team.size = n + 1
        }
        rule Make {
            when: Make(size)
            ensures:
                Team.created(size: size)
                Member.created(team: Team{size: size}, active: false)
        }
        surface Ops {
            provides:
                Grow(team)
                Make(size)
        }
    """,
    "temporal trigger with a guard": """
        entity Invite {
            expires_at: Timestamp
            status: pending | expired
        }
        rule Send {
            when: Send(expires_at)
            ensures: Invite.created(expires_at: expires_at, status: pending)
        }
        rule Expire {
            when: invite: Invite.expires_at <= now
            requires: invite.status = pending
            ensures: invite.status = expired
        }
        rule Renew {
            when: Renew(invite)
            requires: invite.status = expired
            ensures: invite.status = pending
        }
        surface Inbox {
            provides:
                Send(expires_at)
                Renew(invite)
        }
    """,
    "terminal states are per graph (JUXT keeps one set per entity)": """
        entity Subscription {
            status: active | cancelled
            billing: due | paid | refunded
            transitions status {
                active -> cancelled
                terminal: cancelled
            }
            transitions billing {
                due -> paid
                paid -> refunded
                terminal: refunded
            }
        }
        rule Subscribe {
            when: Subscribe()
            ensures: Subscription.created(status: active, billing: due)
        }
        rule Cancel {
            when: Cancel(subscription)
            requires: subscription.status = active
            ensures: subscription.status = cancelled
        }
        rule Pay {
            when: Pay(subscription)
            requires: subscription.billing = due
            ensures: subscription.billing = paid
        }
        rule Refund {
            when: Refund(subscription)
            requires: subscription.billing = paid
            ensures: subscription.billing = refunded
        }
        surface Billing {
            provides:
                Subscribe()
                Cancel(subscription)
                Pay(subscription)
                Refund(subscription)
        }
    """,
    "typed trigger parameters (name: Type) are valid": """
        entity Customer {
            email: String
        }
        entity Order {
            customer: Customer
            total: Integer
        }
        rule Place {
            when: Place(customer: Customer, total: Integer)
            ensures: Order.created(customer: customer, total: total)
        }
        rule Join {
            when: Join(email)
            ensures: Customer.created(email: email)
        }
        surface Shop {
            provides:
                Place(customer, total)
                Join(email)
        }
    """,
}


@pytest.mark.parametrize("text", VALID.values(), ids=list(VALID))
def test_valid_spec_is_clean(text: str) -> None:
    failing = [
        (d.code, d.span.start.line, d.message) for d in check_text(text) if d.severity is not Severity.INFO
    ]
    assert failing == []


def test_projection_use_keeps_field_used() -> None:
    assert found(check_text(VALID["fields used only in where filters and derived values"]), "allium.field.unused") == []


def test_unused_fields_are_reported_for_entities_not_value_types() -> None:
    # One policy, JUXT's: entity, external and variant fields; a value is used whole.
    diagnostics = check_text("""
        value Money {
            amount: Decimal
            currency: String
        }
        entity Invoice {
            total: Money
            memo: String
        }
        rule Bill {
            when: Bill(total)
            ensures: Invoice.created(total: total)
        }
    """)
    assert found(diagnostics, "allium.field.unused") == [("allium.field.unused", 8)]


def test_a_chain_typed_through_its_hops_still_catches_a_wrong_value() -> None:
    text = VALID["an untyped trigger parameter's chain is typed by its last hop, not its root name"]
    broken = text.replace("loan.book.status = available", "loan.book.status = missing")
    messages = [d.message for d in check_text(broken) if d.code == "allium.status.undefinedValue"]
    assert messages == ["Rule 'Return' sets 'Book.status' to 'missing', which is not one of its values."]
