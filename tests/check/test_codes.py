"""One triggering fixture and one near miss per diagnostic code.

Each row: (code, spec that must raise it on exactly these lines, a similar spec
that must not raise it). Line numbers count the `-- allium: 3` marker as 1.
"""

from __future__ import annotations

from textwrap import dedent

import pytest

from allium.diagnostics import Severity
from tests.check.helpers import check_text, found

# A user entity plus a registering rule, reused to keep fixtures short.
USER = """
entity User {
    email: String
}

rule RegisterUser {
    when: Register(email)
    ensures: User.created(email: email)
}

surface Signup {
    provides: Register(email)
}
"""



def with_user(text: str) -> str:
    return USER + dedent(text)


CASES: list[tuple[str, str, list[int], str]] = [
    (
        "allium.type.undefinedReference",
        """
        entity Order {
            priority: NotAnEnum
        }
        rule SetPriority {
            when: SetPriority(priority)
            ensures: Order.created(priority: priority)
        }
        """,
        [3],
        """
        enum Priority { low | high }
        entity Order {
            priority: Priority
        }
        rule SetPriority {
            when: SetPriority(priority)
            ensures: Order.created(priority: priority)
        }
        """,
    ),
    (
        "allium.rule.undefinedTypeReference",
        with_user("""
        rule Audit {
            when: user: User.created
            ensures: AuditLog.created(user: user)
        }
        """),
        [17],
        with_user("""
        entity AuditLog {
            user: User
        }
        rule Audit {
            when: user: User.created
            ensures: AuditLog.created(user: user)
        }
        """),
    ),
    (
        "allium.rule.invalidTrigger",
        with_user("""
        rule Broken {
            when:
            ensures: User.created(email: "x")
        }
        """),
        [16],
        with_user("""
        rule Fine {
            when: user: User.email_verified
            ensures: User.created(email: "x")
        }
        """),
    ),
    (
        "allium.rule.missingEnsures",
        with_user("""
        rule Noop {
            when: user: User.created
        }
        """),
        [15],
        with_user("""
        rule Noop {
            when: user: User.created
            ensures: user.email = "x"
        }
        """),
    ),
    (
        "allium.rule.missingWhen",
        with_user("""
        rule Orphan {
            ensures: User.created(email: "x")
        }
        """),
        [15],
        with_user("""
        rule Orphan {
            when: Orphan()
            ensures: User.created(email: "x")
        }
        """),
    ),
    (
        "allium.default.undefinedType",
        with_user("""
        default Role admin = { name: "admin" }
        """),
        [15],
        with_user("""
        entity Role {
            name: String
        }
        default Role admin = { name: "admin" }
        rule Grant {
            when: Grant(user)
            ensures: user.email = admin.name
        }
        """),
    ),
    (
        "allium.default.unknownField",
        with_user("""
        default User root = { email: "root", nickname: "r" }
        rule Touch {
            when: Touch()
            ensures: root.email = "x"
        }
        """),
        [15],
        with_user("""
        default User root = { email: "root" }
        rule Touch {
            when: Touch()
            ensures: root.email = "x"
        }
        """),
    ),
    (
        "allium.contract.undefinedReference",
        with_user("""
        surface Api {
            facing caller: User
            exposes:
                caller.email
            contracts:
                demands Codec
        }
        """),
        [20],
        with_user("""
        contract Codec {
            encode: (value: String) -> String
        }
        surface Api {
            facing caller: User
            exposes:
                caller.email
            contracts:
                demands Codec
        }
        """),
    ),
    (
        "allium.rule.undefinedBinding",
        with_user("""
        rule Rename {
            when: Rename(user)
            ensures: usr.email = "x"
        }
        """),
        [17],
        with_user("""
        rule Rename {
            when: Rename(user)
            let usr = user
            ensures: usr.email = "x"
        }
        """),
    ),
    (
        "allium.let.duplicateBinding",
        with_user("""
        rule Calc {
            when: Calc(user)
            let total = 1
            let total = 2
            ensures: user.email = "x"
        }
        """),
        [18],
        with_user("""
        rule Calc {
            when: Calc(user)
            let total = 1
            let other = 2
            ensures: user.email = "x"
        }
        """),
    ),
    (
        "allium.config.undefinedReference",
        """
        config {
            lifetime: Duration = 1.hour
        }
        entity Token {
            expires_at: Timestamp
        }
        rule Issue {
            when: Issue()
            ensures: Token.created(expires_at: now + config.NOT_DECLARED)
        }
        """,
        [10],
        """
        config {
            lifetime: Duration = 1.hour
        }
        entity Token {
            expires_at: Timestamp
        }
        rule Issue {
            when: Issue()
            ensures: Token.created(expires_at: now + config.lifetime)
        }
        """,
    ),
    (
        "allium.config.duplicateKey",
        """
        config {
            lifetime: Duration = 1.hour
            lifetime: Duration = 2.hours
        }
        """,
        [4],
        """
        config {
            lifetime: Duration = 1.hour
            grace: Duration = 2.hours
        }
        """,
    ),
    (
        "allium.status.undeclaredTransition",
        """
        entity Order {
            status: pending | shipped | delivered
            transitions status {
                pending -> shipped
                shipped -> delivered
                terminal: delivered
            }
        }
        rule Place {
            when: Place()
            ensures: Order.created(status: pending)
        }
        rule Ship {
            when: Ship(order)
            requires: order.status = pending
            ensures: order.status = shipped
        }
        rule Deliver {
            when: Deliver(order)
            requires: order.status in {pending, shipped}
            ensures: order.status = delivered
        }
        """,
        [22],
        """
        entity Order {
            status: pending | shipped | delivered
            transitions status {
                pending -> shipped
                shipped -> delivered
                terminal: delivered
            }
        }
        rule Place {
            when: Place()
            ensures: Order.created(status: pending)
        }
        rule Ship {
            when: Ship(order)
            requires: order.status = pending
            ensures: order.status = shipped
        }
        rule Deliver {
            when: Deliver(order)
            requires: order.status = shipped
            ensures: order.status = delivered
        }
        """,
    ),
    (
        "allium.status.undefinedValue",
        """
        entity Ticket {
            status: open | closed
        }
        rule Open {
            when: Open()
            ensures: Ticket.created(status: open)
        }
        rule Close {
            when: Close(ticket)
            requires: ticket.status = open
            ensures: ticket.status = clsoed
        }
        """,
        [12],
        """
        entity Ticket {
            status: open | closed
        }
        rule Open {
            when: Open()
            ensures: Ticket.created(status: open)
        }
        rule Close {
            when: Close(ticket)
            requires: ticket.status = open
            ensures: ticket.status = closed
        }
        """,
    ),
    (
        "allium.status.unreachableValue",
        """
        entity Ticket {
            status: open | escalated | closed
        }
        rule Open {
            when: Open()
            ensures: Ticket.created(status: open)
        }
        rule Close {
            when: Close(ticket)
            ensures: ticket.status = closed
        }
        """,
        [3],
        """
        entity Ticket {
            status: open | escalated | closed
        }
        rule Open {
            when: Open()
            ensures: Ticket.created(status: open)
        }
        rule Escalate {
            when: Escalate(ticket)
            ensures: ticket.status = escalated
        }
        rule Close {
            when: Close(ticket)
            ensures: ticket.status = closed
        }
        """,
    ),
    (
        "allium.status.noExit",
        """
        entity Ticket {
            status: open | waiting | closed
        }
        rule Open {
            when: Open()
            ensures: Ticket.created(status: open)
        }
        rule Wait {
            when: Wait(ticket)
            requires: ticket.status = open
            ensures: ticket.status = waiting
        }
        rule Close {
            when: Close(ticket)
            requires: ticket.status = open
            ensures: ticket.status = closed
        }
        """,
        [3],
        """
        entity Ticket {
            status: open | waiting | closed
        }
        rule Open {
            when: Open()
            ensures: Ticket.created(status: open)
        }
        rule Wait {
            when: Wait(ticket)
            requires: ticket.status = open
            ensures: ticket.status = waiting
        }
        rule Close {
            when: Close(ticket)
            requires: ticket.status in {open, waiting}
            ensures: ticket.status = closed
        }
        """,
    ),
    (
        "allium.created.missingStatus",
        """
        entity Order {
            status: pending | shipped
            transitions status {
                pending -> shipped
                terminal: shipped
            }
        }
        rule Place {
            when: Place()
            ensures: Order.created()
        }
        rule Ship {
            when: Ship(order)
            requires: order.status = pending
            ensures: order.status = shipped
        }
        """,
        [11],
        """
        entity Order {
            status: pending | shipped
            transitions status {
                pending -> shipped
                terminal: shipped
            }
        }
        rule Place {
            when: Place()
            ensures: Order.created(status: pending)
        }
        rule Ship {
            when: Ship(order)
            requires: order.status = pending
            ensures: order.status = shipped
        }
        """,
    ),
    (
        "allium.created.invalidStatus",
        """
        entity Ticket {
            status: open | closed
        }
        rule Open {
            when: Open()
            ensures: Ticket.created(status: opne)
        }
        """,
        [7],
        """
        entity Ticket {
            status: open | closed
        }
        rule Open {
            when: Open(initial)
            ensures: Ticket.created(status: initial)
        }
        """,
    ),
    (
        "allium.transition.unwitnessedEdge",
        """
        entity Order {
            status: pending | shipped | cancelled
            transitions status {
                pending -> shipped
                pending -> cancelled
                terminal: shipped, cancelled
            }
        }
        rule Place {
            when: Place()
            ensures: Order.created(status: pending)
        }
        rule Ship {
            when: Ship(order)
            requires: order.status = pending
            ensures: order.status = shipped
        }
        """,
        [6],
        """
        entity Order {
            status: pending | shipped | cancelled
            transitions status {
                pending -> shipped
                pending -> cancelled
                terminal: shipped, cancelled
            }
        }
        rule Place {
            when: Place()
            ensures: Order.created(status: pending)
        }
        rule Ship {
            when: Ship(order)
            requires: order.status = pending
            ensures: order.status = shipped
        }
        rule Cancel {
            when: Cancel(order)
            requires: order.status = pending
            ensures: order.status = cancelled
        }
        """,
    ),
    (
        "allium.transition.noOutboundEdge",
        """
        entity Job {
            status: queued | running | done
            transitions status {
                queued -> running
                terminal: done
            }
        }
        """,
        [4],
        """
        entity Job {
            status: queued | running | done
            transitions status {
                queued -> running
                running -> done
                terminal: done
            }
        }
        """,
    ),
    (
        "allium.transition.unlistedValue",
        """
        entity Job {
            status: queued | running | paused | done
            transitions status {
                queued -> running
                running -> done
                terminal: done
            }
        }
        """,
        [4],
        """
        entity Job {
            status: queued | running | done
            transitions status {
                queued -> running
                running -> done
                terminal: done
            }
        }
        """,
    ),
    (
        "allium.transition.undefinedState",
        """
        entity Job {
            status: queued | done
            transitions status {
                queued -> running
                running -> done
                terminal: done
            }
        }
        """,
        [5, 6],
        """
        entity Job {
            status: queued | running | done
            transitions status {
                queued -> running
                running -> done
                terminal: done
            }
        }
        """,
    ),
    (
        "allium.transition.terminalHasExit",
        """
        entity Job {
            status: queued | done
            transitions status {
                queued -> done
                done -> queued
                terminal: done
            }
        }
        """,
        [6],
        """
        entity Job {
            status: queued | done
            transitions status {
                queued -> done
                terminal: done
            }
        }
        """,
    ),
    (
        "allium.transition.undefinedField",
        """
        entity Job {
            status: queued | done
            transitions state {
                queued -> done
                terminal: done
            }
        }
        """,
        [4],
        """
        entity Job {
            state: queued | done
            transitions state {
                queued -> done
                terminal: done
            }
        }
        """,
    ),
    (
        "allium.when.undefinedState",
        """
        entity Parcel {
            status: pending | shipped
            tracking: String when status = shiped
            transitions status {
                pending -> shipped
                terminal: shipped
            }
        }
        """,
        [4],
        """
        entity Parcel {
            status: pending | shipped
            tracking: String when status = shipped
            transitions status {
                pending -> shipped
                terminal: shipped
            }
        }
        """,
    ),
    (
        "allium.when.missingTransitions",
        """
        entity Parcel {
            status: pending | shipped
            tracking: String when status = shipped
        }
        """,
        [4],
        """
        entity Parcel {
            status: pending | shipped
            tracking: String when status = shipped
            transitions status {
                pending -> shipped
                terminal: shipped
            }
        }
        """,
    ),
    (
        "allium.when.missingSet",
        """
        entity Parcel {
            status: pending | shipped
            tracking: String when status = shipped
            transitions status {
                pending -> shipped
                terminal: shipped
            }
        }
        rule Ship {
            when: Ship(parcel, code)
            requires: parcel.status = pending
            ensures: parcel.status = shipped
        }
        """,
        [13],
        """
        entity Parcel {
            status: pending | shipped
            tracking: String when status = shipped
            transitions status {
                pending -> shipped
                terminal: shipped
            }
        }
        rule Ship {
            when: Ship(parcel, code)
            requires: parcel.status = pending
            ensures:
                parcel.status = shipped
                parcel.tracking = code
        }
        """,
    ),
    (
        "allium.when.missingClear",
        """
        entity Parcel {
            status: held | released | archived
            hold_reason: String when status = held
            transitions status {
                held -> released
                released -> archived
                terminal: archived
            }
        }
        rule Release {
            when: Release(parcel)
            requires: parcel.status = held
            ensures: parcel.status = released
        }
        """,
        [14],
        """
        entity Parcel {
            status: held | released | archived
            hold_reason: String when status = held
            transitions status {
                held -> released
                released -> archived
                terminal: archived
            }
        }
        rule Release {
            when: Release(parcel)
            requires: parcel.status = held
            ensures:
                parcel.status = released
                parcel.hold_reason = null
        }
        """,
    ),
    (
        "allium.sum.discriminatorUnknownVariant",
        """
        entity Node {
            kind: Branch | Leaf | Ghost
        }
        variant Branch : Node {
            children: Integer
        }
        variant Leaf : Node {
            value: Integer
        }
        """,
        [3],
        """
        entity Node {
            kind: Branch | Leaf
        }
        variant Branch : Node {
            children: Integer
        }
        variant Leaf : Node {
            value: Integer
        }
        """,
    ),
    (
        "allium.sum.invalidDiscriminator",
        """
        entity Node {
            kind: active | Branch
        }
        variant Branch : Node {
            children: Integer
        }
        """,
        [3],
        """
        entity Node {
            kind: Branch | Leaf
        }
        variant Branch : Node {
            children: Integer
        }
        variant Leaf : Node {
            value: Integer
        }
        """,
    ),
    (
        "allium.sum.v1InlineEnum",
        """
        entity Node {
            kind: Branch | Leaf
        }
        """,
        [3],
        """
        entity Node {
            kind: branch | leaf
        }
        """,
    ),
    (
        "allium.sum.variantMissingInDiscriminator",
        """
        entity Node {
            kind: Branch | Leaf
        }
        variant Branch : Node {
            children: Integer
        }
        variant Leaf : Node {
            value: Integer
        }
        variant Stray : Node {
            weight: Integer
        }
        """,
        [11],
        """
        entity Node {
            kind: Branch | Leaf
        }
        variant Branch : Node {
            children: Integer
        }
        variant Leaf : Node {
            value: Integer
        }
        """,
    ),
    (
        "allium.sum.baseInstantiation",
        """
        entity Node {
            kind: Branch | Leaf
        }
        variant Branch : Node {
            children: Integer
        }
        variant Leaf : Node {
            value: Integer
        }
        rule Grow {
            when: Grow()
            ensures: Node.created()
        }
        """,
        [13],
        """
        entity Node {
            kind: Branch | Leaf
        }
        variant Branch : Node {
            children: Integer
        }
        variant Leaf : Node {
            value: Integer
        }
        rule Grow {
            when: Grow()
            ensures: Leaf.created(value: 1)
        }
        """,
    ),
    (
        "allium.sum.unguardedVariantFieldAccess",
        """
        entity Node {
            kind: Branch | Leaf
            weight: Integer
        }
        variant Branch : Node {
            children: Integer
        }
        variant Leaf : Node {
            value: Integer
        }
        rule Weigh {
            when: node: Node.created
            ensures: node.weight = node.children
        }
        """,
        [14],
        """
        entity Node {
            kind: Branch | Leaf
            weight: Integer
        }
        variant Branch : Node {
            children: Integer
        }
        variant Leaf : Node {
            value: Integer
        }
        rule Weigh {
            when: node: Node.created
            requires: node.kind = Branch
            ensures: node.weight = node.children
        }
        """,
    ),
    (
        "allium.invariant.volatileNow",
        """
        entity Session {
            expires_at: Timestamp
        }
        invariant NotExpired {
            for session in Sessions:
                session.expires_at > now
        }
        """,
        [7],
        """
        entity Session {
            started_at: Timestamp
            expires_at: Timestamp
        }
        invariant EndsAfterStart {
            for session in Sessions:
                session.expires_at > session.started_at
        }
        """,
    ),
    (
        "allium.invariant.sideEffect",
        """
        entity Session {
            expires_at: Timestamp
        }
        invariant Creates {
            Session.created(expires_at: 0) = null
        }
        """,
        [6],
        """
        entity Session {
            expires_at: Timestamp
        }
        invariant Counts {
            Sessions.count >= 0
        }
        """,
    ),
    (
        "allium.temporal.missingGuard",
        """
        entity Token {
            expires_at: Timestamp
            status: active | expired
        }
        rule Expire {
            when: token: Token.expires_at <= now
            ensures: token.status = expired
        }
        """,
        [7],
        """
        entity Token {
            expires_at: Timestamp
            status: active | expired
        }
        rule Expire {
            when: token: Token.expires_at <= now
            requires: token.status = active
            ensures: token.status = expired
        }
        """,
    ),
    (
        "allium.surface.missingActor",
        with_user("""
        surface Console {
            facing visitor: NotAnActor
        }
        """),
        [16],
        with_user("""
        surface Console {
            facing visitor: User
        }
        """),
    ),
    (
        "allium.context.undefinedType",
        with_user("""
        surface Console {
            facing visitor: User
            context item: Widget
            exposes:
                item.name
        }
        """),
        [17],
        with_user("""
        surface Console {
            facing visitor: User
            context item: User
            exposes:
                item.email
        }
        """),
    ),
    (
        "allium.surface.unusedBinding",
        with_user("""
        surface Profile {
            facing viewer: User
            context account: User
            exposes:
                viewer.email
        }
        """),
        [17],
        with_user("""
        surface Profile {
            facing viewer: User
            context account: User
            exposes:
                account.email
        }
        """),
    ),
    (
        "allium.surface.undefinedProvidesTrigger",
        with_user("""
        surface Admin {
            facing admin: User
            provides:
                Ban(admin)
        }
        """),
        [18],
        with_user("""
        surface Admin {
            facing admin: User
            provides:
                Register(admin)
        }
        """),
    ),
    (
        "allium.surface.relatedUndefined",
        with_user("""
        surface Home {
            facing viewer: User
            exposes:
                viewer.email
            related:
                Nowhere
        }
        """),
        [20],
        with_user("""
        surface Home {
            facing viewer: User
            exposes:
                viewer.email
            related:
                Signup
        }
        """),
    ),
    (
        "allium.rule.unreachableTrigger",
        with_user("""
        rule Ping {
            when: Ping(user)
            ensures: user.email = "x"
        }
        """),
        [16],
        with_user("""
        rule Ping {
            when: Ping(user)
            ensures: user.email = "x"
        }
        rule Pinger {
            when: user: User.created
            ensures: Ping(user: user)
        }
        """),
    ),
    (
        "allium.entity.unused",
        with_user("""
        entity Orphan {
            name: String
        }
        """),
        [15],
        with_user("""
        entity Orphan {
            name: String
        }
        rule Adopt {
            when: Adopt(name)
            ensures: Orphan.created(name: name)
        }
        """),
    ),
    (
        "allium.definition.unused",
        with_user("""
        value Money {
            amount: Integer
        }
        enum Colour { red | blue }
        """),
        [15, 18],
        with_user("""
        value Money {
            amount: Integer
        }
        enum Colour { red | blue }
        entity Price {
            money: Money
            colour: Colour
        }
        rule SetPrice {
            when: SetPrice(money, colour)
            ensures: Price.created(money: money, colour: colour)
        }
        """),
    ),
    (
        "allium.field.unused",
        with_user("""
        entity Note {
            body: String
            scribble: String
        }
        rule Write {
            when: Write(body)
            ensures: Note.created(body: body)
        }
        """),
        [17],
        with_user("""
        entity Note {
            body: String
            scribble: String
        }
        rule Write {
            when: Write(body)
            ensures: Note.created(body: body, scribble: "")
        }
        """),
    ),
    (
        "allium.actor.unused",
        with_user("""
        actor Admin {
            identified_by: User where email = "root"
        }
        """),
        [15],
        with_user("""
        actor Admin {
            identified_by: User where email = "root"
        }
        surface Console {
            facing admin: Admin
            exposes:
                admin.email
        }
        """),
    ),
    (
        "allium.deferred.missingLocationHint",
        with_user("""
        deferred User.verify
        """),
        [15],
        with_user("""
        deferred User.verify "https://example.com/verify"
        """),
    ),
    (
        "allium.externalEntity.missingSourceHint",
        with_user("""
        external entity Skill {
            name: String
        }
        entity Holder {
            skill: Skill
        }
        """),
        [15],
        """
        entity Holder {
            name: String
        }
        rule Hold {
            when: Hold(name)
            ensures: Holder.created(name: name)
        }
        """,
    ),
    (
        "allium.openQuestion.present",
        with_user("""
        open question "Should emails be unique?"
        """),
        [15],
        with_user("""
        resolved question "Should emails be unique?" {
            answer: "Yes."
            rationale:
                -- Login needs it.
        }
        """),
    ),
    (
        "allium.reference.undefinedImportedAlias",
        with_user("""
        entity Account {
            owner: core/User
        }
        rule Open {
            when: Open(owner)
            ensures: Account.created(owner: owner)
        }
        """),
        [16],
        with_user("""
        entity Account {
            owner: User
        }
        rule Open {
            when: Open(owner)
            ensures: Account.created(owner: owner)
        }
        """),
    ),
    (
        "allium.rule.invalidTrigger",
        with_user("""
        rule Rename {
            when: Rename(user: current)
            ensures: user.email = "x"
        }
        """),
        [16],
        with_user("""
        rule Rename {
            when: Rename(user: User)
            ensures: user.email = "x"
        }
        """),
    ),
    (
        "allium.rule.undefinedBinding",
        """
        entity Model {
            count: Integer
        }
        given {
            model: Model
        }
        rule Bump {
            when: state: Model
            requires: model.count > 0
            ensures: state.count = model.count + 1
        }
        """,
        [11],
        """
        entity Model {
            count: Integer
        }
        given {
            model: Model
        }
        rule Bump {
            when: Bump()
            requires: model.count > 0
            ensures: model.count = model.count + 1
        }
        """,
    ),
    (
        "allium.annotation.missingBody",
        """
        contract Codec {
            encode: (v: String) -> String
            @invariant Stable
            @guidance -- keep it short
        }
        """,
        [4, 5],
        """
        contract Codec {
            encode: (v: String) -> String
            @invariant Stable
                -- encode(v) is the same for the same v
            @guidance
                -- keep it short
        }
        """,
    ),
    (
        "allium.annotation.v1Clause",
        with_user("""
        rule Welcome {
            when: user: User.created
            ensures: user.email = user.email
            guidance:
                -- send the mail asynchronously
        }
        """),
        [18],
        with_user("""
        rule Welcome {
            when: user: User.created
            ensures: user.email = user.email
            @guidance
                -- send the mail asynchronously
        }
        """),
    ),
]


@pytest.mark.parametrize(("code", "bad", "lines", "good"), CASES, ids=[c[0] for c in CASES])
def test_code_fires(code: str, bad: str, lines: list[int], good: str) -> None:
    assert found(check_text(bad), code) == [(code, line) for line in lines]


@pytest.mark.parametrize(("code", "bad", "lines", "good"), CASES, ids=[c[0] for c in CASES])
def test_near_miss_is_quiet(code: str, bad: str, lines: list[int], good: str) -> None:
    assert found(check_text(good), code) == []


def test_every_emitted_code_has_a_fixture() -> None:
    """Keeps the table honest: a new code needs a row here (or in test_modules)."""
    import pathlib
    import re

    source = "".join(p.read_text() for p in pathlib.Path("allium/check").glob("*.py"))
    emitted = set(re.findall(r'"(allium\.[a-zA-Z]+\.[a-zA-Z]+)"', source))
    covered = {c[0] for c in CASES} | MODULE_CODES
    assert emitted - covered == set()


# Codes exercised in test_modules.py (they need several files on disk).
MODULE_CODES = {
    "allium.use.unresolvedPath",
    "allium.reference.unknownName",
    # questions.py builds these two with an f-string; see test_questions.py.
}


def test_near_misses_are_fully_clean_of_errors() -> None:
    """Each near miss should raise no error at all, not just not its own code."""
    bad = []
    for code, _, _, good in CASES:
        errors = [d for d in check_text(good) if d.severity is Severity.ERROR]
        if errors:
            bad.append((code, [(d.code, d.span.start.line) for d in errors]))
    assert bad == []
