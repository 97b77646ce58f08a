"""Tests for unit `cluster` (cluster.allium): node roles, failure detection, promotion, rejoin."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ledger.cluster import (
    TERMINAL,
    TRANSITIONS,
    Cluster,
    ClusterOperations,
    ClusterProvisioning,
    Config,
    InvariantViolation,
    LeadershipVacant,
    Node,
    NodeLifecycle,
    NodeStatus,
    PrimaryReady,
    Rejected,
    SurfaceDenied,
    TransitionError,
    check_leaders_are_live,
    check_no_node_ahead_of_journal,
    check_one_leader_per_epoch,
    check_serving_epoch_was_granted,
    is_cluster_responder,
    is_node_agent,
)
from ledger.core import Operator, OperatorRole
from ledger.ledger import EpochClaim, EpochClaimStatus, EpochGrant, Journal
from ledger.warden import Rebuild, RebuildStatus

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
TIMEOUT = Config().failure_timeout
TICK = timedelta(microseconds=1)


class FakeClock:
    """Injected clock: time moves only when a test says so."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


def make_rebuild_done(epoch: int, node_id: str, at: datetime = T0) -> Rebuild:
    """A warden/Rebuild whose status has become done."""
    return Rebuild(epoch=epoch, node_id=node_id, started_at=at, status=RebuildStatus.done, restored=0, finished_at=at)


class FakeLedger:
    """GrantEpoch / RefuseEpoch of ledger.allium, as a claim sink for the cluster."""

    def __init__(self, journal: Journal, clock: FakeClock, auto: bool = True) -> None:
        self.journal = journal
        self.clock = clock
        self.auto = auto
        self.cluster: Cluster | None = None
        self.pending: list[EpochClaim] = []
        self.grants: list[EpochGrant] = []

    def __call__(self, claim: EpochClaim) -> None:
        self.pending.append(claim)
        if self.auto:
            self.decide(claim)

    def decide(self, claim: EpochClaim) -> EpochGrant | None:
        assert self.cluster is not None
        if claim in self.pending:
            self.pending.remove(claim)
        if claim.expected_epoch == self.journal.epoch:  # the compare-and-set
            self.journal.epoch = claim.expected_epoch + 1
            self.journal.primary_node_id = claim.node_id
            claim.status = EpochClaimStatus.granted
            claim.granted_epoch = self.journal.epoch
            grant = EpochGrant(epoch=self.journal.epoch, node_id=claim.node_id, granted_at=self.clock())
            self.grants.append(grant)
            self.cluster.on_epoch_grant_created(grant)
            return grant
        claim.status = EpochClaimStatus.refused
        self.cluster.on_epoch_claim_refused(claim)
        return None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> Cluster:
    """An empty cluster whose claims are only collected (no Ledger attached)."""
    return Cluster(journal=Journal(epoch=0), clock=clock)


def add_node(cluster: Cluster, node_id: str, status: NodeStatus, **fields: Any) -> Node:
    """Place a Node in a given state directly (bypassing the rules that would get it there)."""
    node = Node(node_id=node_id, status=status, last_heartbeat_at=fields.pop("last_heartbeat_at", cluster.clock()), **fields)
    cluster.nodes.append(node)
    return node


def responder() -> Operator:
    return Operator(name="ops-1", role=OperatorRole.responder)


def observer() -> Operator:
    return Operator(name="viewer-1", role=OperatorRole.observer)


def wired(clock: FakeClock, epoch: int = 0, auto: bool = True) -> tuple[Cluster, FakeLedger]:
    """A cluster wired to a FakeLedger that decides claims as they are made."""
    journal = Journal(epoch=epoch)
    ledger = FakeLedger(journal, clock, auto=auto)
    cluster = Cluster(journal=journal, clock=clock, claim_sink=ledger)
    ledger.cluster = cluster
    return cluster, ledger


def bring_up(clock: FakeClock) -> tuple[Cluster, FakeLedger]:
    """Three nodes registered, caught up; n1 elected and primary; invariants checked at each step."""
    cluster, ledger = wired(clock)
    for node_id in ("n1", "n2", "n3"):
        cluster.register_node(node_id)
        cluster.assert_invariants()
    for node_id in ("n1", "n2", "n3"):
        cluster.catch_up_completed(cluster.node(node_id), observed_epoch=cluster.journal.epoch)
        cluster.assert_invariants()
    n1 = cluster.node("n1")
    cluster.on_rebuild_done(make_rebuild_done(n1.serving_epoch, "n1", clock()))
    cluster.assert_invariants()
    return cluster, ledger


def stepped_ids(cluster: Cluster) -> list[str]:
    """Nodes that are joining (stepped down or rejoining)."""
    return [n.node_id for n in cluster.nodes if n.status is NodeStatus.joining]


# Entity, derived values, config ---------------------------------------


@pytest.mark.allium("entity-fields.Node")
def test_node_declares_every_spec_field_with_its_type() -> None:
    hints = typing.get_type_hints(Node)
    names = [f.name for f in dataclasses.fields(Node)]
    assert names == [
        "node_id", "status", "last_heartbeat_at", "restarts", "catch_up_attempts",
        "claimed_epoch", "serving_epoch", "promoted_at", "down_since",
    ]
    assert hints["node_id"] is str
    assert hints["status"] is NodeStatus
    assert hints["last_heartbeat_at"] is datetime
    assert hints["restarts"] is int and hints["catch_up_attempts"] is int
    assert hints["claimed_epoch"] == int | None and hints["serving_epoch"] == int | None
    assert hints["promoted_at"] == datetime | None and hints["down_since"] == datetime | None
    assert {s.value for s in NodeStatus} == {
        "joining", "backup", "candidate", "recovering", "primary", "down", "retired",
    }
    node = Node(node_id="n1", status="backup", last_heartbeat_at=T0)  # type: ignore[arg-type]
    assert node.status is NodeStatus.backup
    assert (node.restarts, node.catch_up_attempts) == (0, 0)


@pytest.mark.allium("derived.Node.is_leader")
def test_is_leader_is_candidate_recovering_or_primary() -> None:
    leaders = {s for s in NodeStatus if Node(node_id="x", status=s, last_heartbeat_at=T0).is_leader}
    assert leaders == {NodeStatus.candidate, NodeStatus.recovering, NodeStatus.primary}


@pytest.mark.allium("derived.Node.is_live")
def test_is_live_is_every_state_but_down_and_retired() -> None:
    live = {s for s in NodeStatus if Node(node_id="x", status=s, last_heartbeat_at=T0).is_live}
    assert live == set(NodeStatus) - {NodeStatus.down, NodeStatus.retired}


@pytest.mark.allium("config-default.node_count", "config-default.heartbeat_interval", "config-default.failure_timeout")
def test_config_defaults() -> None:
    config = Config()
    assert config.node_count == 3
    assert config.heartbeat_interval == timedelta(seconds=1)
    assert config.failure_timeout == timedelta(seconds=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node_count = 5  # type: ignore[misc]


# Transitions ------------------------------------------------------------


@pytest.mark.allium("transition-rejected.Node.status")
def test_undeclared_transitions_are_rejected() -> None:
    declared = {
        ("joining", "backup"), ("joining", "down"), ("backup", "candidate"), ("backup", "down"),
        ("candidate", "recovering"), ("candidate", "backup"), ("candidate", "down"),
        ("recovering", "primary"), ("recovering", "joining"), ("recovering", "down"),
        ("primary", "joining"), ("primary", "down"), ("down", "joining"), ("down", "retired"),
    }
    assert {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets} == declared
    for source in NodeStatus:
        for target in NodeStatus:
            node = Node(node_id="n", status=source, last_heartbeat_at=T0)
            if (source.value, target.value) in declared:
                node.transition(target)
                assert node.status is target
            else:
                with pytest.raises(TransitionError):
                    node.transition(target)
                assert node.status is source


@pytest.mark.allium("transition-rejected.Node.status")
def test_suspicion_is_final_a_down_node_cannot_resume_its_role(cluster: Cluster) -> None:
    node = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    for target in (NodeStatus.primary, NodeStatus.backup, NodeStatus.candidate, NodeStatus.recovering):
        with pytest.raises(TransitionError):
            node.transition(target)
    # the Ledger granting it an epoch does not revive it either
    with pytest.raises(Rejected):
        cluster.take_grant(EpochGrant(epoch=1, node_id="n1", granted_at=T0))
    assert node.status is NodeStatus.down and node.serving_epoch is None


@pytest.mark.allium("transition-terminal.Node.status")
def test_retired_is_terminal(cluster: Cluster, clock: FakeClock) -> None:
    assert TERMINAL == {NodeStatus.retired}
    assert TRANSITIONS[NodeStatus.retired] == frozenset()
    node = add_node(cluster, "n1", NodeStatus.retired)
    for target in NodeStatus:
        with pytest.raises(TransitionError):
            node.transition(target)
    clock.advance(TIMEOUT * 2)
    for attempt in (
        lambda: cluster.heartbeat(node),
        lambda: cluster.restart_node(node),
        lambda: cluster.complete_catch_up(node, 0),
        lambda: cluster.retry_catch_up(node, 7),
        lambda: cluster.decommission_node(responder(), node),
    ):
        with pytest.raises(Rejected):
            attempt()
    assert cluster.tick() == []
    assert node.status is NodeStatus.retired


# Membership and heartbeats --------------------------------------------


@pytest.mark.allium("rule-success.RegisterNode", "rule-entity-creation.RegisterNode.1")
def test_register_node_creates_a_joining_node(cluster: Cluster, clock: FakeClock) -> None:
    created: list[Node] = []
    cluster.created_listeners.append(created.append)
    clock.advance(timedelta(seconds=5))
    node = cluster.register_node("n1")
    assert cluster.nodes == [node] and created == [node]
    assert node.node_id == "n1"
    assert node.status is NodeStatus.joining
    assert node.last_heartbeat_at == clock.now
    assert node.restarts == 0 and node.catch_up_attempts == 0
    assert node.claimed_epoch is None and node.serving_epoch is None
    assert node.promoted_at is None and node.down_since is None


@pytest.mark.allium("rule-failure.RegisterNode.1")
def test_register_node_rejects_an_existing_node_id_even_retired(cluster: Cluster) -> None:
    cluster.register_node("n1")
    with pytest.raises(Rejected, match="already exists"):
        cluster.register_node("n1")
    add_node(cluster, "n9", NodeStatus.retired)
    with pytest.raises(Rejected):
        cluster.register_node("n9")
    assert [n.node_id for n in cluster.nodes] == ["n1", "n9"]


@pytest.mark.allium("rule-failure.RegisterNode.2")
def test_register_node_rejects_beyond_node_count_not_counting_retired(cluster: Cluster) -> None:
    for node_id in ("n1", "n2", "n3"):
        cluster.register_node(node_id)
    with pytest.raises(Rejected, match="node_count"):
        cluster.register_node("n4")
    assert len(cluster.nodes) == 3
    # a retired node frees its slot
    gone = cluster.node("n3")
    gone.status, gone.down_since = NodeStatus.down, T0
    cluster.decommission_node(responder(), gone)
    assert cluster.register_node("n4").status is NodeStatus.joining


@pytest.mark.allium("rule-success.Heartbeat")
def test_heartbeat_refreshes_a_live_node(cluster: Cluster, clock: FakeClock) -> None:
    for status in (NodeStatus.joining, NodeStatus.backup, NodeStatus.primary):
        node = add_node(cluster, f"n-{status.value}", status)
        clock.advance(timedelta(seconds=2))
        cluster.heartbeat(node)
        assert node.last_heartbeat_at == clock.now
        assert node.status is status


@pytest.mark.allium("rule-failure.Heartbeat.1")
def test_heartbeat_from_a_down_node_is_rejected(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    clock.advance(timedelta(seconds=2))
    with pytest.raises(Rejected):
        cluster.heartbeat(node)
    assert node.last_heartbeat_at == T0 and node.status is NodeStatus.down


# Failure detection ------------------------------------------------------


def _timeout_cycle(cluster: Cluster, clock: FakeClock, node: Node, before: NodeStatus) -> None:
    """Fires at last_heartbeat_at + failure_timeout, not before, and never again."""
    deadline = node.last_heartbeat_at + cluster.config.failure_timeout
    clock.now = deadline - TICK
    assert cluster.tick() == []
    assert node.status is before and node.down_since is None
    clock.now = deadline
    assert cluster.tick() == [node]
    assert node.status is NodeStatus.down and node.down_since == deadline
    events = len(cluster.events)
    clock.advance(TIMEOUT * 3)
    assert cluster.tick() == []
    assert node.status is NodeStatus.down and node.down_since == deadline
    assert len(cluster.events) == events


@pytest.mark.allium("temporal.DetectFailedJoiner")
def test_detect_failed_joiner_fires_at_the_deadline_once(cluster: Cluster, clock: FakeClock) -> None:
    node = cluster.register_node("n1")
    _timeout_cycle(cluster, clock, node, NodeStatus.joining)
    assert cluster.events == []  # a joiner never led: no vacancy


@pytest.mark.allium(
    "rule-success.DetectFailedJoiner", "when-set.DetectFailedJoiner.Node.down_since",
    "transition-edge.Node.joining.down",
)
def test_detect_failed_joiner_declares_it_down(cluster: Cluster, clock: FakeClock) -> None:
    node = cluster.register_node("n1")
    clock.advance(TIMEOUT)
    cluster.detect_failed_joiner(node)
    assert node.status is NodeStatus.down
    assert node.down_since == clock.now
    assert cluster.events == []


@pytest.mark.allium("rule-failure.DetectFailedJoiner.1")
def test_detect_failed_joiner_requires_joining(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.backup)
    clock.advance(TIMEOUT)
    with pytest.raises(Rejected, match="not joining"):
        cluster.detect_failed_joiner(node)
    assert node.status is NodeStatus.backup and node.down_since is None


@pytest.mark.allium("temporal.DetectFailedBackup")
def test_detect_failed_backup_fires_at_the_deadline_once(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.backup)
    _timeout_cycle(cluster, clock, node, NodeStatus.backup)


@pytest.mark.allium(
    "rule-success.DetectFailedBackup", "when-set.DetectFailedBackup.Node.down_since",
    "transition-edge.Node.backup.down",
)
def test_detect_failed_backup_declares_it_down(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.backup)
    clock.advance(TIMEOUT + timedelta(seconds=1))
    cluster.detect_failed_backup(node)
    assert node.status is NodeStatus.down and node.down_since == clock.now
    assert not any(isinstance(e, LeadershipVacant) for e in cluster.events)


@pytest.mark.allium("rule-failure.DetectFailedBackup.1")
def test_detect_failed_backup_requires_backup(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.joining)
    clock.advance(TIMEOUT)
    with pytest.raises(Rejected, match="not backup"):
        cluster.detect_failed_backup(node)
    assert node.status is NodeStatus.joining


@pytest.mark.allium("temporal.DetectFailedCandidate")
def test_detect_failed_candidate_fires_at_the_deadline_once(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.candidate, claimed_epoch=0)
    _timeout_cycle(cluster, clock, node, NodeStatus.candidate)
    assert [type(e) for e in cluster.events] == [LeadershipVacant]


@pytest.mark.allium(
    "rule-success.DetectFailedCandidate", "when-clear.DetectFailedCandidate.Node.claimed_epoch",
    "when-set.DetectFailedCandidate.Node.down_since", "transition-edge.Node.candidate.down",
)
def test_detect_failed_candidate_declares_it_down(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.candidate, claimed_epoch=0)
    clock.advance(TIMEOUT)
    cluster.detect_failed_candidate(node)
    assert node.status is NodeStatus.down
    assert node.claimed_epoch is None
    assert node.down_since == clock.now
    assert node.when_field_violations() == []


@pytest.mark.allium("rule-failure.DetectFailedCandidate.1")
def test_detect_failed_candidate_requires_candidate(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.recovering, serving_epoch=1)
    clock.advance(TIMEOUT)
    with pytest.raises(Rejected, match="not candidate"):
        cluster.detect_failed_candidate(node)
    assert node.status is NodeStatus.recovering and cluster.events == []


@pytest.mark.allium("rule-chained.DetectFailedCandidate.LeadershipVacant")
def test_failed_candidate_reports_a_vacancy_and_the_next_backup_is_nominated(cluster: Cluster, clock: FakeClock) -> None:
    # the candidate's claim was already granted (journal at 1) when it died
    cluster.journal.epoch = 1
    failed = add_node(cluster, "n1", NodeStatus.candidate, claimed_epoch=0)
    clock.advance(TIMEOUT)
    survivor = add_node(cluster, "n2", NodeStatus.backup)
    cluster.tick()
    assert failed.status is NodeStatus.down
    vacancy = cluster.events[0]
    assert isinstance(vacancy, LeadershipVacant) and vacancy.reporter is failed
    assert survivor.status is NodeStatus.candidate and survivor.claimed_epoch == 1
    assert [(c.node_id, c.expected_epoch) for c in cluster.claims] == [("n2", 1)]


@pytest.mark.allium("temporal.DetectFailedRecovery")
def test_detect_failed_recovery_fires_at_the_deadline_once(cluster: Cluster, clock: FakeClock) -> None:
    cluster.journal.epoch = 1
    node = add_node(cluster, "n1", NodeStatus.recovering, serving_epoch=1)
    _timeout_cycle(cluster, clock, node, NodeStatus.recovering)


@pytest.mark.allium(
    "rule-success.DetectFailedRecovery", "when-clear.DetectFailedRecovery.Node.serving_epoch",
    "when-set.DetectFailedRecovery.Node.down_since", "transition-edge.Node.recovering.down",
)
def test_detect_failed_recovery_abandons_the_epoch(cluster: Cluster, clock: FakeClock) -> None:
    cluster.journal.epoch = 1
    node = add_node(cluster, "n1", NodeStatus.recovering, serving_epoch=1)
    clock.advance(TIMEOUT)
    cluster.detect_failed_recovery(node)
    assert node.status is NodeStatus.down
    assert node.serving_epoch is None
    assert node.down_since == clock.now


@pytest.mark.allium("rule-failure.DetectFailedRecovery.1")
def test_detect_failed_recovery_requires_recovering(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.primary, serving_epoch=1, promoted_at=T0)
    clock.advance(TIMEOUT)
    with pytest.raises(Rejected, match="not recovering"):
        cluster.detect_failed_recovery(node)
    assert node.status is NodeStatus.primary and node.serving_epoch == 1


@pytest.mark.allium("rule-chained.DetectFailedRecovery.LeadershipVacant")
def test_failed_recovery_reports_a_vacancy_and_a_successor_claims_a_newer_epoch(clock: FakeClock) -> None:
    cluster, ledger = wired(clock, epoch=1)
    ledger.grants.append(EpochGrant(epoch=1, node_id="n1", granted_at=T0))
    cluster.grants.append(ledger.grants[0])
    failed = add_node(cluster, "n1", NodeStatus.recovering, serving_epoch=1)
    clock.advance(TIMEOUT)
    successor = add_node(cluster, "n2", NodeStatus.backup)
    cluster.tick()
    vacancy = next(e for e in cluster.events if isinstance(e, LeadershipVacant))
    assert vacancy.reporter is failed and failed.status is NodeStatus.down
    # the successor was nominated on journal.epoch 1, granted 2, and recovers again
    assert cluster.claims[0].node_id == "n2" and cluster.claims[0].expected_epoch == 1
    assert successor.status is NodeStatus.recovering and successor.serving_epoch == 2
    cluster.assert_invariants()


@pytest.mark.allium("temporal.DetectFailedPrimary")
def test_detect_failed_primary_fires_at_the_deadline_once(cluster: Cluster, clock: FakeClock) -> None:
    cluster.journal.epoch = 1
    node = add_node(cluster, "n1", NodeStatus.primary, serving_epoch=1, promoted_at=T0)
    _timeout_cycle(cluster, clock, node, NodeStatus.primary)


@pytest.mark.allium(
    "rule-success.DetectFailedPrimary", "when-clear.DetectFailedPrimary.Node.serving_epoch",
    "when-clear.DetectFailedPrimary.Node.promoted_at", "when-set.DetectFailedPrimary.Node.down_since",
    "transition-edge.Node.primary.down",
)
def test_detect_failed_primary_declares_it_down(cluster: Cluster, clock: FakeClock) -> None:
    cluster.journal.epoch = 1
    node = add_node(cluster, "n1", NodeStatus.primary, serving_epoch=1, promoted_at=T0)
    clock.advance(TIMEOUT)
    cluster.detect_failed_primary(node)
    assert node.status is NodeStatus.down
    assert node.serving_epoch is None and node.promoted_at is None
    assert node.down_since == clock.now


@pytest.mark.allium("rule-failure.DetectFailedPrimary.1")
def test_detect_failed_primary_requires_primary(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.backup)
    clock.advance(TIMEOUT)
    with pytest.raises(Rejected, match="not primary"):
        cluster.detect_failed_primary(node)
    assert node.status is NodeStatus.backup


@pytest.mark.allium("temporal.DetectFailedPrimary")
def test_detect_failed_primary_is_not_triggered_by_a_heartbeating_primary(cluster: Cluster, clock: FakeClock) -> None:
    cluster.journal.epoch = 1
    node = add_node(cluster, "n1", NodeStatus.primary, serving_epoch=1, promoted_at=T0)
    for _ in range(10):
        clock.advance(Config().heartbeat_interval)
        cluster.heartbeat(node)
        assert cluster.tick() == []
    with pytest.raises(Rejected, match="within failure_timeout"):
        cluster.detect_failed_primary(node)
    assert node.status is NodeStatus.primary


@pytest.mark.allium("rule-chained.DetectFailedPrimary.LeadershipVacant")
def test_failed_primary_reports_a_vacancy_and_the_lowest_backup_takes_over(clock: FakeClock) -> None:
    cluster, ledger = bring_up(clock)
    n1, n2, n3 = (cluster.node(i) for i in ("n1", "n2", "n3"))
    assert n1.status is NodeStatus.primary
    clock.advance(TIMEOUT)
    cluster.heartbeat(n2)
    cluster.heartbeat(n3)
    assert cluster.tick() == [n1]
    vacancy = [e for e in cluster.events if isinstance(e, LeadershipVacant)][-1]
    assert vacancy.reporter is n1
    assert n1.status is NodeStatus.down
    # NominateSuccessor fired on the vacancy: n2 (lowest id) claimed journal.epoch 1, got 2
    assert cluster.claims[-1].node_id == "n2" and cluster.claims[-1].expected_epoch == 1
    assert n2.status is NodeStatus.recovering and n2.serving_epoch == 2
    assert n3.status is NodeStatus.backup
    cluster.assert_invariants()


# Promotion ----------------------------------------------------------------


@pytest.mark.allium(
    "rule-success.NominateSuccessor", "rule-entity-creation.NominateSuccessor.1",
    "transition-edge.Node.backup.candidate",
)
def test_nominate_successor_picks_the_lowest_backup_and_claims_the_journal_epoch(cluster: Cluster) -> None:
    # the journal is ahead of anything the nodes remember: the claim must read it
    cluster.journal.epoch = 7
    reporter = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    n3 = add_node(cluster, "n3", NodeStatus.backup)
    n2 = add_node(cluster, "n2", NodeStatus.backup)
    claim = cluster.nominate_successor(LeadershipVacant(reporter=reporter))
    assert n2.status is NodeStatus.candidate and n2.claimed_epoch == 7
    assert n3.status is NodeStatus.backup and n3.claimed_epoch is None
    assert isinstance(claim, EpochClaim) and cluster.claims == [claim]
    assert claim.node_id == "n2"
    assert claim.expected_epoch == 7
    assert claim.status is EpochClaimStatus.pending


@pytest.mark.allium("rule-failure.NominateSuccessor.1")
def test_nominate_successor_requires_that_nobody_leads(cluster: Cluster) -> None:
    cluster.journal.epoch = 1
    reporter = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    add_node(cluster, "n2", NodeStatus.recovering, serving_epoch=1)
    backup = add_node(cluster, "n3", NodeStatus.backup)
    with pytest.raises(Rejected, match="leading"):
        cluster.nominate_successor(LeadershipVacant(reporter=reporter))
    assert backup.status is NodeStatus.backup and cluster.claims == []


@pytest.mark.allium("rule-failure.NominateSuccessor.2")
def test_nominate_successor_requires_a_backup(cluster: Cluster) -> None:
    reporter = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    joiner = add_node(cluster, "n2", NodeStatus.joining)
    with pytest.raises(Rejected, match="no backup"):
        cluster.nominate_successor(LeadershipVacant(reporter=reporter))
    assert joiner.status is NodeStatus.joining and cluster.claims == []


@pytest.mark.allium("rule-success.ElectOnVacancy", "transition-edge.Node.joining.backup")
def test_elect_on_vacancy_a_backup_arriving_leaderless_reports_a_vacancy(cluster: Cluster) -> None:
    reported: list[Any] = []
    cluster.event_listeners.append(reported.append)
    node = cluster.register_node("n1")
    cluster.complete_catch_up(node, observed_epoch=0)
    vacancy = cluster.events[0]
    assert isinstance(vacancy, LeadershipVacant) and vacancy.reporter is node
    assert reported[0] is vacancy


@pytest.mark.allium("rule-chained.ElectOnVacancy.LeadershipVacant")
def test_elect_on_vacancy_leads_to_nomination_of_the_new_backup(cluster: Cluster) -> None:
    cluster.journal.epoch = 4
    node = add_node(cluster, "n1", NodeStatus.joining)
    cluster.complete_catch_up(node, observed_epoch=4)
    assert isinstance(cluster.events[0], LeadershipVacant) and cluster.events[0].reporter is node
    assert node.status is NodeStatus.candidate and node.claimed_epoch == 4
    assert [(c.node_id, c.expected_epoch, c.status) for c in cluster.claims] == [("n1", 4, EpochClaimStatus.pending)]


@pytest.mark.allium("rule-failure.ElectOnVacancy.1")
def test_elect_on_vacancy_requires_that_nobody_leads(cluster: Cluster) -> None:
    cluster.journal.epoch = 1
    add_node(cluster, "n1", NodeStatus.primary, serving_epoch=1, promoted_at=T0)
    joiner = add_node(cluster, "n2", NodeStatus.joining)
    cluster.complete_catch_up(joiner, observed_epoch=1)
    assert joiner.status is NodeStatus.backup
    assert cluster.events == [] and cluster.claims == []
    with pytest.raises(Rejected):
        cluster.elect_on_vacancy(joiner)
    assert cluster.events == []


@pytest.mark.allium(
    "rule-success.TakeGrant", "when-set.TakeGrant.Node.serving_epoch", "transition-edge.Node.candidate.recovering",
)
def test_take_grant_moves_the_candidate_to_recovering(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.candidate, claimed_epoch=0)
    grant = EpochGrant(epoch=1, node_id="n1", granted_at=clock())
    cluster.journal.epoch = 1
    cluster.on_epoch_grant_created(grant)
    assert node.status is NodeStatus.recovering
    assert node.claimed_epoch is None
    assert node.serving_epoch == 1
    assert cluster.grants == [grant]
    cluster.assert_invariants()


@pytest.mark.allium("rule-failure.TakeGrant.1")
def test_take_grant_requires_the_node_to_exist(cluster: Cluster) -> None:
    other = add_node(cluster, "n1", NodeStatus.candidate, claimed_epoch=0)
    with pytest.raises(Rejected, match="no node"):
        cluster.take_grant(EpochGrant(epoch=1, node_id="ghost", granted_at=T0))
    assert other.status is NodeStatus.candidate and other.serving_epoch is None


@pytest.mark.allium("rule-failure.TakeGrant.2")
def test_take_grant_requires_a_candidate(cluster: Cluster) -> None:
    node = add_node(cluster, "n1", NodeStatus.backup)
    with pytest.raises(Rejected, match="not candidate"):
        cluster.take_grant(EpochGrant(epoch=1, node_id="n1", granted_at=T0))
    assert node.status is NodeStatus.backup and node.serving_epoch is None


@pytest.mark.allium("rule-success.ConcedeClaim", "transition-edge.Node.candidate.backup")
def test_concede_claim_returns_the_loser_of_a_race_to_backup(clock: FakeClock) -> None:
    # failure detectors disagreed: n1 and n2 both claim epoch 0; the store grants one
    cluster, ledger = wired(clock, auto=False)
    n1 = add_node(cluster, "n1", NodeStatus.candidate, claimed_epoch=0)
    n2 = add_node(cluster, "n2", NodeStatus.candidate, claimed_epoch=0)
    first = EpochClaim(node_id="n1", expected_epoch=0)
    second = EpochClaim(node_id="n2", expected_epoch=0)
    ledger.decide(first)
    ledger.decide(second)
    assert second.status is EpochClaimStatus.refused
    assert n2.status is NodeStatus.backup and n2.claimed_epoch is None
    assert n1.status is NodeStatus.recovering and n1.serving_epoch == 1
    cluster.assert_invariants()


@pytest.mark.allium("rule-success.ConcedeClaim")
def test_conceded_claim_with_nobody_leading_is_reissued_on_the_current_epoch(cluster: Cluster) -> None:
    # the winner of epoch 1 died before anyone saw it lead: the journal is at 1
    cluster.journal.epoch = 1
    node = add_node(cluster, "n2", NodeStatus.candidate, claimed_epoch=0)
    refused = EpochClaim(node_id="n2", expected_epoch=0, status=EpochClaimStatus.refused)
    changes: list[tuple[NodeStatus, NodeStatus]] = []
    cluster.status_listeners.append(lambda n, old, new: changes.append((old, new)))
    cluster.on_epoch_claim_refused(refused)
    # back to backup, which reopened the vacancy and re-nominated it on epoch 1
    assert changes[:2] == [(NodeStatus.candidate, NodeStatus.backup), (NodeStatus.backup, NodeStatus.candidate)]
    assert node.status is NodeStatus.candidate and node.claimed_epoch == 1
    assert cluster.claims[-1].expected_epoch == 1


@pytest.mark.allium("rule-failure.ConcedeClaim.1")
def test_concede_claim_requires_the_node_to_exist(cluster: Cluster) -> None:
    with pytest.raises(Rejected, match="no node"):
        cluster.concede_claim(EpochClaim(node_id="ghost", expected_epoch=0, status=EpochClaimStatus.refused))
    assert cluster.nodes == [] and cluster.events == []


@pytest.mark.allium("rule-failure.ConcedeClaim.2")
def test_concede_claim_requires_a_candidate(cluster: Cluster) -> None:
    cluster.journal.epoch = 1
    node = add_node(cluster, "n1", NodeStatus.recovering, serving_epoch=1)
    with pytest.raises(Rejected, match="not candidate"):
        cluster.concede_claim(EpochClaim(node_id="n1", expected_epoch=0, status=EpochClaimStatus.refused))
    assert node.status is NodeStatus.recovering and node.serving_epoch == 1


@pytest.mark.allium(
    "rule-success.StepDown", "transition-edge.Node.primary.joining", "transition-edge.Node.recovering.joining",
)
def test_step_down_demotes_every_other_leader_when_a_newer_epoch_is_granted(cluster: Cluster, clock: FakeClock) -> None:
    # a paused primary (epoch 1) and an abandoned recoverer (epoch 2) meet grant 3 to n3
    old_primary = add_node(cluster, "n1", NodeStatus.primary, serving_epoch=1, promoted_at=T0)
    old_recoverer = add_node(cluster, "n2", NodeStatus.recovering, serving_epoch=2)
    winner = add_node(cluster, "n3", NodeStatus.candidate, claimed_epoch=2)
    cluster.journal.epoch = 3
    grant = EpochGrant(epoch=3, node_id="n3", granted_at=clock())
    cluster.on_epoch_grant_created(grant)
    assert old_primary.status is NodeStatus.joining
    assert old_primary.serving_epoch is None and old_primary.promoted_at is None
    assert old_recoverer.status is NodeStatus.joining and old_recoverer.serving_epoch is None
    assert winner.status is NodeStatus.recovering and winner.serving_epoch == 3
    assert check_one_leader_per_epoch(cluster.nodes) == []
    assert stepped_ids(cluster) == ["n1", "n2"]


@pytest.mark.allium("rule-success.StepDown")
def test_step_down_spares_the_granted_node(cluster: Cluster) -> None:
    same = add_node(cluster, "n1", NodeStatus.primary, serving_epoch=1, promoted_at=T0)
    stepped = cluster.step_down(EpochGrant(epoch=2, node_id="n1", granted_at=T0))
    assert stepped == [] and same.status is NodeStatus.primary and same.serving_epoch == 1


@pytest.mark.allium(
    "rule-success.CompleteRecovery", "when-set.CompleteRecovery.Node.serving_epoch",
    "when-set.CompleteRecovery.Node.promoted_at", "transition-edge.Node.recovering.primary",
)
def test_complete_recovery_promotes_the_node_to_primary(cluster: Cluster, clock: FakeClock) -> None:
    cluster.journal.epoch = 2
    cluster.grants.append(EpochGrant(epoch=2, node_id="n1", granted_at=T0))
    node = add_node(cluster, "n1", NodeStatus.recovering, serving_epoch=2)
    loading = Rebuild(epoch=2, node_id="n1", started_at=clock())
    with pytest.raises(Rejected, match="not done"):
        cluster.complete_recovery(loading)
    assert node.status is NodeStatus.recovering
    clock.advance(timedelta(milliseconds=250))
    ready = cluster.complete_recovery(make_rebuild_done(2, "n1", clock()))
    assert node.status is NodeStatus.primary
    assert node.serving_epoch == 2
    assert node.promoted_at == clock.now
    assert ready == cluster.events[-1] and ready.node is node and ready.epoch == 2
    cluster.assert_invariants()


@pytest.mark.allium("rule-failure.CompleteRecovery.1")
def test_complete_recovery_requires_the_node_to_exist(cluster: Cluster) -> None:
    cluster.journal.epoch = 1
    with pytest.raises(Rejected, match="no node"):
        cluster.complete_recovery(make_rebuild_done(1, "ghost"))
    assert cluster.events == []


@pytest.mark.allium("rule-failure.CompleteRecovery.2")
def test_complete_recovery_requires_recovering(cluster: Cluster) -> None:
    cluster.journal.epoch = 1
    node = add_node(cluster, "n1", NodeStatus.joining)
    with pytest.raises(Rejected, match="not recovering"):
        cluster.complete_recovery(make_rebuild_done(1, "n1"))
    assert node.status is NodeStatus.joining and node.promoted_at is None and cluster.events == []


@pytest.mark.allium("rule-failure.CompleteRecovery.3")
def test_complete_recovery_requires_the_rebuild_for_the_serving_epoch(cluster: Cluster) -> None:
    cluster.journal.epoch = 2
    node = add_node(cluster, "n1", NodeStatus.recovering, serving_epoch=2)
    with pytest.raises(Rejected, match="node serves 2"):
        cluster.complete_recovery(make_rebuild_done(1, "n1"))
    assert node.status is NodeStatus.recovering and node.promoted_at is None


@pytest.mark.allium("rule-failure.CompleteRecovery.4")
def test_complete_recovery_requires_the_rebuild_epoch_to_be_current(cluster: Cluster) -> None:
    # its epoch was superseded while it rebuilt (a newer grant to someone else)
    cluster.journal.epoch = 3
    node = add_node(cluster, "n1", NodeStatus.recovering, serving_epoch=2)
    with pytest.raises(Rejected, match="not journal epoch 3"):
        cluster.complete_recovery(make_rebuild_done(2, "n1"))
    assert node.status is NodeStatus.recovering and cluster.events == []


@pytest.mark.allium("rule-chained.CompleteRecovery.PrimaryReady")
def test_complete_recovery_emits_primary_ready_to_downstream_listeners(cluster: Cluster, clock: FakeClock) -> None:
    cluster.journal.epoch = 1
    cluster.grants.append(EpochGrant(epoch=1, node_id="n1", granted_at=T0))
    node = add_node(cluster, "n1", NodeStatus.recovering, serving_epoch=1)
    ready: list[PrimaryReady] = []
    became_primary: list[Node] = []
    cluster.event_listeners.append(lambda e: ready.append(e) if isinstance(e, PrimaryReady) else None)
    cluster.status_listeners.append(lambda n, old, new: became_primary.append(n) if new is NodeStatus.primary else None)
    cluster.on_rebuild_done(make_rebuild_done(1, "n1", clock()))
    assert len(ready) == 1 and ready[0].node is node and ready[0].epoch == 1
    assert became_primary == [node]


# Rejoin ---------------------------------------------------------------------


@pytest.mark.allium("rule-success.RestartNode", "when-clear.RestartNode.Node.down_since", "transition-edge.Node.down.joining")
def test_restart_node_rejoins_as_joining(cluster: Cluster, clock: FakeClock) -> None:
    node = add_node(cluster, "n1", NodeStatus.down, down_since=T0, restarts=2)
    clock.advance(timedelta(minutes=1))
    cluster.restart_node(node)
    assert node.status is NodeStatus.joining
    assert node.down_since is None
    assert node.restarts == 3
    assert node.last_heartbeat_at == clock.now


@pytest.mark.allium("rule-failure.RestartNode.1")
def test_restart_node_requires_down(cluster: Cluster) -> None:
    node = add_node(cluster, "n1", NodeStatus.backup)
    with pytest.raises(Rejected, match="not down"):
        cluster.restart_node(node)
    assert node.status is NodeStatus.backup and node.restarts == 0


@pytest.mark.allium("rule-success.CompleteCatchUp")
def test_complete_catch_up_makes_the_node_a_backup(cluster: Cluster) -> None:
    cluster.journal.epoch = 2
    add_node(cluster, "n1", NodeStatus.primary, serving_epoch=2, promoted_at=T0)
    node = add_node(cluster, "n2", NodeStatus.joining, catch_up_attempts=3)
    cluster.catch_up_completed(node, observed_epoch=2)
    assert node.status is NodeStatus.backup
    assert node.catch_up_attempts == 0


@pytest.mark.allium("rule-failure.CompleteCatchUp.1")
def test_complete_catch_up_requires_joining(cluster: Cluster) -> None:
    node = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    with pytest.raises(Rejected, match="not joining"):
        cluster.complete_catch_up(node, observed_epoch=0)
    assert node.status is NodeStatus.down


@pytest.mark.allium("rule-failure.CompleteCatchUp.2")
def test_complete_catch_up_requires_the_current_epoch(cluster: Cluster) -> None:
    cluster.journal.epoch = 5
    node = add_node(cluster, "n1", NodeStatus.joining, catch_up_attempts=1)
    with pytest.raises(Rejected, match="journal is at 5"):
        cluster.complete_catch_up(node, observed_epoch=4)
    assert node.status is NodeStatus.joining and node.catch_up_attempts == 1


@pytest.mark.allium("rule-success.RetryCatchUp")
def test_retry_catch_up_counts_an_attempt_when_the_epoch_moved(cluster: Cluster) -> None:
    cluster.journal.epoch = 5
    node = add_node(cluster, "n1", NodeStatus.joining, catch_up_attempts=1)
    cluster.catch_up_completed(node, observed_epoch=4)
    assert node.status is NodeStatus.joining
    assert node.catch_up_attempts == 2
    cluster.retry_catch_up(node, observed_epoch=3)
    assert node.catch_up_attempts == 3


@pytest.mark.allium("rule-failure.RetryCatchUp.1")
def test_retry_catch_up_requires_joining(cluster: Cluster) -> None:
    cluster.journal.epoch = 5
    node = add_node(cluster, "n1", NodeStatus.backup)
    with pytest.raises(Rejected, match="not joining"):
        cluster.retry_catch_up(node, observed_epoch=4)
    assert node.catch_up_attempts == 0


@pytest.mark.allium("rule-failure.RetryCatchUp.2")
def test_retry_catch_up_requires_a_moved_epoch(cluster: Cluster) -> None:
    cluster.journal.epoch = 5
    node = add_node(cluster, "n1", NodeStatus.joining)
    with pytest.raises(Rejected, match="current"):
        cluster.retry_catch_up(node, observed_epoch=5)
    assert node.catch_up_attempts == 0 and node.status is NodeStatus.joining


@pytest.mark.allium("rule-success.DecommissionNode", "transition-edge.Node.down.retired")
def test_decommission_node_retires_a_down_node(cluster: Cluster) -> None:
    node = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    cluster.decommission_node(responder(), node)
    assert node.status is NodeStatus.retired
    assert node.down_since is None


@pytest.mark.allium("rule-failure.DecommissionNode.1")
def test_decommission_node_requires_a_responder(cluster: Cluster) -> None:
    node = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    with pytest.raises(Rejected, match="responder"):
        cluster.decommission_node(observer(), node)
    assert node.status is NodeStatus.down and node.down_since == T0


@pytest.mark.allium("rule-failure.DecommissionNode.2")
def test_decommission_node_requires_down(cluster: Cluster) -> None:
    node = add_node(cluster, "n1", NodeStatus.backup)
    with pytest.raises(Rejected, match="not down"):
        cluster.decommission_node(responder(), node)
    assert node.status is NodeStatus.backup


# When-clauses -------------------------------------------------------------------


def _lifecycle(clock: FakeClock) -> tuple[Cluster, FakeLedger, list[Node]]:
    """Every state a node can be in, reached through the rules; invariants hold throughout."""
    cluster, ledger = bring_up(clock)
    n1, n2, n3 = (cluster.node(i) for i in ("n1", "n2", "n3"))
    seen = [dataclasses.replace(n) for n in cluster.nodes]
    clock.advance(TIMEOUT)
    cluster.heartbeat(n2)
    cluster.heartbeat(n3)
    cluster.tick()  # n1 down, n2 recovering on epoch 2
    seen += [dataclasses.replace(n) for n in cluster.nodes]
    cluster.assert_invariants()
    cluster.restart_node(n1)
    seen.append(dataclasses.replace(n1))
    cluster.on_rebuild_done(make_rebuild_done(2, "n2", clock()))
    seen += [dataclasses.replace(n) for n in cluster.nodes]
    cluster.assert_invariants()
    cluster.catch_up_completed(n1, cluster.journal.epoch)
    seen.append(dataclasses.replace(n1))
    cluster.assert_invariants()
    return cluster, ledger, seen


@pytest.mark.allium(
    "when-presence.Node.claimed_epoch", "when-presence.Node.serving_epoch",
    "when-presence.Node.promoted_at", "when-presence.Node.down_since",
)
def test_when_fields_are_present_exactly_in_their_states(clock: FakeClock) -> None:
    _, _, snapshots = _lifecycle(clock)
    candidate = Node(node_id="c", status=NodeStatus.candidate, last_heartbeat_at=T0, claimed_epoch=0)
    snapshots.append(candidate)
    assert {n.status for n in snapshots} >= set(NodeStatus) - {NodeStatus.retired}
    for node in snapshots:
        assert (node.claimed_epoch is not None) == (node.status is NodeStatus.candidate)
        assert (node.serving_epoch is not None) == (node.status in {NodeStatus.recovering, NodeStatus.primary})
        assert (node.promoted_at is not None) == (node.status is NodeStatus.primary)
        assert (node.down_since is not None) == (node.status is NodeStatus.down)
        assert node.when_field_violations() == []
    # the check catches each field out of place
    stray = Node(node_id="s", status=NodeStatus.backup, last_heartbeat_at=T0, claimed_epoch=1,
                 serving_epoch=1, promoted_at=T0, down_since=T0)
    assert len(stray.when_field_violations()) == 4
    missing = Node(node_id="m", status=NodeStatus.primary, last_heartbeat_at=T0)
    assert {p.split()[2] for p in missing.when_field_violations()} == {"serving_epoch", "promoted_at"}


# Invariants ---------------------------------------------------------------------


@pytest.mark.allium("invariant.OneLeaderPerEpoch")
def test_one_leader_per_epoch_holds_through_failover_and_is_checked(clock: FakeClock) -> None:
    cluster, _, _ = _lifecycle(clock)
    assert check_one_leader_per_epoch(cluster.nodes) == []
    serving = [n for n in cluster.nodes if n.status in {NodeStatus.recovering, NodeStatus.primary}]
    assert len({n.serving_epoch for n in serving}) == len(serving)
    twin = add_node(cluster, "n9", NodeStatus.recovering, serving_epoch=cluster.journal.epoch)
    assert check_one_leader_per_epoch(cluster.nodes) != []
    with pytest.raises(InvariantViolation, match="OneLeaderPerEpoch"):
        cluster.assert_invariants()
    assert twin.serving_epoch == cluster.node("n2").serving_epoch


@pytest.mark.allium("invariant.ServingEpochWasGranted")
def test_serving_epoch_was_granted_holds_and_is_checked(clock: FakeClock) -> None:
    cluster, ledger, _ = _lifecycle(clock)
    for n in cluster.nodes:
        if n.status in {NodeStatus.recovering, NodeStatus.primary}:
            assert any(g.epoch == n.serving_epoch and g.node_id == n.node_id for g in ledger.grants)
    assert check_serving_epoch_was_granted(cluster.nodes, cluster.grants) == []
    # epoch 1 was granted, but to n1, not n3
    forged = [Node(node_id="n3", status=NodeStatus.primary, last_heartbeat_at=T0, serving_epoch=1, promoted_at=T0)]
    assert check_serving_epoch_was_granted(forged, cluster.grants) != []


@pytest.mark.allium("invariant.NoNodeAheadOfJournal")
def test_no_node_ahead_of_journal_holds_and_is_checked(clock: FakeClock) -> None:
    cluster, _, _ = _lifecycle(clock)
    assert check_no_node_ahead_of_journal(cluster.nodes, cluster.journal) == []
    assert all(n.serving_epoch <= cluster.journal.epoch for n in cluster.nodes if n.serving_epoch is not None)
    ahead = Node(node_id="n1", status=NodeStatus.recovering, last_heartbeat_at=T0,
                 serving_epoch=cluster.journal.epoch + 1)
    assert check_no_node_ahead_of_journal([ahead], cluster.journal) != []


@pytest.mark.allium("invariant.LeadersAreLive")
def test_leaders_are_live_holds_and_is_checked(clock: FakeClock) -> None:
    cluster, _, _ = _lifecycle(clock)
    assert check_leaders_are_live(cluster.nodes) == []
    assert all(n.is_live for n in cluster.nodes if n.is_leader)
    for status in NodeStatus:
        node = Node(node_id="x", status=status, last_heartbeat_at=T0)
        assert (not node.is_leader) or node.is_live


@pytest.mark.allium(
    "invariant.OneLeaderPerEpoch", "invariant.ServingEpochWasGranted",
    "invariant.NoNodeAheadOfJournal", "invariant.LeadersAreLive",
)
def test_double_failure_stays_safe_and_resumes(clock: FakeClock) -> None:
    """Primary and nominated successor die together after the successor's claim was granted."""
    cluster, ledger = bring_up(clock)
    n1, n2, n3 = (cluster.node(i) for i in ("n1", "n2", "n3"))
    clock.advance(TIMEOUT)
    cluster.heartbeat(n3)
    # n1 (primary) and n2 (backup) both silent: n1 is declared down first and n2,
    # the lowest backup, is nominated and granted epoch 2; then n2 is found silent
    # too while recovering. n3 must claim on journal.epoch (2), not on 1.
    failed = cluster.tick()
    cluster.assert_invariants()
    assert failed == [n1, n2]
    assert n1.status is NodeStatus.down and n2.status is NodeStatus.down
    assert [(c.node_id, c.expected_epoch) for c in cluster.claims[-2:]] == [("n2", 1), ("n3", 2)]
    assert n3.status is NodeStatus.recovering and n3.serving_epoch == 3
    cluster.on_rebuild_done(make_rebuild_done(3, "n3", clock()))
    assert n3.status is NodeStatus.primary
    cluster.assert_invariants()
    # n1 comes back: it rejoins as joining and must catch up
    cluster.restart_node(n1)
    cluster.catch_up_completed(n1, observed_epoch=1)
    assert n1.status is NodeStatus.joining and n1.catch_up_attempts == 1
    cluster.catch_up_completed(n1, observed_epoch=cluster.journal.epoch)
    assert n1.status is NodeStatus.backup
    cluster.assert_invariants()
    assert check_one_leader_per_epoch(cluster.nodes) == []
    assert check_serving_epoch_was_granted(cluster.nodes, ledger.grants) == []
    assert check_no_node_ahead_of_journal(cluster.nodes, cluster.journal) == []
    assert check_leaders_are_live(cluster.nodes) == []
    assert [(g.epoch, g.node_id) for g in ledger.grants] == [(1, "n1"), (2, "n2"), (3, "n3")]


# Actors and surfaces -----------------------------------------------------------


@pytest.mark.allium("surface-actor.NodeLifecycle")
def test_node_lifecycle_faces_only_non_retired_nodes(cluster: Cluster) -> None:
    live = add_node(cluster, "n1", NodeStatus.backup)
    down = add_node(cluster, "n2", NodeStatus.down, down_since=T0)
    retired = add_node(cluster, "n3", NodeStatus.retired)
    assert is_node_agent(live) and is_node_agent(down) and not is_node_agent(retired)
    assert NodeLifecycle(cluster, live).agent is live
    assert NodeLifecycle(cluster, down).agent is down
    with pytest.raises(SurfaceDenied):
        NodeLifecycle(cluster, retired)
    with pytest.raises(SurfaceDenied):
        NodeLifecycle(cluster, responder())  # type: ignore[arg-type]


@pytest.mark.allium("surface-exposure.NodeLifecycle")
def test_node_lifecycle_exposes_the_agents_own_fields(cluster: Cluster, clock: FakeClock) -> None:
    agent = add_node(cluster, "n1", NodeStatus.joining, restarts=2, catch_up_attempts=1)
    surface = NodeLifecycle(cluster, agent)
    assert surface.exposes() == {
        "status": NodeStatus.joining, "last_heartbeat_at": T0, "restarts": 2, "catch_up_attempts": 1,
    }
    clock.advance(timedelta(seconds=1))
    surface.heartbeat()
    assert surface.exposes()["last_heartbeat_at"] == clock.now == agent.last_heartbeat_at


@pytest.mark.allium("surface-provides.NodeLifecycle")
def test_node_lifecycle_offers_operations_by_state(cluster: Cluster, clock: FakeClock) -> None:
    agent = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    surface = NodeLifecycle(cluster, agent)
    assert surface.provides() == {"NodeRestarted"}
    with pytest.raises(SurfaceDenied):
        surface.heartbeat()
    with pytest.raises(SurfaceDenied):
        surface.catch_up_completed(0)
    surface.node_restarted()
    assert agent.status is NodeStatus.joining and agent.restarts == 1
    assert surface.provides() == {"Heartbeat", "CatchUpCompleted"}
    with pytest.raises(SurfaceDenied):
        surface.node_restarted()
    add_node(cluster, "n0", NodeStatus.primary, serving_epoch=0, promoted_at=T0)
    cluster.grants.append(EpochGrant(epoch=0, node_id="n0", granted_at=T0))
    surface.catch_up_completed(cluster.journal.epoch)
    assert agent.status is NodeStatus.backup
    assert surface.provides() == {"Heartbeat"}


@pytest.mark.allium("surface-actor.ClusterProvisioning")
def test_cluster_provisioning_needs_no_actor(cluster: Cluster) -> None:
    surface = ClusterProvisioning(cluster)
    node = surface.register_node("n1")
    assert cluster.node("n1") is node and node.status is NodeStatus.joining


@pytest.mark.allium("surface-provides.ClusterProvisioning")
def test_cluster_provisioning_offers_register_node(cluster: Cluster) -> None:
    surface = ClusterProvisioning(cluster)
    assert surface.provides() == {"RegisterNode"}
    for node_id in ("n1", "n2", "n3"):
        surface.register_node(node_id)
    assert surface.provides() == {"RegisterNode"}  # offered; the rule's requires decides
    with pytest.raises(Rejected):
        surface.register_node("n4")


@pytest.mark.allium("surface-actor.ClusterOperations")
def test_cluster_operations_faces_only_responders(cluster: Cluster) -> None:
    node = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    assert is_cluster_responder(responder()) and not is_cluster_responder(observer())
    with pytest.raises(SurfaceDenied):
        ClusterOperations(cluster, observer(), node)
    surface = ClusterOperations(cluster, responder(), node)
    assert surface.node is node and surface.responder.role is OperatorRole.responder


@pytest.mark.allium("surface-exposure.ClusterOperations")
def test_cluster_operations_exposes_when_guarded_fields_in_their_states(cluster: Cluster) -> None:
    cluster.journal.epoch = 1
    down = add_node(cluster, "n1", NodeStatus.down, down_since=T0)
    recovering = add_node(cluster, "n2", NodeStatus.recovering, serving_epoch=1)
    primary = add_node(cluster, "n3", NodeStatus.primary, serving_epoch=1, promoted_at=T0,
                       last_heartbeat_at=T0)
    backup = add_node(cluster, "n4", NodeStatus.backup)
    ops = responder()
    assert ClusterOperations(cluster, ops, down).exposes() == {
        "node_id": "n1", "status": NodeStatus.down, "down_since": T0,
    }
    assert ClusterOperations(cluster, ops, recovering).exposes() == {
        "node_id": "n2", "status": NodeStatus.recovering, "serving_epoch": 1,
    }
    assert ClusterOperations(cluster, ops, primary).exposes() == {
        "node_id": "n3", "status": NodeStatus.primary, "serving_epoch": 1, "promoted_at": T0,
    }
    assert ClusterOperations(cluster, ops, backup).exposes() == {"node_id": "n4", "status": NodeStatus.backup}
    # timeout: DetectFailedPrimary - the deadline shown for a primary
    surface = ClusterOperations(cluster, ops, primary)
    assert surface.timeouts == ("DetectFailedPrimary",)
    assert surface.primary_deadline() == T0 + TIMEOUT
    assert ClusterOperations(cluster, ops, backup).primary_deadline() is None


@pytest.mark.allium("surface-provides.ClusterOperations")
def test_cluster_operations_offers_decommission_only_for_down_nodes(cluster: Cluster) -> None:
    live = add_node(cluster, "n1", NodeStatus.backup)
    down = add_node(cluster, "n2", NodeStatus.down, down_since=T0)
    ops = responder()
    live_surface = ClusterOperations(cluster, ops, live)
    assert live_surface.provides() == set()
    with pytest.raises(SurfaceDenied):
        live_surface.decommission_node()
    assert live.status is NodeStatus.backup
    down_surface = ClusterOperations(cluster, ops, down)
    assert down_surface.provides() == {"DecommissionNode"}
    down_surface.decommission_node()
    assert down.status is NodeStatus.retired and down_surface.provides() == set()
