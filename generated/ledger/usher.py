"""Unit `usher` (usher.allium): consuming the ordered event log.

Partitions assigned to this deployment, fetching events in offset order,
decoding them into Requests, back-pressure when downstream falls behind,
quarantining events that cannot be decoded, and committing the consumer
position, which may only trail what the Ledger holds durably.

The source of truth for "where to resume" is the Ledger checkpoint, never the
broker's committed offset (SETTLED DECISION); the broker offset is committed
lazily so that broker-side lag monitoring stays meaningful.

Coupling to other units is kept small on purpose:

* ``ledger.core``: ``Request``, ``Envelope``, ``Channel``, ``OperationKind``,
  the rejection/invariant exception types and the canonical ``fingerprint``;
* ``ledger.ledger``: the ``Checkpoint``, ``Position``, ``DeadLetter`` entity
  classes and ``Disposition``; the Ledger's storage is reached through the
  small :class:`LedgerPort` protocol defined here (an in-memory
  implementation is provided);
* ``ledger.warden`` / ``ledger.cluster``: only their trigger subjects
  (a ``Request``, a ``Node``) are accepted as arguments; nothing is imported.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from allium.verify import implements

from ledger.core import (
    AccessDenied,
    Channel,
    Envelope,
    InvariantViolation,
    OperationKind,
    Rejected,
    Request,
    TransitionRejected,
)
from ledger.core import fingerprint as _core_fingerprint
from ledger.ledger import Checkpoint, DeadLetter, Disposition, Position

if TYPE_CHECKING:  # annotations only: the trigger subjects of other units
    from ledger.cluster import Node
    from ledger.core import Outcome
    from ledger.ledger import EpochGrant, Proposal


def _reject(rule: str, clause: int, why: str) -> Rejected:
    """Build the rejection for requires clause ``clause`` (0 = trigger condition) of ``rule``."""
    return Rejected(rule, clause, why)


# --------------------------------------------------------------------------
# Config and enums
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """config block of usher.allium."""

    # Events in flight per partition at which fetching pauses...
    high_watermark: int = 4_096
    # ...and the level at which it resumes.
    low_watermark: int = 1_024
    # Decode attempts before an event is quarantined.
    max_decode_attempts: int = 5
    # Delay between decode attempts.
    decode_backoff: timedelta = timedelta(seconds=1)
    # How often the broker offset is brought up to the checkpoint.
    broker_commit_interval: timedelta = timedelta(seconds=5)
    # Largest fetch from the broker in one call.
    fetch_batch_max: int = 500


class PartitionStatus(str, enum.Enum):
    """Partition.status: idle | flowing | throttled."""

    idle = "idle"
    flowing = "flowing"
    throttled = "throttled"


class LogEventStatus(str, enum.Enum):
    """LogEvent.status: fetched | decoded | completed | quarantined."""

    fetched = "fetched"
    decoded = "decoded"
    completed = "completed"
    quarantined = "quarantined"


# transitions status { ... } of entity Partition (no terminal states).
PARTITION_TRANSITIONS: dict[PartitionStatus, frozenset[PartitionStatus]] = {
    PartitionStatus.idle: frozenset({PartitionStatus.flowing}),
    PartitionStatus.flowing: frozenset({PartitionStatus.throttled, PartitionStatus.idle}),
    PartitionStatus.throttled: frozenset({PartitionStatus.flowing, PartitionStatus.idle}),
}

# transitions status { ... terminal: completed, quarantined } of entity LogEvent.
LOG_EVENT_TRANSITIONS: dict[LogEventStatus, frozenset[LogEventStatus]] = {
    LogEventStatus.fetched: frozenset({LogEventStatus.decoded, LogEventStatus.quarantined}),
    LogEventStatus.decoded: frozenset({LogEventStatus.completed, LogEventStatus.quarantined}),
    LogEventStatus.completed: frozenset(),
    LogEventStatus.quarantined: frozenset(),
}
LOG_EVENT_TERMINAL: frozenset[LogEventStatus] = frozenset(
    {LogEventStatus.completed, LogEventStatus.quarantined}
)

# The cause recorded by QuarantineReusedRequestId, verbatim from the spec.
REUSED_REQUEST_ID_CAUSE = "request id reused with a different body"


# --------------------------------------------------------------------------
# Entities
# --------------------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class Partition:
    """entity Partition: one assigned log partition and its consumer position."""

    number: int
    checkpoint: Checkpoint
    fetch_offset: int
    in_flight: int
    broker_committed_offset: int
    next_broker_commit_at: datetime
    status: PartitionStatus = PartitionStatus.idle
    # Present exactly when status = throttled.
    throttled_at: datetime | None = None
    # The config the derived watermarks are measured against.
    config: Config = field(default_factory=Config, repr=False)
    # Backing store of the relationship `events: LogEvent with partition = this`,
    # keyed by offset so lookups by (partition, offset) are O(1).
    _events: dict[int, LogEvent] = field(default_factory=dict, repr=False)

    @property
    def events(self) -> list[LogEvent]:
        """Relationship Partition.events: the LogEvents with partition = this, by offset."""
        return [self._events[o] for o in sorted(self._events)]

    def event_at(self, offset: int) -> LogEvent | None:
        """LogEvent{partition: this, offset: offset}, if it exists."""
        return self._events.get(offset)

    @property
    def is_saturated(self) -> bool:
        """Derived Partition.is_saturated: in_flight >= config.high_watermark."""
        return self.in_flight >= self.config.high_watermark

    @property
    def is_drained(self) -> bool:
        """Derived Partition.is_drained: in_flight <= config.low_watermark."""
        return self.in_flight <= self.config.low_watermark

    def transition_status(self, to: PartitionStatus) -> None:
        """Move along a declared edge of Partition.status, or raise TransitionRejected."""
        if to not in PARTITION_TRANSITIONS[self.status]:
            raise TransitionRejected(
                "Partition.status", 0, f"undeclared transition {self.status.value} -> {to.value}"
            )
        self.status = to

    def check_when_fields(self) -> None:
        """Check `throttled_at: Timestamp when status = throttled`."""
        if (self.status is PartitionStatus.throttled) != (self.throttled_at is not None):
            raise InvariantViolation(
                f"Partition {self.number}: throttled_at presence does not match status {self.status.value}"
            )


@dataclass(eq=False, kw_only=True)
class LogEvent:
    """entity LogEvent: one record read from a partition, tracked until durably handled."""

    partition: Partition
    offset: int
    payload: str
    payload_digest: str
    fetched_at: datetime
    attempts: int = 0
    last_error: str | None = None
    status: LogEventStatus = LogEventStatus.fetched
    # Present exactly when status = fetched.
    next_attempt_at: datetime | None = None
    # Present exactly when status in {decoded, completed}.
    request: Request | None = None
    # Present exactly when status = completed.
    completed_at: datetime | None = None
    # Present exactly when status = quarantined.
    quarantined_at: datetime | None = None

    def transition_status(self, to: LogEventStatus) -> None:
        """Move along a declared edge of LogEvent.status, or raise TransitionRejected."""
        if to not in LOG_EVENT_TRANSITIONS[self.status]:
            raise TransitionRejected(
                "LogEvent.status", 0, f"undeclared transition {self.status.value} -> {to.value}"
            )
        self.status = to

    @property
    def is_terminal(self) -> bool:
        """Whether status is one of LogEvent's terminal states."""
        return self.status in LOG_EVENT_TERMINAL

    def check_when_fields(self) -> None:
        """Check the `when` clauses of LogEvent's status-dependent fields."""
        s = self.status
        expectations = {
            "next_attempt_at": (s is LogEventStatus.fetched, self.next_attempt_at),
            "request": (s in (LogEventStatus.decoded, LogEventStatus.completed), self.request),
            "completed_at": (s is LogEventStatus.completed, self.completed_at),
            "quarantined_at": (s is LogEventStatus.quarantined, self.quarantined_at),
        }
        for name, (expected, value) in expectations.items():
            if expected != (value is not None):
                raise InvariantViolation(
                    f"LogEvent {self.partition.number}/{self.offset}: {name} presence "
                    f"does not match status {s.value}"
                )


# --------------------------------------------------------------------------
# Ports: decoding and the Ledger's durable store
# --------------------------------------------------------------------------


class EnvelopeCodec(Protocol):
    """The log payload format: payload_hash, well_formed, decode_envelope, decode_error."""

    def payload_hash(self, payload: str) -> str: ...

    def well_formed(self, payload: str) -> bool: ...

    def decode_envelope(self, payload: str) -> Envelope: ...

    def decode_error(self, payload: str) -> str: ...


_REQUIRED_STRINGS = ("request_id", "client_id", "account_id")
_OPTIONAL_STRINGS = ("counterparty_id", "owner")


class JsonEnvelopeCodec:
    """Default codec: a log payload is a JSON object carrying the Envelope's fields.

    Deterministic and pure: a payload that fails once fails every time, so
    with this codec poison events are quarantined after max_decode_attempts.
    Inject another codec (e.g. one backed by a schema registry) to model
    transient failures.
    """

    def payload_hash(self, payload: str) -> str:
        """payload_hash(payload): lowercase hex SHA-256 of the UTF-8 payload."""
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _problem(self, payload: str) -> tuple[str | None, dict[str, Any] | None]:
        """(error, parsed object): exactly one of the two is None."""
        try:
            obj = json.loads(payload)
        except (ValueError, TypeError) as exc:
            return f"payload is not JSON: {exc}", None
        if not isinstance(obj, dict):
            return "payload is not a JSON object", None
        for name in _REQUIRED_STRINGS:
            value = obj.get(name)
            if not isinstance(value, str) or not value:
                return f"field {name} must be a non-empty string", None
        for name in _OPTIONAL_STRINGS:
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                return f"field {name} must be a string or null", None
        if obj.get("kind") not in {k.value for k in OperationKind}:
            return f"field kind must be one of {[k.value for k in OperationKind]}", None
        amount = obj.get("amount_minor")
        if not isinstance(amount, int) or isinstance(amount, bool):
            return "field amount_minor must be an integer", None
        return None, obj

    def well_formed(self, payload: str) -> bool:
        """well_formed(payload): the payload decodes to an Envelope."""
        return self._problem(payload)[0] is None

    def decode_envelope(self, payload: str) -> Envelope:
        """decode_envelope(payload): the Envelope of a well-formed payload."""
        error, obj = self._problem(payload)
        if obj is None:
            raise ValueError(error)
        return Envelope(
            request_id=obj["request_id"],
            client_id=obj["client_id"],
            kind=OperationKind(obj["kind"]),
            account_id=obj["account_id"],
            counterparty_id=obj.get("counterparty_id"),
            owner=obj.get("owner"),
            amount_minor=obj["amount_minor"],
        )

    def decode_error(self, payload: str) -> str:
        """decode_error(payload): why the payload does not decode ("" if it does)."""
        return self._problem(payload)[0] or ""

    @staticmethod
    def encode(envelope: Envelope) -> str:
        """Inverse of decode_envelope, for producers and tests."""
        return json.dumps(
            {
                "request_id": envelope.request_id,
                "client_id": envelope.client_id,
                "kind": envelope.kind.value,
                "account_id": envelope.account_id,
                "counterparty_id": envelope.counterparty_id,
                "owner": envelope.owner,
                "amount_minor": envelope.amount_minor,
            },
            sort_keys=True,
        )


def fingerprint(envelope: Envelope) -> str:
    """fingerprint(envelope) as DecodeEvent uses it: core's CanonicalEncoding.fingerprint.

    Using core's function keeps log and REST fingerprints comparable in the Warden.
    """
    return _core_fingerprint(envelope)


class LedgerPort(Protocol):
    """What the Usher reads from and writes to the Ledger's durable store."""

    def checkpoint(self, partition: int) -> Checkpoint | None:
        """ledger/Checkpoint{partition: partition}."""
        ...

    def create_checkpoint(self, partition: int, next_offset: int, advanced_at: datetime) -> Checkpoint:
        """ledger/Checkpoint.created(...)."""
        ...

    def position(self, partition: int, offset: int) -> Position | None:
        """ledger/Position{partition, offset}."""
        ...

    def create_position(self, partition: int, offset: int, disposition: Disposition,
                        recorded_at: datetime) -> Position:
        """ledger/Position.created(...)."""
        ...

    def create_dead_letter(self, partition: int, offset: int, payload_digest: str, cause: str,
                           attempts: int, quarantined_at: datetime) -> DeadLetter:
        """ledger/DeadLetter.created(..., status: held)."""
        ...


class InMemoryLedgerPort:
    """An in-memory LedgerPort: checkpoints, positions and dead letters in dicts.

    Stands in for the Ledger's store in tests and single-process use. It does
    not run the Ledger's own rules (AdvanceCheckpoint, RecordDeadLetterPosition);
    ``on_dead_letter`` / ``on_position`` hooks let a caller chain them.
    """

    def __init__(self, *, on_dead_letter: Callable[[DeadLetter], None] | None = None,
                 on_position: Callable[[Position], None] | None = None) -> None:
        self.checkpoints: dict[int, Checkpoint] = {}
        self.positions: dict[tuple[int, int], Position] = {}
        self.dead_letters: list[DeadLetter] = []
        self._on_dead_letter = on_dead_letter
        self._on_position = on_position

    def checkpoint(self, partition: int) -> Checkpoint | None:
        """ledger/Checkpoint{partition: partition}."""
        return self.checkpoints.get(partition)

    def create_checkpoint(self, partition: int, next_offset: int, advanced_at: datetime) -> Checkpoint:
        """ledger/Checkpoint.created(...)."""
        cp = Checkpoint(partition=partition, next_offset=next_offset, advanced_at=advanced_at)
        self.checkpoints[partition] = cp
        return cp

    def position(self, partition: int, offset: int) -> Position | None:
        """ledger/Position{partition, offset}."""
        return self.positions.get((partition, offset))

    def create_position(self, partition: int, offset: int, disposition: Disposition,
                        recorded_at: datetime) -> Position:
        """ledger/Position.created(...)."""
        pos = Position(partition=partition, offset=offset, disposition=disposition, recorded_at=recorded_at)
        self.positions[(partition, offset)] = pos
        if self._on_position is not None:
            self._on_position(pos)
        return pos

    def create_dead_letter(self, partition: int, offset: int, payload_digest: str, cause: str,
                           attempts: int, quarantined_at: datetime) -> DeadLetter:
        """ledger/DeadLetter.created(..., status: held)."""
        letter = DeadLetter(partition=partition, offset=offset, payload_digest=payload_digest,
                            cause=cause, attempts=attempts, quarantined_at=quarantined_at)
        self.dead_letters.append(letter)
        if self._on_dead_letter is not None:
            self._on_dead_letter(letter)
        return letter


class LedgerStorePort:
    """LedgerPort over the Ledger unit's own store (``ledger.ledger.LedgerStore``).

    The store's ``create_*`` entry points take entity objects and run the
    Ledger's follow-on rules in the same transaction (RecordDeadLetterPosition,
    AdvanceCheckpoint), so the Checkpoint a Partition holds advances in place.
    Duck-typed on purpose: only the five calls below are relied on.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def checkpoint(self, partition: int) -> Checkpoint | None:
        """ledger/Checkpoint{partition: partition}."""
        found: Checkpoint | None = self.store.checkpoint(partition)
        return found

    def create_checkpoint(self, partition: int, next_offset: int, advanced_at: datetime) -> Checkpoint:
        """ledger/Checkpoint.created(...)."""
        created: Checkpoint = self.store.create_checkpoint(
            Checkpoint(partition=partition, next_offset=next_offset, advanced_at=advanced_at))
        return created

    def position(self, partition: int, offset: int) -> Position | None:
        """ledger/Position{partition, offset}."""
        found: Position | None = self.store.position(partition, offset)
        return found

    def create_position(self, partition: int, offset: int, disposition: Disposition,
                        recorded_at: datetime) -> Position:
        """ledger/Position.created(...)."""
        created: Position = self.store.create_position(
            Position(partition=partition, offset=offset, disposition=disposition, recorded_at=recorded_at))
        return created

    def create_dead_letter(self, partition: int, offset: int, payload_digest: str, cause: str,
                           attempts: int, quarantined_at: datetime) -> DeadLetter:
        """ledger/DeadLetter.created(..., status: held)."""
        created: DeadLetter = self.store.create_dead_letter(
            DeadLetter(partition=partition, offset=offset, payload_digest=payload_digest, cause=cause,
                       attempts=attempts, quarantined_at=quarantined_at))
        return created


def _status_value(status: Any) -> Any:
    """The plain value of a status from another unit (enum member or string)."""
    return getattr(status, "value", status)


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    """What fetch_batch did: the events created and where to reseek, if anywhere."""

    events: list[LogEvent]
    # Set when the broker handed us an offset other than fetch_offset (gap or
    # repeat) or more than we may take now: reseek the broker client here.
    reseek_to: int | None = None


@dataclass(frozen=True)
class Fired:
    """One rule firing reported by a trigger dispatcher (run_due and friends)."""

    rule: str
    subject: object


# --------------------------------------------------------------------------
# The Usher
# --------------------------------------------------------------------------


class Usher:
    """The Usher component: the Partitions and LogEvents of usher.allium and its rules.

    Rules are methods named after the spec's rules; each checks its
    `requires` clauses before changing anything and raises ``Rejected``
    (with the failing clause number; 0 for the trigger condition) if one
    does not hold. Derived-value triggers (is_saturated, is_drained) are
    evaluated right after every change to ``in_flight``.
    """

    def __init__(self, *, clock: Callable[[], datetime], config: Config | None = None,
                 ledger: LedgerPort | None = None, codec: EnvelopeCodec | None = None,
                 on_request_created: Callable[[Request], None] | None = None,
                 consumer_group: str = "ledger-usher") -> None:
        self.clock = clock
        self.config = config if config is not None else Config()
        self.ledger: LedgerPort = ledger if ledger is not None else InMemoryLedgerPort()
        self.codec: EnvelopeCodec = codec if codec is not None else JsonEnvelopeCodec()
        # core/Request.created is a trigger for the Warden: hand it on.
        self.on_request_created = on_request_created
        self.consumer_group = consumer_group
        self._partitions: dict[int, Partition] = {}

    # -- lookups ----------------------------------------------------------

    @property
    def partitions(self) -> list[Partition]:
        """All Partitions, by number."""
        return [self._partitions[n] for n in sorted(self._partitions)]

    def partition(self, number: int | None) -> Partition | None:
        """Partition{number: number}, if it exists."""
        if number is None:
            return None
        return self._partitions.get(number)

    @property
    def log_events(self) -> list[LogEvent]:
        """All LogEvents, by (partition, offset)."""
        return [e for p in self.partitions for e in p.events]

    def _event_for(self, request: Request) -> tuple[Partition | None, LogEvent | None]:
        """(Partition{number: request.partition}, LogEvent{partition, offset: request.offset})."""
        partition = self.partition(request.partition)
        if partition is None or request.offset is None:
            return partition, None
        return partition, partition.event_at(request.offset)

    # -- assignment and leadership ----------------------------------------

    @implements("AssignPartition")
    def assign_partition(self, number: int) -> Partition:
        """rule AssignPartition: resume an assigned partition from its Ledger checkpoint."""
        if number in self._partitions:
            raise _reject("AssignPartition", 1, f"partition {number} already exists")
        checkpoint = self.ledger.checkpoint(number)
        if checkpoint is None:
            raise _reject("AssignPartition", 2, f"no ledger checkpoint for partition {number}")
        now = self.clock()
        # StartFromCheckpoint: fetch and broker offsets both come from the
        # Ledger checkpoint; the broker's own committed offset is advisory.
        partition = Partition(
            number=number, checkpoint=checkpoint, fetch_offset=checkpoint.next_offset,
            in_flight=0, broker_committed_offset=checkpoint.next_offset,
            next_broker_commit_at=now + self.config.broker_commit_interval,
            status=PartitionStatus.idle, config=self.config,
        )
        self._partitions[number] = partition
        return partition

    @implements("AssignNewPartition")
    def assign_new_partition(self, number: int) -> Partition:
        """rule AssignNewPartition: first assignment of a partition the Ledger has never seen."""
        if number in self._partitions:
            raise _reject("AssignNewPartition", 1, f"partition {number} already exists")
        if self.ledger.checkpoint(number) is not None:
            raise _reject("AssignNewPartition", 2, f"ledger checkpoint exists for partition {number}")
        now = self.clock()
        checkpoint = self.ledger.create_checkpoint(number, 0, now)
        partition = Partition(
            number=number, checkpoint=checkpoint, fetch_offset=0, in_flight=0,
            broker_committed_offset=0,
            next_broker_commit_at=now + self.config.broker_commit_interval,
            status=PartitionStatus.idle, config=self.config,
        )
        self._partitions[number] = partition
        return partition

    def partition_assigned(self, number: int) -> Partition:
        """Trigger PartitionAssigned(number): fires AssignPartition or AssignNewPartition."""
        if number not in self._partitions and self.ledger.checkpoint(number) is None:
            return self.assign_new_partition(number)
        return self.assign_partition(number)

    @implements("RevokePartition")
    def revoke_partition(self, partition: Partition) -> None:
        """rule RevokePartition: forget the partition and all its events."""
        # Nothing durable is lost: everything not behind the checkpoint is
        # re-read by whichever consumer is assigned the partition next.
        partition._events.clear()
        self._partitions.pop(partition.number, None)

    @implements("StartConsuming")
    def start_consuming(self, node: Node) -> list[Partition]:
        """rule StartConsuming: when a cluster/Node becomes primary, resume idle partitions.

        Emits ResumeFromCheckpoint(partition: p) for every idle partition and
        fires it; returns the partitions it was emitted for.
        """
        if _status_value(getattr(node, "status", None)) != "primary":
            raise _reject("StartConsuming", 0, "node.status is not primary")
        emitted = [p for p in self.partitions if p.status is PartitionStatus.idle]
        for p in emitted:
            self.resume_from_checkpoint(p)
        return emitted

    @implements("ResumeFromCheckpoint")
    def resume_from_checkpoint(self, partition: Partition) -> None:
        """rule ResumeFromCheckpoint: start flowing from the Ledger checkpoint."""
        if partition.status is not PartitionStatus.idle:
            raise _reject("ResumeFromCheckpoint", 1, f"partition status is {partition.status.value}")
        partition.transition_status(PartitionStatus.flowing)
        partition.fetch_offset = partition.checkpoint.next_offset
        partition.in_flight = 0

    def _stop(self, partition: Partition) -> None:
        """Shared effects of the Stop*Partitions rules on one partition."""
        partition.transition_status(PartitionStatus.idle)
        partition.throttled_at = None
        partition.in_flight = 0
        for e in list(partition._events.values()):
            if e.status in (LogEventStatus.fetched, LogEventStatus.decoded):
                del partition._events[e.offset]

    @implements("StopFlowingPartitions")
    def stop_flowing_partitions(self, grant: EpochGrant) -> list[Partition]:
        """rule StopFlowingPartitions: on a new ledger/EpochGrant, stop flowing partitions."""
        stopped = [p for p in self.partitions if p.status is PartitionStatus.flowing]
        for p in stopped:
            self._stop(p)
        return stopped

    @implements("StopThrottledPartitions")
    def stop_throttled_partitions(self, grant: EpochGrant) -> list[Partition]:
        """rule StopThrottledPartitions: on a new ledger/EpochGrant, stop throttled partitions.

        Dropping in-flight events is safe: none is behind the checkpoint, so
        each is re-read and either found a duplicate or processed again.
        """
        stopped = [p for p in self.partitions if p.status is PartitionStatus.throttled]
        for p in stopped:
            self._stop(p)
        return stopped

    def epoch_granted(self, grant: EpochGrant) -> list[Partition]:
        """Trigger ledger/EpochGrant.created: fires both Stop*Partitions rules."""
        # The two selections are disjoint (flowing vs throttled) and stopping
        # makes a partition idle, so running them in sequence is equivalent to
        # running them together.
        return self.stop_flowing_partitions(grant) + self.stop_throttled_partitions(grant)

    # -- fetching and decoding --------------------------------------------

    @implements("FetchEvent")
    def fetch_event(self, partition: Partition, offset: int, payload: str) -> LogEvent:
        """rule FetchEvent: record the next event of a flowing partition."""
        if partition.status is not PartitionStatus.flowing:
            raise _reject("FetchEvent", 1, f"partition status is {partition.status.value}")
        if offset != partition.fetch_offset:
            raise _reject("FetchEvent", 2, f"offset {offset} != fetch_offset {partition.fetch_offset}")
        now = self.clock()
        # ASSUMPTION: a completed or quarantined event may remain at an offset
        # the checkpoint has not yet passed (the checkpoint only advances over
        # contiguous Positions); after a stop and resume that offset is
        # re-read. The re-read event supersedes the finished one so that
        # OneEventPerOffset holds; the Ledger's Position/outcome make the
        # re-read a duplicate, so nothing is lost or applied twice.
        event = LogEvent(
            partition=partition, offset=offset, payload=payload,
            payload_digest=self.codec.payload_hash(payload), fetched_at=now, attempts=0,
            status=LogEventStatus.fetched, next_attempt_at=now,
        )
        partition._events[offset] = event
        partition.fetch_offset = offset + 1
        partition.in_flight = partition.in_flight + 1
        self._after_in_flight_change(partition)
        return event

    def fetch_batch(self, partition: Partition, records: Iterable[tuple[int, str]]) -> FetchResult:
        """Hand a broker batch of (offset, payload) records to FetchEvent, in order.

        Takes at most config.fetch_batch_max records. A gap or repeat in
        offsets means the broker client was repositioned underneath us: stop
        and report ``reseek_to = fetch_offset`` rather than skip. Records left
        over because the partition throttled (or stopped) mid-batch are also
        re-read from ``reseek_to``: the log is the buffer.
        """
        created: list[LogEvent] = []
        for i, (offset, payload) in enumerate(records):
            if i >= self.config.fetch_batch_max or partition.status is not PartitionStatus.flowing \
                    or offset != partition.fetch_offset:
                return FetchResult(created, partition.fetch_offset)
            created.append(self.fetch_event(partition, offset, payload))
        return FetchResult(created, None)

    def _require_due(self, rule: str, event: LogEvent) -> datetime:
        """Trigger condition `event.next_attempt_at <= now`; returns now."""
        now = self.clock()
        if event.next_attempt_at is None or event.next_attempt_at > now:
            raise _reject(rule, 0, "event.next_attempt_at <= now does not hold")
        return now

    @implements("DecodeEvent")
    def decode_event(self, event: LogEvent) -> Request:
        """rule DecodeEvent: turn a well-formed fetched event into a core/Request (channel log)."""
        if event.status is not LogEventStatus.fetched:
            raise _reject("DecodeEvent", 1, f"event status is {event.status.value}")
        if not self.codec.well_formed(event.payload):
            raise _reject("DecodeEvent", 2, "payload is not well formed")
        now = self._require_due("DecodeEvent", event)
        envelope = self.codec.decode_envelope(event.payload)
        request = Request(
            request_id=envelope.request_id, client_id=envelope.client_id, kind=envelope.kind,
            account_id=envelope.account_id, counterparty_id=envelope.counterparty_id,
            owner=envelope.owner, amount_minor=envelope.amount_minor, channel=Channel.log,
            partition=event.partition.number, offset=event.offset,
            fingerprint=fingerprint(envelope), received_at=now,
        )
        event.transition_status(LogEventStatus.decoded)
        event.next_attempt_at = None
        event.request = request
        if self.on_request_created is not None:
            self.on_request_created(request)
        return request

    @implements("RetryDecode")
    def retry_decode(self, event: LogEvent) -> None:
        """rule RetryDecode: a failed decode is retried after config.decode_backoff."""
        if event.status is not LogEventStatus.fetched:
            raise _reject("RetryDecode", 1, f"event status is {event.status.value}")
        if self.codec.well_formed(event.payload):
            raise _reject("RetryDecode", 2, "payload is well formed")
        if not event.attempts + 1 < self.config.max_decode_attempts:
            raise _reject("RetryDecode", 3, f"attempts {event.attempts + 1} reach max_decode_attempts")
        now = self._require_due("RetryDecode", event)
        error = self.codec.decode_error(event.payload)
        event.attempts = event.attempts + 1
        event.next_attempt_at = now + self.config.decode_backoff
        event.last_error = error

    @implements("QuarantinePoisonEvent")
    def quarantine_poison_event(self, event: LogEvent) -> DeadLetter:
        """rule QuarantinePoisonEvent: dead-letter an event that never decodes."""
        if event.status is not LogEventStatus.fetched:
            raise _reject("QuarantinePoisonEvent", 1, f"event status is {event.status.value}")
        if self.codec.well_formed(event.payload):
            raise _reject("QuarantinePoisonEvent", 2, "payload is well formed")
        if not event.attempts + 1 >= self.config.max_decode_attempts:
            raise _reject("QuarantinePoisonEvent", 3,
                          f"attempts {event.attempts + 1} below max_decode_attempts")
        now = self._require_due("QuarantinePoisonEvent", event)
        partition = event.partition
        # The dead letter carries payload_digest; a deployment stores the raw
        # payload in object storage under that digest (see @guidance).
        letter = self.ledger.create_dead_letter(
            partition.number, event.offset, event.payload_digest,
            self.codec.decode_error(event.payload), event.attempts + 1, now,
        )
        event.transition_status(LogEventStatus.quarantined)
        event.next_attempt_at = None
        event.quarantined_at = now
        partition.in_flight = partition.in_flight - 1
        self._after_in_flight_change(partition)
        return letter

    def attempt_decode(self, event: LogEvent) -> Fired:
        """Trigger `event.next_attempt_at <= now`: fires whichever decode rule applies."""
        if self.codec.well_formed(event.payload):
            self.decode_event(event)
            return Fired("DecodeEvent", event)
        if event.attempts + 1 < self.config.max_decode_attempts:
            self.retry_decode(event)
            return Fired("RetryDecode", event)
        self.quarantine_poison_event(event)
        return Fired("QuarantinePoisonEvent", event)

    # -- completion -------------------------------------------------------

    def _complete(self, partition: Partition, event: LogEvent) -> None:
        """Shared effects of the Complete* rules."""
        event.transition_status(LogEventStatus.completed)
        event.completed_at = self.clock()
        partition.in_flight = partition.in_flight - 1
        self._after_in_flight_change(partition)

    def _require_decoded_log_event(self, rule: str, request: Request) -> tuple[Partition, LogEvent]:
        """The shared requires clauses 1-4 of the completion and reuse rules."""
        if _status_value(request.channel) != Channel.log.value:
            raise _reject(rule, 1, "request.channel is not log")
        partition, event = self._event_for(request)
        if partition is None:
            raise _reject(rule, 2, f"no partition {request.partition}")
        if event is None:
            raise _reject(rule, 3, f"no event at offset {request.offset}")
        if event.status is not LogEventStatus.decoded:
            raise _reject(rule, 4, f"event status is {event.status.value}")
        return partition, event

    @implements("CompleteOnOutcome")
    def complete_on_outcome(self, outcome: Outcome) -> LogEvent:
        """rule CompleteOnOutcome: a core/Outcome was committed for a log request."""
        partition, event = self._require_decoded_log_event("CompleteOnOutcome", outcome.request)
        self._complete(partition, event)
        return event

    @implements("CompleteLedgerDuplicate")
    def complete_ledger_duplicate(self, proposal: Proposal) -> LogEvent:
        """rule CompleteLedgerDuplicate: the Ledger refused a log proposal as a duplicate."""
        if _status_value(proposal.status) != "duplicate":
            raise _reject("CompleteLedgerDuplicate", 0, "proposal.status is not duplicate")
        partition, event = self._require_decoded_log_event("CompleteLedgerDuplicate", proposal.request)
        self._complete(partition, event)
        return event

    @implements("CompleteWardenDuplicate")
    def complete_warden_duplicate(self, request: Request) -> LogEvent:
        """rule CompleteWardenDuplicate: warden/DuplicateResolved(request) for a log request.

        The offset is recorded as a duplicate Position (unless one exists)
        so the checkpoint can pass it.
        """
        partition, event = self._require_decoded_log_event("CompleteWardenDuplicate", request)
        assert request.partition is not None and request.offset is not None  # checked above
        if self.ledger.position(request.partition, request.offset) is None:
            self.ledger.create_position(request.partition, request.offset,
                                        Disposition.duplicate, self.clock())
        self._complete(partition, event)
        return event

    @implements("QuarantineReusedRequestId")
    def quarantine_reused_request_id(self, request: Request, original: Request | None = None) -> DeadLetter:
        """rule QuarantineReusedRequestId: warden/RequestIdConflict(request, original) on the log."""
        partition, event = self._require_decoded_log_event("QuarantineReusedRequestId", request)
        assert request.partition is not None and request.offset is not None  # checked above
        now = self.clock()
        letter = self.ledger.create_dead_letter(
            request.partition, request.offset, event.payload_digest,
            REUSED_REQUEST_ID_CAUSE, 1, now,
        )
        event.transition_status(LogEventStatus.quarantined)
        event.request = None
        event.quarantined_at = now
        partition.in_flight = partition.in_flight - 1
        self._after_in_flight_change(partition)
        return letter

    def on_warden_event(self, event: object) -> Fired | None:
        """Listener for the Warden's emitted events (``Warden.subscribe(usher.on_warden_event)``).

        warden/DuplicateResolved(request) fires CompleteWardenDuplicate and
        warden/RequestIdConflict(request, original) fires
        QuarantineReusedRequestId. Matched by class name so that only the
        events' ``request``/``original`` fields are relied on. A trigger whose
        `requires` do not hold (a REST request, a revoked partition) changes
        nothing, so its rejection is absorbed and None returned.
        """
        kind = type(event).__name__
        request = getattr(event, "request", None)
        if request is None or kind not in ("DuplicateResolved", "RequestIdConflict"):
            return None
        try:
            if kind == "DuplicateResolved":
                self.complete_warden_duplicate(request)
                return Fired("CompleteWardenDuplicate", request)
            self.quarantine_reused_request_id(request, getattr(event, "original", None))
            return Fired("QuarantineReusedRequestId", request)
        except Rejected:
            return None

    # -- back-pressure and broker offsets ---------------------------------

    @implements("ThrottlePartition")
    def throttle_partition(self, partition: Partition) -> None:
        """rule ThrottlePartition: pause fetching once in_flight reaches high_watermark."""
        if partition.status is not PartitionStatus.flowing:
            raise _reject("ThrottlePartition", 1, f"partition status is {partition.status.value}")
        if not partition.is_saturated:
            raise _reject("ThrottlePartition", 0, "partition is not saturated")
        partition.transition_status(PartitionStatus.throttled)
        partition.throttled_at = self.clock()

    @implements("ResumePartition")
    def resume_partition(self, partition: Partition) -> None:
        """rule ResumePartition: resume fetching once in_flight falls to low_watermark.

        A deployment pauses/resumes the broker consumer for the partition
        rather than stopping polling; the watermark gap prevents flapping.
        """
        if partition.status is not PartitionStatus.throttled:
            raise _reject("ResumePartition", 1, f"partition status is {partition.status.value}")
        if not partition.is_drained:
            raise _reject("ResumePartition", 0, "partition is not drained")
        partition.transition_status(PartitionStatus.flowing)
        partition.throttled_at = None

    def _after_in_flight_change(self, partition: Partition) -> None:
        """Fire the derived-value triggers Partition.is_saturated / is_drained."""
        if partition.status is PartitionStatus.flowing and partition.is_saturated:
            self.throttle_partition(partition)
        elif partition.status is PartitionStatus.throttled and partition.is_drained:
            self.resume_partition(partition)

    def _require_commit_due(self, rule: str, partition: Partition) -> datetime:
        """Trigger condition `partition.next_broker_commit_at <= now`; returns now."""
        now = self.clock()
        if partition.next_broker_commit_at > now:
            raise _reject(rule, 0, "partition.next_broker_commit_at <= now does not hold")
        return now

    @implements("CommitBrokerOffset")
    def commit_broker_offset(self, partition: Partition) -> int:
        """rule CommitBrokerOffset: bring the (advisory) broker offset up to the checkpoint."""
        if not partition.broker_committed_offset < partition.checkpoint.next_offset:
            raise _reject("CommitBrokerOffset", 1, "broker offset already at the checkpoint")
        now = self._require_commit_due("CommitBrokerOffset", partition)
        partition.broker_committed_offset = partition.checkpoint.next_offset
        partition.next_broker_commit_at = now + self.config.broker_commit_interval
        return partition.broker_committed_offset

    @implements("DeferBrokerCommit")
    def defer_broker_commit(self, partition: Partition) -> None:
        """rule DeferBrokerCommit: nothing new to commit; look again after the interval."""
        if not partition.broker_committed_offset >= partition.checkpoint.next_offset:
            raise _reject("DeferBrokerCommit", 1, "broker offset trails the checkpoint")
        now = self._require_commit_due("DeferBrokerCommit", partition)
        partition.next_broker_commit_at = now + self.config.broker_commit_interval

    def broker_commit_due(self, partition: Partition) -> Fired:
        """Trigger `partition.next_broker_commit_at <= now`: commit or defer."""
        if partition.broker_committed_offset < partition.checkpoint.next_offset:
            self.commit_broker_offset(partition)
            return Fired("CommitBrokerOffset", partition)
        self.defer_broker_commit(partition)
        return Fired("DeferBrokerCommit", partition)

    def run_due(self) -> list[Fired]:
        """Fire every temporal trigger whose deadline has passed, once each.

        Decode attempts (`next_attempt_at <= now`) in (partition, offset)
        order, then broker commits (`next_broker_commit_at <= now`). Each
        firing moves its deadline forward or clears it, so a second call at
        the same instant fires nothing.
        """
        now = self.clock()
        fired: list[Fired] = []
        for event in self.log_events:
            if event.status is LogEventStatus.fetched and event.next_attempt_at is not None \
                    and event.next_attempt_at <= now:
                fired.append(self.attempt_decode(event))
        for partition in self.partitions:
            if partition.next_broker_commit_at <= now:
                fired.append(self.broker_commit_due(partition))
        return fired

    # -- invariants -------------------------------------------------------

    def check_broker_offset_trails_checkpoint(self) -> None:
        """invariant BrokerOffsetTrailsCheckpoint."""
        for p in self.partitions:
            if not p.broker_committed_offset <= p.checkpoint.next_offset:
                raise InvariantViolation(
                    f"BrokerOffsetTrailsCheckpoint: partition {p.number} broker offset "
                    f"{p.broker_committed_offset} > checkpoint {p.checkpoint.next_offset}")

    def check_checkpoint_trails_fetch(self) -> None:
        """invariant CheckpointTrailsFetch."""
        for p in self.partitions:
            if p.status is not PartitionStatus.idle and not p.checkpoint.next_offset <= p.fetch_offset:
                raise InvariantViolation(
                    f"CheckpointTrailsFetch: partition {p.number} checkpoint "
                    f"{p.checkpoint.next_offset} > fetch_offset {p.fetch_offset}")

    def check_in_flight_is_bounded(self) -> None:
        """invariant InFlightIsBounded."""
        for p in self.partitions:
            if not 0 <= p.in_flight <= self.config.high_watermark:
                raise InvariantViolation(
                    f"InFlightIsBounded: partition {p.number} in_flight {p.in_flight}")

    def check_one_event_per_offset(self) -> None:
        """invariant OneEventPerOffset."""
        seen: set[tuple[int, int]] = set()
        for e in self.log_events:
            key = (id(e.partition), e.offset)
            if key in seen:
                raise InvariantViolation(
                    f"OneEventPerOffset: two events at {e.partition.number}/{e.offset}")
            seen.add(key)

    def check_invariants(self) -> None:
        """All invariants of usher.allium, plus the `when` clauses of its entities."""
        self.check_broker_offset_trails_checkpoint()
        self.check_checkpoint_trails_fetch()
        self.check_in_flight_is_bounded()
        self.check_one_event_per_offset()
        for p in self.partitions:
            p.check_when_fields()
        for e in self.log_events:
            e.check_when_fields()


# --------------------------------------------------------------------------
# Surfaces
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerConsumer:
    """The actor behind the Usher's surfaces: the broker consumer-group member.

    ASSUMPTION: usher.allium's surfaces declare no `facing` actor. Their
    operations are broker callbacks (assignment, fetched records, revocation),
    so the most conservative reading is that only the broker consumer of this
    deployment's own consumer group may use them; anyone else is denied.
    """

    group_id: str


def _check_actor(usher: Usher, actor: object, surface: str) -> None:
    """Deny anyone but this deployment's broker consumer."""
    if not isinstance(actor, BrokerConsumer) or actor.group_id != usher.consumer_group:
        raise AccessDenied(surface, 0, f"{actor!r} is not the consumer of group {usher.consumer_group}")


class PartitionAssignment:
    """surface PartitionAssignment: provides PartitionAssigned(number).

    @guarantee StartFromCheckpoint: a newly assigned partition resumes from
    its Ledger checkpoint, never from the broker's committed offset.
    """

    def __init__(self, usher: Usher) -> None:
        self.usher = usher

    def provides(self, actor: object) -> frozenset[str]:
        """Operations available to ``actor`` (unconditional for the consumer)."""
        _check_actor(self.usher, actor, "PartitionAssignment")
        return frozenset({"PartitionAssigned"})

    def partition_assigned(self, actor: object, number: int) -> Partition:
        """PartitionAssigned(number)."""
        _check_actor(self.usher, actor, "PartitionAssignment")
        return self.usher.partition_assigned(number)


class ConsumerFeed:
    """surface ConsumerFeed: context partition: Partition."""

    def __init__(self, usher: Usher) -> None:
        self.usher = usher

    def exposes(self, actor: object, partition: Partition) -> dict[str, object]:
        """The exposed fields; throttled_at only while status = throttled."""
        _check_actor(self.usher, actor, "ConsumerFeed")
        view: dict[str, object] = {
            "number": partition.number,
            "status": partition.status,
            "fetch_offset": partition.fetch_offset,
            "in_flight": partition.in_flight,
            "broker_committed_offset": partition.broker_committed_offset,
        }
        if partition.status is PartitionStatus.throttled:
            view["throttled_at"] = partition.throttled_at
        return view

    def provides(self, actor: object, partition: Partition) -> frozenset[str]:
        """EventFetched while the partition is flowing; PartitionRevoked always."""
        _check_actor(self.usher, actor, "ConsumerFeed")
        ops = {"PartitionRevoked"}
        if partition.status is PartitionStatus.flowing:
            ops.add("EventFetched")
        return frozenset(ops)

    def event_fetched(self, actor: object, partition: Partition, offset: int, payload: str) -> LogEvent:
        """EventFetched(partition, offset, payload) when partition.status = flowing."""
        _check_actor(self.usher, actor, "ConsumerFeed")
        if partition.status is not PartitionStatus.flowing:
            raise AccessDenied("ConsumerFeed", 0, "EventFetched is offered only while flowing")
        return self.usher.fetch_event(partition, offset, payload)

    def event_batch_fetched(self, actor: object, partition: Partition,
                            records: Sequence[tuple[int, str]]) -> FetchResult:
        """A batch of EventFetched (see Usher.fetch_batch)."""
        _check_actor(self.usher, actor, "ConsumerFeed")
        return self.usher.fetch_batch(partition, records)

    def partition_revoked(self, actor: object, partition: Partition) -> None:
        """PartitionRevoked(partition)."""
        _check_actor(self.usher, actor, "ConsumerFeed")
        self.usher.revoke_partition(partition)


__all__ = [
    "AccessDenied", "BrokerConsumer", "Config", "ConsumerFeed", "EnvelopeCodec", "FetchResult",
    "Fired", "InMemoryLedgerPort", "InvariantViolation", "LedgerStorePort", "JsonEnvelopeCodec", "LOG_EVENT_TERMINAL",
    "LOG_EVENT_TRANSITIONS", "LedgerPort", "LogEvent", "LogEventStatus", "PARTITION_TRANSITIONS",
    "Partition", "PartitionAssignment", "PartitionStatus", "REUSED_REQUEST_ID_CAUSE", "Rejected",
    "TransitionRejected", "Usher", "fingerprint",
]
