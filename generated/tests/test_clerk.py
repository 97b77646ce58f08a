"""Tests for unit `clerk` (clerk.allium): rounds, votes, quorum and fencing."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ledger.clerk import (
    REPLICA_TRANSITIONS,
    ROUND_TRANSITIONS,
    Clerk,
    ConformanceHarness,
    Config,
    DispatchRound,
    DissentDetected,
    QuorumUnavailable,
    Replica,
    ReplicaFenced,
    ReplicaMaintenance,
    ReplicaStatus,
    Round,
    RoundDiverged,
    RoundInspection,
    RoundStatus,
    Vote,
    ConformanceCheck,
    ConformanceVector,
    check_commits_have_quorum,
    check_one_round_per_attempt,
    check_one_vote_per_replica_per_round,
    check_quorum_outnumbers_faults,
    check_replica_per_node,
    decision_digest,
    decision_digest_of,
    is_replica_host,
    is_replica_responder,
    quarantine_digest,
    evaluated_read_digest,
    vote_statement_of,
    fault_digest,
    round_vector_id,
)
from ledger.cluster import Node, NodeStatus
from ledger.core import (
    AccessDenied,
    AccountStatus,
    Channel,
    InvariantViolation,
    OperationKind,
    Operator,
    OperatorRole,
    Rejected,
    RejectReason,
    Request,
    TransitionRejected,
    Verdict,
)
from ledger.ledger import (
    EpochClaim,
    EpochGrant,
    Journal,
    LedgerStore,
    Proposal,
    ProposalStatus,
    ReplicaKey,
    create_epoch_claim,
    create_replica_key,
    read_set_digest,
    vote_signature,
)
from ledger.registrar import ReadSet, ReadSetStatus, ReadSource

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)


# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------


class FakeClock:
    """Injected clock: time moves only when a test says so."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now = self.now + delta


def make_request(request_id: str = "req-1", *, amount: int = 500, kind: OperationKind = OperationKind.deposit) -> Request:
    return Request(
        request_id=request_id,
        client_id="client-1",
        kind=kind,
        account_id="acc-1",
        counterparty_id=None,
        owner=None,
        amount_minor=amount,
        channel=Channel.rest,
        fingerprint="f" * 64,
        received_at=T0,
    )


def make_read(request: Request | None = None, *, attempt: int = 1, epoch: int = 1, ready: bool = True) -> ReadSet:
    read = ReadSet(request=request or make_request(), attempt=attempt, epoch=epoch, requested_at=T0)
    if ready:
        read.status = ReadSetStatus.ready
        read.source = ReadSource.storage
        read.primary_present = True
        read.primary_status = AccountStatus.active
        read.primary_balance_minor = 1_000
        read.primary_version = 7
        read.counter_present = False
        read.counter_status = None
        read.counter_balance_minor = 0
        read.counter_version = 0
        read.ready_at = T0
    return read


def make_node(node_id: str, status: NodeStatus = NodeStatus.backup) -> Node:
    return Node(node_id=node_id, status=status, last_heartbeat_at=T0)


RESPONDER = Operator(name="rita", role=OperatorRole.responder)
OBSERVER = Operator(name="otto", role=OperatorRole.observer)


# A short conformance run keeps these tests fast; test_config_defaults checks
# the real default (10,000) and test_a_full_default_conformance_run runs it.
RUN = 3


class World:
    """A Clerk with `active` active replicas and `recovering` recovering ones.

    Replicas enter service the only way the spec allows: by reproducing
    conformance_vectors recorded evaluations, compared by the Clerk.
    """

    def __init__(self, active: int = 3, recovering: int = 0, config: Config | None = None) -> None:
        config = config if config is not None else Config(conformance_vectors=RUN)
        self.clock = FakeClock()
        self.journal = Journal(epoch=1)
        self.heard: list[object] = []
        self.submitted: list[Proposal] = []
        self.dispatched: list[Any] = []
        self.clerk = Clerk(
            self.journal,
            clock=self.clock,
            config=config,
            on_evaluation=self.dispatched.append,
            on_proposal=self.submitted.append,
        )
        self.clerk.subscribe(self.heard.append)
        self.replicas: list[Replica] = []
        self.corpus = [self.clerk.add_conformance_vector(f"seed-{k}", f"digest-{k}")
                       for k in range(self.clerk.config.conformance_vectors)]
        for i in range(active + recovering):
            replica = self.clerk.register_replica(make_node(f"node-{i + 1}"))
            if i < active:
                self.qualify(replica)
            self.replicas.append(replica)

    def qualify(self, replica: Replica) -> Replica:
        """The replica reproduces every seeded recorded evaluation; the Clerk compares."""
        for vector in self.corpus:
            self.clerk.conformance_digest(replica, vector, vector.expected_digest)
        assert replica.status == ReplicaStatus.active
        return replica

    def open(self, request_id: str = "req-1", **kw: Any) -> Round:
        return self.clerk.open_round(make_read(make_request(request_id), **kw))

    def evaluation_of(self, round: Round, replica: Replica) -> Any:
        return self.clerk.find_evaluation(round.request, round.attempt, replica.replica_id)

    def vote(self, round: Round, replica: Replica, delta: int = 500, **kw: Any) -> Vote:
        return self.clerk.cast_vote(decide(self.evaluation_of(round, replica), delta=delta, **kw))


def decide(
    evaluation: Any,
    *,
    delta: int = 500,
    verdict: Verdict = Verdict.accepted,
    reason: RejectReason | None = None,
) -> Any:
    """Play the replica's Arbiter: mark an Evaluation decided with a Decision."""
    status = evaluation.status
    evaluation.status = type(status)("decided") if isinstance(status, enum.Enum) else "decided"
    evaluation.verdict = verdict
    evaluation.reason = reason
    evaluation.account_delta_minor = delta if verdict == Verdict.accepted else 0
    evaluation.counterparty_delta_minor = 0
    return evaluation


def state(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def commit(proposal: Proposal, now: datetime) -> Proposal:
    """Play the Ledger: the proposal commits."""
    proposal.status = ProposalStatus.committed
    proposal.sequence = 1
    proposal.committed_at = now
    return proposal


def agreed_round(world: World) -> tuple[Round, Proposal]:
    round = world.open()
    world.vote(round, world.replicas[0])
    world.vote(round, world.replicas[1])
    assert round.status == RoundStatus.agreed
    return round, world.submitted[-1]


# ---------------------------------------------------------------------------
# Config and invariants of the fault model
# ---------------------------------------------------------------------------


@pytest.mark.allium(
    "config-default.fault_budget",
    "config-default.replica_count",
    "config-default.commit_quorum",
    "config-default.round_timeout",
    "config-default.max_attempts",
    "config-default.conformance_vectors",
)
def test_config_defaults() -> None:
    cfg = Config()
    assert cfg.fault_budget == 1
    assert cfg.replica_count == 3  # 2 * fault_budget + 1
    assert cfg.commit_quorum == 2  # fault_budget + 1
    assert cfg.round_timeout == timedelta(seconds=1)
    assert cfg.max_attempts == 3
    assert cfg.conformance_vectors == 10000
    bigger = Config(fault_budget=2)
    assert (bigger.replica_count, bigger.commit_quorum) == (5, 3)


@pytest.mark.allium("invariant.QuorumOutnumbersFaults")
def test_quorum_outnumbers_faults() -> None:
    for f in range(0, 5):
        check_quorum_outnumbers_faults(Config(fault_budget=f))
    check_quorum_outnumbers_faults(Config(fault_budget=1, replica_count=4, commit_quorum=3))
    unsafe = [
        Config(fault_budget=1, commit_quorum=1),  # one lying replica commits alone
        Config(fault_budget=1, replica_count=2),  # fewer than 2f + 1 replicas
        Config(fault_budget=2, replica_count=5, commit_quorum=2),  # quorum below f + 1
        Config(fault_budget=1, replica_count=3, commit_quorum=3),  # no quorum with f lost
        Config(fault_budget=-1, replica_count=1, commit_quorum=1),
    ]
    for config in unsafe:
        with pytest.raises(InvariantViolation, match=r"^QuorumOutnumbersFaults: "):
            check_quorum_outnumbers_faults(config)


@pytest.mark.allium("invariant.QuorumOutnumbersFaults")
def test_the_clerk_refuses_to_start_on_an_unsafe_config() -> None:
    """Settled decision: the arithmetic is checked at start-up, with the values named."""
    with pytest.raises(InvariantViolation, match="commit_quorum=1"):
        Clerk(Journal(epoch=1), clock=FakeClock(), config=Config(fault_budget=1, commit_quorum=1))
    with pytest.raises(InvariantViolation, match="replica_count=2"):
        Clerk(Journal(epoch=1), clock=FakeClock(), config=Config(fault_budget=1, replica_count=2))
    started = Clerk(Journal(epoch=1), clock=FakeClock(), config=Config(fault_budget=2))
    assert started.config.commit_quorum == 3
    check_quorum_outnumbers_faults(started.config)  # QuorumOutnumbersFaults holds for what started


# ---------------------------------------------------------------------------
# Entities
# ---------------------------------------------------------------------------


@pytest.mark.allium("entity-fields.Replica")
def test_replica_fields() -> None:
    world = World(active=1)
    replica = world.replicas[0]
    names = {f.name for f in dataclasses.fields(Replica)}
    assert names == {"replica_id", "node", "dissents", "recoveries", "conformance_passed", "status",
                     "fenced_at", "recovery_started_at"}
    assert replica.recoveries == 1 and replica.conformance_passed == RUN
    assert isinstance(replica.replica_id, str) and replica.replica_id == "node-1"
    assert isinstance(replica.node, Node)
    assert isinstance(replica.dissents, int)
    assert isinstance(replica.status, ReplicaStatus)
    assert replica.fenced_at is None and replica.recovery_started_at is None


@pytest.mark.allium("derived.Replica.is_eligible")
def test_replica_is_eligible() -> None:
    world = World(active=1, recovering=1)
    active, recovering = world.replicas
    assert active.is_eligible is True
    assert recovering.is_eligible is False  # not active
    active.node.status = NodeStatus.down
    assert active.is_eligible is False  # node not live
    active.node.status = NodeStatus.primary
    assert active.is_eligible is True
    assert world.clerk.eligible_replicas() == [active]


@pytest.mark.allium("entity-fields.Round", "entity-relationship.Round.votes", "derived.Round.support")
def test_round_fields_votes_and_support() -> None:
    world = World(active=3)
    round = world.open()
    names = {f.name for f in dataclasses.fields(Round)}
    assert {"request", "read_set", "attempt", "epoch", "opened_at", "deadline", "stalled", "status",
            "agreed_digest", "committed_at", "votes"} <= names
    assert isinstance(round.request, Request) and isinstance(round.read_set, ReadSet)
    assert isinstance(round.attempt, int) and isinstance(round.epoch, int)
    assert isinstance(round.opened_at, datetime) and isinstance(round.deadline, datetime)
    assert isinstance(round.stalled, bool) and isinstance(round.status, RoundStatus)
    v1 = world.vote(round, world.replicas[0], delta=500)
    v2 = world.vote(round, world.replicas[2], delta=999)
    # votes navigates to exactly the votes whose round is this round
    other = world.open("req-2")
    world.vote(other, world.replicas[0])
    assert round.votes == [v1, v2]
    assert all(v.round is round for v in round.votes)
    assert round.support(v1.digest) == [v1]
    assert round.support(v2.digest) == [v2]
    assert round.support("nope") == []
    v3 = world.vote(round, world.replicas[1], delta=500)
    assert round.support(v1.digest) == [v1, v3]


@pytest.mark.allium("entity-fields.Vote", "entity-optional.Vote.reason")
def test_vote_fields_and_optional_reason() -> None:
    world = World(active=3)
    round = world.open()
    accepted = world.vote(round, world.replicas[0])
    names = {f.name for f in dataclasses.fields(Vote)}
    assert names == {"round", "replica", "digest", "read_set_digest", "signature", "verdict", "reason",
                     "account_delta_minor", "counterparty_delta_minor", "cast_at"}
    assert accepted.round is round and accepted.replica is world.replicas[0]
    assert isinstance(accepted.digest, str) and len(accepted.digest) == 64
    assert accepted.verdict == Verdict.accepted and accepted.reason is None
    assert isinstance(accepted.account_delta_minor, int) and isinstance(accepted.counterparty_delta_minor, int)
    assert accepted.cast_at == T0
    rejected = world.vote(round, world.replicas[1], verdict=Verdict.rejected, reason=RejectReason.balance_limit)
    assert rejected.reason == RejectReason.balance_limit
    assert rejected.digest != accepted.digest  # the reason is part of the digest


@pytest.mark.allium("when-presence.Replica.fenced_at", "when-presence.Replica.recovery_started_at")
def test_replica_when_presence_through_lifecycle() -> None:
    world = World(active=0, recovering=1)
    replica = world.replicas[0]
    clerk = world.clerk
    # recovering: recovery_started_at present, fenced_at absent
    assert replica.status == ReplicaStatus.recovering
    assert replica.recovery_started_at == T0 and replica.fenced_at is None
    replica.check_when_presence()
    clerk.fail_conformance(replica, 10, 1)
    assert replica.fenced_at is not None and replica.recovery_started_at is None
    replica.check_when_presence()
    clerk.recover_replica(RESPONDER, replica)
    assert replica.fenced_at is None and replica.recovery_started_at is not None
    replica.check_when_presence()
    world.qualify(replica)
    assert replica.fenced_at is None and replica.recovery_started_at is None
    replica.check_when_presence()
    replica.fenced_at = T0  # corrupt: active with fenced_at
    with pytest.raises(InvariantViolation, match=r"^Replica.fenced_at: present"):
        replica.check_when_presence()


@pytest.mark.allium("when-presence.Round.agreed_digest", "when-presence.Round.committed_at")
def test_round_when_presence() -> None:
    world = World(active=3)
    round = world.open()
    assert round.agreed_digest is None and round.committed_at is None
    round.check_when_presence()
    world.vote(round, world.replicas[0])
    world.vote(round, world.replicas[1])
    assert round.status == RoundStatus.agreed
    assert round.agreed_digest is not None and round.committed_at is None
    round.check_when_presence()
    world.clerk.commit_round(commit(world.submitted[0], T0))
    assert round.agreed_digest is not None and round.committed_at is not None
    round.check_when_presence()
    round.committed_at = None
    with pytest.raises(InvariantViolation, match=r"^Round.committed_at: absent"):
        round.check_when_presence()


# ---------------------------------------------------------------------------
# Transitions
# ---------------------------------------------------------------------------


@pytest.mark.allium("transition-rejected.Replica.status")
def test_replica_undeclared_transitions_rejected() -> None:
    world = World(active=1, recovering=1)
    active, recovering = world.replicas
    for target in (ReplicaStatus.recovering, ReplicaStatus.retired):
        with pytest.raises(TransitionRejected, match=r"^Replica.status requires #0 "):
            active.transition_to(target)
    assert active.status == ReplicaStatus.active
    with pytest.raises(TransitionRejected, match=r"^Replica.status requires #0 "):
        recovering.transition_to(ReplicaStatus.retired)
    assert recovering.status == ReplicaStatus.recovering
    # a rule cannot drive an undeclared edge either: active cannot be retired
    with pytest.raises(Rejected, match=r"^RetireReplica requires #2 "):
        world.clerk.retire_replica(RESPONDER, active)
    assert active.status == ReplicaStatus.active


@pytest.mark.allium("transition-terminal.Replica.status")
def test_replica_retired_is_terminal() -> None:
    world = World(active=0, recovering=1)
    replica = world.replicas[0]
    world.clerk.fail_conformance(replica, 1, 1)
    world.clerk.retire_replica(RESPONDER, replica)
    assert replica.status == ReplicaStatus.retired
    assert REPLICA_TRANSITIONS[ReplicaStatus.retired] == frozenset()
    for target in ReplicaStatus:
        with pytest.raises(TransitionRejected, match=r"^Replica.status requires #0 "):
            replica.transition_to(target)
    with pytest.raises(Rejected, match=r"^RecoverReplica requires #2 "):
        world.clerk.recover_replica(RESPONDER, replica)
    assert replica.status == ReplicaStatus.retired


@pytest.mark.allium("transition-rejected.Round.status")
def test_round_undeclared_transitions_rejected() -> None:
    world = World(active=3)
    round = world.open()
    with pytest.raises(TransitionRejected, match=r"^Round.status requires #0 "):
        round.transition_to(RoundStatus.committed)  # collecting -> committed skips agreement
    assert round.status == RoundStatus.collecting
    world.vote(round, world.replicas[0])
    world.vote(round, world.replicas[1])
    with pytest.raises(TransitionRejected, match=r"^Round.status requires #0 "):
        round.transition_to(RoundStatus.diverged)  # agreed -> diverged is undeclared
    with pytest.raises(TransitionRejected, match=r"^Round.status requires #0 "):
        round.transition_to(RoundStatus.collecting)
    assert round.status == RoundStatus.agreed


@pytest.mark.allium("transition-terminal.Round.status")
def test_round_terminal_states() -> None:
    world = World(active=3)
    committed, proposal = agreed_round(world)
    world.clerk.commit_round(commit(proposal, T0))
    diverged = world.open("req-div")
    for i, replica in enumerate(world.replicas):
        world.vote(diverged, replica, delta=100 + i)
    superseded = world.open("req-sup")
    world.clerk.supersede_on_epoch_change(EpochGrant(epoch=2, node_id="node-2", granted_at=T0))
    assert committed.status == RoundStatus.committed
    assert diverged.status == RoundStatus.diverged
    assert superseded.status == RoundStatus.superseded
    for terminal_round in (committed, diverged, superseded):
        assert ROUND_TRANSITIONS[terminal_round.status] == frozenset()
        for target in RoundStatus:
            with pytest.raises(TransitionRejected, match=r"^Round.status requires #0 "):
                terminal_round.transition_to(target)
    # rules leave terminal rounds alone
    with pytest.raises(Rejected, match=r"^CommitRound requires #2 "):
        world.clerk.commit_round(proposal)
    assert committed.status == RoundStatus.committed


# ---------------------------------------------------------------------------
# OpenRound / AnnounceRound / DispatchRound
# ---------------------------------------------------------------------------


@pytest.mark.allium("rule-success.OpenRound", "rule-entity-creation.OpenRound.1", "invariant.OneRoundPerAttempt")
def test_open_round_creates_collecting_round() -> None:
    world = World(active=3)
    read = make_read(attempt=2, epoch=1)
    round = world.clerk.open_round(read)
    assert round in world.clerk.rounds
    assert round.request is read.request
    assert round.read_set is read
    assert round.attempt == 2 and round.epoch == 1
    assert round.opened_at == T0 and round.deadline == T0 + SECOND
    assert round.stalled is False and round.status == RoundStatus.collecting
    assert round.votes == [] and round.agreed_digest is None
    world.clerk.check_invariants()
    # the same read set redelivered does not open a second round for the attempt
    with pytest.raises(Rejected, match=r"^OpenRound requires #0 "):
        world.clerk.open_round(read)
    assert len(world.clerk.rounds) == 1
    check_one_round_per_attempt(world.clerk.rounds)
    twin = Round(request=read.request, read_set=read, attempt=2, epoch=1, opened_at=T0, deadline=T0)
    with pytest.raises(InvariantViolation, match=r"^OneRoundPerAttempt: "):
        check_one_round_per_attempt([round, twin])


@pytest.mark.allium("rule-failure.OpenRound.1")
def test_open_round_requires_ready_read_set() -> None:
    world = World(active=3)
    with pytest.raises(Rejected) as err:
        world.clerk.open_round(make_read(ready=False))
    assert (err.value.rule, err.value.clause) == ("OpenRound", 1)
    assert world.clerk.rounds == []


@pytest.mark.allium("rule-failure.OpenRound.2")
def test_open_round_requires_current_epoch() -> None:
    world = World(active=3)
    with pytest.raises(Rejected) as err:
        world.clerk.open_round(make_read(epoch=0))
    assert (err.value.rule, err.value.clause) == ("OpenRound", 2)
    assert world.clerk.rounds == [] and world.dispatched == []


@pytest.mark.allium("rule-success.AnnounceRound", "rule-chained.AnnounceRound.DispatchRound")
def test_announce_round_emits_dispatch() -> None:
    world = World(active=3)
    round = world.open()
    announced = [e for e in world.heard if isinstance(e, DispatchRound)]
    assert len(announced) == 1 and announced[0].round is round
    # downstream DispatchRound fired for this round: one Evaluation per eligible replica
    assert sorted(e.replica_id for e in world.dispatched) == ["node-1", "node-2", "node-3"]
    assert all(e.request is round.request and e.attempt == round.attempt for e in world.dispatched)
    # calling it directly announces again (DispatchRound is idempotent per replica)
    event = world.clerk.announce_round(round)
    assert event.round is round and len(world.dispatched) == 3


@pytest.mark.allium("rule-failure.AnnounceRound.1")
def test_announce_round_requires_collecting() -> None:
    world = World(active=3)
    round, _ = agreed_round(world)
    before = len(world.heard)
    with pytest.raises(Rejected) as err:
        world.clerk.announce_round(round)
    assert (err.value.rule, err.value.clause) == ("AnnounceRound", 1)
    assert len(world.heard) == before


@pytest.mark.allium("rule-success.DispatchRound", "rule-entity-creation.DispatchRound.1")
def test_dispatch_round_builds_evaluations_from_read_set() -> None:
    world = World(active=2, recovering=1)
    round = world.open()
    read = round.read_set
    # only eligible replicas (the recovering one is not) receive an Evaluation
    assert [e.replica_id for e in world.dispatched] == ["node-1", "node-2"]
    for evaluation in world.dispatched:
        assert evaluation.request is round.request
        assert evaluation.attempt == round.attempt
        assert evaluation.primary_present is read.primary_present
        assert evaluation.primary_status == read.primary_status
        assert evaluation.primary_balance_minor == read.primary_balance_minor
        assert evaluation.primary_version == read.primary_version
        assert evaluation.counter_present is read.counter_present
        assert evaluation.counter_status == read.counter_status
        assert evaluation.counter_balance_minor == read.counter_balance_minor
        assert evaluation.counter_version == read.counter_version
        assert state(evaluation.status) == "pending"
    assert world.clerk.evaluations == world.dispatched


@pytest.mark.allium("rule-failure.DispatchRound.1")
def test_dispatch_round_requires_collecting() -> None:
    world = World(active=3)
    round, _ = agreed_round(world)
    world.replicas[2].node.status = NodeStatus.primary
    world.clerk.replicas.append(Replica(replica_id="late", node=make_node("late"), status=ReplicaStatus.active))
    with pytest.raises(Rejected) as err:
        world.clerk.dispatch_round(round)
    assert (err.value.rule, err.value.clause) == ("DispatchRound", 1)
    assert world.clerk.find_evaluation(round.request, 1, "late") is None


@pytest.mark.allium("rule-failure.DispatchRound.2")
def test_dispatch_round_requires_ready_read_set() -> None:
    world = World(active=3)
    loading = make_read(ready=False)
    round = Round(request=loading.request, read_set=loading, attempt=1, epoch=1, opened_at=T0, deadline=T0 + SECOND)
    with pytest.raises(Rejected) as err:
        world.clerk.dispatch_round(round)
    assert (err.value.rule, err.value.clause) == ("DispatchRound", 2)
    assert world.dispatched == []


@pytest.mark.allium("rule-failure.DispatchRound.3")
def test_dispatch_round_skips_replicas_that_already_evaluated() -> None:
    world = World(active=3)
    round = world.open()
    assert len(world.dispatched) == 3
    again = world.clerk.dispatch_round(round)
    assert again == [] and len(world.clerk.evaluations) == 3
    for replica in world.replicas:
        matches = [e for e in world.clerk.evaluations if e.replica_id == replica.replica_id]
        assert len(matches) == 1


# ---------------------------------------------------------------------------
# CastVote
# ---------------------------------------------------------------------------


@pytest.mark.allium("rule-success.CastVote", "rule-entity-creation.CastVote.1")
def test_cast_vote_records_digest_and_decision() -> None:
    world = World(active=3)
    round = world.open()
    world.clock.advance(timedelta(milliseconds=5))
    evaluation = decide(world.evaluation_of(round, world.replicas[0]), delta=500)
    vote = world.clerk.cast_vote(evaluation)
    assert vote in world.clerk.votes and round.votes == [vote]
    assert vote.round is round and vote.replica is world.replicas[0]
    assert vote.digest == decision_digest(evaluation)
    assert vote.digest == decision_digest_of("client-1", "req-1", 1, Verdict.accepted, None, 500, 0)
    assert vote.verdict == Verdict.accepted and vote.reason is None
    assert vote.account_delta_minor == 500 and vote.counterparty_delta_minor == 0
    assert vote.cast_at == T0 + timedelta(milliseconds=5)
    # signed by the replica over the read set it evaluated (none here: no signer)
    assert vote.read_set_digest == read_set_digest(True, AccountStatus.active, 1_000, 7, False, None, 0, 0)
    assert vote.read_set_digest == evaluated_read_digest(evaluation) and vote.signature == ""
    # the digest binds the attempt: the same Decision in another round differs
    assert decision_digest_of("client-1", "req-1", 2, Verdict.accepted, None, 500, 0) != vote.digest


@pytest.mark.allium("rule-failure.CastVote.1")
def test_cast_vote_requires_decided() -> None:
    world = World(active=3)
    round = world.open()
    with pytest.raises(Rejected) as err:
        world.clerk.cast_vote(world.evaluation_of(round, world.replicas[0]))
    assert (err.value.rule, err.value.clause) == ("CastVote", 1)
    assert round.votes == []


@pytest.mark.allium("rule-failure.CastVote.2")
def test_cast_vote_requires_round() -> None:
    world = World(active=3)
    round = world.open()
    stray = dataclasses.replace(decide(world.evaluation_of(round, world.replicas[0])), attempt=9)
    with pytest.raises(Rejected) as err:
        world.clerk.cast_vote(stray)
    assert (err.value.rule, err.value.clause) == ("CastVote", 2)
    assert world.clerk.votes == []


@pytest.mark.allium("rule-failure.CastVote.3")
def test_cast_vote_requires_replica() -> None:
    world = World(active=3)
    round = world.open()
    ghost = dataclasses.replace(decide(world.evaluation_of(round, world.replicas[0])), replica_id="ghost")
    with pytest.raises(Rejected) as err:
        world.clerk.cast_vote(ghost)
    assert (err.value.rule, err.value.clause) == ("CastVote", 3)
    assert round.votes == []


@pytest.mark.allium("rule-failure.CastVote.4", "invariant.OneVotePerReplicaPerRound")
def test_cast_vote_once_per_replica() -> None:
    world = World(active=3)
    round = world.open()
    evaluation = decide(world.evaluation_of(round, world.replicas[0]))
    first = world.clerk.cast_vote(evaluation)
    with pytest.raises(Rejected) as err:
        world.clerk.cast_vote(evaluation)
    assert (err.value.rule, err.value.clause) == ("CastVote", 4)
    assert round.votes == [first]
    check_one_vote_per_replica_per_round(world.clerk.votes)
    world.clerk.check_invariants()
    twin = dataclasses.replace(first)
    with pytest.raises(InvariantViolation, match=r"^OneVotePerReplicaPerRound: "):
        check_one_vote_per_replica_per_round([first, twin])


# ---------------------------------------------------------------------------
# ReachAgreement
# ---------------------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.ReachAgreement",
    "rule-entity-creation.ReachAgreement.1",
    "transition-edge.Round.collecting.agreed",
    "when-set.ReachAgreement.Round.agreed_digest",
)
def test_reach_agreement_proposes_the_quorum_decision() -> None:
    world = World(active=3)
    round = world.open()
    v1 = world.vote(round, world.replicas[0], delta=500)
    assert round.status == RoundStatus.collecting and world.submitted == []
    v2 = world.vote(round, world.replicas[1], delta=500)
    assert v1.digest == v2.digest
    assert round.status == RoundStatus.agreed
    assert round.agreed_digest == v2.digest
    assert len(world.submitted) == 1 and world.clerk.proposals == world.submitted
    proposal = world.submitted[0]
    assert isinstance(proposal, Proposal)
    assert proposal.request is round.request and proposal.attempt == 1 and proposal.epoch == 1
    assert proposal.digest == v2.digest
    assert proposal.verdict == Verdict.accepted and proposal.reason is None
    assert proposal.account_delta_minor == 500 and proposal.counterparty_delta_minor == 0
    assert proposal.expected_primary_version == 7 and proposal.expected_counter_version == 0
    assert proposal.status == ProposalStatus.pending
    # the quorum's signed votes are relayed with the proposal, one Endorsement each
    assert [e.replica_id for e in world.clerk.endorsements] == ["node-1", "node-2"]
    assert all(e.request is round.request and e.attempt == 1 for e in world.clerk.endorsements)
    assert [e.read_set_digest for e in world.clerk.endorsements] == [v1.read_set_digest, v2.read_set_digest]
    assert [e.signature for e in world.clerk.endorsements] == [v1.signature, v2.signature]
    world.clerk.check_invariants()


@pytest.mark.allium("rule-failure.ReachAgreement.1")
def test_reach_agreement_requires_collecting() -> None:
    world = World(active=3)
    round, _ = agreed_round(world)
    with pytest.raises(Rejected) as err:
        world.clerk.reach_agreement(round.votes[0])
    assert (err.value.rule, err.value.clause) == ("ReachAgreement", 1)
    assert len(world.submitted) == 1


@pytest.mark.allium("rule-failure.ReachAgreement.3")
def test_reach_agreement_requires_active_voter() -> None:
    world = World(active=3)
    round = world.open()
    world.vote(round, world.replicas[0])
    # replica 2 is fenced after its evaluation was dispatched; its matching vote
    # still counts in support but cannot itself trigger agreement
    world.replicas[1].status = ReplicaStatus.fenced
    world.replicas[1].fenced_at = T0
    late = world.vote(round, world.replicas[1])
    assert len(round.support(late.digest)) == 2
    assert round.status == RoundStatus.collecting and world.submitted == []
    with pytest.raises(Rejected) as err:
        world.clerk.reach_agreement(late)
    assert (err.value.rule, err.value.clause) == ("ReachAgreement", 3)


@pytest.mark.allium("rule-failure.ReachAgreement.4")
def test_reach_agreement_requires_quorum_support() -> None:
    world = World(active=3)
    round = world.open()
    first = world.vote(round, world.replicas[0])
    with pytest.raises(Rejected) as err:
        world.clerk.reach_agreement(first)
    assert (err.value.rule, err.value.clause) == ("ReachAgreement", 4)
    assert round.status == RoundStatus.collecting and round.agreed_digest is None


@pytest.mark.allium("rule-failure.ReachAgreement.5")
def test_reach_agreement_requires_ready_read_set() -> None:
    world = World(active=3)
    round = world.open()
    world.vote(round, world.replicas[0])
    round.read_set.status = ReadSetStatus.abandoned  # forced: the guard must hold
    second = world.vote(round, world.replicas[1])
    assert round.status == RoundStatus.collecting and world.submitted == []
    with pytest.raises(Rejected) as err:
        world.clerk.reach_agreement(second)
    assert (err.value.rule, err.value.clause) == ("ReachAgreement", 5)


@pytest.mark.allium("rule-success.ReachAgreement", "rule-entity-creation.ReachAgreement.1")
def test_reach_agreement_never_proposes_an_unverified_payload() -> None:
    world = World(active=3)
    round = world.open()
    honest = world.vote(round, world.replicas[0], delta=500)
    # a remote replica claims the honest digest but ships a different payload
    liar = Vote(round=round, replica=world.replicas[1], digest=honest.digest, verdict=Verdict.accepted,
                reason=None, account_delta_minor=10_000, counterparty_delta_minor=0, cast_at=T0)
    round.votes.append(liar)
    world.clerk.votes.append(liar)
    proposal = world.clerk.reach_agreement(liar)
    # the payload proposed is the one whose recomputed digest matches
    assert proposal.digest == honest.digest
    assert proposal.account_delta_minor == honest.account_delta_minor == 500


@pytest.mark.allium(
    "rule-chained.ReachAgreement.DissentDetected",
    "rule-success.FenceDissenter",
    "transition-edge.Replica.active.fenced",
    "when-set.FenceDissenter.Replica.fenced_at",
)
def test_agreement_fences_earlier_dissenter() -> None:
    world = World(active=3)
    round = world.open()
    dissent = world.vote(round, world.replicas[2], delta=499)
    world.clock.advance(timedelta(milliseconds=3))
    world.vote(round, world.replicas[0], delta=500)
    world.vote(round, world.replicas[1], delta=500)
    assert round.status == RoundStatus.agreed
    detected = [e for e in world.heard if isinstance(e, DissentDetected)]
    assert [e.vote for e in detected] == [dissent]
    dissenter = world.replicas[2]
    assert dissenter.status == ReplicaStatus.fenced
    assert dissenter.fenced_at == T0 + timedelta(milliseconds=3)
    assert dissenter.dissents == 1
    fenced = [e for e in world.heard if isinstance(e, ReplicaFenced)]
    assert len(fenced) == 1 and fenced[0].replica is dissenter and fenced[0].round is round
    assert world.replicas[0].status == ReplicaStatus.active
    world.clerk.check_invariants()
    world.clerk.check_fencing_is_audited()


# ---------------------------------------------------------------------------
# FlagLateDissent, FenceDissenter, CountRepeatDissent
# ---------------------------------------------------------------------------


@pytest.mark.allium("rule-success.FlagLateDissent", "rule-chained.FlagLateDissent.DissentDetected")
def test_late_dissent_is_flagged_and_fenced() -> None:
    world = World(active=3)
    round, proposal = agreed_round(world)
    world.clerk.commit_round(commit(proposal, T0))
    late = world.vote(round, world.replicas[2], delta=1)
    detected = [e for e in world.heard if isinstance(e, DissentDetected)]
    assert [e.vote for e in detected] == [late]
    assert world.replicas[2].status == ReplicaStatus.fenced  # FenceDissenter fired downstream
    assert world.replicas[2].dissents == 1
    assert round.status == RoundStatus.committed


@pytest.mark.allium("rule-failure.FlagLateDissent.1")
def test_flag_late_dissent_requires_agreed_or_committed() -> None:
    world = World(active=3)
    round = world.open()
    first = world.vote(round, world.replicas[0])
    with pytest.raises(Rejected) as err:
        world.clerk.flag_late_dissent(first)
    assert (err.value.rule, err.value.clause) == ("FlagLateDissent", 1)
    assert not [e for e in world.heard if isinstance(e, DissentDetected)]


@pytest.mark.allium("rule-failure.FlagLateDissent.2")
def test_flag_late_dissent_ignores_matching_vote() -> None:
    world = World(active=3)
    round, _ = agreed_round(world)
    late = world.vote(round, world.replicas[2], delta=500)
    assert late.digest == round.agreed_digest
    with pytest.raises(Rejected) as err:
        world.clerk.flag_late_dissent(late)
    assert (err.value.rule, err.value.clause) == ("FlagLateDissent", 2)
    assert world.replicas[2].status == ReplicaStatus.active


@pytest.mark.allium("rule-chained.FenceDissenter.ReplicaFenced", "rule-failure.FenceDissenter.1")
def test_fence_dissenter_emits_replica_fenced_once() -> None:
    world = World(active=3)
    round, _ = agreed_round(world)
    late = world.vote(round, world.replicas[2], delta=1)
    fenced = [e for e in world.heard if isinstance(e, ReplicaFenced)]
    assert len(fenced) == 1
    assert fenced[0].replica is world.replicas[2] and fenced[0].round is late.round
    # a second fence of the same (now fenced) replica is refused
    with pytest.raises(Rejected) as err:
        world.clerk.fence_dissenter(late)
    assert (err.value.rule, err.value.clause) == ("FenceDissenter", 1)
    assert world.replicas[2].dissents == 1
    assert len([e for e in world.heard if isinstance(e, ReplicaFenced)]) == 1


@pytest.mark.allium("rule-success.CountRepeatDissent")
def test_count_repeat_dissent() -> None:
    world = World(active=3)
    round = world.open()
    world.vote(round, world.replicas[0], delta=500)
    world.vote(round, world.replicas[1], delta=500)
    assert round.status == RoundStatus.agreed
    # replica 3 was fenced meanwhile (an earlier dissent); its late dissent arrives
    world.replicas[2].status = ReplicaStatus.fenced
    world.replicas[2].fenced_at = T0
    world.replicas[2].dissents = 1
    late = world.vote(round, world.replicas[2], delta=7)
    assert [e.vote for e in world.heard if isinstance(e, DissentDetected)] == [late]
    assert world.replicas[2].status == ReplicaStatus.fenced
    assert world.replicas[2].dissents == 2
    assert not [e for e in world.heard if isinstance(e, ReplicaFenced)]


@pytest.mark.allium("rule-failure.CountRepeatDissent.1")
def test_count_repeat_dissent_requires_inactive_replica() -> None:
    world = World(active=3)
    round = world.open()
    vote = world.vote(round, world.replicas[0])
    with pytest.raises(Rejected) as err:
        world.clerk.count_repeat_dissent(vote)
    assert (err.value.rule, err.value.clause) == ("CountRepeatDissent", 1)
    assert world.replicas[0].dissents == 0


# ---------------------------------------------------------------------------
# DivergeRound, RetryDivergedRound, QuarantineRequest
# ---------------------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.DivergeRound",
    "transition-edge.Round.collecting.diverged",
    "rule-chained.DivergeRound.RoundDiverged",
    "rule-success.RetryDivergedRound",
    "rule-entity-creation.RetryDivergedRound.1",
)
def test_total_disagreement_diverges_and_retries() -> None:
    world = World(active=3)
    round = world.open()
    for i, replica in enumerate(world.replicas):
        world.clock.advance(timedelta(milliseconds=1))
        world.vote(round, replica, delta=100 + i)
    assert round.status == RoundStatus.diverged
    assert round.agreed_digest is None
    diverged = [e for e in world.heard if isinstance(e, RoundDiverged)]
    assert len(diverged) == 1 and diverged[0].round is round
    # downstream RetryDivergedRound opened attempt 2 on the same read set
    retry = world.clerk.find_round(round.request, 2)
    assert retry is not None and retry is world.clerk.rounds[-1]
    assert retry.request is round.request and retry.read_set is round.read_set
    assert retry.attempt == 2 and retry.epoch == round.epoch
    assert retry.opened_at == world.clock.now and retry.deadline == world.clock.now + SECOND
    assert retry.stalled is False and retry.status == RoundStatus.collecting
    # and it was dispatched to every eligible replica for attempt 2
    assert len([e for e in world.dispatched if e.attempt == 2]) == 3
    # nobody is fenced: no quorum, so no dissent
    assert all(r.status == ReplicaStatus.active for r in world.replicas)
    world.clerk.check_invariants()


@pytest.mark.allium("rule-failure.DivergeRound.1")
def test_diverge_requires_collecting() -> None:
    world = World(active=3)
    round, _ = agreed_round(world)
    late = world.vote(round, world.replicas[2], delta=1)
    with pytest.raises(Rejected) as err:
        world.clerk.diverge_round(late)
    assert (err.value.rule, err.value.clause) == ("DivergeRound", 1)
    assert round.status == RoundStatus.agreed


@pytest.mark.allium("rule-failure.DivergeRound.2")
def test_diverge_requires_missing_quorum() -> None:
    world = World(active=3)
    round = world.open()
    world.vote(round, world.replicas[0])
    world.replicas[1].status = ReplicaStatus.fenced
    world.replicas[1].fenced_at = T0
    matching = world.vote(round, world.replicas[1])
    assert len(round.support(matching.digest)) == 2
    with pytest.raises(Rejected) as err:
        world.clerk.diverge_round(matching)
    assert (err.value.rule, err.value.clause) == ("DivergeRound", 2)
    assert round.status == RoundStatus.collecting


@pytest.mark.allium("rule-failure.DivergeRound.3")
def test_diverge_waits_for_every_eligible_replica() -> None:
    world = World(active=3)
    round = world.open()
    world.vote(round, world.replicas[0], delta=1)
    second = world.vote(round, world.replicas[1], delta=2)
    with pytest.raises(Rejected) as err:
        world.clerk.diverge_round(second)
    assert (err.value.rule, err.value.clause) == ("DivergeRound", 3)
    assert round.status == RoundStatus.collecting
    assert not [e for e in world.heard if isinstance(e, RoundDiverged)]


@pytest.mark.allium("rule-failure.DivergeRound.3")
def test_a_vote_of_a_replica_fenced_elsewhere_does_not_count_towards_divergence() -> None:
    """The faulty replica votes in r1, is fenced in r2; one honest vote in r1 must wait for
    the other honest replica, which then agrees, instead of diverging the round."""
    world = World(active=3)
    faulty, honest, other = world.replicas
    r1 = world.open("req-1")
    r2 = world.open("req-2")
    world.vote(r1, faulty, delta=999)
    world.vote(r2, faulty, delta=999)
    world.vote(r2, honest)
    world.vote(r2, other)
    assert r2.status == RoundStatus.agreed and faulty.status == ReplicaStatus.fenced
    lone = world.vote(r1, honest)
    assert len(r1.votes) == len(world.clerk.eligible_replicas())  # the old count would diverge here
    with pytest.raises(Rejected) as err:
        world.clerk.diverge_round(lone)
    assert (err.value.rule, err.value.clause) == ("DivergeRound", 3) and r1.status == RoundStatus.collecting
    world.vote(r1, other)
    assert r1.status == RoundStatus.agreed and world.submitted[-1].account_delta_minor == 500
    assert not [e for e in world.heard if isinstance(e, RoundDiverged)]


@pytest.mark.allium(
    "rule-failure.RetryDivergedRound.1",
    "rule-success.QuarantineRequest",
    "rule-entity-creation.QuarantineRequest.1",
)
def test_repeated_divergence_quarantines() -> None:
    world = World(active=3)
    first = world.open()
    current = first
    for attempt in (1, 2, 3):
        assert current.attempt == attempt
        for i, replica in enumerate(world.replicas):
            world.vote(current, replica, delta=10 * attempt + i)
        assert current.status == RoundStatus.diverged
        if attempt < 3:
            current = world.clerk.find_round(first.request, attempt + 1)
    # no attempt 4: RetryDivergedRound refused, QuarantineRequest proposed instead
    assert world.clerk.find_round(first.request, 4) is None
    with pytest.raises(Rejected) as err:
        world.clerk.retry_diverged_round(current)
    assert (err.value.rule, err.value.clause) == ("RetryDivergedRound", 1)
    assert len(world.submitted) == 1
    proposal = world.submitted[0]
    assert proposal.request is first.request and proposal.attempt == 3 and proposal.epoch == 1
    assert proposal.digest == quarantine_digest(first.request)
    assert proposal.verdict == Verdict.rejected and proposal.reason == RejectReason.quarantined
    assert proposal.account_delta_minor == 0 and proposal.counterparty_delta_minor == 0
    assert proposal.expected_primary_version == 0 and proposal.expected_counter_version == 0
    assert proposal.status == ProposalStatus.pending and proposal.is_quarantine
    incident = world.clerk.incidents[-1]
    assert incident.round is current and incident.read_set is current.read_set and len(incident.votes) == 3
    world.clerk.check_invariants()


@pytest.mark.allium("rule-failure.QuarantineRequest.1")
def test_quarantine_requires_last_attempt() -> None:
    world = World(active=3)
    round = world.open()
    with pytest.raises(Rejected) as err:
        world.clerk.quarantine_request(round)
    assert (err.value.rule, err.value.clause) == ("QuarantineRequest", 1)
    assert world.submitted == [] and world.clerk.incidents == []


# ---------------------------------------------------------------------------
# CommitRound, SupersedeRefused, SupersedeOnEpochChange
# ---------------------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.CommitRound",
    "rule-entity-creation.CommitRound.1",
    "transition-edge.Round.agreed.committed",
    "when-set.CommitRound.Round.agreed_digest",
    "when-set.CommitRound.Round.committed_at",
    "invariant.CommitsHaveQuorum",
)
def test_commit_round() -> None:
    world = World(active=3)
    round, proposal = agreed_round(world)
    digest = round.agreed_digest
    world.clock.advance(timedelta(milliseconds=4))
    result = world.clerk.commit_round(commit(proposal, world.clock.now))
    assert result is round
    assert round.status == RoundStatus.committed
    assert round.committed_at == T0 + timedelta(milliseconds=4)
    assert round.agreed_digest == digest  # stays set in committed
    # the committed round becomes a recorded evaluation for conformance runs
    vector = world.clerk.vectors[round_vector_id(round)]
    assert round_vector_id(round) == "client-1/req-1#1"
    assert vector.vector_id == round_vector_id(round) and vector.expected_digest == digest
    assert len(round.support(round.agreed_digest)) >= world.clerk.config.commit_quorum
    check_commits_have_quorum(world.clerk.rounds, world.clerk.config)
    world.clerk.check_invariants()
    round.votes.pop()  # a committed round without quorum violates the invariant
    with pytest.raises(InvariantViolation, match=r"^CommitsHaveQuorum: "):
        check_commits_have_quorum([round], world.clerk.config)


@pytest.mark.allium("rule-failure.CommitRound.1")
def test_commit_round_requires_round() -> None:
    world = World(active=3)
    _, proposal = agreed_round(world)
    stray = dataclasses.replace(proposal, attempt=5)
    with pytest.raises(Rejected) as err:
        world.clerk.commit_round(commit(stray, T0))
    assert (err.value.rule, err.value.clause) == ("CommitRound", 1)
    assert world.clerk.rounds[0].status == RoundStatus.agreed


@pytest.mark.allium("rule-failure.CommitRound.2")
def test_commit_round_requires_agreed() -> None:
    world = World(active=3)
    round = world.open()
    premature = Proposal(request=round.request, attempt=1, epoch=1, digest="d", verdict=Verdict.accepted,
                         reason=None, account_delta_minor=1, counterparty_delta_minor=0,
                         expected_primary_version=7, expected_counter_version=0)
    with pytest.raises(Rejected) as err:
        world.clerk.commit_round(commit(premature, T0))
    assert (err.value.rule, err.value.clause) == ("CommitRound", 2)
    assert round.status == RoundStatus.collecting and round.committed_at is None


@pytest.mark.allium("rule-success.SupersedeRefused", "transition-edge.Round.agreed.superseded")
def test_supersede_refused_proposal() -> None:
    for refusal in (ProposalStatus.conflicted, ProposalStatus.duplicate, ProposalStatus.fenced):
        world = World(active=3)
        round, proposal = agreed_round(world)
        proposal.status = refusal
        assert world.clerk.on_proposal_status(proposal) is round
        assert round.status == RoundStatus.superseded
        assert round.agreed_digest is None
        round.check_when_presence()


@pytest.mark.allium("rule-failure.SupersedeRefused.1")
def test_supersede_refused_requires_round() -> None:
    world = World(active=3)
    round, proposal = agreed_round(world)
    stray = dataclasses.replace(proposal, attempt=4, status=ProposalStatus.conflicted)
    with pytest.raises(Rejected) as err:
        world.clerk.supersede_refused(stray)
    assert (err.value.rule, err.value.clause) == ("SupersedeRefused", 1)
    assert round.status == RoundStatus.agreed


@pytest.mark.allium("rule-failure.SupersedeRefused.2")
def test_supersede_refused_requires_agreed() -> None:
    world = World(active=3)
    round, proposal = agreed_round(world)
    world.clerk.commit_round(commit(proposal, T0))
    refused = dataclasses.replace(proposal, status=ProposalStatus.duplicate, sequence=None, committed_at=None)
    with pytest.raises(Rejected) as err:
        world.clerk.supersede_refused(refused)
    assert (err.value.rule, err.value.clause) == ("SupersedeRefused", 2)
    assert round.status == RoundStatus.committed and round.agreed_digest is not None


@pytest.mark.allium("rule-success.SupersedeOnEpochChange", "transition-edge.Round.collecting.superseded")
def test_supersede_on_epoch_change() -> None:
    world = World(active=3)
    agreed, _ = agreed_round(world)
    collecting = world.open("req-open")
    committed_round = world.open("req-done")
    world.vote(committed_round, world.replicas[0])
    world.vote(committed_round, world.replicas[1])
    world.clerk.commit_round(commit(world.submitted[-1], T0))
    world.journal.epoch = 2
    current = world.open("req-new", epoch=2)
    ended = world.clerk.on_epoch_granted(EpochGrant(epoch=2, node_id="node-2", granted_at=T0))
    assert set(map(id, ended)) == {id(agreed), id(collecting)}
    assert agreed.status == RoundStatus.superseded and agreed.agreed_digest is None
    assert collecting.status == RoundStatus.superseded and collecting.agreed_digest is None
    assert committed_round.status == RoundStatus.committed
    assert current.status == RoundStatus.collecting
    world.clerk.check_invariants()


# ---------------------------------------------------------------------------
# Timeouts: RedispatchSlowRound, StallRound, ResumeStalledRounds
# ---------------------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.RedispatchSlowRound",
    "temporal.RedispatchSlowRound",
    "rule-chained.RedispatchSlowRound.DispatchRound",
)
def test_redispatch_slow_round() -> None:
    world = World(active=2, recovering=1)
    round = world.open()
    assert len(world.dispatched) == 2
    # the third replica becomes active after the round was dispatched
    world.qualify(world.replicas[2])
    world.clock.advance(SECOND - timedelta(milliseconds=1))
    assert world.clerk.tick() == []  # not before the deadline
    with pytest.raises(Rejected, match=r"^RedispatchSlowRound requires #0 "):
        world.clerk.redispatch_slow_round(round)
    world.clock.advance(timedelta(milliseconds=1))
    fired = world.clerk.tick()
    assert len(fired) == 1 and isinstance(fired[0], DispatchRound) and fired[0].round is round
    assert round.deadline == world.clock.now + SECOND
    # downstream DispatchRound reached the newly eligible replica only
    assert [e.replica_id for e in world.dispatched] == ["node-1", "node-2", "node-3"]
    assert world.dispatched[-1].attempt == round.attempt
    assert world.clerk.tick() == []  # does not re-fire for the same deadline
    assert round.stalled is False


@pytest.mark.allium("rule-failure.RedispatchSlowRound.1")
def test_redispatch_requires_collecting() -> None:
    world = World(active=3)
    round, _ = agreed_round(world)
    world.clock.advance(5 * SECOND)
    deadline = round.deadline
    with pytest.raises(Rejected) as err:
        world.clerk.redispatch_slow_round(round)
    assert (err.value.rule, err.value.clause) == ("RedispatchSlowRound", 1)
    assert round.deadline == deadline and world.clerk.tick() == []


@pytest.mark.allium("rule-failure.RedispatchSlowRound.2")
def test_redispatch_requires_quorum_of_eligible() -> None:
    world = World(active=1)
    round = world.open()
    world.clock.advance(SECOND)
    deadline = round.deadline
    with pytest.raises(Rejected) as err:
        world.clerk.redispatch_slow_round(round)
    assert (err.value.rule, err.value.clause) == ("RedispatchSlowRound", 2)
    assert round.deadline == deadline


@pytest.mark.allium("rule-success.StallRound", "temporal.StallRound", "rule-chained.StallRound.QuorumUnavailable")
def test_stall_round_when_quorum_unreachable() -> None:
    world = World(active=1, recovering=2)
    round = world.open()
    world.clock.advance(timedelta(milliseconds=999))
    assert world.clerk.tick() == [] and round.stalled is False
    world.clock.advance(timedelta(milliseconds=1))
    fired = world.clerk.tick()
    assert len(fired) == 1 and isinstance(fired[0], QuorumUnavailable) and fired[0].round is round
    assert round.stalled is True and round.status == RoundStatus.collecting
    # listeners (api's CountStall) hear QuorumUnavailable for this round
    unavailable = [e for e in world.heard if isinstance(e, QuorumUnavailable)]
    assert len(unavailable) == 1 and unavailable[0].round is round
    world.clock.advance(10 * SECOND)
    assert world.clerk.tick() == []  # does not re-fire
    # a stall never counts as an attempt: no divergence, no quarantine
    assert world.submitted == [] and len(world.clerk.rounds) == 1


@pytest.mark.allium("rule-failure.StallRound.1")
def test_stall_requires_collecting() -> None:
    world = World(active=3)
    round, _ = agreed_round(world)
    for replica in world.replicas:
        replica.node.status = NodeStatus.down
    world.clock.advance(SECOND)
    with pytest.raises(Rejected) as err:
        world.clerk.stall_round(round)
    assert (err.value.rule, err.value.clause) == ("StallRound", 1)
    assert round.stalled is False


@pytest.mark.allium("rule-failure.StallRound.2")
def test_stall_requires_not_stalled() -> None:
    world = World(active=1)
    round = world.open()
    world.clock.advance(SECOND)
    world.clerk.stall_round(round)
    with pytest.raises(Rejected) as err:
        world.clerk.stall_round(round)
    assert (err.value.rule, err.value.clause) == ("StallRound", 2)
    assert len([e for e in world.heard if isinstance(e, QuorumUnavailable)]) == 1


@pytest.mark.allium("rule-failure.StallRound.3")
def test_stall_requires_too_few_eligible() -> None:
    world = World(active=2)
    round = world.open()
    world.clock.advance(SECOND)
    with pytest.raises(Rejected) as err:
        world.clerk.stall_round(round)
    assert (err.value.rule, err.value.clause) == ("StallRound", 3)
    assert round.stalled is False


@pytest.mark.allium(
    "rule-success.ResumeStalledRounds",
    "rule-chained.ResumeStalledRounds.DispatchRound",
    "rule-success.PassConformance",
    "transition-edge.Replica.recovering.active",
)
def test_passing_conformance_resumes_stalled_rounds() -> None:
    world = World(active=1, recovering=1)
    round = world.open()
    world.clock.advance(SECOND)
    world.clerk.tick()
    assert round.stalled is True
    world.clock.advance(3 * SECOND)
    replica = world.replicas[1]
    for vector in world.corpus[:-1]:
        world.clerk.conformance_digest(replica, vector, vector.expected_digest)
    assert replica.status == ReplicaStatus.recovering and round.stalled is True  # not yet
    last = world.corpus[-1]
    check = world.clerk.conformance_digest(replica, last, last.expected_digest)
    assert replica.status == ReplicaStatus.active and replica.recovery_started_at is None
    assert replica.conformance_passed == RUN and world.clerk.return_audit[-1] == (replica, check)
    assert round.stalled is False
    assert round.deadline == world.clock.now + SECOND
    dispatches = [e for e in world.heard if isinstance(e, DispatchRound) and e.round is round]
    assert len(dispatches) == 2  # the announcement and the resumption
    assert world.dispatched[-1].replica_id == replica.replica_id
    # with two active replicas the round can now agree and commit
    world.vote(round, world.replicas[0])
    world.vote(round, replica)
    assert round.status == RoundStatus.agreed
    world.clerk.check_invariants()
    world.clerk.check_fencing_is_audited()


# ---------------------------------------------------------------------------
# Replica lifecycle
# ---------------------------------------------------------------------------


@pytest.mark.allium("rule-success.RegisterReplica", "rule-entity-creation.RegisterReplica.1", "invariant.ReplicaPerNode")
def test_register_replica() -> None:
    world = World(active=0)
    world.clock.advance(SECOND)
    node = make_node("node-9", NodeStatus.joining)
    replica = world.clerk.on_node_created(node)
    assert replica is not None and replica in world.clerk.replicas
    assert replica.replica_id == "node-9" and replica.node is node
    assert replica.dissents == 0 and replica.status == ReplicaStatus.recovering
    assert replica.recovery_started_at == T0 + SECOND and replica.fenced_at is None
    assert replica.is_eligible is False  # must pass conformance before voting
    check_replica_per_node(world.clerk.replicas)
    world.clerk.check_invariants()
    clash = Replica(replica_id="other", node=node)
    with pytest.raises(InvariantViolation, match=r"^ReplicaPerNode: "):
        check_replica_per_node([replica, clash])


@pytest.mark.allium("rule-failure.RegisterReplica.1")
def test_register_replica_once_per_node_id() -> None:
    world = World(active=1)
    with pytest.raises(Rejected) as err:
        world.clerk.register_replica(make_node("node-1"))
    assert (err.value.rule, err.value.clause) == ("RegisterReplica", 1)
    assert len(world.clerk.replicas) == 1
    check_replica_per_node(world.clerk.replicas)


def fenced_world() -> tuple[World, Replica]:
    world = World(active=3)
    round, _ = agreed_round(world)
    world.vote(round, world.replicas[2], delta=1)
    assert world.replicas[2].status == ReplicaStatus.fenced
    return world, world.replicas[2]


@pytest.mark.allium(
    "rule-success.BeginRecoveryOnRejoin",
    "transition-edge.Replica.fenced.recovering",
    "when-set.BeginRecoveryOnRejoin.Replica.recovery_started_at",
)
def test_begin_recovery_on_rejoin() -> None:
    world, replica = fenced_world()
    world.clock.advance(2 * SECOND)
    replica.node.status = NodeStatus.down
    replica.node.status = NodeStatus.joining
    assert world.clerk.on_node_joining(replica.node) is replica
    assert replica.status == ReplicaStatus.recovering
    assert replica.fenced_at is None
    assert replica.recovery_started_at == T0 + 2 * SECOND
    assert replica.dissents == 1


@pytest.mark.allium("rule-failure.BeginRecoveryOnRejoin.1")
def test_begin_recovery_requires_replica() -> None:
    world = World(active=1)
    stranger = make_node("stranger", NodeStatus.joining)
    with pytest.raises(Rejected) as err:
        world.clerk.begin_recovery_on_rejoin(stranger)
    assert (err.value.rule, err.value.clause) == ("BeginRecoveryOnRejoin", 1)
    assert [r.replica_id for r in world.clerk.replicas] == ["node-1"]


@pytest.mark.allium("rule-failure.BeginRecoveryOnRejoin.2")
def test_begin_recovery_requires_fenced() -> None:
    world = World(active=1)
    replica = world.replicas[0]
    replica.node.status = NodeStatus.joining
    with pytest.raises(Rejected) as err:
        world.clerk.begin_recovery_on_rejoin(replica.node)
    assert (err.value.rule, err.value.clause) == ("BeginRecoveryOnRejoin", 2)
    assert replica.status == ReplicaStatus.active and replica.recovery_started_at is None


@pytest.mark.allium("rule-success.RecoverReplica", "when-set.RecoverReplica.Replica.recovery_started_at")
def test_recover_replica() -> None:
    world, replica = fenced_world()
    world.clock.advance(SECOND)
    assert world.clerk.recover_replica(RESPONDER, replica) is replica
    assert replica.status == ReplicaStatus.recovering
    assert replica.fenced_at is None and replica.recovery_started_at == T0 + SECOND


@pytest.mark.allium("rule-failure.RecoverReplica.1")
def test_recover_replica_requires_responder() -> None:
    world, replica = fenced_world()
    with pytest.raises(Rejected) as err:
        world.clerk.recover_replica(OBSERVER, replica)
    assert (err.value.rule, err.value.clause) == ("RecoverReplica", 1)
    assert replica.status == ReplicaStatus.fenced


@pytest.mark.allium("rule-failure.RecoverReplica.2")
def test_recover_replica_requires_fenced() -> None:
    world = World(active=1)
    replica = world.replicas[0]
    with pytest.raises(Rejected) as err:
        world.clerk.recover_replica(RESPONDER, replica)
    assert (err.value.rule, err.value.clause) == ("RecoverReplica", 2)
    assert replica.status == ReplicaStatus.active


def recovering_world() -> tuple[World, Replica]:
    world, replica = fenced_world()
    world.clerk.recover_replica(RESPONDER, replica)
    assert replica.status == ReplicaStatus.recovering and replica.recoveries == 2
    assert replica.conformance_passed == 0  # a new recovery starts from nothing
    return world, replica


def check_for(world: World, replica: Replica, vector: ConformanceVector, *, matches: bool) -> ConformanceCheck:
    """A ConformanceCheck as CheckConformance would create it, without firing its rules."""
    digest = vector.expected_digest if matches else "wrong"
    return ConformanceCheck(replica=replica, vector=vector, recovery=replica.recoveries, digest=digest,
                            matches=matches, checked_at=world.clock())


@pytest.mark.allium("rule-success.CheckConformance", "rule-entity-creation.CheckConformance.1",
                    "entity-fields.ConformanceCheck", "entity-fields.ConformanceVector")
def test_check_conformance_compares_the_digest_itself() -> None:
    world, replica = recovering_world()
    world.clock.advance(SECOND)
    vector = world.corpus[0]
    check = world.clerk.conformance_digest(replica, vector, vector.expected_digest)
    names = {f.name for f in dataclasses.fields(ConformanceCheck)}
    assert names == {"replica", "vector", "recovery", "digest", "matches", "checked_at"}
    assert {f.name for f in dataclasses.fields(ConformanceVector)} == {"vector_id", "expected_digest"}
    assert (check.replica, check.vector, check.recovery) == (replica, vector, 2)
    assert (check.digest, check.matches, check.checked_at) == (vector.expected_digest, True, T0 + SECOND)
    assert check in world.clerk.conformance_checks
    assert world.clerk.find_check(replica, vector, 2) is check
    assert replica.conformance_passed == 1 and replica.status == ReplicaStatus.recovering


@pytest.mark.allium("rule-failure.CheckConformance.1")
def test_check_conformance_requires_recovering() -> None:
    world = World(active=1)
    replica, vector = world.replicas[0], world.clerk.add_conformance_vector("late", "d")
    with pytest.raises(Rejected) as err:
        world.clerk.check_conformance(replica, vector, vector.expected_digest)
    assert (err.value.rule, err.value.clause) == ("CheckConformance", 1)
    assert world.clerk.find_check(replica, vector, replica.recoveries) is None
    assert replica.conformance_passed == RUN


@pytest.mark.allium("rule-failure.CheckConformance.2")
def test_check_conformance_counts_each_vector_once_per_recovery() -> None:
    world, replica = recovering_world()
    vector = world.corpus[0]
    world.clerk.conformance_digest(replica, vector, vector.expected_digest)
    for _ in range(RUN):  # the same right answer, replayed, proves nothing more
        with pytest.raises(Rejected) as err:
            world.clerk.conformance_digest(replica, vector, vector.expected_digest)
        assert (err.value.rule, err.value.clause) == ("CheckConformance", 2)
    assert replica.conformance_passed == 1 and replica.status == ReplicaStatus.recovering


@pytest.mark.allium("rule-success.CountConformance")
def test_count_conformance_counts_a_match_short_of_the_run() -> None:
    world, replica = recovering_world()
    assert world.clerk.count_conformance(check_for(world, replica, world.corpus[0], matches=True)) is replica
    assert replica.conformance_passed == 1 and replica.status == ReplicaStatus.recovering


@pytest.mark.allium("rule-failure.CountConformance.1")
def test_count_conformance_requires_a_match() -> None:
    world, replica = recovering_world()
    with pytest.raises(Rejected) as err:
        world.clerk.count_conformance(check_for(world, replica, world.corpus[0], matches=False))
    assert (err.value.rule, err.value.clause) == ("CountConformance", 1) and replica.conformance_passed == 0


@pytest.mark.allium("rule-failure.CountConformance.2")
def test_count_conformance_requires_recovering() -> None:
    world, replica = fenced_world()
    with pytest.raises(Rejected) as err:
        world.clerk.count_conformance(check_for(world, replica, world.corpus[0], matches=True))
    assert (err.value.rule, err.value.clause) == ("CountConformance", 2) and replica.conformance_passed == RUN


@pytest.mark.allium("rule-failure.CountConformance.3")
def test_count_conformance_leaves_the_last_match_to_pass_conformance() -> None:
    world, replica = recovering_world()
    replica.conformance_passed = RUN - 1
    with pytest.raises(Rejected) as err:
        world.clerk.count_conformance(check_for(world, replica, world.corpus[0], matches=True))
    assert (err.value.rule, err.value.clause) == ("CountConformance", 3) and replica.conformance_passed == RUN - 1


@pytest.mark.allium("rule-failure.PassConformance.1")
def test_pass_conformance_requires_a_match() -> None:
    world, replica = recovering_world()
    replica.conformance_passed = RUN - 1
    with pytest.raises(Rejected) as err:
        world.clerk.pass_conformance(check_for(world, replica, world.corpus[0], matches=False))
    assert (err.value.rule, err.value.clause) == ("PassConformance", 1)
    assert replica.status == ReplicaStatus.recovering


@pytest.mark.allium("rule-failure.PassConformance.2")
def test_pass_conformance_requires_recovering() -> None:
    world, replica = fenced_world()
    replica.conformance_passed = RUN - 1
    with pytest.raises(Rejected) as err:
        world.clerk.pass_conformance(check_for(world, replica, world.corpus[0], matches=True))
    assert (err.value.rule, err.value.clause) == ("PassConformance", 2)
    assert replica.status == ReplicaStatus.fenced


@pytest.mark.allium("rule-failure.PassConformance.3")
def test_pass_conformance_requires_enough_vectors() -> None:
    world, replica = recovering_world()
    with pytest.raises(Rejected) as err:
        world.clerk.pass_conformance(check_for(world, replica, world.corpus[0], matches=True))
    assert (err.value.rule, err.value.clause) == ("PassConformance", 3)
    assert replica.status == ReplicaStatus.recovering and replica.recovery_started_at is not None


@pytest.mark.allium("rule-failure.FailConformance.2", "surface-provides.ConformanceHarness")
def test_a_clean_self_report_readmits_nobody() -> None:
    """Settled decision: the replica's own report of a clean replay is not evidence."""
    world, replica = recovering_world()
    for vectors in (world.clerk.config.conformance_vectors, 10**9):
        with pytest.raises(Rejected, match=r"^FailConformance requires #2 "):
            world.clerk.conformance_replayed(replica, vectors, 0)
        with pytest.raises(Rejected, match=r"^FailConformance requires #2 "):
            ConformanceHarness(world.clerk, replica).conformance_replayed(vectors, 0)
    assert replica.status == ReplicaStatus.recovering and not replica.is_eligible


@pytest.mark.allium("config-default.conformance_vectors", "rule-success.PassConformance")
def test_a_full_default_conformance_run() -> None:
    """With the default config the Clerk compares 10,000 digests before readmitting."""
    world = World(active=0, recovering=1, config=Config())
    assert world.clerk.config.conformance_vectors == 10_000
    replica = world.replicas[0]
    vectors = world.corpus
    assert len(vectors) == 10_000
    for vector in vectors[:-1]:
        world.clerk.conformance_digest(replica, vector, vector.expected_digest)
    assert replica.status == ReplicaStatus.recovering and replica.conformance_passed == 9_999
    world.clerk.conformance_digest(replica, vectors[-1], vectors[-1].expected_digest)
    assert replica.status == ReplicaStatus.active


@pytest.mark.allium(
    "rule-success.FailConformanceCheck",
    "when-set.FailConformanceCheck.Replica.fenced_at",
    "transition-edge.Replica.recovering.fenced",
)
def test_one_wrong_digest_sends_the_replica_back_to_fenced() -> None:
    world, replica = recovering_world()
    good, bad = world.corpus[0], world.corpus[1]
    world.clerk.conformance_digest(replica, good, good.expected_digest)
    world.clock.advance(4 * SECOND)
    check = world.clerk.conformance_digest(replica, bad, "not-" + bad.expected_digest)
    assert check.matches is False
    assert replica.status == ReplicaStatus.fenced
    assert replica.fenced_at == T0 + 4 * SECOND and replica.recovery_started_at is None
    assert world.clerk.fence_audit[-1] == (replica, check)
    world.clerk.check_fencing_is_audited()
    # a new recovery starts the count again, and the vectors count afresh
    world.clerk.recover_replica(RESPONDER, replica)
    assert replica.recoveries == 3 and replica.conformance_passed == 0
    world.qualify(replica)


@pytest.mark.allium("rule-failure.FailConformanceCheck.1")
def test_fail_conformance_check_requires_a_mismatch() -> None:
    world, replica = recovering_world()
    with pytest.raises(Rejected) as err:
        world.clerk.fail_conformance_check(check_for(world, replica, world.corpus[0], matches=True))
    assert (err.value.rule, err.value.clause) == ("FailConformanceCheck", 1) and replica.status == ReplicaStatus.recovering


@pytest.mark.allium("rule-failure.FailConformanceCheck.2")
def test_fail_conformance_check_requires_recovering() -> None:
    world = World(active=1)
    replica = world.replicas[0]
    with pytest.raises(Rejected) as err:
        world.clerk.fail_conformance_check(check_for(world, replica, world.corpus[0], matches=False))
    assert (err.value.rule, err.value.clause) == ("FailConformanceCheck", 2) and replica.status == ReplicaStatus.active


@pytest.mark.allium(
    "rule-success.FailConformance",
    "transition-edge.Replica.recovering.fenced",
    "when-set.FailConformance.Replica.fenced_at",
    "when-clear.FailConformance.Replica.recovery_started_at",
)
def test_fail_conformance() -> None:
    world, replica = fenced_world()
    world.clerk.recover_replica(RESPONDER, replica)
    world.clock.advance(7 * SECOND)
    assert world.clerk.conformance_replayed(replica, 10000, 1) is replica
    assert replica.status == ReplicaStatus.fenced
    assert replica.recovery_started_at is None
    assert replica.fenced_at == T0 + 7 * SECOND


@pytest.mark.allium("rule-failure.FailConformance.1")
def test_fail_conformance_requires_recovering() -> None:
    world = World(active=1)
    replica = world.replicas[0]
    with pytest.raises(Rejected) as err:
        world.clerk.fail_conformance(replica, 100, 3)
    assert (err.value.rule, err.value.clause) == ("FailConformance", 1)
    assert replica.status == ReplicaStatus.active and replica.fenced_at is None


@pytest.mark.allium("rule-failure.FailConformance.2")
def test_fail_conformance_requires_mismatch() -> None:
    world = World(active=0, recovering=1)
    replica = world.replicas[0]
    with pytest.raises(Rejected) as err:
        world.clerk.fail_conformance(replica, 100, 0)
    assert (err.value.rule, err.value.clause) == ("FailConformance", 2)
    assert replica.status == ReplicaStatus.recovering


@pytest.mark.allium("rule-success.RetireReplica", "transition-edge.Replica.fenced.retired")
def test_retire_replica() -> None:
    world, replica = fenced_world()
    assert world.clerk.retire_replica(RESPONDER, replica) is replica
    assert replica.status == ReplicaStatus.retired and replica.fenced_at is None
    replica.check_when_presence()
    assert replica not in world.clerk.eligible_replicas()


@pytest.mark.allium("rule-failure.RetireReplica.1")
def test_retire_replica_requires_responder() -> None:
    world, replica = fenced_world()
    with pytest.raises(Rejected) as err:
        world.clerk.retire_replica(OBSERVER, replica)
    assert (err.value.rule, err.value.clause) == ("RetireReplica", 1)
    assert replica.status == ReplicaStatus.fenced


@pytest.mark.allium("rule-failure.RetireReplica.2")
def test_retire_replica_requires_fenced() -> None:
    world = World(active=0, recovering=1)
    replica = world.replicas[0]
    with pytest.raises(Rejected) as err:
        world.clerk.retire_replica(RESPONDER, replica)
    assert (err.value.rule, err.value.clause) == ("RetireReplica", 2)
    assert replica.status == ReplicaStatus.recovering


# ---------------------------------------------------------------------------
# Surfaces
# ---------------------------------------------------------------------------


@pytest.mark.allium("surface-actor.ConformanceHarness")
def test_conformance_harness_faces_non_retired_replicas() -> None:
    world, replica = fenced_world()
    assert is_replica_host(replica)
    ConformanceHarness(world.clerk, replica)
    world.clerk.retire_replica(RESPONDER, replica)
    assert not is_replica_host(replica)
    with pytest.raises(AccessDenied, match=r"^ConformanceHarness requires #0 "):
        ConformanceHarness(world.clerk, replica)
    with pytest.raises(AccessDenied, match=r"^ConformanceHarness requires #0 "):
        ConformanceHarness(world.clerk, RESPONDER)  # type: ignore[arg-type]


@pytest.mark.allium("surface-exposure.ConformanceHarness", "surface-provides.ConformanceHarness")
def test_conformance_harness_exposes_and_provides() -> None:
    world, replica = fenced_world()
    harness = ConformanceHarness(world.clerk, replica)
    assert harness.exposes() == {"status": ReplicaStatus.fenced, "dissents": 1, "conformance_passed": RUN}
    assert harness.provides() == frozenset()
    with pytest.raises(AccessDenied, match=r"^ConformanceHarness requires #0 "):
        harness.conformance_replayed(10000, 1)
    with pytest.raises(AccessDenied, match=r"^ConformanceHarness requires #0 "):
        harness.conformance_digest(world.corpus[0], world.corpus[0].expected_digest)
    world.clerk.recover_replica(RESPONDER, replica)
    assert harness.provides() == frozenset({"ConformanceDigest", "ConformanceReplayed"})
    assert harness.exposes()["conformance_passed"] == 0
    for vector in world.corpus:
        assert harness.conformance_digest(vector, vector.expected_digest).matches
    assert harness.exposes() == {"status": ReplicaStatus.active, "dissents": 1, "conformance_passed": RUN}
    assert harness.provides() == frozenset()


@pytest.mark.allium("surface-actor.ReplicaMaintenance", "surface-actor.RoundInspection")
def test_responder_surfaces_face_responders_only() -> None:
    world, replica = fenced_world()
    assert is_replica_responder(RESPONDER) and not is_replica_responder(OBSERVER)
    ReplicaMaintenance(world.clerk, RESPONDER, replica)
    with pytest.raises(AccessDenied, match=r"^ReplicaMaintenance requires #0 "):
        ReplicaMaintenance(world.clerk, OBSERVER, replica)
    round = world.open("req-x")
    RoundInspection(world.clerk, RESPONDER, round)
    with pytest.raises(AccessDenied, match=r"^RoundInspection requires #0 "):
        RoundInspection(world.clerk, OBSERVER, round)
    agreed = world.clerk.rounds[0]
    with pytest.raises(AccessDenied, match=r"^RoundInspection requires #0 "):  # context: Round where status = collecting
        RoundInspection(world.clerk, RESPONDER, agreed)


@pytest.mark.allium("surface-exposure.ReplicaMaintenance", "surface-provides.ReplicaMaintenance")
def test_replica_maintenance_exposes_and_provides() -> None:
    world, replica = fenced_world()
    surface = ReplicaMaintenance(world.clerk, RESPONDER, replica)
    view = surface.exposes()
    assert view == {"replica_id": "node-3", "status": ReplicaStatus.fenced, "dissents": 1, "fenced_at": T0}
    assert surface.provides() == frozenset({"RecoverReplica", "RetireReplica"})
    surface.recover()
    view = surface.exposes()
    assert "fenced_at" not in view and view["recovery_started_at"] == T0
    assert view["status"] == ReplicaStatus.recovering
    assert surface.provides() == frozenset()
    active = ReplicaMaintenance(world.clerk, RESPONDER, world.replicas[0])
    assert active.provides() == frozenset()
    assert set(active.exposes()) == {"replica_id", "status", "dissents"}
    world.clerk.fail_conformance(replica, 1, 1)
    assert surface.provides() == frozenset({"RecoverReplica", "RetireReplica"})
    surface.retire()
    assert replica.status == ReplicaStatus.retired and surface.provides() == frozenset()


@pytest.mark.allium("surface-exposure.RoundInspection")
def test_round_inspection_exposes_round_and_votes() -> None:
    world = World(active=3)
    round = world.open()
    world.clock.advance(timedelta(milliseconds=2))
    vote = world.vote(round, world.replicas[0])
    view = RoundInspection(world.clerk, RESPONDER, round).exposes()
    assert view == {
        "request_id": "req-1",
        "attempt": 1,
        "stalled": False,
        "opened_at": T0,
        "votes": [{"replica_id": "node-1", "digest": vote.digest, "cast_at": T0 + timedelta(milliseconds=2)}],
    }
    assert RoundInspection.TIMEOUTS == ("RedispatchSlowRound", "StallRound")
    world.clock.advance(SECOND)
    fired = RoundInspection(world.clerk, RESPONDER, round).fire_timeouts()
    assert len(fired) == 1 and isinstance(fired[0], DispatchRound)


# ---------------------------------------------------------------------------
# Whole-flow invariant check after every state-changing rule
# ---------------------------------------------------------------------------


@pytest.mark.allium(
    "invariant.CommitsHaveQuorum",
    "invariant.OneVotePerReplicaPerRound",
    "invariant.OneRoundPerAttempt",
    "invariant.QuorumOutnumbersFaults",
    "invariant.ReplicaPerNode",
)
def test_invariants_hold_after_every_step() -> None:
    world = World(active=2, recovering=1)
    clerk = world.clerk
    steps: list[Any] = []

    def check_all() -> None:
        check_commits_have_quorum(clerk.rounds, clerk.config)
        check_one_vote_per_replica_per_round(clerk.votes)
        check_one_round_per_attempt(clerk.rounds)
        check_quorum_outnumbers_faults(clerk.config)
        check_replica_per_node(clerk.replicas)
        clerk.check_invariants()

    clerk.subscribe(lambda e: check_all())
    round = world.open()
    check_all()
    world.vote(round, world.replicas[0], delta=500)
    check_all()
    world.qualify(world.replicas[2])
    check_all()
    world.clock.advance(SECOND)
    steps.extend(clerk.tick())
    check_all()
    world.vote(round, world.replicas[2], delta=9)  # dissent, no quorum yet
    check_all()
    world.vote(round, world.replicas[1], delta=500)  # agreement, fence node-3
    check_all()
    clerk.commit_round(commit(world.submitted[-1], world.clock.now))
    check_all()
    clerk.recover_replica(RESPONDER, world.replicas[2])
    check_all()
    world.qualify(world.replicas[2])
    check_all()
    divergent = world.open("req-2")
    for i, replica in enumerate(world.replicas):
        world.vote(divergent, replica, delta=i)
        check_all()
    clerk.supersede_on_epoch_change(EpochGrant(epoch=5, node_id="node-1", granted_at=world.clock.now))
    check_all()
    clerk.check_fencing_is_audited()
    assert round.status == RoundStatus.committed
    assert world.replicas[2].dissents == 1 and world.replicas[2].status == ReplicaStatus.active
    assert len(steps) == 1


# ---------------------------------------------------------------------------
# End to end with the real Arbiter as every replica's evaluator
# ---------------------------------------------------------------------------


@pytest.mark.allium("rule-success.CastVote", "rule-success.ReachAgreement")
def test_round_with_real_arbiter_replicas_agrees() -> None:
    from ledger.arbiter import decide_evaluation

    world = World(active=3)
    clerk = world.clerk

    def replica_evaluates(evaluation: Any) -> None:
        decide_evaluation(evaluation)
        clerk.on_evaluation_decided(evaluation)

    clerk.on_evaluation = replica_evaluates
    round = world.open("req-e2e")
    assert round.status == RoundStatus.agreed
    assert len(round.votes) == 3 and len(round.support(round.agreed_digest)) == 3
    proposal = world.submitted[-1]
    assert proposal.verdict == Verdict.accepted and proposal.reason is None
    assert proposal.account_delta_minor == 500 and proposal.counterparty_delta_minor == 0
    assert all(r.status == ReplicaStatus.active and r.dissents == 0 for r in world.replicas)
    clerk.on_proposal_status(commit(proposal, world.clock.now))
    assert round.status == RoundStatus.committed
    clerk.check_invariants()


# ---------------------------------------------------------------------------
# Evaluation faults: CastFaultVote, FaultRound
# ---------------------------------------------------------------------------


def fault(evaluation: Any, cause: str = "TypeError: boom") -> Any:
    """Play the replica's host: the Arbiter signalled EvaluationFault (RecordEvaluationFault)."""
    status = evaluation.status
    evaluation.fault = cause
    evaluation.status = type(status)("faulted") if isinstance(status, enum.Enum) else "faulted"
    return evaluation


def fault_vote(world: World, round: Round, replica: Replica) -> Vote:
    return world.clerk.cast_fault_vote(fault(world.evaluation_of(round, replica)))


@pytest.mark.allium("rule-success.CastFaultVote", "rule-entity-creation.CastFaultVote.1")
def test_a_faulted_evaluation_casts_a_fault_vote() -> None:
    world = World(active=3)
    round = world.open()
    world.clock.advance(SECOND)
    vote = world.clerk.on_evaluation_faulted(fault(world.evaluation_of(round, world.replicas[0])))
    assert vote is not None and vote in round.votes and vote in world.clerk.votes
    assert vote.round is round and vote.replica is world.replicas[0] and vote.cast_at == T0 + SECOND
    assert vote.digest == fault_digest(round.request, round.attempt)
    assert vote.digest != decision_digest_of("client-1", "req-1", 1, Verdict.rejected, None, 0, 0)
    assert (vote.verdict, vote.reason, vote.account_delta_minor, vote.counterparty_delta_minor) == (
        Verdict.rejected, None, 0, 0)
    assert fault_digest(round.request, 2) != vote.digest  # specific to the attempt
    assert round.status == RoundStatus.collecting and world.submitted == []


@pytest.mark.allium("rule-failure.CastFaultVote.1")
def test_cast_fault_vote_requires_a_faulted_evaluation() -> None:
    world = World(active=3)
    round = world.open()
    with pytest.raises(Rejected) as err:
        world.clerk.cast_fault_vote(world.evaluation_of(round, world.replicas[0]))
    assert (err.value.rule, err.value.clause) == ("CastFaultVote", 1) and round.votes == []


@pytest.mark.allium("rule-failure.CastFaultVote.2")
def test_cast_fault_vote_requires_a_round() -> None:
    world = World(active=3)
    round = world.open()
    evaluation = fault(world.evaluation_of(round, world.replicas[0]))
    evaluation.attempt = 9
    with pytest.raises(Rejected) as err:
        world.clerk.cast_fault_vote(evaluation)
    assert (err.value.rule, err.value.clause) == ("CastFaultVote", 2) and round.votes == []


@pytest.mark.allium("rule-failure.CastFaultVote.3")
def test_cast_fault_vote_requires_a_known_replica() -> None:
    world = World(active=3)
    round = world.open()
    evaluation = fault(world.evaluation_of(round, world.replicas[0]))
    evaluation.replica_id = "stranger"
    with pytest.raises(Rejected) as err:
        world.clerk.cast_fault_vote(evaluation)
    assert (err.value.rule, err.value.clause) == ("CastFaultVote", 3) and round.votes == []


@pytest.mark.allium("rule-failure.CastFaultVote.4")
def test_cast_fault_vote_once_per_replica() -> None:
    world = World(active=3)
    round = world.open()
    evaluation = fault(world.evaluation_of(round, world.replicas[0]))
    world.clerk.cast_fault_vote(evaluation)
    with pytest.raises(Rejected) as err:
        world.clerk.cast_fault_vote(evaluation)
    assert (err.value.rule, err.value.clause) == ("CastFaultVote", 4) and len(round.votes) == 1


@pytest.mark.allium("rule-failure.ReachAgreement.2")
def test_a_fault_vote_is_never_proposed() -> None:
    world = World(active=3)
    round = world.open()
    first = fault_vote(world, round, world.replicas[0])
    assert round.status == RoundStatus.collecting
    with pytest.raises(Rejected) as err:
        world.clerk.reach_agreement(first)
    assert (err.value.rule, err.value.clause) == ("ReachAgreement", 2)  # refused before support is even counted
    fault_vote(world, round, world.replicas[1])
    assert round.status == RoundStatus.diverged  # a quorum of faults diverges (FaultRound)...
    assert world.submitted == []  # ...and is never proposed


@pytest.mark.allium(
    "rule-success.FaultRound",
    "rule-chained.FaultRound.RoundDiverged",
    "transition-edge.Round.collecting.diverged",
)
def test_f_plus_one_faults_diverge_the_attempt_and_end_in_quarantine() -> None:
    """A deterministic bug: every honest replica faults on every attempt. The answer is a
    quarantine with an incident, never a rejection reason the input did not earn."""
    world = World(active=3)
    current = world.open()
    for attempt in (1, 2, 3):
        assert current.attempt == attempt
        fault_vote(world, current, world.replicas[0])
        fault_vote(world, current, world.replicas[1])
        assert current.status == RoundStatus.diverged
        assert any(isinstance(e, RoundDiverged) and e.round is current for e in world.heard)
        if attempt < 3:
            current = world.clerk.find_round(current.request, attempt + 1)
            assert current is not None
    [proposal] = world.submitted
    assert proposal.reason == RejectReason.quarantined and proposal.verdict == Verdict.rejected
    assert world.clerk.incidents[-1].round is current
    assert all(r.status == ReplicaStatus.active for r in world.replicas)  # a bug is not a bad node
    world.clerk.check_invariants()


@pytest.mark.allium("rule-failure.FaultRound.1")
def test_fault_round_requires_collecting() -> None:
    world = World(active=3)
    round, _ = agreed_round(world)
    late = fault_vote(world, round, world.replicas[2])
    with pytest.raises(Rejected) as err:
        world.clerk.fault_round(late)
    assert (err.value.rule, err.value.clause) == ("FaultRound", 1) and round.status == RoundStatus.agreed


@pytest.mark.allium("rule-failure.FaultRound.2")
def test_fault_round_requires_a_fault_vote() -> None:
    world = World(active=3)
    round = world.open()
    vote = world.vote(round, world.replicas[0])
    with pytest.raises(Rejected) as err:
        world.clerk.fault_round(vote)
    assert (err.value.rule, err.value.clause) == ("FaultRound", 2) and round.status == RoundStatus.collecting


@pytest.mark.allium("rule-failure.FaultRound.3")
def test_one_fault_is_a_dissent_not_a_diverged_round() -> None:
    """A fault only one replica hits is a bad node: the others agree and it is fenced."""
    world = World(active=3)
    round = world.open()
    lone = fault_vote(world, round, world.replicas[0])
    with pytest.raises(Rejected) as err:
        world.clerk.fault_round(lone)
    assert (err.value.rule, err.value.clause) == ("FaultRound", 3) and round.status == RoundStatus.collecting
    world.vote(round, world.replicas[1])
    world.vote(round, world.replicas[2])
    assert round.status == RoundStatus.agreed and world.submitted[-1].account_delta_minor == 500
    assert world.replicas[0].status == ReplicaStatus.fenced
    world.clerk.check_fencing_is_audited()


# ---------------------------------------------------------------------------
# Signed votes, end to end with the Ledger
# ---------------------------------------------------------------------------

KEYS = {"node-1": "k1", "node-2": "k2", "node-3": "k3"}


def replica_nodes(replica_id: str, statement: bytes) -> str:
    """Each replica's own node signing with its own key (the Clerk holds none)."""
    return vote_signature(KEYS[replica_id], statement)


class Wired:
    """A Clerk whose proposals and endorsements go to a real LedgerStore, with keys provisioned.

    The Ledger's rows match the read set the tests hand the replicas (acc-1:
    active, balance 1,000, version 7), so an honest quorum's votes verify.
    """

    def __init__(self, signer: Any = replica_nodes) -> None:
        self.world = World(active=3)
        self.store = LedgerStore(clock=self.world.clock)
        self.world.journal.epoch = 0
        create_epoch_claim(self.store, EpochClaim(node_id="n1", expected_epoch=0))
        self.world.clerk.journal = self.store.journal
        for replica_id, key in KEYS.items():
            create_replica_key(self.store, ReplicaKey(replica_id=replica_id, key=key))
        from ledger.core import Account

        self.store.core.accounts["acc-1"] = Account(account_id="acc-1", owner="o", balance_minor=1_000, version=7,
                                                    opened_at=T0)
        clerk = self.world.clerk
        clerk.signer = signer
        clerk.on_endorsement = self.store.create_endorsement
        clerk.on_proposal = self.store.submit_proposal


@pytest.mark.allium("rule-success.CastVote", "rule-entity-creation.ReachAgreement.1")
def test_an_honest_quorum_signs_and_the_ledger_commits() -> None:
    wired = Wired()
    world = wired.world
    round = world.open()
    v1 = world.vote(round, world.replicas[0])
    assert v1.signature == vote_signature("k1", vote_statement_of(world.evaluation_of(round, world.replicas[0]),
                                                                  v1.read_set_digest))
    world.vote(round, world.replicas[1])
    proposal = world.clerk.proposals[-1]
    assert proposal.status == ProposalStatus.committed
    assert wired.store.account("acc-1").balance_minor == 1_500


@pytest.mark.allium("rule-success.CastVote")
def test_a_coordinator_without_the_keys_commits_nothing() -> None:
    """The coordinator signs for the replicas itself (it has no keys): the Ledger refuses."""
    wired = Wired(signer=lambda replica_id, statement: vote_signature("coordinator", statement))
    world = wired.world
    round = world.open()
    world.vote(round, world.replicas[0])
    world.vote(round, world.replicas[1])
    assert round.status == RoundStatus.agreed
    assert world.clerk.proposals[-1].status == ProposalStatus.conflicted
    assert wired.store.account("acc-1").balance_minor == 1_000


@pytest.mark.allium("rule-success.CastVote")
def test_a_wrong_read_set_is_refused_even_with_honest_signatures() -> None:
    """The coordinator (or a cache bug) hands the replicas balance 100 at the right version
    (the store holds 1,000): honest replicas reject a withdrawal of 500 as insufficient_funds.
    The rejection moves no money, but it is a wrong answer; the signed read-set digest
    differs from the store's rows, so it is refused as conflicted and the round re-runs."""
    wired = Wired()
    world = wired.world
    read = make_read(make_request("req-w", amount=500, kind=OperationKind.withdraw))
    read.primary_balance_minor = 100
    round = world.clerk.open_round(read)
    for replica in world.replicas[:2]:
        world.vote(round, replica, verdict=Verdict.rejected, reason=RejectReason.insufficient_funds)
    proposal = world.clerk.proposals[-1]
    assert proposal.reason == RejectReason.insufficient_funds
    assert proposal.status == ProposalStatus.conflicted
    assert wired.store.outcome_for("client-1", "req-w") is None


# ---------------------------------------------------------------------------
# Normative test vectors (CastVote, CastFaultVote, QuarantineRequest @guidance)
# ---------------------------------------------------------------------------
# The hex strings are copied from the spec; spaces there separate fields.

D1_BYTES = bytes.fromhex(
    "6c65646765722e636c65726b2e6465636973696f6e2e763100" "00000003632d31" "00000003722d35"
    "0000000000000002" "000000086163636570746564" "00" "fffffffffffffd44" "00000000000002bc"
)
D1_DIGEST = "09d45cd4fc6d588965a289071f70e50201b7535be800f8e8ad72631ec6fdd557"
D2_DIGEST = "21e09e31c0fec2d6e9f56f8d73fae7e1e8cd9e40dbf57487314cfa63e57f1694"
F1_BYTES = bytes.fromhex(
    "6c65646765722e636c65726b2e6661756c742e763100" "00000003632d31" "00000003722d37" "0000000000000003"
)
F1_DIGEST = "7b5c5a0056f67866fa75438035f64a162c6dbce1f1d94d6cd45dbe4a5b9870fd"
Q1_BYTES = bytes.fromhex(
    "6c65646765722e636c65726b2e71756172616e74696e652e763100" "00000003632d31" "00000003722d37"
    "0000000872656a6563746564" "010000000b71756172616e74696e6564" "0000000000000000" "0000000000000000"
)
Q1_DIGEST = "6076bd809dbda5fea2d34f24aeb7a89bc13b9282f08fc6d66f5318e39bb91574"


def c1_request(request_id: str) -> Request:
    """A request of client "c-1", as the spec's vectors use."""
    return dataclasses.replace(make_request(request_id), client_id="c-1")


@pytest.mark.allium("rule-success.CastVote", "rule-entity-creation.CastVote.1")
def test_decision_digest_vector_d1_through_a_cast_vote() -> None:
    assert hashlib.sha256(D1_BYTES).hexdigest() == D1_DIGEST  # the spec's bytes and digest agree
    assert decision_digest_of("c-1", "r-5", 2, Verdict.accepted, None, -700, 700) == D1_DIGEST
    world = World(active=3)
    round = world.clerk.open_round(make_read(c1_request("r-5"), attempt=2))
    evaluation = decide(world.evaluation_of(round, world.replicas[0]), delta=-700)
    evaluation.counterparty_delta_minor = 700
    assert decision_digest(evaluation) == D1_DIGEST
    vote = world.clerk.cast_vote(evaluation)
    assert vote.digest == D1_DIGEST  # the vote the replica ships is the normative digest
    assert (vote.account_delta_minor, vote.counterparty_delta_minor) == (-700, 700)


@pytest.mark.allium("rule-success.CastVote")
def test_decision_digest_vector_d2_with_a_reason() -> None:
    assert decision_digest_of(
        "c-1", "r-6", 1, Verdict.rejected, RejectReason.insufficient_funds, 0, 0
    ) == D2_DIGEST
    # verdict and reason may be given by name: the encoding is of the name
    assert decision_digest_of("c-1", "r-6", 1, "rejected", "insufficient_funds", 0, 0) == D2_DIGEST
    # each bound field changes the digest (key, attempt and Decision are all hashed)
    variants = [
        ("c-2", "r-6", 1, Verdict.rejected, RejectReason.insufficient_funds, 0, 0),
        ("c-1", "r-7", 1, Verdict.rejected, RejectReason.insufficient_funds, 0, 0),
        ("c-1", "r-6", 2, Verdict.rejected, RejectReason.insufficient_funds, 0, 0),
        ("c-1", "r-6", 1, Verdict.accepted, RejectReason.insufficient_funds, 0, 0),
        ("c-1", "r-6", 1, Verdict.rejected, None, 0, 0),
        ("c-1", "r-6", 1, Verdict.rejected, RejectReason.insufficient_funds, 1, 0),
        ("c-1", "r-6", 1, Verdict.rejected, RejectReason.insufficient_funds, 0, 1),
    ]
    assert all(decision_digest_of(*v) != D2_DIGEST for v in variants)


@pytest.mark.allium("rule-success.CastFaultVote", "rule-entity-creation.CastFaultVote.1")
def test_fault_digest_vector_f1_through_a_fault_vote() -> None:
    assert hashlib.sha256(F1_BYTES).hexdigest() == F1_DIGEST  # the spec's bytes and digest agree
    assert fault_digest(c1_request("r-7"), 3) == F1_DIGEST
    world = World(active=3)
    round = world.clerk.open_round(make_read(c1_request("r-7"), attempt=3))
    vote = world.clerk.cast_fault_vote(fault(world.evaluation_of(round, world.replicas[0])))
    assert vote.digest == F1_DIGEST
    assert fault_digest(c1_request("r-7"), 2) != F1_DIGEST


@pytest.mark.allium("rule-success.QuarantineRequest", "rule-entity-creation.QuarantineRequest.1")
def test_quarantine_digest_vector_q1_whatever_the_attempt() -> None:
    assert hashlib.sha256(Q1_BYTES).hexdigest() == Q1_DIGEST  # the spec's bytes and digest agree
    assert quarantine_digest(c1_request("r-7")) == Q1_DIGEST
    for max_attempts in (3, 1):
        world = World(active=3, config=Config(conformance_vectors=RUN, max_attempts=max_attempts))
        round = world.clerk.open_round(make_read(c1_request("r-7"), attempt=max_attempts))
        round.transition_to(RoundStatus.diverged)
        proposal = world.clerk.quarantine_request(round)
        assert proposal.digest == Q1_DIGEST and proposal.attempt == max_attempts
        assert world.submitted == [proposal]


# ---------------------------------------------------------------------------
# Limits are inclusive (settled decision "Are the Clerk's thresholds inclusive?")
# ---------------------------------------------------------------------------


@pytest.mark.allium("invariant.QuorumOutnumbersFaults")
def test_the_default_shaped_config_starts() -> None:
    clerk = Clerk(Journal(epoch=1), clock=FakeClock(),
                  config=Config(fault_budget=1, replica_count=3, commit_quorum=2))
    assert (clerk.config.fault_budget, clerk.config.replica_count, clerk.config.commit_quorum) == (1, 3, 2)
    check_quorum_outnumbers_faults(clerk.config)
    clerk.check_invariants()


@pytest.mark.allium("invariant.QuorumOutnumbersFaults")
@pytest.mark.parametrize(
    ("f", "n", "q", "needs"),
    [
        (1, 3, 1, ["commit_quorum >= 2"]),
        (1, 3, 3, ["replica_count >= 4"]),
        (2, 1, 1, ["commit_quorum >= 3", "replica_count >= 5"]),
        (-1, 1, 1, []),
    ],
)
def test_an_unsafe_config_is_refused_naming_values_and_needs(f: int, n: int, q: int, needs: list[str]) -> None:
    config = Config(fault_budget=f, replica_count=n, commit_quorum=q)
    with pytest.raises(InvariantViolation) as err:
        Clerk(Journal(epoch=1), clock=FakeClock(), config=config)
    message = str(err.value)
    assert message.startswith("QuorumOutnumbersFaults: ")
    for part in (f"fault_budget={f}", f"replica_count={n}", f"commit_quorum={q}", *needs):
        assert part in message
    with pytest.raises(InvariantViolation, match=r"^QuorumOutnumbersFaults: "):
        check_quorum_outnumbers_faults(config)


@pytest.mark.allium("rule-success.ReachAgreement", "rule-failure.ReachAgreement.4")
def test_exactly_commit_quorum_matching_digests_agree() -> None:
    config = Config(fault_budget=1, replica_count=4, commit_quorum=3, conformance_vectors=RUN)
    world = World(active=4, config=config)
    round = world.open()
    first = world.vote(round, world.replicas[0])
    second = world.vote(round, world.replicas[1])
    assert round.status == RoundStatus.collecting and world.submitted == []
    with pytest.raises(Rejected) as err:  # one fewer than commit_quorum does not agree
        world.clerk.reach_agreement(second)
    assert (err.value.rule, err.value.clause) == ("ReachAgreement", 4)
    third = world.vote(round, world.replicas[2])
    assert round.status == RoundStatus.agreed and round.agreed_digest == first.digest == third.digest
    assert len(world.submitted) == 1 and world.submitted[0].digest == first.digest


@pytest.mark.allium("temporal.RedispatchSlowRound", "temporal.StallRound",
                    "rule-failure.StallRound.3", "rule-failure.RedispatchSlowRound.2")
def test_eligible_replicas_equal_to_the_quorum_redispatch_and_one_fewer_stall() -> None:
    world = World(active=3)
    world.replicas[2].node.status = NodeStatus.down
    round = world.open()
    assert len(world.clerk.eligible_replicas()) == world.clerk.config.commit_quorum == 2
    world.clock.advance(SECOND)  # now == deadline: the temporal trigger fires at it
    with pytest.raises(Rejected) as err:
        world.clerk.stall_round(round)
    assert (err.value.rule, err.value.clause) == ("StallRound", 3)
    fired = world.clerk.tick()
    assert [type(e) for e in fired] == [DispatchRound] and fired[0].round is round
    assert not round.stalled and round.deadline == world.clock.now + SECOND
    world.replicas[1].node.status = NodeStatus.down  # one eligible replica, below the quorum
    world.clock.advance(SECOND)
    with pytest.raises(Rejected) as err:
        world.clerk.redispatch_slow_round(round)
    assert (err.value.rule, err.value.clause) == ("RedispatchSlowRound", 2)
    fired = world.clerk.tick()
    assert [type(e) for e in fired] == [QuorumUnavailable] and fired[0].round is round
    assert round.stalled and round.status == RoundStatus.collecting
    assert world.clerk.tick() == []  # does not re-fire


@pytest.mark.allium("rule-success.DivergeRound", "rule-failure.DivergeRound.3")
def test_a_round_diverges_once_counted_votes_equal_eligible_replicas() -> None:
    world = World(active=3)
    round = world.open()
    world.vote(round, world.replicas[0], delta=1)
    second = world.vote(round, world.replicas[1], delta=2)
    with pytest.raises(Rejected) as err:
        world.clerk.diverge_round(second)
    assert (err.value.rule, err.value.clause) == ("DivergeRound", 3)
    assert round.status == RoundStatus.collecting
    world.vote(round, world.replicas[2], delta=3)
    assert round.status == RoundStatus.diverged


@pytest.mark.allium("rule-success.CountConformance", "rule-success.PassConformance",
                    "transition-edge.Replica.recovering.active")
def test_the_last_matching_check_returns_the_replica_and_the_one_before_only_counts() -> None:
    world, replica = recovering_world()
    assert world.clerk.config.conformance_vectors == 3
    seen = []
    for vector in world.corpus:
        world.clerk.conformance_digest(replica, vector, vector.expected_digest)
        seen.append((replica.status, replica.conformance_passed))
    assert seen == [(ReplicaStatus.recovering, 1), (ReplicaStatus.recovering, 2), (ReplicaStatus.active, 3)]
    assert replica.recovery_started_at is None and replica.fenced_at is None


@pytest.mark.allium("rule-success.RetryDivergedRound", "rule-failure.RetryDivergedRound.1",
                    "rule-failure.QuarantineRequest.1")
def test_an_attempt_below_max_attempts_is_retried_and_the_one_equal_is_quarantined() -> None:
    world = World(active=3)
    assert world.clerk.config.max_attempts == 3
    second = world.clerk.open_round(make_read(attempt=2))
    second.transition_to(RoundStatus.diverged)
    with pytest.raises(Rejected) as err:
        world.clerk.quarantine_request(second)
    assert (err.value.rule, err.value.clause) == ("QuarantineRequest", 1)
    third = world.clerk.retry_diverged_round(second)
    assert third is world.clerk.find_round(make_request(), 3)
    assert (third.attempt, third.read_set, third.status) == (3, second.read_set, RoundStatus.collecting)
    third.transition_to(RoundStatus.diverged)
    with pytest.raises(Rejected) as err:
        world.clerk.retry_diverged_round(third)
    assert (err.value.rule, err.value.clause) == ("RetryDivergedRound", 1)
    proposal = world.clerk.quarantine_request(third)
    assert proposal is world.submitted[-1] and proposal.attempt == 3
    assert world.clerk.find_round(make_request(), 4) is None


# ---------------------------------------------------------------------------
# Refusals name the rule and clause (clause 0: the trigger does not apply)
# ---------------------------------------------------------------------------


@pytest.mark.allium("rule-failure.CommitRound.1", "rule-failure.SupersedeRefused.1")
def test_proposal_rules_refuse_a_status_they_do_not_handle() -> None:
    world = World(active=3)
    round, proposal = agreed_round(world)
    assert proposal.status == ProposalStatus.pending
    with pytest.raises(Rejected) as err:
        world.clerk.commit_round(proposal)
    assert (err.value.rule, err.value.clause) == ("CommitRound", 0)
    with pytest.raises(Rejected) as err:
        world.clerk.supersede_refused(proposal)
    assert (err.value.rule, err.value.clause) == ("SupersedeRefused", 0)
    commit(proposal, world.clock.now)
    with pytest.raises(Rejected) as err:
        world.clerk.supersede_refused(proposal)
    assert (err.value.rule, err.value.clause) == ("SupersedeRefused", 0)
    assert round.status == RoundStatus.agreed and round.committed_at is None
    for refused in (ProposalStatus.duplicate, ProposalStatus.conflicted, ProposalStatus.fenced):
        other = World(active=3)
        other_round, other_proposal = agreed_round(other)
        other_proposal.status = refused
        with pytest.raises(Rejected) as err:
            other.clerk.commit_round(other_proposal)
        assert (err.value.rule, err.value.clause) == ("CommitRound", 0)
        assert other.clerk.on_proposal_status(other_proposal) is other_round
        assert other_round.status == RoundStatus.superseded and other_round.agreed_digest is None


@pytest.mark.allium("rule-failure.BeginRecoveryOnRejoin.1")
def test_begin_recovery_refuses_a_node_that_is_not_joining() -> None:
    world, replica = fenced_world()
    for status in (NodeStatus.backup, NodeStatus.down, NodeStatus.primary):
        replica.node.status = status
        with pytest.raises(Rejected) as err:
            world.clerk.begin_recovery_on_rejoin(replica.node)
        assert (err.value.rule, err.value.clause) == ("BeginRecoveryOnRejoin", 0)
        assert replica.status == ReplicaStatus.fenced and replica.recovery_started_at is None
    replica.node.status = NodeStatus.joining
    assert world.clerk.on_node_joining(replica.node) is replica
    assert replica.status == ReplicaStatus.recovering


@pytest.mark.allium("temporal.RedispatchSlowRound", "temporal.StallRound")
def test_timeout_rules_refuse_before_the_deadline() -> None:
    world = World(active=3)
    world.replicas[1].node.status = NodeStatus.down
    world.replicas[2].node.status = NodeStatus.down
    round = world.open()
    world.clock.advance(SECOND - timedelta(microseconds=1))
    for rule, name in ((world.clerk.redispatch_slow_round, "RedispatchSlowRound"),
                       (world.clerk.stall_round, "StallRound")):
        with pytest.raises(Rejected) as err:
            rule(round)
        assert (err.value.rule, err.value.clause) == (name, 0)
    assert world.clerk.tick() == [] and not round.stalled and round.deadline == T0 + SECOND


@pytest.mark.allium("invariant.OneRoundPerAttempt")
def test_no_rule_opens_a_second_round_for_an_attempt() -> None:
    world = World(active=3)
    first = world.open()
    with pytest.raises(Rejected) as err:
        world.clerk.open_round(make_read())
    assert (err.value.rule, err.value.clause) == ("OpenRound", 0)
    first.transition_to(RoundStatus.diverged)
    world.clerk.open_round(make_read(attempt=2))
    with pytest.raises(Rejected) as err:
        world.clerk.retry_diverged_round(first)
    assert (err.value.rule, err.value.clause) == ("RetryDivergedRound", 0)
    assert [r.attempt for r in world.clerk.rounds] == [1, 2]
    check_one_round_per_attempt(world.clerk.rounds)


# ---------------------------------------------------------------------------
# ResumeStalledRounds (@guidance)
# ---------------------------------------------------------------------------


@pytest.mark.allium("rule-success.ResumeStalledRounds", "rule-chained.ResumeStalledRounds.DispatchRound")
def test_only_collecting_stalled_rounds_resume() -> None:
    world = World(active=3, recovering=1)
    clerk = world.clerk
    world.replicas[1].node.status = NodeStatus.down
    world.replicas[2].node.status = NodeStatus.down
    a, b, diverged, superseded = (world.open(f"req-{k}") for k in "abcd")
    world.clock.advance(SECOND)
    assert [type(e) for e in clerk.tick()] == [QuorumUnavailable] * 4
    diverged.transition_to(RoundStatus.diverged)
    superseded.transition_to(RoundStatus.superseded)
    fresh = world.open("req-e")  # collecting, not stalled
    world.clock.advance(timedelta(milliseconds=300))
    deadlines = {id(r): r.deadline for r in (diverged, superseded, fresh)}
    # fired for a replica that is not active, the rule is refused and changes nothing
    mark = len(clerk.events)
    with pytest.raises(Rejected) as err:
        clerk.resume_stalled_rounds(world.replicas[3])
    assert (err.value.rule, err.value.clause) == ("ResumeStalledRounds", 0)
    assert a.stalled and b.stalled and a.deadline == T0 + SECOND and len(clerk.events) == mark
    resumed = clerk.resume_stalled_rounds(world.replicas[0])
    assert resumed == [a, b]
    assert not a.stalled and not b.stalled
    assert a.deadline == b.deadline == world.clock.now + SECOND
    assert [(type(e), e.round) for e in clerk.events[mark:]] == [(DispatchRound, a), (DispatchRound, b)]
    assert {id(r): r.deadline for r in (diverged, superseded, fresh)} == deadlines
    assert diverged.stalled and superseded.stalled and not fresh.stalled


# ---------------------------------------------------------------------------
# ReachAgreement never proposes on a claimed digest alone (@guidance)
# ---------------------------------------------------------------------------


@pytest.mark.allium("rule-success.ReachAgreement")
def test_a_quorum_whose_payloads_do_not_hash_to_the_claim_proposes_nothing() -> None:
    world = World(active=3)
    round = world.open()
    claimed = decision_digest_of("client-1", "req-1", 1, Verdict.accepted, None, 500, 0)
    liars = []
    for replica in world.replicas[:2]:
        vote = Vote(round=round, replica=replica, digest=claimed, verdict=Verdict.accepted, reason=None,
                    account_delta_minor=9_999, counterparty_delta_minor=0, cast_at=T0)
        round.votes.append(vote)
        world.clerk.votes.append(vote)
        liars.append(vote)
    mark = len(world.clerk.events)
    with pytest.raises(Rejected) as err:
        world.clerk.reach_agreement(liars[1])
    assert (err.value.rule, err.value.clause) == ("ReachAgreement", 0)
    assert round.status == RoundStatus.collecting and round.agreed_digest is None
    assert world.submitted == [] and world.clerk.proposals == [] and world.clerk.endorsements == []
    assert world.clerk.events[mark:] == []
    assert all(r.status == ReplicaStatus.active for r in world.replicas)


# ---------------------------------------------------------------------------
# Returned values and emitted triggers, in order
# ---------------------------------------------------------------------------


@pytest.mark.allium("rule-chained.ReachAgreement.DissentDetected", "rule-chained.FenceDissenter.ReplicaFenced",
                    "rule-chained.AnnounceRound.DispatchRound")
def test_the_clerk_emits_its_triggers_in_order() -> None:
    world = World(active=3)
    clerk = world.clerk
    mark = len(clerk.events)
    round = world.open()
    assert [(type(e), e.round) for e in clerk.events[mark:]] == [(DispatchRound, round)]
    assert world.heard[-1] is clerk.events[-1]  # listeners hear what is recorded
    mark = len(clerk.events)
    world.vote(round, world.replicas[0], delta=500)
    dissent = world.vote(round, world.replicas[2], delta=9)
    assert clerk.events[mark:] == []
    world.vote(round, world.replicas[1], delta=500)
    emitted = clerk.events[mark:]
    assert [type(e) for e in emitted] == [DissentDetected, ReplicaFenced]
    assert emitted[0].vote is dissent
    assert (emitted[1].replica, emitted[1].round) == (world.replicas[2], round)
    late_world = World(active=3)
    late_round, _ = agreed_round(late_world)
    mark = len(late_world.clerk.events)
    late = late_world.vote(late_round, late_world.replicas[2], delta=1)
    assert [type(e) for e in late_world.clerk.events[mark:]] == [DissentDetected, ReplicaFenced]
    assert late_world.clerk.events[mark].vote is late


@pytest.mark.allium("rule-success.FenceDissenter", "rule-success.CountRepeatDissent",
                    "rule-success.FlagLateDissent", "rule-success.FaultRound", "rule-success.CommitRound",
                    "rule-success.RegisterReplica", "rule-success.RetireReplica", "rule-success.RecoverReplica")
def test_rules_return_what_they_made() -> None:
    world = World(active=3)
    clerk = world.clerk
    round, proposal = agreed_round(world)
    late = world.vote(round, world.replicas[2], delta=1)  # fenced by the chain
    assert world.replicas[2].status == ReplicaStatus.fenced
    flagged = clerk.flag_late_dissent(late)
    assert isinstance(flagged, DissentDetected) and flagged.vote is late
    counted = clerk.count_repeat_dissent(late)
    assert counted is world.replicas[2] and counted.dissents == 3  # fence, re-flag, this count
    committed = clerk.commit_round(commit(proposal, world.clock.now))
    assert committed is round and round.committed_at == world.clock.now
    recovered = clerk.recover_replica(RESPONDER, world.replicas[2])
    assert recovered is world.replicas[2]
    node = make_node("node-9")
    registered = clerk.register_replica(node)
    assert registered is clerk.find_replica("node-9") and registered.node is node
    fresh = World(active=3)
    fround = fresh.open()
    fresh.clerk.cast_fault_vote(fault(fresh.evaluation_of(fround, fresh.replicas[0])))
    fresh.clerk.cast_fault_vote(fault(fresh.evaluation_of(fround, fresh.replicas[1])))
    assert fround.status == RoundStatus.diverged
    assert [type(e) for e in fresh.clerk.events if isinstance(e, RoundDiverged)] == [RoundDiverged]
    direct_world = World(active=3)
    dround = direct_world.open()
    direct_world.clerk.cast_fault_vote(fault(direct_world.evaluation_of(dround, direct_world.replicas[0])))
    twin = Vote(round=dround, replica=direct_world.replicas[1], digest=fault_digest(dround.request, 1),
                verdict=Verdict.rejected, reason=None, account_delta_minor=0, counterparty_delta_minor=0,
                cast_at=T0)
    dround.votes.append(twin)
    event = direct_world.clerk.fault_round(twin)
    assert isinstance(event, RoundDiverged) and event.round is dround
    fenced = direct_world.clerk.fence_dissenter(twin)
    assert isinstance(fenced, ReplicaFenced) and fenced.replica is direct_world.replicas[1]
    assert fenced.round is dround
    retired = direct_world.clerk.retire_replica(RESPONDER, direct_world.replicas[1])
    assert retired is direct_world.replicas[1] and retired.status == ReplicaStatus.retired


@pytest.mark.allium("entity-relationship.Round.votes", "rule-success.CommitRound")
def test_rounds_belong_to_a_request_by_its_key() -> None:
    world = World(active=3)
    round = world.open()
    copy = make_request("req-1")
    assert copy is not round.request
    assert (copy.client_id, copy.request_id) == (round.request.client_id, round.request.request_id)
    assert world.clerk.find_round(copy, 1) is round
    assert world.clerk.find_round(make_request("req-2"), 1) is None
    assert world.clerk.find_round(copy, 2) is None
    evaluation = decide(world.evaluation_of(round, world.replicas[0]))
    assert world.clerk.find_evaluation(copy, 1, "node-1") is evaluation
    evaluation.request = copy
    vote = world.clerk.cast_vote(evaluation)
    assert vote.round is round and round.votes == [vote]
    world.vote(round, world.replicas[1])
    proposal = world.submitted[-1]
    proposal.request = make_request("req-1")
    assert world.clerk.commit_round(commit(proposal, world.clock.now)) is round
    assert round.status == RoundStatus.committed


# ---------------------------------------------------------------------------
# The combined check names each broken invariant and `when` field
# ---------------------------------------------------------------------------


def _committed_world() -> tuple[World, Round]:
    world = World(active=3)
    round, proposal = agreed_round(world)
    world.clerk.commit_round(commit(proposal, world.clock.now))
    world.clerk.check_invariants()
    return world, round


def _break_quorum(world: World, round: Round) -> None:
    round.votes.pop()


def _break_one_vote(world: World, round: Round) -> None:
    world.clerk.votes.append(dataclasses.replace(round.votes[0]))


def _break_one_round(world: World, round: Round) -> None:
    world.clerk.rounds.append(Round(request=make_request("req-1"), read_set=round.read_set, attempt=1,
                                    epoch=1, opened_at=T0, deadline=T0))


def _break_config(world: World, round: Round) -> None:
    world.clerk.config = Config(fault_budget=1, commit_quorum=1)


def _break_replica_per_node(world: World, round: Round) -> None:
    world.clerk.replicas.append(Replica(replica_id="twin", node=world.replicas[0].node,
                                        status=ReplicaStatus.recovering, recovery_started_at=T0))


def _set(attr: str, value: Any, target: str = "replica") -> Callable[[World, Round], None]:
    def breaker(world: World, round: Round) -> None:
        setattr(world.replicas[0] if target == "replica" else round, attr, value)
    return breaker


def _agreed_without_digest(world: World, round: Round) -> None:
    fresh = world.open("req-9")
    world.vote(fresh, world.replicas[0])
    world.vote(fresh, world.replicas[1])
    assert fresh.status == RoundStatus.agreed
    fresh.agreed_digest = None


def _collecting_with_digest(world: World, round: Round) -> None:
    world.open("req-9").agreed_digest = "ab" * 32


def _recovering_without_start(world: World, round: Round) -> None:
    replica = world.clerk.register_replica(make_node("node-9"))
    replica.recovery_started_at = None


def _combined_check_names(world: World, name: str) -> None:
    """The Clerk's combined check fails, naming exactly `name`."""
    with pytest.raises(InvariantViolation) as err:
        world.clerk.check_invariants()
    assert str(err.value).startswith(f"{name}: ")


@pytest.mark.allium("invariant.CommitsHaveQuorum")
def test_the_combined_check_names_commits_have_quorum() -> None:
    world, round = _committed_world()
    _break_quorum(world, round)
    with pytest.raises(InvariantViolation, match=r"^CommitsHaveQuorum: "):
        check_commits_have_quorum(world.clerk.rounds, world.clerk.config)
    _combined_check_names(world, "CommitsHaveQuorum")


@pytest.mark.allium("invariant.OneVotePerReplicaPerRound")
def test_the_combined_check_names_one_vote_per_replica_per_round() -> None:
    world, round = _committed_world()
    _break_one_vote(world, round)
    with pytest.raises(InvariantViolation, match=r"^OneVotePerReplicaPerRound: "):
        check_one_vote_per_replica_per_round(world.clerk.votes)
    _combined_check_names(world, "OneVotePerReplicaPerRound")


@pytest.mark.allium("invariant.OneRoundPerAttempt")
def test_the_combined_check_names_one_round_per_attempt() -> None:
    world, round = _committed_world()
    _break_one_round(world, round)
    with pytest.raises(InvariantViolation, match=r"^OneRoundPerAttempt: "):
        check_one_round_per_attempt(world.clerk.rounds)
    _combined_check_names(world, "OneRoundPerAttempt")


@pytest.mark.allium("invariant.QuorumOutnumbersFaults")
def test_the_combined_check_names_quorum_outnumbers_faults() -> None:
    world, round = _committed_world()
    _break_config(world, round)
    with pytest.raises(InvariantViolation, match=r"^QuorumOutnumbersFaults: "):
        check_quorum_outnumbers_faults(world.clerk.config)
    _combined_check_names(world, "QuorumOutnumbersFaults")


@pytest.mark.allium("invariant.ReplicaPerNode")
def test_the_combined_check_names_replica_per_node() -> None:
    world, round = _committed_world()
    _break_replica_per_node(world, round)
    with pytest.raises(InvariantViolation, match=r"^ReplicaPerNode: "):
        check_replica_per_node(world.clerk.replicas)
    _combined_check_names(world, "ReplicaPerNode")


@pytest.mark.allium(
    "when-presence.Replica.fenced_at",
    "when-presence.Replica.recovery_started_at",
    "when-presence.Round.agreed_digest",
    "when-presence.Round.committed_at",
)
@pytest.mark.parametrize(
    ("breaker", "name"),
    [
        (_set("fenced_at", T0), "Replica.fenced_at"),
        (_set("recovery_started_at", T0), "Replica.recovery_started_at"),
        (_recovering_without_start, "Replica.recovery_started_at"),
        (_set("committed_at", None, "round"), "Round.committed_at"),
        (_agreed_without_digest, "Round.agreed_digest"),
        (_collecting_with_digest, "Round.agreed_digest"),
    ],
    ids=["active-fenced_at", "active-recovery_started_at", "recovering-no-start", "committed-no-time",
         "agreed-no-digest", "collecting-digest"],
)
def test_the_combined_check_names_each_broken_when_field(breaker: Any, name: str) -> None:
    world, round = _committed_world()
    breaker(world, round)
    _combined_check_names(world, name)


@pytest.mark.allium("when-presence.Replica.fenced_at", "when-presence.Round.committed_at")
def test_when_fields_present_against_their_status_are_named() -> None:
    world, round = _committed_world()
    fenced_world_, replica = fenced_world()
    replica.fenced_at = None
    with pytest.raises(InvariantViolation, match=r"^Replica\.fenced_at: absent"):
        replica.check_when_presence()
    agreed_world = World(active=3)
    agreed, _ = agreed_round(agreed_world)
    agreed.committed_at = T0
    with pytest.raises(InvariantViolation, match=r"^Round\.committed_at: present"):
        agreed_world.clerk.check_invariants()


# ---------------------------------------------------------------------------
# FencingIsAudited (@guarantee of ReplicaMaintenance), broken each way alone
# ---------------------------------------------------------------------------


def _audited_world() -> tuple[World, Replica]:
    """node-3 fenced on a dissenting vote, recovered, and returned on compared checks."""
    world = World(active=3)
    round = world.open()
    world.vote(round, world.replicas[0])
    world.vote(round, world.replicas[2], delta=9)
    world.vote(round, world.replicas[1])
    replica = world.replicas[2]
    assert replica.status == ReplicaStatus.fenced
    world.clerk.check_fencing_is_audited()  # every fence the Clerk makes records its evidence
    world.clerk.recover_replica(RESPONDER, replica)
    world.qualify(replica)
    world.clerk.check_fencing_is_audited()
    return world, replica


def _fence_on_unrecorded_vote(world: World, replica: Replica) -> None:
    replica_vote = next(v for v in world.clerk.votes if v.replica is replica)
    stray = dataclasses.replace(replica_vote)
    world.clerk.fence_audit[0] = (replica, stray)


def _fence_on_unrecorded_check(world: World, replica: Replica) -> None:
    check = check_for(world, replica, world.corpus[0], matches=False)
    world.clerk.fence_audit.append((replica, check))


def _fence_on_other_replicas_vote(world: World, replica: Replica) -> None:
    other_vote = next(v for v in world.clerk.votes if v.replica is world.replicas[0])
    world.clerk.fence_audit[0] = (replica, other_vote)


def _fence_on_a_matching_check(world: World, replica: Replica) -> None:
    matching = next(c for c in world.clerk.conformance_checks if c.replica is replica and c.matches)
    world.clerk.fence_audit.append((replica, matching))


def _return_on_no_check(world: World, replica: Replica) -> None:
    world.clerk.return_audit[:] = [(r, c) for r, c in world.clerk.return_audit if r is not replica]


def _return_on_a_mismatching_check(world: World, replica: Replica) -> None:
    mismatch = check_for(world, replica, world.corpus[0], matches=False)
    world.clerk.return_audit.append((replica, mismatch))


def _return_on_an_earlier_recovery(world: World, replica: Replica) -> None:
    earlier = next(c for c in world.clerk.conformance_checks if c.replica is replica and c.recovery == 1)
    world.clerk.return_audit.append((replica, earlier))


@pytest.mark.allium("rule-success.FenceDissenter", "rule-success.PassConformance")
@pytest.mark.parametrize(
    "breaker",
    [
        _fence_on_unrecorded_vote,
        _fence_on_unrecorded_check,
        _fence_on_other_replicas_vote,
        _fence_on_a_matching_check,
        _return_on_no_check,
        _return_on_a_mismatching_check,
        _return_on_an_earlier_recovery,
    ],
)
def test_fencing_is_audited_breaks_each_way(breaker: Any) -> None:
    world, replica = _audited_world()
    breaker(world, replica)
    with pytest.raises(InvariantViolation, match=r"^FencingIsAudited: "):
        world.clerk.check_fencing_is_audited()


@pytest.mark.allium("rule-failure.PassConformance.3", "rule-success.PassConformance",
                    "rule-success.FailConformanceCheck")
def test_conformance_rules_return_the_replica_and_stand_on_the_limit() -> None:
    world, replica = recovering_world()
    world.clerk.conformance_digest(replica, world.corpus[0], world.corpus[0].expected_digest)
    assert replica.conformance_passed == RUN - 2
    # the match before the last one only counts: PassConformance refuses it
    with pytest.raises(Rejected) as err:
        world.clerk.pass_conformance(check_for(world, replica, world.corpus[1], matches=True))
    assert (err.value.rule, err.value.clause) == ("PassConformance", 3)
    assert replica.conformance_passed == RUN - 2 and replica.status == ReplicaStatus.recovering
    counted = world.clerk.count_conformance(check_for(world, replica, world.corpus[1], matches=True))
    assert counted is replica and replica.conformance_passed == RUN - 1
    passed = world.clerk.pass_conformance(check_for(world, replica, world.corpus[2], matches=True))
    assert passed is replica and replica.status == ReplicaStatus.active
    again, other = recovering_world()
    failed = again.clerk.fail_conformance_check(check_for(again, other, again.corpus[0], matches=False))
    assert failed is other and other.status == ReplicaStatus.fenced and other.fenced_at == again.clock.now


@pytest.mark.allium("surface-provides.ConformanceHarness", "rule-success.FailConformance")
def test_a_recovering_host_reports_a_failed_replay_through_the_harness() -> None:
    world, replica = recovering_world()
    reported = ConformanceHarness(world.clerk, replica).conformance_replayed(10, 2)
    assert reported is replica and replica.status == ReplicaStatus.fenced
    assert replica.recovery_started_at is None and replica.fenced_at == world.clock.now


@pytest.mark.allium("rule-success.ReachAgreement", "rule-success.DivergeRound")
def test_vote_rules_called_directly_return_their_result() -> None:
    world = World(active=3)
    round = world.open()
    first = world.vote(round, world.replicas[0])
    twin = Vote(round=round, replica=world.replicas[1], digest=first.digest, verdict=first.verdict,
                reason=None, account_delta_minor=first.account_delta_minor,
                counterparty_delta_minor=first.counterparty_delta_minor, cast_at=T0)
    round.votes.append(twin)
    world.clerk.votes.append(twin)
    proposal = world.clerk.reach_agreement(twin)
    assert proposal is world.submitted[-1] and proposal.digest == first.digest
    assert round.status == RoundStatus.agreed
    split = World(active=3)
    sround = split.open()
    votes = []
    for i, replica in enumerate(split.replicas):
        vote = Vote(round=sround, replica=replica, digest=f"{i}" * 64, verdict=Verdict.accepted, reason=None,
                    account_delta_minor=i, counterparty_delta_minor=0, cast_at=T0)
        sround.votes.append(vote)
        votes.append(vote)
    event = split.clerk.diverge_round(votes[-1])
    assert isinstance(event, RoundDiverged) and event.round is sround
    assert sround.status == RoundStatus.diverged
