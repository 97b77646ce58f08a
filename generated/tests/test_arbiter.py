"""Tests for unit `arbiter` (arbiter.allium): deterministic evaluation."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime, timezone

import pytest

from ledger.arbiter import (
    AccountSnapshot,
    Arbiter,
    Config,
    Decision,
    DeterministicEvaluation,
    Evaluation,
    EvaluationBoundary,
    EvaluationFault,
    EvaluationFaulted,
    EvaluationStatus,
    check_decided_acceptances_keep_balances_legal,
    check_decided_fields_presence,
    check_decided_rejections_move_nothing,
    check_evaluation,
    check_evaluation_transition,
    check_honest_replicas_agree,
    check_snapshot_versions_match_presence,
    decide_evaluation,
    evaluate,
    evaluate_close,
    evaluate_deposit,
    evaluate_open,
    evaluate_transfer,
    evaluate_withdrawal,
    record_evaluation_fault,
    replay,
)
from ledger.core import (
    AccountStatus,
    Channel,
    Config as CoreConfig,
    Envelope,
    InvariantViolation,
    OperationKind,
    Rejected,
    RejectReason,
    Request,
    TransitionRejected,
    Verdict,
    envelope_of,
    new_request,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ACTIVE = AccountStatus.active
CLOSED = AccountStatus.closed
# The snapshot of an account that does not exist, built the way the unit's
# callers (the replica host, node_votes) build it.
ABSENT = AccountSnapshot.absent()
MAX_AMOUNT = Config().max_amount_minor
MAX_BALANCE = Config().max_balance_minor


def snap(balance: int = 0, status: AccountStatus = ACTIVE, version: int = 1) -> AccountSnapshot:
    """A present account snapshot."""
    return AccountSnapshot(present=True, status=status, balance_minor=balance, version=version)


def envelope(
    kind: OperationKind,
    amount: int = 0,
    account: str = "acc-1",
    counterparty: str | None = None,
    request_id: str = "req-1",
) -> Envelope:
    return Envelope(
        request_id=request_id,
        client_id="client-1",
        kind=kind,
        account_id=account,
        counterparty_id=counterparty,
        owner="alice" if kind == OperationKind.open else None,
        amount_minor=amount,
    )


def request(kind: OperationKind, amount: int = 0, **kw: typing.Any) -> Request:
    return new_request(envelope(kind, amount, **kw), channel=Channel.rest, received_at=T0)


def evaluation(
    kind: OperationKind,
    amount: int = 0,
    primary: AccountSnapshot = ABSENT,
    counter: AccountSnapshot = ABSENT,
    replica: str = "replica-a",
    attempt: int = 1,
    req: Request | None = None,
    **kw: typing.Any,
) -> Evaluation:
    r = req if req is not None else request(kind, amount, **kw)
    return Evaluation.of(r, attempt, replica, primary, counter)


def assert_pending_fields_absent(e: Evaluation) -> None:
    assert e.status == EvaluationStatus.pending
    assert e.verdict is None
    assert e.reason is None
    assert e.account_delta_minor is None
    assert e.counterparty_delta_minor is None
    assert e.fault is None


def accepted(account_delta: int = 0, counterparty_delta: int = 0) -> Decision:
    return Decision(
        verdict=Verdict.accepted,
        reason=None,
        account_delta_minor=account_delta,
        counterparty_delta_minor=counterparty_delta,
    )


def rejected(reason: RejectReason) -> Decision:
    return Decision(verdict=Verdict.rejected, reason=reason, account_delta_minor=0, counterparty_delta_minor=0)


def violation_name(check: typing.Callable[..., None], *args: typing.Any) -> str:
    """Run an invariant check that must fail; return the name its message starts with."""
    with pytest.raises(InvariantViolation) as info:
        check(*args)
    message = str(info.value)
    assert ": " in message, message
    return message.split(": ", 1)[0]


def assert_broken(e: Evaluation, own_check: typing.Callable[[Evaluation], None], name: str) -> None:
    """The invariant (or `when` field) ``name`` is broken: its own check and the combined check name it."""
    assert violation_name(own_check, e) == name
    assert violation_name(check_evaluation, e) == name


def refusal(rule: typing.Callable[..., typing.Any], *args: typing.Any) -> Rejected:
    """Run a rule that must be refused; return the refusal."""
    with pytest.raises(Rejected) as info:
        rule(*args)
    return info.value


def state_of(e: Evaluation) -> tuple[typing.Any, ...]:
    """Every mutable field of an Evaluation, to show a refusal changed nothing."""
    return (e.status, e.verdict, e.reason, e.account_delta_minor, e.counterparty_delta_minor, e.fault)


# Values -------------------------------------------------------------------------------


@pytest.mark.allium("value-equality.AccountSnapshot")
def test_account_snapshot_structural_equality() -> None:
    a = AccountSnapshot(present=True, status=ACTIVE, balance_minor=10, version=2)
    b = AccountSnapshot(present=True, status=ACTIVE, balance_minor=10, version=2)
    c = AccountSnapshot(present=True, status=ACTIVE, balance_minor=11, version=2)
    assert a == b and hash(a) == hash(b)
    assert a is not b
    assert a != c
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.balance_minor = 5  # type: ignore[misc]


@pytest.mark.allium("entity-fields.AccountSnapshot")
def test_account_snapshot_fields() -> None:
    hints = typing.get_type_hints(AccountSnapshot)
    assert [f.name for f in dataclasses.fields(AccountSnapshot)] == [
        "present",
        "status",
        "balance_minor",
        "version",
    ]
    assert hints["present"] is bool
    assert hints["status"] == AccountStatus | None
    assert hints["balance_minor"] is int
    assert hints["version"] is int
    s = snap(7, version=3)
    assert (s.present, s.status, s.balance_minor, s.version) == (True, ACTIVE, 7, 3)


@pytest.mark.allium("value-equality.Decision")
def test_decision_structural_equality() -> None:
    a = Decision(verdict=Verdict.accepted, reason=None, account_delta_minor=5, counterparty_delta_minor=0)
    b = Decision(verdict=Verdict.accepted, reason=None, account_delta_minor=5, counterparty_delta_minor=0)
    c = Decision(
        verdict=Verdict.rejected,
        reason=RejectReason.invalid_amount,
        account_delta_minor=0,
        counterparty_delta_minor=0,
    )
    assert a == b and hash(a) == hash(b)
    assert a != c
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.verdict = Verdict.rejected  # type: ignore[misc]


@pytest.mark.allium("entity-fields.Decision")
def test_decision_fields() -> None:
    hints = typing.get_type_hints(Decision)
    assert [f.name for f in dataclasses.fields(Decision)] == [
        "verdict",
        "reason",
        "account_delta_minor",
        "counterparty_delta_minor",
    ]
    assert hints["verdict"] is Verdict
    assert hints["reason"] == RejectReason | None
    assert hints["account_delta_minor"] is int
    assert hints["counterparty_delta_minor"] is int


# Contract ------------------------------------------------------------------------------


@pytest.mark.allium("contract-signature.DeterministicEvaluation.evaluate")
def test_contract_signature_and_determinism() -> None:
    hints = typing.get_type_hints(DeterministicEvaluation.evaluate)
    assert hints["envelope"] is Envelope
    assert hints["primary"] is AccountSnapshot
    assert hints["counterparty"] is AccountSnapshot
    assert hints["return"] is Decision
    for impl in (Arbiter(), EvaluationBoundary()):
        assert isinstance(impl, DeterministicEvaluation)
    env = envelope(OperationKind.transfer, 40, counterparty="acc-2")
    primary, counter = snap(100), snap(5, version=4)
    first = Arbiter().evaluate(env, primary, counter)
    # Determinism: same inputs, same Decision, any implementation, every run.
    for _ in range(3):
        assert Arbiter().evaluate(env, primary, counter) == first
        assert EvaluationBoundary().evaluate(env, primary, counter) == first
    assert first == Decision(
        verdict=Verdict.accepted, reason=None, account_delta_minor=-40, counterparty_delta_minor=40
    )
    # Purity: arguments are untouched (they are frozen values and stay equal).
    assert primary == snap(100) and counter == snap(5, version=4)


@pytest.mark.allium("contract-signature.DeterministicEvaluation.evaluate")
def test_contract_totality_decides_every_well_formed_input() -> None:
    malformed_amounts = [
        envelope(OperationKind.deposit, "12"),  # type: ignore[arg-type]
        envelope(OperationKind.deposit, True),  # type: ignore[arg-type]
        envelope(OperationKind.withdraw, -1),
        envelope(OperationKind.transfer, 10**30, counterparty="x"),
        envelope(OperationKind.close, 3),
    ]
    for env in malformed_amounts:
        d = evaluate(env, ABSENT, ABSENT)
        assert d.verdict == Verdict.rejected
        assert d.reason == RejectReason.invalid_amount
        assert (d.account_delta_minor, d.counterparty_delta_minor) == (0, 0)


@pytest.mark.allium("contract-signature.DeterministicEvaluation.evaluate")
def test_contract_totality_surfaces_internal_conditions_as_faults() -> None:
    """Settled decision: a bug is a fault, never a rejection reason the input did not earn."""
    broken = AccountSnapshot(present=True, status=ACTIVE, balance_minor=None, version=1)  # type: ignore[arg-type]
    for kind in (OperationKind.deposit, OperationKind.withdraw):
        with pytest.raises(EvaluationFault) as info:
            evaluate(envelope(kind, 5), broken, ABSENT)
        assert not isinstance(info.value, Rejected)
        assert info.value.cause.startswith("TypeError") and "\n" not in info.value.cause
    with pytest.raises(EvaluationFault, match="bogus"):
        evaluate(dataclasses.replace(envelope(OperationKind.open), kind="bogus"), ABSENT, ABSENT)  # type: ignore[arg-type]
    # A snapshot whose corrupt field the decision never reads is decided as usual.
    assert evaluate(envelope(OperationKind.deposit, 5), ABSENT, broken).reason == RejectReason.account_missing


@pytest.mark.allium("contract-signature.DeterministicEvaluation.evaluate")
def test_contract_config_is_pinned() -> None:
    tight = Config(max_amount_minor=10, max_balance_minor=100)
    env = envelope(OperationKind.deposit, 11)
    assert evaluate(env, snap(0), ABSENT).verdict == Verdict.accepted
    assert Arbiter(tight).evaluate(env, snap(0), ABSENT).reason == RejectReason.invalid_amount
    env = envelope(OperationKind.deposit, 10)
    assert Arbiter(tight).evaluate(env, snap(91), ABSENT).reason == RejectReason.balance_limit
    assert Arbiter(tight).evaluate(env, snap(90), ABSENT).verdict == Verdict.accepted


# Config -------------------------------------------------------------------------------


@pytest.mark.allium("config-default.max_amount_minor")
def test_config_default_max_amount_minor() -> None:
    assert Config().max_amount_minor == 100000000000
    assert Config().max_amount_minor == CoreConfig().max_amount_minor
    env = envelope(OperationKind.deposit, Config().max_amount_minor)
    assert evaluate(env, snap(0), ABSENT).verdict == Verdict.accepted
    env = envelope(OperationKind.deposit, Config().max_amount_minor + 1)
    assert evaluate(env, snap(0), ABSENT).reason == RejectReason.invalid_amount


@pytest.mark.allium("config-default.max_balance_minor")
def test_config_default_max_balance_minor() -> None:
    cfg = Config()
    assert cfg.max_balance_minor == 100000000000000
    assert cfg.max_balance_minor == CoreConfig().max_balance_minor
    env = envelope(OperationKind.deposit, 1)
    assert evaluate(env, snap(cfg.max_balance_minor - 1), ABSENT).verdict == Verdict.accepted
    assert evaluate(env, snap(cfg.max_balance_minor), ABSENT).reason == RejectReason.balance_limit
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_balance_minor = 1  # type: ignore[misc]


# Entity Evaluation ---------------------------------------------------------------------


@pytest.mark.allium("entity-fields.Evaluation")
def test_evaluation_fields() -> None:
    hints = typing.get_type_hints(Evaluation)
    expected = {
        "request": Request,
        "attempt": int,
        "replica_id": str,
        "primary_present": bool,
        "primary_status": AccountStatus | None,
        "primary_balance_minor": int,
        "primary_version": int,
        "counter_present": bool,
        "counter_status": AccountStatus | None,
        "counter_balance_minor": int,
        "counter_version": int,
        "status": EvaluationStatus,
        "verdict": Verdict | None,
        "reason": RejectReason | None,
        "account_delta_minor": int | None,
        "counterparty_delta_minor": int | None,
    }
    for name, tp in expected.items():
        assert hints[name] == tp, name
    assert hints["fault"] == str | None
    assert {m.value for m in EvaluationStatus} == {"pending", "decided", "faulted"}
    e = evaluation(OperationKind.deposit, 5, primary=snap(1, version=2))
    assert e.request.kind == OperationKind.deposit
    assert (e.attempt, e.replica_id) == (1, "replica-a")
    assert (e.primary_present, e.primary_status, e.primary_balance_minor, e.primary_version) == (
        True,
        ACTIVE,
        1,
        2,
    )
    assert (e.counter_present, e.counter_status, e.counter_balance_minor, e.counter_version) == (
        False,
        None,
        0,
        0,
    )
    assert e.status == EvaluationStatus.pending


@pytest.mark.allium("entity-optional.Evaluation.primary_status")
def test_evaluation_primary_status_optional() -> None:
    absent = evaluation(OperationKind.open)
    assert absent.primary_status is None
    present = evaluation(OperationKind.deposit, 1, primary=snap(0, status=CLOSED))
    assert present.primary_status == CLOSED
    check_evaluation(absent)
    check_evaluation(present)


@pytest.mark.allium("entity-optional.Evaluation.counter_status")
def test_evaluation_counter_status_optional() -> None:
    no_counter = evaluation(OperationKind.deposit, 1, primary=snap(0))
    assert no_counter.counter_status is None
    with_counter = evaluation(
        OperationKind.transfer, 1, primary=snap(5), counter=snap(0, status=ACTIVE), counterparty="acc-2"
    )
    assert with_counter.counter_status == ACTIVE
    evaluate_transfer(with_counter)
    assert with_counter.verdict == Verdict.accepted


@pytest.mark.allium("entity-optional.Evaluation.reason")
def test_evaluation_reason_optional() -> None:
    accepted = evaluation(OperationKind.deposit, 5, primary=snap(0))
    evaluate_deposit(accepted)
    assert accepted.status == EvaluationStatus.decided
    assert accepted.reason is None
    rejected = evaluation(OperationKind.deposit, 5)
    evaluate_deposit(rejected)
    assert rejected.status == EvaluationStatus.decided
    assert rejected.reason == RejectReason.account_missing


@pytest.mark.allium(
    "when-presence.Evaluation.verdict",
    "when-presence.Evaluation.reason",
    "when-presence.Evaluation.account_delta_minor",
    "when-presence.Evaluation.counterparty_delta_minor",
)
def test_evaluation_decided_fields_present_only_when_decided() -> None:
    e = evaluation(OperationKind.withdraw, 5, primary=snap(3))
    assert_pending_fields_absent(e)
    check_evaluation(e)
    check_decided_fields_presence(e)
    evaluate_withdrawal(e)
    assert e.status == EvaluationStatus.decided
    assert e.verdict == Verdict.rejected
    assert e.reason == RejectReason.insufficient_funds
    assert e.account_delta_minor == 0
    assert e.counterparty_delta_minor == 0
    check_evaluation(e)
    check_decided_fields_presence(e)
    # A pending evaluation carrying any decided field breaks that field's `when`
    # clause, and is named by the qualified field, alone.
    for name, value in (
        ("verdict", Verdict.accepted),
        ("reason", RejectReason.insufficient_funds),
        ("account_delta_minor", 0),
        ("counterparty_delta_minor", 0),
    ):
        leaked = evaluation(OperationKind.withdraw, 5, primary=snap(3))
        setattr(leaked, name, value)
        assert_broken(leaked, check_decided_fields_presence, f"Evaluation.{name}")
    # So does a faulted one: a faulted evaluation has no Decision.
    for name, value in (("verdict", Verdict.rejected), ("account_delta_minor", 0)):
        leaked = evaluation(OperationKind.withdraw, 5, primary=snap(3))
        record_evaluation_fault(leaked, "TypeError: boom")
        setattr(leaked, name, value)
        assert_broken(leaked, check_decided_fields_presence, f"Evaluation.{name}")


@pytest.mark.allium(
    "when-presence.Evaluation.verdict",
    "when-presence.Evaluation.account_delta_minor",
    "when-presence.Evaluation.counterparty_delta_minor",
    "when-presence.Evaluation.reason",
)
def test_decided_evaluation_missing_a_field_is_named_by_that_field() -> None:
    # reason is optional when decided: an acceptance carries none.
    ok = evaluation(OperationKind.deposit, 5, primary=snap(0))
    assert evaluate_deposit(ok) == accepted(5)
    assert ok.reason is None
    check_decided_fields_presence(ok)
    check_evaluation(ok)
    for verdict_kind, primary in ((Verdict.accepted, snap(10)), (Verdict.rejected, snap(1))):
        for name in ("verdict", "account_delta_minor", "counterparty_delta_minor"):
            e = evaluation(OperationKind.withdraw, 5, primary=primary)
            decide_evaluation(e)
            assert e.verdict == verdict_kind
            setattr(e, name, None)
            assert_broken(e, check_decided_fields_presence, f"Evaluation.{name}")
            # The value invariants do not claim a missing field as their own breach.
            check_decided_rejections_move_nothing(e)
            check_decided_acceptances_keep_balances_legal(e)


@pytest.mark.allium("when-presence.Evaluation.fault")
def test_fault_present_exactly_when_faulted() -> None:
    pending = evaluation(OperationKind.deposit, 5, primary=snap(0))
    pending.fault = "TypeError: boom"
    assert_broken(pending, check_decided_fields_presence, "Evaluation.fault")
    decided = evaluation(OperationKind.deposit, 5, primary=snap(0))
    evaluate_deposit(decided)
    decided.fault = "TypeError: boom"
    assert_broken(decided, check_decided_fields_presence, "Evaluation.fault")
    faulted = evaluation(OperationKind.deposit, 5, primary=snap(0))
    assert record_evaluation_fault(faulted, "TypeError: boom") is faulted
    check_decided_fields_presence(faulted)
    check_evaluation(faulted)
    faulted.fault = None
    assert_broken(faulted, check_decided_fields_presence, "Evaluation.fault")


@pytest.mark.allium("transition-edge.Evaluation.pending.decided")
def test_transition_pending_to_decided_via_rule() -> None:
    e = evaluation(OperationKind.open)
    assert e.status == EvaluationStatus.pending
    decision = decide_evaluation(e)
    assert decision == accepted()
    assert e.status is EvaluationStatus.decided
    assert decision == e.decision
    check_evaluation_transition(EvaluationStatus.pending, EvaluationStatus.decided)


@pytest.mark.allium("transition-rejected.Evaluation.status")
def test_undeclared_transitions_rejected() -> None:
    for current, target in (
        (EvaluationStatus.decided, EvaluationStatus.pending),
        (EvaluationStatus.pending, EvaluationStatus.pending),
        (EvaluationStatus.faulted, EvaluationStatus.pending),
        (EvaluationStatus.decided, EvaluationStatus.faulted),
    ):
        r = refusal(check_evaluation_transition, current, target)
        assert isinstance(r, TransitionRejected)
        assert (r.rule, r.clause) == ("Evaluation.status", 0)
    e = evaluation(OperationKind.open)
    evaluate_open(e)
    before = state_of(e)
    r = refusal(setattr, e, "status", EvaluationStatus.pending)
    assert (r.rule, r.clause) == ("Evaluation.status", 0)
    assert state_of(e) == before
    # Assigning the current state again is no change, so nothing is refused.
    e.status = EvaluationStatus.decided
    assert state_of(e) == before
    # A status given by value is stored as the enum member.
    p = evaluation(OperationKind.open)
    p.status = "faulted"  # type: ignore[assignment]
    assert p.status is EvaluationStatus.faulted


@pytest.mark.allium("transition-terminal.Evaluation.status", "transition-rejected.Evaluation.status")
def test_faulted_is_terminal() -> None:
    e = evaluation(OperationKind.deposit, 5, primary=snap(0))
    record_evaluation_fault(e, "TypeError: boom")
    for target in EvaluationStatus:
        r = refusal(check_evaluation_transition, EvaluationStatus.faulted, target)
        assert (r.rule, r.clause) == ("Evaluation.status", 0)
    r = refusal(setattr, e, "status", EvaluationStatus.decided)
    assert (r.rule, r.clause) == ("Evaluation.status", 0)
    r = refusal(evaluate_deposit, e)  # a faulted evaluation is never decided after the fact
    assert (r.rule, r.clause) == ("EvaluateDeposit", 1)
    r = refusal(decide_evaluation, e)
    assert (r.rule, r.clause) == ("EvaluateDeposit", 1)
    assert e.status == EvaluationStatus.faulted and e.decision is None
    assert e.fault == "TypeError: boom"


@pytest.mark.allium("transition-terminal.Evaluation.status")
def test_decided_is_terminal() -> None:
    e = evaluation(OperationKind.deposit, 5, primary=snap(0))
    evaluate_deposit(e)
    assert e.status == EvaluationStatus.decided
    for target in EvaluationStatus:
        r = refusal(check_evaluation_transition, EvaluationStatus.decided, target)
        assert (r.rule, r.clause) == ("Evaluation.status", 0)
    # Re-running any rule on a decided evaluation is refused and changes nothing.
    before = state_of(e)
    r = refusal(evaluate_deposit, e)
    assert (r.rule, r.clause) == ("EvaluateDeposit", 1)
    r = refusal(decide_evaluation, e)
    assert (r.rule, r.clause) == ("EvaluateDeposit", 1)
    assert state_of(e) == before


@pytest.mark.allium("invariant.Evaluation.SnapshotVersionsMatchPresence")
def test_snapshot_versions_match_presence() -> None:
    good = evaluation(OperationKind.transfer, 1, primary=snap(5, version=1), counter=snap(0, version=1), counterparty="b")
    check_snapshot_versions_match_presence(good)
    check_evaluation(good)
    evaluate_transfer(good)
    check_snapshot_versions_match_presence(good)
    check_evaluation(good)
    # Each of the three clauses broken alone is named.
    bad = evaluation(OperationKind.deposit, 1, primary=snap(5, version=0))
    assert_broken(bad, check_snapshot_versions_match_presence, "SnapshotVersionsMatchPresence")
    bad = evaluation(OperationKind.deposit, 1)
    bad.primary_version = 1
    assert_broken(bad, check_snapshot_versions_match_presence, "SnapshotVersionsMatchPresence")
    bad = evaluation(OperationKind.deposit, 1, primary=snap(5))
    bad.counter_version = 1
    assert_broken(bad, check_snapshot_versions_match_presence, "SnapshotVersionsMatchPresence")
    # A present counterparty may carry any version the Registrar read.
    fine = evaluation(OperationKind.deposit, 1, primary=snap(5), counter=snap(0, version=0))
    check_evaluation(fine)


@pytest.mark.allium("invariant.Evaluation.DecidedRejectionsMoveNothing")
def test_decided_rejections_move_nothing() -> None:
    cases = [
        evaluation(OperationKind.deposit, 0, primary=snap(0)),
        evaluation(OperationKind.withdraw, 50, primary=snap(10)),
        evaluation(OperationKind.transfer, 5, primary=snap(10), counterparty="acc-1"),
        evaluation(OperationKind.close, 0, primary=snap(10)),
        evaluation(OperationKind.open, 0, primary=snap(0)),
    ]
    for e in cases:
        d = decide_evaluation(e)
        assert d.verdict == Verdict.rejected
        assert (d.account_delta_minor, d.counterparty_delta_minor) == (0, 0)
        assert e.account_delta_minor == 0 and e.counterparty_delta_minor == 0
        check_decided_rejections_move_nothing(e)
        check_evaluation(e)
    for name, value in (("account_delta_minor", -50), ("counterparty_delta_minor", 50)):
        broken = evaluation(OperationKind.withdraw, 50, primary=snap(10))
        assert evaluate_withdrawal(broken) == rejected(RejectReason.insufficient_funds)
        setattr(broken, name, value)
        assert_broken(broken, check_decided_rejections_move_nothing, "DecidedRejectionsMoveNothing")
    # Acceptances and undecided evaluations are outside this invariant.
    moved = evaluation(OperationKind.deposit, 7, primary=snap(0))
    evaluate_deposit(moved)
    check_decided_rejections_move_nothing(moved)


@pytest.mark.allium("invariant.Evaluation.DecidedAcceptancesKeepBalancesLegal")
def test_decided_acceptances_keep_balances_legal() -> None:
    e = evaluation(OperationKind.withdraw, 10, primary=snap(10))
    assert evaluate_withdrawal(e) == accepted(-10)
    assert e.primary_balance_minor + e.account_delta_minor == 0  # exactly 0 is legal
    check_decided_acceptances_keep_balances_legal(e)
    check_evaluation(e)
    t = evaluation(OperationKind.transfer, 7, primary=snap(7), counter=snap(0), counterparty="acc-2")
    assert evaluate_transfer(t) == accepted(-7, 7)
    assert t.primary_balance_minor + t.account_delta_minor == 0
    assert t.counter_balance_minor + t.counterparty_delta_minor == 7
    check_decided_acceptances_keep_balances_legal(t)
    # The primary side one below zero, alone.
    t.account_delta_minor = -8
    assert_broken(t, check_decided_acceptances_keep_balances_legal, "DecidedAcceptancesKeepBalancesLegal")
    # The counterparty side: exactly zero is legal, one below is named.
    c = evaluation(OperationKind.transfer, 7, primary=snap(7), counter=snap(0), counterparty="acc-2")
    evaluate_transfer(c)
    c.counter_balance_minor = -7
    check_decided_acceptances_keep_balances_legal(c)
    check_evaluation(c)
    c.counter_balance_minor = -8
    assert_broken(c, check_decided_acceptances_keep_balances_legal, "DecidedAcceptancesKeepBalancesLegal")
    # Only acceptances are constrained: a rejection over an illegal snapshot
    # balance, or an undecided evaluation, does not break it.
    r = evaluation(OperationKind.withdraw, 1, primary=snap(-5))
    assert evaluate_withdrawal(r) == rejected(RejectReason.insufficient_funds)
    check_decided_acceptances_keep_balances_legal(r)
    check_evaluation(r)
    p = evaluation(OperationKind.withdraw, 1, primary=snap(-5))
    check_decided_acceptances_keep_balances_legal(p)
    check_evaluation(p)


# Rules: EvaluateOpen -------------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.EvaluateOpen",
    "when-set.EvaluateOpen.Evaluation.verdict",
    "when-set.EvaluateOpen.Evaluation.reason",
    "when-set.EvaluateOpen.Evaluation.account_delta_minor",
    "when-set.EvaluateOpen.Evaluation.counterparty_delta_minor",
)
def test_evaluate_open_accepts_new_account() -> None:
    e = evaluation(OperationKind.open, 0)
    assert_pending_fields_absent(e)
    d = evaluate_open(e)
    assert e.status == EvaluationStatus.decided
    assert e.verdict == Verdict.accepted
    assert e.reason is None
    assert e.account_delta_minor == 0
    assert e.counterparty_delta_minor == 0
    assert d == e.decision
    check_evaluation(e)


@pytest.mark.allium(
    "when-set.EvaluateOpen.Evaluation.verdict",
    "when-set.EvaluateOpen.Evaluation.reason",
)
def test_evaluate_open_rejections_in_order() -> None:
    # invalid_amount wins over account_exists.
    e = evaluation(OperationKind.open, 5, primary=snap(0))
    assert evaluate_open(e) == rejected(RejectReason.invalid_amount)
    assert (e.status, e.verdict, e.reason) == (EvaluationStatus.decided, Verdict.rejected, RejectReason.invalid_amount)
    e = evaluation(OperationKind.open, 0, primary=snap(0))
    assert evaluate_open(e) == rejected(RejectReason.account_exists)
    assert (e.verdict, e.reason) == (Verdict.rejected, RejectReason.account_exists)
    assert (e.account_delta_minor, e.counterparty_delta_minor) == (0, 0)


@pytest.mark.allium("rule-failure.EvaluateOpen.1")
def test_evaluate_open_requires_pending() -> None:
    e = evaluation(OperationKind.open, 0)
    evaluate_open(e)
    before = e.decision
    with pytest.raises(Rejected) as info:
        evaluate_open(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateOpen", 1)
    assert e.decision == before


@pytest.mark.allium("rule-failure.EvaluateOpen.2")
def test_evaluate_open_requires_kind_open() -> None:
    e = evaluation(OperationKind.deposit, 5, primary=snap(0))
    with pytest.raises(Rejected) as info:
        evaluate_open(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateOpen", 2)
    assert_pending_fields_absent(e)


# Rules: EvaluateDeposit ----------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.EvaluateDeposit",
    "when-set.EvaluateDeposit.Evaluation.verdict",
    "when-set.EvaluateDeposit.Evaluation.reason",
    "when-set.EvaluateDeposit.Evaluation.account_delta_minor",
    "when-set.EvaluateDeposit.Evaluation.counterparty_delta_minor",
)
def test_evaluate_deposit_accepts() -> None:
    e = evaluation(OperationKind.deposit, 250, primary=snap(100))
    assert_pending_fields_absent(e)
    assert evaluate_deposit(e) == accepted(250)
    assert e.status == EvaluationStatus.decided
    assert e.verdict == Verdict.accepted
    assert e.reason is None
    assert e.account_delta_minor == 250
    assert e.counterparty_delta_minor == 0
    check_evaluation(e)


@pytest.mark.allium(
    "when-set.EvaluateDeposit.Evaluation.verdict",
    "when-set.EvaluateDeposit.Evaluation.reason",
    "when-set.EvaluateDeposit.Evaluation.account_delta_minor",
)
def test_evaluate_deposit_rejections_in_order() -> None:
    cfg = Config()
    cases = [
        (0, ABSENT, RejectReason.invalid_amount),
        (-3, snap(0), RejectReason.invalid_amount),
        (cfg.max_amount_minor + 1, snap(0), RejectReason.invalid_amount),
        (5, ABSENT, RejectReason.account_missing),
        (5, snap(0, status=CLOSED), RejectReason.account_closed),
        (5, snap(cfg.max_balance_minor - 4), RejectReason.balance_limit),
    ]
    for amount, primary, reason in cases:
        e = evaluation(OperationKind.deposit, amount, primary=primary)
        assert evaluate_deposit(e) == rejected(reason)
        assert (e.status, e.verdict, e.reason) == (EvaluationStatus.decided, Verdict.rejected, reason)
        assert (e.account_delta_minor, e.counterparty_delta_minor) == (0, 0)


@pytest.mark.allium("rule-failure.EvaluateDeposit.1")
def test_evaluate_deposit_requires_pending() -> None:
    e = evaluation(OperationKind.deposit, 5, primary=snap(0))
    evaluate_deposit(e)
    with pytest.raises(Rejected) as info:
        evaluate_deposit(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateDeposit", 1)
    assert e.account_delta_minor == 5


@pytest.mark.allium("rule-failure.EvaluateDeposit.2")
def test_evaluate_deposit_requires_kind_deposit() -> None:
    e = evaluation(OperationKind.withdraw, 5, primary=snap(10))
    with pytest.raises(Rejected) as info:
        evaluate_deposit(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateDeposit", 2)
    assert_pending_fields_absent(e)


# Rules: EvaluateWithdrawal -------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.EvaluateWithdrawal",
    "when-set.EvaluateWithdrawal.Evaluation.verdict",
    "when-set.EvaluateWithdrawal.Evaluation.reason",
    "when-set.EvaluateWithdrawal.Evaluation.account_delta_minor",
    "when-set.EvaluateWithdrawal.Evaluation.counterparty_delta_minor",
)
def test_evaluate_withdrawal_accepts() -> None:
    e = evaluation(OperationKind.withdraw, 40, primary=snap(100))
    assert_pending_fields_absent(e)
    assert evaluate_withdrawal(e) == accepted(-40)
    assert e.status == EvaluationStatus.decided
    assert e.verdict == Verdict.accepted
    assert e.reason is None
    assert e.account_delta_minor == -40
    assert e.counterparty_delta_minor == 0
    check_evaluation(e)


@pytest.mark.allium(
    "when-set.EvaluateWithdrawal.Evaluation.verdict",
    "when-set.EvaluateWithdrawal.Evaluation.reason",
)
def test_evaluate_withdrawal_rejections_in_order() -> None:
    cases = [
        (0, ABSENT, RejectReason.invalid_amount),
        (Config().max_amount_minor + 1, snap(10**15), RejectReason.invalid_amount),
        (5, ABSENT, RejectReason.account_missing),
        (5, snap(100, status=CLOSED), RejectReason.account_closed),
        (101, snap(100), RejectReason.insufficient_funds),
    ]
    for amount, primary, reason in cases:
        e = evaluation(OperationKind.withdraw, amount, primary=primary)
        assert evaluate_withdrawal(e) == rejected(reason)
        assert (e.verdict, e.reason) == (Verdict.rejected, reason)
        assert (e.account_delta_minor, e.counterparty_delta_minor) == (0, 0)


@pytest.mark.allium("rule-failure.EvaluateWithdrawal.1")
def test_evaluate_withdrawal_requires_pending() -> None:
    e = evaluation(OperationKind.withdraw, 5, primary=snap(10))
    evaluate_withdrawal(e)
    with pytest.raises(Rejected) as info:
        evaluate_withdrawal(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateWithdrawal", 1)
    assert e.account_delta_minor == -5


@pytest.mark.allium("rule-failure.EvaluateWithdrawal.2")
def test_evaluate_withdrawal_requires_kind_withdraw() -> None:
    e = evaluation(OperationKind.deposit, 5, primary=snap(10))
    with pytest.raises(Rejected) as info:
        evaluate_withdrawal(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateWithdrawal", 2)
    assert_pending_fields_absent(e)


# Rules: EvaluateTransfer ---------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.EvaluateTransfer",
    "when-set.EvaluateTransfer.Evaluation.verdict",
    "when-set.EvaluateTransfer.Evaluation.reason",
    "when-set.EvaluateTransfer.Evaluation.account_delta_minor",
    "when-set.EvaluateTransfer.Evaluation.counterparty_delta_minor",
)
def test_evaluate_transfer_accepts() -> None:
    e = evaluation(OperationKind.transfer, 30, primary=snap(30), counter=snap(5, version=2), counterparty="acc-2")
    assert_pending_fields_absent(e)
    assert evaluate_transfer(e) == accepted(-30, 30)
    assert e.status == EvaluationStatus.decided
    assert e.verdict == Verdict.accepted
    assert e.reason is None
    assert e.account_delta_minor == -30
    assert e.counterparty_delta_minor == 30
    assert e.account_delta_minor + e.counterparty_delta_minor == 0
    check_evaluation(e)


@pytest.mark.allium(
    "when-set.EvaluateTransfer.Evaluation.verdict",
    "when-set.EvaluateTransfer.Evaluation.reason",
    "when-set.EvaluateTransfer.Evaluation.counterparty_delta_minor",
)
def test_evaluate_transfer_rejections_in_order() -> None:
    cfg = Config()
    cases = [
        (0, "acc-1", ABSENT, ABSENT, RejectReason.invalid_amount),
        (5, "acc-1", snap(100), ABSENT, RejectReason.same_account),
        (5, "acc-2", ABSENT, snap(0), RejectReason.account_missing),
        (5, "acc-2", snap(100, status=CLOSED), snap(0), RejectReason.account_closed),
        (5, None, snap(100), snap(0), RejectReason.counterparty_missing),
        (5, "acc-2", snap(100), ABSENT, RejectReason.counterparty_missing),
        (5, "acc-2", snap(100), snap(0, status=CLOSED), RejectReason.counterparty_closed),
        (500, "acc-2", snap(100), snap(0), RejectReason.insufficient_funds),
        (5, "acc-2", snap(100), snap(cfg.max_balance_minor - 4), RejectReason.balance_limit),
    ]
    for amount, target, primary, counter, reason in cases:
        e = evaluation(OperationKind.transfer, amount, primary=primary, counter=counter, counterparty=target)
        assert evaluate_transfer(e) == rejected(reason)
        assert (e.verdict, e.reason) == (Verdict.rejected, reason), reason
        assert (e.account_delta_minor, e.counterparty_delta_minor) == (0, 0)


@pytest.mark.allium("when-set.EvaluateTransfer.Evaluation.reason")
def test_self_transfer_rejected_regardless_of_account_state() -> None:
    # @guidance: same_account comes before any snapshot field.
    for primary in (ABSENT, snap(0), snap(100, status=CLOSED)):
        e = evaluation(OperationKind.transfer, 5, primary=primary, counterparty="acc-1")
        evaluate_transfer(e)
        assert e.reason == RejectReason.same_account


@pytest.mark.allium("rule-failure.EvaluateTransfer.1")
def test_evaluate_transfer_requires_pending() -> None:
    e = evaluation(OperationKind.transfer, 5, primary=snap(10), counter=snap(0), counterparty="acc-2")
    evaluate_transfer(e)
    with pytest.raises(Rejected) as info:
        evaluate_transfer(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateTransfer", 1)
    assert (e.account_delta_minor, e.counterparty_delta_minor) == (-5, 5)


@pytest.mark.allium("rule-failure.EvaluateTransfer.2")
def test_evaluate_transfer_requires_kind_transfer() -> None:
    e = evaluation(OperationKind.deposit, 5, primary=snap(10))
    with pytest.raises(Rejected) as info:
        evaluate_transfer(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateTransfer", 2)
    assert_pending_fields_absent(e)


# Rules: EvaluateClose ------------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.EvaluateClose",
    "when-set.EvaluateClose.Evaluation.verdict",
    "when-set.EvaluateClose.Evaluation.reason",
    "when-set.EvaluateClose.Evaluation.account_delta_minor",
    "when-set.EvaluateClose.Evaluation.counterparty_delta_minor",
)
def test_evaluate_close_accepts_empty_account() -> None:
    e = evaluation(OperationKind.close, 0, primary=snap(0, version=4))
    assert_pending_fields_absent(e)
    assert evaluate_close(e) == accepted()
    assert e.status == EvaluationStatus.decided
    assert e.verdict == Verdict.accepted
    assert e.reason is None
    assert e.account_delta_minor == 0
    assert e.counterparty_delta_minor == 0
    check_evaluation(e)


@pytest.mark.allium(
    "when-set.EvaluateClose.Evaluation.verdict",
    "when-set.EvaluateClose.Evaluation.reason",
)
def test_evaluate_close_rejections_in_order() -> None:
    cases = [
        (1, ABSENT, RejectReason.invalid_amount),
        (0, ABSENT, RejectReason.account_missing),
        (0, snap(0, status=CLOSED), RejectReason.account_closed),
        (0, snap(1), RejectReason.balance_not_zero),
    ]
    for amount, primary, reason in cases:
        e = evaluation(OperationKind.close, amount, primary=primary)
        assert evaluate_close(e) == rejected(reason)
        assert (e.verdict, e.reason) == (Verdict.rejected, reason)
        assert (e.account_delta_minor, e.counterparty_delta_minor) == (0, 0)


@pytest.mark.allium("rule-failure.EvaluateClose.1")
def test_evaluate_close_requires_pending() -> None:
    e = evaluation(OperationKind.close, 0, primary=snap(0))
    evaluate_close(e)
    with pytest.raises(Rejected) as info:
        evaluate_close(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateClose", 1)
    assert e.verdict == Verdict.accepted


@pytest.mark.allium("rule-failure.EvaluateClose.2")
def test_evaluate_close_requires_kind_close() -> None:
    e = evaluation(OperationKind.open, 0)
    with pytest.raises(Rejected) as info:
        evaluate_close(e)
    assert (info.value.rule, info.value.clause) == ("EvaluateClose", 2)
    assert_pending_fields_absent(e)


# Invariant HonestReplicasAgree ---------------------------------------------------------


@pytest.mark.allium("invariant.HonestReplicasAgree")
def test_honest_replicas_agree() -> None:
    req = request(OperationKind.transfer, 20, counterparty="acc-2")
    replicas = ["replica-a", "replica-b", "replica-c"]
    evaluations = [
        evaluation(OperationKind.transfer, req=req, replica=r, primary=snap(50), counter=snap(1))
        for r in replicas
    ]
    for e in evaluations:
        decide_evaluation(e)
    check_honest_replicas_agree(evaluations)
    assert {e.decision for e in evaluations} == {evaluations[0].decision}
    # A faulty replica's divergent answer violates the invariant unless fenced.
    faulty = evaluation(OperationKind.transfer, req=req, replica="replica-d", primary=snap(50), counter=snap(1))
    decide_evaluation(faulty)
    faulty.reason = RejectReason.insufficient_funds
    assert violation_name(check_honest_replicas_agree, [*evaluations, faulty]) == "HonestReplicasAgree"
    check_honest_replicas_agree([*evaluations, faulty], is_trusted=lambda rid: rid != "replica-d")
    # A different attempt is a different round: no comparison across attempts.
    later = evaluation(OperationKind.transfer, req=req, replica="replica-a", attempt=2, primary=snap(5), counter=snap(1))
    decide_evaluation(later)
    assert later.reason == RejectReason.insufficient_funds
    check_honest_replicas_agree([*evaluations, later])


@pytest.mark.allium("invariant.HonestReplicasAgree")
def test_replay_reproduces_decision() -> None:
    e = evaluation(OperationKind.withdraw, 9, primary=snap(10, version=7))
    decide_evaluation(e)
    assert replay(e) == e.decision
    fresh = evaluation(OperationKind.withdraw, req=e.request, replica="replica-z", primary=e.primary)
    decide_evaluation(fresh)
    check_honest_replicas_agree([e, fresh])


# Surface EvaluationBoundary ------------------------------------------------------------


@pytest.mark.allium("surface-actor.EvaluationBoundary")
def test_surface_has_no_facing_actor() -> None:
    boundary = EvaluationBoundary()
    # No facing clause: an in-process boundary, not exposed to any remote actor.
    assert boundary.facing is None
    assert isinstance(boundary, DeterministicEvaluation)
    d = boundary.evaluate(envelope(OperationKind.open), ABSENT, ABSENT)
    assert d.verdict == Verdict.accepted


@pytest.mark.allium("surface-exposure.EvaluationBoundary")
def test_surface_exposes_snapshot_and_decision() -> None:
    boundary = EvaluationBoundary()
    assert boundary.exposes == (AccountSnapshot, Decision)
    assert DeterministicEvaluation in boundary.fulfils
    primary = AccountSnapshot(present=True, status=ACTIVE, balance_minor=3, version=1)
    d = boundary.evaluate(envelope(OperationKind.close), primary, AccountSnapshot.absent())
    assert isinstance(d, Decision)
    assert d == Decision(
        verdict=Verdict.rejected,
        reason=RejectReason.balance_not_zero,
        account_delta_minor=0,
        counterparty_delta_minor=0,
    )
    # NoHiddenInputs: the Evaluation's inputs replayed through the surface.
    e = evaluation(OperationKind.close, primary=primary)
    evaluate_close(e)
    assert boundary.evaluate(e.envelope, e.primary, e.counterparty) == e.decision


# Evaluation faults (RecordEvaluationFault) ---------------------------------------------------


BROKEN = AccountSnapshot(present=True, status=ACTIVE, balance_minor=None, version=1)  # type: ignore[arg-type]


@pytest.mark.allium(
    "rule-success.RecordEvaluationFault",
    "transition-edge.Evaluation.pending.faulted",
    "when-set.RecordEvaluationFault.Evaluation.fault",
    "when-presence.Evaluation.fault",
)
def test_a_failing_evaluation_is_recorded_as_faulted_not_decided() -> None:
    e = evaluation(OperationKind.withdraw, 5, primary=BROKEN)
    assert e.fault is None and e.status == EvaluationStatus.pending
    check_evaluation(e)
    with pytest.raises(EvaluationFault) as info:
        decide_evaluation(e)
    assert e.status == EvaluationStatus.faulted and e.is_faulted and not e.is_decided
    assert e.fault == info.value.cause and e.fault.startswith("TypeError")
    assert e.verdict is None and e.reason is None and e.decision is None
    check_evaluation(e)  # fault present exactly when faulted; no decided field
    e.fault = None
    assert_broken(e, check_decided_fields_presence, "Evaluation.fault")


@pytest.mark.allium("rule-failure.RecordEvaluationFault.1")
def test_record_evaluation_fault_requires_pending() -> None:
    e = evaluation(OperationKind.deposit, 5, primary=snap(0))
    decision = evaluate_deposit(e)
    with pytest.raises(Rejected) as info:
        record_evaluation_fault(e, "late")
    assert (info.value.rule, info.value.clause) == ("RecordEvaluationFault", 1)
    assert e.status == EvaluationStatus.decided and e.fault is None and e.decision == decision


@pytest.mark.allium("rule-failure.EvaluateDeposit.1")
def test_decide_evaluation_rejects_a_non_pending_evaluation_without_recording_a_fault() -> None:
    e = evaluation(OperationKind.deposit, 5, primary=snap(0))
    evaluate_deposit(e)
    r = refusal(decide_evaluation, e)
    assert (r.rule, r.clause) == ("EvaluateDeposit", 1)
    assert e.status == EvaluationStatus.decided and e.fault is None


@pytest.mark.allium("rule-success.RecordEvaluationFault", "invariant.HonestReplicasAgree")
def test_every_honest_replica_faults_alike_and_none_decides() -> None:
    """The bug is deterministic: all replicas fault with the same cause; no Decision exists to agree on.

    HonestReplicasAgree compares decided evaluations only, so it holds after
    RecordEvaluationFault on every replica, and a faulted evaluation never
    counts as a disagreeing vote against a replica that did decide.
    """
    req = request(OperationKind.transfer, 5, counterparty="acc-2")
    replicas = [evaluation(OperationKind.transfer, req=req, primary=BROKEN, counter=snap(0), replica=f"replica-{i}")
                for i in range(3)]
    causes = set()
    for i, e in enumerate(replicas):
        with pytest.raises(EvaluationFault):
            decide_evaluation(e)
        causes.add(e.fault)
        # The invariant holds after every RecordEvaluationFault the host applied.
        check_honest_replicas_agree(replicas[: i + 1])
    assert len(causes) == 1 and all(e.decision is None for e in replicas)
    assert all(e.status is EvaluationStatus.faulted for e in replicas)
    # A trusted replica of the same attempt that did decide is not contradicted
    # by the faulted ones: a fault carries no Decision to compare.
    decided = evaluation(OperationKind.transfer, req=req, primary=snap(10), counter=snap(0), replica="replica-3")
    assert decide_evaluation(decided) == accepted(-5, 5)
    check_honest_replicas_agree([*replicas, decided])
    check_honest_replicas_agree([decided, *replicas])
    # The check is live on the same set: a second decided replica that answers
    # differently for the same attempt is named, faults or no faults around it.
    dissenter = evaluation(OperationKind.transfer, req=req, primary=snap(1), counter=snap(0), replica="replica-4")
    assert decide_evaluation(dissenter) == rejected(RejectReason.insufficient_funds)
    assert violation_name(check_honest_replicas_agree, [*replicas, decided, dissenter]) == "HonestReplicasAgree"
    check_honest_replicas_agree([*replicas, decided, dissenter], is_trusted=lambda rid: rid != "replica-4")


@pytest.mark.allium("surface-provides.EvaluationBoundary", "surface-actor.EvaluationBoundary")
def test_surface_provides_evaluation_faulted() -> None:
    boundary = EvaluationBoundary()
    assert boundary.facing is None and boundary.provides == ("EvaluationFaulted",)
    e = evaluation(OperationKind.withdraw, 5, primary=BROKEN)
    with pytest.raises(EvaluationFault) as info:
        boundary.evaluate(e.envelope, e.primary, e.counterparty)
    event = boundary.fault(e, info.value.cause)
    assert event == EvaluationFaulted(evaluation=e, cause=info.value.cause)
    assert e.status == EvaluationStatus.faulted and e.fault == info.value.cause


# The absent snapshot ---------------------------------------------------------------------


@pytest.mark.allium("entity-fields.AccountSnapshot", "value-equality.AccountSnapshot")
def test_absent_snapshot_is_not_present_no_status_balance_0_version_0() -> None:
    """Settled decision: an account that does not exist is (False, None, 0, 0), primary and counterparty alike."""
    absent = AccountSnapshot.absent()
    assert (absent.present, absent.status, absent.balance_minor, absent.version) == (False, None, 0, 0)
    assert absent == AccountSnapshot(present=False, status=None, balance_minor=0, version=0)
    assert AccountSnapshot(present=False) == absent  # the field defaults are the absent values
    # Evaluation.of copies it field by field, for the primary and (by default) the counterparty.
    e = Evaluation.of(request(OperationKind.open), 1, "replica-a", AccountSnapshot.absent())
    assert (e.primary_present, e.primary_status, e.primary_balance_minor, e.primary_version) == (False, None, 0, 0)
    assert (e.counter_present, e.counter_status, e.counter_balance_minor, e.counter_version) == (False, None, 0, 0)
    assert e.primary == absent and e.counterparty == absent
    check_evaluation(e)
    # It is decided as a missing account.
    assert evaluate_open(e) == accepted()
    assert evaluate(envelope(OperationKind.deposit, 5), absent, absent) == rejected(RejectReason.account_missing)
    d = evaluate(envelope(OperationKind.transfer, 5, counterparty="acc-2"), snap(10), absent)
    assert d == rejected(RejectReason.counterparty_missing)


# Inclusive bounds: both sides of every bound, per Evaluate rule --------------------------

EVALUATE_RULES: dict[OperationKind, typing.Callable[..., Decision]] = {
    OperationKind.open: evaluate_open,
    OperationKind.deposit: evaluate_deposit,
    OperationKind.withdraw: evaluate_withdrawal,
    OperationKind.transfer: evaluate_transfer,
    OperationKind.close: evaluate_close,
}
RULE_NAMES: dict[OperationKind, str] = {
    OperationKind.open: "EvaluateOpen",
    OperationKind.deposit: "EvaluateDeposit",
    OperationKind.withdraw: "EvaluateWithdrawal",
    OperationKind.transfer: "EvaluateTransfer",
    OperationKind.close: "EvaluateClose",
}


def decide_case(
    kind: OperationKind,
    amount: typing.Any,
    primary: AccountSnapshot,
    counter: AccountSnapshot = ABSENT,
    counterparty: str | None = None,
    config: Config | None = None,
) -> Decision:
    """Decide one input through its Evaluate rule; check the returned Decision, the
    Evaluation's fields, the invariants and a replay through evaluate all agree."""
    e = evaluation(kind, amount, primary=primary, counter=counter, counterparty=counterparty)
    args = (e,) if config is None else (e, config)
    d = EVALUATE_RULES[kind](*args)
    assert isinstance(d, Decision)
    assert e.status is EvaluationStatus.decided
    assert (e.verdict, e.reason, e.account_delta_minor, e.counterparty_delta_minor) == (
        d.verdict,
        d.reason,
        d.account_delta_minor,
        d.counterparty_delta_minor,
    )
    assert e.decision == d
    check_evaluation(e)
    assert replay(e, config or Config()) == d
    return d


@pytest.mark.allium(
    "rule-success.EvaluateOpen",
    "when-set.EvaluateOpen.Evaluation.verdict",
    "when-set.EvaluateOpen.Evaluation.reason",
    "when-set.EvaluateOpen.Evaluation.account_delta_minor",
    "when-set.EvaluateOpen.Evaluation.counterparty_delta_minor",
)
def test_evaluate_open_bounds() -> None:
    assert decide_case(OperationKind.open, 0, ABSENT) == accepted()
    assert decide_case(OperationKind.open, 1, ABSENT) == rejected(RejectReason.invalid_amount)
    assert decide_case(OperationKind.open, -1, ABSENT) == rejected(RejectReason.invalid_amount)
    assert evaluate(envelope(OperationKind.open, False), ABSENT, ABSENT) == rejected(RejectReason.invalid_amount)  # type: ignore[arg-type]
    assert decide_case(OperationKind.open, 0, snap(0)) == rejected(RejectReason.account_exists)
    assert decide_case(OperationKind.open, 1, snap(0)) == rejected(RejectReason.invalid_amount)


@pytest.mark.allium(
    "rule-success.EvaluateDeposit",
    "when-set.EvaluateDeposit.Evaluation.verdict",
    "when-set.EvaluateDeposit.Evaluation.reason",
    "when-set.EvaluateDeposit.Evaluation.account_delta_minor",
    "when-set.EvaluateDeposit.Evaluation.counterparty_delta_minor",
)
def test_evaluate_deposit_bounds() -> None:
    k = OperationKind.deposit
    assert decide_case(k, 1, snap(0)) == accepted(1)
    assert decide_case(k, 0, snap(0)) == rejected(RejectReason.invalid_amount)
    assert decide_case(k, -1, snap(0)) == rejected(RejectReason.invalid_amount)
    assert decide_case(k, MAX_AMOUNT, snap(0)) == accepted(MAX_AMOUNT)
    assert decide_case(k, MAX_AMOUNT + 1, snap(0)) == rejected(RejectReason.invalid_amount)
    assert decide_case(k, 5, snap(MAX_BALANCE - 5)) == accepted(5)
    assert decide_case(k, 6, snap(MAX_BALANCE - 5)) == rejected(RejectReason.balance_limit)
    assert decide_case(k, MAX_AMOUNT, snap(MAX_BALANCE - MAX_AMOUNT)) == accepted(MAX_AMOUNT)
    assert decide_case(k, MAX_AMOUNT, snap(MAX_BALANCE - MAX_AMOUNT + 1)) == rejected(RejectReason.balance_limit)


@pytest.mark.allium(
    "rule-success.EvaluateWithdrawal",
    "when-set.EvaluateWithdrawal.Evaluation.verdict",
    "when-set.EvaluateWithdrawal.Evaluation.reason",
    "when-set.EvaluateWithdrawal.Evaluation.account_delta_minor",
    "when-set.EvaluateWithdrawal.Evaluation.counterparty_delta_minor",
)
def test_evaluate_withdrawal_bounds() -> None:
    k = OperationKind.withdraw
    assert decide_case(k, 1, snap(1)) == accepted(-1)
    assert decide_case(k, 0, snap(1)) == rejected(RejectReason.invalid_amount)
    assert decide_case(k, -1, snap(1)) == rejected(RejectReason.invalid_amount)
    assert decide_case(k, MAX_AMOUNT, snap(MAX_AMOUNT)) == accepted(-MAX_AMOUNT)
    assert decide_case(k, MAX_AMOUNT + 1, snap(MAX_BALANCE)) == rejected(RejectReason.invalid_amount)
    assert decide_case(k, 100, snap(100)) == accepted(-100)  # the whole balance
    assert decide_case(k, 101, snap(100)) == rejected(RejectReason.insufficient_funds)


@pytest.mark.allium(
    "rule-success.EvaluateTransfer",
    "when-set.EvaluateTransfer.Evaluation.verdict",
    "when-set.EvaluateTransfer.Evaluation.reason",
    "when-set.EvaluateTransfer.Evaluation.account_delta_minor",
    "when-set.EvaluateTransfer.Evaluation.counterparty_delta_minor",
)
def test_evaluate_transfer_bounds() -> None:
    k = OperationKind.transfer

    def t(amount: int, primary: AccountSnapshot, counter: AccountSnapshot) -> Decision:
        return decide_case(k, amount, primary, counter, counterparty="acc-2")

    assert t(1, snap(1), snap(0)) == accepted(-1, 1)
    assert t(0, snap(1), snap(0)) == rejected(RejectReason.invalid_amount)
    assert t(-1, snap(1), snap(0)) == rejected(RejectReason.invalid_amount)
    assert t(MAX_AMOUNT, snap(MAX_AMOUNT), snap(0)) == accepted(-MAX_AMOUNT, MAX_AMOUNT)
    assert t(MAX_AMOUNT + 1, snap(MAX_BALANCE), snap(0)) == rejected(RejectReason.invalid_amount)
    assert t(30, snap(30), snap(0)) == accepted(-30, 30)  # the whole balance
    assert t(31, snap(30), snap(0)) == rejected(RejectReason.insufficient_funds)
    # The counterparty's balance limit admits exactly max_balance_minor.
    assert t(5, snap(100), snap(MAX_BALANCE - 5)) == accepted(-5, 5)
    assert t(6, snap(100), snap(MAX_BALANCE - 5)) == rejected(RejectReason.balance_limit)
    assert t(1, snap(1), snap(MAX_BALANCE)) == rejected(RejectReason.balance_limit)


@pytest.mark.allium(
    "rule-success.EvaluateClose",
    "when-set.EvaluateClose.Evaluation.verdict",
    "when-set.EvaluateClose.Evaluation.reason",
    "when-set.EvaluateClose.Evaluation.account_delta_minor",
    "when-set.EvaluateClose.Evaluation.counterparty_delta_minor",
)
def test_evaluate_close_bounds() -> None:
    k = OperationKind.close
    assert decide_case(k, 0, snap(0)) == accepted()
    assert decide_case(k, 1, snap(0)) == rejected(RejectReason.invalid_amount)
    assert decide_case(k, -1, snap(0)) == rejected(RejectReason.invalid_amount)
    assert evaluate(envelope(k, False), snap(0), ABSENT) == rejected(RejectReason.invalid_amount)  # type: ignore[arg-type]
    assert decide_case(k, 0, snap(1)) == rejected(RejectReason.balance_not_zero)
    assert decide_case(k, 0, snap(-1)) == rejected(RejectReason.balance_not_zero)


@pytest.mark.allium(
    "rule-success.EvaluateDeposit",
    "rule-success.EvaluateWithdrawal",
    "rule-success.EvaluateTransfer",
    "contract-signature.DeterministicEvaluation.evaluate",
)
def test_rules_read_the_pinned_config_they_are_given() -> None:
    """ConfigIsPinned: the two bounds come from the replica's Config, through every path."""
    tight = Config(max_amount_minor=10, max_balance_minor=100)
    assert decide_case(OperationKind.deposit, 10, snap(90), config=tight) == accepted(10)
    assert decide_case(OperationKind.deposit, 11, snap(0), config=tight) == rejected(RejectReason.invalid_amount)
    assert decide_case(OperationKind.deposit, 10, snap(91), config=tight) == rejected(RejectReason.balance_limit)
    assert decide_case(OperationKind.withdraw, 11, snap(50), config=tight) == rejected(RejectReason.invalid_amount)
    assert decide_case(OperationKind.withdraw, 10, snap(50), config=tight) == accepted(-10)
    t = "acc-2"
    assert decide_case(OperationKind.transfer, 11, snap(50), snap(0), t, tight) == rejected(RejectReason.invalid_amount)
    assert decide_case(OperationKind.transfer, 10, snap(50), snap(91), t, tight) == rejected(RejectReason.balance_limit)
    assert decide_case(OperationKind.transfer, 10, snap(50), snap(90), t, tight) == accepted(-10, 10)
    # The host and the surface pass their config on.
    e = evaluation(OperationKind.deposit, 11, primary=snap(0))
    assert decide_evaluation(e, tight) == rejected(RejectReason.invalid_amount)
    env = envelope(OperationKind.withdraw, 11)
    assert EvaluationBoundary(tight).evaluate(env, snap(50), ABSENT) == rejected(RejectReason.invalid_amount)
    assert EvaluationBoundary().evaluate(env, snap(50), ABSENT) == accepted(-11)


# Refusals name the rule and the clause, and change nothing ------------------------------


@pytest.mark.allium(
    "rule-failure.EvaluateOpen.2",
    "rule-failure.EvaluateDeposit.2",
    "rule-failure.EvaluateWithdrawal.2",
    "rule-failure.EvaluateTransfer.2",
    "rule-failure.EvaluateClose.2",
)
def test_an_evaluation_no_rule_handles_is_refused_and_stays_pending() -> None:
    req = dataclasses.replace(request(OperationKind.deposit, 5), kind="bogus")
    e = Evaluation.of(req, 1, "replica-a", snap(10))
    before = state_of(e)
    r = refusal(decide_evaluation, e)
    assert (r.rule, r.clause) == ("Evaluation.created", 0)
    # It quotes each Evaluate rule's own refusal (requires #2, the kind).
    for name in ("EvaluateOpen", "EvaluateDeposit", "EvaluateWithdrawal", "EvaluateTransfer", "EvaluateClose"):
        assert f"{name} requires #2 failed" in r.why
    assert state_of(e) == before and e.status is EvaluationStatus.pending and e.fault is None
    check_evaluation(e)
    # Each rule refuses it on its own, by clause 2.
    for kind, rule in EVALUATE_RULES.items():
        rr = refusal(rule, e)
        assert (rr.rule, rr.clause) == (RULE_NAMES[kind], 2)
    assert state_of(e) == before


@pytest.mark.allium(
    "rule-failure.EvaluateOpen.1",
    "rule-failure.EvaluateDeposit.1",
    "rule-failure.EvaluateWithdrawal.1",
    "rule-failure.EvaluateTransfer.1",
    "rule-failure.EvaluateClose.1",
)
def test_the_host_passes_on_the_rules_own_refusal_of_a_decided_evaluation() -> None:
    for kind, name in RULE_NAMES.items():
        e = evaluation(kind, 0, primary=snap(0))
        first = decide_evaluation(e)
        before = state_of(e)
        r = refusal(decide_evaluation, e)
        assert (r.rule, r.clause) == (name, 1)
        r = refusal(EVALUATE_RULES[kind], e)
        assert (r.rule, r.clause) == (name, 1)
        assert state_of(e) == before and e.decision == first


# Faults: a bug is a fault, never a Decision ----------------------------------------------


class _Exploding:
    """A snapshot that breaks its own types: reading ``present`` raises."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    @property
    def present(self) -> bool:
        raise self._error


@pytest.mark.allium("contract-signature.DeterministicEvaluation.evaluate", "rule-success.RecordEvaluationFault")
def test_a_fault_has_a_one_line_cause_naming_the_error() -> None:
    env = envelope(OperationKind.deposit, 5)
    with pytest.raises(EvaluationFault) as info:
        evaluate(env, _Exploding(ValueError("bad row\n   version   missing")), ABSENT)  # type: ignore[arg-type]
    assert info.value.cause == "ValueError: bad row version missing"
    assert str(info.value) == info.value.cause
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(EvaluationFault) as info:
        evaluate(env, _Exploding(RuntimeError()), ABSENT)  # type: ignore[arg-type]
    assert info.value.cause == "RuntimeError"
    # The host records exactly that cause on the evaluation.
    e = evaluation(OperationKind.withdraw, 5, primary=BROKEN)
    with pytest.raises(EvaluationFault) as info:
        decide_evaluation(e)
    assert e.fault == info.value.cause
    assert e.fault == "TypeError: balance_minor None is not a signed 64-bit integer"


@pytest.mark.allium(
    "rule-success.EvaluateDeposit",
    "rule-success.EvaluateWithdrawal",
    "rule-success.EvaluateTransfer",
    "rule-success.EvaluateClose",
    "rule-success.RecordEvaluationFault",
)
def test_a_rule_whose_decision_code_fails_writes_nothing_and_signals_a_fault() -> None:
    cases = [
        (OperationKind.deposit, 5, BROKEN, ABSENT, None),
        (OperationKind.withdraw, 5, BROKEN, ABSENT, None),
        (OperationKind.transfer, 5, BROKEN, snap(0), "acc-2"),
        (OperationKind.close, 0, BROKEN, ABSENT, None),
    ]
    for kind, amount, primary, counter, target in cases:
        e = evaluation(kind, amount, primary=primary, counter=counter, counterparty=target)
        with pytest.raises(EvaluationFault) as info:
            EVALUATE_RULES[kind](e)
        assert info.value.cause.startswith("TypeError: ")
        assert_pending_fields_absent(e)  # no Decision was written: still pending, no fault yet
        # The host records it (RecordEvaluationFault) and returns no Decision.
        with pytest.raises(EvaluationFault) as hosted:
            decide_evaluation(e)
        assert hosted.value.cause == info.value.cause
        assert (e.status, e.fault, e.decision) == (EvaluationStatus.faulted, info.value.cause, None)
        assert (e.verdict, e.reason, e.account_delta_minor, e.counterparty_delta_minor) == (None,) * 4
        check_evaluation(e)


@pytest.mark.allium("rule-success.RecordEvaluationFault", "rule-failure.RecordEvaluationFault.1")
def test_record_evaluation_fault_returns_the_faulted_evaluation_and_refuses_twice() -> None:
    e = evaluation(OperationKind.deposit, 5, primary=snap(0))
    out = record_evaluation_fault(e, "TypeError: first")
    assert out is e
    assert (out.status, out.fault) == (EvaluationStatus.faulted, "TypeError: first")
    r = refusal(record_evaluation_fault, e, "TypeError: second")
    assert (r.rule, r.clause) == ("RecordEvaluationFault", 1)
    assert e.fault == "TypeError: first" and e.status is EvaluationStatus.faulted


# HonestReplicasAgree, field by field ----------------------------------------------------


@pytest.mark.allium("invariant.HonestReplicasAgree")
def test_honest_replicas_disagreeing_on_any_field_is_named() -> None:
    req = request(OperationKind.withdraw, 5)

    def decided(replica: str, **fields: typing.Any) -> Evaluation:
        e = evaluation(OperationKind.withdraw, req=req, replica=replica, primary=snap(10))
        assert decide_evaluation(e) == accepted(-5)
        for name, value in fields.items():
            setattr(e, name, value)
        return e

    base = decided("replica-a")
    for fields in (
        {"verdict": Verdict.rejected},
        {"reason": RejectReason.insufficient_funds},
        {"account_delta_minor": -4},
        {"counterparty_delta_minor": 1},
    ):
        other = decided("replica-b", **fields)
        assert violation_name(check_honest_replicas_agree, [base, other]) == "HonestReplicasAgree"
        # A fenced (untrusted) replica is not held to it, on either side.
        check_honest_replicas_agree([base, other], is_trusted=lambda rid: rid != "replica-b")
        check_honest_replicas_agree([other, base], is_trusted=lambda rid: rid != "replica-b")
    # Evaluations that are not decided carry no decision to compare.
    pending = evaluation(OperationKind.withdraw, req=req, replica="replica-c", primary=snap(10))
    faulted = evaluation(OperationKind.withdraw, req=req, replica="replica-d", primary=snap(10))
    record_evaluation_fault(faulted, "TypeError: boom")
    check_honest_replicas_agree([pending, base, faulted, decided("replica-e")])
    # Different requests (another client with the same request_id) are not compared.
    other_client = request(OperationKind.withdraw, 5)
    other_client = dataclasses.replace(other_client, client_id="client-2")
    e2 = evaluation(OperationKind.withdraw, req=other_client, replica="replica-b", primary=snap(1))
    assert decide_evaluation(e2) == rejected(RejectReason.insufficient_funds)
    check_honest_replicas_agree([base, e2])
    other_id = request(OperationKind.withdraw, 5, request_id="req-2")
    e3 = evaluation(OperationKind.withdraw, req=other_id, replica="replica-b", primary=snap(1))
    decide_evaluation(e3)
    check_honest_replicas_agree([base, e3])


# The Evaluation's request inputs -----------------------------------------------------------


@pytest.mark.allium("surface-exposure.EvaluationBoundary")
def test_evaluation_envelope_is_the_requests_envelope() -> None:
    """NoHiddenInputs: the Evaluation's Envelope is exactly the one its Request carries."""
    e = evaluation(OperationKind.transfer, 7, primary=snap(9), counter=snap(1), counterparty="acc-2")
    assert e.envelope == envelope_of(e.request)
    assert e.envelope == envelope(OperationKind.transfer, 7, counterparty="acc-2")
    assert EvaluationBoundary().evaluate(e.envelope, e.primary, e.counterparty) == accepted(-7, 7)
    assert e.primary == snap(9) and e.counterparty == snap(1)


@pytest.mark.allium("contract-signature.DeterministicEvaluation.evaluate")
def test_a_balance_outside_signed_64_bits_is_a_fault_not_a_reason() -> None:
    """@guidance checked 64-bit arithmetic + Totality: the int64 limits are valid, one beyond is a fault."""
    lo, hi = -(2**63), 2**63 - 1
    close = envelope(OperationKind.close)
    assert evaluate(close, snap(hi), ABSENT) == rejected(RejectReason.balance_not_zero)
    assert evaluate(close, snap(lo), ABSENT) == rejected(RejectReason.balance_not_zero)
    for bad in (hi + 1, lo - 1, True, "0", 0.0):
        with pytest.raises(EvaluationFault) as info:
            evaluate(close, snap(bad), ABSENT)  # type: ignore[arg-type]
        assert info.value.cause == f"TypeError: balance_minor {bad!r} is not a signed 64-bit integer"
    deposit = envelope(OperationKind.deposit, 1)
    assert evaluate(deposit, snap(hi), ABSENT) == rejected(RejectReason.balance_limit)
    with pytest.raises(EvaluationFault):
        evaluate(deposit, snap(hi + 1), ABSENT)
    transfer = envelope(OperationKind.transfer, 1, counterparty="acc-2")
    assert evaluate(transfer, snap(5), snap(hi)) == rejected(RejectReason.balance_limit)
    with pytest.raises(EvaluationFault):
        evaluate(transfer, snap(5), snap(hi + 1))
    with pytest.raises(EvaluationFault):
        evaluate(envelope(OperationKind.withdraw, 1), snap(lo - 1), ABSENT)
