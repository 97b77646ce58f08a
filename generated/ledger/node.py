"""node.allium: one replica process of the BFT ledger service.

This module holds the spec's declarations (Ballot, VoteService, Fault,
NodeProcess, Pending, Batch, Config), every rule as a small function that
checks its ``requires`` clauses and applies its ``ensures`` together, and the
three surfaces.  The running process (HTTP, votes, the primary's pipeline,
log consumption, the lease) lives in helper modules ``ledger.node_*``:

* ``node_config``   -- command line, cluster key, per-node keys
* ``node_votes``    -- canonical ballot encoding, HMAC, replica evaluation, tally
* ``node_ports``    -- the ONE adapter around ``ledger.store`` / ``ledger.eventlog``
* ``node_pipeline`` -- admission, batching, f + 1 agreement, commit, answers
* ``node_log``      -- one consumer task per log partition
* ``node_http``     -- the plain ASGI app and its OpenAPI document
* ``node_runtime``  -- lifecycle: start, lease, claim, step down, graceful stop
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from allium.verify import implements
from ledger.api import RefusalCause, SubmissionRefused, require_api_caller
from ledger.core import (
    AccessDenied,
    ApiClient,
    Channel,
    Config as CoreConfig,
    Envelope,
    Rejected,
    TransitionRejected,
)

__all__ = [
    "Ballot", "VoteService", "Fault", "NodeStatus", "PendingStatus", "BatchStatus",
    "NodeProcess", "Pending", "Batch", "Config", "LeaseLike", "OutcomeLike",
    "NODE_TRANSITIONS", "PENDING_TRANSITIONS", "BATCH_TRANSITIONS",
    "start_node", "join_as_backup", "claim_primary", "step_down", "stop_node", "node_stopped",
    "admit_request", "forward_to_primary", "refuse_when_not_serving", "form_batch",
    "agree_on_batch", "commit_batch", "answer_pending", "refuse_pending", "fail_batch",
    "consume_log", "cast_ballot", "inject_fault", "PeerVotes", "ClientApi", "ServiceDocument",
    "node_main",
]


# Values, contract and enums ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Ballot:
    """value Ballot: one replica's signed answer for one batch (a digest per item, in order)."""

    node_id: str
    batch_id: str
    epoch: int
    digests: tuple[str, ...]
    signature: str

    def __post_init__(self) -> None:
        # Values are immutable: a list handed in is frozen so equality stays structural.
        object.__setattr__(self, "digests", tuple(self.digests))


@runtime_checkable
class VoteService(Protocol):
    """contract VoteService: ``vote(batch_id, epoch, items, reads) -> Ballot``.

    ``vote`` is a coroutine because a remote replica answers over HTTP.
    @invariant SignedBallots and SameInputsSameBallot are upheld by
    ``ledger.node_votes`` (signature over the canonical ballot encoding; the
    Arbiter run over the items in order against the running reads).
    """

    async def vote(self, batch_id: str, epoch: int, items: Sequence[Envelope],
                   reads: Sequence[Any]) -> Ballot: ...


class Fault(str, enum.Enum):
    """enum Fault { none | corrupt_outcomes | lie_about_digests | slow_votes }."""

    none = "none"
    corrupt_outcomes = "corrupt_outcomes"
    lie_about_digests = "lie_about_digests"
    slow_votes = "slow_votes"


class NodeStatus(str, enum.Enum):
    """NodeProcess.status: starting | backup | leader | stopping | stopped."""

    starting = "starting"
    backup = "backup"
    leader = "leader"
    stopping = "stopping"
    stopped = "stopped"


class PendingStatus(str, enum.Enum):
    """Pending.status: queued | voting | answered | refused."""

    queued = "queued"
    voting = "voting"
    answered = "answered"
    refused = "refused"


class BatchStatus(str, enum.Enum):
    """Batch.status: collecting | agreed | committed | failed."""

    collecting = "collecting"
    agreed = "agreed"
    committed = "committed"
    failed = "failed"


NODE_TRANSITIONS: Mapping[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.starting: frozenset({NodeStatus.backup, NodeStatus.stopping}),
    NodeStatus.backup: frozenset({NodeStatus.leader, NodeStatus.stopping}),
    NodeStatus.leader: frozenset({NodeStatus.backup, NodeStatus.stopping}),
    NodeStatus.stopping: frozenset({NodeStatus.stopped}),
    NodeStatus.stopped: frozenset(),
}
PENDING_TRANSITIONS: Mapping[PendingStatus, frozenset[PendingStatus]] = {
    PendingStatus.queued: frozenset({PendingStatus.voting, PendingStatus.refused}),
    PendingStatus.voting: frozenset({PendingStatus.answered, PendingStatus.refused}),
    PendingStatus.answered: frozenset(),
    PendingStatus.refused: frozenset(),
}
BATCH_TRANSITIONS: Mapping[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.collecting: frozenset({BatchStatus.agreed, BatchStatus.failed}),
    BatchStatus.agreed: frozenset({BatchStatus.committed, BatchStatus.failed}),
    BatchStatus.committed: frozenset(),
    BatchStatus.failed: frozenset(),
}


def _check_edge(entity: str, table: Mapping[Any, frozenset[Any]], current: Any, target: Any) -> None:
    """Reject any status change that ``transitions status`` does not declare."""
    if target not in table[current]:
        raise TransitionRejected(f"{entity}.status", 0, f"{current.value} -> {target.value} is not declared")


# Entities ------------------------------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class NodeProcess:
    """entity NodeProcess: the running process; ``leader`` holds the lease and runs the pipeline."""

    node_id: str
    ordinal: int
    status: NodeStatus = NodeStatus.starting
    epoch: int = 0
    fault: Fault = Fault.none
    started_at: datetime
    stopped_at: datetime | None = None

    @property
    def is_serving(self) -> bool:
        """Derived NodeProcess.is_serving: status in {backup, leader}."""
        return self.status in (NodeStatus.backup, NodeStatus.leader)

    def transition_to(self, target: NodeStatus) -> None:
        """Move along a declared edge of NodeProcess.status."""
        _check_edge("NodeProcess", NODE_TRANSITIONS, self.status, target)
        self.status = target

    def check_stopped_at(self) -> None:
        """``stopped_at: Timestamp when status = stopped``: present exactly then."""
        if (self.status is NodeStatus.stopped) != (self.stopped_at is not None):
            raise AssertionError(f"stopped_at presence does not match status {self.status.value}")


@dataclass(eq=False, kw_only=True)
class Pending:
    """entity Pending: a request waiting in the primary's pipeline."""

    envelope: Envelope
    channel: Channel
    partition: int | None = None
    offset: int | None = None
    received_at: datetime
    status: PendingStatus = PendingStatus.queued

    def transition_to(self, target: PendingStatus) -> None:
        """Move along a declared edge of Pending.status."""
        _check_edge("Pending", PENDING_TRANSITIONS, self.status, target)
        self.status = target


@dataclass(eq=False, kw_only=True)
class Batch:
    """entity Batch: pending requests evaluated and committed together."""

    batch_id: str
    epoch: int
    size: int
    matching: int = 0
    status: BatchStatus = BatchStatus.collecting

    def transition_to(self, target: BatchStatus) -> None:
        """Move along a declared edge of Batch.status."""
        _check_edge("Batch", BATCH_TRANSITIONS, self.status, target)
        self.status = target


@dataclass(frozen=True)
class Config:
    """config block of node.allium (durations in microseconds)."""

    faults_tolerated: int = 1
    base_port: int = 7400
    heartbeat_micros: int = 300000
    batch_max: int = 256
    batch_linger_micros: int = 2000
    vote_timeout_micros: int = 1000000
    sync_wait_micros: int = 2000000
    max_body_bytes: int = 16384
    log_batch_max: int = 256
    # Vote rounds in a row without f + 1 valid ballots after which a primary steps
    # down (StepDown's @guidance: it is cut off from its peers).
    stepdown_failed_rounds: int = 3


class LeaseLike(Protocol):
    """What ClaimPrimary reads of store.allium's Lease: its epoch and expiry."""

    epoch: int
    expires_at: datetime


class OutcomeLike(Protocol):
    """What AnswerPending reads of a core Outcome."""

    request_id: str


# Rules ---------------------------------------------------------------------------------------


@implements("StartNode")
def start_node(existing: Mapping[str, NodeProcess], node_id: str, ordinal: int, fault: Fault,
               now: datetime, config: Config = Config()) -> NodeProcess:
    """rule StartNode: create the process (status starting, epoch 0)."""
    if not 1 <= ordinal <= 2 * config.faults_tolerated + 1:
        raise Rejected("StartNode", 1, f"ordinal {ordinal} outside 1..{2 * config.faults_tolerated + 1}")
    if node_id in existing:
        raise Rejected("StartNode", 2, f"node {node_id} already exists")
    return NodeProcess(node_id=node_id, ordinal=ordinal, status=NodeStatus.starting, epoch=0,
                       fault=fault, started_at=now)


@implements("JoinAsBackup")
def join_as_backup(process: NodeProcess) -> NodeProcess:
    """rule JoinAsBackup: a created process becomes a backup."""
    if process.status is not NodeStatus.starting:
        raise Rejected("JoinAsBackup", 1, f"status is {process.status.value}, not starting")
    process.transition_to(NodeStatus.backup)
    return process


@implements("ClaimPrimary")
def claim_primary(process: NodeProcess, lease: LeaseLike, now: datetime) -> NodeProcess:
    """rule ClaimPrimary: a backup takes an expired lease; epoch = lease.epoch + 1.

    The store's claim_epoch is the linearizable arbiter; the runtime calls
    this rule only after the store granted the claim.
    """
    if process.status is not NodeStatus.backup:
        raise Rejected("ClaimPrimary", 1, f"status is {process.status.value}, not backup")
    if lease.expires_at > now:
        raise Rejected("ClaimPrimary", 2, "the lease has not expired")
    process.transition_to(NodeStatus.leader)
    process.epoch = lease.epoch + 1
    return process


@implements("StepDown")
def step_down(process: NodeProcess) -> NodeProcess:
    """rule StepDown: a leader whose renewal failed (or was fenced) becomes a backup."""
    if process.status is not NodeStatus.leader:
        raise Rejected("StepDown", 1, f"status is {process.status.value}, not leader")
    process.transition_to(NodeStatus.backup)
    return process


@implements("StopNode")
def stop_node(process: NodeProcess) -> NodeProcess:
    """rule StopNode: a graceful stop begins (status stopping)."""
    if process.status not in (NodeStatus.starting, NodeStatus.backup, NodeStatus.leader):
        raise Rejected("StopNode", 1, f"status is {process.status.value}")
    process.transition_to(NodeStatus.stopping)
    return process


@implements("NodeStopped")
def node_stopped(process: NodeProcess, now: datetime) -> NodeProcess:
    """rule NodeStopped: when status becomes stopping, the process ends (stopped, stopped_at)."""
    process.transition_to(NodeStatus.stopped)
    process.stopped_at = now
    return process


@implements("AdmitRequest")
def admit_request(process: NodeProcess, envelope: Envelope, channel: Channel, now: datetime,
                  partition: int | None = None, offset: int | None = None,
                  core_config: CoreConfig = CoreConfig()) -> Pending:
    """rule AdmitRequest: the leader queues a request whose amount is in bounds."""
    if process.status is not NodeStatus.leader:
        raise Rejected("AdmitRequest", 1, f"status is {process.status.value}, not leader")
    if not 0 <= envelope.amount_minor <= core_config.max_amount_minor:
        raise Rejected("AdmitRequest", 2, f"amount_minor {envelope.amount_minor} out of bounds")
    return Pending(envelope=envelope, channel=channel, partition=partition, offset=offset,
                   received_at=now, status=PendingStatus.queued)


@implements("ForwardToPrimary")
def forward_to_primary(process: NodeProcess, envelope: Envelope) -> NodeProcess:
    """rule ForwardToPrimary: a backup relays a submission; it stays a backup."""
    if process.status is not NodeStatus.backup:
        raise Rejected("ForwardToPrimary", 1, f"status is {process.status.value}, not backup")
    return process


@implements("RefuseWhenNotServing")
def refuse_when_not_serving(process: NodeProcess, envelope: Envelope) -> SubmissionRefused:
    """rule RefuseWhenNotServing: a process that is not serving refuses (unavailable)."""
    if process.is_serving:
        raise Rejected("RefuseWhenNotServing", 1, f"status {process.status.value} is serving")
    return _refused(envelope)


def _refused(envelope: Envelope) -> SubmissionRefused:
    """api/SubmissionRefused(request_id, cause: unavailable) for an envelope's client."""
    return SubmissionRefused(ApiClient(client_id=envelope.client_id), envelope.request_id,
                             RefusalCause.unavailable)


@implements("FormBatch")
def form_batch(process: NodeProcess, batch_id: str, queued: Sequence[Pending],
               config: Config = Config()) -> Batch:
    """rule FormBatch: 1..batch_max queued requests become a collecting batch, all voting."""
    if process.status is not NodeStatus.leader:
        raise Rejected("FormBatch", 1, f"status is {process.status.value}, not leader")
    if not 1 <= len(queued) <= config.batch_max:
        raise Rejected("FormBatch", 2, f"{len(queued)} requests, want 1..{config.batch_max}")
    for pending in queued:  # check every edge first: the ensures happen all or nothing
        _check_edge("Pending", PENDING_TRANSITIONS, pending.status, PendingStatus.voting)
    for pending in queued:
        pending.status = PendingStatus.voting
    return Batch(batch_id=batch_id, epoch=process.epoch, size=len(queued), matching=0,
                 status=BatchStatus.collecting)


@implements("AgreeOnBatch")
def agree_on_batch(batch: Batch, ballots: Sequence[Ballot], config: Config = Config()) -> Batch:
    """rule AgreeOnBatch: f + 1 valid ballots agree; matching = their count.

    Per item, the pipeline commits only a decision digest that f + 1 ballots carry; an
    item agreed as "fault" (the Arbiter raised EvaluationFault) or without agreement is
    never committed and is answered 503 (evaluation_fault / no_agreement).
    """
    if batch.status is not BatchStatus.collecting:
        raise Rejected("AgreeOnBatch", 1, f"batch is {batch.status.value}, not collecting")
    if len(ballots) < config.faults_tolerated + 1:
        raise Rejected("AgreeOnBatch", 2, f"{len(ballots)} ballots, need {config.faults_tolerated + 1}")
    batch.transition_to(BatchStatus.agreed)
    batch.matching = len(ballots)
    return batch


@implements("CommitBatch")
def commit_batch(batch: Batch) -> Batch:
    """rule CommitBatch: an agreed batch is committed (the store call is the pipeline's)."""
    batch.transition_to(BatchStatus.committed)
    return batch


@implements("AnswerPending")
def answer_pending(pending: Pending, outcome: OutcomeLike) -> Pending:
    """rule AnswerPending: a voting request is answered with the outcome of its own id."""
    if pending.status is not PendingStatus.voting:
        raise Rejected("AnswerPending", 1, f"pending is {pending.status.value}, not voting")
    if outcome.request_id != pending.envelope.request_id:
        raise Rejected("AnswerPending", 2, "the outcome belongs to another request")
    pending.transition_to(PendingStatus.answered)
    return pending


@implements("RefusePending")
def refuse_pending(pending: Pending) -> SubmissionRefused:
    """rule RefusePending: a queued or voting request is refused (503, took no effect)."""
    if pending.status not in (PendingStatus.queued, PendingStatus.voting):
        raise Rejected("RefusePending", 1, f"pending is {pending.status.value}")
    pending.transition_to(PendingStatus.refused)
    return _refused(pending.envelope)


@implements("FailBatch")
def fail_batch(batch: Batch) -> Batch:
    """rule FailBatch: no agreement in time, or the store failed; nothing of it commits."""
    if batch.status not in (BatchStatus.collecting, BatchStatus.agreed):
        raise Rejected("FailBatch", 1, f"batch is {batch.status.value}")
    batch.transition_to(BatchStatus.failed)
    return batch


@implements("ConsumeLog")
def consume_log(process: NodeProcess, partition: int) -> NodeProcess:
    """rule ConsumeLog: only the leader consumes a partition; it stays leader."""
    if process.status is not NodeStatus.leader:
        raise Rejected("ConsumeLog", 1, f"status is {process.status.value}, not leader")
    return process


@implements("CastBallot")
def cast_ballot(peer: NodeProcess) -> NodeProcess:
    """rule CastBallot: only a serving peer votes; voting changes nothing of it."""
    if not peer.is_serving:
        raise Rejected("CastBallot", 1, f"peer status {peer.status.value} is not serving")
    return peer


@implements("InjectFault")
def inject_fault(process: NodeProcess, fault: Fault) -> NodeProcess:
    """rule InjectFault: a serving process adopts the configured fault (launcher only)."""
    if not process.is_serving:
        raise Rejected("InjectFault", 1, f"status {process.status.value} is not serving")
    process.fault = fault
    return process


# Surfaces ------------------------------------------------------------------------------------


@dataclass
class PeerVotes:
    """surface PeerVotes: facing peer: NodeProcess; exposes node_id, epoch; provides CastBallot."""

    peer: NodeProcess
    configured: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.peer, NodeProcess):
            raise AccessDenied("PeerVotes", 0, "the peer is not a NodeProcess")
        if self.configured and self.peer.node_id not in self.configured:
            raise AccessDenied("PeerVotes", 0, f"{self.peer.node_id} is not a configured node")

    def exposed(self) -> dict[str, object]:
        """exposes: peer.node_id, peer.epoch."""
        return {"node_id": self.peer.node_id, "epoch": self.peer.epoch}

    def available_operations(self) -> tuple[str, ...]:
        """CastBallot is offered only while its requires (peer.is_serving) can hold."""
        return ("CastBallot",) if self.peer.is_serving else ()

    def cast_ballot(self) -> NodeProcess:
        """Provides CastBallot(peer)."""
        return cast_ballot(self.peer)


@dataclass
class ClientApi:
    """surface ClientApi: facing client: api/ApiCaller; exposes client.client_id."""

    client: ApiClient

    def __post_init__(self) -> None:
        require_api_caller(self.client)  # AccessDenied for a revoked or non-client caller

    def exposed(self) -> dict[str, object]:
        """exposes: client.client_id."""
        return {"client_id": self.client.client_id}


@dataclass
class ServiceDocument:
    """surface ServiceDocument: facing reader: NodeProcess; exposes reader.status."""

    reader: NodeProcess

    def __post_init__(self) -> None:
        if not isinstance(self.reader, NodeProcess):
            raise AccessDenied("ServiceDocument", 0, "the reader is not a NodeProcess")

    def exposed(self) -> dict[str, object]:
        """exposes: reader.status."""
        return {"status": self.reader.status.value}

    def document(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document (@guarantee OpenApiMatchesApiSpec)."""
        from ledger.node_http import openapi_document

        return openapi_document()


# Entry point ---------------------------------------------------------------------------------


def node_main(argv: list[str]) -> int:
    """``python -m ledger node ...``: run one node until stopped (StartNode's @guidance)."""
    from ledger.node_runtime import run_node_main

    return run_node_main(argv)
