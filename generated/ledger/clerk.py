"""Unit `clerk` (clerk.allium): redundant evaluation, digest quorum, fencing.

The Clerk hands every eligible replica the same read set (DispatchRound),
collects one digest vote per replica (CastVote), proposes the decision once
``commit_quorum`` = f + 1 digests match (ReachAgreement), fences every
replica that dissents (FenceDissenter), retries rounds on which no quorum
forms (RetryDivergedRound) and finally quarantines the request
(QuarantineRequest). Missing replicas stall a round instead (StallRound).

These settled decisions shape the safety of this module:

* the Clerk refuses to start on a config that breaks QuorumOutnumbersFaults
  (``Clerk.__init__`` raises ``InvariantViolation``);
* a round diverges only when every replica that is eligible *now* has voted:
  votes of replicas fenced since they voted are not counted (DivergeRound);
* a fenced replica returns to service only on conformance digests the Clerk
  compares itself against recorded ones (CheckConformance, PassConformance);
  its own report of a clean replay readmits nothing;
* votes are signed by the replicas, not by the Clerk: each Vote carries the
  digest of the read set the replica evaluated and the replica's signature
  (an injected ``signer`` stands for the replica's own node and key), and
  ReachAgreement relays the quorum's signed votes to the Ledger as
  ``ledger/Endorsement``s, which the commit verifies itself;
* a replica whose evaluation faulted casts a fault vote (``fault_digest``),
  which is never proposed: a lone fault is a dissent, f + 1 faults diverge
  the attempt (FaultRound) towards retry and quarantine.

Coupling to other units is deliberately thin: statuses of dependency
entities are compared by their spec value (``"ready"``, ``"decided"``...),
so the module works whether a dependency stores an enum or a string.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from allium.verify import implements

from ledger.arbiter import Evaluation, EvaluationStatus
from ledger.core import (
    AccessDenied,
    InvariantViolation,
    Rejected,
    RejectReason,
    TransitionRejected,
    Verdict,
)
from ledger.ledger import Endorsement, Proposal, read_set_digest, vote_statement

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from ledger.cluster import Node
    from ledger.core import Operator, Request
    from ledger.ledger import EpochGrant, Journal
    from ledger.registrar import ReadSet

__all__ = [
    "ReplicaStatus",
    "RoundStatus",
    "Config",
    "Replica",
    "Round",
    "Vote",
    "DispatchRound",
    "DissentDetected",
    "RoundDiverged",
    "QuorumUnavailable",
    "ReplicaFenced",
    "Incident",
    "ConformanceVector",
    "ConformanceCheck",
    "Clerk",
    "ConformanceHarness",
    "ReplicaMaintenance",
    "RoundInspection",
    "decision_digest",
    "decision_digest_of",
    "evaluated_read_digest",
    "vote_statement_of",
    "quarantine_digest",
    "fault_digest",
    "round_vector_id",
    "is_replica_host",
    "is_replica_responder",
    "check_commits_have_quorum",
    "check_one_vote_per_replica_per_round",
    "check_one_round_per_attempt",
    "check_quorum_outnumbers_faults",
    "check_replica_per_node",
    "REPLICA_TRANSITIONS",
    "ROUND_TRANSITIONS",
]


# ---------------------------------------------------------------------------
# Enumerations and config
# ---------------------------------------------------------------------------


class ReplicaStatus(str, enum.Enum):
    """Replica.status: active | fenced | recovering | retired."""

    active = "active"
    fenced = "fenced"
    recovering = "recovering"
    retired = "retired"


class RoundStatus(str, enum.Enum):
    """Round.status: collecting | agreed | committed | diverged | superseded."""

    collecting = "collecting"
    agreed = "agreed"
    committed = "committed"
    diverged = "diverged"
    superseded = "superseded"


@dataclass(frozen=True)
class Config:
    """config block of clerk.allium (n = 2f + 1 replicas, quorum f + 1).

    ``replica_count`` and ``commit_quorum`` default to the spec's
    expressions over ``fault_budget`` (3 and 2 with the default f = 1).
    """

    fault_budget: int = 1
    replica_count: int = None  # type: ignore[assignment]  # derived below
    commit_quorum: int = None  # type: ignore[assignment]  # derived below
    round_timeout: timedelta = timedelta(seconds=1)
    max_attempts: int = 3
    conformance_vectors: int = 10000

    def __post_init__(self) -> None:
        # Defaults derived from fault_budget, exactly as the spec declares.
        if self.replica_count is None:
            object.__setattr__(self, "replica_count", 2 * self.fault_budget + 1)
        if self.commit_quorum is None:
            object.__setattr__(self, "commit_quorum", self.fault_budget + 1)


# ---------------------------------------------------------------------------
# Small adapters over dependency entities (keep coupling to values only)
# ---------------------------------------------------------------------------


def _state(value: Any) -> Any:
    """The spec value of an enum member or plain string status."""
    return value.value if isinstance(value, enum.Enum) else value


def _key(request: Any) -> tuple[str, str]:
    """The idempotency key (client_id, request_id) of a core/Request."""
    return (request.client_id, request.request_id)


def _same_request(a: Any, b: Any) -> bool:
    """Request equality as the spec's `request = request` (by identity or key)."""
    return a is b or _key(a) == _key(b)


_LIVE_NODE_STATES = frozenset({"joining", "backup", "candidate", "recovering", "primary"})


def _node_is_live(node: Any) -> bool:
    """cluster/Node.is_live: status in {joining, backup, candidate, recovering, primary}."""
    live = getattr(node, "is_live", None)
    if callable(live):
        live = live()
    if isinstance(live, bool):
        return live
    return _state(node.status) in _LIVE_NODE_STATES


def _presence(value: Any) -> str:
    """How a `when` field stands, for the message of a broken presence check."""
    return "absent" if value is None else "present"


_REFUSED_PROPOSAL_STATES = frozenset({"duplicate", "conflicted", "fenced"})


# ---------------------------------------------------------------------------
# Transition tables
# ---------------------------------------------------------------------------

REPLICA_TRANSITIONS: dict[ReplicaStatus, frozenset[ReplicaStatus]] = {
    ReplicaStatus.active: frozenset({ReplicaStatus.fenced}),
    ReplicaStatus.fenced: frozenset({ReplicaStatus.recovering, ReplicaStatus.retired}),
    ReplicaStatus.recovering: frozenset({ReplicaStatus.active, ReplicaStatus.fenced}),
    ReplicaStatus.retired: frozenset(),  # terminal
}

ROUND_TRANSITIONS: dict[RoundStatus, frozenset[RoundStatus]] = {
    RoundStatus.collecting: frozenset(
        {RoundStatus.agreed, RoundStatus.diverged, RoundStatus.superseded}
    ),
    RoundStatus.agreed: frozenset({RoundStatus.committed, RoundStatus.superseded}),
    RoundStatus.committed: frozenset(),  # terminal
    RoundStatus.diverged: frozenset(),  # terminal
    RoundStatus.superseded: frozenset(),  # terminal
}


# ---------------------------------------------------------------------------
# Entities
# ---------------------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class Replica:
    """entity Replica: the evaluation replica hosted by one cluster node."""

    replica_id: str
    node: Node
    dissents: int = 0
    # Recoveries entered so far, and recorded evaluations reproduced (as
    # compared by the Clerk) in the current one.
    recoveries: int = 1
    conformance_passed: int = 0
    status: ReplicaStatus = ReplicaStatus.recovering
    fenced_at: datetime | None = None
    recovery_started_at: datetime | None = None

    @property
    def is_eligible(self) -> bool:
        """Derived Replica.is_eligible: status = active and node.is_live."""
        return self.status == ReplicaStatus.active and _node_is_live(self.node)

    def transition_to(self, target: ReplicaStatus) -> None:
        """Apply a declared `transitions status` edge; refuse any other."""
        target = ReplicaStatus(target)
        if target not in REPLICA_TRANSITIONS[self.status]:
            raise TransitionRejected(
                "Replica.status", 0, f"{self.status.value} -> {target.value} is not declared"
            )
        self.status = target

    def check_when_presence(self) -> None:
        """fenced_at iff status = fenced; recovery_started_at iff status = recovering."""
        # Named by the qualified field, as core names a broken invariant.
        if (self.fenced_at is not None) != (self.status == ReplicaStatus.fenced):
            raise InvariantViolation(
                f"Replica.fenced_at: {_presence(self.fenced_at)} on {self.replica_id}, "
                f"status {self.status.value}"
            )
        if (self.recovery_started_at is not None) != (self.status == ReplicaStatus.recovering):
            raise InvariantViolation(
                f"Replica.recovery_started_at: {_presence(self.recovery_started_at)} on "
                f"{self.replica_id}, status {self.status.value}"
            )


@dataclass(eq=False, kw_only=True)
class Round:
    """entity Round: one attempt at agreeing on one request's decision."""

    request: Request
    read_set: ReadSet
    attempt: int
    epoch: int
    opened_at: datetime
    deadline: datetime
    stalled: bool = False
    status: RoundStatus = RoundStatus.collecting
    agreed_digest: str | None = None
    committed_at: datetime | None = None
    # Relationship `votes: Vote with round = this`, maintained by the Clerk.
    votes: list[Vote] = field(default_factory=list, repr=False)

    def support(self, digest: str | None) -> list[Vote]:
        """Derived Round.support(d): votes where digest = d."""
        return [vote for vote in self.votes if vote.digest == digest]

    def transition_to(self, target: RoundStatus) -> None:
        """Apply a declared `transitions status` edge; refuse any other."""
        target = RoundStatus(target)
        if target not in ROUND_TRANSITIONS[self.status]:
            raise TransitionRejected(
                "Round.status", 0, f"{self.status.value} -> {target.value} is not declared"
            )
        self.status = target

    def check_when_presence(self) -> None:
        """agreed_digest iff status in {agreed, committed}; committed_at iff committed."""
        agreed = self.status in (RoundStatus.agreed, RoundStatus.committed)
        if (self.agreed_digest is not None) != agreed:
            raise InvariantViolation(
                f"Round.agreed_digest: {_presence(self.agreed_digest)} on attempt {self.attempt}, "
                f"status {self.status.value}"
            )
        if (self.committed_at is not None) != (self.status == RoundStatus.committed):
            raise InvariantViolation(
                f"Round.committed_at: {_presence(self.committed_at)} on attempt {self.attempt}, "
                f"status {self.status.value}"
            )


@dataclass(eq=False, kw_only=True)
class Vote:
    """entity Vote: one replica's answer to one round (digest + Decision)."""

    round: Round
    replica: Replica
    digest: str
    verdict: Verdict
    reason: RejectReason | None = None
    account_delta_minor: int
    counterparty_delta_minor: int
    cast_at: datetime
    # Signed by the replica, not the Clerk (CastVote): the read set it
    # evaluated, and its signature over that and its Decision.
    read_set_digest: str = ""
    signature: str = ""


@dataclass(eq=False, kw_only=True)
class ConformanceVector:
    """entity ConformanceVector: a recorded evaluation and the digest its quorum agreed on.

    Every committed round records one; a deployment is seeded with the
    build's recorded corpus through ``Clerk.add_conformance_vector``.
    """

    vector_id: str
    expected_digest: str


@dataclass(eq=False, kw_only=True)
class ConformanceCheck:
    """entity ConformanceCheck: one recorded evaluation a recovering replica re-ran,
    compared by the Clerk (``matches``), never by the replica."""

    replica: Replica
    vector: ConformanceVector
    recovery: int
    digest: str
    matches: bool
    checked_at: datetime


# ---------------------------------------------------------------------------
# Triggers emitted by the Clerk
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DispatchRound:
    """trigger DispatchRound(round)."""

    round: Round


@dataclass(frozen=True, eq=False)
class DissentDetected:
    """trigger DissentDetected(vote)."""

    vote: Vote


@dataclass(frozen=True, eq=False)
class RoundDiverged:
    """trigger RoundDiverged(round)."""

    round: Round


@dataclass(frozen=True, eq=False)
class QuorumUnavailable:
    """trigger QuorumUnavailable(round)."""

    round: Round


@dataclass(frozen=True, eq=False)
class ReplicaFenced:
    """trigger ReplicaFenced(replica, round)."""

    replica: Replica
    round: Round


@dataclass(frozen=True, eq=False)
class Incident:
    """Incident record of a quarantine (QuarantineRequest @guidance).

    Captures the read set and every Decision of the final diverged round,
    so engineers can reproduce the Arbiter's determinism bug.
    """

    round: Round
    read_set: Any
    votes: tuple[Vote, ...]
    recorded_at: datetime


# ---------------------------------------------------------------------------
# Canonical encoding and digests (CastVote / QuarantineRequest @guidance)
# ---------------------------------------------------------------------------

_DECISION_TAG = b"ledger.clerk.decision.v1\x00"
_QUARANTINE_TAG = b"ledger.clerk.quarantine.v1\x00"
_FAULT_TAG = b"ledger.clerk.fault.v1\x00"


def _enc_str(text: str) -> bytes:
    """Length-prefixed UTF-8 string (core CanonicalEncoding.FieldOrderFixed)."""
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def _enc_int(number: int) -> bytes:
    """Big-endian 64-bit two's-complement integer."""
    return int(number).to_bytes(8, "big", signed=True)


def _enc_opt_str(text: str | None) -> bytes:
    """Absent optionals are a single 0x00 byte; present ones are 0x01 + value."""
    return b"\x00" if text is None else b"\x01" + _enc_str(text)


def decision_digest_of(
    client_id: str,
    request_id: str,
    attempt: int,
    verdict: Any,
    reason: Any,
    account_delta_minor: int,
    counterparty_delta_minor: int,
) -> str:
    """decision_digest: lowercase hex SHA-256 over the canonical encoding of
    (client_id, request_id, attempt, verdict, reason, account_delta_minor,
    counterparty_delta_minor). Binding key and attempt makes a vote specific
    to one round, so it cannot be replayed into another.
    """
    reason_value = None if reason is None else str(_state(reason))
    payload = b"".join(
        (
            _DECISION_TAG,
            _enc_str(client_id),
            _enc_str(request_id),
            _enc_int(attempt),
            _enc_str(str(_state(verdict))),
            _enc_opt_str(reason_value),
            _enc_int(account_delta_minor),
            _enc_int(counterparty_delta_minor),
        )
    )
    return hashlib.sha256(payload).hexdigest()


def decision_digest(evaluation: Any) -> str:
    """decision_digest(evaluation): the digest a replica ships for its Decision."""
    return decision_digest_of(
        evaluation.request.client_id,
        evaluation.request.request_id,
        evaluation.attempt,
        evaluation.verdict,
        evaluation.reason,
        evaluation.account_delta_minor,
        evaluation.counterparty_delta_minor,
    )


def evaluated_read_digest(evaluation: Any) -> str:
    """evaluated_read_digest(evaluation): ledger's read_set_digest over the snapshot the
    replica evaluated (so it equals the Ledger's digest of its rows when the read set is right)."""
    return read_set_digest(
        evaluation.primary_present, evaluation.primary_status, evaluation.primary_balance_minor,
        evaluation.primary_version, evaluation.counter_present, evaluation.counter_status,
        evaluation.counter_balance_minor, evaluation.counter_version,
    )


def vote_statement_of(evaluation: Any, read_digest: str) -> bytes:
    """What a replica signs for its vote: ledger's vote_statement over the request key,
    attempt, read-set digest and its Decision."""
    return vote_statement(
        evaluation.request.client_id, evaluation.request.request_id, evaluation.attempt, read_digest,
        evaluation.verdict, evaluation.reason, evaluation.account_delta_minor,
        evaluation.counterparty_delta_minor,
    )


def _vote_digest(vote: Vote) -> str:
    """Recompute the digest of the payload a vote carries (never trust the claim)."""
    return decision_digest_of(
        vote.round.request.client_id,
        vote.round.request.request_id,
        vote.round.attempt,
        vote.verdict,
        vote.reason,
        vote.account_delta_minor,
        vote.counterparty_delta_minor,
    )


def fault_digest(request: Any, attempt: int) -> str:
    """fault_digest(request, attempt): the vote of a replica whose evaluation faulted.

    Its own domain tag keeps it apart from every decision_digest, so a fault
    vote never joins a quorum for a decision; the key and attempt make it
    specific to one round, like a decision digest.
    """
    client_id, request_id = _key(request)
    payload = b"".join((_FAULT_TAG, _enc_str(client_id), _enc_str(request_id), _enc_int(attempt)))
    return hashlib.sha256(payload).hexdigest()


def round_vector_id(round: Round) -> str:
    """round_vector_id(round): the recorded evaluation's name, request key and attempt."""
    client_id, request_id = _key(round.request)
    return f"{client_id}/{request_id}#{round.attempt}"


def quarantine_digest(request: Any) -> str:
    """quarantine_digest(request): digest of the quarantine rejection of a request.

    It is independent of the attempt: whichever attempt quarantines the
    request, the durable answer is the same.
    """
    payload = b"".join(
        (
            _QUARANTINE_TAG,
            _enc_str(request.client_id),
            _enc_str(request.request_id),
            _enc_str(Verdict.rejected.value),
            _enc_opt_str(RejectReason.quarantined.value),
            _enc_int(0),
            _enc_int(0),
        )
    )
    return hashlib.sha256(payload).hexdigest()


# ---------------------------------------------------------------------------
# Actors
# ---------------------------------------------------------------------------


def is_replica_host(replica: Replica) -> bool:
    """actor ReplicaHost: identified_by Replica where status != retired."""
    return isinstance(replica, Replica) and replica.status != ReplicaStatus.retired


def is_replica_responder(operator: Any) -> bool:
    """actor ReplicaResponder: identified_by core/Operator where role = responder."""
    role = getattr(operator, "role", None)
    return role is not None and _state(role) == "responder"


# ---------------------------------------------------------------------------
# Invariants (callable checks)
# ---------------------------------------------------------------------------


def check_commits_have_quorum(rounds: Iterable[Round], config: Config) -> None:
    """invariant CommitsHaveQuorum: every committed round had f + 1 matching digests."""
    for r in rounds:
        if r.status == RoundStatus.committed and len(r.support(r.agreed_digest)) < config.commit_quorum:
            raise InvariantViolation(f"CommitsHaveQuorum: round attempt {r.attempt} of {_key(r.request)}")


def check_one_vote_per_replica_per_round(votes: Iterable[Vote]) -> None:
    """invariant OneVotePerReplicaPerRound."""
    seen: set[tuple[int, int]] = set()
    for vote in votes:
        pair = (id(vote.round), id(vote.replica))
        if pair in seen:
            raise InvariantViolation(f"OneVotePerReplicaPerRound: {vote.replica.replica_id}")
        seen.add(pair)


def check_one_round_per_attempt(rounds: Iterable[Round]) -> None:
    """invariant OneRoundPerAttempt: (request, attempt) identifies a round."""
    seen: set[tuple[tuple[str, str], int]] = set()
    for r in rounds:
        pair = (_key(r.request), r.attempt)
        if pair in seen:
            raise InvariantViolation(f"OneRoundPerAttempt: {pair}")
        seen.add(pair)


def check_quorum_outnumbers_faults(config: Config) -> None:
    """invariant QuorumOutnumbersFaults: f >= 0, quorum >= f + 1, n >= 2f + 1, n >= quorum + f."""
    f, n, q = config.fault_budget, config.replica_count, config.commit_quorum
    if not (f >= 0 and q >= f + 1 and n >= 2 * f + 1 and n >= q + f):
        raise InvariantViolation(
            f"QuorumOutnumbersFaults: fault_budget={f}, replica_count={n}, commit_quorum={q} "
            f"(need commit_quorum >= {f + 1} and replica_count >= {max(2 * f + 1, q + f)})"
        )


def check_replica_per_node(replicas: Iterable[Replica]) -> None:
    """invariant ReplicaPerNode: no two replicas share a node."""
    seen: list[Any] = []
    for replica in replicas:
        if any(replica.node is node for node in seen):
            raise InvariantViolation(f"ReplicaPerNode: {replica.replica_id}")
        seen.append(replica.node)


# ---------------------------------------------------------------------------
# The Clerk: state plus rules
# ---------------------------------------------------------------------------


class Clerk:
    """The Clerk's state (Replicas, Rounds, Votes) and the rules of clerk.allium.

    ``given journal: ledger/Journal`` is injected, as are the clock and two
    outbound hooks: ``on_evaluation`` (hand a created arbiter/Evaluation to
    its replica) and ``on_proposal`` (submit a ledger/Proposal for commit).
    Every emitted trigger is appended to ``events`` and passed to listeners
    registered with :meth:`subscribe`; the Clerk's own rules consume
    DispatchRound, DissentDetected and RoundDiverged. QuorumUnavailable is
    emitted exactly when a round's ``stalled`` becomes true (the trigger of
    api's CountStall), and ReplicaFenced whenever a replica is fenced.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        clock: Callable[[], datetime],
        config: Config | None = None,
        on_evaluation: Callable[[Evaluation], None] | None = None,
        on_proposal: Callable[[Proposal], None] | None = None,
        signer: Callable[[str, bytes], str] | None = None,
        on_endorsement: Callable[[Endorsement], None] | None = None,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.config = config if config is not None else Config()
        # Settled decision "When is the quorum arithmetic checked?": at start-up;
        # an unsafe config is refused before the first round, never run.
        check_quorum_outnumbers_faults(self.config)
        self.on_evaluation = on_evaluation
        self.on_proposal = on_proposal
        # replica_signature(replica, evaluation): the replica's own node signs
        # with a key only it and the Ledger hold; the Clerk only relays. None
        # leaves votes unsigned (the Ledger then commits none of them).
        self.signer = signer
        # ledger/Endorsement.created: relayed to the Ledger before the proposal.
        self.on_endorsement = on_endorsement
        self.endorsements: list[Endorsement] = []
        self.replicas: list[Replica] = []
        self.rounds: list[Round] = []
        self.votes: list[Vote] = []
        self.evaluations: list[Evaluation] = []
        self.proposals: list[Proposal] = []
        self.incidents: list[Incident] = []
        self.vectors: dict[str, ConformanceVector] = {}
        self.conformance_checks: list[ConformanceCheck] = []
        # ConformanceCheck{replica, vector, recovery} in O(1): a recovery
        # checks conformance_vectors (10,000) of them.
        self._check_index: dict[tuple[int, int, int], ConformanceCheck] = {}
        self.events: list[object] = []
        # FencingIsAudited: (replica, evidence) for every fence and every return.
        self.fence_audit: list[tuple[Replica, Vote | ConformanceCheck]] = []
        self.return_audit: list[tuple[Replica, ConformanceCheck]] = []
        self._listeners: list[Callable[[object], None]] = []

    # -- lookups ----------------------------------------------------------

    def find_round(self, request: Any, attempt: int) -> Round | None:
        """Round{request, attempt}."""
        for r in self.rounds:
            if r.attempt == attempt and _same_request(r.request, request):
                return r
        return None

    def find_replica(self, replica_id: str) -> Replica | None:
        """Replica{replica_id}."""
        return next((r for r in self.replicas if r.replica_id == replica_id), None)

    def find_evaluation(self, request: Any, attempt: int, replica_id: str) -> Any | None:
        """arbiter/Evaluation{request, attempt, replica_id} among those dispatched."""
        for e in self.evaluations:
            if e.attempt == attempt and e.replica_id == replica_id and _same_request(e.request, request):
                return e
        return None

    def eligible_replicas(self) -> list[Replica]:
        """Replicas where is_eligible."""
        return [r for r in self.replicas if r.is_eligible]

    def find_check(self, replica: Replica, vector: ConformanceVector, recovery: int) -> ConformanceCheck | None:
        """ConformanceCheck{replica, vector, recovery}."""
        return self._check_index.get((id(replica), id(vector), recovery))

    def add_conformance_vector(self, vector_id: str, expected_digest: str) -> ConformanceVector:
        """ConformanceVector.created from outside the rules: seeding a deployment with
        the build's recorded corpus. An existing vector is kept, never overwritten."""
        vector = self.vectors.get(vector_id)
        if vector is None:
            vector = ConformanceVector(vector_id=vector_id, expected_digest=expected_digest)
            self.vectors[vector_id] = vector
        return vector

    # -- events -------------------------------------------------------------

    def subscribe(self, listener: Callable[[object], None]) -> None:
        """Receive every trigger the Clerk emits (QuorumUnavailable, ReplicaFenced...)."""
        self._listeners.append(listener)

    def _emit(self, event: object) -> None:
        """Record a trigger, tell listeners, then run the Clerk's own rules on it."""
        self.events.append(event)
        for listener in list(self._listeners):
            listener(event)
        if isinstance(event, DispatchRound):
            self._attempt(self.dispatch_round, event.round)
        elif isinstance(event, DissentDetected):
            # FenceDissenter and CountRepeatDissent both react to one event;
            # their requires are judged on the state before either fires, so
            # a first dissent is counted once (by the fence), not twice.
            if event.vote.replica.status == ReplicaStatus.active:
                self._attempt(self.fence_dissenter, event.vote)
            else:
                self._attempt(self.count_repeat_dissent, event.vote)
        elif isinstance(event, RoundDiverged):
            self._attempt(self.retry_diverged_round, event.round)
            self._attempt(self.quarantine_request, event.round)

    @staticmethod
    def _attempt(rule: Callable[..., Any], *args: Any) -> Any:
        """Fire a rule from a trigger: a rule whose requires fail changes nothing."""
        try:
            return rule(*args)
        except Rejected:
            return None

    def _create_round(self, rule: str, request: Any, read: Any, attempt: int, epoch: int) -> Round:
        """Round.created, guarded by OneRoundPerAttempt; then fires AnnounceRound."""
        if self.find_round(request, attempt) is not None:
            # A redelivered trigger must not open a second round for one attempt.
            raise Rejected(rule, 0, f"a round for attempt {attempt} already exists")
        now = self.clock()
        new_round = Round(
            request=request,
            read_set=read,
            attempt=attempt,
            epoch=epoch,
            opened_at=now,
            deadline=now + self.config.round_timeout,
            stalled=False,
            status=RoundStatus.collecting,
        )
        self.rounds.append(new_round)
        self._attempt(self.announce_round, new_round)
        return new_round

    def _submit(self, proposal: Proposal) -> None:
        """ledger/Proposal.created: record and hand to the Ledger."""
        self.proposals.append(proposal)
        if self.on_proposal is not None:
            self.on_proposal(proposal)

    # -- rounds ---------------------------------------------------------------

    @implements("OpenRound")
    def open_round(self, read: ReadSet) -> Round:
        """rule OpenRound: a ready read set of the current epoch opens a round."""
        if _state(read.status) != "ready":
            raise Rejected("OpenRound", 1, "read set is not ready")
        if read.epoch != self.journal.epoch:
            raise Rejected("OpenRound", 2, f"read set epoch {read.epoch} != journal epoch {self.journal.epoch}")
        return self._create_round("OpenRound", read.request, read, read.attempt, read.epoch)

    @implements("AnnounceRound")
    def announce_round(self, round: Round) -> DispatchRound:
        """rule AnnounceRound: a new collecting round is dispatched."""
        if round.status != RoundStatus.collecting:
            raise Rejected("AnnounceRound", 1, f"round is {round.status.value}")
        event = DispatchRound(round=round)
        self._emit(event)
        return event

    @implements("DispatchRound")
    def dispatch_round(self, round: Round) -> list[Any]:
        """rule DispatchRound: every eligible replica without an Evaluation of
        this attempt receives one built from the round's single read set."""
        if round.status != RoundStatus.collecting:
            raise Rejected("DispatchRound", 1, f"round is {round.status.value}")
        read = round.read_set
        if _state(read.status) != "ready":
            raise Rejected("DispatchRound", 2, "read set is not ready")
        created: list[Any] = []
        for replica in self.eligible_replicas():
            # Per-replica requires: a replica evaluates an attempt at most once.
            if self.find_evaluation(round.request, round.attempt, replica.replica_id) is not None:
                continue
            created.append(
                Evaluation(
                    request=round.request,
                    attempt=round.attempt,
                    replica_id=replica.replica_id,
                    primary_present=read.primary_present,
                    primary_status=read.primary_status,
                    primary_balance_minor=read.primary_balance_minor,
                    primary_version=read.primary_version,
                    counter_present=read.counter_present,
                    counter_status=read.counter_status,
                    counter_balance_minor=read.counter_balance_minor,
                    counter_version=read.counter_version,
                    status=EvaluationStatus.pending,
                )
            )
        # All evaluations exist before any replica answers (ensures are joint).
        self.evaluations.extend(created)
        if self.on_evaluation is not None:
            for evaluation in created:
                self.on_evaluation(evaluation)
        return created

    @implements("CastVote")
    def cast_vote(self, evaluation: Evaluation) -> Vote:
        """rule CastVote: a decided Evaluation becomes the replica's Vote."""
        if _state(evaluation.status) != "decided":
            raise Rejected("CastVote", 1, "evaluation is not decided")
        round = self.find_round(evaluation.request, evaluation.attempt)
        if round is None:
            raise Rejected("CastVote", 2, "no round for this attempt")
        replica = self.find_replica(evaluation.replica_id)
        if replica is None:
            raise Rejected("CastVote", 3, f"unknown replica {evaluation.replica_id}")
        if any(v.replica is replica for v in round.votes):
            raise Rejected("CastVote", 4, f"{replica.replica_id} already voted")
        read_digest = evaluated_read_digest(evaluation)
        signature = (self.signer(replica.replica_id, vote_statement_of(evaluation, read_digest))
                     if self.signer is not None else "")
        vote = Vote(
            round=round,
            replica=replica,
            digest=decision_digest(evaluation),
            read_set_digest=read_digest,
            signature=signature,
            verdict=evaluation.verdict,
            reason=evaluation.reason,
            account_delta_minor=evaluation.account_delta_minor,
            counterparty_delta_minor=evaluation.counterparty_delta_minor,
            cast_at=self.clock(),
        )
        round.votes.append(vote)
        self.votes.append(vote)
        self._vote_created(vote)
        return vote

    @implements("CastFaultVote")
    def cast_fault_vote(self, evaluation: Evaluation) -> Vote:
        """rule CastFaultVote: a faulted Evaluation becomes a fault vote.

        Verdict and deltas are placeholders nobody reads: a fault vote is
        never proposed (ReachAgreement refuses the fault digest).
        """
        if _state(evaluation.status) != "faulted":
            raise Rejected("CastFaultVote", 1, "evaluation is not faulted")
        round = self.find_round(evaluation.request, evaluation.attempt)
        if round is None:
            raise Rejected("CastFaultVote", 2, "no round for this attempt")
        replica = self.find_replica(evaluation.replica_id)
        if replica is None:
            raise Rejected("CastFaultVote", 3, f"unknown replica {evaluation.replica_id}")
        if any(v.replica is replica for v in round.votes):
            raise Rejected("CastFaultVote", 4, f"{replica.replica_id} already voted")
        vote = Vote(
            round=round,
            replica=replica,
            digest=fault_digest(round.request, round.attempt),
            read_set_digest=evaluated_read_digest(evaluation),
            signature="",  # never proposed, so never endorsed
            verdict=Verdict.rejected,
            reason=None,
            account_delta_minor=0,
            counterparty_delta_minor=0,
            cast_at=self.clock(),
        )
        round.votes.append(vote)
        self.votes.append(vote)
        self._vote_created(vote)
        return vote

    def _vote_created(self, vote: Vote) -> None:
        """Vote.created triggers FlagLateDissent, ReachAgreement, FaultRound and DivergeRound.

        FlagLateDissent runs first so it sees the round as it was when the
        vote arrived; the other three are mutually exclusive (by the fault
        digest and by support count).
        """
        self._attempt(self.flag_late_dissent, vote)
        self._attempt(self.reach_agreement, vote)
        self._attempt(self.fault_round, vote)
        self._attempt(self.diverge_round, vote)

    @implements("ReachAgreement")
    def reach_agreement(self, vote: Vote) -> Proposal:
        """rule ReachAgreement: f + 1 matching digests agree; propose and flag dissent."""
        round = vote.round
        if round.status != RoundStatus.collecting:
            raise Rejected("ReachAgreement", 1, f"round is {round.status.value}")
        if vote.digest == fault_digest(round.request, round.attempt):
            raise Rejected("ReachAgreement", 2, "a fault vote is never proposed")
        if vote.replica.status != ReplicaStatus.active:
            raise Rejected("ReachAgreement", 3, f"replica is {vote.replica.status.value}")
        support = round.support(vote.digest)
        if len(support) < self.config.commit_quorum:
            raise Rejected("ReachAgreement", 4, f"support {len(support)} < quorum {self.config.commit_quorum}")
        read = round.read_set
        if _state(read.status) != "ready":
            raise Rejected("ReachAgreement", 5, "read set is not ready")
        # @guidance: propose only a payload whose recomputed digest equals the
        # agreed digest; if the triggering vote's payload does not verify,
        # take it from another member of the quorum.
        payload = next((v for v in [vote, *support] if _vote_digest(v) == vote.digest), None)
        if payload is None:
            raise Rejected("ReachAgreement", 0, "no quorum member carries a payload matching the digest")
        dissenters = [other for other in round.votes if other.digest != vote.digest]
        proposal = Proposal(
            request=round.request,
            attempt=round.attempt,
            epoch=round.epoch,
            digest=vote.digest,
            verdict=payload.verdict,
            reason=payload.reason,
            account_delta_minor=payload.account_delta_minor,
            counterparty_delta_minor=payload.counterparty_delta_minor,
            expected_primary_version=read.primary_version,
            expected_counter_version=read.counter_version,
        )
        round.transition_to(RoundStatus.agreed)
        round.agreed_digest = vote.digest
        # The quorum's signed votes travel with the proposal: the Ledger
        # verifies them itself before it commits anything.
        for endorser in support:
            endorsement = Endorsement(
                request=round.request,
                attempt=round.attempt,
                replica_id=endorser.replica.replica_id,
                read_set_digest=endorser.read_set_digest,
                signature=endorser.signature,
            )
            self.endorsements.append(endorsement)
            if self.on_endorsement is not None:
                self.on_endorsement(endorsement)
        self._submit(proposal)
        for other in dissenters:
            self._emit(DissentDetected(vote=other))
        return proposal

    @implements("FaultRound")
    def fault_round(self, vote: Vote) -> RoundDiverged:
        """rule FaultRound: f + 1 replicas failed to evaluate this attempt.

        At least one of them is correct, so it is a bug for this input: the
        attempt diverges (RetryDivergedRound, then QuarantineRequest with an
        incident) and never commits.
        """
        round = vote.round
        if round.status != RoundStatus.collecting:
            raise Rejected("FaultRound", 1, f"round is {round.status.value}")
        if vote.digest != fault_digest(round.request, round.attempt):
            raise Rejected("FaultRound", 2, "not a fault vote")
        support = round.support(vote.digest)
        if len(support) < self.config.commit_quorum:
            raise Rejected("FaultRound", 3, f"{len(support)} fault votes < quorum {self.config.commit_quorum}")
        round.transition_to(RoundStatus.diverged)
        event = RoundDiverged(round=round)
        self._emit(event)
        return event

    @implements("DivergeRound")
    def diverge_round(self, vote: Vote) -> RoundDiverged:
        """rule DivergeRound: every eligible replica voted and no digest reached quorum."""
        round = vote.round
        if round.status != RoundStatus.collecting:
            raise Rejected("DivergeRound", 1, f"round is {round.status.value}")
        if len(round.support(vote.digest)) >= self.config.commit_quorum:
            raise Rejected("DivergeRound", 2, "the vote's digest has a quorum")
        eligible = self.eligible_replicas()
        # Only votes of replicas eligible now count: a replica fenced since it
        # voted (here or in another round) says nothing about the honest
        # replicas that have not answered yet.
        counted = [v for v in round.votes if v.replica.is_eligible]
        if len(counted) < len(eligible):
            raise Rejected("DivergeRound", 3, f"{len(counted)} eligible votes < {len(eligible)} eligible replicas")
        round.transition_to(RoundStatus.diverged)
        event = RoundDiverged(round=round)
        self._emit(event)
        return event

    @implements("FlagLateDissent")
    def flag_late_dissent(self, vote: Vote) -> DissentDetected:
        """rule FlagLateDissent: a vote arriving after agreement that differs is dissent."""
        round = vote.round
        if round.status not in (RoundStatus.agreed, RoundStatus.committed):
            raise Rejected("FlagLateDissent", 1, f"round is {round.status.value}")
        if vote.digest == round.agreed_digest:
            raise Rejected("FlagLateDissent", 2, "vote matches the agreed digest")
        event = DissentDetected(vote=vote)
        self._emit(event)
        return event

    @implements("CommitRound")
    def commit_round(self, proposal: Proposal) -> Round:
        """rule CommitRound: the Ledger committed the round's proposal."""
        if _state(proposal.status) != "committed":
            raise Rejected("CommitRound", 0, "proposal is not committed")
        round = self.find_round(proposal.request, proposal.attempt)
        if round is None:
            raise Rejected("CommitRound", 1, "no round for this attempt")
        if round.status != RoundStatus.agreed:
            raise Rejected("CommitRound", 2, f"round is {round.status.value}")
        round.transition_to(RoundStatus.committed)
        round.committed_at = self.clock()
        # The committed round becomes a recorded evaluation for conformance.
        assert round.agreed_digest is not None
        self.add_conformance_vector(round_vector_id(round), round.agreed_digest)
        return round

    @implements("SupersedeRefused")
    def supersede_refused(self, proposal: Proposal) -> Round:
        """rule SupersedeRefused: a proposal the Ledger refused ends its round."""
        if _state(proposal.status) not in _REFUSED_PROPOSAL_STATES:
            raise Rejected("SupersedeRefused", 0, "proposal is not refused")
        round = self.find_round(proposal.request, proposal.attempt)
        if round is None:
            raise Rejected("SupersedeRefused", 1, "no round for this attempt")
        if round.status != RoundStatus.agreed:
            raise Rejected("SupersedeRefused", 2, f"round is {round.status.value}")
        round.transition_to(RoundStatus.superseded)
        round.agreed_digest = None
        return round

    @implements("SupersedeOnEpochChange")
    def supersede_on_epoch_change(self, grant: EpochGrant) -> list[Round]:
        """rule SupersedeOnEpochChange: open and agreed rounds of older epochs end."""
        superseded: list[Round] = []
        for r in self.rounds:
            if r.epoch < grant.epoch and r.status in (RoundStatus.collecting, RoundStatus.agreed):
                r.transition_to(RoundStatus.superseded)
                r.agreed_digest = None  # already null for collecting rounds
                superseded.append(r)
        return superseded

    # -- timeouts -------------------------------------------------------------

    def _require_due(self, rule: str, round: Round) -> None:
        """Temporal trigger `round.deadline <= now`."""
        if round.deadline > self.clock():
            raise Rejected(rule, 0, "round deadline not reached")

    @implements("RedispatchSlowRound")
    def redispatch_slow_round(self, round: Round) -> DispatchRound:
        """rule RedispatchSlowRound: enough replicas are eligible; ask again."""
        self._require_due("RedispatchSlowRound", round)
        if round.status != RoundStatus.collecting:
            raise Rejected("RedispatchSlowRound", 1, f"round is {round.status.value}")
        eligible = self.eligible_replicas()
        if len(eligible) < self.config.commit_quorum:
            raise Rejected("RedispatchSlowRound", 2, f"only {len(eligible)} eligible replicas")
        round.deadline = self.clock() + self.config.round_timeout
        event = DispatchRound(round=round)
        self._emit(event)
        return event

    @implements("StallRound")
    def stall_round(self, round: Round) -> QuorumUnavailable:
        """rule StallRound: too few eligible replicas; wait, never quarantine."""
        self._require_due("StallRound", round)
        if round.status != RoundStatus.collecting:
            raise Rejected("StallRound", 1, f"round is {round.status.value}")
        if round.stalled:
            raise Rejected("StallRound", 2, "round already stalled")
        eligible = self.eligible_replicas()
        if len(eligible) >= self.config.commit_quorum:
            raise Rejected("StallRound", 3, f"{len(eligible)} eligible replicas reach the quorum")
        round.stalled = True
        event = QuorumUnavailable(round=round)
        self._emit(event)
        return event

    def tick(self) -> list[object]:
        """Fire the temporal rules (RedispatchSlowRound, StallRound) that are due."""
        fired: list[object] = []
        for r in list(self.rounds):
            if r.deadline > self.clock():
                continue
            for rule in (self.redispatch_slow_round, self.stall_round):
                event = self._attempt(rule, r)
                if event is not None:
                    fired.append(event)
        return fired

    @implements("ResumeStalledRounds")
    def resume_stalled_rounds(self, replica: Replica) -> list[Round]:
        """rule ResumeStalledRounds: a replica became active; re-dispatch stalled rounds."""
        if replica.status != ReplicaStatus.active:
            raise Rejected("ResumeStalledRounds", 0, "replica is not active")
        resumed = [r for r in self.rounds if r.status == RoundStatus.collecting and r.stalled]
        for r in resumed:
            r.stalled = False
            r.deadline = self.clock() + self.config.round_timeout
        for r in resumed:
            self._emit(DispatchRound(round=r))
        return resumed

    # -- divergence -------------------------------------------------------------

    @implements("RetryDivergedRound")
    def retry_diverged_round(self, round: Round) -> Round:
        """rule RetryDivergedRound: a diverged attempt is retried on the same read set."""
        if round.attempt >= self.config.max_attempts:
            raise Rejected("RetryDivergedRound", 1, f"attempt {round.attempt} reached max_attempts")
        return self._create_round(
            "RetryDivergedRound", round.request, round.read_set, round.attempt + 1, round.epoch
        )

    @implements("QuarantineRequest")
    def quarantine_request(self, round: Round) -> Proposal:
        """rule QuarantineRequest: answer persistent divergence with a durable rejection."""
        if round.attempt < self.config.max_attempts:
            raise Rejected("QuarantineRequest", 1, f"attempt {round.attempt} below max_attempts")
        proposal = Proposal(
            request=round.request,
            attempt=round.attempt,
            epoch=round.epoch,
            digest=quarantine_digest(round.request),
            verdict=Verdict.rejected,
            reason=RejectReason.quarantined,
            account_delta_minor=0,
            counterparty_delta_minor=0,
            expected_primary_version=0,
            expected_counter_version=0,
        )
        self.incidents.append(
            Incident(round=round, read_set=round.read_set, votes=tuple(round.votes), recorded_at=self.clock())
        )
        self._submit(proposal)
        return proposal

    # -- replicas -----------------------------------------------------------------

    @implements("RegisterReplica")
    def register_replica(self, node: Node) -> Replica:
        """rule RegisterReplica: every new cluster node hosts one replica, which
        starts in recovery (it must pass conformance before it votes)."""
        if self.find_replica(node.node_id) is not None:
            raise Rejected("RegisterReplica", 1, f"replica {node.node_id} exists")
        replica = Replica(
            replica_id=node.node_id,
            node=node,
            dissents=0,
            recoveries=1,
            conformance_passed=0,
            status=ReplicaStatus.recovering,
            recovery_started_at=self.clock(),
        )
        self.replicas.append(replica)
        return replica

    @implements("FenceDissenter")
    def fence_dissenter(self, vote: Vote) -> ReplicaFenced:
        """rule FenceDissenter: fence an active replica on its first dissent."""
        replica = vote.replica
        if replica.status != ReplicaStatus.active:
            raise Rejected("FenceDissenter", 1, f"replica is {replica.status.value}")
        replica.transition_to(ReplicaStatus.fenced)
        replica.fenced_at = self.clock()
        replica.dissents += 1
        self.fence_audit.append((replica, vote))
        event = ReplicaFenced(replica=replica, round=vote.round)
        self._emit(event)
        return event

    @implements("CountRepeatDissent")
    def count_repeat_dissent(self, vote: Vote) -> Replica:
        """rule CountRepeatDissent: dissent by a replica that is not active is counted."""
        replica = vote.replica
        if replica.status == ReplicaStatus.active:
            raise Rejected("CountRepeatDissent", 1, "replica is active")
        replica.dissents += 1
        return replica

    def _begin_recovery(self, replica: Replica) -> None:
        """fenced -> recovering, shared by BeginRecoveryOnRejoin and RecoverReplica."""
        replica.transition_to(ReplicaStatus.recovering)
        replica.fenced_at = None
        replica.recovery_started_at = self.clock()
        replica.recoveries += 1
        replica.conformance_passed = 0  # a new recovery starts from nothing

    @implements("BeginRecoveryOnRejoin")
    def begin_recovery_on_rejoin(self, node: Node) -> Replica:
        """rule BeginRecoveryOnRejoin: a fenced replica's node restarted (joining)."""
        if _state(node.status) != "joining":
            raise Rejected("BeginRecoveryOnRejoin", 0, "node is not joining")
        replica = self.find_replica(node.node_id)
        if replica is None:
            raise Rejected("BeginRecoveryOnRejoin", 1, f"no replica for {node.node_id}")
        if replica.status != ReplicaStatus.fenced:
            raise Rejected("BeginRecoveryOnRejoin", 2, f"replica is {replica.status.value}")
        self._begin_recovery(replica)
        return replica

    @implements("RecoverReplica")
    def recover_replica(self, operator: Operator, replica: Replica) -> Replica:
        """rule RecoverReplica: a responder sends a fenced replica into recovery."""
        if not is_replica_responder(operator):
            raise Rejected("RecoverReplica", 1, "operator is not a responder")
        if replica.status != ReplicaStatus.fenced:
            raise Rejected("RecoverReplica", 2, f"replica is {replica.status.value}")
        self._begin_recovery(replica)
        return replica

    @implements("CheckConformance")
    def check_conformance(self, replica: Replica, vector: ConformanceVector, digest: str) -> ConformanceCheck:
        """rule CheckConformance: the Clerk compares a recovering replica's digest for a
        recorded evaluation with the one the quorum agreed on; each vector counts once
        per recovery. Then CountConformance, PassConformance or FailConformanceCheck."""
        if replica.status != ReplicaStatus.recovering:
            raise Rejected("CheckConformance", 1, f"replica is {replica.status.value}")
        if self.find_check(replica, vector, replica.recoveries) is not None:
            raise Rejected("CheckConformance", 2, f"vector {vector.vector_id} already checked in this recovery")
        check = ConformanceCheck(
            replica=replica,
            vector=vector,
            recovery=replica.recoveries,
            digest=digest,
            matches=digest == vector.expected_digest,
            checked_at=self.clock(),
        )
        self.conformance_checks.append(check)
        self._check_index[(id(replica), id(vector), check.recovery)] = check
        # ConformanceCheck.created: the three rules partition a new check.
        if not check.matches:
            self._attempt(self.fail_conformance_check, check)
        elif replica.conformance_passed + 1 >= self.config.conformance_vectors:
            self._attempt(self.pass_conformance, check)
        else:
            self._attempt(self.count_conformance, check)
        return check

    def conformance_digest(self, replica: Replica, vector: ConformanceVector, digest: str) -> ConformanceCheck:
        """trigger ConformanceDigest(replica, vector, digest) -> CheckConformance."""
        return self.check_conformance(replica, vector, digest)

    @implements("CountConformance")
    def count_conformance(self, check: ConformanceCheck) -> Replica:
        """rule CountConformance: one more recorded evaluation reproduced, not yet enough."""
        replica = check.replica
        if not check.matches:
            raise Rejected("CountConformance", 1, "digest does not match the recorded one")
        if replica.status != ReplicaStatus.recovering:
            raise Rejected("CountConformance", 2, f"replica is {replica.status.value}")
        if replica.conformance_passed + 1 >= self.config.conformance_vectors:
            raise Rejected("CountConformance", 3, "this match completes the conformance run")
        replica.conformance_passed += 1
        return replica

    @implements("PassConformance")
    def pass_conformance(self, check: ConformanceCheck) -> Replica:
        """rule PassConformance: the Clerk has seen conformance_vectors matching digests in
        this recovery; back to active. Then ResumeStalledRounds fires."""
        replica = check.replica
        if not check.matches:
            raise Rejected("PassConformance", 1, "digest does not match the recorded one")
        if replica.status != ReplicaStatus.recovering:
            raise Rejected("PassConformance", 2, f"replica is {replica.status.value}")
        if replica.conformance_passed + 1 < self.config.conformance_vectors:
            raise Rejected(
                "PassConformance", 3,
                f"{replica.conformance_passed + 1} < {self.config.conformance_vectors} vectors reproduced",
            )
        replica.conformance_passed += 1
        replica.transition_to(ReplicaStatus.active)
        replica.recovery_started_at = None
        self.return_audit.append((replica, check))
        self._attempt(self.resume_stalled_rounds, replica)
        return replica

    @implements("FailConformanceCheck")
    def fail_conformance_check(self, check: ConformanceCheck) -> Replica:
        """rule FailConformanceCheck: one wrong digest sends the replica back to fenced."""
        replica = check.replica
        if check.matches:
            raise Rejected("FailConformanceCheck", 1, "digest matches the recorded one")
        if replica.status != ReplicaStatus.recovering:
            raise Rejected("FailConformanceCheck", 2, f"replica is {replica.status.value}")
        replica.transition_to(ReplicaStatus.fenced)
        replica.recovery_started_at = None
        replica.fenced_at = self.clock()
        self.fence_audit.append((replica, check))
        return replica

    @implements("FailConformance")
    def fail_conformance(self, replica: Replica, vectors: int, mismatches: int) -> Replica:
        """rule FailConformance: a replica reporting a mismatch goes back to fenced.

        A self-report is believed only when it reports a failure: it can only
        keep the replica out.
        """
        if replica.status != ReplicaStatus.recovering:
            raise Rejected("FailConformance", 1, f"replica is {replica.status.value}")
        if mismatches <= 0:
            raise Rejected("FailConformance", 2, "no mismatches reported")
        replica.transition_to(ReplicaStatus.fenced)
        replica.recovery_started_at = None
        replica.fenced_at = self.clock()
        return replica

    def conformance_replayed(self, replica: Replica, vectors: int, mismatches: int) -> Replica:
        """trigger ConformanceReplayed(replica, vectors, mismatches): FailConformance only.

        A clean self-report readmits nothing (settled decision "How does a
        fenced replica come back?"): the Rejected says so; only digests the
        Clerk compares (ConformanceDigest) can return a replica to service.
        """
        return self.fail_conformance(replica, vectors, mismatches)

    @implements("RetireReplica")
    def retire_replica(self, operator: Operator, replica: Replica) -> Replica:
        """rule RetireReplica: a responder retires a fenced replica for good."""
        if not is_replica_responder(operator):
            raise Rejected("RetireReplica", 1, "operator is not a responder")
        if replica.status != ReplicaStatus.fenced:
            raise Rejected("RetireReplica", 2, f"replica is {replica.status.value}")
        replica.transition_to(ReplicaStatus.retired)
        replica.fenced_at = None
        return replica

    # -- inbound triggers from other units (wiring helpers) ---------------------

    def on_read_set_ready(self, read: ReadSet) -> Round | None:
        """registrar/ReadSet.status becomes ready -> OpenRound."""
        return self._attempt(self.open_round, read)

    def on_evaluation_decided(self, evaluation: Evaluation) -> Vote | None:
        """arbiter/Evaluation.status becomes decided -> CastVote."""
        return self._attempt(self.cast_vote, evaluation)

    def on_evaluation_faulted(self, evaluation: Evaluation) -> Vote | None:
        """arbiter/Evaluation.status becomes faulted -> CastFaultVote."""
        return self._attempt(self.cast_fault_vote, evaluation)

    def on_proposal_status(self, proposal: Proposal) -> Round | None:
        """ledger/Proposal status change -> CommitRound or SupersedeRefused."""
        if _state(proposal.status) == "committed":
            return self._attempt(self.commit_round, proposal)
        return self._attempt(self.supersede_refused, proposal)

    def on_epoch_granted(self, grant: EpochGrant) -> list[Round]:
        """ledger/EpochGrant.created -> SupersedeOnEpochChange."""
        return self.supersede_on_epoch_change(grant)

    def on_node_created(self, node: Node) -> Replica | None:
        """cluster/Node.created -> RegisterReplica."""
        return self._attempt(self.register_replica, node)

    def on_node_joining(self, node: Node) -> Replica | None:
        """cluster/Node.status becomes joining -> BeginRecoveryOnRejoin."""
        return self._attempt(self.begin_recovery_on_rejoin, node)

    # -- invariants ---------------------------------------------------------------

    def check_fencing_is_audited(self) -> None:
        """@guarantee FencingIsAudited: every fence follows a recorded dissenting Vote or
        failed ConformanceCheck; every active replica returned on a passing check
        compared by the Clerk in its current recovery."""
        for replica, evidence in self.fence_audit:
            recorded = self.votes if isinstance(evidence, Vote) else self.conformance_checks
            if evidence not in recorded or evidence.replica is not replica:
                raise InvariantViolation(f"FencingIsAudited: fence of {replica.replica_id}")
            if isinstance(evidence, ConformanceCheck) and evidence.matches:
                raise InvariantViolation(f"FencingIsAudited: {replica.replica_id} fenced on a matching check")
        returns = {id(r): check for r, check in self.return_audit}
        for replica in self.replicas:
            if replica.status != ReplicaStatus.active:
                continue
            check = returns.get(id(replica))
            if check is None or not check.matches or check.recovery != replica.recoveries:
                raise InvariantViolation(f"FencingIsAudited: {replica.replica_id} active without a compared replay")

    def check_invariants(self) -> None:
        """Run every clerk.allium invariant plus when-presence of all entities."""
        # Each check raises InvariantViolation("<Name>: ..."), naming the
        # invariant or the qualified `when` field, so the first broken one is
        # named. ASSUMPTION: FencingIsAudited is a surface @guarantee, not an
        # invariant; it stays its own check (check_fencing_is_audited) so that
        # a combined check never fails on replicas other units build directly.
        check_commits_have_quorum(self.rounds, self.config)
        check_one_vote_per_replica_per_round(self.votes)
        check_one_round_per_attempt(self.rounds)
        check_quorum_outnumbers_faults(self.config)
        check_replica_per_node(self.replicas)
        for replica in self.replicas:
            replica.check_when_presence()
        for r in self.rounds:
            r.check_when_presence()


# ---------------------------------------------------------------------------
# Surfaces
# ---------------------------------------------------------------------------


class ConformanceHarness:
    """surface ConformanceHarness, facing host: ReplicaHost.

    Exposes the host replica's status, dissents and conformance_passed;
    provides ConformanceDigest (a digest the Clerk compares) and
    ConformanceReplayed (believed only as a failure) while the host is
    recovering. The harness demands arbiter/DeterministicEvaluation of the
    replayed binary.
    """

    def __init__(self, clerk: Clerk, host: Replica) -> None:
        if not is_replica_host(host):
            raise AccessDenied("ConformanceHarness", 0, "facing actor must be a ReplicaHost")
        self.clerk = clerk
        self.host = host

    def exposes(self) -> dict[str, Any]:
        """host.status, host.dissents and host.conformance_passed."""
        return {
            "status": self.host.status,
            "dissents": self.host.dissents,
            "conformance_passed": self.host.conformance_passed,
        }

    def provides(self) -> frozenset[str]:
        """ConformanceDigest and ConformanceReplayed when host.status = recovering."""
        if self.host.status == ReplicaStatus.recovering:
            return frozenset({"ConformanceDigest", "ConformanceReplayed"})
        return frozenset()

    def conformance_digest(self, vector: ConformanceVector, digest: str) -> ConformanceCheck:
        """Send the digest the host computed for a recorded evaluation; the Clerk compares."""
        if "ConformanceDigest" not in self.provides():
            raise AccessDenied("ConformanceHarness", 0, "ConformanceDigest needs status recovering")
        return self.clerk.conformance_digest(self.host, vector, digest)

    def conformance_replayed(self, vectors: int, mismatches: int) -> Replica:
        """Report a conformance replay (only offered while recovering)."""
        if "ConformanceReplayed" not in self.provides():
            raise AccessDenied("ConformanceHarness", 0, "ConformanceReplayed needs status recovering")
        return self.clerk.conformance_replayed(self.host, vectors, mismatches)


class ReplicaMaintenance:
    """surface ReplicaMaintenance, facing responder: ReplicaResponder, context replica."""

    def __init__(self, clerk: Clerk, responder: Operator, replica: Replica) -> None:
        if not is_replica_responder(responder):
            raise AccessDenied("ReplicaMaintenance", 0, "facing actor must be a ReplicaResponder")
        self.clerk = clerk
        self.responder = responder
        self.replica = replica

    def exposes(self) -> dict[str, Any]:
        """replica_id, status, dissents; fenced_at / recovery_started_at when their state holds."""
        replica = self.replica
        view: dict[str, Any] = {
            "replica_id": replica.replica_id,
            "status": replica.status,
            "dissents": replica.dissents,
        }
        if replica.status == ReplicaStatus.fenced:
            view["fenced_at"] = replica.fenced_at
        if replica.status == ReplicaStatus.recovering:
            view["recovery_started_at"] = replica.recovery_started_at
        return view

    def provides(self) -> frozenset[str]:
        """RecoverReplica and RetireReplica when replica.status = fenced."""
        if self.replica.status == ReplicaStatus.fenced:
            return frozenset({"RecoverReplica", "RetireReplica"})
        return frozenset()

    def recover(self) -> Replica:
        """RecoverReplica(responder, replica)."""
        return self.clerk.recover_replica(self.responder, self.replica)

    def retire(self) -> Replica:
        """RetireReplica(responder, replica)."""
        return self.clerk.retire_replica(self.responder, self.replica)


class RoundInspection:
    """surface RoundInspection, facing responder: ReplicaResponder, context a collecting Round."""

    TIMEOUTS: tuple[str, ...] = ("RedispatchSlowRound", "StallRound")

    def __init__(self, clerk: Clerk, responder: Operator, round: Round) -> None:
        if not is_replica_responder(responder):
            raise AccessDenied("RoundInspection", 0, "facing actor must be a ReplicaResponder")
        if round.status != RoundStatus.collecting:
            raise AccessDenied("RoundInspection", 0, "context is a Round where status = collecting")
        self.clerk = clerk
        self.responder = responder
        self.round = round

    def exposes(self) -> dict[str, Any]:
        """request_id, attempt, stalled, opened_at, and each vote's replica, digest, time."""
        r = self.round
        return {
            "request_id": r.request.request_id,
            "attempt": r.attempt,
            "stalled": r.stalled,
            "opened_at": r.opened_at,
            "votes": [
                {"replica_id": v.replica.replica_id, "digest": v.digest, "cast_at": v.cast_at}
                for v in r.votes
            ],
        }

    def fire_timeouts(self) -> list[object]:
        """The surface's timeout clause: RedispatchSlowRound, StallRound on this round."""
        fired = []
        for rule in (self.clerk.redispatch_slow_round, self.clerk.stall_round):
            event = Clerk._attempt(rule, self.round)
            if event is not None:
                fired.append(event)
        return fired
