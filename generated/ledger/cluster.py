"""Unit `cluster` (cluster.allium): node roles, failure detection, promotion, rejoin.

Which node coordinates (the primary), how its failure is detected, how exactly
one successor is chosen and fenced in through the Ledger's epoch
compare-and-set, how it recovers before serving, and how a failed node rejoins.

Public names (stable; other units import them):

* ``NodeStatus``  - the values of ``Node.status``
* ``Node``        - entity Node (with ``is_leader`` / ``is_live``)
* ``Config``      - the unit's config block
* ``LeadershipVacant``, ``PrimaryReady`` - events this unit emits
* ``Rejected``, ``TransitionError``, ``InvariantViolation`` - failures
* ``Cluster``     - the state the rules act on (``given journal`` plus all Nodes)
* ``NodeLifecycle``, ``ClusterProvisioning``, ``ClusterOperations`` - surfaces
* ``is_node_agent``, ``is_cluster_responder`` - actor checks

Coupling to dependency units is kept to types: ``ledger.ledger`` (Journal,
EpochClaim, EpochGrant) and duck-typed ``warden.Rebuild`` / ``core.Operator``
(only their spec fields are read).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from allium.verify import implements

from ledger.ledger import EpochClaim, EpochClaimStatus, EpochGrant, Journal

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from ledger.core import Operator
    from ledger.warden import Rebuild

Clock = Callable[[], datetime]


# Enumerations ---------------------------------------------------------


class NodeStatus(str, enum.Enum):
    """Node.status: joining | backup | candidate | recovering | primary | down | retired."""

    joining = "joining"
    backup = "backup"
    candidate = "candidate"
    recovering = "recovering"
    primary = "primary"
    down = "down"
    retired = "retired"


# `transitions status { ... }` of entity Node: the only legal edges.
TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.joining: frozenset({NodeStatus.backup, NodeStatus.down}),
    NodeStatus.backup: frozenset({NodeStatus.candidate, NodeStatus.down}),
    NodeStatus.candidate: frozenset({NodeStatus.recovering, NodeStatus.backup, NodeStatus.down}),
    NodeStatus.recovering: frozenset({NodeStatus.primary, NodeStatus.joining, NodeStatus.down}),
    NodeStatus.primary: frozenset({NodeStatus.joining, NodeStatus.down}),
    NodeStatus.down: frozenset({NodeStatus.joining, NodeStatus.retired}),
    NodeStatus.retired: frozenset(),
}
TERMINAL: frozenset[NodeStatus] = frozenset({NodeStatus.retired})

LEADER_STATES: frozenset[NodeStatus] = frozenset(
    {NodeStatus.candidate, NodeStatus.recovering, NodeStatus.primary}
)
LIVE_STATES: frozenset[NodeStatus] = frozenset(
    {NodeStatus.joining, NodeStatus.backup, NodeStatus.candidate, NodeStatus.recovering, NodeStatus.primary}
)
SERVING_STATES: frozenset[NodeStatus] = frozenset({NodeStatus.recovering, NodeStatus.primary})

# `field: T when status = ...` clauses: the states in which each field is present.
WHEN_FIELDS: dict[str, frozenset[NodeStatus]] = {
    "claimed_epoch": frozenset({NodeStatus.candidate}),
    "serving_epoch": SERVING_STATES,
    "promoted_at": frozenset({NodeStatus.primary}),
    "down_since": frozenset({NodeStatus.down}),
}


# Failures -------------------------------------------------------------


class Rejected(Exception):
    """A rule's `requires` (or its trigger condition) did not hold; nothing changed."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"{rule}: {reason}")
        self.rule = rule
        self.reason = reason


class TransitionError(ValueError):
    """An undeclared transition of Node.status was attempted."""


class InvariantViolation(AssertionError):
    """One of cluster.allium's invariants does not hold."""


# Config ---------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """config block of cluster.allium."""

    # Nodes in the cluster; each hosts one evaluation replica.
    node_count: int = 3
    # Nodes send heartbeats this often.
    heartbeat_interval: timedelta = timedelta(seconds=1)
    # A node silent for this long is declared down.
    failure_timeout: timedelta = timedelta(seconds=3)


# Entities -------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """entity Node: one cluster member; identity is the object (eq=False)."""

    node_id: str
    status: NodeStatus
    last_heartbeat_at: datetime
    restarts: int = 0
    catch_up_attempts: int = 0
    claimed_epoch: int | None = None  # when status = candidate
    serving_epoch: int | None = None  # when status = recovering | primary
    promoted_at: datetime | None = None  # when status = primary
    down_since: datetime | None = None  # when status = down

    def __post_init__(self) -> None:
        # Accept the spec's plain value ("primary") as well as the enum member.
        self.status = NodeStatus(self.status)

    @property
    def is_leader(self) -> bool:
        """Derived Node.is_leader: status in {candidate, recovering, primary}."""
        return self.status in LEADER_STATES

    @property
    def is_live(self) -> bool:
        """Derived Node.is_live: status in {joining, backup, candidate, recovering, primary}."""
        return self.status in LIVE_STATES

    def can_transition(self, to: NodeStatus) -> bool:
        """Whether `status -> to` is a declared edge of Node.status."""
        return NodeStatus(to) in TRANSITIONS[self.status]

    def transition(self, to: NodeStatus) -> None:
        """Move Node.status along a declared edge; anything else raises TransitionError."""
        target = NodeStatus(to)
        if target not in TRANSITIONS[self.status]:
            raise TransitionError(f"Node {self.node_id}: {self.status.value} -> {target.value} is not declared")
        self.status = target

    def when_field_violations(self) -> list[str]:
        """Fields present outside (or absent inside) their `when` states."""
        problems = []
        for name, states in WHEN_FIELDS.items():
            present = getattr(self, name) is not None
            if present != (self.status in states):
                verb = "present" if present else "absent"
                problems.append(f"Node {self.node_id}: {name} {verb} in status {self.status.value}")
        return problems


# Events ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LeadershipVacant:
    """Trigger LeadershipVacant(reporter): nobody may be leading any more."""

    reporter: Node


@dataclass(frozen=True, eq=False)
class PrimaryReady:
    """Trigger PrimaryReady(node, epoch): the node has recovered and may serve."""

    node: Node
    epoch: int


ClusterEvent = LeadershipVacant | PrimaryReady


class OperatorLike(Protocol):
    """What this unit reads of core/Operator."""

    name: str
    role: Any


class RebuildLike(Protocol):
    """What this unit reads of warden/Rebuild."""

    epoch: int
    node_id: str
    status: Any


def _value(x: Any) -> Any:
    """An enum member's value, or the value itself (robust to other units' enum styles)."""
    return getattr(x, "value", x)


def lowest_node_id(nodes: Iterable[Node]) -> Node | None:
    """`lowest_node_id(backups)`: the node with the smallest node_id, if any."""
    return min(nodes, key=lambda n: n.node_id, default=None)


# Actors ---------------------------------------------------------------


def is_node_agent(node: Node) -> bool:
    """actor NodeAgent: identified_by Node where status != retired."""
    return isinstance(node, Node) and node.status is not NodeStatus.retired


def is_cluster_responder(operator: OperatorLike) -> bool:
    """actor ClusterResponder: identified_by core/Operator where role = responder."""
    return _value(getattr(operator, "role", None)) == "responder"


# Listener types: let units downstream (api, clerk, usher) react to
# `Node.created` and `Node.status becomes X` without polling.
StatusListener = Callable[[Node, NodeStatus, NodeStatus], None]
NodeListener = Callable[[Node], None]
EventListener = Callable[[ClusterEvent], None]
ClaimSink = Callable[[EpochClaim], None]


class Cluster:
    """The state cluster.allium's rules act on: `given journal` plus every Node.

    Claims created by NominateSuccessor go to `claim_sink` (by default they are
    only collected in `claims`); the Ledger's answers come back through
    `on_epoch_grant_created` and `on_epoch_claim_refused`, the Warden's through
    `on_rebuild_done`. Chained rules (ElectOnVacancy on `becomes backup`,
    NominateSuccessor on LeadershipVacant) fire after the triggering rule's
    effects have all been applied.
    """

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        config: Config | None = None,
        grants: Iterable[EpochGrant] = (),
        claim_sink: ClaimSink | None = None,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.config = config or Config()
        self.nodes: list[Node] = []
        self.grants: list[EpochGrant] = list(grants)
        self.claims: list[EpochClaim] = []
        self.events: list[ClusterEvent] = []
        self.claim_sink = claim_sink
        self.status_listeners: list[StatusListener] = []
        self.created_listeners: list[NodeListener] = []
        self.event_listeners: list[EventListener] = []
        self._followups: list[Callable[[], None]] = []
        self._depth = 0

    # -- lookups ---------------------------------------------------------

    def node(self, node_id: str) -> Node | None:
        """`Node{node_id: node_id}`."""
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def nodes_where(self, pred: Callable[[Node], bool]) -> list[Node]:
        """`Nodes where ...`."""
        return [n for n in self.nodes if pred(n)]

    def leaders(self) -> list[Node]:
        """`Nodes where is_leader`."""
        return self.nodes_where(lambda n: n.is_leader)

    # -- plumbing --------------------------------------------------------

    def _set_status(self, node: Node, to: NodeStatus) -> None:
        """Apply a declared transition and schedule `becomes` reactions."""
        old = node.status
        node.transition(to)
        self._followups.append(lambda: self._status_changed(node, old, to))

    def _status_changed(self, node: Node, old: NodeStatus, new: NodeStatus) -> None:
        for listener in list(self.status_listeners):
            listener(node, old, new)
        if new is NodeStatus.backup:
            self._attempt(lambda: self.elect_on_vacancy(node))

    def _emit(self, event: ClusterEvent) -> None:
        """Record an emitted event and schedule the rules it triggers."""
        self.events.append(event)

        def react() -> None:
            for listener in list(self.event_listeners):
                listener(event)
            if isinstance(event, LeadershipVacant):
                self._attempt(lambda: self.nominate_successor(event))

        self._followups.append(react)

    @staticmethod
    def _attempt(fire: Callable[[], Any]) -> None:
        """Fire a chained rule; a failed `requires` there simply means it does not apply."""
        try:
            fire()
        except Rejected:
            pass

    def _run(self, apply: Callable[[], Any]) -> Any:
        """Apply one rule's effects, then (outermost only) run the chained reactions."""
        self._depth += 1
        try:
            result = apply()
        except BaseException:
            if self._depth == 1:
                self._followups.clear()  # nothing chains off a rule that did not complete
            raise
        finally:
            self._depth -= 1
        if self._depth == 0:
            while self._followups:
                step = self._followups.pop(0)
                self._depth += 1
                try:
                    step()
                finally:
                    self._depth -= 1
        return result

    def _now(self) -> datetime:
        return self.clock()

    # -- membership and heartbeats ---------------------------------------

    @implements("RegisterNode")
    def register_node(self, node_id: str) -> Node:
        """rule RegisterNode: a new node joins, while fewer than node_count are registered."""
        if self.node(node_id) is not None:
            raise Rejected("RegisterNode", f"node {node_id} already exists")
        registered = self.nodes_where(lambda n: n.status is not NodeStatus.retired)
        if len(registered) >= self.config.node_count:
            raise Rejected("RegisterNode", f"{len(registered)} nodes registered, node_count is {self.config.node_count}")

        def apply() -> Node:
            node = Node(
                node_id=node_id, status=NodeStatus.joining, last_heartbeat_at=self._now(),
                restarts=0, catch_up_attempts=0,
            )
            self.nodes.append(node)
            self._followups.append(lambda: [cb(node) for cb in list(self.created_listeners)])
            return node

        return self._run(apply)

    @implements("Heartbeat")
    def heartbeat(self, node: Node) -> None:
        """rule Heartbeat: a live node refreshes last_heartbeat_at."""
        if not node.is_live:
            raise Rejected("Heartbeat", f"node {node.node_id} is {node.status.value}, not live")
        node.last_heartbeat_at = self._now()

    # -- failure detection -----------------------------------------------

    def silent(self, node: Node) -> bool:
        """Temporal trigger `Node.last_heartbeat_at + config.failure_timeout <= now`."""
        return node.last_heartbeat_at + self.config.failure_timeout <= self._now()

    def _detect(self, rule: str, node: Node, expected: NodeStatus, vacant: bool) -> None:
        if not self.silent(node):
            raise Rejected(rule, f"node {node.node_id} heard from within failure_timeout")
        if node.status is not expected:
            raise Rejected(rule, f"node {node.node_id} is {node.status.value}, not {expected.value}")

        def apply() -> None:
            # All `when` fields of the leaving state are cleared with the move.
            self._set_status(node, NodeStatus.down)
            node.claimed_epoch = None
            node.serving_epoch = None
            node.promoted_at = None
            node.down_since = self._now()
            if vacant:
                self._emit(LeadershipVacant(reporter=node))

        self._run(apply)

    @implements("DetectFailedJoiner")
    def detect_failed_joiner(self, node: Node) -> None:
        """rule DetectFailedJoiner: a silent joining node is declared down."""
        self._detect("DetectFailedJoiner", node, NodeStatus.joining, vacant=False)

    @implements("DetectFailedBackup")
    def detect_failed_backup(self, node: Node) -> None:
        """rule DetectFailedBackup: a silent backup is declared down."""
        self._detect("DetectFailedBackup", node, NodeStatus.backup, vacant=False)

    @implements("DetectFailedCandidate")
    def detect_failed_candidate(self, node: Node) -> None:
        """rule DetectFailedCandidate: a silent candidate is down; leadership is vacant."""
        self._detect("DetectFailedCandidate", node, NodeStatus.candidate, vacant=True)

    @implements("DetectFailedRecovery")
    def detect_failed_recovery(self, node: Node) -> None:
        """rule DetectFailedRecovery: a silent recovering node is down; its epoch is abandoned."""
        self._detect("DetectFailedRecovery", node, NodeStatus.recovering, vacant=True)

    @implements("DetectFailedPrimary")
    def detect_failed_primary(self, node: Node) -> None:
        """rule DetectFailedPrimary: a silent primary is down; leadership is vacant.

        Declaring a live primary down is safe (the successor's epoch fences its
        commits), only costly: keep failure_timeout well above the worst pause.
        """
        self._detect("DetectFailedPrimary", node, NodeStatus.primary, vacant=True)

    def tick(self) -> list[Node]:
        """Fire the five timeout rules for every silent node; returns the nodes declared down.

        Their preconditions partition the live states, so exactly one applies to
        a silent live node; a down or retired node matches none (no re-firing).
        """
        detectors = {
            NodeStatus.joining: self.detect_failed_joiner,
            NodeStatus.backup: self.detect_failed_backup,
            NodeStatus.candidate: self.detect_failed_candidate,
            NodeStatus.recovering: self.detect_failed_recovery,
            NodeStatus.primary: self.detect_failed_primary,
        }
        failed = []
        for node in list(self.nodes):
            detect = detectors.get(node.status)
            if detect is not None and self.silent(node):
                detect(node)
                failed.append(node)
        return failed

    # -- promotion -------------------------------------------------------

    @implements("NominateSuccessor")
    def nominate_successor(self, vacancy: LeadershipVacant) -> EpochClaim:
        """rule NominateSuccessor: the live backup with the lowest node_id claims the next epoch.

        The claim's expected_epoch is read from journal.epoch now, never from a
        remembered epoch: after two quick failures the journal may be ahead.
        """
        if self.leaders():
            raise Rejected("NominateSuccessor", "a node is already leading")
        successor = lowest_node_id(self.nodes_where(lambda n: n.status is NodeStatus.backup))
        if successor is None:
            raise Rejected("NominateSuccessor", "no backup to nominate")

        def apply() -> EpochClaim:
            epoch = self.journal.epoch
            self._set_status(successor, NodeStatus.candidate)
            successor.claimed_epoch = epoch
            claim = EpochClaim(node_id=successor.node_id, expected_epoch=epoch, status=EpochClaimStatus.pending)
            self.claims.append(claim)
            if self.claim_sink is not None:
                # The Ledger decides after our effects are in place.
                self._followups.append(lambda: self.claim_sink(claim))  # type: ignore[misc]
            return claim

        return self._run(apply)

    @implements("ElectOnVacancy")
    def elect_on_vacancy(self, node: Node) -> None:
        """rule ElectOnVacancy: a node arriving in backup while nobody leads reopens the vacancy."""
        if self.leaders():
            raise Rejected("ElectOnVacancy", "a node is already leading")
        self._run(lambda: self._emit(LeadershipVacant(reporter=node)))

    @implements("TakeGrant")
    def take_grant(self, grant: EpochGrant) -> Node:
        """rule TakeGrant: the candidate the Ledger granted starts recovering under that epoch."""
        node = self.node(grant.node_id)
        if node is None:
            raise Rejected("TakeGrant", f"no node {grant.node_id}")
        if node.status is not NodeStatus.candidate:
            raise Rejected("TakeGrant", f"node {grant.node_id} is {node.status.value}, not candidate")

        def apply() -> Node:
            self._set_status(node, NodeStatus.recovering)
            node.claimed_epoch = None
            node.serving_epoch = grant.epoch
            return node

        return self._run(apply)

    @implements("ConcedeClaim")
    def concede_claim(self, claim: EpochClaim) -> Node:
        """rule ConcedeClaim: a candidate whose claim was refused returns to backup."""
        if _value(claim.status) != "refused":
            raise Rejected("ConcedeClaim", "claim is not refused")
        node = self.node(claim.node_id)
        if node is None:
            raise Rejected("ConcedeClaim", f"no node {claim.node_id}")
        if node.status is not NodeStatus.candidate:
            raise Rejected("ConcedeClaim", f"node {claim.node_id} is {node.status.value}, not candidate")

        def apply() -> Node:
            self._set_status(node, NodeStatus.backup)
            node.claimed_epoch = None
            return node

        return self._run(apply)

    @implements("StepDown")
    def step_down(self, grant: EpochGrant) -> list[Node]:
        """rule StepDown: every other primary or recovering node steps down to joining."""

        def apply() -> list[Node]:
            stepped = []
            for n in self.nodes_where(lambda n: n.status is NodeStatus.primary and n.node_id != grant.node_id):
                self._set_status(n, NodeStatus.joining)
                n.serving_epoch = None
                n.promoted_at = None
                stepped.append(n)
            for n in self.nodes_where(lambda n: n.status is NodeStatus.recovering and n.node_id != grant.node_id):
                self._set_status(n, NodeStatus.joining)
                n.serving_epoch = None
                stepped.append(n)
            return stepped

        return self._run(apply)

    def on_epoch_grant_created(self, grant: EpochGrant) -> None:
        """Trigger `ledger/EpochGrant.created`: StepDown and TakeGrant."""

        def apply() -> None:
            self.grants.append(grant)
            self.step_down(grant)
            self._attempt(lambda: self.take_grant(grant))

        self._run(apply)

    def on_epoch_claim_refused(self, claim: EpochClaim) -> None:
        """Trigger `ledger/EpochClaim.status becomes refused`: ConcedeClaim."""
        self._attempt(lambda: self.concede_claim(claim))

    @implements("CompleteRecovery")
    def complete_recovery(self, rebuild: RebuildLike | Rebuild) -> PrimaryReady:
        """rule CompleteRecovery: once the Warden rebuilt for its epoch, the node becomes primary."""
        if _value(rebuild.status) != "done":
            raise Rejected("CompleteRecovery", "rebuild is not done")
        node = self.node(rebuild.node_id)
        if node is None:
            raise Rejected("CompleteRecovery", f"no node {rebuild.node_id}")
        if node.status is not NodeStatus.recovering:
            raise Rejected("CompleteRecovery", f"node {node.node_id} is {node.status.value}, not recovering")
        if node.serving_epoch != rebuild.epoch:
            raise Rejected("CompleteRecovery", f"rebuild is for epoch {rebuild.epoch}, node serves {node.serving_epoch}")
        if rebuild.epoch != self.journal.epoch:
            raise Rejected("CompleteRecovery", f"rebuild epoch {rebuild.epoch} is not journal epoch {self.journal.epoch}")

        def apply() -> PrimaryReady:
            self._set_status(node, NodeStatus.primary)
            node.promoted_at = self._now()
            ready = PrimaryReady(node=node, epoch=rebuild.epoch)
            self._emit(ready)
            return ready

        return self._run(apply)

    def on_rebuild_done(self, rebuild: RebuildLike | Rebuild) -> None:
        """Trigger `warden/Rebuild.status becomes done`: CompleteRecovery."""
        self._attempt(lambda: self.complete_recovery(rebuild))

    # -- rejoin ------------------------------------------------------------

    @implements("RestartNode")
    def restart_node(self, node: Node) -> None:
        """rule RestartNode: a down node restarts as joining (never in its old role)."""
        if node.status is not NodeStatus.down:
            raise Rejected("RestartNode", f"node {node.node_id} is {node.status.value}, not down")

        def apply() -> None:
            self._set_status(node, NodeStatus.joining)
            node.down_since = None
            node.restarts += 1
            node.last_heartbeat_at = self._now()

        self._run(apply)

    @implements("CompleteCatchUp")
    def complete_catch_up(self, node: Node, observed_epoch: int) -> None:
        """rule CompleteCatchUp: caught up on the current epoch, the node becomes a backup."""
        if node.status is not NodeStatus.joining:
            raise Rejected("CompleteCatchUp", f"node {node.node_id} is {node.status.value}, not joining")
        if observed_epoch != self.journal.epoch:
            raise Rejected("CompleteCatchUp", f"observed epoch {observed_epoch}, journal is at {self.journal.epoch}")

        def apply() -> None:
            self._set_status(node, NodeStatus.backup)
            node.catch_up_attempts = 0

        self._run(apply)

    @implements("RetryCatchUp")
    def retry_catch_up(self, node: Node, observed_epoch: int) -> None:
        """rule RetryCatchUp: the epoch moved during catch-up; the node starts again."""
        if node.status is not NodeStatus.joining:
            raise Rejected("RetryCatchUp", f"node {node.node_id} is {node.status.value}, not joining")
        if observed_epoch == self.journal.epoch:
            raise Rejected("RetryCatchUp", "observed epoch is current")
        node.catch_up_attempts += 1

    def catch_up_completed(self, node: Node, observed_epoch: int) -> None:
        """Trigger CatchUpCompleted(node, observed_epoch): CompleteCatchUp or RetryCatchUp."""
        if node.status is NodeStatus.joining and observed_epoch != self.journal.epoch:
            self.retry_catch_up(node, observed_epoch)
        else:
            self.complete_catch_up(node, observed_epoch)

    @implements("DecommissionNode")
    def decommission_node(self, operator: OperatorLike | Operator, node: Node) -> None:
        """rule DecommissionNode: a responder retires a down node for good."""
        if not is_cluster_responder(operator):
            raise Rejected("DecommissionNode", "operator is not a responder")
        if node.status is not NodeStatus.down:
            raise Rejected("DecommissionNode", f"node {node.node_id} is {node.status.value}, not down")

        def apply() -> None:
            self._set_status(node, NodeStatus.retired)
            node.down_since = None

        self._run(apply)

    # -- invariants --------------------------------------------------------

    def invariant_violations(self) -> list[str]:
        """Every invariant of cluster.allium, plus the `when` field rules, as messages."""
        problems = check_one_leader_per_epoch(self.nodes)
        problems += check_serving_epoch_was_granted(self.nodes, self.grants)
        problems += check_no_node_ahead_of_journal(self.nodes, self.journal)
        problems += check_leaders_are_live(self.nodes)
        for n in self.nodes:
            problems += n.when_field_violations()
        return problems

    def assert_invariants(self) -> None:
        """Raise InvariantViolation if any invariant does not hold."""
        problems = self.invariant_violations()
        if problems:
            raise InvariantViolation("; ".join(problems))


# Invariants -----------------------------------------------------------


def check_one_leader_per_epoch(nodes: Sequence[Node]) -> list[str]:
    """invariant OneLeaderPerEpoch: no two recovering/primary nodes share a serving_epoch."""
    serving = [n for n in nodes if n.status in SERVING_STATES]
    return [
        f"OneLeaderPerEpoch: {a.node_id} and {b.node_id} both serve epoch {a.serving_epoch}"
        for i, a in enumerate(serving)
        for b in serving[i + 1:]
        if a.serving_epoch == b.serving_epoch
    ]


def check_serving_epoch_was_granted(nodes: Sequence[Node], grants: Iterable[EpochGrant]) -> list[str]:
    """invariant ServingEpochWasGranted: a node serves only an epoch granted to it."""
    granted = {(g.epoch, g.node_id) for g in grants}
    return [
        f"ServingEpochWasGranted: {n.node_id} serves epoch {n.serving_epoch} without a grant"
        for n in nodes
        if n.status in SERVING_STATES and (n.serving_epoch, n.node_id) not in granted
    ]


def check_no_node_ahead_of_journal(nodes: Sequence[Node], journal: Journal) -> list[str]:
    """invariant NoNodeAheadOfJournal: serving_epoch <= journal.epoch."""
    return [
        f"NoNodeAheadOfJournal: {n.node_id} serves epoch {n.serving_epoch} > journal {journal.epoch}"
        for n in nodes
        if n.status in SERVING_STATES and (n.serving_epoch is None or n.serving_epoch > journal.epoch)
    ]


def check_leaders_are_live(nodes: Sequence[Node]) -> list[str]:
    """invariant LeadersAreLive: every leader is live."""
    return [f"LeadersAreLive: {n.node_id} leads but is not live" for n in nodes if n.is_leader and not n.is_live]


# Surfaces -------------------------------------------------------------


class SurfaceDenied(PermissionError):
    """The caller is not the surface's actor, or the operation is not offered now."""


class NodeLifecycle:
    """surface NodeLifecycle, facing agent: NodeAgent.

    @guarantee SuspicionIsFinal: a node declared down cannot resume its old
    role; the only way back is NodeRestarted -> joining -> catch-up.
    """

    def __init__(self, cluster: Cluster, agent: Node) -> None:
        if not is_node_agent(agent):
            raise SurfaceDenied("NodeLifecycle faces NodeAgent: a Node whose status is not retired")
        self.cluster = cluster
        self.agent = agent

    def exposes(self) -> dict[str, Any]:
        """exposes: status, last_heartbeat_at, restarts, catch_up_attempts."""
        a = self.agent
        return {
            "status": a.status,
            "last_heartbeat_at": a.last_heartbeat_at,
            "restarts": a.restarts,
            "catch_up_attempts": a.catch_up_attempts,
        }

    def provides(self) -> set[str]:
        """The operations offered now, by their `when` conditions."""
        offered = set()
        if self.agent.is_live:
            offered.add("Heartbeat")
        if self.agent.status is NodeStatus.down:
            offered.add("NodeRestarted")
        if self.agent.status is NodeStatus.joining:
            offered.add("CatchUpCompleted")
        return offered

    def _require(self, operation: str) -> None:
        if operation not in self.provides():
            raise SurfaceDenied(f"{operation} is not offered to {self.agent.node_id} in {self.agent.status.value}")

    def heartbeat(self) -> None:
        """Heartbeat(agent) when agent.is_live."""
        self._require("Heartbeat")
        self.cluster.heartbeat(self.agent)

    def node_restarted(self) -> None:
        """NodeRestarted(agent) when agent.status = down."""
        self._require("NodeRestarted")
        self.cluster.restart_node(self.agent)

    def catch_up_completed(self, observed_epoch: int) -> None:
        """CatchUpCompleted(agent, observed_epoch) when agent.status = joining."""
        self._require("CatchUpCompleted")
        self.cluster.catch_up_completed(self.agent, observed_epoch)


class ClusterProvisioning:
    """surface ClusterProvisioning: RegisterNode(node_id), for the deployment tooling (no actor)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def provides(self) -> set[str]:
        """RegisterNode is always offered; the rule's requires decide."""
        return {"RegisterNode"}

    def register_node(self, node_id: str) -> Node:
        """RegisterNode(node_id)."""
        return self.cluster.register_node(node_id)


class ClusterOperations:
    """surface ClusterOperations, facing responder: ClusterResponder, context node: Node."""

    # `timeout: DetectFailedPrimary`: the surface shows this rule's deadline.
    timeouts: tuple[str, ...] = ("DetectFailedPrimary",)

    def __init__(self, cluster: Cluster, responder: OperatorLike | Operator, node: Node) -> None:
        if not is_cluster_responder(responder):
            raise SurfaceDenied("ClusterOperations faces ClusterResponder: an Operator whose role is responder")
        self.cluster = cluster
        self.responder = responder
        self.node = node

    def exposes(self) -> dict[str, Any]:
        """exposes: node_id, status, and the `when`-guarded fields in their states."""
        n = self.node
        shown: dict[str, Any] = {"node_id": n.node_id, "status": n.status}
        if n.status is NodeStatus.down:
            shown["down_since"] = n.down_since
        if n.status in SERVING_STATES:
            shown["serving_epoch"] = n.serving_epoch
        if n.status is NodeStatus.primary:
            shown["promoted_at"] = n.promoted_at
        return shown

    def primary_deadline(self) -> datetime | None:
        """When DetectFailedPrimary would fire for this node, if it is primary."""
        if self.node.status is not NodeStatus.primary:
            return None
        return self.node.last_heartbeat_at + self.cluster.config.failure_timeout

    def provides(self) -> set[str]:
        """DecommissionNode(responder, node) when node.status = down."""
        return {"DecommissionNode"} if self.node.status is NodeStatus.down else set()

    def decommission_node(self) -> None:
        """DecommissionNode(responder, node)."""
        if "DecommissionNode" not in self.provides():
            raise SurfaceDenied(f"DecommissionNode is not offered for {self.node.node_id} in {self.node.status.value}")
        self.cluster.decommission_node(self.responder, self.node)
