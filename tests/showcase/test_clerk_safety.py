"""Safety of the Clerk's agreement and fencing under a faulty replica (holes 3, 4 and 5).

The generated package under test is found through ALLIUM_GENERATED (see
test_ledger_safety.py). Replicas are brought into service here by setting
their status directly: how a replica qualifies is itself under test (hole 3),
so the scaffolding must not depend on it.
"""

from __future__ import annotations

import enum
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.environ.get("ALLIUM_GENERATED") or str(Path(__file__).resolve().parents[2] / "generated"))

from ledger.clerk import Clerk, ConformanceHarness, Config, ReplicaStatus, RoundDiverged, RoundStatus  # noqa: E402
from ledger.cluster import Node, NodeStatus  # noqa: E402
from ledger.core import AccountStatus, Channel, InvariantViolation, OperationKind, Rejected, Request, Verdict  # noqa: E402
from ledger.ledger import Journal  # noqa: E402
from ledger.registrar import ReadSet, ReadSetStatus, ReadSource  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
HONEST, WRONG = 500, 999  # the deltas an honest and a faulty replica decide on


def make_read(request_id: str) -> ReadSet:
    request = Request(request_id=request_id, client_id="c1", kind=OperationKind.deposit, account_id="a",
                      counterparty_id=None, owner=None, amount_minor=HONEST, channel=Channel.rest,
                      fingerprint="f" * 64, received_at=T0)
    read = ReadSet(request=request, attempt=1, epoch=1, requested_at=T0)
    read.status, read.source, read.ready_at = ReadSetStatus.ready, ReadSource.storage, T0
    read.primary_present, read.primary_status = True, AccountStatus.active
    read.primary_balance_minor, read.primary_version = 1_000, 7
    read.counter_present, read.counter_status, read.counter_balance_minor, read.counter_version = False, None, 0, 0
    return read


class Cluster:
    """A Clerk with three active replicas; replica 0 is faulty."""

    def __init__(self, config: Config | None = None) -> None:
        self.proposals: list[Any] = []
        self.clerk = Clerk(Journal(epoch=1), clock=lambda: T0, config=config, on_proposal=self.proposals.append)
        self.events: list[object] = []
        self.clerk.subscribe(self.events.append)
        self.replicas = []
        for i in range(3):
            replica = self.clerk.register_replica(Node(node_id=f"n{i}", status=NodeStatus.backup, last_heartbeat_at=T0))
            replica.status, replica.recovery_started_at = ReplicaStatus.active, None
            self.replicas.append(replica)

    def vote(self, round: Any, index: int, delta: int) -> None:
        evaluation = self.clerk.find_evaluation(round.request, round.attempt, self.replicas[index].replica_id)
        status = evaluation.status
        evaluation.status = type(status)("decided") if isinstance(status, enum.Enum) else "decided"
        evaluation.verdict, evaluation.reason = Verdict.accepted, None
        evaluation.account_delta_minor, evaluation.counterparty_delta_minor = delta, 0
        try:
            self.clerk.cast_vote(evaluation)
        except Rejected:
            pass  # a round that has moved on takes no more votes


def test_a_vote_from_a_replica_fenced_elsewhere_does_not_diverge_a_round() -> None:
    """Hole 4, the review's example: the faulty replica votes in r1, is fenced in r2, then
    one honest vote in r1 must not make r1 diverge before the other honest replica answers."""
    world = Cluster()
    r1 = world.clerk.open_round(make_read("r1"))
    r2 = world.clerk.open_round(make_read("r2"))
    world.vote(r1, 0, WRONG)
    for index, delta in ((0, WRONG), (1, HONEST), (2, HONEST)):
        world.vote(r2, index, delta)
    assert r2.status is RoundStatus.agreed and world.replicas[0].status is ReplicaStatus.fenced
    world.vote(r1, 1, HONEST)
    assert r1.status is RoundStatus.collecting
    world.vote(r1, 2, HONEST)
    assert r1.status is RoundStatus.agreed
    assert not any(isinstance(e, RoundDiverged) for e in world.events)


@settings(max_examples=120, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(list(range(9))))
def test_honest_replicas_always_agree_whatever_the_order_of_votes(order: list[int]) -> None:
    """Hole 4, generalised: with one faulty replica (f = 1), any interleaving of votes over
    three rounds ends with every round agreed on the honest digest; none diverges."""
    world = Cluster()
    rounds = [world.clerk.open_round(make_read(f"r{i}")) for i in range(3)]
    votes = [(r, i) for r in range(3) for i in range(3)]
    for slot in order:
        round_index, replica_index = votes[slot]
        world.vote(rounds[round_index], replica_index, WRONG if replica_index == 0 else HONEST)
    assert [r.status for r in rounds] == [RoundStatus.agreed] * 3
    assert all(p.account_delta_minor == HONEST for p in world.proposals)


@pytest.mark.parametrize(("fault_budget", "replica_count", "commit_quorum"), [
    (1, 3, 1),  # one lying replica commits alone
    (1, 2, 2),  # fewer than 2f + 1 replicas
    (2, 5, 2),  # quorum below f + 1
    (1, 3, 3),  # no quorum once f replicas are lost
])
def test_an_unsafe_configuration_is_refused_at_start_up(fault_budget: int, replica_count: int,
                                                        commit_quorum: int) -> None:
    """Hole 5: the Clerk refuses to start on a config that breaks QuorumOutnumbersFaults."""
    config = Config(fault_budget=fault_budget, replica_count=replica_count, commit_quorum=commit_quorum)
    with pytest.raises(InvariantViolation):
        Clerk(Journal(epoch=1), clock=lambda: T0, config=config)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.integers(0, 3), st.integers(1, 9), st.integers(1, 9))
def test_the_clerk_starts_exactly_on_safe_configurations(f: int, n: int, q: int) -> None:
    """Hole 5, over the whole space: start iff q >= f + 1, n >= 2f + 1 and n >= q + f."""
    safe = q >= f + 1 and n >= 2 * f + 1 and n >= q + f
    config = Config(fault_budget=f, replica_count=n, commit_quorum=q)
    try:
        Clerk(Journal(epoch=1), clock=lambda: T0, config=config)
        started = True
    except InvariantViolation:
        started = False
    assert started == safe


def _fenced_and_recovering() -> tuple[Cluster, Any]:
    world = Cluster()
    r = world.clerk.open_round(make_read("r1"))
    for index, delta in ((0, WRONG), (1, HONEST), (2, HONEST)):
        world.vote(r, index, delta)
    faulty = world.replicas[0]
    assert faulty.status is ReplicaStatus.fenced
    world.clerk.begin_recovery_on_rejoin(Node(node_id="n0", status=NodeStatus.joining, last_heartbeat_at=T0))
    assert faulty.status is ReplicaStatus.recovering
    return world, faulty


def test_a_fenced_replica_is_not_readmitted_on_its_own_report() -> None:
    """Hole 3: the node that computed wrong digests reports a clean conformance run."""
    world, faulty = _fenced_and_recovering()
    vectors = world.clerk.config.conformance_vectors
    try:
        ConformanceHarness(world.clerk, faulty).conformance_replayed(vectors, 0)
    except Rejected:
        pass
    assert faulty.status is not ReplicaStatus.active


def test_the_clerk_api_does_not_readmit_on_a_self_report_either() -> None:
    """Hole 3, through the Clerk's own entry point for the trigger."""
    world, faulty = _fenced_and_recovering()
    try:
        world.clerk.conformance_replayed(faulty, world.clerk.config.conformance_vectors * 10, 0)
    except Rejected:
        pass
    assert faulty.status is not ReplicaStatus.active
    assert not faulty.is_eligible
