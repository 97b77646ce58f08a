"""Tests for unit `core` (core.allium): entities, canonical encoding, Apply
rules, principal rules, invariants and surfaces."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import inspect
import itertools
import struct
import typing
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from ledger.core import (
    ACCOUNT_TRANSITIONS,
    API_CLIENT_TRANSITIONS,
    ENCODING,
    ENCODING_VERSION,
    AccessDenied,
    Account,
    AccountStatus,
    ApiClient,
    ApiClientStatus,
    Books,
    CanonicalEncoding,
    CanonicalScalar,
    Channel,
    ClientAdministration,
    Config,
    CoreState,
    Envelope,
    InvariantViolation,
    Operator,
    OperatorRole,
    OperationKind,
    Outcome,
    Provisioning,
    Rejected,
    RejectReason,
    Request,
    TransitionRejected,
    Verdict,
    apply_close,
    apply_open,
    apply_outcome,
    apply_rejection,
    apply_single_account_change,
    apply_transfer,
    canonical_encoding,
    check_acceptance_carries_no_reason,
    check_account,
    check_account_transition,
    check_all_invariants,
    check_api_client_transition,
    check_applied_count_matches_outcomes,
    check_balance_within_limit,
    check_closed_account_is_empty,
    check_closed_at_presence,
    check_digest_seals_content,
    check_every_outcome_applied,
    check_money_is_conserved,
    check_non_negative_balance,
    check_one_outcome_per_request,
    check_only_transfers_touch_counterparty,
    check_outcome,
    check_outcome_matches_its_request,
    check_rejection_carries_reason,
    check_rejection_has_no_effect,
    check_sequence_is_total,
    check_transfers_net_to_zero,
    check_unique_account_ids,
    check_version_counts_changes,
    encode_envelope,
    encode_outcome,
    enrol_operator,
    envelope_of,
    fingerprint,
    fingerprint_of,
    is_client_administrator,
    new_request,
    outcome_digest,
    register_client,
    reinstate_client,
    revoke_client,
    suspend_client,
    total_balance_minor,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# Helpers ------------------------------------------------------------------------


def make_request(
    kind: OperationKind,
    account_id: str = "A",
    *,
    counterparty_id: str | None = None,
    owner: str | None = None,
    amount_minor: int = 0,
    request_id: str = "r1",
    client_id: str = "c1",
    channel: Channel = Channel.rest,
) -> Request:
    """A Request built through new_request (fingerprint computed by core)."""
    env = Envelope(
        request_id=request_id, client_id=client_id, kind=kind, account_id=account_id,
        counterparty_id=counterparty_id, owner=owner, amount_minor=amount_minor,
    )
    return new_request(env, channel=channel, received_at=T0)


def make_outcome(
    request: Request,
    verdict: Verdict = Verdict.accepted,
    *,
    reason: RejectReason | None = None,
    account_delta_minor: int = 0,
    counterparty_delta_minor: int = 0,
    sequence: int = 1,
    epoch: int = 1,
) -> Outcome:
    """An Outcome for ``request`` as the Ledger's commit creates it, digest sealed."""
    outcome = Outcome(
        request=request, request_id=request.request_id, client_id=request.client_id,
        kind=request.kind, verdict=verdict, reason=reason, account_id=request.account_id,
        counterparty_id=request.counterparty_id, account_delta_minor=account_delta_minor,
        counterparty_delta_minor=counterparty_delta_minor, digest="", epoch=epoch,
        sequence=sequence, committed_at=T0 + timedelta(seconds=sequence), applied=False,
    )
    outcome.digest = outcome_digest(outcome)
    return outcome


class Scenario:
    """Drives a CoreState through committed outcomes with increasing sequences."""

    def __init__(self) -> None:
        self.state = CoreState()
        self.seq = 0

    def commit(self, kind: OperationKind, account_id: str = "A", *, verdict: Verdict = Verdict.accepted,
               reason: RejectReason | None = None, delta: int = 0, counterparty_id: str | None = None,
               counter_delta: int = 0, owner: str | None = None) -> Outcome:
        self.seq += 1
        req = make_request(kind, account_id, counterparty_id=counterparty_id, owner=owner,
                           amount_minor=abs(delta), request_id=f"r{self.seq}")
        outcome = make_outcome(req, verdict, reason=reason, account_delta_minor=delta,
                               counterparty_delta_minor=counter_delta, sequence=self.seq)
        self.state.record_outcome(outcome)
        return outcome


def funded_state() -> Scenario:
    """Accounts A (balance 500) and B (empty), both active."""
    sc = Scenario()
    sc.commit(OperationKind.open, "A")
    sc.commit(OperationKind.open, "B")
    sc.commit(OperationKind.deposit, "A", delta=500)
    return sc


@contextlib.contextmanager
def refused(rule: str, clause: int, kind: type[Rejected] = Rejected) -> Iterator[None]:
    """Expect a refusal of ``kind`` naming ``rule`` and ``clause`` (clause 0: not a requires)."""
    with pytest.raises(kind) as info:
        yield
    assert (info.value.rule, info.value.clause) == (rule, clause), str(info.value)
    # The refusal also says why, and its message carries rule, clause and reason.
    assert info.value.why and str(info.value) == f"{rule} requires #{clause} failed: {info.value.why}"


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def snapshot(state: CoreState) -> tuple:
    """Everything an Apply rule may change, to prove a rejection changed nothing."""
    return (
        dataclasses.astuple(state.books),
        {k: (a.status, a.balance_minor, a.version, a.closed_at) for k, a in state.accounts.items()},
        dict(state.outcomes),
    )


# Value Envelope and CanonicalEncoding ----------------------------------------------


@pytest.mark.allium("value-equality.Envelope")
def test_envelope_has_structural_equality() -> None:
    a = Envelope(request_id="r", client_id="c", kind=OperationKind.deposit, account_id="A", amount_minor=5)
    b = Envelope(request_id="r", client_id="c", kind=OperationKind.deposit, account_id="A", amount_minor=5)
    c = dataclasses.replace(a, amount_minor=6)
    assert a == b and hash(a) == hash(b)
    assert a is not b
    assert a != c
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.amount_minor = 7  # type: ignore[misc]


@pytest.mark.allium("entity-fields.Envelope")
def test_envelope_fields_and_types() -> None:
    assert field_names(Envelope) == [
        "request_id", "client_id", "kind", "account_id", "counterparty_id", "owner", "amount_minor",
    ]
    hints = typing.get_type_hints(Envelope)
    assert hints["request_id"] is str and hints["client_id"] is str and hints["account_id"] is str
    assert hints["kind"] is OperationKind
    assert hints["counterparty_id"] == str | None and hints["owner"] == str | None
    assert hints["amount_minor"] is int
    env = Envelope(request_id="r", client_id="c", kind=OperationKind.open, account_id="A",
                   owner="o", amount_minor=0)
    assert env.counterparty_id is None and env.owner == "o"


def _canon_str(v: str) -> bytes:
    """A String by hand: its UTF-8 byte length as 4 bytes big-endian, then the bytes."""
    data = v.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def _canon_int(v: int) -> bytes:
    """An Integer by hand: 8 bytes, big-endian two's complement."""
    return struct.pack(">q", v)


def _canon_opt(v: str | None) -> bytes:
    """An optional String by hand: 0x00 when absent, else 0x01 then the String."""
    return b"\x00" if v is None else b"\x01" + _canon_str(v)


def _expected_envelope_encoding(env: Envelope) -> bytes:
    """FieldOrderFixed written out by hand: length-prefixed UTF-8, big-endian int64, 0x00 absent."""
    return (_canon_str(ENCODING_VERSION) + _canon_str("Envelope") + _canon_str(env.request_id)
            + _canon_str(env.client_id) + _canon_str(env.kind.name) + _canon_str(env.account_id)
            + _canon_opt(env.counterparty_id) + _canon_opt(env.owner) + _canon_int(env.amount_minor))


def _expected_outcome_encoding(o: Outcome) -> bytes:
    """The Outcome's decided content written out by hand, in declaration order."""
    return (_canon_str(ENCODING_VERSION) + _canon_str("Outcome") + _canon_str(o.request_id)
            + _canon_str(o.client_id) + _canon_str(o.kind.name) + _canon_str(o.verdict.name)
            + _canon_opt(None if o.reason is None else o.reason.name) + _canon_str(o.account_id)
            + _canon_opt(o.counterparty_id) + _canon_int(o.account_delta_minor)
            + _canon_int(o.counterparty_delta_minor))


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint")
def test_fingerprint_satisfies_contract() -> None:
    assert isinstance(ENCODING, CanonicalEncoding)
    assert list(inspect.signature(fingerprint).parameters) == ["envelope"]
    env = Envelope(request_id="r-é", client_id="c", kind=OperationKind.transfer, account_id="A",
                   counterparty_id="B", amount_minor=-42)
    # FieldOrderFixed: the encoding is exactly the declared layout.
    assert encode_envelope(env) == _expected_envelope_encoding(env)
    # DigestIsSha256: version tag, then lowercase hex SHA-256 of the encoding.
    fp = ENCODING.fingerprint(env)
    assert fp == f"{ENCODING_VERSION}:" + hashlib.sha256(_expected_envelope_encoding(env)).hexdigest()
    assert fp == fingerprint(env) and fp.split(":", 1)[1] == fp.split(":", 1)[1].lower()
    # ByteEqualityIsSemanticEquality: equal envelopes, equal bytes; any change, other bytes.
    same = dataclasses.replace(env)
    assert encode_envelope(same) == encode_envelope(env)
    for change in ({"owner": ""}, {"counterparty_id": None}, {"amount_minor": 42},
                   {"request_id": "c", "client_id": "r-é"}, {"kind": OperationKind.deposit}):
        other = dataclasses.replace(env, **change)
        assert other != env and fingerprint(other) != fp
    # api's fingerprint_of and a Request's own fingerprint agree with the envelope's.
    assert fingerprint_of("c", "r-é", OperationKind.transfer, "A", "B", None, -42) == fp
    req = new_request(env, channel=Channel.log, received_at=T0, partition=0, offset=9)
    assert req.fingerprint == fp and envelope_of(req) == env
    with pytest.raises(OverflowError):
        fingerprint(dataclasses.replace(env, amount_minor=2**63))


@pytest.mark.allium("contract-signature.CanonicalEncoding.outcome_digest", "invariant.Outcome.DigestSealsContent")
def test_outcome_digest_satisfies_contract_and_seals_content() -> None:
    assert list(inspect.signature(outcome_digest).parameters) == ["outcome"]
    req = make_request(OperationKind.deposit, amount_minor=10)
    outcome = make_outcome(req, account_delta_minor=10)
    digest = ENCODING.outcome_digest(outcome)
    assert digest == outcome.digest
    assert digest == f"{ENCODING_VERSION}:" + hashlib.sha256(encode_outcome(outcome)).hexdigest()
    check_digest_seals_content(outcome)
    # Commit metadata and the applied flag are outside the digest.
    later = make_outcome(req, account_delta_minor=10, sequence=99, epoch=7)
    later.applied = True
    assert outcome_digest(later) == digest
    check_digest_seals_content(later)
    # Any change to decided content breaks the seal.
    outcome.account_delta_minor = 11
    assert outcome_digest(outcome) != digest
    with pytest.raises(InvariantViolation, match="DigestSealsContent"):
        check_digest_seals_content(outcome)
    outcome.account_delta_minor = 10
    outcome.reason = RejectReason.quarantined
    with pytest.raises(InvariantViolation, match="DigestSealsContent"):
        check_digest_seals_content(outcome)


# Enumerations ---------------------------------------------------------------------


def _assert_enum(enum_cls: type, values: list[str]) -> None:
    assert [m.value for m in enum_cls] == values
    assert [m.name for m in enum_cls] == values
    members = list(enum_cls)
    for a in members:
        assert a == enum_cls(a.value)
        for b in members:
            assert (a == b) is (a is b)


@pytest.mark.allium("enum-comparable.OperationKind")
def test_operation_kind_comparable() -> None:
    _assert_enum(OperationKind, ["open", "deposit", "withdraw", "transfer", "close"])
    req = make_request(OperationKind.withdraw)
    assert req.kind == OperationKind.withdraw and req.kind != OperationKind.deposit


@pytest.mark.allium("enum-comparable.Verdict")
def test_verdict_comparable() -> None:
    _assert_enum(Verdict, ["accepted", "rejected"])
    outcome = make_outcome(make_request(OperationKind.open))
    assert outcome.verdict == Verdict.accepted and outcome.verdict != Verdict.rejected


@pytest.mark.allium("enum-comparable.RejectReason")
def test_reject_reason_comparable_in_declared_order() -> None:
    _assert_enum(RejectReason, [
        "invalid_amount", "same_account", "account_exists", "account_missing", "account_closed",
        "counterparty_missing", "counterparty_closed", "insufficient_funds", "balance_limit",
        "balance_not_zero", "quarantined",
    ])
    outcome = make_outcome(make_request(OperationKind.open), Verdict.rejected, reason=RejectReason.account_exists)
    assert outcome.reason == RejectReason.account_exists and outcome.reason != RejectReason.account_missing


@pytest.mark.allium("enum-comparable.Channel")
def test_channel_comparable() -> None:
    _assert_enum(Channel, ["rest", "log"])
    assert make_request(OperationKind.open, channel=Channel.log).channel == Channel.log
    assert make_request(OperationKind.open).channel != Channel.log


@pytest.mark.allium("enum-comparable.AccountStatus")
def test_account_status_comparable() -> None:
    _assert_enum(AccountStatus, ["active", "closed"])
    account = Account(account_id="A", owner="o", opened_at=T0)
    assert account.status == AccountStatus.active and account.status != AccountStatus.closed


@pytest.mark.allium("enum-comparable.OperatorRole")
def test_operator_role_comparable() -> None:
    _assert_enum(OperatorRole, ["observer", "responder"])
    op = Operator(name="ann", role=OperatorRole.observer)
    assert op.role == OperatorRole.observer and op.role != OperatorRole.responder


# Request ----------------------------------------------------------------------------


@pytest.mark.allium("entity-fields.Request")
def test_request_fields_and_types() -> None:
    assert field_names(Request) == [
        "request_id", "client_id", "kind", "account_id", "counterparty_id", "owner", "amount_minor",
        "channel", "partition", "offset", "fingerprint", "received_at", "outcome",
    ]
    hints = typing.get_type_hints(Request)
    assert hints["kind"] is OperationKind and hints["channel"] is Channel
    assert hints["amount_minor"] is int and hints["received_at"] is datetime
    assert hints["partition"] == int | None and hints["offset"] == int | None
    assert hints["outcome"] == Outcome | None
    req = make_request(OperationKind.deposit, amount_minor=3)
    assert isinstance(req.fingerprint, str) and req.is_decided is False


@pytest.mark.allium("entity-optional.Request.counterparty_id")
def test_request_counterparty_optional() -> None:
    assert make_request(OperationKind.deposit).counterparty_id is None
    assert make_request(OperationKind.transfer, counterparty_id="B").counterparty_id == "B"


@pytest.mark.allium("entity-optional.Request.owner")
def test_request_owner_optional() -> None:
    assert make_request(OperationKind.open).owner is None
    assert make_request(OperationKind.open, owner="olga").owner == "olga"


@pytest.mark.allium("entity-optional.Request.partition", "entity-optional.Request.offset")
def test_request_partition_and_offset_optional() -> None:
    rest = make_request(OperationKind.open)
    assert rest.partition is None and rest.offset is None
    env = envelope_of(rest)
    logged = new_request(env, channel=Channel.log, received_at=T0, partition=3, offset=17)
    assert logged.partition == 3 and logged.offset == 17
    # Transport metadata is outside the fingerprint.
    assert logged.fingerprint == rest.fingerprint


@pytest.mark.allium("entity-relationship.Request.outcome", "derived.Request.is_decided")
def test_request_outcome_relationship_and_is_decided() -> None:
    sc = Scenario()
    req = make_request(OperationKind.open, request_id="x")
    other = make_request(OperationKind.open, "B", request_id="y")
    assert req.outcome is None and req.is_decided is False
    outcome = make_outcome(req)
    sc.state.record_outcome(outcome)
    assert req.outcome is outcome and outcome.request is req
    assert req.is_decided is True
    assert other.outcome is None and other.is_decided is False
    # The outcome is also found by the idempotency key.
    assert sc.state.outcome_for("c1", "x") is outcome


# Outcome ------------------------------------------------------------------------------


@pytest.mark.allium("entity-fields.Outcome")
def test_outcome_fields_and_types() -> None:
    assert field_names(Outcome) == [
        "request", "request_id", "client_id", "kind", "verdict", "reason", "account_id",
        "counterparty_id", "account_delta_minor", "counterparty_delta_minor", "digest", "epoch",
        "sequence", "committed_at", "applied",
    ]
    hints = typing.get_type_hints(Outcome)
    assert hints["request"] is Request and hints["verdict"] is Verdict
    assert hints["reason"] == RejectReason | None and hints["counterparty_id"] == str | None
    assert hints["applied"] is bool and hints["committed_at"] is datetime and hints["sequence"] is int
    assert make_outcome(make_request(OperationKind.open)).applied is False


@pytest.mark.allium("entity-optional.Outcome.reason")
def test_outcome_reason_optional() -> None:
    req = make_request(OperationKind.withdraw, amount_minor=5)
    assert make_outcome(req, account_delta_minor=-5).reason is None
    rejected = make_outcome(req, Verdict.rejected, reason=RejectReason.insufficient_funds)
    assert rejected.reason is RejectReason.insufficient_funds


@pytest.mark.allium("entity-optional.Outcome.counterparty_id")
def test_outcome_counterparty_optional() -> None:
    assert make_outcome(make_request(OperationKind.deposit)).counterparty_id is None
    req = make_request(OperationKind.transfer, counterparty_id="B", amount_minor=1)
    assert make_outcome(req, account_delta_minor=-1, counterparty_delta_minor=1).counterparty_id == "B"


@pytest.mark.allium("derived.Outcome.net_delta_minor")
def test_outcome_net_delta() -> None:
    req = make_request(OperationKind.transfer, counterparty_id="B", amount_minor=7)
    outcome = make_outcome(req, account_delta_minor=-7, counterparty_delta_minor=7)
    assert outcome.net_delta_minor == 0
    outcome.counterparty_delta_minor = 5
    assert outcome.net_delta_minor == -2
    assert make_outcome(make_request(OperationKind.deposit), account_delta_minor=9).net_delta_minor == 9


@pytest.mark.allium("invariant.Outcome.RejectionHasNoEffect")
def test_rejection_has_no_effect() -> None:
    outcome = make_outcome(make_request(OperationKind.deposit, amount_minor=0), Verdict.rejected,
                           reason=RejectReason.invalid_amount)
    check_rejection_has_no_effect(outcome)
    outcome.applied = True  # the one mutation the commit makes keeps it valid
    check_rejection_has_no_effect(outcome)
    outcome.account_delta_minor = 3
    with pytest.raises(InvariantViolation, match="RejectionHasNoEffect"):
        check_rejection_has_no_effect(outcome)
    outcome.account_delta_minor, outcome.counterparty_delta_minor = 0, -1
    with pytest.raises(InvariantViolation, match="RejectionHasNoEffect"):
        check_rejection_has_no_effect(outcome)


@pytest.mark.allium("invariant.Outcome.RejectionCarriesReason")
def test_rejection_carries_reason() -> None:
    outcome = make_outcome(make_request(OperationKind.close), Verdict.rejected,
                           reason=RejectReason.balance_not_zero)
    check_rejection_carries_reason(outcome)
    outcome.reason = None
    with pytest.raises(InvariantViolation, match="RejectionCarriesReason"):
        check_rejection_carries_reason(outcome)


@pytest.mark.allium("invariant.Outcome.AcceptanceCarriesNoReason")
def test_acceptance_carries_no_reason() -> None:
    outcome = make_outcome(make_request(OperationKind.open))
    check_acceptance_carries_no_reason(outcome)
    outcome.reason = RejectReason.account_exists
    with pytest.raises(InvariantViolation, match="AcceptanceCarriesNoReason"):
        check_acceptance_carries_no_reason(outcome)


@pytest.mark.allium("invariant.Outcome.TransfersNetToZero")
def test_transfers_net_to_zero() -> None:
    req = make_request(OperationKind.transfer, counterparty_id="B", amount_minor=4)
    outcome = make_outcome(req, account_delta_minor=-4, counterparty_delta_minor=4)
    check_transfers_net_to_zero(outcome)
    outcome.counterparty_delta_minor = 3
    with pytest.raises(InvariantViolation, match="TransfersNetToZero"):
        check_transfers_net_to_zero(outcome)
    # Deposits are not transfers: a non-zero net is their purpose.
    check_transfers_net_to_zero(make_outcome(make_request(OperationKind.deposit), account_delta_minor=4))


@pytest.mark.allium("invariant.Outcome.OnlyTransfersTouchCounterparty")
def test_only_transfers_touch_counterparty() -> None:
    outcome = make_outcome(make_request(OperationKind.withdraw, amount_minor=2), account_delta_minor=-2)
    check_only_transfers_touch_counterparty(outcome)
    outcome.counterparty_delta_minor = 2
    with pytest.raises(InvariantViolation, match="OnlyTransfersTouchCounterparty"):
        check_only_transfers_touch_counterparty(outcome)
    req = make_request(OperationKind.transfer, counterparty_id="B", amount_minor=2)
    check_only_transfers_touch_counterparty(make_outcome(req, account_delta_minor=-2, counterparty_delta_minor=2))


# Account -------------------------------------------------------------------------------


@pytest.mark.allium("entity-fields.Account")
def test_account_fields_and_types() -> None:
    assert field_names(Account) == [
        "account_id", "owner", "status", "balance_minor", "version", "opened_at", "closed_at",
    ]
    hints = typing.get_type_hints(Account)
    assert hints["status"] is AccountStatus and hints["balance_minor"] is int and hints["version"] is int
    assert hints["opened_at"] is datetime and hints["closed_at"] == datetime | None


@pytest.mark.allium("when-presence.Account.closed_at")
def test_account_closed_at_present_only_when_closed() -> None:
    sc = funded_state()
    b = sc.state.accounts["B"]
    assert b.status is AccountStatus.active and b.closed_at is None
    check_closed_at_presence(b)
    sc.commit(OperationKind.close, "B")
    assert b.status is AccountStatus.closed and b.closed_at is not None
    check_closed_at_presence(b)
    bad_active = Account(account_id="X", owner="o", opened_at=T0, closed_at=T0)
    with pytest.raises(InvariantViolation, match="closed_at"):
        check_closed_at_presence(bad_active)
    bad_closed = Account(account_id="Y", owner="o", opened_at=T0, status=AccountStatus.closed)
    with pytest.raises(InvariantViolation, match="closed_at"):
        check_closed_at_presence(bad_closed)


@pytest.mark.allium("transition-edge.Account.active.closed")
def test_account_active_to_closed_via_apply_close() -> None:
    sc = funded_state()
    account = sc.state.accounts["B"]
    assert account.status is AccountStatus.active
    check_account_transition(AccountStatus.active, AccountStatus.closed)
    sc.commit(OperationKind.close, "B")
    assert account.status is AccountStatus.closed


@pytest.mark.allium("transition-rejected.Account.status")
def test_account_undeclared_transition_rejected() -> None:
    with refused("Account.status", 0, TransitionRejected):
        check_account_transition(AccountStatus.closed, AccountStatus.active)
    # No rule reopens a closed account: a second close is refused, state unchanged.
    sc = funded_state()
    sc.commit(OperationKind.close, "B")
    before = snapshot(sc.state)
    again = make_outcome(make_request(OperationKind.close, "B", request_id="again"), sequence=50)
    with refused("ApplyClose", 5):
        apply_close(sc.state, again)
    assert snapshot(sc.state) == before and sc.state.accounts["B"].status is AccountStatus.closed


@pytest.mark.allium("transition-terminal.Account.status")
def test_account_closed_is_terminal() -> None:
    assert ACCOUNT_TRANSITIONS[AccountStatus.closed] == frozenset()
    for target in AccountStatus:
        with refused("Account.status", 0, TransitionRejected):
            check_account_transition(AccountStatus.closed, target)


@pytest.mark.allium("invariant.Account.NonNegativeBalance")
def test_non_negative_balance() -> None:
    sc = funded_state()
    sc.commit(OperationKind.withdraw, "A", delta=-500)
    account = sc.state.accounts["A"]
    assert account.balance_minor == 0
    check_non_negative_balance(account)
    account.balance_minor = -1
    with pytest.raises(InvariantViolation, match="NonNegativeBalance"):
        check_non_negative_balance(account)


@pytest.mark.allium("invariant.Account.BalanceWithinLimit")
def test_balance_within_limit() -> None:
    limit = Config().max_balance_minor
    sc = Scenario()
    sc.commit(OperationKind.open, "A")
    sc.commit(OperationKind.deposit, "A", delta=limit)
    account = sc.state.accounts["A"]
    check_balance_within_limit(account)
    account.balance_minor = limit + 1
    with pytest.raises(InvariantViolation, match="BalanceWithinLimit"):
        check_balance_within_limit(account)
    check_balance_within_limit(account, Config(max_balance_minor=limit + 1))


@pytest.mark.allium("invariant.Account.ClosedAccountIsEmpty")
def test_closed_account_is_empty() -> None:
    sc = funded_state()
    sc.commit(OperationKind.close, "B")
    closed = sc.state.accounts["B"]
    check_closed_account_is_empty(closed)
    closed.balance_minor = 1
    with pytest.raises(InvariantViolation, match="ClosedAccountIsEmpty"):
        check_closed_account_is_empty(closed)
    check_closed_account_is_empty(sc.state.accounts["A"])  # active and funded is fine


@pytest.mark.allium("invariant.Account.VersionCountsChanges")
def test_version_counts_changes() -> None:
    sc = funded_state()
    a = sc.state.accounts["A"]
    assert a.version == 2  # created at 1, one deposit
    check_version_counts_changes(a)
    check_account(a)
    a.version = 0
    with pytest.raises(InvariantViolation, match="VersionCountsChanges"):
        check_version_counts_changes(a)


# Books, Operator, ApiClient ------------------------------------------------------------


@pytest.mark.allium("entity-fields.Books")
def test_books_fields() -> None:
    assert field_names(Books) == ["net_inflow_minor", "applied_outcomes", "accepted_outcomes"]
    books = Books()
    assert (books.net_inflow_minor, books.applied_outcomes, books.accepted_outcomes) == (0, 0, 0)
    assert all(t is int for t in typing.get_type_hints(Books).values())


@pytest.mark.allium("entity-fields.Operator")
def test_operator_fields() -> None:
    assert field_names(Operator) == ["name", "role"]
    hints = typing.get_type_hints(Operator)
    assert hints["name"] is str and hints["role"] is OperatorRole


@pytest.mark.allium("entity-fields.ApiClient")
def test_api_client_fields() -> None:
    assert field_names(ApiClient) == ["client_id", "status"]
    hints = typing.get_type_hints(ApiClient)
    assert hints["client_id"] is str and hints["status"] is ApiClientStatus
    assert [s.value for s in ApiClientStatus] == ["active", "suspended", "revoked"]


def responder() -> Operator:
    return Operator(name="rita", role=OperatorRole.responder)


def observer() -> Operator:
    return Operator(name="otto", role=OperatorRole.observer)


@pytest.mark.allium("transition-edge.ApiClient.active.suspended")
def test_client_active_to_suspended() -> None:
    client = ApiClient(client_id="c", status=ApiClientStatus.active)
    suspend_client(responder(), client)
    assert client.status is ApiClientStatus.suspended


@pytest.mark.allium("transition-edge.ApiClient.suspended.active")
def test_client_suspended_to_active() -> None:
    client = ApiClient(client_id="c", status=ApiClientStatus.suspended)
    reinstate_client(responder(), client)
    assert client.status is ApiClientStatus.active


@pytest.mark.allium("transition-edge.ApiClient.active.revoked")
def test_client_active_to_revoked() -> None:
    client = ApiClient(client_id="c", status=ApiClientStatus.active)
    revoke_client(responder(), client)
    assert client.status is ApiClientStatus.revoked


@pytest.mark.allium("transition-edge.ApiClient.suspended.revoked")
def test_client_suspended_to_revoked() -> None:
    client = ApiClient(client_id="c", status=ApiClientStatus.suspended)
    revoke_client(responder(), client)
    assert client.status is ApiClientStatus.revoked


@pytest.mark.allium("transition-rejected.ApiClient.status")
def test_client_undeclared_transitions_rejected() -> None:
    with refused("ApiClient.status", 0, TransitionRejected):
        check_api_client_transition(ApiClientStatus.revoked, ApiClientStatus.active)
    client = ApiClient(client_id="c", status=ApiClientStatus.active)
    with refused("ReinstateClient", 2):
        reinstate_client(responder(), client)  # active -> active is not a declared edge
    assert client.status is ApiClientStatus.active


@pytest.mark.allium("transition-terminal.ApiClient.status")
def test_client_revoked_is_terminal() -> None:
    assert API_CLIENT_TRANSITIONS[ApiClientStatus.revoked] == frozenset()
    client = ApiClient(client_id="c", status=ApiClientStatus.revoked)
    for name, rule in (("SuspendClient", suspend_client), ("ReinstateClient", reinstate_client),
                       ("RevokeClient", revoke_client)):
        with refused(name, 2):
            rule(responder(), client)
        assert client.status is ApiClientStatus.revoked
    for target in ApiClientStatus:
        with refused("ApiClient.status", 0, TransitionRejected):
            check_api_client_transition(ApiClientStatus.revoked, target)


# Config ----------------------------------------------------------------------------------


@pytest.mark.allium("config-default.max_amount_minor")
def test_config_default_max_amount() -> None:
    assert Config().max_amount_minor == 100_000_000_000
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().max_amount_minor = 1  # type: ignore[misc]


@pytest.mark.allium("config-default.max_balance_minor")
def test_config_default_max_balance() -> None:
    config = Config()
    assert config.max_balance_minor == 100_000_000_000_000
    # The bound keeps every sum of two balances inside a signed 64-bit integer.
    assert 2 * config.max_balance_minor < 2**63


# Apply rules --------------------------------------------------------------------------------


@pytest.mark.allium("rule-success.ApplyOpen", "rule-entity-creation.ApplyOpen.1")
def test_apply_open_creates_empty_account() -> None:
    state = CoreState()
    outcome = make_outcome(make_request(OperationKind.open, "A", owner="olga"), sequence=4)
    account = apply_open(state, outcome)
    assert state.accounts["A"] is account
    assert account.account_id == "A" and account.owner == "olga"
    assert account.status is AccountStatus.active and account.balance_minor == 0
    assert account.version == 1 and account.opened_at == outcome.committed_at
    assert account.closed_at is None
    assert outcome.applied is True
    assert state.books.applied_outcomes == 1 and state.books.accepted_outcomes == 1
    assert state.books.net_inflow_minor == 0
    # Without an explicit owner the client owns the account.
    other = make_outcome(make_request(OperationKind.open, "B", request_id="r2"), sequence=5)
    assert apply_open(state, other).owner == "c1"


@pytest.mark.allium("rule-failure.ApplyOpen.1")
def test_apply_open_rejects_rejected_verdict() -> None:
    state = CoreState()
    outcome = make_outcome(make_request(OperationKind.open), Verdict.rejected, reason=RejectReason.account_exists)
    with pytest.raises(Rejected) as info:
        apply_open(state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplyOpen", 1) and "A" not in state.accounts and outcome.applied is False


@pytest.mark.allium("rule-failure.ApplyOpen.2")
def test_apply_open_rejects_other_kind() -> None:
    state = CoreState()
    outcome = make_outcome(make_request(OperationKind.deposit), account_delta_minor=1)
    with pytest.raises(Rejected) as info:
        apply_open(state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplyOpen", 2) and state.accounts == {} and outcome.applied is False


@pytest.mark.allium("rule-failure.ApplyOpen.3")
def test_apply_open_rejects_applied_outcome() -> None:
    state = CoreState()
    outcome = make_outcome(make_request(OperationKind.open))
    outcome.applied = True
    with pytest.raises(Rejected) as info:
        apply_open(state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplyOpen", 3) and state.accounts == {} and state.books.applied_outcomes == 0


@pytest.mark.allium("rule-failure.ApplyOpen.4")
def test_apply_open_rejects_existing_account() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    outcome = make_outcome(make_request(OperationKind.open, "A", request_id="dup"), sequence=40)
    with pytest.raises(Rejected) as info:
        apply_open(sc.state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplyOpen", 4) and snapshot(sc.state) == before
    assert sc.state.accounts["A"].balance_minor == 500 and outcome.applied is False


@pytest.mark.allium("rule-success.ApplySingleAccountChange")
def test_apply_single_account_change_deposit_and_withdraw() -> None:
    sc = funded_state()
    a = sc.state.accounts["A"]
    assert (a.balance_minor, a.version, sc.state.books.net_inflow_minor) == (500, 2, 500)
    withdraw = make_outcome(make_request(OperationKind.withdraw, "A", amount_minor=200, request_id="w"),
                            account_delta_minor=-200, sequence=10)
    assert apply_single_account_change(sc.state, withdraw) is a
    assert (a.balance_minor, a.version) == (300, 3)
    assert withdraw.applied is True
    assert sc.state.books.net_inflow_minor == 300
    assert sc.state.books.applied_outcomes == 4 and sc.state.books.accepted_outcomes == 4


def _single_change_outcome(kind: OperationKind = OperationKind.deposit, account_id: str = "A",
                           verdict: Verdict = Verdict.accepted) -> Outcome:
    reason = RejectReason.invalid_amount if verdict is Verdict.rejected else None
    delta = 0 if verdict is Verdict.rejected else 5
    return make_outcome(make_request(kind, account_id, amount_minor=5, request_id="s"),
                        verdict, reason=reason, account_delta_minor=delta, sequence=20)


@pytest.mark.allium("rule-failure.ApplySingleAccountChange.1")
def test_apply_single_account_change_rejects_rejected_verdict() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_single_account_change(sc.state, _single_change_outcome(verdict=Verdict.rejected))
    assert (info.value.rule, info.value.clause) == ("ApplySingleAccountChange", 1) and snapshot(sc.state) == before


@pytest.mark.allium("rule-failure.ApplySingleAccountChange.2")
def test_apply_single_account_change_rejects_other_kind() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_single_account_change(sc.state, _single_change_outcome(kind=OperationKind.close))
    assert (info.value.rule, info.value.clause) == ("ApplySingleAccountChange", 2) and snapshot(sc.state) == before


@pytest.mark.allium("rule-failure.ApplySingleAccountChange.3")
def test_apply_single_account_change_rejects_applied_outcome() -> None:
    sc = funded_state()
    outcome = _single_change_outcome()
    outcome.applied = True
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_single_account_change(sc.state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplySingleAccountChange", 3) and snapshot(sc.state) == before
    assert sc.state.accounts["A"].balance_minor == 500


@pytest.mark.allium("rule-failure.ApplySingleAccountChange.4")
def test_apply_single_account_change_rejects_missing_account() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    outcome = _single_change_outcome(account_id="ghost")
    with pytest.raises(Rejected) as info:
        apply_single_account_change(sc.state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplySingleAccountChange", 4) and snapshot(sc.state) == before and outcome.applied is False


@pytest.mark.allium("rule-success.ApplyTransfer")
def test_apply_transfer_moves_money_without_inflow() -> None:
    sc = funded_state()
    a, b = sc.state.accounts["A"], sc.state.accounts["B"]
    outcome = make_outcome(make_request(OperationKind.transfer, "A", counterparty_id="B", amount_minor=120,
                                        request_id="t"), account_delta_minor=-120,
                           counterparty_delta_minor=120, sequence=30)
    assert apply_transfer(sc.state, outcome) == (a, b)
    assert (a.balance_minor, a.version) == (380, 3)
    assert (b.balance_minor, b.version) == (120, 2)
    assert outcome.applied is True
    assert sc.state.books.net_inflow_minor == 500
    assert sc.state.books.applied_outcomes == 4 and sc.state.books.accepted_outcomes == 4


def _transfer_outcome(source: str = "A", target: str | None = "B", *, verdict: Verdict = Verdict.accepted,
                      kind: OperationKind = OperationKind.transfer) -> Outcome:
    accepted = verdict is Verdict.accepted
    return make_outcome(
        make_request(kind, source, counterparty_id=target, amount_minor=10, request_id="t"), verdict,
        reason=None if accepted else RejectReason.insufficient_funds,
        account_delta_minor=-10 if accepted else 0, counterparty_delta_minor=10 if accepted else 0,
        sequence=31,
    )


@pytest.mark.allium("rule-failure.ApplyTransfer.1")
def test_apply_transfer_rejects_rejected_verdict() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_transfer(sc.state, _transfer_outcome(verdict=Verdict.rejected))
    assert (info.value.rule, info.value.clause) == ("ApplyTransfer", 1) and snapshot(sc.state) == before


@pytest.mark.allium("rule-failure.ApplyTransfer.2")
def test_apply_transfer_rejects_other_kind() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_transfer(sc.state, _transfer_outcome(kind=OperationKind.withdraw))
    assert (info.value.rule, info.value.clause) == ("ApplyTransfer", 2) and snapshot(sc.state) == before


@pytest.mark.allium("rule-failure.ApplyTransfer.3")
def test_apply_transfer_rejects_applied_outcome() -> None:
    sc = funded_state()
    outcome = _transfer_outcome()
    outcome.applied = True
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_transfer(sc.state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplyTransfer", 3) and snapshot(sc.state) == before


@pytest.mark.allium("rule-failure.ApplyTransfer.4")
def test_apply_transfer_rejects_missing_source() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    outcome = _transfer_outcome(source="ghost")
    with pytest.raises(Rejected) as info:
        apply_transfer(sc.state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplyTransfer", 4) and snapshot(sc.state) == before and outcome.applied is False


@pytest.mark.allium("rule-failure.ApplyTransfer.5")
def test_apply_transfer_rejects_missing_target() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    for target in ("ghost", None):
        outcome = _transfer_outcome(target=target)
        with pytest.raises(Rejected) as info:
            apply_transfer(sc.state, outcome)
        assert (info.value.rule, info.value.clause) == ("ApplyTransfer", 5) and snapshot(sc.state) == before
    assert sc.state.accounts["A"].balance_minor == 500


@pytest.mark.allium("rule-success.ApplyClose", "when-set.ApplyClose.Account.closed_at")
def test_apply_close_closes_account_and_sets_closed_at() -> None:
    sc = funded_state()
    b = sc.state.accounts["B"]
    assert b.closed_at is None
    outcome = make_outcome(make_request(OperationKind.close, "B", request_id="cl"), sequence=33)
    assert apply_close(sc.state, outcome) is b
    assert b.status is AccountStatus.closed
    assert b.closed_at == outcome.committed_at
    assert b.version == 2 and b.balance_minor == 0
    assert outcome.applied is True
    assert sc.state.books.applied_outcomes == 4 and sc.state.books.accepted_outcomes == 4
    assert sc.state.books.net_inflow_minor == 500


def _close_outcome(account_id: str = "B", *, verdict: Verdict = Verdict.accepted,
                   kind: OperationKind = OperationKind.close) -> Outcome:
    reason = None if verdict is Verdict.accepted else RejectReason.balance_not_zero
    return make_outcome(make_request(kind, account_id, request_id="cl"), verdict, reason=reason, sequence=34)


@pytest.mark.allium("rule-failure.ApplyClose.1")
def test_apply_close_rejects_rejected_verdict() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_close(sc.state, _close_outcome(verdict=Verdict.rejected))
    assert (info.value.rule, info.value.clause) == ("ApplyClose", 1) and snapshot(sc.state) == before


@pytest.mark.allium("rule-failure.ApplyClose.2")
def test_apply_close_rejects_other_kind() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_close(sc.state, _close_outcome(kind=OperationKind.open))
    assert (info.value.rule, info.value.clause) == ("ApplyClose", 2) and snapshot(sc.state) == before


@pytest.mark.allium("rule-failure.ApplyClose.3")
def test_apply_close_rejects_applied_outcome() -> None:
    sc = funded_state()
    outcome = _close_outcome()
    outcome.applied = True
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_close(sc.state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplyClose", 3) and snapshot(sc.state) == before
    assert sc.state.accounts["B"].status is AccountStatus.active


@pytest.mark.allium("rule-failure.ApplyClose.4")
def test_apply_close_rejects_missing_account() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    outcome = _close_outcome("ghost")
    with pytest.raises(Rejected) as info:
        apply_close(sc.state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplyClose", 4) and snapshot(sc.state) == before and outcome.applied is False


@pytest.mark.allium("rule-failure.ApplyClose.5")
def test_apply_close_rejects_closed_account() -> None:
    sc = funded_state()
    sc.commit(OperationKind.close, "B")
    b = sc.state.accounts["B"]
    closed_at = b.closed_at
    before = snapshot(sc.state)
    with pytest.raises(Rejected) as info:
        apply_close(sc.state, _close_outcome())
    assert (info.value.rule, info.value.clause) == ("ApplyClose", 5) and snapshot(sc.state) == before
    assert b.closed_at == closed_at and b.status is AccountStatus.closed


@pytest.mark.allium("rule-success.ApplyRejection")
def test_apply_rejection_records_without_effect() -> None:
    sc = funded_state()
    accounts_before = snapshot(sc.state)[1]
    outcome = make_outcome(make_request(OperationKind.withdraw, "A", amount_minor=900, request_id="big"),
                           Verdict.rejected, reason=RejectReason.insufficient_funds, sequence=60)
    apply_rejection(sc.state, outcome)
    assert outcome.applied is True
    assert sc.state.books.applied_outcomes == 4
    assert sc.state.books.accepted_outcomes == 3  # a rejection is not an acceptance
    assert sc.state.books.net_inflow_minor == 500
    assert snapshot(sc.state)[1] == accounts_before


@pytest.mark.allium("rule-failure.ApplyRejection.1")
def test_apply_rejection_rejects_accepted_verdict() -> None:
    state = CoreState()
    outcome = make_outcome(make_request(OperationKind.open))
    with pytest.raises(Rejected) as info:
        apply_rejection(state, outcome)
    assert (info.value.rule, info.value.clause) == ("ApplyRejection", 1) and outcome.applied is False and state.books.applied_outcomes == 0


@pytest.mark.allium("rule-failure.ApplyRejection.2")
def test_apply_rejection_rejects_applied_outcome() -> None:
    state = CoreState()
    outcome = make_outcome(make_request(OperationKind.open), Verdict.rejected, reason=RejectReason.quarantined)
    apply_rejection(state, outcome)
    with pytest.raises(Rejected) as info:
        apply_rejection(state, outcome)  # a replayed commit cannot apply twice
    assert (info.value.rule, info.value.clause) == ("ApplyRejection", 2) and state.books.applied_outcomes == 1


# Principal rules ------------------------------------------------------------------------------


@pytest.mark.allium("rule-success.EnrolOperator", "rule-entity-creation.EnrolOperator.1")
def test_enrol_operator_creates_operator() -> None:
    state = CoreState()
    op = enrol_operator(state, "rita", OperatorRole.responder)
    assert state.operators["rita"] is op and state.operator("rita") is op
    assert op.name == "rita" and op.role is OperatorRole.responder


@pytest.mark.allium("rule-failure.EnrolOperator.1")
def test_enrol_operator_rejects_existing_name() -> None:
    state = CoreState()
    first = enrol_operator(state, "rita", OperatorRole.observer)
    with pytest.raises(Rejected) as info:
        enrol_operator(state, "rita", OperatorRole.responder)
    assert (info.value.rule, info.value.clause) == ("EnrolOperator", 1)
    assert state.operators == {"rita": first} and first.role is OperatorRole.observer


@pytest.mark.allium("rule-success.RegisterClient", "rule-entity-creation.RegisterClient.1")
def test_register_client_creates_active_client() -> None:
    state = CoreState()
    client = register_client(state, "acme")
    assert state.clients["acme"] is client and state.client("acme") is client
    assert client.client_id == "acme" and client.status is ApiClientStatus.active


@pytest.mark.allium("rule-failure.RegisterClient.1")
def test_register_client_rejects_existing_id() -> None:
    state = CoreState()
    client = register_client(state, "acme")
    suspend_client(responder(), client)
    with pytest.raises(Rejected) as info:
        register_client(state, "acme")
    assert (info.value.rule, info.value.clause) == ("RegisterClient", 1)
    assert state.clients == {"acme": client} and client.status is ApiClientStatus.suspended


@pytest.mark.allium("rule-success.SuspendClient")
def test_suspend_client_success() -> None:
    client = ApiClient(client_id="c")
    suspend_client(responder(), client)
    assert client.status == ApiClientStatus.suspended


@pytest.mark.allium("rule-failure.SuspendClient.1")
def test_suspend_client_requires_responder() -> None:
    client = ApiClient(client_id="c")
    with pytest.raises(Rejected) as info:
        suspend_client(observer(), client)
    assert (info.value.rule, info.value.clause) == ("SuspendClient", 1) and client.status is ApiClientStatus.active


@pytest.mark.allium("rule-failure.SuspendClient.2")
def test_suspend_client_requires_active() -> None:
    client = ApiClient(client_id="c", status=ApiClientStatus.suspended)
    with pytest.raises(Rejected) as info:
        suspend_client(responder(), client)
    assert (info.value.rule, info.value.clause) == ("SuspendClient", 2) and client.status is ApiClientStatus.suspended


@pytest.mark.allium("rule-success.ReinstateClient")
def test_reinstate_client_success() -> None:
    client = ApiClient(client_id="c", status=ApiClientStatus.suspended)
    reinstate_client(responder(), client)
    assert client.status == ApiClientStatus.active


@pytest.mark.allium("rule-failure.ReinstateClient.1")
def test_reinstate_client_requires_responder() -> None:
    client = ApiClient(client_id="c", status=ApiClientStatus.suspended)
    with pytest.raises(Rejected) as info:
        reinstate_client(observer(), client)
    assert (info.value.rule, info.value.clause) == ("ReinstateClient", 1) and client.status is ApiClientStatus.suspended


@pytest.mark.allium("rule-failure.ReinstateClient.2")
def test_reinstate_client_requires_suspended() -> None:
    client = ApiClient(client_id="c", status=ApiClientStatus.revoked)
    with pytest.raises(Rejected) as info:
        reinstate_client(responder(), client)
    assert (info.value.rule, info.value.clause) == ("ReinstateClient", 2) and client.status is ApiClientStatus.revoked


@pytest.mark.allium("rule-success.RevokeClient")
def test_revoke_client_success() -> None:
    for start in (ApiClientStatus.active, ApiClientStatus.suspended):
        client = ApiClient(client_id="c", status=start)
        revoke_client(responder(), client)
        assert client.status == ApiClientStatus.revoked


@pytest.mark.allium("rule-failure.RevokeClient.1")
def test_revoke_client_requires_responder() -> None:
    client = ApiClient(client_id="c")
    with pytest.raises(Rejected) as info:
        revoke_client(observer(), client)
    assert (info.value.rule, info.value.clause) == ("RevokeClient", 1) and client.status is ApiClientStatus.active


@pytest.mark.allium("rule-failure.RevokeClient.2")
def test_revoke_client_requires_not_revoked() -> None:
    client = ApiClient(client_id="c", status=ApiClientStatus.revoked)
    with pytest.raises(Rejected) as info:
        revoke_client(responder(), client)
    assert (info.value.rule, info.value.clause) == ("RevokeClient", 2) and client.status is ApiClientStatus.revoked


# Top-level invariants ----------------------------------------------------------------------------


def full_history() -> Scenario:
    """Every Apply rule fires at least once; invariants are checked after each commit."""
    sc = Scenario()
    steps = [
        dict(kind=OperationKind.open, account_id="A"),
        dict(kind=OperationKind.open, account_id="B", owner="bob"),
        dict(kind=OperationKind.deposit, account_id="A", delta=1_000),
        dict(kind=OperationKind.transfer, account_id="A", counterparty_id="B", delta=-400, counter_delta=400),
        dict(kind=OperationKind.withdraw, account_id="B", delta=-150),
        dict(kind=OperationKind.withdraw, account_id="A", verdict=Verdict.rejected,
             reason=RejectReason.insufficient_funds),
        dict(kind=OperationKind.withdraw, account_id="B", delta=-250),
        dict(kind=OperationKind.close, account_id="B"),
    ]
    for step in steps:
        sc.commit(**step)
        check_all_invariants(sc.state)
    return sc


@pytest.mark.allium("invariant.MoneyIsConserved")
def test_money_is_conserved() -> None:
    sc = full_history()
    state = sc.state
    assert total_balance_minor(state.accounts.values()) == state.books.net_inflow_minor == 600
    check_money_is_conserved(state)
    state.accounts["A"].balance_minor += 1  # money from nowhere
    with pytest.raises(InvariantViolation, match="MoneyIsConserved"):
        check_money_is_conserved(state)


@pytest.mark.allium("invariant.OneOutcomePerRequest")
def test_one_outcome_per_request() -> None:
    sc = full_history()
    check_one_outcome_per_request(sc.state.outcomes.values())
    first = next(iter(sc.state.outcomes.values()))
    before = snapshot(sc.state)
    # The unique index refuses a second outcome for the same key; nothing changes.
    dup = make_outcome(first.request, Verdict.rejected, reason=RejectReason.account_exists, sequence=100)
    with refused("Outcome.created", 0):
        sc.state.record_outcome(dup)
    assert snapshot(sc.state) == before and dup.applied is False
    # The same request id under another client is a different key.
    other_client = make_request(OperationKind.open, "C", request_id=first.request_id, client_id="c2")
    sc.state.record_outcome(make_outcome(other_client, sequence=101))
    check_all_invariants(sc.state)
    with pytest.raises(InvariantViolation, match="OneOutcomePerRequest"):
        check_one_outcome_per_request([first, dup])


@pytest.mark.allium("invariant.EveryOutcomeApplied")
def test_every_outcome_applied() -> None:
    sc = full_history()
    assert all(o.applied for o in sc.state.outcomes.values())
    check_every_outcome_applied(sc.state.outcomes.values())
    # An outcome no Apply rule accepts (deposit to a missing account) is not recorded.
    before = snapshot(sc.state)
    orphan = make_outcome(make_request(OperationKind.deposit, "ghost", request_id="g"),
                          account_delta_minor=5, sequence=200)
    with refused("Outcome.created", 0):
        sc.state.record_outcome(orphan)
    assert snapshot(sc.state) == before and orphan.request.outcome is None
    with refused("Outcome.created", 0):
        apply_outcome(sc.state, orphan)
    with pytest.raises(InvariantViolation, match="EveryOutcomeApplied"):
        check_every_outcome_applied([orphan])


@pytest.mark.allium("invariant.AppliedCountMatchesOutcomes")
def test_applied_count_matches_outcomes() -> None:
    sc = full_history()
    assert sc.state.books.applied_outcomes == len(sc.state.outcomes) == 8
    assert sc.state.books.accepted_outcomes == 7
    check_applied_count_matches_outcomes(sc.state)
    # Applying outside the commit path (no Outcome inserted) breaks the equality.
    stray = make_outcome(make_request(OperationKind.open, "Z", request_id="z"), Verdict.rejected,
                         reason=RejectReason.quarantined, sequence=300)
    apply_rejection(sc.state, stray)
    with pytest.raises(InvariantViolation, match="AppliedCountMatchesOutcomes"):
        check_applied_count_matches_outcomes(sc.state)


@pytest.mark.allium("invariant.SequenceIsTotal")
def test_sequence_is_total() -> None:
    sc = full_history()
    sequences = [o.sequence for o in sc.state.outcomes.values()]
    assert len(set(sequences)) == len(sequences)
    check_sequence_is_total(sc.state.outcomes.values())
    before = snapshot(sc.state)
    reused = make_outcome(make_request(OperationKind.open, "N", request_id="new"), sequence=sequences[0])
    with refused("Outcome.created", 0):
        sc.state.record_outcome(reused)
    assert snapshot(sc.state) == before and "N" not in sc.state.accounts
    with pytest.raises(InvariantViolation, match="SequenceIsTotal"):
        check_sequence_is_total([*sc.state.outcomes.values(), reused])


@pytest.mark.allium("invariant.OutcomeMatchesItsRequest")
def test_outcome_matches_its_request() -> None:
    sc = full_history()
    for o in sc.state.outcomes.values():
        assert (o.request_id, o.client_id, o.kind, o.account_id) == (
            o.request.request_id, o.request.client_id, o.request.kind, o.request.account_id)
    check_outcome_matches_its_request(sc.state.outcomes.values())
    bad = make_outcome(make_request(OperationKind.deposit, "A", request_id="m"), account_delta_minor=1)
    bad.account_id = "B"
    with pytest.raises(InvariantViolation, match="OutcomeMatchesItsRequest"):
        check_outcome_matches_its_request([bad])


@pytest.mark.allium("invariant.UniqueAccountIds")
def test_unique_account_ids() -> None:
    sc = full_history()
    check_unique_account_ids(sc.state.accounts.values())
    assert sorted(sc.state.accounts) == ["A", "B"]
    clash = Account(account_id="A", owner="x", opened_at=T0)
    with pytest.raises(InvariantViolation, match="UniqueAccountIds"):
        check_unique_account_ids([*sc.state.accounts.values(), clash])


def test_full_history_end_state() -> None:
    """Not an obligation: the scenario's end state, as a regression anchor."""
    sc = full_history()
    a, b = sc.state.accounts["A"], sc.state.accounts["B"]
    assert (a.balance_minor, a.version, a.owner) == (600, 3, "c1")
    assert (b.balance_minor, b.status, b.owner) == (0, AccountStatus.closed, "bob")
    for o in sc.state.outcomes.values():
        check_outcome(o)


# Actor and surfaces -------------------------------------------------------------------------------


@pytest.mark.allium("surface-actor.Provisioning", "surface-provides.Provisioning")
def test_provisioning_surface() -> None:
    state = CoreState()
    surface = Provisioning(state)
    assert surface.available_operations() == ("EnrolOperator", "RegisterClient")
    op = surface.enrol_operator("rita", OperatorRole.responder)
    client = surface.register_client("acme")
    assert state.operators["rita"] is op and state.clients["acme"] is client
    # Still provided afterwards: no when-conditions; the rules' own requires still apply.
    assert surface.available_operations() == ("EnrolOperator", "RegisterClient")
    with refused("RegisterClient", 1):
        surface.register_client("acme")


@pytest.mark.allium("surface-actor.ClientAdministration")
def test_client_administration_faces_responders_only() -> None:
    client = ApiClient(client_id="acme")
    assert is_client_administrator(responder()) and not is_client_administrator(observer())
    surface = ClientAdministration(responder(), client)
    assert surface.admin.role is OperatorRole.responder
    with refused("ClientAdministration", 0, AccessDenied):
        ClientAdministration(observer(), client)


@pytest.mark.allium("surface-exposure.ClientAdministration")
def test_client_administration_exposes_id_and_status() -> None:
    client = ApiClient(client_id="acme", status=ApiClientStatus.suspended)
    exposed = ClientAdministration(responder(), client).exposed()
    assert exposed == {"client_id": "acme", "status": ApiClientStatus.suspended}
    assert exposed["client_id"] == client.client_id and exposed["status"] == client.status


@pytest.mark.allium("surface-provides.ClientAdministration")
def test_client_administration_provides_by_status() -> None:
    client = ApiClient(client_id="acme")
    surface = ClientAdministration(responder(), client)
    assert surface.available_operations() == ("SuspendClient", "RevokeClient")
    with refused("ClientAdministration", 0):
        surface.reinstate()
    surface.suspend()
    assert client.status is ApiClientStatus.suspended
    assert surface.available_operations() == ("ReinstateClient", "RevokeClient")
    surface.reinstate()
    assert client.status is ApiClientStatus.active
    surface.revoke()
    assert client.status is ApiClientStatus.revoked
    assert surface.available_operations() == ()
    for op in (surface.suspend, surface.reinstate, surface.revoke):
        with refused("ClientAdministration", 0):
            op()


# Normative test vectors (resolved question "What are the canonical bytes, exactly?") -------------


def _hex(spaced: str) -> bytes:
    """The spec writes the vectors as hex with a space between fields; spaces are not bytes."""
    return bytes.fromhex("".join(spaced.split()))


VECTOR_E1 = Envelope(request_id="r-1", client_id="c-1", kind=OperationKind.deposit, account_id="acc-1",
                     counterparty_id=None, owner=None, amount_minor=250)
VECTOR_E1_BYTES = _hex("""
    00000003636531 00000008456e76656c6f7065 00000003722d31
    00000003632d31 000000076465706f736974 000000056163632d31 00 00
    00000000000000fa""")
VECTOR_E1_FINGERPRINT = "ce1:c8ebe8d71cf5b20153f2f8b63173c892ebc1497ff0ce7b03653c0816d295c0f9"

VECTOR_E2 = Envelope(request_id="r-2", client_id="c-1", kind=OperationKind.transfer, account_id="acc-1",
                     counterparty_id="acc-2", owner="Zo\u00eb", amount_minor=-5)
VECTOR_E2_BYTES = _hex("""
    00000003636531 00000008456e76656c6f7065 00000003722d32
    00000003632d31 000000087472616e73666572 000000056163632d31
    01000000056163632d32 01000000045a6fc3ab fffffffffffffffb""")
VECTOR_E2_FINGERPRINT = "ce1:4728da4c1f565183d09ffd753fdbd6241f7b33ca46a35e3b86de14a204249e06"

VECTOR_O1_BYTES = _hex("""
    00000003636531 000000074f7574636f6d65 00000003722d33 00000003632d31
    000000087472616e73666572 000000086163636570746564 00
    000000056163632d31 01000000056163632d32 fffffffffffffd44
    00000000000002bc""")
VECTOR_O1_DIGEST = "ce1:41024c6a30ea28a11ebfc03ea59d8692191cf716ce58bc4578cf16108f386450"

VECTOR_O2_BYTES = _hex("""
    00000003636531 000000074f7574636f6d65 00000003722d34 00000003632d31
    000000087769746864726177 0000000872656a6563746564
    0100000012696e73756666696369656e745f66756e6473 000000056163632d31
    00 0000000000000000 0000000000000000""")
VECTOR_O2_DIGEST = "ce1:eb4ba9a662e8a55fffac225ba5288aaf86e6052e8adbb4248940bc083ffc6d88"


def vector_o1(*, epoch: int = 1, sequence: int = 1) -> Outcome:
    """Vector O1: accepted transfer r-3 of c-1, acc-1 -> acc-2, deltas -700 / 700."""
    req = make_request(OperationKind.transfer, "acc-1", counterparty_id="acc-2", amount_minor=700,
                       request_id="r-3", client_id="c-1")
    return make_outcome(req, account_delta_minor=-700, counterparty_delta_minor=700,
                        epoch=epoch, sequence=sequence)


def vector_o2(*, epoch: int = 1, sequence: int = 1) -> Outcome:
    """Vector O2: withdraw r-4 of c-1 rejected for insufficient_funds, no counterparty, zero deltas."""
    req = make_request(OperationKind.withdraw, "acc-1", amount_minor=10, request_id="r-4", client_id="c-1")
    return make_outcome(req, Verdict.rejected, reason=RejectReason.insufficient_funds,
                        epoch=epoch, sequence=sequence)


def _vectors() -> dict[str, tuple[bytes, str]]:
    """Every vector encoded and hashed by the unit, in the calling thread."""
    o1, o2 = vector_o1(), vector_o2()
    return {
        "E1": (encode_envelope(VECTOR_E1), fingerprint(VECTOR_E1)),
        "E2": (encode_envelope(VECTOR_E2), fingerprint(VECTOR_E2)),
        "O1": (encode_outcome(o1), outcome_digest(o1)),
        "O2": (encode_outcome(o2), outcome_digest(o2)),
    }


EXPECTED_VECTORS = {
    "E1": (VECTOR_E1_BYTES, VECTOR_E1_FINGERPRINT),
    "E2": (VECTOR_E2_BYTES, VECTOR_E2_FINGERPRINT),
    "O1": (VECTOR_O1_BYTES, VECTOR_O1_DIGEST),
    "O2": (VECTOR_O2_BYTES, VECTOR_O2_DIGEST),
}


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint")
def test_envelope_vectors_e1_e2_byte_for_byte() -> None:
    assert encode_envelope(VECTOR_E1) == VECTOR_E1_BYTES
    assert fingerprint(VECTOR_E1) == ENCODING.fingerprint(VECTOR_E1) == VECTOR_E1_FINGERPRINT
    assert encode_envelope(VECTOR_E2) == VECTOR_E2_BYTES
    assert fingerprint(VECTOR_E2) == ENCODING.fingerprint(VECTOR_E2) == VECTOR_E2_FINGERPRINT
    # "Zoë" is three characters and four UTF-8 bytes: the prefix counts bytes.
    assert b"\x00\x00\x00\x04Zo\xc3\xab" in VECTOR_E2_BYTES
    # The api's argument order and a Request's own fingerprint give the same digest.
    assert fingerprint_of("c-1", "r-2", OperationKind.transfer, "acc-1", "acc-2", "Zo\u00eb", -5) \
        == VECTOR_E2_FINGERPRINT
    req = new_request(VECTOR_E1, channel=Channel.log, received_at=T0, partition=2, offset=5)
    assert req.fingerprint == VECTOR_E1_FINGERPRINT


@pytest.mark.allium("contract-signature.CanonicalEncoding.outcome_digest", "invariant.Outcome.DigestSealsContent")
def test_outcome_vectors_o1_o2_byte_for_byte() -> None:
    for make, data, digest in ((vector_o1, VECTOR_O1_BYTES, VECTOR_O1_DIGEST),
                               (vector_o2, VECTOR_O2_BYTES, VECTOR_O2_DIGEST)):
        # "any epoch, sequence and time": commit metadata and applied are not encoded.
        for epoch, sequence in ((1, 1), (9, 12345)):
            outcome = make(epoch=epoch, sequence=sequence)
            outcome.applied = epoch > 1
            assert encode_outcome(outcome) == data
            assert outcome_digest(outcome) == ENCODING.outcome_digest(outcome) == digest
            assert outcome.digest == digest
            check_digest_seals_content(outcome)


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint",
                    "contract-signature.CanonicalEncoding.outcome_digest")
def test_vectors_identical_from_a_new_thread() -> None:
    """The encoder keeps no per-thread state that could change the bytes: a fresh thread computes the same vectors."""
    import threading

    results: list[dict[str, tuple[bytes, str]]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(_vectors())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # Encode a longer record first: nothing of it may leak into later encodings.
    encode_envelope(dataclasses.replace(VECTOR_E2, owner="x" * 500))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and errors == []
    assert results == [EXPECTED_VECTORS]
    assert _vectors() == EXPECTED_VECTORS


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint")
def test_encoding_refuses_absent_required_fields_and_foreign_types() -> None:
    """A required field that is absent, a Boolean or a float is refused, never encoded."""
    for name in ("request_id", "client_id", "kind", "account_id", "amount_minor"):
        with pytest.raises(ValueError, match="absent"):
            fingerprint(dataclasses.replace(VECTOR_E1, **{name: None}))
    for bad in (True, False, 2.5, 250.0):
        with pytest.raises(TypeError):
            fingerprint(dataclasses.replace(VECTOR_E1, amount_minor=bad))
    with pytest.raises(TypeError):
        fingerprint(dataclasses.replace(VECTOR_E1, owner=1.5))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fingerprint(dataclasses.replace(VECTOR_E1, counterparty_id=True))  # type: ignore[arg-type]
    # Integers are signed 64-bit: both ends are inclusive, one past either end is refused.
    low = dataclasses.replace(VECTOR_E1, amount_minor=-(2**63))
    high = dataclasses.replace(VECTOR_E1, amount_minor=2**63 - 1)
    assert encode_envelope(low)[-8:] == b"\x80" + b"\x00" * 7
    assert encode_envelope(high)[-8:] == b"\x7f" + b"\xff" * 7
    for value in (-(2**63) - 1, 2**63):
        with pytest.raises(OverflowError):
            fingerprint(dataclasses.replace(VECTOR_E1, amount_minor=value))
    outcome = vector_o1()
    for name in ("request_id", "client_id", "kind", "verdict", "account_id",
                 "account_delta_minor", "counterparty_delta_minor"):
        broken = vector_o1()
        setattr(broken, name, None)
        with pytest.raises(ValueError, match="absent"):
            outcome_digest(broken)
    outcome.applied = True
    outcome.reason = True  # type: ignore[assignment]
    with pytest.raises(TypeError):
        outcome_digest(outcome)


# Fast paths agree with the general encoding (@guidance of CanonicalEncoding) --------------------
#
# encode_envelope and encode_outcome have specialised encoders for the exact declared types and
# fall back to the general encoding for anything else. The tests below hold both paths to the
# bytes the settled decision defines: literal vectors for edge shapes (empty and multi-byte
# Strings, optionals absent, present and present-but-empty, both ends of int64), a hand-written
# encoding over every shape, the general canonical_encoding for a record of another name, and
# every refusal on each path.


class _Text(str):
    """A String of a subclass type: takes the general path, must encode like a plain str."""


class _Whole(int):
    """An Integer of a subclass type: takes the general path, must encode like a plain int."""


#: Vector E3: empty, multi-byte and present-but-empty Strings, the smallest Integer.
VECTOR_E3 = Envelope(request_id="", client_id="\u65e5\u672c", kind=OperationKind.close, account_id="a",
                     counterparty_id="", owner=None, amount_minor=-(2**63))
VECTOR_E3_BYTES = _hex("""
    00000003636531 00000008456e76656c6f7065 00000000
    00000006e697a5e69cac 00000005636c6f7365 0000000161
    0100000000 00
    8000000000000000""")

#: Vector O3: an accepted open with an empty client, "€" (three bytes) as account, a
#: counterparty present, and deltas at both ends of int64 (the encoding does not judge them).
VECTOR_O3_BYTES = _hex("""
    00000003636531 000000074f7574636f6d65 00000003722d35 00000000
    000000046f70656e 000000086163636570746564 00
    00000003e282ac 01000000045a6fc3ab 7fffffffffffffff
    8000000000000000""")

#: Vector O4: a rejected deposit, reason quarantined (the last reason), no counterparty.
VECTOR_O4_BYTES = _hex("""
    00000003636531 000000074f7574636f6d65 00000003722d36 00000003632d39
    000000076465706f736974 0000000872656a6563746564
    010000000b71756172616e74696e6564 00000003e282ac
    00 0000000000000000 0000000000000000""")


def vector_o3() -> Outcome:
    req = make_request(OperationKind.open, "\u20ac", counterparty_id="Zo\u00eb", request_id="r-5", client_id="")
    return make_outcome(req, account_delta_minor=2**63 - 1, counterparty_delta_minor=-(2**63))


def vector_o4() -> Outcome:
    req = make_request(OperationKind.deposit, "\u20ac", amount_minor=5, request_id="r-6", client_id="c-9")
    return make_outcome(req, Verdict.rejected, reason=RejectReason.quarantined)


def _envelope_fields(env: Envelope) -> list[tuple[CanonicalScalar | None, bool]]:
    """The Envelope's (value, optional) pairs in declaration order, as the spec lists them."""
    return [(env.request_id, False), (env.client_id, False), (env.kind, False), (env.account_id, False),
            (env.counterparty_id, True), (env.owner, True), (env.amount_minor, False)]


def _outcome_fields(o: Outcome) -> list[tuple[CanonicalScalar | None, bool]]:
    """The Outcome's decided content as (value, optional) pairs, in declaration order."""
    return [(o.request_id, False), (o.client_id, False), (o.kind, False), (o.verdict, False),
            (o.reason, True), (o.account_id, False), (o.counterparty_id, True),
            (o.account_delta_minor, False), (o.counterparty_delta_minor, False)]


_STRINGS = ("", "r-1", "Zo\u00eb", "\u65e5\u672c\u8a9e", "\U0001f4b6", "x" * 300)
_OPTIONAL_STRINGS = (None, "", "acc-2", "\u20ac")
_INTEGERS = (-(2**63), -1, 0, 250, 2**32, 2**63 - 1)


def _envelope_shapes() -> list[Envelope]:
    shapes = []
    for index, kind in enumerate(OperationKind):
        for text in _STRINGS:
            for optional in _OPTIONAL_STRINGS:
                shapes.append(Envelope(
                    request_id=text, client_id=_STRINGS[index], kind=kind, account_id=text[::-1] + "a",
                    counterparty_id=optional, owner=_OPTIONAL_STRINGS[index % 4],
                    amount_minor=_INTEGERS[(index + len(text)) % len(_INTEGERS)]))
    for amount in _INTEGERS:
        shapes.append(dataclasses.replace(VECTOR_E2, amount_minor=amount))
    return shapes


def _outcome_shapes() -> list[Outcome]:
    shapes = []
    for kind in OperationKind:
        for reason in (None, *RejectReason):
            for counterparty in _OPTIONAL_STRINGS:
                verdict = Verdict.accepted if reason is None else Verdict.rejected
                req = make_request(kind, "acc-\u00e9", counterparty_id=counterparty,
                                   request_id=f"r-{kind.name}", client_id="c-\U0001f4b6")
                delta = _INTEGERS[len(reason or "") % len(_INTEGERS)]
                shapes.append(make_outcome(req, verdict, reason=reason, account_delta_minor=delta,
                                           counterparty_delta_minor=-1 - delta))
    return shapes


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint",
                    "contract-signature.CanonicalEncoding.outcome_digest")
def test_edge_vectors_byte_for_byte() -> None:
    """Literal encodings of the shapes a fast path could get wrong (the @guidance asks to pin them)."""
    assert encode_envelope(VECTOR_E3) == VECTOR_E3_BYTES
    assert fingerprint(VECTOR_E3) == "ce1:" + hashlib.sha256(VECTOR_E3_BYTES).hexdigest()
    o3, o4 = vector_o3(), vector_o4()
    assert encode_outcome(o3) == VECTOR_O3_BYTES
    assert encode_outcome(o4) == VECTOR_O4_BYTES
    assert outcome_digest(o3) == "ce1:" + hashlib.sha256(VECTOR_O3_BYTES).hexdigest() == o3.digest
    assert outcome_digest(o4) == "ce1:" + hashlib.sha256(VECTOR_O4_BYTES).hexdigest() == o4.digest
    # The general encoding of the same fields gives the same bytes.
    assert canonical_encoding("Envelope", _envelope_fields(VECTOR_E3)) == VECTOR_E3_BYTES
    assert canonical_encoding("Outcome", _outcome_fields(o3)) == VECTOR_O3_BYTES
    assert canonical_encoding("Outcome", _outcome_fields(o4)) == VECTOR_O4_BYTES


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint")
def test_envelope_fast_path_matches_the_layout_for_every_shape() -> None:
    """Every kind, empty and multi-byte Strings, each optional absent/present/empty, int64 ends."""
    shapes = _envelope_shapes()
    assert len(shapes) > 100
    for env in shapes:
        expected = _expected_envelope_encoding(env)
        assert encode_envelope(env) == expected, env
        assert canonical_encoding("Envelope", _envelope_fields(env)) == expected, env
        assert fingerprint(env) == "ce1:" + hashlib.sha256(expected).hexdigest()


@pytest.mark.allium("contract-signature.CanonicalEncoding.outcome_digest")
def test_outcome_fast_path_matches_the_layout_for_every_shape() -> None:
    """Every kind and reason, both verdicts, counterparty absent/present/empty, int64 ends."""
    shapes = _outcome_shapes()
    assert len(shapes) == len(OperationKind) * (len(RejectReason) + 1) * len(_OPTIONAL_STRINGS)
    for o in shapes:
        expected = _expected_outcome_encoding(o)
        assert encode_outcome(o) == expected, o
        assert canonical_encoding("Outcome", _outcome_fields(o)) == expected, o
        assert outcome_digest(o) == o.digest == "ce1:" + hashlib.sha256(expected).hexdigest()


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint",
                    "contract-signature.CanonicalEncoding.outcome_digest")
def test_exact_types_never_take_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """@guidance: records of the exact declared types are joined from precomputed parts.

    With the general encoder disabled, every shape still encodes to its expected bytes, so
    no fast-path guard sends a well-typed record down the per-field path; a subclass value
    does take it (the patch is live).
    """
    import ledger.core as core_module

    def general(record: str, fields: object) -> bytes:
        raise AssertionError(f"{record} took the general path")

    monkeypatch.setattr(core_module, "canonical_encoding", general)
    for env in (*_envelope_shapes(), VECTOR_E1, VECTOR_E2, VECTOR_E3):
        assert encode_envelope(env) == _expected_envelope_encoding(env)
    for o in (*_outcome_shapes(), vector_o1(), vector_o2(), vector_o3(), vector_o4()):
        assert encode_outcome(o) == _expected_outcome_encoding(o)
    with pytest.raises(AssertionError, match="Envelope took the general path"):
        encode_envelope(dataclasses.replace(VECTOR_E1, request_id=_Text("r-1")))
    o1 = vector_o1()
    o1.account_delta_minor = _Whole(-700)
    with pytest.raises(AssertionError, match="Outcome took the general path"):
        encode_outcome(o1)


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint")
def test_envelope_general_path_gives_the_same_bytes_field_by_field() -> None:
    """A subclass value in any one field takes the general path: same bytes, same fingerprint."""
    for env, data in ((VECTOR_E1, VECTOR_E1_BYTES), (VECTOR_E2, VECTOR_E2_BYTES), (VECTOR_E3, VECTOR_E3_BYTES)):
        for name in ("request_id", "client_id", "account_id", "counterparty_id", "owner", "amount_minor"):
            value = getattr(env, name)
            if value is None:
                continue
            subclassed = _Whole(value) if name == "amount_minor" else _Text(value)
            other = dataclasses.replace(env, **{name: subclassed})  # type: ignore[arg-type]
            assert encode_envelope(other) == data, name
            assert fingerprint(other) == "ce1:" + hashlib.sha256(data).hexdigest()


@pytest.mark.allium("contract-signature.CanonicalEncoding.outcome_digest")
def test_outcome_general_path_gives_the_same_bytes_field_by_field() -> None:
    """A subclass value in any one field of an Outcome: the same bytes as the fast path."""
    names = ("request_id", "client_id", "account_id", "counterparty_id",
             "account_delta_minor", "counterparty_delta_minor")
    for make, data in ((vector_o1, VECTOR_O1_BYTES), (vector_o2, VECTOR_O2_BYTES),
                       (vector_o3, VECTOR_O3_BYTES), (vector_o4, VECTOR_O4_BYTES)):
        for name in names:
            outcome = make()
            value = getattr(outcome, name)
            if value is None:
                continue
            setattr(outcome, name, _Whole(value) if name.endswith("_minor") else _Text(value))
            assert encode_outcome(outcome) == data, name
            assert outcome_digest(outcome) == outcome.digest


#: Record names not used before in this process, whatever ran earlier (see below).
_FRESH_RECORD_NAMES = itertools.count()


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint",
                    "contract-signature.CanonicalEncoding.outcome_digest")
def test_general_encoding_of_another_record_name() -> None:
    """canonical_encoding for a record other than Envelope/Outcome (e.g. a ballot): literal bytes."""
    fields: list[tuple[CanonicalScalar | None, bool]] = [
        ("n1", False), (7, False), (None, True), (Verdict.rejected, True), ("", True),
        (-1, True), (RejectReason.quarantined, False), ("Zo\u00eb", False), (2**63 - 1, False)]
    expected = _hex("""
        00000003636531 0000000642616c6c6f74 000000026e31 0000000000000007 00
        01 0000000872656a6563746564 0100000000 01 ffffffffffffffff
        0000000b71756172616e74696e6564 000000045a6fc3ab 7fffffffffffffff""")
    header = _hex("00000003636531 0000000642616c6c6f74")
    assert canonical_encoding("Ballot", fields) == expected
    assert canonical_encoding("Ballot", []) == header
    # The header is per record name: another name, another header, the same field bytes.
    assert canonical_encoding("Vote", fields) == _canon_str("ce1") + _canon_str("Vote") + expected[len(header):]
    assert canonical_encoding("Ballot", fields) == expected
    # The header is computed once per record name and reused: a name never used before
    # in this process (the cache outlives a test) is built right, and then reused right.
    fresh = f"Fresh{next(_FRESH_RECORD_NAMES)}"
    fresh_header = _canon_str("ce1") + _canon_str(fresh)
    for _ in range(2):
        assert canonical_encoding(fresh, fields) == fresh_header + expected[len(header):]
    # The same name from a str subclass names the same record.
    assert canonical_encoding(_Text("Ballot"), fields) == expected


class _Shade(enum.Enum):
    """An enum whose values are not its names: the encoding uses the names."""

    light = "L"
    dark = 2


class _Level(enum.IntEnum):
    high = 3


class _Code(str, enum.Enum):
    ok = "OK-value"


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint",
                    "contract-signature.CanonicalEncoding.outcome_digest")
def test_an_enum_value_is_the_string_of_its_name() -> None:
    """Settled decision: "an enum value is the String of its name", for any enum."""
    fields: list[tuple[CanonicalScalar | None, bool]] = [
        (_Shade.light, False), (_Shade.dark, True), (_Level.high, False), (_Code.ok, True),
        (OperationKind.withdraw, False), (Channel.log, True), (ApiClientStatus.suspended, False)]
    assert canonical_encoding("T", fields) == (
        _canon_str("ce1") + _canon_str("T") + _canon_str("light") + b"\x01" + _canon_str("dark")
        + _canon_str("high") + b"\x01" + _canon_str("ok") + _canon_str("withdraw")
        + b"\x01" + _canon_str("log") + _canon_str("suspended"))
    # Every value of core's enums, required and optional.
    for enum_cls in (OperationKind, Verdict, RejectReason, Channel, AccountStatus, OperatorRole, ApiClientStatus):
        for member in enum_cls:
            assert canonical_encoding("T", [(member, False), (member, True)]) == (
                _canon_str("ce1") + _canon_str("T") + _canon_str(member.name) + b"\x01" + _canon_str(member.name))


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint",
                    "contract-signature.CanonicalEncoding.outcome_digest")
def test_general_encoding_refusals() -> None:
    """Absent required: ValueError; Boolean, float, bytes: TypeError; beyond int64: OverflowError."""
    with pytest.raises(ValueError, match="absent"):
        canonical_encoding("T", [("a", False), (None, False)])
    for optional in (False, True):
        for boolean in (True, False):
            with pytest.raises(TypeError, match="canonical encoding has no booleans"):
                canonical_encoding("T", [(boolean, optional)])
        for foreign in (1.5, b"x", [1], object()):
            with pytest.raises(TypeError, match=f"canonical encoding has no type {type(foreign).__name__}"):
                canonical_encoding("T", [(foreign, optional)])  # type: ignore[list-item]
        for big in (2**63, -(2**63) - 1, _Whole(2**63)):
            with pytest.raises(OverflowError):
                canonical_encoding("T", [(big, optional)])
    with pytest.raises(TypeError, match="canonical encoding has no booleans"):
        canonical_encoding(True, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="canonical encoding has no type float"):
        canonical_encoding(1.5, [])  # type: ignore[arg-type]


@pytest.mark.allium("contract-signature.CanonicalEncoding.fingerprint")
def test_envelope_refusals_field_by_field() -> None:
    """Each field of an Envelope refuses what the encoding has not, naming an absent field."""
    for env in (VECTOR_E1, VECTOR_E2):
        for name in ("request_id", "client_id", "kind", "account_id", "amount_minor"):
            with pytest.raises(ValueError, match=rf"required field Envelope\.{name} is absent"):
                fingerprint(dataclasses.replace(env, **{name: None}))  # type: ignore[arg-type]
        for name in ("request_id", "client_id", "kind", "account_id", "counterparty_id", "owner",
                     "amount_minor"):
            for bad in (True, False, 2.5, b"x"):
                with pytest.raises(TypeError, match="canonical encoding has no"):
                    encode_envelope(dataclasses.replace(env, **{name: bad}))  # type: ignore[arg-type]
        for big in (2**63, -(2**63) - 1, _Whole(-(2**63) - 1)):
            with pytest.raises(OverflowError):
                encode_envelope(dataclasses.replace(env, amount_minor=big))


@pytest.mark.allium("contract-signature.CanonicalEncoding.outcome_digest")
def test_outcome_refusals_field_by_field() -> None:
    """Each field of an Outcome refuses what the encoding has not; both deltas are int64."""
    names = ("request_id", "client_id", "kind", "verdict", "reason", "account_id", "counterparty_id",
             "account_delta_minor", "counterparty_delta_minor")
    for make in (vector_o1, vector_o2):
        for name in names:
            for bad in (True, False, 2.5, b"x"):
                outcome = make()
                setattr(outcome, name, bad)
                with pytest.raises(TypeError, match="canonical encoding has no"):
                    encode_outcome(outcome)
            if name not in ("reason", "counterparty_id"):
                outcome = make()
                setattr(outcome, name, None)
                with pytest.raises(ValueError, match=rf"required field Outcome\.{name} is absent"):
                    outcome_digest(outcome)
        for name in ("account_delta_minor", "counterparty_delta_minor"):
            for big in (2**63, -(2**63) - 1):
                outcome = make()
                setattr(outcome, name, big)
                with pytest.raises(OverflowError):
                    outcome_digest(outcome)


# Refusals name rule and clause ------------------------------------------------------------------


@pytest.mark.allium("rule-success.ApplyOpen", "rule-success.ApplySingleAccountChange",
                    "rule-success.ApplyTransfer", "rule-success.ApplyClose", "rule-success.ApplyRejection")
def test_record_outcome_reports_the_apply_rule() -> None:
    state = CoreState()
    cases = [
        (make_outcome(make_request(OperationKind.open, "A", request_id="o1"), sequence=1), "ApplyOpen"),
        (make_outcome(make_request(OperationKind.open, "B", request_id="o2"), sequence=2), "ApplyOpen"),
        (make_outcome(make_request(OperationKind.deposit, "A", amount_minor=9, request_id="d"),
                      account_delta_minor=9, sequence=3), "ApplySingleAccountChange"),
        (make_outcome(make_request(OperationKind.withdraw, "A", amount_minor=2, request_id="w"),
                      account_delta_minor=-2, sequence=4), "ApplySingleAccountChange"),
        (make_outcome(make_request(OperationKind.transfer, "A", counterparty_id="B", amount_minor=7,
                                   request_id="t"), account_delta_minor=-7, counterparty_delta_minor=7,
                      sequence=5), "ApplyTransfer"),
        (make_outcome(make_request(OperationKind.close, "A", request_id="x"), Verdict.rejected,
                      reason=RejectReason.balance_not_zero, sequence=6), "ApplyRejection"),
        (make_outcome(make_request(OperationKind.withdraw, "B", amount_minor=7, request_id="w2"),
                      account_delta_minor=-7, sequence=7), "ApplySingleAccountChange"),
        (make_outcome(make_request(OperationKind.close, "B", request_id="c"), sequence=8), "ApplyClose"),
    ]
    for number, (outcome, rule) in enumerate(cases, start=1):
        assert state.record_outcome(outcome) == rule
        assert outcome.applied is True and state.outcome_for("c1", outcome.request_id) is outcome
        assert state.books.applied_outcomes == number == len(state.outcomes)
        check_all_invariants(state)
    assert state.books.accepted_outcomes == 7 and state.books.net_inflow_minor == 0
    assert state.accounts["B"].status is AccountStatus.closed
    assert (state.accounts["A"].balance_minor, state.accounts["A"].version) == (0, 4)


@pytest.mark.allium("invariant.EveryOutcomeApplied")
def test_unapplicable_outcome_refusal_quotes_every_apply_rule() -> None:
    """An Outcome no Apply rule accepts: Outcome.created, clause 0, quoting each rule's refusal."""
    sc = funded_state()
    before = snapshot(sc.state)
    orphan = make_outcome(make_request(OperationKind.deposit, "ghost", request_id="g"),
                          account_delta_minor=5, sequence=200)
    with pytest.raises(Rejected) as info:
        sc.state.record_outcome(orphan)
    assert (info.value.rule, info.value.clause) == ("Outcome.created", 0)
    message = str(info.value)
    assert message.startswith("Outcome.created requires #0 failed")
    for expected in ("ApplyOpen requires #2 failed", "ApplySingleAccountChange requires #4 failed",
                     "ApplyTransfer requires #2 failed", "ApplyClose requires #2 failed",
                     "ApplyRejection requires #1 failed"):
        assert expected in message
    # The undo of a failed commit: nothing at all changed, and the request is not linked.
    assert snapshot(sc.state) == before and orphan.applied is False and orphan.request.outcome is None
    assert sc.state.outcome_for("c1", "g") is None and 200 not in sc.state.sequences
    # EveryOutcomeApplied still holds: the refused outcome never became observable.
    check_every_outcome_applied(sc.state.outcomes.values())
    check_all_invariants(sc.state)
    # apply_outcome alone refuses the same way.
    with pytest.raises(Rejected) as again:
        apply_outcome(sc.state, orphan)
    assert (again.value.rule, again.value.clause) == ("Outcome.created", 0)
    assert str(again.value) == message
    # An outcome already applied is refused by every rule's own "not applied" clause.
    done = next(iter(sc.state.outcomes.values()))
    with pytest.raises(Rejected) as replay:
        apply_outcome(sc.state, done)
    assert (replay.value.rule, replay.value.clause) == ("Outcome.created", 0)
    assert "ApplyOpen requires #3 failed" in str(replay.value)
    assert snapshot(sc.state) == before


@pytest.mark.allium("invariant.OneOutcomePerRequest", "invariant.SequenceIsTotal")
def test_taken_key_or_sequence_is_refused_as_outcome_created() -> None:
    sc = funded_state()
    before = snapshot(sc.state)
    first = sc.state.outcome_for("c1", "r1")
    assert first is not None
    dup = make_outcome(first.request, Verdict.rejected, reason=RejectReason.account_exists, sequence=100)
    with pytest.raises(Rejected) as info:
        sc.state.record_outcome(dup)
    assert (info.value.rule, info.value.clause) == ("Outcome.created", 0)
    assert snapshot(sc.state) == before and dup.applied is False and first.request.outcome is first
    reused = make_outcome(make_request(OperationKind.open, "N", request_id="new"), sequence=first.sequence)
    with pytest.raises(Rejected) as info:
        sc.state.record_outcome(reused)
    assert (info.value.rule, info.value.clause) == ("Outcome.created", 0)
    assert snapshot(sc.state) == before and reused.applied is False and reused.request.outcome is None
    assert sc.state.sequences == {1, 2, 3}
    # Both uniqueness invariants still hold after the refused inserts.
    check_one_outcome_per_request(sc.state.outcomes.values())
    check_sequence_is_total(sc.state.outcomes.values())
    check_all_invariants(sc.state)


@pytest.mark.allium("transition-rejected.Account.status", "transition-rejected.ApiClient.status")
def test_undeclared_transitions_name_the_status_field() -> None:
    for current in AccountStatus:
        for target in AccountStatus:
            if target in ACCOUNT_TRANSITIONS[current]:
                check_account_transition(current, target)
                continue
            with pytest.raises(TransitionRejected) as info:
                check_account_transition(current, target)
            assert (info.value.rule, info.value.clause) == ("Account.status", 0)
    declared = {(ApiClientStatus.active, ApiClientStatus.suspended), (ApiClientStatus.suspended, ApiClientStatus.active),
                (ApiClientStatus.active, ApiClientStatus.revoked), (ApiClientStatus.suspended, ApiClientStatus.revoked)}
    for current in ApiClientStatus:
        for target in ApiClientStatus:
            if (current, target) in declared:
                check_api_client_transition(current, target)
                continue
            with pytest.raises(TransitionRejected) as info:
                check_api_client_transition(current, target)
            assert (info.value.rule, info.value.clause) == ("ApiClient.status", 0)
    assert {(c, t) for c, ts in API_CLIENT_TRANSITIONS.items() for t in ts} == declared
    assert {(c, t) for c, ts in ACCOUNT_TRANSITIONS.items() for t in ts} == {
        (AccountStatus.active, AccountStatus.closed)}


# Surfaces refuse by name -------------------------------------------------------------------------


@pytest.mark.allium("surface-actor.ClientAdministration")
def test_client_administration_refuses_non_responder_by_name() -> None:
    client = ApiClient(client_id="acme")
    with pytest.raises(AccessDenied) as info:
        ClientAdministration(observer(), client)
    assert (info.value.rule, info.value.clause) == ("ClientAdministration", 0)
    assert client.status is ApiClientStatus.active


@pytest.mark.allium("surface-provides.ClientAdministration")
def test_client_administration_refuses_unprovided_operations_by_name() -> None:
    """Each operation offered where it is not provided is refused by the surface, not the rule."""
    not_provided = [
        (ApiClientStatus.suspended, "suspend"),
        (ApiClientStatus.revoked, "suspend"),
        (ApiClientStatus.active, "reinstate"),
        (ApiClientStatus.revoked, "reinstate"),
        (ApiClientStatus.revoked, "revoke"),
    ]
    for status, op in not_provided:
        client = ApiClient(client_id="acme", status=status)
        surface = ClientAdministration(responder(), client)
        with pytest.raises(Rejected) as info:
            getattr(surface, op)()
        assert (info.value.rule, info.value.clause) == ("ClientAdministration", 0), (status, op)
        assert client.status is status
    provided = {
        ApiClientStatus.active: ("SuspendClient", "RevokeClient"),
        ApiClientStatus.suspended: ("ReinstateClient", "RevokeClient"),
        ApiClientStatus.revoked: (),
    }
    for status, ops in provided.items():
        assert ClientAdministration(responder(), ApiClient(client_id="x", status=status)) \
            .available_operations() == ops
    # A provided operation runs its rule.
    for status, op, after in ((ApiClientStatus.active, "suspend", ApiClientStatus.suspended),
                              (ApiClientStatus.suspended, "reinstate", ApiClientStatus.active),
                              (ApiClientStatus.active, "revoke", ApiClientStatus.revoked),
                              (ApiClientStatus.suspended, "revoke", ApiClientStatus.revoked)):
        client = ApiClient(client_id="acme", status=status)
        getattr(ClientAdministration(responder(), client), op)()
        assert client.status is after


@pytest.mark.allium("surface-provides.Provisioning")
def test_provisioning_refusals_are_the_rules_own() -> None:
    state = CoreState()
    surface = Provisioning(state)
    surface.enrol_operator("rita", OperatorRole.observer)
    surface.register_client("acme")
    with pytest.raises(Rejected) as info:
        surface.enrol_operator("rita", OperatorRole.responder)
    assert (info.value.rule, info.value.clause) == ("EnrolOperator", 1)
    with pytest.raises(Rejected) as info:
        surface.register_client("acme")
    assert (info.value.rule, info.value.clause) == ("RegisterClient", 1)
    assert state.operators["rita"].role is OperatorRole.observer and len(state.clients) == 1


# Each invariant broken alone: its own check and the combined checks name it ----------------------


def _healthy() -> Scenario:
    """A state where every invariant holds, with each kind of outcome committed."""
    sc = full_history()
    check_all_invariants(sc.state)
    sc.state.check_invariants()
    return sc


def _fails_naming(check: Callable[[], None], name: str) -> None:
    with pytest.raises(InvariantViolation) as info:
        check()
    assert str(info.value).startswith(f"{name}:"), str(info.value)


def _reseal(outcome: Outcome) -> None:
    """Keep DigestSealsContent true so that only the invariant under test is broken."""
    outcome.digest = outcome_digest(outcome)


def _outcome_of(sc: Scenario, kind: OperationKind, verdict: Verdict = Verdict.accepted) -> Outcome:
    return next(o for o in sc.state.outcomes.values() if o.kind is kind and o.verdict is verdict)


def _break_outcome(name: str, sc: Scenario) -> Outcome:
    if name == "RejectionHasNoEffect":
        o = _outcome_of(sc, OperationKind.withdraw, Verdict.rejected)
        o.account_delta_minor = -1
    elif name == "RejectionCarriesReason":
        o = _outcome_of(sc, OperationKind.withdraw, Verdict.rejected)
        o.reason = None
    elif name == "AcceptanceCarriesNoReason":
        o = _outcome_of(sc, OperationKind.deposit)
        o.reason = RejectReason.quarantined
    elif name == "TransfersNetToZero":
        o = _outcome_of(sc, OperationKind.transfer)
        o.counterparty_delta_minor += 1
    elif name == "OnlyTransfersTouchCounterparty":
        o = _outcome_of(sc, OperationKind.deposit)
        o.counterparty_delta_minor = 1
    else:
        raise AssertionError(name)
    _reseal(o)
    return o


OUTCOME_CHECKS = {
    "RejectionHasNoEffect": check_rejection_has_no_effect,
    "RejectionCarriesReason": check_rejection_carries_reason,
    "AcceptanceCarriesNoReason": check_acceptance_carries_no_reason,
    "TransfersNetToZero": check_transfers_net_to_zero,
    "OnlyTransfersTouchCounterparty": check_only_transfers_touch_counterparty,
}


@pytest.mark.allium("invariant.Outcome.RejectionHasNoEffect", "invariant.Outcome.RejectionCarriesReason",
                    "invariant.Outcome.AcceptanceCarriesNoReason", "invariant.Outcome.TransfersNetToZero",
                    "invariant.Outcome.OnlyTransfersTouchCounterparty")
@pytest.mark.parametrize("name", list(OUTCOME_CHECKS))
def test_outcome_invariant_broken_alone_is_named_everywhere(name: str) -> None:
    sc = _healthy()
    broken = _break_outcome(name, sc)
    for other, check in OUTCOME_CHECKS.items():
        if other != name:
            check(broken)  # really broken alone
    check_digest_seals_content(broken)
    _fails_naming(lambda: OUTCOME_CHECKS[name](broken), name)
    _fails_naming(lambda: check_outcome(broken), name)
    _fails_naming(lambda: check_outcome(broken, seal=False), name)
    _fails_naming(lambda: check_all_invariants(sc.state), name)
    _fails_naming(lambda: check_all_invariants(sc.state, seal=False), name)
    _fails_naming(sc.state.check_invariants, name)


@pytest.mark.allium("invariant.Outcome.DigestSealsContent")
def test_digest_seal_broken_alone_is_named_everywhere() -> None:
    sc = _healthy()
    o = _outcome_of(sc, OperationKind.transfer)
    o.digest = "ce1:" + "0" * 64
    for check in OUTCOME_CHECKS.values():
        check(o)
    _fails_naming(lambda: check_digest_seals_content(o), "DigestSealsContent")
    _fails_naming(lambda: check_outcome(o), "DigestSealsContent")
    _fails_naming(lambda: check_all_invariants(sc.state), "DigestSealsContent")
    _fails_naming(sc.state.check_invariants, "DigestSealsContent")
    # seal=False is for digests made by another scheme: it skips only this check.
    check_outcome(o, seal=False)
    check_all_invariants(sc.state, seal=False)


def _break_account(name: str, sc: Scenario) -> Account:
    """Break one Account invariant, keeping MoneyIsConserved and the others true."""
    state = sc.state
    if name == "NonNegativeBalance":
        a = state.accounts["A"]
        a.balance_minor, state.books.net_inflow_minor = -1, state.books.net_inflow_minor - 601
    elif name == "BalanceWithinLimit":
        a = state.accounts["A"]
        extra = state.config.max_balance_minor + 1 - a.balance_minor
        a.balance_minor += extra
        state.books.net_inflow_minor += extra
    elif name == "ClosedAccountIsEmpty":
        a = state.accounts["B"]
        a.balance_minor += 5
        state.books.net_inflow_minor += 5
    elif name == "VersionCountsChanges":
        a = state.accounts["A"]
        a.version = 0
    elif name == "Account.closed_at":
        a = state.accounts["A"]
        a.closed_at = T0
    else:
        raise AssertionError(name)
    return a


ACCOUNT_CHECKS: dict[str, Callable[[Account], None]] = {
    "NonNegativeBalance": check_non_negative_balance,
    "BalanceWithinLimit": check_balance_within_limit,
    "ClosedAccountIsEmpty": check_closed_account_is_empty,
    "VersionCountsChanges": check_version_counts_changes,
    "Account.closed_at": check_closed_at_presence,
}


@pytest.mark.allium("invariant.Account.NonNegativeBalance", "invariant.Account.BalanceWithinLimit",
                    "invariant.Account.ClosedAccountIsEmpty", "invariant.Account.VersionCountsChanges",
                    "when-presence.Account.closed_at")
@pytest.mark.parametrize("name", list(ACCOUNT_CHECKS))
def test_account_invariant_broken_alone_is_named_everywhere(name: str) -> None:
    sc = _healthy()
    broken = _break_account(name, sc)
    for other, check in ACCOUNT_CHECKS.items():
        if other != name:
            check(broken)
    check_money_is_conserved(sc.state)
    _fails_naming(lambda: ACCOUNT_CHECKS[name](broken), name)
    _fails_naming(lambda: check_account(broken), name)
    _fails_naming(lambda: check_all_invariants(sc.state), name)
    _fails_naming(sc.state.check_invariants, name)


@pytest.mark.allium("invariant.Account.NonNegativeBalance", "invariant.Account.BalanceWithinLimit",
                    "invariant.Account.VersionCountsChanges")
def test_account_limits_are_inclusive() -> None:
    """balance >= 0, balance <= max_balance_minor and version >= 1 all hold at the bound itself."""
    config = Config(max_balance_minor=100)
    state = CoreState(config=config)
    state.record_outcome(make_outcome(make_request(OperationKind.open, "A", request_id="o"), sequence=1))
    state.record_outcome(make_outcome(make_request(OperationKind.deposit, "A", amount_minor=100,
                                                   request_id="d"), account_delta_minor=100, sequence=2))
    a = state.accounts["A"]
    check_balance_within_limit(a, config)
    check_account(a, config)
    check_all_invariants(state)  # the combined check uses the state's own config
    a.balance_minor, state.books.net_inflow_minor = 101, 101
    _fails_naming(lambda: check_balance_within_limit(a, config), "BalanceWithinLimit")
    _fails_naming(lambda: check_account(a, config), "BalanceWithinLimit")
    _fails_naming(lambda: check_all_invariants(state), "BalanceWithinLimit")
    check_balance_within_limit(a)  # the default limit is far higher
    a.balance_minor, state.books.net_inflow_minor = 0, 0
    check_non_negative_balance(a)
    a.version = 1
    check_version_counts_changes(a)
    check_all_invariants(state)
    default_limit = Config().max_balance_minor
    check_balance_within_limit(Account(account_id="M", owner="o", opened_at=T0, balance_minor=default_limit))
    _fails_naming(lambda: check_balance_within_limit(
        Account(account_id="M", owner="o", opened_at=T0, balance_minor=default_limit + 1)),
        "BalanceWithinLimit")


def _break_top_level(name: str, sc: Scenario) -> None:
    state = sc.state
    outcomes = list(state.outcomes.values())
    if name == "MoneyIsConserved":
        state.books.net_inflow_minor += 1
    elif name == "OneOutcomePerRequest":
        first = outcomes[0]
        twin = make_outcome(first.request, sequence=999)
        twin.applied = True
        state.outcomes[("alias", "key")] = twin  # a second outcome for the same (client_id, request_id)
        state.books.applied_outcomes += 1
    elif name == "EveryOutcomeApplied":
        outcomes[-1].applied = False
    elif name == "AppliedCountMatchesOutcomes":
        state.books.applied_outcomes += 1
    elif name == "SequenceIsTotal":
        outcomes[-1].sequence = outcomes[0].sequence
    elif name == "OutcomeMatchesItsRequest":
        outcomes[-1].request.account_id = "elsewhere"
    elif name == "UniqueAccountIds":
        state.accounts["A-twin"] = Account(account_id="A", owner="x", opened_at=T0)
    else:
        raise AssertionError(name)


TOP_LEVEL_CHECKS: dict[str, Callable[[CoreState], None]] = {
    "MoneyIsConserved": check_money_is_conserved,
    "OneOutcomePerRequest": lambda s: check_one_outcome_per_request(s.outcomes.values()),
    "EveryOutcomeApplied": lambda s: check_every_outcome_applied(s.outcomes.values()),
    "AppliedCountMatchesOutcomes": check_applied_count_matches_outcomes,
    "SequenceIsTotal": lambda s: check_sequence_is_total(s.outcomes.values()),
    "OutcomeMatchesItsRequest": lambda s: check_outcome_matches_its_request(s.outcomes.values()),
    "UniqueAccountIds": lambda s: check_unique_account_ids(s.accounts.values()),
}


@pytest.mark.allium("invariant.MoneyIsConserved", "invariant.OneOutcomePerRequest",
                    "invariant.EveryOutcomeApplied", "invariant.AppliedCountMatchesOutcomes",
                    "invariant.SequenceIsTotal", "invariant.OutcomeMatchesItsRequest",
                    "invariant.UniqueAccountIds")
@pytest.mark.parametrize("name", list(TOP_LEVEL_CHECKS))
def test_top_level_invariant_broken_alone_is_named_everywhere(name: str) -> None:
    sc = _healthy()
    _break_top_level(name, sc)
    for other, check in TOP_LEVEL_CHECKS.items():
        if other != name:
            check(sc.state)
    for account in sc.state.accounts.values():
        check_account(account, sc.state.config)
    for outcome in sc.state.outcomes.values():
        check_outcome(outcome)
    _fails_naming(lambda: TOP_LEVEL_CHECKS[name](sc.state), name)
    _fails_naming(lambda: check_all_invariants(sc.state), name)
    _fails_naming(lambda: check_all_invariants(sc.state, seal=False), name)
    _fails_naming(sc.state.check_invariants, name)


@pytest.mark.allium("invariant.OutcomeMatchesItsRequest")
@pytest.mark.parametrize("field_name,value", [
    ("request_id", "other-r"), ("client_id", "other-c"), ("kind", OperationKind.close), ("account_id", "Z"),
])
def test_outcome_must_match_its_request_on_each_field(field_name: str, value: object) -> None:
    """Each of the four equalities is checked on its own."""
    req = make_request(OperationKind.deposit, "A", amount_minor=1, request_id="m")
    outcome = make_outcome(req, account_delta_minor=1)
    check_outcome_matches_its_request([outcome])
    setattr(req, field_name, value)
    _fails_naming(lambda: check_outcome_matches_its_request([outcome]), "OutcomeMatchesItsRequest")


@pytest.mark.allium("invariant.OneOutcomePerRequest", "invariant.SequenceIsTotal", "invariant.UniqueAccountIds")
def test_uniqueness_invariants_compare_the_whole_key() -> None:
    """Same request_id under another client, or same client with another request_id, is distinct."""
    a = make_outcome(make_request(OperationKind.open, "A", request_id="r", client_id="c1"), sequence=1)
    b = make_outcome(make_request(OperationKind.open, "B", request_id="r", client_id="c2"), sequence=2)
    c = make_outcome(make_request(OperationKind.open, "C", request_id="s", client_id="c1"), sequence=3)
    check_one_outcome_per_request([a, b, c])
    check_sequence_is_total([a, b, c])
    check_unique_account_ids([Account(account_id=i, owner="o", opened_at=T0) for i in ("A", "B", "C")])
    _fails_naming(lambda: check_one_outcome_per_request([a, b, c, make_outcome(a.request, sequence=4)]),
                  "OneOutcomePerRequest")
    c.sequence = 1
    _fails_naming(lambda: check_sequence_is_total([a, b, c]), "SequenceIsTotal")
