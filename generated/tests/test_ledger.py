"""Tests for unit `ledger` (ledger.allium): epochs, commit, positions, checkpoints, dead letters."""

from __future__ import annotations

import dataclasses
import hashlib
from contextlib import contextmanager
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from ledger.core import (
    AccountStatus,
    AccessDenied,
    Channel,
    CoreState,
    Envelope,
    InvariantViolation,
    OperationKind,
    Operator,
    OperatorRole,
    Outcome,
    Rejected,
    RejectReason,
    Request,
    TransitionRejected,
    Verdict,
    check_all_invariants,
    check_digest_seals_content,
    new_request,
    outcome_digest,
)
from ledger.ledger import (
    INVARIANTS,
    Checkpoint,
    CheckpointAdvanced,
    Config,
    DeadLetter,
    DeadLetterAcknowledged,
    DeadLetterHistory,
    DeadLetterQueue,
    DeadLetterRecorded,
    DeadLetterStatus,
    Disposition,
    Endorsement,
    EpochClaim,
    EpochClaimStatus,
    EpochGrant,
    EpochGranted,
    EpochRefused,
    GroupCommitter,
    Journal,
    LedgerResponder,
    LedgerStore,
    OutcomeCommitted,
    Position,
    PositionRecorded,
    Proposal,
    ProposalSettled,
    ProposalStatus,
    ReplicaKey,
    acknowledge_dead_letter,
    advance_checkpoint,
    check_invariants,
    commit_batch,
    commit_proposal,
    create_checkpoint,
    create_dead_letter,
    create_epoch_claim,
    create_position,
    detect_duplicate_proposal,
    detect_stale_snapshot,
    fence_stale_proposal,
    first_unrecorded_offset,
    grant_epoch,
    outcome_seal,
    read_set_digest,
    record_dead_letter_position,
    refuse_unendorsed_proposal,
    sound_effect,
    stored_read_set_digest,
    vote_signature,
    vote_statement,
    check_endorsement_quorum,
    create_endorsement,
    create_replica_key,
    endorsed,
    refuse_epoch,
    submit_proposal,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class StepClock:
    """Deterministic clock: each reading is one second after the previous one."""

    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> datetime:
        self.ticks += 1
        return T0 + timedelta(seconds=self.ticks)


# Helpers -----------------------------------------------------------------------


def fresh_store() -> LedgerStore:
    """A store whose journal has been granted epoch 1 to node n1."""
    store = LedgerStore(clock=StepClock())
    create_epoch_claim(store, EpochClaim(node_id="n1", expected_epoch=0))
    return store


@pytest.fixture
def store() -> LedgerStore:
    return fresh_store()


def make_request(
    request_id: str,
    *,
    kind: OperationKind = OperationKind.deposit,
    account_id: str = "acc-1",
    counterparty_id: str | None = None,
    amount_minor: int = 100,
    channel: Channel = Channel.rest,
    partition: int | None = None,
    offset: int | None = None,
    client_id: str = "client-1",
) -> Request:
    envelope = Envelope(
        request_id=request_id, client_id=client_id, kind=kind, account_id=account_id,
        counterparty_id=counterparty_id, owner=None, amount_minor=amount_minor,
    )
    return new_request(envelope, channel=channel, received_at=T0, partition=partition, offset=offset)


def log_request(request_id: str, offset: int, partition: int = 0, **kw: object) -> Request:
    return make_request(request_id, channel=Channel.log, partition=partition, offset=offset, **kw)  # type: ignore[arg-type]


def vote_digest_for(request: Request, attempt: int, verdict: Verdict, reason: RejectReason | None,
                    delta: int, counter_delta: int) -> str:
    """A stand-in for the Clerk's vote digest: it binds the attempt, so it never equals an outcome seal.

    Proposals in these tests carry this, as real ones do, so every commit
    below exercises the fix (the Outcome must carry the seal, not this).
    """
    text = "|".join(str(part) for part in (
        "vote", request.client_id, request.request_id, attempt, verdict.value,
        reason.value if reason else "-", delta, counter_delta))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal_for(request: Request, verdict: Verdict, reason: RejectReason | None, delta: int, counter_delta: int) -> str:
    """The seal recomputed independently: core's outcome_digest over the decided content."""
    draft = Outcome(
        request=request, request_id=request.request_id, client_id=request.client_id, kind=request.kind,
        verdict=verdict, reason=reason, account_id=request.account_id,
        counterparty_id=request.counterparty_id, account_delta_minor=delta,
        counterparty_delta_minor=counter_delta, digest="", epoch=0, sequence=0, committed_at=T0,
    )
    return outcome_digest(draft)


# Replicas r0..r2 and their keys, provisioned into every store these tests use.
KEYS = {"r0": "key-r0", "r1": "key-r1", "r2": "key-r2"}


def provision(store: LedgerStore) -> None:
    for replica_id, key in KEYS.items():
        if replica_id not in store.replica_keys:
            create_replica_key(store, ReplicaKey(replica_id=replica_id, key=key))


def sign(key: str, statement: bytes) -> str:
    """HMAC-SHA256 as the spec defines it, computed here rather than by vote_signature."""
    return hmac.new(key.encode("utf-8"), statement, hashlib.sha256).hexdigest()


def endorse(store: LedgerStore, proposal: Proposal, *, signers: tuple[str, ...] = ("r0", "r1"),
            read_digest: str | None = None, keys: dict[str, str] | None = None) -> list[Endorsement]:
    """The replicas `signers` sign their vote for `proposal` over `read_digest`
    (default: the rows the store holds now) and the Clerk relays the endorsements."""
    provision(store)
    request = proposal.request
    digest = stored_read_set_digest(store, request) if read_digest is None else read_digest
    statement = vote_statement(request.client_id, request.request_id, proposal.attempt, digest,
                               proposal.verdict, proposal.reason, proposal.account_delta_minor,
                               proposal.counterparty_delta_minor)
    return [create_endorsement(store, Endorsement(request=request, attempt=proposal.attempt, replica_id=r,
                                                  read_set_digest=digest, signature=sign((keys or KEYS)[r], statement)))
            for r in signers]


def make_proposal(
    store: LedgerStore,
    request: Request,
    *,
    verdict: Verdict = Verdict.accepted,
    reason: RejectReason | None = None,
    delta: int | None = None,
    counter_delta: int = 0,
    epoch: int | None = None,
    primary_version: int | None = None,
    counter_version: int | None = None,
    attempt: int = 1,
    signed: bool = True,
) -> Proposal:
    """A pending proposal evaluated against the store's current account versions unless told
    otherwise, endorsed by two replicas over the rows the store holds now unless `signed` is False."""
    if delta is None:
        delta = request.amount_minor if (verdict is Verdict.accepted and request.kind is OperationKind.deposit) else 0
    primary = store.account(request.account_id)
    counter = store.account(request.counterparty_id)
    proposal = Proposal(
        request=request, attempt=attempt, epoch=store.journal.epoch if epoch is None else epoch,
        digest=vote_digest_for(request, attempt, verdict, reason, delta, counter_delta),
        verdict=verdict, reason=reason,
        account_delta_minor=delta, counterparty_delta_minor=counter_delta,
        expected_primary_version=(primary.version if primary else 0) if primary_version is None else primary_version,
        expected_counter_version=(counter.version if counter else 0) if counter_version is None else counter_version,
    )
    if signed and reason is not RejectReason.quarantined:
        endorse(store, proposal)
    return proposal


def open_account(store: LedgerStore, account_id: str, request_id: str | None = None) -> Outcome:
    request = make_request(request_id or f"open-{account_id}", kind=OperationKind.open, account_id=account_id, amount_minor=0)
    proposal = submit_proposal(store, make_proposal(store, request, delta=0))
    assert proposal.status is ProposalStatus.committed
    assert request.outcome is not None
    return request.outcome


def quarantine_proposal(store: LedgerStore, request: Request, **kw: object) -> Proposal:
    return make_proposal(store, request, verdict=Verdict.rejected, reason=RejectReason.quarantined, delta=0,
                         primary_version=0, counter_version=0, **kw)  # type: ignore[arg-type]


def dead_letter(offset: int, partition: int = 0) -> DeadLetter:
    return DeadLetter(partition=partition, offset=offset, payload_digest=f"sha256:{offset}",
                      cause="undecodable payload", attempts=3, quarantined_at=T0)


def responder(name: str = "rita") -> Operator:
    return Operator(name=name, role=OperatorRole.responder)


def observer(name: str = "otto") -> Operator:
    return Operator(name=name, role=OperatorRole.observer)


def assert_invariants(store: LedgerStore) -> None:
    """Ledger invariants, and all of core's (DigestSealsContent included): the commit writes core state too."""
    check_invariants(store)
    check_all_invariants(store.core, seal=True)


# Enumerations, fields, config ------------------------------------------------------


@pytest.mark.allium("enum-comparable.Disposition")
def test_disposition_values_compare_by_identity_and_value(store: LedgerStore) -> None:
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    submit_proposal(store, make_proposal(store, log_request("r0", 0), verdict=Verdict.rejected,
                                         reason=RejectReason.account_missing, delta=0))
    create_dead_letter(store, dead_letter(1))
    committed = store.position(0, 0)
    quarantined = store.position(0, 1)
    assert committed is not None and quarantined is not None
    assert committed.disposition == Disposition.committed
    assert quarantined.disposition == Disposition.quarantined
    assert committed.disposition != quarantined.disposition
    assert Disposition("duplicate") is Disposition.duplicate
    assert [d.value for d in Disposition] == ["committed", "duplicate", "quarantined"]


@pytest.mark.allium("entity-fields.Journal", "entity-optional.Journal.primary_node_id")
def test_journal_fields_and_optional_primary() -> None:
    journal = Journal()
    names = {f.name: f.type for f in dataclasses.fields(Journal)}
    assert set(names) == {"epoch", "primary_node_id", "next_sequence"}
    assert isinstance(journal.epoch, int) and isinstance(journal.next_sequence, int)
    assert journal.primary_node_id is None  # optional: null accepted
    store = LedgerStore(clock=StepClock(), journal=journal)
    create_epoch_claim(store, EpochClaim(node_id="n7", expected_epoch=0))
    assert store.journal.primary_node_id == "n7"  # and non-null
    assert store.journal.epoch == 1


@pytest.mark.allium("entity-fields.EpochClaim", "entity-fields.EpochGrant")
def test_epoch_claim_and_grant_fields(store: LedgerStore) -> None:
    assert {f.name for f in dataclasses.fields(EpochClaim)} == {"node_id", "expected_epoch", "status", "granted_epoch"}
    assert {f.name for f in dataclasses.fields(EpochGrant)} == {"epoch", "node_id", "granted_at"}
    claim = create_epoch_claim(store, EpochClaim(node_id="n2", expected_epoch=1))
    assert isinstance(claim.node_id, str) and isinstance(claim.expected_epoch, int)
    assert isinstance(claim.status, EpochClaimStatus) and isinstance(claim.granted_epoch, int)
    grant = store.grant_for(2)
    assert grant is not None
    assert isinstance(grant.epoch, int) and isinstance(grant.node_id, str) and isinstance(grant.granted_at, datetime)


@pytest.mark.allium("entity-fields.Proposal", "entity-optional.Proposal.reason")
def test_proposal_fields_and_optional_reason(store: LedgerStore) -> None:
    expected = {
        "request", "attempt", "epoch", "digest", "verdict", "reason", "account_delta_minor",
        "counterparty_delta_minor", "expected_primary_version", "expected_counter_version",
        "status", "sequence", "committed_at",
    }
    assert {f.name for f in dataclasses.fields(Proposal)} == expected
    accepted = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0)
    rejected = make_proposal(store, make_request("dep-x", account_id="x"), verdict=Verdict.rejected,
                             reason=RejectReason.account_missing, delta=0)
    assert accepted.reason is None and rejected.reason is RejectReason.account_missing
    submit_proposal(store, accepted)
    submit_proposal(store, rejected)
    assert accepted.status is ProposalStatus.committed and rejected.status is ProposalStatus.committed
    assert store.outcome_for("client-1", "open-a").reason is None  # type: ignore[union-attr]
    assert store.outcome_for("client-1", "dep-x").reason is RejectReason.account_missing  # type: ignore[union-attr]
    assert isinstance(accepted.request, Request) and isinstance(accepted.verdict, Verdict)


@pytest.mark.allium("entity-fields.Position", "entity-fields.Checkpoint")
def test_position_and_checkpoint_fields(store: LedgerStore) -> None:
    assert {f.name for f in dataclasses.fields(Position)} == {"partition", "offset", "disposition", "recorded_at"}
    assert {f.name for f in dataclasses.fields(Checkpoint)} == {"partition", "next_offset", "advanced_at"}
    checkpoint = create_checkpoint(store, Checkpoint(partition=3, next_offset=0, advanced_at=T0))
    position = create_position(store, Position(partition=3, offset=0, disposition=Disposition.duplicate, recorded_at=T0))
    assert isinstance(position.partition, int) and isinstance(position.offset, int)
    assert isinstance(position.disposition, Disposition) and isinstance(position.recorded_at, datetime)
    assert checkpoint.partition == 3 and checkpoint.next_offset == 1 and isinstance(checkpoint.advanced_at, datetime)


@pytest.mark.allium("entity-fields.DeadLetter")
def test_dead_letter_fields(store: LedgerStore) -> None:
    expected = {"partition", "offset", "payload_digest", "cause", "attempts", "quarantined_at",
                "status", "acknowledged_by", "acknowledged_at"}
    assert {f.name for f in dataclasses.fields(DeadLetter)} == expected
    letter = create_dead_letter(store, dead_letter(5))
    assert isinstance(letter.payload_digest, str) and isinstance(letter.cause, str)
    assert isinstance(letter.attempts, int) and isinstance(letter.quarantined_at, datetime)
    assert letter.status is DeadLetterStatus.held


@pytest.mark.allium("config-default.commit_batch_max", "config-default.commit_linger_micros",
                    "config-default.fault_budget", "config-default.endorsement_quorum")
def test_config_defaults() -> None:
    config = Config()
    assert config.commit_batch_max == 256
    assert config.commit_linger_micros == 2_000
    assert config.fault_budget == 1 and config.endorsement_quorum == 2  # f + 1
    assert Config(fault_budget=2).endorsement_quorum == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.commit_batch_max = 1  # type: ignore[misc]
    assert LedgerStore(clock=StepClock()).config == config


# EpochClaim lifecycle and epoch rules ------------------------------------------------


@pytest.mark.allium("when-presence.EpochClaim.granted_epoch")
def test_granted_epoch_present_only_when_granted(store: LedgerStore) -> None:
    pending = EpochClaim(node_id="n2", expected_epoch=1)
    assert pending.status is EpochClaimStatus.pending and pending.granted_epoch is None
    create_epoch_claim(store, pending)
    assert pending.status is EpochClaimStatus.granted and pending.granted_epoch == 2
    refused = create_epoch_claim(store, EpochClaim(node_id="n3", expected_epoch=1))
    assert refused.status is EpochClaimStatus.refused and refused.granted_epoch is None
    with pytest.raises(ValueError):
        EpochClaim(node_id="n4", expected_epoch=0, status=EpochClaimStatus.granted)
    with pytest.raises(ValueError):
        EpochClaim(node_id="n4", expected_epoch=0, status=EpochClaimStatus.refused, granted_epoch=1)


@pytest.mark.allium("transition-edge.EpochClaim.pending.granted", "rule-success.GrantEpoch",
                    "rule-entity-creation.GrantEpoch.1")
def test_grant_epoch_compare_and_set(store: LedgerStore) -> None:
    events: list[object] = []
    store.subscribe(events.append)
    claim = EpochClaim(node_id="n2", expected_epoch=store.journal.epoch)
    create_epoch_claim(store, claim)
    assert claim.status is EpochClaimStatus.granted
    assert claim.granted_epoch == 2
    assert store.journal.epoch == 2 and store.journal.primary_node_id == "n2"
    grant = store.grant_for(2)
    assert grant is not None
    assert (grant.epoch, grant.node_id) == (2, "n2")
    assert grant.granted_at > T0
    assert events == [EpochGranted(grant=grant, claim=claim)]
    assert_invariants(store)


@pytest.mark.allium("rule-failure.GrantEpoch.1")
def test_grant_epoch_rejects_non_pending_claim(store: LedgerStore) -> None:
    claim = EpochClaim(node_id="n2", expected_epoch=1, status=EpochClaimStatus.refused)
    with pytest.raises(Rejected) as info:
        grant_epoch(store, claim)
    assert (info.value.rule, info.value.clause) == ("GrantEpoch", 1)
    assert store.journal.epoch == 1 and len(store.grants) == 1
    assert claim.status is EpochClaimStatus.refused


@pytest.mark.allium("rule-failure.GrantEpoch.2")
def test_grant_epoch_rejects_stale_expected_epoch(store: LedgerStore) -> None:
    claim = EpochClaim(node_id="n2", expected_epoch=0)
    with pytest.raises(Rejected) as info:
        grant_epoch(store, claim)
    assert (info.value.rule, info.value.clause) == ("GrantEpoch", 2)
    assert claim.status is EpochClaimStatus.pending and claim.granted_epoch is None
    assert store.journal.epoch == 1 and store.journal.primary_node_id == "n1"
    assert [g.epoch for g in store.grants] == [1]


@pytest.mark.allium("transition-edge.EpochClaim.pending.refused", "rule-success.RefuseEpoch")
def test_refuse_epoch_on_stale_claim(store: LedgerStore) -> None:
    events: list[object] = []
    store.subscribe(events.append)
    claim = create_epoch_claim(store, EpochClaim(node_id="n2", expected_epoch=0))
    assert claim.status is EpochClaimStatus.refused
    assert store.journal.epoch == 1 and store.journal.primary_node_id == "n1"
    assert [g.epoch for g in store.grants] == [1]
    assert events == [EpochRefused(claim=claim)]
    # Two simultaneous nominations on the same epoch: exactly one wins.
    a = create_epoch_claim(store, EpochClaim(node_id="n2", expected_epoch=1))
    b = create_epoch_claim(store, EpochClaim(node_id="n3", expected_epoch=1))
    assert (a.status, b.status) == (EpochClaimStatus.granted, EpochClaimStatus.refused)
    assert_invariants(store)


@pytest.mark.allium("rule-failure.RefuseEpoch.1")
def test_refuse_epoch_rejects_non_pending_claim(store: LedgerStore) -> None:
    claim = EpochClaim(node_id="n2", expected_epoch=0, status=EpochClaimStatus.granted, granted_epoch=1)
    with pytest.raises(Rejected) as info:
        refuse_epoch(store, claim)
    assert (info.value.rule, info.value.clause) == ("RefuseEpoch", 1)
    assert claim.status is EpochClaimStatus.granted


@pytest.mark.allium("rule-failure.RefuseEpoch.2")
def test_refuse_epoch_rejects_current_expected_epoch(store: LedgerStore) -> None:
    claim = EpochClaim(node_id="n2", expected_epoch=store.journal.epoch)
    with pytest.raises(Rejected) as info:
        refuse_epoch(store, claim)
    assert (info.value.rule, info.value.clause) == ("RefuseEpoch", 2)
    assert claim.status is EpochClaimStatus.pending


@pytest.mark.allium("transition-rejected.EpochClaim.status", "transition-terminal.EpochClaim.status")
def test_epoch_claim_transitions_enforced(store: LedgerStore) -> None:
    pending = EpochClaim(node_id="n2", expected_epoch=1)
    with pytest.raises(TransitionRejected):
        pending.transition_to(EpochClaimStatus.pending)  # undeclared self-loop
    granted = create_epoch_claim(store, EpochClaim(node_id="n2", expected_epoch=1))
    refused = create_epoch_claim(store, EpochClaim(node_id="n3", expected_epoch=1))
    assert granted.status is EpochClaimStatus.granted and refused.status is EpochClaimStatus.refused
    for terminal in (granted, refused):
        for target in EpochClaimStatus:
            with pytest.raises(TransitionRejected):
                terminal.transition_to(target)
    # The rules refuse to move a terminal claim either.
    with pytest.raises(Rejected):
        grant_epoch(store, refused)
    assert refused.status is EpochClaimStatus.refused


# Proposal lifecycle and derived values --------------------------------------------------


@pytest.mark.allium("derived.Proposal.is_quarantine")
def test_is_quarantine_derived_from_reason(store: LedgerStore) -> None:
    quarantine = quarantine_proposal(store, make_request("q1"))
    ordinary = make_proposal(store, make_request("r1"), verdict=Verdict.rejected, reason=RejectReason.account_missing, delta=0)
    accepted = make_proposal(store, make_request("r2"))
    assert quarantine.reason is RejectReason.quarantined and quarantine.is_quarantine
    assert not ordinary.is_quarantine
    assert not accepted.is_quarantine


@pytest.mark.allium("derived.Proposal.is_refused")
def test_is_refused_for_duplicate_conflicted_fenced(store: LedgerStore) -> None:
    open_account(store, "a")
    committed = submit_proposal(store, make_proposal(store, make_request("d1", account_id="a")))
    duplicate = submit_proposal(store, make_proposal(store, make_request("d1", account_id="a")))
    conflicted = submit_proposal(store, make_proposal(store, make_request("d2", account_id="a"), primary_version=1))
    fenced = submit_proposal(store, make_proposal(store, make_request("d3", account_id="a"), epoch=0))
    pending = make_proposal(store, make_request("d4", account_id="a"))
    assert [p.status for p in (committed, duplicate, conflicted, fenced)] == [
        ProposalStatus.committed, ProposalStatus.duplicate, ProposalStatus.conflicted, ProposalStatus.fenced]
    assert not committed.is_refused and not pending.is_refused
    assert duplicate.is_refused and conflicted.is_refused and fenced.is_refused


@pytest.mark.allium("when-presence.Proposal.sequence", "when-presence.Proposal.committed_at")
def test_sequence_and_committed_at_present_only_when_committed(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0)
    assert proposal.sequence is None and proposal.committed_at is None
    submit_proposal(store, proposal)
    assert proposal.status is ProposalStatus.committed
    assert proposal.sequence is not None and proposal.committed_at is not None
    fenced = submit_proposal(store, make_proposal(store, make_request("x"), epoch=9))
    assert fenced.status is ProposalStatus.fenced and fenced.sequence is None and fenced.committed_at is None
    with pytest.raises(ValueError):
        dataclasses.replace(fenced, status=ProposalStatus.committed)
    with pytest.raises(ValueError):
        dataclasses.replace(proposal, status=ProposalStatus.pending)


@pytest.mark.allium("transition-rejected.Proposal.status", "transition-terminal.Proposal.status")
def test_proposal_transitions_enforced(store: LedgerStore) -> None:
    pending = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0)
    with pytest.raises(TransitionRejected):
        pending.transition_to(ProposalStatus.pending)
    submit_proposal(store, pending)
    fenced = submit_proposal(store, make_proposal(store, make_request("x"), epoch=0))
    for terminal in (pending, fenced):
        for target in ProposalStatus:
            with pytest.raises(TransitionRejected):
                terminal.transition_to(target)
    # A settled proposal cannot be submitted or committed again.
    with pytest.raises(Rejected):
        submit_proposal(store, fenced)
    with pytest.raises(Rejected):
        commit_proposal(store, fenced)
    assert fenced.status is ProposalStatus.fenced and pending.status is ProposalStatus.committed


# FenceStaleProposal ----------------------------------------------------------------------


@pytest.mark.allium("rule-success.FenceStaleProposal", "transition-edge.Proposal.pending.fenced")
def test_fence_proposal_from_deposed_epoch(store: LedgerStore) -> None:
    stale = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0)
    create_epoch_claim(store, EpochClaim(node_id="n2", expected_epoch=1))  # n1 is deposed
    events: list[object] = []
    store.subscribe(events.append)
    submit_proposal(store, stale)
    assert stale.status is ProposalStatus.fenced
    assert store.outcome_for("client-1", "open-a") is None and store.account("a") is None
    assert store.journal.next_sequence == 1
    assert events == [ProposalSettled(proposal=stale, outcome=None)]
    assert_invariants(store)


@pytest.mark.allium("rule-failure.FenceStaleProposal.1")
def test_fence_rejects_non_pending(store: LedgerStore) -> None:
    proposal = submit_proposal(store, make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0))
    with pytest.raises(Rejected) as info:
        fence_stale_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("FenceStaleProposal", 1)
    assert proposal.status is ProposalStatus.committed


@pytest.mark.allium("rule-failure.FenceStaleProposal.2")
def test_fence_rejects_current_epoch(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("r1"))
    with pytest.raises(Rejected) as info:
        fence_stale_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("FenceStaleProposal", 2)
    assert proposal.status is ProposalStatus.pending and proposal.epoch == store.journal.epoch


# DetectDuplicateProposal -------------------------------------------------------------------


@pytest.mark.allium("rule-success.DetectDuplicateProposal", "transition-edge.Proposal.pending.duplicate")
def test_duplicate_proposal_refused_with_prior_outcome(store: LedgerStore) -> None:
    prior = open_account(store, "a")
    retry = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0)
    events: list[object] = []
    store.subscribe(events.append)
    submit_proposal(store, retry)
    assert retry.status is ProposalStatus.duplicate
    assert store.outcome_for("client-1", "open-a") is prior
    assert store.books.applied_outcomes == 1 and store.journal.next_sequence == 2
    assert events == [ProposalSettled(proposal=retry, outcome=prior)]
    assert_invariants(store)


@pytest.mark.allium("rule-failure.DetectDuplicateProposal.1")
def test_duplicate_rejects_non_pending(store: LedgerStore) -> None:
    open_account(store, "a")
    proposal = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0)
    proposal.status = ProposalStatus.conflicted
    with pytest.raises(Rejected) as info:
        detect_duplicate_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("DetectDuplicateProposal", 1)
    assert proposal.status is ProposalStatus.conflicted


@pytest.mark.allium("rule-failure.DetectDuplicateProposal.2")
def test_duplicate_rejects_other_epoch(store: LedgerStore) -> None:
    open_account(store, "a")
    proposal = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0, epoch=0)
    with pytest.raises(Rejected) as info:
        detect_duplicate_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("DetectDuplicateProposal", 2)
    assert proposal.status is ProposalStatus.pending


@pytest.mark.allium("rule-failure.DetectDuplicateProposal.3")
def test_duplicate_rejects_without_prior_outcome(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0)
    with pytest.raises(Rejected) as info:
        detect_duplicate_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("DetectDuplicateProposal", 3)
    assert proposal.status is ProposalStatus.pending and store.outcome_for("client-1", "open-a") is None


@pytest.mark.allium("rule-entity-creation.DetectDuplicateProposal.1", "rule-branch.DetectDuplicateProposal.1")
def test_duplicate_records_position_only_for_unseen_log_offsets(store: LedgerStore) -> None:
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    first = submit_proposal(store, make_proposal(store, log_request("open-a", 0, kind=OperationKind.open, account_id="a"), delta=0))
    assert first.status is ProposalStatus.committed
    # The same request re-published at offset 1: channel = log and no Position yet -> one is created.
    replay = submit_proposal(store, make_proposal(store, log_request("open-a", 1, kind=OperationKind.open, account_id="a"), delta=0))
    assert replay.status is ProposalStatus.duplicate
    position = store.position(0, 1)
    assert position is not None
    assert (position.partition, position.offset, position.disposition) == (0, 1, Disposition.duplicate)
    assert position.recorded_at > T0
    assert store.checkpoint(0).next_offset == 2  # type: ignore[union-attr]
    # Branch not taken: the offset is already recorded (a second round on offset 1).
    again = submit_proposal(store, make_proposal(store, log_request("open-a", 1, kind=OperationKind.open, account_id="a"), delta=0))
    assert again.status is ProposalStatus.duplicate and store.position(0, 1) is position
    # Branch not taken: REST duplicates have no offset to record.
    count = len(store.positions)
    rest = submit_proposal(store, make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0))
    assert rest.status is ProposalStatus.duplicate and len(store.positions) == count
    assert_invariants(store)


# DetectStaleSnapshot -----------------------------------------------------------------------


@pytest.mark.allium("rule-success.DetectStaleSnapshot", "transition-edge.Proposal.pending.conflicted")
def test_stale_snapshot_conflicts(store: LedgerStore) -> None:
    open_account(store, "a")
    stale = make_proposal(store, make_request("w1", kind=OperationKind.withdraw, account_id="a", amount_minor=50),
                          verdict=Verdict.rejected, reason=RejectReason.insufficient_funds, delta=0)
    submit_proposal(store, make_proposal(store, make_request("d1", account_id="a")))  # version 1 -> 2
    submit_proposal(store, stale)
    assert stale.status is ProposalStatus.conflicted  # rejections are version-checked too
    assert store.outcome_for("client-1", "w1") is None
    assert store.account("a").version == 2  # type: ignore[union-attr]
    # The counterparty version is checked as well.
    open_account(store, "b")
    transfer = make_request("t1", kind=OperationKind.transfer, account_id="a", counterparty_id="b", amount_minor=10)
    skewed = make_proposal(store, transfer, delta=-10, counter_delta=10, counter_version=5)
    submit_proposal(store, skewed)
    assert skewed.status is ProposalStatus.conflicted
    assert_invariants(store)


@pytest.mark.allium("rule-failure.DetectStaleSnapshot.1")
def test_stale_rejects_non_pending(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("d1", account_id="a"), primary_version=3)
    proposal.status = ProposalStatus.fenced
    with pytest.raises(Rejected) as info:
        detect_stale_snapshot(store, proposal)
    assert (info.value.rule, info.value.clause) == ("DetectStaleSnapshot", 1)
    assert proposal.status is ProposalStatus.fenced


@pytest.mark.allium("rule-failure.DetectStaleSnapshot.2")
def test_stale_rejects_other_epoch(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("d1", account_id="a"), primary_version=3, epoch=7)
    with pytest.raises(Rejected) as info:
        detect_stale_snapshot(store, proposal)
    assert (info.value.rule, info.value.clause) == ("DetectStaleSnapshot", 2)
    assert proposal.status is ProposalStatus.pending


@pytest.mark.allium("rule-failure.DetectStaleSnapshot.3")
def test_stale_rejects_when_outcome_exists(store: LedgerStore) -> None:
    open_account(store, "a")
    proposal = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0,
                             primary_version=0)
    assert store.account("a").version != proposal.expected_primary_version  # type: ignore[union-attr]
    with pytest.raises(Rejected) as info:
        detect_stale_snapshot(store, proposal)
    assert (info.value.rule, info.value.clause) == ("DetectStaleSnapshot", 3)
    assert proposal.status is ProposalStatus.pending


@pytest.mark.allium("rule-failure.DetectStaleSnapshot.4")
def test_stale_rejects_quarantine(store: LedgerStore) -> None:
    open_account(store, "a")
    proposal = quarantine_proposal(store, make_request("q1", account_id="a"))
    assert proposal.is_quarantine and proposal.expected_primary_version != store.account("a").version  # type: ignore[union-attr]
    with pytest.raises(Rejected) as info:
        detect_stale_snapshot(store, proposal)
    assert (info.value.rule, info.value.clause) == ("DetectStaleSnapshot", 4)
    assert proposal.status is ProposalStatus.pending


@pytest.mark.allium("rule-failure.DetectStaleSnapshot.5")
def test_stale_rejects_matching_versions(store: LedgerStore) -> None:
    open_account(store, "a")
    proposal = make_proposal(store, make_request("d1", account_id="a"))
    assert proposal.expected_primary_version == store.account("a").version  # type: ignore[union-attr]
    with pytest.raises(Rejected) as info:
        detect_stale_snapshot(store, proposal)
    assert (info.value.rule, info.value.clause) == ("DetectStaleSnapshot", 5)
    assert proposal.status is ProposalStatus.pending


# CommitProposal ----------------------------------------------------------------------------


@pytest.mark.allium("rule-success.CommitProposal", "transition-edge.Proposal.pending.committed",
                    "rule-entity-creation.CommitProposal.1", "when-set.CommitProposal.Proposal.sequence",
                    "when-set.CommitProposal.Proposal.committed_at")
def test_commit_creates_outcome_and_applies_it(store: LedgerStore) -> None:
    open_account(store, "a")
    request = make_request("d1", account_id="a", amount_minor=250)
    proposal = make_proposal(store, request)
    events: list[object] = []
    store.subscribe(events.append)
    sequence = store.journal.next_sequence
    submit_proposal(store, proposal)
    assert proposal.status is ProposalStatus.committed
    assert proposal.sequence == sequence and store.journal.next_sequence == sequence + 1
    assert proposal.committed_at is not None and proposal.committed_at > T0
    outcome = store.outcome_for("client-1", "d1")
    assert outcome is not None and request.outcome is outcome
    assert (outcome.request, outcome.request_id, outcome.client_id, outcome.kind) == (request, "d1", "client-1", OperationKind.deposit)
    assert (outcome.verdict, outcome.reason) == (Verdict.accepted, None)
    assert (outcome.account_id, outcome.counterparty_id) == ("a", None)
    assert (outcome.account_delta_minor, outcome.counterparty_delta_minor) == (250, 0)
    assert (outcome.epoch, outcome.sequence) == (proposal.epoch, sequence)
    # The Outcome carries the seal of its own content, not the Clerk's vote digest.
    assert outcome.digest == outcome_seal(proposal) == seal_for(request, Verdict.accepted, None, 250, 0)
    assert outcome.digest == outcome_digest(outcome) and outcome.digest != proposal.digest
    assert outcome.committed_at == proposal.committed_at
    assert outcome.applied  # core's ApplySingleAccountChange ran in the same transaction
    assert store.account("a").balance_minor == 250 and store.books.net_inflow_minor == 250  # type: ignore[union-attr]
    assert events == [OutcomeCommitted(outcome=outcome), ProposalSettled(proposal=proposal, outcome=outcome)]
    assert_invariants(store)


@pytest.mark.allium("rule-failure.CommitProposal.1")
def test_commit_rejects_non_pending(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0)
    proposal.status = ProposalStatus.conflicted
    with pytest.raises(Rejected) as info:
        commit_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("CommitProposal", 1)
    assert store.outcome_for("client-1", "open-a") is None and proposal.sequence is None


@pytest.mark.allium("rule-failure.CommitProposal.2")
def test_commit_rejects_other_epoch(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0, epoch=2)
    with pytest.raises(Rejected) as info:
        commit_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("CommitProposal", 2)
    assert proposal.status is ProposalStatus.pending and store.journal.next_sequence == 1


@pytest.mark.allium("rule-failure.CommitProposal.3")
def test_commit_rejects_existing_outcome(store: LedgerStore) -> None:
    prior = open_account(store, "a")
    proposal = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0)
    with pytest.raises(Rejected) as info:
        commit_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("CommitProposal", 3)
    assert store.outcome_for("client-1", "open-a") is prior and proposal.status is ProposalStatus.pending


@pytest.mark.allium("rule-failure.CommitProposal.4")
def test_commit_rejects_stale_versions(store: LedgerStore) -> None:
    open_account(store, "a")
    proposal = make_proposal(store, make_request("d1", account_id="a"), primary_version=0)
    with pytest.raises(Rejected) as info:
        commit_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("CommitProposal", 4)
    assert proposal.status is ProposalStatus.pending
    assert store.account("a").balance_minor == 0 and store.outcome_for("client-1", "d1") is None  # type: ignore[union-attr]


@pytest.mark.allium("rule-branch.CommitProposal.1")
def test_commit_records_position_exactly_for_log_requests(store: LedgerStore) -> None:
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    log = submit_proposal(store, make_proposal(store, log_request("open-a", 0, kind=OperationKind.open, account_id="a"), delta=0))
    position = store.position(0, 0)
    assert log.status is ProposalStatus.committed and position is not None
    assert (position.disposition, position.recorded_at) == (Disposition.committed, log.committed_at)
    assert store.checkpoint(0).next_offset == 1  # type: ignore[union-attr]
    rest = submit_proposal(store, make_proposal(store, make_request("open-b", kind=OperationKind.open, account_id="b"), delta=0))
    assert rest.status is ProposalStatus.committed and len(store.positions) == 1
    # Quarantine rejections commit regardless of account versions, and record their offset.
    quarantine = submit_proposal(store, quarantine_proposal(store, log_request("q1", 1, account_id="a")))
    assert quarantine.status is ProposalStatus.committed
    assert store.position(0, 1).disposition is Disposition.committed  # type: ignore[union-attr]
    assert store.outcome_for("client-1", "q1").reason is RejectReason.quarantined  # type: ignore[union-attr]
    assert_invariants(store)


def row_after_deposit(store: LedgerStore, account_id: str, amount: int) -> str:
    """The read-set digest of an account once a deposit of `amount` ahead of it commits."""
    account = store.account(account_id)
    assert account is not None
    return read_set_digest(True, account.status, account.balance_minor + amount, account.version + 1,
                           False, None, 0, 0)


def malformed_log_proposal(store: LedgerStore, request_id: str, account_id: str = "a") -> Proposal:
    """A sound deposit whose log request lacks its offset: settling it fails half-way, after the
    Outcome insert and the Apply rule, when its Position is recorded."""
    request = make_request(request_id, account_id=account_id, channel=Channel.log, partition=0, offset=None)
    return make_proposal(store, request)


@pytest.mark.allium("rule-failure.CommitProposal.4")
def test_a_failing_commit_is_undone_to_its_savepoint_and_refused(store: LedgerStore) -> None:
    """A failure inside the commit undoes every write of that proposal and settles it as conflicted."""
    open_account(store, "a")
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    bad = malformed_log_proposal(store, "d-bad")
    assert sound_effect(store, bad)  # the failure is not a money check: it happens mid-commit
    before = (store.journal.next_sequence, dict(store.positions), store.books.applied_outcomes,
              store.account("a").balance_minor, store.account("a").version)  # type: ignore[union-attr]
    submit_proposal(store, bad)
    assert bad.status is ProposalStatus.conflicted and bad.sequence is None and bad.committed_at is None
    assert (store.journal.next_sequence, dict(store.positions), store.books.applied_outcomes,
            store.account("a").balance_minor, store.account("a").version) == before  # type: ignore[union-attr]
    assert bad in store.proposals and store.checkpoint(0).next_offset == 0  # type: ignore[union-attr]
    assert bad.request.outcome is None and store.outcome_for("client-1", "d-bad") is None
    assert_invariants(store)


@pytest.mark.allium("rule-success.CommitProposal")
def test_commit_batch_applies_in_arrival_order_and_isolates_a_poison_proposal(store: LedgerStore) -> None:
    open_account(store, "a")
    d1 = make_proposal(store, make_request("d1", account_id="a"))
    d2 = make_proposal(store, make_request("d2", account_id="a"))  # evaluated on the same version as d1
    settled = commit_batch(store, [d1, d2])
    assert [p.status for p in settled] == [ProposalStatus.committed, ProposalStatus.conflicted]
    good = make_proposal(store, make_request("d3", account_id="a"))
    poison = malformed_log_proposal(store, "d4")
    poison.expected_primary_version += 1  # evaluated after d3, as in a real batch
    endorse(store, poison, read_digest=row_after_deposit(store, "a", 100))
    late = make_proposal(store, make_request("o-b", kind=OperationKind.open, account_id="b"), delta=0)
    settled = commit_batch(store, [good, poison, late])
    assert [p.status for p in settled] == [ProposalStatus.committed, ProposalStatus.conflicted,
                                           ProposalStatus.committed]
    assert store.outcome_for("client-1", "d3") is not None and store.outcome_for("client-1", "d4") is None
    assert store.account("a").balance_minor == 200 and store.account("b") is not None  # type: ignore[union-attr]
    assert not any(p.status is ProposalStatus.pending for p in store.proposals)
    # The poison was signed and sound: it was refused by its savepoint, not by a check.
    assert endorsed(store, poison) and sound_effect(store, poison)
    assert_invariants(store)


@pytest.mark.allium("rule-success.CommitProposal")
def test_group_committer_settles_the_batch_mates_of_a_poison_proposal(store: LedgerStore) -> None:
    open_account(store, "a")
    committer = GroupCommitter(store)
    first = make_proposal(store, make_request("g1", account_id="a"))
    poison = malformed_log_proposal(store, "g2")
    poison.expected_primary_version += 1
    endorse(store, poison, read_digest=row_after_deposit(store, "a", 100))
    last = make_proposal(store, make_request("o-c", kind=OperationKind.open, account_id="c"), delta=0)
    for i, proposal in enumerate((first, poison, last)):
        assert committer.offer(proposal, now_micros=i) == []
    assert committer.flush() == [first, poison, last]
    assert (first.status, poison.status, last.status) == (
        ProposalStatus.committed, ProposalStatus.conflicted, ProposalStatus.committed)
    assert committer.pending == []


class FailingStore(LedgerStore):
    """A store whose next storage transaction fails outright (the database is unreachable)."""

    fail_next = False

    def transaction(self):  # type: ignore[override]
        if self.fail_next and self._txn is None:
            self.fail_next = False
            raise ConnectionError("storage unavailable")
        return super().transaction()


@pytest.mark.allium("rule-success.CommitProposal")
def test_a_failed_flush_hands_back_every_proposal_it_took() -> None:
    store = FailingStore(clock=StepClock())
    create_epoch_claim(store, EpochClaim(node_id="n1", expected_epoch=0))
    committer = GroupCommitter(store)
    first = make_proposal(store, make_request("o-a", kind=OperationKind.open, account_id="a"), delta=0)
    committer.offer(first, now_micros=0)
    store.fail_next = True
    with pytest.raises(ConnectionError):
        committer.flush()
    assert committer.pending == [first] and first.status is ProposalStatus.pending
    assert committer.poll(now_micros=store.config.commit_linger_micros) == [first]
    assert first.status is ProposalStatus.committed and committer.pending == []


@pytest.mark.allium("rule-success.CommitProposal")
def test_group_committer_flushes_when_full_or_lingered() -> None:
    store = LedgerStore(clock=StepClock(), config=Config(commit_batch_max=2, commit_linger_micros=2_000))
    create_epoch_claim(store, EpochClaim(node_id="n1", expected_epoch=0))
    committer = GroupCommitter(store)
    p1 = make_proposal(store, make_request("o1", kind=OperationKind.open, account_id="a"), delta=0)
    p2 = make_proposal(store, make_request("o2", kind=OperationKind.open, account_id="b"), delta=0)
    p3 = make_proposal(store, make_request("o3", kind=OperationKind.open, account_id="c"), delta=0)
    assert committer.offer(p1, 0) == []
    assert committer.offer(p2, 10) == [p1, p2]
    assert committer.offer(p3, 100) == [] and committer.poll(1_000) == []
    assert committer.poll(2_100) == [p3]
    assert [p.sequence for p in (p1, p2, p3)] == [1, 2, 3]


# Positions and checkpoints -------------------------------------------------------------------


@pytest.mark.allium("rule-success.AdvanceCheckpoint")
def test_checkpoint_advances_over_contiguous_run(store: LedgerStore) -> None:
    checkpoint = create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    # Offsets 1 and 2 commit before offset 0: the checkpoint must wait.
    submit_proposal(store, make_proposal(store, log_request("o1", 1, kind=OperationKind.open, account_id="b"), delta=0))
    create_dead_letter(store, dead_letter(2))
    assert checkpoint.next_offset == 0 and checkpoint.advanced_at == T0
    assert first_unrecorded_offset(store, 0, 0) == 0 and first_unrecorded_offset(store, 0, 1) == 3
    events: list[object] = []
    store.subscribe(events.append)
    submit_proposal(store, make_proposal(store, log_request("o0", 0, kind=OperationKind.open, account_id="a"), delta=0))
    assert checkpoint.next_offset == 3 and checkpoint.advanced_at > T0
    assert CheckpointAdvanced(checkpoint=checkpoint) in events
    assert all((0, o) in store.positions for o in range(checkpoint.next_offset))
    assert_invariants(store)


@pytest.mark.allium("rule-failure.AdvanceCheckpoint.1")
def test_advance_rejects_partition_without_checkpoint(store: LedgerStore) -> None:
    position = create_position(store, Position(partition=9, offset=0, disposition=Disposition.duplicate, recorded_at=T0))
    assert store.checkpoint(9) is None and store.position(9, 0) is position
    with pytest.raises(Rejected) as info:
        advance_checkpoint(store, position)
    assert (info.value.rule, info.value.clause) == ("AdvanceCheckpoint", 1)
    assert store.checkpoint(9) is None


@pytest.mark.allium("rule-failure.AdvanceCheckpoint.2")
def test_advance_rejects_offset_beyond_next_offset(store: LedgerStore) -> None:
    checkpoint = create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    position = create_position(store, Position(partition=0, offset=4, disposition=Disposition.duplicate, recorded_at=T0))
    assert checkpoint.next_offset == 0
    with pytest.raises(Rejected) as info:
        advance_checkpoint(store, position)
    assert (info.value.rule, info.value.clause) == ("AdvanceCheckpoint", 2)
    assert checkpoint.next_offset == 0 and checkpoint.advanced_at == T0


def test_position_is_unique_per_offset(store: LedgerStore) -> None:
    create_position(store, Position(partition=0, offset=0, disposition=Disposition.duplicate, recorded_at=T0))
    with pytest.raises(InvariantViolation):
        create_position(store, Position(partition=0, offset=0, disposition=Disposition.committed, recorded_at=T0))
    assert store.position(0, 0).disposition is Disposition.duplicate  # type: ignore[union-attr]
    first = create_checkpoint(store, Checkpoint(partition=1, next_offset=0, advanced_at=T0))
    with pytest.raises(Rejected):
        create_checkpoint(store, Checkpoint(partition=1, next_offset=5, advanced_at=T0))
    assert store.checkpoint(1) is first and first.next_offset == 0


# Dead letters ---------------------------------------------------------------------------------


@pytest.mark.allium("rule-success.RecordDeadLetterPosition", "rule-entity-creation.RecordDeadLetterPosition.1")
def test_dead_letter_records_quarantined_position(store: LedgerStore) -> None:
    checkpoint = create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    letter = dead_letter(0)
    create_dead_letter(store, letter)
    position = store.position(0, 0)
    assert position is not None
    assert (position.partition, position.offset) == (letter.partition, letter.offset)
    assert position.disposition is Disposition.quarantined
    assert position.recorded_at == letter.quarantined_at
    assert checkpoint.next_offset == 1  # the checkpoint can pass the poison event
    assert letter in store.dead_letters and letter.status is DeadLetterStatus.held
    assert_invariants(store)


@pytest.mark.allium("rule-failure.RecordDeadLetterPosition.1")
def test_dead_letter_position_not_recorded_twice(store: LedgerStore) -> None:
    existing = create_position(store, Position(partition=0, offset=0, disposition=Disposition.duplicate, recorded_at=T0))
    letter = dead_letter(0)
    with pytest.raises(Rejected) as info:
        record_dead_letter_position(store, letter)
    assert (info.value.rule, info.value.clause) == ("RecordDeadLetterPosition", 1)
    create_dead_letter(store, letter)  # the letter is still held; the rule just does not fire
    assert store.position(0, 0) is existing and existing.disposition is Disposition.duplicate
    assert_invariants(store)


@pytest.mark.allium("rule-success.AcknowledgeDeadLetter", "transition-edge.DeadLetter.held.acknowledged",
                    "when-presence.DeadLetter.acknowledged_by", "when-presence.DeadLetter.acknowledged_at")
def test_responder_acknowledges_dead_letter(store: LedgerStore) -> None:
    letter = create_dead_letter(store, dead_letter(0))
    assert letter.status is DeadLetterStatus.held
    assert letter.acknowledged_by is None and letter.acknowledged_at is None
    rita = responder()
    acknowledge_dead_letter(store, rita, letter)
    assert letter.status is DeadLetterStatus.acknowledged
    assert letter.acknowledged_by is rita and letter.acknowledged_at is not None and letter.acknowledged_at > T0
    assert store.held_dead_letters() == [] and store.acknowledged_dead_letters() == [letter]
    with pytest.raises(ValueError):
        DeadLetter(partition=0, offset=1, payload_digest="d", cause="c", attempts=1, quarantined_at=T0,
                   status=DeadLetterStatus.acknowledged)
    with pytest.raises(ValueError):
        DeadLetter(partition=0, offset=1, payload_digest="d", cause="c", attempts=1, quarantined_at=T0,
                   acknowledged_by=rita, acknowledged_at=T0)
    assert_invariants(store)


@pytest.mark.allium("rule-failure.AcknowledgeDeadLetter.1")
def test_acknowledge_rejects_already_acknowledged(store: LedgerStore) -> None:
    letter = create_dead_letter(store, dead_letter(0))
    first = responder("rita")
    acknowledge_dead_letter(store, first, letter)
    acknowledged_at = letter.acknowledged_at
    with pytest.raises(Rejected) as info:
        acknowledge_dead_letter(store, responder("ravi"), letter)
    assert (info.value.rule, info.value.clause) == ("AcknowledgeDeadLetter", 1)
    assert letter.acknowledged_by is first and letter.acknowledged_at == acknowledged_at


@pytest.mark.allium("rule-failure.AcknowledgeDeadLetter.2")
def test_acknowledge_rejects_observer(store: LedgerStore) -> None:
    letter = create_dead_letter(store, dead_letter(0))
    with pytest.raises(Rejected) as info:
        acknowledge_dead_letter(store, observer(), letter)
    assert (info.value.rule, info.value.clause) == ("AcknowledgeDeadLetter", 2)
    assert letter.status is DeadLetterStatus.held and letter.acknowledged_by is None


@pytest.mark.allium("transition-rejected.DeadLetter.status", "transition-terminal.DeadLetter.status")
def test_dead_letter_transitions_enforced(store: LedgerStore) -> None:
    letter = create_dead_letter(store, dead_letter(0))
    with pytest.raises(TransitionRejected):
        letter.transition_to(DeadLetterStatus.held)
    acknowledge_dead_letter(store, responder(), letter)
    for target in DeadLetterStatus:
        with pytest.raises(TransitionRejected):
            letter.transition_to(target)
    assert letter.status is DeadLetterStatus.acknowledged


# Invariants -------------------------------------------------------------------------------------


def run_every_rule(store: LedgerStore) -> None:
    """Drive every state-changing rule once, checking all invariants after each step."""
    steps = [
        lambda: create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0)),
        lambda: create_epoch_claim(store, EpochClaim(node_id="n2", expected_epoch=store.journal.epoch)),  # GrantEpoch
        lambda: create_epoch_claim(store, EpochClaim(node_id="n3", expected_epoch=0)),  # RefuseEpoch
        lambda: submit_proposal(store, make_proposal(store, log_request("o-a", 1, kind=OperationKind.open, account_id="a"), delta=0)),
        lambda: submit_proposal(store, make_proposal(store, log_request("o-a", 2, kind=OperationKind.open, account_id="a"), delta=0)),
        lambda: submit_proposal(store, make_proposal(store, make_request("d-a", account_id="a"), primary_version=9)),
        lambda: submit_proposal(store, make_proposal(store, make_request("d-a", account_id="a"), epoch=1)),
        lambda: submit_proposal(store, make_proposal(store, make_request("d-a", account_id="a"))),
        lambda: create_dead_letter(store, dead_letter(0)),  # RecordDeadLetterPosition + AdvanceCheckpoint
        lambda: acknowledge_dead_letter(store, responder(), store.dead_letters[0]),
    ]
    for step in steps:
        step()
        check_invariants(store)
        check_all_invariants(store.core, seal=True)


@pytest.mark.allium("invariant.OneGrantPerEpoch", "invariant.JournalHoldsLatestEpoch")
def test_epoch_invariants_hold_and_detect_violations(store: LedgerStore) -> None:
    run_every_rule(store)
    assert INVARIANTS["OneGrantPerEpoch"](store) and INVARIANTS["JournalHoldsLatestEpoch"](store)
    assert sorted(g.epoch for g in store.grants) == [1, 2] and store.journal.epoch == 2
    store.grants.append(EpochGrant(epoch=2, node_id="rogue", granted_at=T0))
    assert not INVARIANTS["OneGrantPerEpoch"](store)
    store.grants.append(EpochGrant(epoch=5, node_id="rogue", granted_at=T0))
    assert not INVARIANTS["JournalHoldsLatestEpoch"](store)
    with pytest.raises(InvariantViolation):
        check_invariants(store)


@pytest.mark.allium("invariant.CommitsCarryGrantedEpochs", "invariant.CommittedOutcomesNeverChange",
                    "invariant.CommittedSequencesBelowNext")
def test_commit_invariants_hold_and_detect_violations(store: LedgerStore) -> None:
    run_every_rule(store)
    committed = [p for p in store.proposals if p.status is ProposalStatus.committed]
    assert len(committed) == 2
    assert all(p.epoch <= store.journal.epoch for p in committed)
    assert all(p.request.outcome is not None and p.request.outcome.digest == outcome_seal(p) for p in committed)
    assert all(outcome_seal(p) != p.digest for p in committed)  # the vote digest is not what is stored
    assert all(p.sequence is not None and p.sequence < store.journal.next_sequence for p in committed)
    for name in ("CommitsCarryGrantedEpochs", "CommittedOutcomesNeverChange", "CommittedSequencesBelowNext"):
        assert INVARIANTS[name](store)
    committed[0].epoch = store.journal.epoch + 1
    assert not INVARIANTS["CommitsCarryGrantedEpochs"](store)
    committed[1].request.outcome.digest = "tampered"  # type: ignore[union-attr]
    assert not INVARIANTS["CommittedOutcomesNeverChange"](store)
    store.journal.next_sequence = 1
    assert not INVARIANTS["CommittedSequencesBelowNext"](store)


@pytest.mark.allium("invariant.OnePositionPerOffset", "invariant.DeadLettersHavePositions")
def test_position_invariants_hold_and_detect_violations(store: LedgerStore) -> None:
    run_every_rule(store)
    assert sorted(store.positions) == [(0, 0), (0, 1), (0, 2)]
    assert store.checkpoint(0).next_offset == 3  # type: ignore[union-attr]
    assert INVARIANTS["OnePositionPerOffset"](store) and INVARIANTS["DeadLettersHavePositions"](store)
    store.positions[(0, 9)] = Position(partition=0, offset=1, disposition=Disposition.duplicate, recorded_at=T0)
    assert not INVARIANTS["OnePositionPerOffset"](store)
    del store.positions[(0, 9)]
    store.dead_letters.append(dead_letter(7))  # bypasses RecordDeadLetterPosition
    assert not INVARIANTS["DeadLettersHavePositions"](store)


# The committed Outcome's digest (resolved question "Which digest does a committed Outcome carry?") ----


def commit_everything(store: LedgerStore) -> list[Proposal]:
    """Commit one proposal of every shape through the ledger, each carrying a vote digest."""
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    open_account(store, "a")
    open_account(store, "b")
    # Each proposal is evaluated on the versions the previous commit left.
    builders = [
        lambda: make_proposal(store, make_request("dep", account_id="a", amount_minor=500), attempt=3),
        lambda: make_proposal(store, make_request("wd", kind=OperationKind.withdraw, account_id="a", amount_minor=900),
                              verdict=Verdict.rejected, reason=RejectReason.insufficient_funds, delta=0, attempt=2),
        lambda: quarantine_proposal(store, log_request("poison", 0, account_id="a")),
    ]
    for build in builders:
        proposal = submit_proposal(store, build())
        assert proposal.status is ProposalStatus.committed
    transfer = make_request("xfer", kind=OperationKind.transfer, account_id="a", counterparty_id="b", amount_minor=200)
    move = submit_proposal(store, make_proposal(store, transfer, delta=-200, counter_delta=200))
    assert move.status is ProposalStatus.committed
    return [p for p in store.proposals if p.status is ProposalStatus.committed]


@pytest.mark.allium("rule-entity-creation.CommitProposal.1", "rule-success.CommitProposal",
                    "invariant.CommittedOutcomesNeverChange")
def test_committed_outcomes_satisfy_core_digest_seals_content(store: LedgerStore) -> None:
    """After real commits through the ledger, core's DigestSealsContent holds for every stored Outcome."""
    committed = commit_everything(store)
    assert len(committed) == 6 and len(store.outcomes) == 6
    for proposal in committed:
        outcome = proposal.request.outcome
        assert outcome is not None and store.outcome_for(outcome.client_id, outcome.request_id) is outcome
        check_digest_seals_content(outcome)
        assert outcome.digest == outcome_digest(outcome) == outcome_seal(proposal)
        assert outcome.digest != proposal.digest
    check_all_invariants(store.core, seal=True)  # DigestSealsContent included
    check_invariants(store)
    assert INVARIANTS["CommittedOutcomesNeverChange"](store)


@pytest.mark.allium("invariant.CommittedOutcomesNeverChange")
def test_committed_outcomes_never_change_detects_tampering(store: LedgerStore) -> None:
    """The invariant holds after real commits and fails as soon as a stored outcome is altered."""
    committed = commit_everything(store)
    assert INVARIANTS["CommittedOutcomesNeverChange"](store)
    target = next(p for p in committed if p.request.request_id == "dep")
    outcome = target.request.outcome
    assert outcome is not None
    sealed = outcome.digest

    # 1. The digest is replaced, e.g. by the Clerk's vote digest (the bug the spec fix removed).
    outcome.digest = target.digest
    assert not INVARIANTS["CommittedOutcomesNeverChange"](store)
    with pytest.raises(InvariantViolation):
        check_invariants(store)
    with pytest.raises(InvariantViolation):
        check_all_invariants(store.core, seal=True)
    outcome.digest = sealed
    assert INVARIANTS["CommittedOutcomesNeverChange"](store)
    check_invariants(store)

    # 2. The content is changed and re-sealed: DigestSealsContent alone is fooled,
    #    but the outcome no longer carries the seal of the decision the quorum agreed on.
    outcome.account_delta_minor = 5_000
    outcome.digest = outcome_digest(outcome)
    check_digest_seals_content(outcome)
    assert not INVARIANTS["CommittedOutcomesNeverChange"](store)
    outcome.account_delta_minor = target.account_delta_minor
    outcome.digest = sealed

    # 3. The content is changed but not re-sealed: core's DigestSealsContent catches it.
    outcome.verdict = Verdict.rejected
    with pytest.raises(InvariantViolation):
        check_digest_seals_content(outcome)
    outcome.verdict = Verdict.accepted

    # 4. The stored outcome disappears.
    target.request.outcome = None
    assert not INVARIANTS["CommittedOutcomesNeverChange"](store)
    target.request.outcome = outcome
    assert INVARIANTS["CommittedOutcomesNeverChange"](store)
    check_invariants(store)
    check_all_invariants(store.core, seal=True)


@pytest.mark.allium("rule-entity-creation.CommitProposal.1")
def test_outcome_seal_covers_the_decision_not_the_attempt(store: LedgerStore) -> None:
    """outcome_seal ignores the attempt and the vote digest; it changes with any decided field."""
    open_account(store, "a")
    request = make_request("d1", account_id="a", amount_minor=70)
    first = make_proposal(store, request, attempt=1)
    retry = make_proposal(store, request, attempt=2)
    assert first.digest != retry.digest  # votes of different attempts never count together
    assert outcome_seal(first) == outcome_seal(retry) == seal_for(request, Verdict.accepted, None, 70, 0)
    rejected = make_proposal(store, request, verdict=Verdict.rejected, reason=RejectReason.balance_limit, delta=0)
    assert outcome_seal(rejected) != outcome_seal(first)
    assert outcome_seal(dataclasses.replace(first, account_delta_minor=71)) != outcome_seal(first)
    # Fields the Ledger assigns at commit (epoch, sequence, committed_at) are outside the seal.
    submit_proposal(store, retry)
    outcome = request.outcome
    assert outcome is not None and outcome.digest == outcome_seal(first)
    assert outcome_seal(retry) == outcome_seal(first)  # committing does not change the seal
    assert_invariants(store)


# Actor and surfaces -------------------------------------------------------------------------------


@pytest.mark.allium("surface-actor.DeadLetterQueue")
def test_dead_letter_queue_faces_responders_only(store: LedgerStore) -> None:
    letter = create_dead_letter(store, dead_letter(0))
    assert LedgerResponder.identifies(responder()) and not LedgerResponder.identifies(observer())
    with pytest.raises(AccessDenied):
        DeadLetterQueue(store, observer(), letter)
    with pytest.raises(AccessDenied):
        DeadLetterQueue.open(store, observer())
    views = DeadLetterQueue.open(store, responder())
    assert [v.letter for v in views] == [letter]


@pytest.mark.allium("surface-exposure.DeadLetterQueue")
def test_dead_letter_queue_exposes_held_letter_details(store: LedgerStore) -> None:
    letter = create_dead_letter(store, dead_letter(4, partition=2))
    view = DeadLetterQueue(store, responder(), letter)
    assert view.exposes() == {
        "partition": 2, "offset": 4, "payload_digest": letter.payload_digest, "cause": letter.cause,
        "attempts": letter.attempts, "quarantined_at": letter.quarantined_at,
    }


@pytest.mark.allium("surface-provides.DeadLetterQueue")
def test_dead_letter_queue_offers_acknowledge_while_held(store: LedgerStore) -> None:
    letter = create_dead_letter(store, dead_letter(0))
    rita = responder()
    view = DeadLetterQueue(store, rita, letter)
    assert view.provides() == ("AcknowledgeDeadLetter",)
    view.acknowledge()
    assert letter.status is DeadLetterStatus.acknowledged and letter.acknowledged_by is rita
    assert view.provides() == ()
    with pytest.raises(Rejected):
        view.acknowledge()
    assert DeadLetterQueue.open(store, rita) == []  # leaves the queue only by acknowledgement
    with pytest.raises(Rejected):
        DeadLetterQueue(store, rita, letter)


@pytest.mark.allium("surface-actor.DeadLetterHistory", "surface-exposure.DeadLetterHistory")
def test_dead_letter_history_shows_who_and_when(store: LedgerStore) -> None:
    letter = create_dead_letter(store, dead_letter(6))
    with pytest.raises(Rejected):
        DeadLetterHistory(store, responder(), letter)  # still held: not history yet
    rita = responder("rita")
    acknowledge_dead_letter(store, rita, letter)
    with pytest.raises(AccessDenied):
        DeadLetterHistory(store, observer(), letter)
    with pytest.raises(AccessDenied):
        DeadLetterHistory.open(store, observer())
    [view] = DeadLetterHistory.open(store, responder("ravi"))
    assert view.exposes() == {"offset": 6, "acknowledged_by.name": "rita", "acknowledged_at": letter.acknowledged_at}


def test_listeners_hear_nothing_from_a_rolled_back_transaction(store: LedgerStore) -> None:
    events: list[object] = []
    store.subscribe(events.append)
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    bad = make_proposal(store, make_request("bad", account_id="nope", channel=Channel.log, partition=0, offset=None),
                        delta=0, verdict=Verdict.rejected, reason=RejectReason.account_missing)
    submit_proposal(store, bad)  # fails mid-commit (no offset): rolled back to its savepoint
    assert events == [ProposalSettled(proposal=bad, outcome=None)]  # never the undone OutcomeCommitted
    events.clear()
    create_position(store, Position(partition=0, offset=0, disposition=Disposition.duplicate, recorded_at=T0))
    assert [type(e) for e in events] == [PositionRecorded, CheckpointAdvanced]
    assert isinstance(store.core, CoreState)


# The commit enforces the money invariants itself (sound_effect) -------------------------------


def fund(store: LedgerStore, account_id: str, amount: int) -> None:
    proposal = submit_proposal(store, make_proposal(store, make_request(f"fund-{account_id}-{amount}",
                                                                        account_id=account_id, amount_minor=amount)))
    assert proposal.status is ProposalStatus.committed


@pytest.mark.allium("rule-success.DetectStaleSnapshot", "transition-edge.Proposal.pending.conflicted")
def test_right_versions_with_a_wrong_balance_are_refused_as_conflicted(store: LedgerStore) -> None:
    """The cache served the right version with balance 1,000 instead of 100: replicas agreed on an overdraft."""
    open_account(store, "a")
    fund(store, "a", 100)
    withdraw = make_request("w1", kind=OperationKind.withdraw, account_id="a", amount_minor=500)
    proposal = make_proposal(store, withdraw, delta=-500)
    assert proposal.expected_primary_version == store.account("a").version  # type: ignore[union-attr]
    assert not sound_effect(store, proposal)
    submit_proposal(store, proposal)
    assert proposal.status is ProposalStatus.conflicted
    assert store.account("a").balance_minor == 100 and store.outcome_for("client-1", "w1") is None  # type: ignore[union-attr]
    assert_invariants(store)


@pytest.mark.allium("rule-failure.CommitProposal.4")
def test_commit_refuses_an_unsound_effect_even_at_matching_versions(store: LedgerStore) -> None:
    open_account(store, "a")
    open_account(store, "b")
    fund(store, "a", 100)
    transfer = make_request("t1", kind=OperationKind.transfer, account_id="a", counterparty_id="b", amount_minor=50)
    minted = make_proposal(store, transfer, delta=-50, counter_delta=5_000)  # not net zero
    with pytest.raises(Rejected) as info:
        commit_proposal(store, minted)
    assert (info.value.rule, info.value.clause) == ("CommitProposal", 4)
    assert minted.status is ProposalStatus.pending and store.account("b").balance_minor == 0  # type: ignore[union-attr]
    assert detect_stale_snapshot(store, minted).status is ProposalStatus.conflicted


@pytest.mark.parametrize(("kind", "amount", "delta", "counter_delta", "verdict", "sound"), [
    (OperationKind.deposit, 50, 50, 0, Verdict.accepted, True),
    (OperationKind.deposit, 50, 60, 0, Verdict.accepted, False),            # moves more than asked
    (OperationKind.withdraw, 100, -100, 0, Verdict.accepted, True),         # down to exactly zero
    (OperationKind.withdraw, 101, -101, 0, Verdict.accepted, False),        # overdraft
    (OperationKind.withdraw, 10, -10, 10, Verdict.accepted, False),         # touches a counterparty
    (OperationKind.transfer, 40, -40, 40, Verdict.accepted, True),
    (OperationKind.transfer, 140, -140, 140, Verdict.accepted, False),      # overdraft
    (OperationKind.transfer, 40, -40, 41, Verdict.accepted, False),         # not net zero
    (OperationKind.close, 0, 0, 0, Verdict.accepted, False),                # balance is not zero
    (OperationKind.open, 0, 0, 0, Verdict.accepted, False),                 # account exists
    (OperationKind.withdraw, 500, 0, 0, Verdict.rejected, True),            # rejections move nothing
    (OperationKind.withdraw, 500, -500, 0, Verdict.rejected, False),
])
def test_sound_effect_checks_every_money_invariant(store: LedgerStore, kind: OperationKind, amount: int,
                                                   delta: int, counter_delta: int, verdict: Verdict,
                                                   sound: bool) -> None:
    open_account(store, "a")
    open_account(store, "b")
    fund(store, "a", 100)
    request = make_request("x", kind=kind, account_id="a", amount_minor=amount,
                           counterparty_id="b" if kind is OperationKind.transfer else None)
    reason = None if verdict is Verdict.accepted else RejectReason.insufficient_funds
    proposal = make_proposal(store, request, verdict=verdict, reason=reason, delta=delta, counter_delta=counter_delta)
    assert sound_effect(store, proposal) is sound


def test_sound_effect_refuses_closed_and_missing_accounts_and_the_balance_limit(store: LedgerStore) -> None:
    open_account(store, "a")
    missing = make_proposal(store, make_request("m", account_id="zzz", amount_minor=5), delta=5)
    assert not sound_effect(store, missing)
    store.account("a").balance_minor = store.core.config.max_balance_minor - 1  # type: ignore[union-attr]
    over = make_proposal(store, make_request("o", account_id="a", amount_minor=5), delta=5)
    assert not sound_effect(store, over)
    store.account("a").balance_minor = 0  # type: ignore[union-attr]
    close = make_proposal(store, make_request("c", kind=OperationKind.close, account_id="a", amount_minor=0), delta=0)
    assert sound_effect(store, close)
    assert submit_proposal(store, close).status is ProposalStatus.committed
    after_close = make_proposal(store, make_request("d", account_id="a", amount_minor=5), delta=5)
    assert not sound_effect(store, after_close)


# Signed votes: the commit checks them itself (RefuseUnendorsedProposal) ------------------------


@pytest.mark.allium("entity-fields.ReplicaKey", "entity-fields.Endorsement")
def test_replica_key_and_endorsement_fields(store: LedgerStore) -> None:
    assert {f.name for f in dataclasses.fields(ReplicaKey)} == {"replica_id", "key"}
    assert {f.name for f in dataclasses.fields(Endorsement)} == {
        "request", "attempt", "replica_id", "read_set_digest", "signature"}
    provision(store)
    assert store.replica_keys["r0"] == ReplicaKey(replica_id="r0", key="key-r0")
    with pytest.raises(Rejected):
        create_replica_key(store, ReplicaKey(replica_id="r0", key="another"))  # never replaced
    open_account(store, "a")
    proposal = make_proposal(store, make_request("d1", account_id="a"), signed=False)
    [first, second] = endorse(store, proposal)
    assert store.endorsements_for(proposal.request, 1) == [first, second]
    assert (first.request, first.attempt, first.replica_id) == (proposal.request, 1, "r0")
    assert len(first.read_set_digest) == 64 and len(first.signature) == 64


def test_vote_signature_is_hmac_sha256_of_the_statement() -> None:
    statement = vote_statement("c", "r", 2, "ab" * 32, Verdict.accepted, None, 5, 0)
    assert vote_signature("k", statement) == sign("k", statement)
    assert statement != vote_statement("c", "r", 3, "ab" * 32, Verdict.accepted, None, 5, 0)  # binds the attempt
    assert statement != vote_statement("c", "r", 2, "ab" * 32, Verdict.accepted, None, 6, 0)  # and the decision
    absent = read_set_digest(False, None, 0, 0, False, None, 0, 0)
    present = read_set_digest(True, AccountStatus.active, 0, 1, False, None, 0, 0)
    assert absent != present and len(absent) == 64
    assert read_set_digest(True, AccountStatus.active, 1, 1, False, None, 0, 0) != present  # the balance counts


@pytest.mark.allium("rule-success.RefuseUnendorsedProposal", "rule-failure.CommitProposal.4")
def test_a_decision_without_a_quorum_of_signed_votes_is_refused(store: LedgerStore) -> None:
    """A faulty coordinator proposes a deposit only one replica (or none) signed."""
    open_account(store, "a")
    for signers in ((), ("r0",), ("r0", "r0")):
        forged = make_proposal(store, make_request(f"f{len(signers)}", account_id="a", amount_minor=900),
                               signed=False)
        endorse(store, forged, signers=signers)
        assert not endorsed(store, forged)
        with pytest.raises(Rejected) as info:
            commit_proposal(store, forged)
        assert (info.value.rule, info.value.clause) == ("CommitProposal", 4)
        submit_proposal(store, forged)
        assert forged.status is ProposalStatus.conflicted
    assert store.account("a").balance_minor == 0 and store.books.net_inflow_minor == 0  # type: ignore[union-attr]
    assert_invariants(store)


def test_signatures_bind_the_decision_the_read_set_and_the_key(store: LedgerStore) -> None:
    open_account(store, "a")
    request = make_request("d1", account_id="a", amount_minor=100)
    tampered = make_proposal(store, request)  # signed for +100 ...
    tampered.account_delta_minor = 1_000  # ... then changed by the coordinator
    stale = make_proposal(store, make_request("d2", account_id="a"), signed=False)
    endorse(store, stale, read_digest=read_set_digest(True, AccountStatus.active, 5_000, 1, False, None, 0, 0))
    stranger = make_proposal(store, make_request("d3", account_id="a"), signed=False)
    endorse(store, stranger, keys={r: "guessed" for r in KEYS})
    for proposal in (tampered, stale, stranger):
        assert not endorsed(store, proposal)
        assert refuse_unendorsed_proposal(store, proposal).status is ProposalStatus.conflicted
    assert store.account("a").balance_minor == 0  # type: ignore[union-attr]


def test_only_provisioned_non_empty_keys_count(store: LedgerStore) -> None:
    open_account(store, "a")
    create_replica_key(store, ReplicaKey(replica_id="blank", key=""))
    proposal = make_proposal(store, make_request("d1", account_id="a"), signed=False)
    endorse(store, proposal, signers=("r0", "blank"), keys={**KEYS, "blank": ""})
    create_endorsement(store, Endorsement(request=proposal.request, attempt=1, replica_id="nobody",
                                          read_set_digest=stored_read_set_digest(store, proposal.request),
                                          signature="00" * 32))
    assert not endorsed(store, proposal)
    endorse(store, proposal, signers=("r2",))
    assert endorsed(store, proposal)
    assert submit_proposal(store, proposal).status is ProposalStatus.committed


@pytest.mark.allium("rule-failure.RefuseUnendorsedProposal.1")
def test_refuse_unendorsed_requires_pending(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("d1", account_id="a"), signed=False)
    proposal.status = ProposalStatus.fenced
    with pytest.raises(Rejected) as info:
        refuse_unendorsed_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("RefuseUnendorsedProposal", 1)
    assert proposal.status is ProposalStatus.fenced


@pytest.mark.allium("rule-failure.RefuseUnendorsedProposal.2")
def test_refuse_unendorsed_requires_current_epoch(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("d1", account_id="a"), signed=False, epoch=9)
    with pytest.raises(Rejected) as info:
        refuse_unendorsed_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("RefuseUnendorsedProposal", 2)
    assert submit_proposal(store, proposal).status is ProposalStatus.fenced  # fencing comes first


@pytest.mark.allium("rule-failure.RefuseUnendorsedProposal.3")
def test_refuse_unendorsed_leaves_duplicates_to_duplicate_detection(store: LedgerStore) -> None:
    open_account(store, "a")
    again = make_proposal(store, make_request("open-a", kind=OperationKind.open, account_id="a"), delta=0,
                          signed=False)
    with pytest.raises(Rejected) as info:
        refuse_unendorsed_proposal(store, again)
    assert (info.value.rule, info.value.clause) == ("RefuseUnendorsedProposal", 3)
    assert submit_proposal(store, again).status is ProposalStatus.duplicate


@pytest.mark.allium("rule-failure.RefuseUnendorsedProposal.4")
def test_quarantine_rejections_need_no_signed_votes(store: LedgerStore) -> None:
    proposal = quarantine_proposal(store, make_request("q1", account_id="a"))
    assert store.endorsements_for(proposal.request, proposal.attempt) == []
    with pytest.raises(Rejected) as info:
        refuse_unendorsed_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("RefuseUnendorsedProposal", 4)
    assert submit_proposal(store, proposal).status is ProposalStatus.committed


@pytest.mark.allium("rule-failure.RefuseUnendorsedProposal.5")
def test_refuse_unendorsed_spares_an_endorsed_decision(store: LedgerStore) -> None:
    open_account(store, "a")
    proposal = make_proposal(store, make_request("d1", account_id="a"))
    with pytest.raises(Rejected) as info:
        refuse_unendorsed_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("RefuseUnendorsedProposal", 5)
    assert submit_proposal(store, proposal).status is ProposalStatus.committed


@pytest.mark.allium("invariant.EndorsementQuorumOutnumbersFaults")
def test_the_store_refuses_a_signed_vote_quorum_below_f_plus_one() -> None:
    for config in (Config(), Config(fault_budget=0), Config(fault_budget=3)):
        check_endorsement_quorum(config)
        assert INVARIANTS["EndorsementQuorumOutnumbersFaults"](LedgerStore(clock=StepClock(), config=config))
    for config in (Config(fault_budget=1, endorsement_quorum=1), Config(fault_budget=-1, endorsement_quorum=0)):
        with pytest.raises(InvariantViolation, match="endorsement_quorum"):
            LedgerStore(clock=StepClock(), config=config)
    store = fresh_store()
    object.__setattr__(store.config, "endorsement_quorum", 1)  # corrupted after start-up
    assert not INVARIANTS["EndorsementQuorumOutnumbersFaults"](store)


# Normative vectors of the signed-vote encodings (RefuseUnendorsedProposal guidance) --------------

R1_BYTES = bytes.fromhex(
    "6c65646765722e726561642d7365742e763100" "01" "0100000006616374697665"
    "00000000000005dc" "0000000000000003" "00" "00" "0000000000000000" "0000000000000000"
)
R1 = "6fa12660507a26c1a8610ff3dc41dc337ad62b4c9618903949bb19322899e058"
R2 = "87d0a1ca9cb79aacd7db03cb995dafc01a047182191adde5928c895af0b10d06"
S1_BYTES = (
    bytes.fromhex("6c65646765722e766f74652e763100" "00000003632d31" "00000003722d35"
                  "0000000000000002" "00000040")
    + R1.encode("ascii")
    + bytes.fromhex("01000000086163636570746564" "00" "fffffffffffffd44" "00000000000002bc")
)
S1_SIGNATURE = "4a1a40396eb81b3dbbc500303106fcc39febb86b6a6b9a2700f1b277eb5b8765"
S2_SIGNATURE = "54ce00335d34ebee75b664877aed79af188e167be2905279a509e711f3945a58"


@pytest.mark.allium("rule-failure.RefuseUnendorsedProposal.5")
def test_read_set_digest_matches_the_normative_vectors() -> None:
    assert hashlib.sha256(R1_BYTES).hexdigest() == R1
    assert read_set_digest(True, AccountStatus.active, 1500, 3, False, None, 0, 0) == R1
    assert read_set_digest(True, AccountStatus.active, 1500, 3, True, AccountStatus.closed, 0, 2) == R2


@pytest.mark.allium("rule-failure.RefuseUnendorsedProposal.5")
def test_the_store_digests_its_own_rows_as_the_vectors_do(store: LedgerStore) -> None:
    """stored_read_set_digest reads present, status, balance and version of both rows (absent: 0, 0)."""
    open_account(store, "p")
    open_account(store, "q")
    primary, counter = store.account("p"), store.account("q")
    assert primary is not None and counter is not None
    primary.balance_minor, primary.version = 1500, 3
    alone = make_request("x", account_id="p", amount_minor=5)
    assert stored_read_set_digest(store, alone) == R1
    missing_counter = make_request("y", kind=OperationKind.transfer, account_id="p", counterparty_id="nobody")
    assert stored_read_set_digest(store, missing_counter) == R1
    counter.status, counter.balance_minor, counter.version = AccountStatus.closed, 0, 2
    with_counter = make_request("z", kind=OperationKind.transfer, account_id="p", counterparty_id="q")
    assert stored_read_set_digest(store, with_counter) == R2


def test_vote_statement_and_signature_match_the_normative_vectors() -> None:
    s1 = vote_statement("c-1", "r-5", 2, R1, Verdict.accepted, None, -700, 700)
    assert s1 == S1_BYTES
    assert vote_signature("k-1", s1) == S1_SIGNATURE == sign("k-1", S1_BYTES)
    s2 = vote_statement("c-1", "r-6", 1, R1, Verdict.rejected, RejectReason.insufficient_funds, 0, 0)
    assert vote_signature("k-1", s2) == S2_SIGNATURE


@pytest.mark.allium("rule-failure.RefuseUnendorsedProposal.5", "rule-success.RefuseUnendorsedProposal")
def test_the_store_accepts_the_vector_signature_as_an_endorsement() -> None:
    """With f = 0 one vote is a quorum: S1's signature under "k-1" over R1 endorses exactly that decision."""
    store = LedgerStore(clock=StepClock(), config=Config(fault_budget=0))
    create_epoch_claim(store, EpochClaim(node_id="n1", expected_epoch=0))
    open_account(store, "p")
    primary = store.account("p")
    assert primary is not None
    primary.balance_minor, primary.version = 1500, 3
    create_replica_key(store, ReplicaKey(replica_id="rk", key="k-1"))
    request = make_request("r-5", client_id="c-1", kind=OperationKind.transfer, account_id="p",
                           counterparty_id="nobody", amount_minor=700)
    proposal = make_proposal(store, request, delta=-700, counter_delta=700, attempt=2, signed=False)
    create_endorsement(store, Endorsement(request=request, attempt=2, replica_id="rk", read_set_digest=R1,
                                          signature=S1_SIGNATURE))
    assert endorsed(store, proposal)
    with pytest.raises(Rejected) as info:
        refuse_unendorsed_proposal(store, proposal)
    assert (info.value.rule, info.value.clause) == ("RefuseUnendorsedProposal", 5)
    other_attempt = make_proposal(store, request, delta=-700, counter_delta=700, attempt=1, signed=False)
    assert not endorsed(store, other_attempt)
    assert refuse_unendorsed_proposal(store, other_attempt) is other_attempt
    assert other_attempt.status is ProposalStatus.conflicted


def endorsement_of(store: LedgerStore, proposal: Proposal, replica_id: str, key: str,
                   read_digest: str | None = None) -> Endorsement:
    """One replica's signed vote for `proposal`, built here from the spec's definitions."""
    request = proposal.request
    digest = stored_read_set_digest(store, request) if read_digest is None else read_digest
    statement = vote_statement(request.client_id, request.request_id, proposal.attempt, digest,
                               proposal.verdict, proposal.reason, proposal.account_delta_minor,
                               proposal.counterparty_delta_minor)
    return Endorsement(request=request, attempt=proposal.attempt, replica_id=replica_id,
                       read_set_digest=digest, signature=sign(key, statement))


def bad_vote(store: LedgerStore, proposal: Proposal, case: str) -> Endorsement:
    """A vote that cannot count, of the kind named by `case`."""
    if case == "no key":
        return endorsement_of(store, proposal, "r-unknown", "some-key")
    if case == "empty key":
        create_replica_key(store, ReplicaKey(replica_id="r-empty", key=""))
        return endorsement_of(store, proposal, "r-empty", "")
    if case == "second vote":
        return endorsement_of(store, proposal, "r0", KEYS["r0"])
    if case == "wrong signature":
        return endorsement_of(store, proposal, "r2", "not-r2s-key")
    assert case == "other read set"
    return endorsement_of(store, proposal, "r2", KEYS["r2"], read_digest=R1)


@pytest.mark.allium("rule-success.RefuseUnendorsedProposal", "rule-failure.RefuseUnendorsedProposal.5")
@pytest.mark.parametrize("case", ["no key", "empty key", "second vote", "wrong signature", "other read set"])
@pytest.mark.parametrize("valid", [2, 1])
def test_a_vote_that_cannot_count_is_skipped_never_fatal(store: LedgerStore, case: str, valid: int) -> None:
    open_account(store, "a")
    provision(store)
    proposal = make_proposal(store, make_request(f"d-{valid}", account_id="a", amount_minor=40), signed=False)
    votes = [bad_vote(store, proposal, case)]
    votes += [endorsement_of(store, proposal, r, KEYS[r]) for r in ("r0", "r1")[:valid]]
    for vote in votes:
        create_endorsement(store, vote)
    assert endorsed(store, proposal) is (valid == store.config.endorsement_quorum)
    settled = submit_proposal(store, proposal)
    if valid == store.config.endorsement_quorum:
        assert settled.status is ProposalStatus.committed
        assert store.account("a").balance_minor == 40  # type: ignore[union-attr]
    else:
        assert settled.status is ProposalStatus.conflicted
        assert store.account("a").balance_minor == 0 and store.outcome_for("client-1", "d-1") is None  # type: ignore[union-attr]


# sound_effect, one condition at a time, through the commit (DetectStaleSnapshot guidance) --------

LIMIT = 1_000  # core config.max_balance_minor in these tests


def limit_store() -> LedgerStore:
    """A store with core's balance limit at LIMIT; accounts a (100), b (0), c (closed), d (1), m (LIMIT - 10)."""
    from ledger.core import Config as CoreConfig
    store = LedgerStore(clock=StepClock(), core=CoreState(config=CoreConfig(max_balance_minor=LIMIT)))
    create_epoch_claim(store, EpochClaim(node_id="n1", expected_epoch=0))
    for account_id in ("a", "b", "c", "d", "m"):
        open_account(store, account_id)
    fund(store, "a", 100)
    fund(store, "d", 1)
    fund(store, "m", LIMIT - 10)
    closing = make_proposal(store, make_request("close-c", kind=OperationKind.close, account_id="c", amount_minor=0),
                            delta=0)
    assert submit_proposal(store, closing).status is ProposalStatus.committed
    return store


D, W, T, O, C = (OperationKind.deposit, OperationKind.withdraw, OperationKind.transfer, OperationKind.open,
                 OperationKind.close)
ACC, REJ = Verdict.accepted, Verdict.rejected
SOUND_CASES = [
    # (case, kind, account, counterparty, amount, delta, counter_delta, verdict, commits)
    ("rejection moving nothing", W, "a", None, 500, 0, 0, REJ, True),
    ("rejection moving only the account", W, "a", None, 500, -5, 0, REJ, False),
    ("rejection moving only the counterparty", T, "a", "b", 500, 0, 5, REJ, False),
    ("open of a new account", O, "new", None, 0, 0, 0, ACC, True),
    ("open of an existing account", O, "a", None, 0, 0, 0, ACC, False),
    ("open with an account delta", O, "new", None, 0, 1, 0, ACC, False),
    ("open with a counterparty delta", O, "new", None, 0, 0, 1, ACC, False),
    ("deposit", D, "a", None, 10, 10, 0, ACC, True),
    ("deposit of 0", D, "a", None, 0, 0, 0, ACC, False),
    ("deposit of 1", D, "a", None, 1, 1, 0, ACC, True),
    ("deposit to an absent account", D, "zzz", None, 10, 10, 0, ACC, False),
    ("deposit to a closed account", D, "c", None, 10, 10, 0, ACC, False),
    ("deposit delta one over", D, "a", None, 10, 11, 0, ACC, False),
    ("deposit delta one under", D, "a", None, 10, 9, 0, ACC, False),
    ("deposit delta of the wrong sign", D, "a", None, 10, -10, 0, ACC, False),
    ("deposit moving a counterparty", D, "a", None, 10, 10, 1, ACC, False),
    ("deposit to exactly the limit", D, "m", None, 10, 10, 0, ACC, True),
    ("deposit one beyond the limit", D, "m", None, 11, 11, 0, ACC, False),
    ("withdraw", W, "a", None, 10, -10, 0, ACC, True),
    ("withdraw of 0", W, "a", None, 0, 0, 0, ACC, False),
    ("withdraw of 1", W, "a", None, 1, -1, 0, ACC, True),
    ("withdraw from an absent account", W, "zzz", None, 10, -10, 0, ACC, False),
    ("withdraw from a closed account", W, "c", None, 10, -10, 0, ACC, False),
    ("withdraw delta one over", W, "a", None, 10, -11, 0, ACC, False),
    ("withdraw delta one under", W, "a", None, 10, -9, 0, ACC, False),
    ("withdraw delta of the wrong sign", W, "a", None, 10, 10, 0, ACC, False),
    ("withdraw moving a counterparty", W, "a", None, 10, -10, 1, ACC, False),
    ("withdraw to exactly 0", W, "a", None, 100, -100, 0, ACC, True),
    ("withdraw one below 0", W, "a", None, 101, -101, 0, ACC, False),
    ("transfer", T, "a", "b", 10, -10, 10, ACC, True),
    ("transfer of 0", T, "a", "b", 0, 0, 0, ACC, False),
    ("transfer of 1", T, "a", "b", 1, -1, 1, ACC, True),
    ("transfer from an absent account", T, "zzz", "b", 10, -10, 10, ACC, False),
    ("transfer from a closed account", T, "c", "b", 10, -10, 10, ACC, False),
    ("transfer delta one over", T, "a", "b", 10, -11, 10, ACC, False),
    ("transfer delta one under", T, "a", "b", 10, -9, 10, ACC, False),
    ("transfer delta of the wrong sign", T, "a", "b", 10, 10, 10, ACC, False),
    ("transfer to the same account", T, "a", "a", 10, -10, 10, ACC, False),
    ("transfer to an absent counterparty", T, "a", "zzz", 10, -10, 10, ACC, False),
    ("transfer to a closed counterparty", T, "a", "c", 10, -10, 10, ACC, False),
    ("transfer counterparty delta one over", T, "a", "b", 10, -10, 11, ACC, False),
    ("transfer counterparty delta one under", T, "a", "b", 10, -10, 9, ACC, False),
    ("transfer counterparty delta of the wrong sign", T, "a", "b", 10, -10, -10, ACC, False),
    ("transfer leaving exactly 0", T, "a", "b", 100, -100, 100, ACC, True),
    ("transfer leaving one below 0", T, "a", "b", 101, -101, 101, ACC, False),
    ("transfer to exactly the limit", T, "a", "m", 10, -10, 10, ACC, True),
    ("transfer one beyond the limit", T, "a", "m", 11, -11, 11, ACC, False),
    ("close of an empty account", C, "b", None, 0, 0, 0, ACC, True),
    ("close with a balance of 1", C, "d", None, 0, 0, 0, ACC, False),
    ("close with an account delta", C, "b", None, 0, -1, 0, ACC, False),
    ("close with a counterparty delta", C, "b", None, 0, 0, 1, ACC, False),
    ("close of a closed account", C, "c", None, 0, 0, 0, ACC, False),
]


@pytest.mark.allium("rule-success.DetectStaleSnapshot", "rule-failure.CommitProposal.4",
                    "rule-failure.DetectStaleSnapshot.5")
@pytest.mark.parametrize(("case", "kind", "account", "counter", "amount", "delta", "counter_delta", "verdict",
                          "commits"), SOUND_CASES, ids=[c[0] for c in SOUND_CASES])
def test_sound_effect_one_condition_at_a_time(case: str, kind: OperationKind, account: str, counter: str | None,
                                              amount: int, delta: int, counter_delta: int, verdict: Verdict,
                                              commits: bool) -> None:
    """Versions match and the decision is endorsed; only the named condition of sound_effect varies."""
    store = limit_store()
    reason = None if verdict is Verdict.accepted else RejectReason.insufficient_funds
    request = make_request("x", kind=kind, account_id=account, counterparty_id=counter, amount_minor=amount)
    proposal = make_proposal(store, request, verdict=verdict, reason=reason, delta=delta, counter_delta=counter_delta)
    assert endorsed(store, proposal)
    before = {a: (acc.balance_minor, acc.version, acc.status) for a, acc in store.accounts.items()}
    assert sound_effect(store, proposal) is commits
    settled = submit_proposal(store, proposal)
    if commits:
        assert settled.status is ProposalStatus.committed
        assert store.outcome_for("client-1", "x") is request.outcome is not None
        check_all_invariants(store.core, seal=True)
    else:
        assert settled.status is ProposalStatus.conflicted
        assert store.outcome_for("client-1", "x") is None and request.outcome is None
        assert {a: (acc.balance_minor, acc.version, acc.status) for a, acc in store.accounts.items()} == before


# The undo of a failed settlement (CommitProposal guidance) ------------------------------------------


def full_state(store: LedgerStore) -> tuple[object, ...]:
    """Everything a failed settlement must leave as it was."""
    return (
        store.journal.next_sequence,
        {a: (acc.status, acc.balance_minor, acc.version, acc.owner, acc.closed_at) for a, acc in store.accounts.items()},
        (store.books.net_inflow_minor, store.books.applied_outcomes, store.books.accepted_outcomes),
        dict(store.outcomes),
        set(store.core.sequences),
        dict(store.positions),
        {p: (c.next_offset, c.advanced_at) for p, c in store.checkpoints.items()},
    )


def failing_settlement(store: LedgerStore, kind: OperationKind) -> Proposal:
    """A sound, endorsed proposal of `kind` on a log request without an offset: it fails when its
    Position is recorded, after its Outcome was inserted and applied."""
    account, counter, amount, delta, counter_delta = {
        OperationKind.open: ("fresh", None, 0, 0, 0),
        OperationKind.deposit: ("a", None, 70, 70, 0),
        OperationKind.transfer: ("a", "b", 30, -30, 30),
    }[kind]
    request = make_request(f"bad-{kind.value}", kind=kind, account_id=account, counterparty_id=counter,
                           amount_minor=amount, channel=Channel.log, partition=0, offset=None)
    return make_proposal(store, request, delta=delta, counter_delta=counter_delta)


@pytest.mark.allium("rule-failure.CommitProposal.4", "rule-success.CommitProposal")
@pytest.mark.parametrize("kind", [OperationKind.open, OperationKind.deposit, OperationKind.transfer])
def test_a_failed_settlement_leaves_nothing_behind(store: LedgerStore, kind: OperationKind) -> None:
    open_account(store, "a")
    open_account(store, "b")
    fund(store, "a", 100)
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    create_position(store, Position(partition=0, offset=0, disposition=Disposition.committed, recorded_at=T0))
    bad = failing_settlement(store, kind)
    assert sound_effect(store, bad) and endorsed(store, bad)
    before = full_state(store)
    sequence = store.journal.next_sequence
    heard: list[object] = []
    store.subscribe(heard.append)
    assert submit_proposal(store, bad) is bad
    assert bad.status is ProposalStatus.conflicted and (bad.sequence, bad.committed_at) == (None, None)
    assert full_state(store) == before
    assert bad.request.outcome is None and store.outcome_for("client-1", bad.request.request_id) is None
    assert store.account("fresh") is None
    assert heard == [ProposalSettled(proposal=bad, outcome=None)]  # nothing of the undone commit
    # The next sound proposal takes the very sequence number the failed one had taken.
    retry_request = dataclasses.replace(bad.request, channel=Channel.rest, partition=None)
    retry = make_proposal(store, retry_request, delta=bad.account_delta_minor,
                          counter_delta=bad.counterparty_delta_minor)
    outcome_count = store.books.applied_outcomes
    assert submit_proposal(store, retry).status is ProposalStatus.committed
    assert retry.sequence == sequence and store.journal.next_sequence == sequence + 1
    assert store.books.applied_outcomes == outcome_count + 1
    assert_invariants(store)


@pytest.mark.allium("rule-success.CommitProposal")
def test_listeners_hear_each_settlement_once_and_only_after_commit(store: LedgerStore) -> None:
    open_account(store, "a")
    heard: list[tuple[object, bool]] = []
    store.subscribe(lambda event: heard.append((event, store._txn is None)))
    fenced = make_proposal(store, make_request("f", account_id="a"), epoch=0)
    good = make_proposal(store, make_request("g", account_id="a"))
    stale = make_proposal(store, make_request("s", account_id="a"))  # on the version before g
    duplicate = make_proposal(store, make_request("g", account_id="a"), attempt=2)
    settled = commit_batch(store, [fenced, good, stale, duplicate])
    assert settled == [fenced, good, stale, duplicate]
    assert [p.status for p in settled] == [ProposalStatus.fenced, ProposalStatus.committed,
                                           ProposalStatus.conflicted, ProposalStatus.duplicate]
    assert all(after_commit for _, after_commit in heard)
    outcome = store.outcome_for("client-1", "g")
    assert [event for event, _ in heard] == [
        ProposalSettled(proposal=fenced, outcome=None),
        OutcomeCommitted(outcome=outcome),  # type: ignore[arg-type]
        ProposalSettled(proposal=good, outcome=outcome),
        ProposalSettled(proposal=stale, outcome=None),
        ProposalSettled(proposal=duplicate, outcome=outcome),
    ]


# Refusals name rule (or entity) and clause --------------------------------------------------------


@pytest.mark.allium("transition-rejected.EpochClaim.status", "transition-terminal.EpochClaim.status",
                    "transition-rejected.Proposal.status", "transition-terminal.Proposal.status",
                    "transition-rejected.DeadLetter.status", "transition-terminal.DeadLetter.status")
def test_undeclared_and_terminal_transitions_name_the_status_and_clause_0(store: LedgerStore) -> None:
    proposal = make_proposal(store, make_request("p"), signed=False)
    letter = dead_letter(3)
    granted = EpochClaim(node_id="n", expected_epoch=0, status=EpochClaimStatus.granted, granted_epoch=1)
    cases = [
        (EpochClaim(node_id="n", expected_epoch=0), EpochClaimStatus.pending, "EpochClaim.status", "undeclared"),
        (granted, EpochClaimStatus.refused, "EpochClaim.status", "terminal"),
        (proposal, ProposalStatus.pending, "Proposal.status", "undeclared"),
        (letter, DeadLetterStatus.held, "DeadLetter.status", "undeclared"),
    ]
    for status in (ProposalStatus.committed, ProposalStatus.duplicate, ProposalStatus.conflicted, ProposalStatus.fenced):
        settled = make_proposal(store, make_request(f"t-{status.value}"), signed=False)
        settled.status = status
        cases.append((settled, ProposalStatus.pending, "Proposal.status", "terminal"))
    acked = DeadLetter(partition=0, offset=1, payload_digest="d", cause="c", attempts=1, quarantined_at=T0,
                       status=DeadLetterStatus.acknowledged, acknowledged_by=responder(), acknowledged_at=T0)
    cases.append((acked, DeadLetterStatus.held, "DeadLetter.status", "terminal"))
    for entity, target, name, kind in cases:
        with pytest.raises(TransitionRejected) as info:
            entity.transition_to(target)  # type: ignore[attr-defined]
        assert (info.value.rule, info.value.clause) == (name, 0)
        assert info.value.why.startswith(kind)
    # Declared moves pass the check.
    EpochClaim(node_id="n", expected_epoch=0).transition_to(EpochClaimStatus.refused)
    proposal.transition_to(ProposalStatus.fenced)
    letter.transition_to(DeadLetterStatus.acknowledged)


@pytest.mark.allium("rule-failure.CommitProposal.1")
def test_a_settled_proposal_submitted_again_is_refused_before_anything_is_written(store: LedgerStore) -> None:
    open_account(store, "a")
    done = submit_proposal(store, make_proposal(store, make_request("d", account_id="a")))
    assert done.status is ProposalStatus.committed
    fresh = make_proposal(store, make_request("e", account_id="a"))
    heard: list[object] = []
    store.subscribe(heard.append)
    before = (list(store.proposals), full_state(store))
    with pytest.raises(Rejected) as info:
        submit_proposal(store, done)
    assert (info.value.rule, info.value.clause) == ("Proposal.created", 0)
    with pytest.raises(Rejected) as info:
        commit_batch(store, [fresh, done])
    assert (info.value.rule, info.value.clause) == ("Proposal.created", 0)
    assert (list(store.proposals), full_state(store)) == before and heard == []
    assert fresh.status is ProposalStatus.pending


@pytest.mark.allium("rule-success.AdvanceCheckpoint")
def test_second_checkpoint_and_second_replica_key_are_refused_naming_their_creation(store: LedgerStore) -> None:
    first = Checkpoint(partition=4, next_offset=7, advanced_at=T0)
    assert create_checkpoint(store, first) is first
    with pytest.raises(Rejected) as info:
        create_checkpoint(store, Checkpoint(partition=4, next_offset=0, advanced_at=T0))
    assert (info.value.rule, info.value.clause) == ("Checkpoint.created", 0)
    assert store.checkpoint(4) is first and first.next_offset == 7
    key = ReplicaKey(replica_id="r9", key="k9")
    assert create_replica_key(store, key) is key
    with pytest.raises(Rejected) as info:
        create_replica_key(store, ReplicaKey(replica_id="r9", key="other"))
    assert (info.value.rule, info.value.clause) == ("ReplicaKey.created", 0)
    assert store.replica_keys["r9"] is key


@pytest.mark.allium("invariant.OnePositionPerOffset")
def test_a_second_position_for_an_offset_is_refused_naming_the_invariant(store: LedgerStore) -> None:
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    first = Position(partition=0, offset=2, disposition=Disposition.committed, recorded_at=T0)
    heard: list[object] = []
    store.subscribe(heard.append)
    assert create_position(store, first) is first
    assert heard == [PositionRecorded(position=first)]
    with pytest.raises(InvariantViolation) as info:
        create_position(store, Position(partition=0, offset=2, disposition=Disposition.duplicate, recorded_at=T0))
    assert "OnePositionPerOffset" in str(info.value)
    assert store.position(0, 2) is first and len(store.positions) == 1 and len(heard) == 1
    # The same offset on another partition is another position.
    other = create_position(store, Position(partition=1, offset=2, disposition=Disposition.duplicate, recorded_at=T0))
    assert store.position(1, 2) is other


@pytest.mark.allium("when-presence.Proposal.sequence", "when-presence.Proposal.committed_at",
                    "when-presence.DeadLetter.acknowledged_by", "when-presence.DeadLetter.acknowledged_at")
def test_entities_whose_when_fields_contradict_their_status_are_refused_when_built(store: LedgerStore) -> None:
    base = make_proposal(store, make_request("w"), signed=False)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Proposal)}
    for status, sequence, committed_at in [
        (ProposalStatus.committed, 1, None), (ProposalStatus.committed, None, T0),
        (ProposalStatus.pending, 1, None), (ProposalStatus.conflicted, None, T0),
    ]:
        with pytest.raises(ValueError):
            Proposal(**{**fields, "status": status, "sequence": sequence, "committed_at": committed_at})
    built = Proposal(**{**fields, "status": ProposalStatus.committed, "sequence": 1, "committed_at": T0})
    assert (built.sequence, built.committed_at) == (1, T0)
    letter = {"partition": 0, "offset": 1, "payload_digest": "d", "cause": "c", "attempts": 1, "quarantined_at": T0}
    for status, by, at in [
        (DeadLetterStatus.acknowledged, None, T0), (DeadLetterStatus.acknowledged, responder(), None),
        (DeadLetterStatus.held, responder(), None), (DeadLetterStatus.held, None, T0),
    ]:
        with pytest.raises(ValueError):
            DeadLetter(**letter, status=status, acknowledged_by=by, acknowledged_at=at)  # type: ignore[arg-type]


# Invariant checks name exactly the invariant that is broken ---------------------------------------


def named(store: LedgerStore) -> set[str]:
    """The invariant names check_invariants reports (empty when every invariant holds)."""
    try:
        check_invariants(store)
    except InvariantViolation as violation:
        return {name for name in INVARIANTS if name in str(violation)}
    return set()


def populated_store() -> LedgerStore:
    store = fresh_store()
    run_every_rule(store)
    assert named(store) == set()
    return store


def committed_proposals(store: LedgerStore) -> list[Proposal]:
    return [p for p in store.proposals if p.status is ProposalStatus.committed]


BREAKS = {
    "OneGrantPerEpoch": lambda s: s.grants.append(EpochGrant(epoch=s.journal.epoch, node_id="x", granted_at=T0)),
    "JournalHoldsLatestEpoch": lambda s: s.grants.append(EpochGrant(epoch=s.journal.epoch + 1, node_id="x",
                                                                    granted_at=T0)),
    "CommitsCarryGrantedEpochs": lambda s: setattr(committed_proposals(s)[0], "epoch", s.journal.epoch + 1),
    "CommittedOutcomesNeverChange": lambda s: setattr(committed_proposals(s)[0].request.outcome, "digest", "x"),
    "CommittedSequencesBelowNext": lambda s: setattr(committed_proposals(s)[-1], "sequence", s.journal.next_sequence),
    "OnePositionPerOffset": lambda s: s.positions.__setitem__((0, 1), Position(
        partition=0, offset=0, disposition=Disposition.duplicate, recorded_at=T0)),
    "DeadLettersHavePositions": lambda s: s.dead_letters.append(dead_letter(50)),
    "EndorsementQuorumOutnumbersFaults": lambda s: setattr(s, "config", Config(fault_budget=2, endorsement_quorum=2)),
}


def assert_breaking_reports_only(name: str) -> None:
    """Break invariant `name` alone in a store every rule has run on: exactly its name is reported."""
    store = populated_store()
    BREAKS[name](store)
    assert named(store) == {name}
    assert [n for n, holds in INVARIANTS.items() if not holds(store)] == [name]


@pytest.mark.allium("invariant.OneGrantPerEpoch")
def test_breaking_one_grant_per_epoch_alone_reports_it() -> None:
    assert_breaking_reports_only("OneGrantPerEpoch")


@pytest.mark.allium("invariant.JournalHoldsLatestEpoch")
def test_breaking_journal_holds_latest_epoch_alone_reports_it() -> None:
    assert_breaking_reports_only("JournalHoldsLatestEpoch")


@pytest.mark.allium("invariant.CommitsCarryGrantedEpochs")
def test_breaking_commits_carry_granted_epochs_alone_reports_it() -> None:
    assert_breaking_reports_only("CommitsCarryGrantedEpochs")


@pytest.mark.allium("invariant.CommittedOutcomesNeverChange")
def test_breaking_committed_outcomes_never_change_alone_reports_it() -> None:
    assert_breaking_reports_only("CommittedOutcomesNeverChange")


@pytest.mark.allium("invariant.CommittedSequencesBelowNext")
def test_breaking_committed_sequences_below_next_alone_reports_it() -> None:
    assert_breaking_reports_only("CommittedSequencesBelowNext")


@pytest.mark.allium("invariant.OnePositionPerOffset")
def test_breaking_one_position_per_offset_alone_reports_it() -> None:
    assert_breaking_reports_only("OnePositionPerOffset")


@pytest.mark.allium("invariant.DeadLettersHavePositions")
def test_breaking_dead_letters_have_positions_alone_reports_it() -> None:
    assert_breaking_reports_only("DeadLettersHavePositions")


@pytest.mark.allium("invariant.EndorsementQuorumOutnumbersFaults")
def test_breaking_endorsement_quorum_outnumbers_faults_alone_reports_it() -> None:
    assert_breaking_reports_only("EndorsementQuorumOutnumbersFaults")


@pytest.mark.allium("invariant.CommittedSequencesBelowNext", "invariant.OnePositionPerOffset",
                    "invariant.CommitsCarryGrantedEpochs", "invariant.JournalHoldsLatestEpoch",
                    "invariant.EndorsementQuorumOutnumbersFaults")
def test_invariants_hold_at_their_edges_and_the_combined_check_names_every_broken_one() -> None:
    store = populated_store()
    last = committed_proposals(store)[-1]
    last.sequence = store.journal.next_sequence - 1  # the greatest sequence still below next
    committed_proposals(store)[0].epoch = store.journal.epoch  # a commit in the current epoch
    store.config = Config(fault_budget=2, endorsement_quorum=3)  # exactly f + 1
    assert store.grant_for(store.journal.epoch) is not None  # a grant of exactly journal.epoch
    assert INVARIANTS["JournalHoldsLatestEpoch"](store) and INVARIANTS["CommitsCarryGrantedEpochs"](store)
    assert named(store) == set()
    store.config = Config(fault_budget=-1, endorsement_quorum=5)  # no negative fault budget
    assert named(store) == {"EndorsementQuorumOutnumbersFaults"}
    store.config = Config()
    for name in ("CommittedSequencesBelowNext", "OnePositionPerOffset", "DeadLettersHavePositions"):
        BREAKS[name](store)
    assert named(store) == {"CommittedSequencesBelowNext", "OnePositionPerOffset", "DeadLettersHavePositions"}


@pytest.mark.allium("invariant.EndorsementQuorumOutnumbersFaults")
def test_the_start_up_refusal_names_the_config_and_the_least_quorum() -> None:
    with pytest.raises(InvariantViolation) as info:
        LedgerStore(clock=StepClock(), config=Config(fault_budget=2, endorsement_quorum=2))
    message = str(info.value)
    assert "EndorsementQuorumOutnumbersFaults" in message
    assert "fault_budget=2" in message and "endorsement_quorum=2" in message and "at least 3" in message
    with pytest.raises(InvariantViolation):
        check_endorsement_quorum(Config(fault_budget=-1, endorsement_quorum=0))
    check_endorsement_quorum(Config(fault_budget=2, endorsement_quorum=3))
    assert LedgerStore(clock=StepClock(), config=Config(fault_budget=2)).config.endorsement_quorum == 3


# Every rule's success returns what it settled ------------------------------------------------------


@pytest.mark.allium("rule-success.GrantEpoch", "rule-success.RefuseEpoch")
def test_epoch_rules_return_the_grant_and_the_claim_and_keep_every_claim(store: LedgerStore) -> None:
    winner = EpochClaim(node_id="n2", expected_epoch=1)
    store.claims.append(winner)
    grant = grant_epoch(store, winner)
    assert isinstance(grant, EpochGrant) and store.grant_for(2) is grant
    assert (grant.epoch, grant.node_id, winner.granted_epoch) == (2, "n2", 2)
    loser = EpochClaim(node_id="n3", expected_epoch=1)
    assert refuse_epoch(store, loser) is loser and loser.status is EpochClaimStatus.refused
    settled = [create_epoch_claim(store, EpochClaim(node_id=f"n{i}", expected_epoch=2)) for i in (4, 5)]
    assert [c.status for c in settled] == [EpochClaimStatus.granted, EpochClaimStatus.refused]
    assert all(c in store.claims for c in settled) and len(store.claims) == 4
    assert [c.status for c in store.claims[1:]] == [EpochClaimStatus.granted, EpochClaimStatus.granted,
                                                     EpochClaimStatus.refused]


@pytest.mark.allium("rule-success.FenceStaleProposal", "rule-success.DetectDuplicateProposal",
                    "rule-success.RefuseUnendorsedProposal", "rule-success.DetectStaleSnapshot",
                    "rule-success.CommitProposal")
def test_commit_rules_return_what_they_settled(store: LedgerStore) -> None:
    open_account(store, "a")
    heard: list[object] = []
    store.subscribe(heard.append)
    fenced = make_proposal(store, make_request("f", account_id="a"), epoch=0)
    assert fence_stale_proposal(store, fenced) is fenced and fenced.status is ProposalStatus.fenced
    good = make_proposal(store, make_request("g", account_id="a"))
    outcome = commit_proposal(store, good)
    assert isinstance(outcome, Outcome) and store.outcome_for("client-1", "g") is outcome
    assert outcome.sequence == good.sequence and good.request.outcome is outcome
    again = make_proposal(store, make_request("g", account_id="a"), attempt=2)
    assert detect_duplicate_proposal(store, again) is again and again.status is ProposalStatus.duplicate
    unsigned = make_proposal(store, make_request("u", account_id="a"), signed=False)
    assert refuse_unendorsed_proposal(store, unsigned) is unsigned and unsigned.status is ProposalStatus.conflicted
    stale = make_proposal(store, make_request("s", account_id="a"), primary_version=1)
    assert detect_stale_snapshot(store, stale) is stale and stale.status is ProposalStatus.conflicted
    assert heard == [
        ProposalSettled(proposal=fenced, outcome=None),
        OutcomeCommitted(outcome=outcome),
        ProposalSettled(proposal=good, outcome=outcome),
        ProposalSettled(proposal=again, outcome=outcome),
        ProposalSettled(proposal=unsigned, outcome=None),
        ProposalSettled(proposal=stale, outcome=None),
    ]


@pytest.mark.allium("rule-success.AdvanceCheckpoint", "rule-success.RecordDeadLetterPosition",
                    "rule-success.AcknowledgeDeadLetter", "rule-entity-creation.RecordDeadLetterPosition.1")
def test_position_rules_return_the_checkpoint_the_position_and_the_letter(store: LedgerStore) -> None:
    checkpoint = create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    heard: list[object] = []
    store.subscribe(heard.append)
    later = create_position(store, Position(partition=0, offset=1, disposition=Disposition.committed, recorded_at=T0))
    assert checkpoint.next_offset == 0 and heard == [PositionRecorded(position=later)]
    letter = dead_letter(0)
    store.dead_letters.append(letter)
    position = record_dead_letter_position(store, letter)
    assert store.position(0, 0) is position
    assert (position.partition, position.offset, position.disposition, position.recorded_at) == (
        0, 0, Disposition.quarantined, letter.quarantined_at)
    assert checkpoint.next_offset == 2
    assert heard[1:] == [PositionRecorded(position=position), CheckpointAdvanced(checkpoint=checkpoint)]
    store.positions[(0, 2)] = Position(partition=0, offset=2, disposition=Disposition.committed, recorded_at=T0)
    returned = advance_checkpoint(store, store.positions[(0, 2)])
    assert returned is checkpoint and checkpoint.next_offset == 3
    acked = acknowledge_dead_letter(store, responder("ann"), letter)
    assert acked is letter and letter.acknowledged_by.name == "ann"  # type: ignore[union-attr]
    assert heard[-1] == DeadLetterAcknowledged(letter=letter)


@pytest.mark.allium("rule-success.RecordDeadLetterPosition")
def test_creating_a_dead_letter_is_heard_with_its_position_and_checkpoint(store: LedgerStore) -> None:
    checkpoint = create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    heard: list[object] = []
    store.subscribe(heard.append)
    letter = dead_letter(0)
    assert create_dead_letter(store, letter) is letter and store.held_dead_letters() == [letter]
    position = store.position(0, 0)
    assert position is not None and position.disposition is Disposition.quarantined
    assert heard == [DeadLetterRecorded(letter=letter), PositionRecorded(position=position),
                     CheckpointAdvanced(checkpoint=checkpoint)]


# Surfaces refuse as a whole and name themselves ------------------------------------------------------


@pytest.mark.allium("surface-actor.DeadLetterQueue", "surface-actor.DeadLetterHistory")
def test_surfaces_refuse_non_responders_on_an_empty_store(store: LedgerStore) -> None:
    for surface in (DeadLetterQueue, DeadLetterHistory):
        with pytest.raises(AccessDenied) as info:
            surface.open(store, observer())
        assert (info.value.rule, info.value.clause) == (surface.__name__, 0)
        assert surface.open(store, responder()) == []


@pytest.mark.allium("surface-provides.DeadLetterQueue", "surface-actor.DeadLetterQueue")
def test_acknowledging_a_letter_no_longer_held_is_refused_by_the_surface(store: LedgerStore) -> None:
    letter = create_dead_letter(store, dead_letter(0))
    first = DeadLetterQueue(store, responder("ann"), letter)
    second = DeadLetterQueue(store, responder("bob"), letter)
    with pytest.raises(AccessDenied) as denied:
        DeadLetterQueue(store, observer(), letter)
    assert (denied.value.rule, denied.value.clause) == ("DeadLetterQueue", 0)
    assert first.acknowledge() is letter
    acknowledged_at = letter.acknowledged_at
    heard: list[object] = []
    store.subscribe(heard.append)
    assert second.provides() == ()
    with pytest.raises(Rejected) as info:
        second.acknowledge()
    assert (info.value.rule, info.value.clause) == ("DeadLetterQueue", 0)
    assert letter.acknowledged_by.name == "ann" and letter.acknowledged_at == acknowledged_at  # type: ignore[union-attr]
    assert heard == []
    with pytest.raises(Rejected) as info:
        DeadLetterQueue(store, responder("cy"), letter)
    assert (info.value.rule, info.value.clause) == ("DeadLetterQueue", 0)
    history = DeadLetterHistory.open(store, responder("cy"))
    assert [h.letter for h in history] == [letter]
    with pytest.raises(AccessDenied) as denied:
        DeadLetterHistory(store, observer(), letter)
    assert (denied.value.rule, denied.value.clause) == ("DeadLetterHistory", 0)
    held = create_dead_letter(store, dead_letter(1))
    with pytest.raises(Rejected) as info:
        DeadLetterHistory(store, responder("cy"), held)  # context letter: acknowledged ones only
    assert (info.value.rule, info.value.clause) == ("DeadLetterHistory", 0)


# A transaction is all or nothing (CommitProposal guidance) -------------------------------------------


@pytest.mark.allium("rule-success.CommitProposal")
def test_a_commit_that_fails_outside_a_batch_is_undone_as_a_whole(store: LedgerStore) -> None:
    """commit_proposal called on its own: its effects happen all together or not at all."""
    open_account(store, "a")
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    bad = failing_settlement(store, OperationKind.deposit)
    before = full_state(store)
    heard: list[object] = []
    store.subscribe(heard.append)
    with pytest.raises(ValueError):
        commit_proposal(store, bad)
    assert full_state(store) == before and heard == []
    assert bad.status is ProposalStatus.pending and (bad.sequence, bad.committed_at) == (None, None)
    assert bad.request.outcome is None


class FsyncFailingStore(LedgerStore):
    """A store whose next outermost transaction fails as it commits, after every write was made."""

    fail_commit = False

    @contextmanager
    def transaction(self):  # type: ignore[override]
        if self._txn is not None:
            with super().transaction() as txn:
                yield txn
            return
        with super().transaction() as txn:
            yield txn
            if self.fail_commit:
                self.fail_commit = False
                raise ConnectionError("fsync failed")


@pytest.mark.allium("rule-success.CommitProposal", "rule-success.RecordDeadLetterPosition")
def test_a_flush_that_fails_at_commit_undoes_the_batch_and_hands_it_back() -> None:
    store = FsyncFailingStore(clock=StepClock())
    create_epoch_claim(store, EpochClaim(node_id="n1", expected_epoch=0))
    create_checkpoint(store, Checkpoint(partition=0, next_offset=0, advanced_at=T0))
    open_account(store, "a")
    committer = GroupCommitter(store)
    batch = [
        make_proposal(store, log_request("o-n", 0, kind=OperationKind.open, account_id="n", amount_minor=0), delta=0),
        make_proposal(store, log_request("d-a", 1, account_id="a", amount_minor=25)),
    ]
    for i, proposal in enumerate(batch):
        committer.offer(proposal, now_micros=i)
    before = (full_state(store), list(store.proposals))
    heard: list[object] = []
    store.subscribe(heard.append)
    store.fail_commit = True
    with pytest.raises(ConnectionError):
        committer.flush()
    assert (full_state(store), list(store.proposals)) == before and heard == []
    assert store.account("n") is None and store.position(0, 0) is None
    assert committer.pending == batch and all(p.status is ProposalStatus.pending for p in batch)
    assert committer.flush() == batch
    assert [p.status for p in batch] == [ProposalStatus.committed, ProposalStatus.committed]
    assert [p.sequence for p in batch] == [before[0][0], before[0][0] + 1]  # type: ignore[index]
    assert store.checkpoint(0).next_offset == 2  # type: ignore[union-attr]
    # A dead letter created in a transaction that fails is not held either.
    store.fail_commit = True
    with pytest.raises(ConnectionError):
        create_dead_letter(store, dead_letter(2))
    assert store.dead_letters == [] and store.position(0, 2) is None
    assert_invariants(store)


@pytest.mark.allium("entity-fields.EpochClaim", "entity-fields.Proposal", "entity-fields.DeadLetter")
def test_statuses_read_back_as_text_become_their_enum(store: LedgerStore) -> None:
    """A store adapter rebuilds entities from text columns: the status field is still the enum."""
    claim = EpochClaim(node_id="n", expected_epoch=0, status="refused")  # type: ignore[arg-type]
    assert claim.status is EpochClaimStatus.refused
    base = make_proposal(store, make_request("txt"), signed=False)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Proposal)}
    proposal = Proposal(**{**fields, "status": "fenced"})
    assert proposal.status is ProposalStatus.fenced and proposal.is_refused
    letter = DeadLetter(partition=0, offset=1, payload_digest="d", cause="c", attempts=1, quarantined_at=T0,
                        status="held")  # type: ignore[arg-type]
    assert letter.status is DeadLetterStatus.held


@pytest.mark.allium("rule-success.CommitProposal")
def test_the_linger_counts_from_the_first_queued_proposal_and_is_inclusive() -> None:
    store = LedgerStore(clock=StepClock(), config=Config(commit_batch_max=3, commit_linger_micros=2_000))
    create_epoch_claim(store, EpochClaim(node_id="n1", expected_epoch=0))
    committer = GroupCommitter(store)
    assert committer.poll(10_000) == [] and committer.flush() == []  # nothing queued, nothing settled
    p1 = make_proposal(store, make_request("o1", kind=OperationKind.open, account_id="a"), delta=0)
    p2 = make_proposal(store, make_request("o2", kind=OperationKind.open, account_id="b"), delta=0)
    assert committer.offer(p1, 1_000) == [] and committer.offer(p2, 2_500) == []
    assert committer.poll(2_999) == [] and p1.status is ProposalStatus.pending
    assert committer.poll(3_000) == [p1, p2]  # p1 has waited exactly commit_linger_micros
    assert (p1.status, p2.status) == (ProposalStatus.committed, ProposalStatus.committed)


@pytest.mark.allium("rule-success.CommitProposal")
def test_each_batch_of_commit_batch_max_is_its_own_transaction() -> None:
    """Listeners hear a batch once it commits, before the next batch settles."""
    store = LedgerStore(clock=StepClock(), config=Config(commit_batch_max=1))
    create_epoch_claim(store, EpochClaim(node_id="n1", expected_epoch=0))
    p1 = make_proposal(store, make_request("o1", kind=OperationKind.open, account_id="a"), delta=0)
    p2 = make_proposal(store, make_request("o2", kind=OperationKind.open, account_id="b"), delta=0)
    seen: list[tuple[str, ProposalStatus]] = []
    store.subscribe(lambda event: seen.append((event.proposal.request.request_id, p2.status))
                    if isinstance(event, ProposalSettled) else None)
    assert commit_batch(store, [p1, p2]) == [p1, p2]
    assert seen == [("o1", ProposalStatus.pending), ("o2", ProposalStatus.committed)]
