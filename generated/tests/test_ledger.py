"""Tests for unit `ledger` (ledger.allium): epochs, commit, positions, checkpoints, dead letters."""

from __future__ import annotations

import dataclasses
import hashlib
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
    DeadLetterHistory,
    DeadLetterQueue,
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
