"""Tests for unit `usher` (usher.allium): partitions, log events, back-pressure, broker offsets."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from ledger.cluster import Node, NodeStatus
from ledger.core import Channel, Envelope, OperationKind, Outcome, Request, Verdict
from ledger.core import fingerprint as core_fingerprint
from ledger.ledger import (
    Checkpoint,
    DeadLetter,
    DeadLetterStatus,
    Disposition,
    EpochGrant,
    LedgerStore,
    Position,
    Proposal,
    ProposalStatus,
)
from ledger.usher import (
    LOG_EVENT_TERMINAL,
    REUSED_REQUEST_ID_CAUSE,
    AccessDenied,
    BrokerConsumer,
    Config,
    ConsumerFeed,
    InMemoryLedgerPort,
    InvariantViolation,
    JsonEnvelopeCodec,
    LedgerStorePort,
    LogEvent,
    LogEventStatus,
    Partition,
    PartitionAssignment,
    PartitionStatus,
    Rejected,
    TransitionRejected,
    Usher,
    fingerprint,
)
from ledger.warden import DuplicateResolved as WardenDuplicateResolved
from ledger.warden import Warden

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
CONSUMER = BrokerConsumer("ledger-usher")


class Clock:
    """An injected, manually advanced clock."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now = self.now + delta
        return self.now


def make_usher(clock: Clock | None = None, **config: object) -> tuple[Usher, Clock, InMemoryLedgerPort]:
    clock = clock or Clock()
    port = InMemoryLedgerPort()
    usher = Usher(clock=clock, config=Config(**config), ledger=port)  # type: ignore[arg-type]
    return usher, clock, port


def envelope(request_id: str = "r-1", **over: object) -> Envelope:
    fields: dict[str, object] = dict(request_id=request_id, client_id="c-1", kind=OperationKind.deposit,
                                     account_id="acc-1", amount_minor=500)
    fields.update(over)
    return Envelope(**fields)  # type: ignore[arg-type]


def payload(request_id: str = "r-1", **over: object) -> str:
    return JsonEnvelopeCodec.encode(envelope(request_id, **over))


BAD = "{not json"


def flowing_partition(usher: Usher, number: int = 0) -> Partition:
    partition = usher.partition_assigned(number)
    usher.resume_from_checkpoint(partition)
    return partition


def decoded_event(usher: Usher, partition: Partition, request_id: str = "r-1") -> LogEvent:
    event = usher.fetch_event(partition, partition.fetch_offset, payload(request_id))
    usher.decode_event(event)
    return event


def make_outcome(request: Request) -> Outcome:
    return Outcome(request=request, request_id=request.request_id, client_id=request.client_id,
                   kind=request.kind, verdict=Verdict.accepted, reason=None,
                   account_id=request.account_id, counterparty_id=None,
                   account_delta_minor=request.amount_minor, counterparty_delta_minor=0,
                   digest="d", epoch=1, sequence=1, committed_at=T0)


def make_proposal(request: Request, status: ProposalStatus = ProposalStatus.duplicate) -> Proposal:
    return Proposal(request=request, attempt=1, epoch=1, digest="d", verdict=Verdict.accepted,
                    reason=None, account_delta_minor=request.amount_minor, counterparty_delta_minor=0,
                    expected_primary_version=1, expected_counter_version=1, status=status)


def rest_request(request_id: str = "r-1") -> Request:
    env = envelope(request_id)
    return Request(request_id=env.request_id, client_id=env.client_id, kind=env.kind,
                   account_id=env.account_id, amount_minor=env.amount_minor, channel=Channel.rest,
                   fingerprint=fingerprint(env), received_at=T0)


def log_request(partition: int | None, offset: int | None, request_id: str = "r-1") -> Request:
    env = envelope(request_id)
    return Request(request_id=env.request_id, client_id=env.client_id, kind=env.kind,
                   account_id=env.account_id, amount_minor=env.amount_minor, channel=Channel.log,
                   partition=partition, offset=offset, fingerprint=fingerprint(env), received_at=T0)


def assert_rejected(exc: pytest.ExceptionInfo[Exception], clause: int) -> None:
    assert exc.value.clause == clause  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


@pytest.mark.allium("config-default.high_watermark", "config-default.low_watermark",
                    "config-default.max_decode_attempts", "config-default.decode_backoff",
                    "config-default.broker_commit_interval", "config-default.fetch_batch_max")
def test_config_defaults() -> None:
    config = Config()
    assert config.high_watermark == 4096
    assert config.low_watermark == 1024
    assert config.max_decode_attempts == 5
    assert config.decode_backoff == timedelta(seconds=1)
    assert config.broker_commit_interval == timedelta(seconds=5)
    assert config.fetch_batch_max == 500
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.high_watermark = 1  # type: ignore[misc]


# --------------------------------------------------------------------------
# Entities
# --------------------------------------------------------------------------


@pytest.mark.allium("entity-fields.Partition")
def test_partition_fields() -> None:
    usher, _, _ = make_usher()
    partition = usher.partition_assigned(3)
    names = {f.name for f in dataclasses.fields(Partition)}
    assert {"number", "checkpoint", "fetch_offset", "in_flight", "broker_committed_offset",
            "next_broker_commit_at", "status", "throttled_at"} <= names
    assert isinstance(partition.number, int)
    assert isinstance(partition.checkpoint, Checkpoint)
    assert isinstance(partition.fetch_offset, int)
    assert isinstance(partition.in_flight, int)
    assert isinstance(partition.broker_committed_offset, int)
    assert isinstance(partition.next_broker_commit_at, datetime)
    assert isinstance(partition.status, PartitionStatus)
    assert partition.throttled_at is None
    assert isinstance(partition.events, list)
    assert isinstance(partition.is_saturated, bool) and isinstance(partition.is_drained, bool)


@pytest.mark.allium("entity-relationship.Partition.events")
def test_partition_events_relationship() -> None:
    usher, _, _ = make_usher()
    p0 = flowing_partition(usher, 0)
    p1 = flowing_partition(usher, 1)
    a = usher.fetch_event(p0, 0, payload("a"))
    b = usher.fetch_event(p0, 1, payload("b"))
    c = usher.fetch_event(p1, 0, payload("c"))
    assert p0.events == [a, b]
    assert p1.events == [c]
    assert all(e.partition is p0 for e in p0.events)
    assert p0.event_at(1) is b and p0.event_at(2) is None


@pytest.mark.allium("derived.Partition.is_saturated", "derived.Partition.is_drained")
def test_partition_derived_watermarks() -> None:
    usher, _, _ = make_usher(high_watermark=4, low_watermark=2)
    partition = usher.partition_assigned(0)
    for in_flight, saturated, drained in [(0, False, True), (2, False, True), (3, False, False),
                                          (4, True, False), (5, True, False)]:
        partition.in_flight = in_flight
        assert partition.is_saturated is saturated
        assert partition.is_drained is drained


@pytest.mark.allium("when-presence.Partition.throttled_at")
def test_partition_throttled_at_presence() -> None:
    usher, _, _ = make_usher(high_watermark=2, low_watermark=0)
    partition = flowing_partition(usher)
    assert partition.status is PartitionStatus.flowing and partition.throttled_at is None
    partition.check_when_fields()
    usher.fetch_event(partition, 0, payload("a"))
    usher.fetch_event(partition, 1, payload("b"))
    assert partition.status is PartitionStatus.throttled and partition.throttled_at == T0
    partition.check_when_fields()
    usher.epoch_granted(EpochGrant(epoch=2, node_id="n2", granted_at=T0))
    assert partition.status is PartitionStatus.idle and partition.throttled_at is None
    partition.check_when_fields()
    partition.throttled_at = T0  # a hand-made violation is detected
    with pytest.raises(InvariantViolation):
        partition.check_when_fields()


@pytest.mark.allium("entity-fields.LogEvent", "entity-optional.LogEvent.last_error")
def test_log_event_fields_and_optional_last_error() -> None:
    usher, clock, _ = make_usher()
    partition = flowing_partition(usher)
    good = usher.fetch_event(partition, 0, payload("a"))
    bad = usher.fetch_event(partition, 1, BAD)
    names = {f.name for f in dataclasses.fields(LogEvent)}
    assert {"partition", "offset", "payload", "payload_digest", "fetched_at", "attempts", "last_error",
            "status", "next_attempt_at", "request", "completed_at", "quarantined_at"} <= names
    assert good.partition is partition and isinstance(good.offset, int)
    assert isinstance(good.payload, str) and len(good.payload_digest) == 64
    assert good.fetched_at == T0 and good.attempts == 0
    assert isinstance(good.status, LogEventStatus)
    # last_error: null until a decode fails, then a string.
    assert good.last_error is None
    usher.retry_decode(bad)
    assert isinstance(bad.last_error, str) and bad.last_error
    usher.decode_event(good)
    assert good.last_error is None and isinstance(good.request, Request)


@pytest.mark.allium("when-presence.LogEvent.next_attempt_at", "when-presence.LogEvent.request",
                    "when-presence.LogEvent.completed_at", "when-presence.LogEvent.quarantined_at")
def test_log_event_when_presence_across_statuses() -> None:
    usher, _, _ = make_usher(max_decode_attempts=1)
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, payload("a"))
    assert event.status is LogEventStatus.fetched
    assert event.next_attempt_at == T0 and event.request is None
    assert event.completed_at is None and event.quarantined_at is None
    event.check_when_fields()
    usher.decode_event(event)
    assert event.status is LogEventStatus.decoded
    assert event.next_attempt_at is None and event.request is not None
    assert event.completed_at is None and event.quarantined_at is None
    event.check_when_fields()
    usher.complete_on_outcome(make_outcome(event.request))
    assert event.status is LogEventStatus.completed
    assert event.next_attempt_at is None and event.request is not None
    assert event.completed_at == T0 and event.quarantined_at is None
    event.check_when_fields()
    poison = usher.fetch_event(partition, 1, BAD)
    usher.quarantine_poison_event(poison)
    assert poison.status is LogEventStatus.quarantined
    assert poison.next_attempt_at is None and poison.request is None
    assert poison.completed_at is None and poison.quarantined_at == T0
    poison.check_when_fields()
    poison.completed_at = T0
    with pytest.raises(InvariantViolation):
        poison.check_when_fields()


# --------------------------------------------------------------------------
# Transitions
# --------------------------------------------------------------------------


@pytest.mark.allium("transition-edge.Partition.idle.flowing", "transition-edge.Partition.flowing.throttled",
                    "transition-edge.Partition.throttled.flowing", "transition-edge.Partition.flowing.idle")
def test_partition_transition_edges_via_rules() -> None:
    usher, _, _ = make_usher(high_watermark=2, low_watermark=1)
    partition = usher.partition_assigned(0)
    assert partition.status is PartitionStatus.idle
    usher.resume_from_checkpoint(partition)  # idle -> flowing
    assert partition.status is PartitionStatus.flowing
    a = usher.fetch_event(partition, 0, payload("a"))
    b = usher.fetch_event(partition, 1, payload("b"))  # flowing -> throttled
    assert partition.status is PartitionStatus.throttled
    usher.decode_event(a)
    usher.decode_event(b)
    usher.complete_on_outcome(make_outcome(a.request))  # throttled -> flowing
    assert partition.status is PartitionStatus.flowing
    usher.stop_flowing_partitions(EpochGrant(epoch=2, node_id="n", granted_at=T0))  # flowing -> idle
    assert partition.status is PartitionStatus.idle


@pytest.mark.allium("transition-edge.Partition.throttled.idle")
def test_partition_throttled_to_idle_via_stop_throttled() -> None:
    usher, _, _ = make_usher(high_watermark=1, low_watermark=0)
    partition = flowing_partition(usher)
    usher.fetch_event(partition, 0, payload("a"))
    assert partition.status is PartitionStatus.throttled
    usher.stop_throttled_partitions(EpochGrant(epoch=2, node_id="n", granted_at=T0))
    assert partition.status is PartitionStatus.idle


@pytest.mark.allium("transition-rejected.Partition.status")
def test_partition_undeclared_transition_rejected() -> None:
    usher, _, _ = make_usher()
    partition = usher.partition_assigned(0)
    assert partition.status is PartitionStatus.idle
    with pytest.raises(TransitionRejected):
        partition.transition_status(PartitionStatus.throttled)  # idle -> throttled is undeclared
    with pytest.raises(TransitionRejected):
        partition.transition_status(PartitionStatus.idle)  # no self-loop
    assert partition.status is PartitionStatus.idle
    # A rule that would need the undeclared edge is rejected and changes nothing.
    partition.in_flight = usher.config.high_watermark
    with pytest.raises(Rejected):
        usher.throttle_partition(partition)
    assert partition.status is PartitionStatus.idle and partition.throttled_at is None


@pytest.mark.allium("transition-edge.LogEvent.fetched.decoded", "transition-edge.LogEvent.decoded.completed")
def test_log_event_fetched_decoded_completed() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, payload("a"))
    assert event.status is LogEventStatus.fetched
    usher.decode_event(event)
    assert event.status is LogEventStatus.decoded
    usher.complete_on_outcome(make_outcome(event.request))
    assert event.status is LogEventStatus.completed


@pytest.mark.allium("transition-edge.LogEvent.fetched.quarantined")
def test_log_event_fetched_to_quarantined() -> None:
    usher, _, _ = make_usher(max_decode_attempts=1)
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, BAD)
    assert event.status is LogEventStatus.fetched
    usher.quarantine_poison_event(event)
    assert event.status is LogEventStatus.quarantined


@pytest.mark.allium("transition-edge.LogEvent.decoded.quarantined")
def test_log_event_decoded_to_quarantined() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = decoded_event(usher, partition)
    assert event.status is LogEventStatus.decoded
    usher.quarantine_reused_request_id(event.request, rest_request())
    assert event.status is LogEventStatus.quarantined


@pytest.mark.allium("transition-rejected.LogEvent.status", "transition-terminal.LogEvent.status")
def test_log_event_undeclared_and_terminal_transitions_rejected() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, payload("a"))
    with pytest.raises(TransitionRejected):
        event.transition_status(LogEventStatus.completed)  # fetched -> completed is undeclared
    assert event.status is LogEventStatus.fetched
    usher.decode_event(event)
    with pytest.raises(TransitionRejected):
        event.transition_status(LogEventStatus.fetched)  # decoded -> fetched is undeclared
    usher.complete_on_outcome(make_outcome(event.request))
    assert event.status in LOG_EVENT_TERMINAL
    for target in LogEventStatus:
        with pytest.raises(TransitionRejected):
            event.transition_status(target)  # completed is terminal
    assert event.status is LogEventStatus.completed
    # The rules respect terminal states too: no second completion.
    with pytest.raises(Rejected):
        usher.complete_on_outcome(make_outcome(event.request))
    quarantined = usher.fetch_event(partition, 1, payload("b"))
    usher.decode_event(quarantined)
    usher.quarantine_reused_request_id(quarantined.request or log_request(0, 1, "b"))
    for target in LogEventStatus:
        with pytest.raises(TransitionRejected):
            quarantined.transition_status(target)  # quarantined is terminal
    assert quarantined.status is LogEventStatus.quarantined


# --------------------------------------------------------------------------
# Assignment and leadership
# --------------------------------------------------------------------------


@pytest.mark.allium("rule-success.AssignPartition", "rule-entity-creation.AssignPartition.1")
def test_assign_partition_from_existing_checkpoint() -> None:
    usher, clock, port = make_usher()
    checkpoint = port.create_checkpoint(7, 42, T0)
    clock.advance(timedelta(seconds=3))
    partition = usher.assign_partition(7)
    assert usher.partition(7) is partition
    assert partition.number == 7
    assert partition.checkpoint is checkpoint
    assert partition.fetch_offset == 42
    assert partition.in_flight == 0
    assert partition.broker_committed_offset == 42
    assert partition.next_broker_commit_at == clock.now + timedelta(seconds=5)
    assert partition.status is PartitionStatus.idle
    assert partition.throttled_at is None and partition.events == []


@pytest.mark.allium("rule-failure.AssignPartition.1")
def test_assign_partition_rejected_when_partition_exists() -> None:
    usher, _, port = make_usher()
    port.create_checkpoint(7, 42, T0)
    first = usher.assign_partition(7)
    first.fetch_offset = 50
    with pytest.raises(Rejected) as exc:
        usher.assign_partition(7)
    assert_rejected(exc, 1)
    assert usher.partition(7) is first and first.fetch_offset == 50


@pytest.mark.allium("rule-failure.AssignPartition.2")
def test_assign_partition_rejected_without_checkpoint() -> None:
    usher, _, port = make_usher()
    with pytest.raises(Rejected) as exc:
        usher.assign_partition(7)
    assert_rejected(exc, 2)
    assert usher.partition(7) is None and port.checkpoint(7) is None


@pytest.mark.allium("rule-success.AssignNewPartition", "rule-entity-creation.AssignNewPartition.1")
def test_assign_new_partition_creates_checkpoint_and_partition() -> None:
    usher, clock, port = make_usher()
    partition = usher.assign_new_partition(4)
    checkpoint = port.checkpoint(4)
    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.partition == 4 and checkpoint.next_offset == 0 and checkpoint.advanced_at == T0
    assert partition.checkpoint is checkpoint
    assert partition.number == 4 and partition.fetch_offset == 0 and partition.in_flight == 0
    assert partition.broker_committed_offset == 0
    assert partition.next_broker_commit_at == T0 + timedelta(seconds=5)
    assert partition.status is PartitionStatus.idle


@pytest.mark.allium("rule-failure.AssignNewPartition.1")
def test_assign_new_partition_rejected_when_partition_exists() -> None:
    usher, _, port = make_usher()
    existing = usher.assign_new_partition(4)
    del port.checkpoints[4]  # only the partition exists now
    with pytest.raises(Rejected) as exc:
        usher.assign_new_partition(4)
    assert_rejected(exc, 1)
    assert usher.partition(4) is existing and port.checkpoint(4) is None


@pytest.mark.allium("rule-failure.AssignNewPartition.2")
def test_assign_new_partition_rejected_when_checkpoint_exists() -> None:
    usher, _, port = make_usher()
    checkpoint = port.create_checkpoint(4, 9, T0)
    with pytest.raises(Rejected) as exc:
        usher.assign_new_partition(4)
    assert_rejected(exc, 2)
    assert usher.partition(4) is None and port.checkpoint(4) is checkpoint


@pytest.mark.allium("rule-success.RevokePartition")
def test_revoke_partition_removes_partition_and_events() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher, 2)
    other = flowing_partition(usher, 3)
    usher.fetch_event(partition, 0, payload("a"))
    decoded_event(usher, partition, "b")
    kept = usher.fetch_event(other, 0, payload("c"))
    usher.revoke_partition(partition)
    assert usher.partition(2) is None
    assert partition.events == []
    assert usher.log_events == [kept]
    assert usher.partitions == [other]


@pytest.mark.allium("rule-success.StartConsuming", "rule-chained.StartConsuming.ResumeFromCheckpoint")
def test_start_consuming_resumes_idle_partitions_from_checkpoint() -> None:
    usher, _, port = make_usher()
    port.create_checkpoint(0, 10, T0)
    port.create_checkpoint(1, 20, T0)
    p0 = usher.partition_assigned(0)
    p1 = usher.partition_assigned(1)
    p2 = flowing_partition(usher, 2)
    usher.fetch_event(p2, 0, payload("x"))
    p0.fetch_offset = 99  # a stale position is overwritten by the checkpoint
    p0.in_flight = 3
    node = Node(node_id="n1", status=NodeStatus.primary, last_heartbeat_at=T0, serving_epoch=1,
                promoted_at=T0)
    emitted = usher.start_consuming(node)
    # ResumeFromCheckpoint(partition: p) was emitted for the idle partitions only...
    assert emitted == [p0, p1]
    # ...and fired with that partition: flowing from its checkpoint.
    assert p0.status is PartitionStatus.flowing and p0.fetch_offset == 10 and p0.in_flight == 0
    assert p1.status is PartitionStatus.flowing and p1.fetch_offset == 20 and p1.in_flight == 0
    assert p2.status is PartitionStatus.flowing and p2.fetch_offset == 1 and p2.in_flight == 1
    backup = Node(node_id="n2", status=NodeStatus.backup, last_heartbeat_at=T0)
    with pytest.raises(Rejected):
        usher.start_consuming(backup)


@pytest.mark.allium("rule-success.ResumeFromCheckpoint")
def test_resume_from_checkpoint() -> None:
    usher, _, port = make_usher()
    port.create_checkpoint(0, 17, T0)
    partition = usher.partition_assigned(0)
    partition.checkpoint.next_offset = 19  # the Ledger advanced meanwhile
    usher.resume_from_checkpoint(partition)
    assert partition.status is PartitionStatus.flowing
    assert partition.fetch_offset == 19
    assert partition.in_flight == 0


@pytest.mark.allium("rule-failure.ResumeFromCheckpoint.1")
def test_resume_from_checkpoint_rejected_unless_idle() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    usher.fetch_event(partition, 0, payload("a"))
    with pytest.raises(Rejected) as exc:
        usher.resume_from_checkpoint(partition)
    assert_rejected(exc, 1)
    assert partition.status is PartitionStatus.flowing
    assert partition.fetch_offset == 1 and partition.in_flight == 1


@pytest.mark.allium("rule-success.StopFlowingPartitions")
def test_stop_flowing_partitions_drops_in_flight_events() -> None:
    usher, _, _ = make_usher(max_decode_attempts=1)
    partition = flowing_partition(usher)
    done = decoded_event(usher, partition, "a")
    usher.complete_on_outcome(make_outcome(done.request))
    poison = usher.fetch_event(partition, 1, BAD)
    usher.quarantine_poison_event(poison)
    usher.fetch_event(partition, 2, payload("c"))  # fetched
    decoded_event(usher, partition, "d")  # decoded
    idle = usher.partition_assigned(9)
    assert partition.in_flight == 2
    stopped = usher.stop_flowing_partitions(EpochGrant(epoch=2, node_id="n2", granted_at=T0))
    assert stopped == [partition]
    assert partition.status is PartitionStatus.idle
    assert partition.in_flight == 0
    assert partition.events == [done, poison]  # terminal events stay, in-flight ones are gone
    assert idle.status is PartitionStatus.idle
    usher.check_invariants()


@pytest.mark.allium("rule-success.StopThrottledPartitions")
def test_stop_throttled_partitions_clears_throttle_and_events() -> None:
    usher, _, _ = make_usher(high_watermark=2, low_watermark=0)
    throttled = flowing_partition(usher, 0)
    usher.fetch_event(throttled, 0, payload("a"))
    decoded_event(usher, throttled, "b")
    flowing = flowing_partition(usher, 1)
    usher.fetch_event(flowing, 0, payload("c"))
    assert throttled.status is PartitionStatus.throttled
    stopped = usher.stop_throttled_partitions(EpochGrant(epoch=2, node_id="n2", granted_at=T0))
    assert stopped == [throttled]
    assert throttled.status is PartitionStatus.idle
    assert throttled.throttled_at is None
    assert throttled.in_flight == 0
    assert throttled.events == []
    assert flowing.status is PartitionStatus.flowing and flowing.in_flight == 1  # untouched


# --------------------------------------------------------------------------
# Fetching and decoding
# --------------------------------------------------------------------------


@pytest.mark.allium("rule-success.FetchEvent", "rule-entity-creation.FetchEvent.1")
def test_fetch_event_creates_log_event() -> None:
    usher, clock, port = make_usher()
    port.create_checkpoint(0, 5, T0)
    partition = flowing_partition(usher)
    clock.advance(timedelta(milliseconds=7))
    body = payload("a")
    event = usher.fetch_event(partition, 5, body)
    assert event.partition is partition
    assert event.offset == 5
    assert event.payload == body
    assert event.payload_digest == JsonEnvelopeCodec().payload_hash(body)
    assert event.fetched_at == clock.now
    assert event.attempts == 0
    assert event.status is LogEventStatus.fetched
    assert event.next_attempt_at == clock.now
    assert partition.fetch_offset == 6
    assert partition.in_flight == 1
    assert partition.events == [event]


@pytest.mark.allium("rule-failure.FetchEvent.1")
def test_fetch_event_rejected_unless_flowing() -> None:
    usher, _, _ = make_usher()
    partition = usher.partition_assigned(0)
    with pytest.raises(Rejected) as exc:
        usher.fetch_event(partition, 0, payload("a"))
    assert_rejected(exc, 1)
    assert partition.events == [] and partition.fetch_offset == 0 and partition.in_flight == 0


@pytest.mark.allium("rule-failure.FetchEvent.2")
def test_fetch_event_rejected_on_offset_gap_or_repeat() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    usher.fetch_event(partition, 0, payload("a"))
    for offset in (0, 2):  # repeat, gap
        with pytest.raises(Rejected) as exc:
            usher.fetch_event(partition, offset, payload("b"))
        assert_rejected(exc, 2)
    assert partition.fetch_offset == 1 and partition.in_flight == 1 and len(partition.events) == 1
    # The batch path reseeks to fetch_offset instead of skipping.
    result = usher.fetch_batch(partition, [(1, payload("b")), (3, payload("d")), (4, payload("e"))])
    assert [e.offset for e in result.events] == [1]
    assert result.reseek_to == 2 and partition.fetch_offset == 2


@pytest.mark.allium("rule-success.DecodeEvent", "rule-entity-creation.DecodeEvent.1")
def test_decode_event_creates_log_request() -> None:
    created: list[Request] = []
    clock = Clock()
    usher = Usher(clock=clock, on_request_created=created.append)
    partition = flowing_partition(usher, 6)
    env = envelope("r-9", kind=OperationKind.transfer, counterparty_id="acc-2", amount_minor=250)
    event = usher.fetch_event(partition, 0, JsonEnvelopeCodec.encode(env))
    clock.advance(timedelta(milliseconds=1))
    request = usher.decode_event(event)
    assert created == [request]
    assert request.request_id == "r-9" and request.client_id == "c-1"
    assert request.kind is OperationKind.transfer
    assert request.account_id == "acc-1" and request.counterparty_id == "acc-2" and request.owner is None
    assert request.amount_minor == 250
    assert request.channel is Channel.log
    assert request.partition == 6 and request.offset == 0
    assert request.fingerprint == fingerprint(env)
    assert request.received_at == clock.now
    assert event.status is LogEventStatus.decoded
    assert event.next_attempt_at is None
    assert event.request is request


@pytest.mark.allium("temporal.DecodeEvent")
def test_decode_event_fires_at_deadline_once() -> None:
    usher, clock, _ = make_usher()
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, payload("a"))
    event.next_attempt_at = T0 + timedelta(seconds=1)  # a later deadline
    clock.advance(timedelta(milliseconds=999))
    assert usher.run_due() == []
    with pytest.raises(Rejected) as exc:
        usher.decode_event(event)
    assert_rejected(exc, 0)
    assert event.status is LogEventStatus.fetched
    clock.advance(timedelta(milliseconds=1))
    fired = usher.run_due()
    assert [(f.rule, f.subject) for f in fired] == [("DecodeEvent", event)]
    assert event.status is LogEventStatus.decoded
    assert usher.run_due() == []
    clock.advance(timedelta(seconds=1))
    assert all(f.rule != "DecodeEvent" for f in usher.run_due())


@pytest.mark.allium("rule-failure.DecodeEvent.1")
def test_decode_event_rejected_unless_fetched() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = decoded_event(usher, partition)
    request = event.request
    with pytest.raises(Rejected) as exc:
        usher.decode_event(event)
    assert_rejected(exc, 1)
    assert event.status is LogEventStatus.decoded and event.request is request


@pytest.mark.allium("rule-failure.DecodeEvent.2")
def test_decode_event_rejected_when_not_well_formed() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, BAD)
    with pytest.raises(Rejected) as exc:
        usher.decode_event(event)
    assert_rejected(exc, 2)
    assert event.status is LogEventStatus.fetched and event.request is None
    assert event.next_attempt_at == T0


@pytest.mark.allium("rule-success.RetryDecode")
def test_retry_decode_backs_off() -> None:
    usher, clock, _ = make_usher()
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, '["not", "an", "object"]')
    usher.retry_decode(event)
    assert event.attempts == 1
    assert event.next_attempt_at == T0 + timedelta(seconds=1)
    assert event.last_error == "payload is not a JSON object"
    assert event.status is LogEventStatus.fetched
    assert partition.in_flight == 1


@pytest.mark.allium("temporal.RetryDecode")
def test_retry_decode_fires_at_deadline_once() -> None:
    usher, clock, _ = make_usher()
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, BAD)
    assert [f.rule for f in usher.run_due()] == ["RetryDecode"]
    assert event.attempts == 1 and event.next_attempt_at == T0 + timedelta(seconds=1)
    assert usher.run_due() == []  # not re-fired at the same instant
    clock.advance(timedelta(milliseconds=999))
    assert usher.run_due() == []  # not before the backoff deadline
    with pytest.raises(Rejected) as exc:
        usher.retry_decode(event)
    assert_rejected(exc, 0)
    clock.advance(timedelta(milliseconds=1))
    assert [f.rule for f in usher.run_due()] == ["RetryDecode"]
    assert event.attempts == 2


@pytest.mark.allium("rule-failure.RetryDecode.1")
def test_retry_decode_rejected_unless_fetched() -> None:
    usher, _, _ = make_usher(max_decode_attempts=1)
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, BAD)
    usher.quarantine_poison_event(event)
    with pytest.raises(Rejected) as exc:
        usher.retry_decode(event)
    assert_rejected(exc, 1)
    assert event.status is LogEventStatus.quarantined and event.attempts == 0


@pytest.mark.allium("rule-failure.RetryDecode.2")
def test_retry_decode_rejected_when_well_formed() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, payload("a"))
    with pytest.raises(Rejected) as exc:
        usher.retry_decode(event)
    assert_rejected(exc, 2)
    assert event.attempts == 0 and event.last_error is None and event.next_attempt_at == T0


@pytest.mark.allium("rule-failure.RetryDecode.3")
def test_retry_decode_rejected_at_last_attempt() -> None:
    usher, _, _ = make_usher(max_decode_attempts=2)
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, BAD)
    event.attempts = 1  # attempts + 1 = 2, not < max_decode_attempts
    with pytest.raises(Rejected) as exc:
        usher.retry_decode(event)
    assert_rejected(exc, 3)
    assert event.attempts == 1 and event.last_error is None and event.next_attempt_at == T0


@pytest.mark.allium("rule-success.QuarantinePoisonEvent", "rule-entity-creation.QuarantinePoisonEvent.1")
def test_quarantine_poison_event_creates_dead_letter() -> None:
    usher, clock, port = make_usher(max_decode_attempts=3)
    partition = flowing_partition(usher, 8)
    event = usher.fetch_event(partition, 0, BAD)
    event.attempts = 2
    clock.advance(timedelta(seconds=2))
    letter = usher.quarantine_poison_event(event)
    assert isinstance(letter, DeadLetter) and port.dead_letters == [letter]
    assert letter.partition == 8 and letter.offset == 0
    assert letter.payload_digest == event.payload_digest
    assert letter.cause == JsonEnvelopeCodec().decode_error(BAD) and letter.cause
    assert letter.attempts == 3
    assert letter.quarantined_at == clock.now
    assert letter.status is DeadLetterStatus.held
    assert event.status is LogEventStatus.quarantined
    assert event.next_attempt_at is None
    assert event.quarantined_at == clock.now
    assert partition.in_flight == 0


@pytest.mark.allium("temporal.QuarantinePoisonEvent")
def test_poison_event_quarantined_after_max_attempts_at_deadline() -> None:
    usher, clock, port = make_usher()  # 5 attempts, 1 s apart
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, BAD)
    rules: list[str] = []
    for _ in range(5):
        rules += [f.rule for f in usher.run_due()]
        assert usher.run_due() == []  # never twice at one instant
        clock.advance(timedelta(milliseconds=500))
        assert usher.run_due() == []  # not before the deadline
        clock.advance(timedelta(milliseconds=500))
    assert rules == ["RetryDecode"] * 4 + ["QuarantinePoisonEvent"]
    assert event.status is LogEventStatus.quarantined
    assert [d.attempts for d in port.dead_letters] == [5]
    clock.advance(timedelta(seconds=10))
    assert all(f.rule != "QuarantinePoisonEvent" for f in usher.run_due())
    assert len(port.dead_letters) == 1


@pytest.mark.allium("rule-failure.QuarantinePoisonEvent.1")
def test_quarantine_poison_rejected_unless_fetched() -> None:
    usher, _, port = make_usher(max_decode_attempts=1)
    partition = flowing_partition(usher)
    event = decoded_event(usher, partition)
    with pytest.raises(Rejected) as exc:
        usher.quarantine_poison_event(event)
    assert_rejected(exc, 1)
    assert event.status is LogEventStatus.decoded and port.dead_letters == []


@pytest.mark.allium("rule-failure.QuarantinePoisonEvent.2")
def test_quarantine_poison_rejected_when_well_formed() -> None:
    usher, _, port = make_usher(max_decode_attempts=1)
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, payload("a"))
    with pytest.raises(Rejected) as exc:
        usher.quarantine_poison_event(event)
    assert_rejected(exc, 2)
    assert event.status is LogEventStatus.fetched and port.dead_letters == []
    assert partition.in_flight == 1


@pytest.mark.allium("rule-failure.QuarantinePoisonEvent.3")
def test_quarantine_poison_rejected_before_last_attempt() -> None:
    usher, _, port = make_usher(max_decode_attempts=3)
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, BAD)
    event.attempts = 1  # attempts + 1 = 2 < 3
    with pytest.raises(Rejected) as exc:
        usher.quarantine_poison_event(event)
    assert_rejected(exc, 3)
    assert event.status is LogEventStatus.fetched and event.quarantined_at is None
    assert port.dead_letters == [] and partition.in_flight == 1


def test_transient_decode_failure_recovers() -> None:
    """A codec that fails once (a schema lookup timing out) is retried, then decoded."""

    class Flaky(JsonEnvelopeCodec):
        def __init__(self) -> None:
            self.failures = 1

        def well_formed(self, payload: str) -> bool:
            return super().well_formed(payload) and self.failures <= 0

        def decode_error(self, payload: str) -> str:
            self.failures -= 1
            return "schema lookup timed out"

    clock = Clock()
    usher = Usher(clock=clock, codec=Flaky())
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, payload("a"))
    assert [f.rule for f in usher.run_due()] == ["RetryDecode"]
    clock.advance(timedelta(seconds=1))
    assert [f.rule for f in usher.run_due()] == ["DecodeEvent"]
    assert event.status is LogEventStatus.decoded and event.last_error == "schema lookup timed out"


# --------------------------------------------------------------------------
# Completion
# --------------------------------------------------------------------------


@pytest.mark.allium("rule-success.CompleteOnOutcome")
def test_complete_on_outcome() -> None:
    usher, clock, _ = make_usher()
    partition = flowing_partition(usher)
    event = decoded_event(usher, partition)
    clock.advance(timedelta(milliseconds=3))
    outcome = make_outcome(event.request)
    assert usher.complete_on_outcome(outcome) is event
    assert event.status is LogEventStatus.completed
    assert event.completed_at == clock.now
    assert partition.in_flight == 0


@pytest.mark.allium("rule-failure.CompleteOnOutcome.1")
def test_complete_on_outcome_ignores_rest_outcomes() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = decoded_event(usher, partition)
    with pytest.raises(Rejected) as exc:
        usher.complete_on_outcome(make_outcome(rest_request()))
    assert_rejected(exc, 1)
    assert event.status is LogEventStatus.decoded and partition.in_flight == 1


@pytest.mark.allium("rule-failure.CompleteOnOutcome.2")
def test_complete_on_outcome_rejected_without_partition() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = decoded_event(usher, partition)
    with pytest.raises(Rejected) as exc:
        usher.complete_on_outcome(make_outcome(log_request(5, 0)))
    assert_rejected(exc, 2)
    assert event.status is LogEventStatus.decoded and partition.in_flight == 1


@pytest.mark.allium("rule-failure.CompleteOnOutcome.3")
def test_complete_on_outcome_rejected_without_event() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = decoded_event(usher, partition)
    with pytest.raises(Rejected) as exc:
        usher.complete_on_outcome(make_outcome(log_request(0, 1)))
    assert_rejected(exc, 3)
    assert event.status is LogEventStatus.decoded and partition.in_flight == 1


@pytest.mark.allium("rule-failure.CompleteOnOutcome.4")
def test_complete_on_outcome_rejected_unless_decoded() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    event = usher.fetch_event(partition, 0, payload("a"))
    with pytest.raises(Rejected) as exc:
        usher.complete_on_outcome(make_outcome(log_request(0, 0)))
    assert_rejected(exc, 4)
    assert event.status is LogEventStatus.fetched and event.completed_at is None
    assert partition.in_flight == 1


@pytest.mark.allium("rule-success.CompleteLedgerDuplicate")
def test_complete_ledger_duplicate() -> None:
    usher, clock, _ = make_usher()
    partition = flowing_partition(usher)
    event = decoded_event(usher, partition)
    clock.advance(timedelta(milliseconds=2))
    proposal = make_proposal(event.request, ProposalStatus.duplicate)
    assert usher.complete_ledger_duplicate(proposal) is event
    assert event.status is LogEventStatus.completed
    assert event.completed_at == clock.now
    assert partition.in_flight == 0
    # Only the `becomes duplicate` transition triggers it.
    other = decoded_event(usher, partition, "b")
    with pytest.raises(Rejected):
        usher.complete_ledger_duplicate(make_proposal(other.request, ProposalStatus.pending))
    assert other.status is LogEventStatus.decoded


@pytest.mark.allium("rule-failure.CompleteLedgerDuplicate.1", "rule-failure.CompleteLedgerDuplicate.2",
                    "rule-failure.CompleteLedgerDuplicate.3", "rule-failure.CompleteLedgerDuplicate.4")
def test_complete_ledger_duplicate_rejections() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    decoded = decoded_event(usher, partition, "a")
    fetched = usher.fetch_event(partition, 1, payload("b"))
    cases = [
        (rest_request(), 1),  # proposal.request.channel != log
        (log_request(5, 0), 2),  # no Partition{number}
        (log_request(0, 9), 3),  # no LogEvent at that offset
        (log_request(0, 1, "b"), 4),  # the event is only fetched
    ]
    for request, clause in cases:
        with pytest.raises(Rejected) as exc:
            usher.complete_ledger_duplicate(make_proposal(request))
        assert_rejected(exc, clause)
    assert decoded.status is LogEventStatus.decoded and fetched.status is LogEventStatus.fetched
    assert partition.in_flight == 2


@pytest.mark.allium("rule-success.CompleteWardenDuplicate", "rule-entity-creation.CompleteWardenDuplicate.1",
                    "rule-branch.CompleteWardenDuplicate.1")
def test_complete_warden_duplicate_records_position_once() -> None:
    usher, clock, port = make_usher()
    partition = flowing_partition(usher, 2)
    first = decoded_event(usher, partition, "a")
    clock.advance(timedelta(milliseconds=4))
    # Branch taken: no Position yet -> one is created as a duplicate.
    assert usher.complete_warden_duplicate(first.request) is first
    position = port.position(2, 0)
    assert isinstance(position, Position)
    assert position.partition == 2 and position.offset == 0
    assert position.disposition is Disposition.duplicate
    assert position.recorded_at == clock.now
    assert first.status is LogEventStatus.completed and first.completed_at == clock.now
    assert partition.in_flight == 0
    # Branch not taken: a Position already exists -> left as it is.
    second = decoded_event(usher, partition, "b")
    existing = port.create_position(2, 1, Disposition.committed, T0)
    usher.complete_warden_duplicate(second.request)
    assert port.position(2, 1) is existing and existing.disposition is Disposition.committed
    assert len(port.positions) == 2
    assert second.status is LogEventStatus.completed


@pytest.mark.allium("rule-failure.CompleteWardenDuplicate.1", "rule-failure.CompleteWardenDuplicate.2",
                    "rule-failure.CompleteWardenDuplicate.3", "rule-failure.CompleteWardenDuplicate.4")
def test_complete_warden_duplicate_rejections() -> None:
    usher, _, port = make_usher()
    partition = flowing_partition(usher)
    decoded = decoded_event(usher, partition, "a")
    fetched = usher.fetch_event(partition, 1, payload("b"))
    cases = [(rest_request(), 1), (log_request(5, 0), 2), (log_request(0, 9), 3), (log_request(0, 1, "b"), 4)]
    for request, clause in cases:
        with pytest.raises(Rejected) as exc:
            usher.complete_warden_duplicate(request)
        assert_rejected(exc, clause)
    assert port.positions == {}
    assert decoded.status is LogEventStatus.decoded and fetched.status is LogEventStatus.fetched
    assert partition.in_flight == 2


@pytest.mark.allium("rule-success.QuarantineReusedRequestId", "rule-entity-creation.QuarantineReusedRequestId.1")
def test_quarantine_reused_request_id() -> None:
    usher, clock, port = make_usher()
    partition = flowing_partition(usher, 3)
    event = decoded_event(usher, partition, "a")
    clock.advance(timedelta(milliseconds=5))
    letter = usher.quarantine_reused_request_id(event.request, rest_request("a"))
    assert port.dead_letters == [letter]
    assert letter.partition == 3 and letter.offset == 0
    assert letter.payload_digest == event.payload_digest
    assert letter.cause == REUSED_REQUEST_ID_CAUSE == "request id reused with a different body"
    assert letter.attempts == 1
    assert letter.quarantined_at == clock.now
    assert letter.status is DeadLetterStatus.held
    assert event.status is LogEventStatus.quarantined
    assert event.request is None
    assert event.quarantined_at == clock.now
    assert partition.in_flight == 0


@pytest.mark.allium("rule-failure.QuarantineReusedRequestId.1", "rule-failure.QuarantineReusedRequestId.2",
                    "rule-failure.QuarantineReusedRequestId.3", "rule-failure.QuarantineReusedRequestId.4")
def test_quarantine_reused_request_id_rejections() -> None:
    usher, _, port = make_usher()
    partition = flowing_partition(usher)
    decoded = decoded_event(usher, partition, "a")
    fetched = usher.fetch_event(partition, 1, payload("b"))
    cases = [(rest_request(), 1), (log_request(5, 0), 2), (log_request(0, 9), 3), (log_request(0, 1, "b"), 4)]
    for request, clause in cases:
        with pytest.raises(Rejected) as exc:
            usher.quarantine_reused_request_id(request, rest_request())
        assert_rejected(exc, clause)
    assert port.dead_letters == []
    assert decoded.status is LogEventStatus.decoded and decoded.request is not None
    assert fetched.status is LogEventStatus.fetched
    assert partition.in_flight == 2


# --------------------------------------------------------------------------
# Back-pressure and broker offsets
# --------------------------------------------------------------------------


@pytest.mark.allium("rule-success.ThrottlePartition", "when-set.ThrottlePartition.Partition.throttled_at")
def test_throttle_partition_at_high_watermark() -> None:
    usher, clock, _ = make_usher(high_watermark=3, low_watermark=1)
    partition = flowing_partition(usher)
    usher.fetch_event(partition, 0, payload("a"))
    usher.fetch_event(partition, 1, payload("b"))
    assert partition.status is PartitionStatus.flowing and not partition.is_saturated
    assert partition.throttled_at is None
    clock.advance(timedelta(milliseconds=8))
    usher.fetch_event(partition, 2, payload("c"))  # is_saturated becomes true
    assert partition.is_saturated
    assert partition.status is PartitionStatus.throttled
    assert partition.throttled_at == clock.now
    # Nothing more is read while throttled; the log is the buffer.
    with pytest.raises(Rejected):
        usher.fetch_event(partition, 3, payload("d"))
    assert partition.in_flight == 3
    # The rule function itself, on a partition driven to saturation by hand.
    other = flowing_partition(usher, 1)
    other.in_flight = 3
    usher.throttle_partition(other)
    assert other.status is PartitionStatus.throttled and other.throttled_at == clock.now


@pytest.mark.allium("rule-failure.ThrottlePartition.1")
def test_throttle_partition_rejected_unless_flowing() -> None:
    usher, _, _ = make_usher(high_watermark=2, low_watermark=0)
    partition = flowing_partition(usher)
    usher.fetch_event(partition, 0, payload("a"))
    usher.fetch_event(partition, 1, payload("b"))
    throttled_at = partition.throttled_at
    assert partition.status is PartitionStatus.throttled and partition.is_saturated
    with pytest.raises(Rejected) as exc:
        usher.throttle_partition(partition)
    assert_rejected(exc, 1)
    assert partition.throttled_at == throttled_at


@pytest.mark.allium("rule-success.ResumePartition", "when-clear.ResumePartition.Partition.throttled_at")
def test_resume_partition_at_low_watermark() -> None:
    usher, _, _ = make_usher(high_watermark=3, low_watermark=1)
    partition = flowing_partition(usher)
    events = [decoded_event(usher, partition, f"r{i}") if i < 2 else None for i in range(2)]
    last = usher.fetch_event(partition, 2, payload("r2"))
    usher.decode_event(last)
    assert partition.status is PartitionStatus.throttled and partition.throttled_at is not None
    usher.complete_on_outcome(make_outcome(events[0].request))  # in_flight 2: not drained yet
    assert partition.status is PartitionStatus.throttled and partition.throttled_at is not None
    usher.complete_on_outcome(make_outcome(events[1].request))  # in_flight 1: is_drained
    assert partition.is_drained
    assert partition.status is PartitionStatus.flowing
    assert partition.throttled_at is None
    usher.fetch_event(partition, 3, payload("r3"))  # fetching resumed where it paused
    assert partition.fetch_offset == 4


@pytest.mark.allium("rule-failure.ResumePartition.1")
def test_resume_partition_rejected_unless_throttled() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    assert partition.is_drained
    with pytest.raises(Rejected) as exc:
        usher.resume_partition(partition)
    assert_rejected(exc, 1)
    assert partition.status is PartitionStatus.flowing and partition.throttled_at is None
    idle = usher.partition_assigned(1)
    with pytest.raises(Rejected):
        usher.resume_partition(idle)
    assert idle.status is PartitionStatus.idle


@pytest.mark.allium("rule-success.CommitBrokerOffset")
def test_commit_broker_offset_up_to_checkpoint() -> None:
    usher, clock, port = make_usher()
    partition = usher.partition_assigned(0)
    partition.checkpoint.next_offset = 12  # the Ledger advanced the checkpoint
    clock.advance(timedelta(seconds=5))
    assert usher.commit_broker_offset(partition) == 12
    assert partition.broker_committed_offset == 12
    assert partition.next_broker_commit_at == clock.now + timedelta(seconds=5)
    usher.check_broker_offset_trails_checkpoint()


@pytest.mark.allium("temporal.CommitBrokerOffset")
def test_commit_broker_offset_fires_at_deadline_once() -> None:
    usher, clock, _ = make_usher()
    partition = usher.partition_assigned(0)
    partition.checkpoint.next_offset = 3
    clock.advance(timedelta(seconds=4, milliseconds=999))
    assert usher.run_due() == []
    with pytest.raises(Rejected) as exc:
        usher.commit_broker_offset(partition)
    assert_rejected(exc, 0)
    assert partition.broker_committed_offset == 0
    clock.advance(timedelta(milliseconds=1))
    assert [(f.rule, f.subject) for f in usher.run_due()] == [("CommitBrokerOffset", partition)]
    assert partition.broker_committed_offset == 3
    partition.checkpoint.next_offset = 4
    assert usher.run_due() == []  # the deadline moved: no re-fire at the same instant
    assert partition.broker_committed_offset == 3


@pytest.mark.allium("rule-failure.CommitBrokerOffset.1")
def test_commit_broker_offset_rejected_when_caught_up() -> None:
    usher, clock, port = make_usher()
    port.create_checkpoint(0, 8, T0)
    partition = usher.partition_assigned(0)
    clock.advance(timedelta(seconds=5))
    due = partition.next_broker_commit_at
    with pytest.raises(Rejected) as exc:
        usher.commit_broker_offset(partition)
    assert_rejected(exc, 1)
    assert partition.broker_committed_offset == 8 and partition.next_broker_commit_at == due


@pytest.mark.allium("rule-success.DeferBrokerCommit")
def test_defer_broker_commit_when_caught_up() -> None:
    usher, clock, port = make_usher()
    port.create_checkpoint(0, 8, T0)
    partition = usher.partition_assigned(0)
    clock.advance(timedelta(seconds=6))
    usher.defer_broker_commit(partition)
    assert partition.broker_committed_offset == 8
    assert partition.next_broker_commit_at == clock.now + timedelta(seconds=5)


@pytest.mark.allium("temporal.DeferBrokerCommit")
def test_defer_broker_commit_fires_at_deadline_once() -> None:
    usher, clock, _ = make_usher()
    partition = usher.partition_assigned(0)
    clock.advance(timedelta(seconds=4))
    assert usher.run_due() == []
    with pytest.raises(Rejected) as exc:
        usher.defer_broker_commit(partition)
    assert_rejected(exc, 0)
    clock.advance(timedelta(seconds=1))
    assert [f.rule for f in usher.run_due()] == ["DeferBrokerCommit"]
    assert partition.next_broker_commit_at == clock.now + timedelta(seconds=5)
    assert usher.run_due() == []
    clock.advance(timedelta(seconds=5))
    assert [f.rule for f in usher.run_due()] == ["DeferBrokerCommit"]


@pytest.mark.allium("rule-failure.DeferBrokerCommit.1")
def test_defer_broker_commit_rejected_when_behind() -> None:
    usher, clock, _ = make_usher()
    partition = usher.partition_assigned(0)
    partition.checkpoint.next_offset = 2
    clock.advance(timedelta(seconds=5))
    due = partition.next_broker_commit_at
    with pytest.raises(Rejected) as exc:
        usher.defer_broker_commit(partition)
    assert_rejected(exc, 1)
    assert partition.next_broker_commit_at == due and partition.broker_committed_offset == 0


# --------------------------------------------------------------------------
# Invariants: a scenario that exercises every state-changing rule
# --------------------------------------------------------------------------


def run_scenario(usher: Usher, clock: Clock, port: InMemoryLedgerPort) -> None:
    """Drive every rule, checking all invariants after each step."""
    usher.check_invariants()
    port.create_checkpoint(0, 0, T0)
    p0 = usher.partition_assigned(0)  # AssignPartition
    p1 = usher.partition_assigned(1)  # AssignNewPartition
    usher.check_invariants()
    node = Node(node_id="n1", status=NodeStatus.primary, last_heartbeat_at=T0, serving_epoch=1, promoted_at=T0)
    usher.start_consuming(node)  # StartConsuming + ResumeFromCheckpoint
    usher.check_invariants()
    for offset in range(3):  # FetchEvent up to saturation -> ThrottlePartition
        usher.fetch_event(p0, offset, payload(f"a{offset}"))
        usher.check_invariants()
    assert p0.status is PartitionStatus.throttled
    usher.fetch_event(p1, 0, BAD)
    usher.fetch_event(p1, 1, payload("b1"))
    usher.check_invariants()
    for _ in range(3):  # DecodeEvent / RetryDecode / QuarantinePoisonEvent / Commit / Defer
        usher.run_due()
        usher.check_invariants()
        clock.advance(timedelta(seconds=1))
    e0, e1, e2 = p0.events
    usher.complete_on_outcome(make_outcome(e0.request))  # CompleteOnOutcome
    usher.check_invariants()
    usher.complete_ledger_duplicate(make_proposal(e1.request))  # CompleteLedgerDuplicate -> ResumePartition
    usher.check_invariants()
    usher.quarantine_reused_request_id(e2.request, rest_request())  # QuarantineReusedRequestId
    usher.check_invariants()
    b1 = p1.event_at(1)
    usher.complete_warden_duplicate(b1.request)  # CompleteWardenDuplicate
    usher.check_invariants()
    p0.checkpoint.next_offset = 3  # the Ledger advances over the handled offsets
    clock.advance(timedelta(seconds=5))
    usher.run_due()  # CommitBrokerOffset / DeferBrokerCommit
    usher.check_invariants()
    usher.fetch_event(p0, 3, payload("a3"))
    usher.epoch_granted(EpochGrant(epoch=2, node_id="n2", granted_at=clock.now))  # Stop*Partitions
    usher.check_invariants()
    usher.start_consuming(node)
    usher.fetch_event(p0, 3, payload("a3"))  # re-read after resume: one event per offset
    usher.check_invariants()
    usher.revoke_partition(p1)  # RevokePartition
    usher.check_invariants()


@pytest.mark.allium("invariant.BrokerOffsetTrailsCheckpoint")
def test_invariant_broker_offset_trails_checkpoint() -> None:
    usher, clock, port = make_usher(high_watermark=3, low_watermark=1, max_decode_attempts=2)
    run_scenario(usher, clock, port)
    p0 = usher.partition(0)
    assert p0 is not None and p0.broker_committed_offset <= p0.checkpoint.next_offset
    p0.broker_committed_offset = p0.checkpoint.next_offset + 1
    with pytest.raises(InvariantViolation):
        usher.check_broker_offset_trails_checkpoint()


@pytest.mark.allium("invariant.CheckpointTrailsFetch")
def test_invariant_checkpoint_trails_fetch() -> None:
    usher, clock, port = make_usher(high_watermark=3, low_watermark=1, max_decode_attempts=2)
    run_scenario(usher, clock, port)
    p0 = usher.partition(0)
    assert p0 is not None and p0.status is not PartitionStatus.idle
    assert p0.checkpoint.next_offset <= p0.fetch_offset
    p0.checkpoint.next_offset = p0.fetch_offset + 1
    with pytest.raises(InvariantViolation):
        usher.check_checkpoint_trails_fetch()


@pytest.mark.allium("invariant.InFlightIsBounded")
def test_invariant_in_flight_is_bounded() -> None:
    usher, clock, port = make_usher(high_watermark=3, low_watermark=1, max_decode_attempts=2)
    run_scenario(usher, clock, port)
    p0 = usher.partition(0)
    assert p0 is not None and 0 <= p0.in_flight <= usher.config.high_watermark
    p0.in_flight = -1
    with pytest.raises(InvariantViolation):
        usher.check_in_flight_is_bounded()
    p0.in_flight = usher.config.high_watermark + 1
    with pytest.raises(InvariantViolation):
        usher.check_in_flight_is_bounded()


@pytest.mark.allium("invariant.OneEventPerOffset")
def test_invariant_one_event_per_offset() -> None:
    usher, clock, port = make_usher(high_watermark=3, low_watermark=1, max_decode_attempts=2)
    run_scenario(usher, clock, port)
    p0 = usher.partition(0)
    assert p0 is not None
    offsets = [e.offset for e in usher.log_events if e.partition is p0]
    assert len(offsets) == len(set(offsets))

    class Clash(Usher):
        @property
        def log_events(self) -> list[LogEvent]:
            events = super().log_events
            return events + events[:1]  # the same offset twice in one partition

    clash = Clash(clock=clock)
    part = flowing_partition(clash)
    clash.fetch_event(part, 0, payload("x"))
    with pytest.raises(InvariantViolation):
        clash.check_one_event_per_offset()


# --------------------------------------------------------------------------
# Surfaces
# --------------------------------------------------------------------------


@pytest.mark.allium("surface-actor.PartitionAssignment", "surface-provides.PartitionAssignment")
def test_partition_assignment_surface() -> None:
    usher, _, port = make_usher()
    port.create_checkpoint(1, 30, T0)
    surface = PartitionAssignment(usher)
    for stranger in (BrokerConsumer("another-group"), object()):
        with pytest.raises(AccessDenied):
            surface.provides(stranger)
        with pytest.raises(AccessDenied):
            surface.partition_assigned(stranger, 1)
    assert usher.partition(1) is None
    assert surface.provides(CONSUMER) == frozenset({"PartitionAssigned"})
    partition = surface.partition_assigned(CONSUMER, 1)
    # StartFromCheckpoint: the Ledger checkpoint, not any broker offset.
    assert partition.fetch_offset == 30 and partition.broker_committed_offset == 30
    fresh = surface.partition_assigned(CONSUMER, 2)
    assert fresh.fetch_offset == 0 and port.checkpoint(2) is fresh.checkpoint


@pytest.mark.allium("surface-actor.ConsumerFeed")
def test_consumer_feed_actor() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    feed = ConsumerFeed(usher)
    stranger = BrokerConsumer("someone-else")
    for call in (lambda: feed.exposes(stranger, partition), lambda: feed.provides(stranger, partition),
                 lambda: feed.event_fetched(stranger, partition, 0, payload("a")),
                 lambda: feed.partition_revoked(stranger, partition)):
        with pytest.raises(AccessDenied):
            call()
    assert partition.events == [] and usher.partition(0) is partition
    assert feed.exposes(CONSUMER, partition)["number"] == 0


@pytest.mark.allium("surface-exposure.ConsumerFeed")
def test_consumer_feed_exposure() -> None:
    usher, _, _ = make_usher(high_watermark=1, low_watermark=0)
    partition = flowing_partition(usher)
    feed = ConsumerFeed(usher)
    view = feed.exposes(CONSUMER, partition)
    assert view == {"number": 0, "status": PartitionStatus.flowing, "fetch_offset": 0, "in_flight": 0,
                    "broker_committed_offset": 0}
    assert "throttled_at" not in view
    feed.event_fetched(CONSUMER, partition, 0, payload("a"))
    view = feed.exposes(CONSUMER, partition)
    assert view["status"] is PartitionStatus.throttled
    assert view["throttled_at"] == partition.throttled_at == T0
    assert view["fetch_offset"] == 1 and view["in_flight"] == 1


@pytest.mark.allium("surface-provides.ConsumerFeed")
def test_consumer_feed_provides() -> None:
    usher, _, _ = make_usher(high_watermark=1, low_watermark=0)
    partition = usher.partition_assigned(0)
    feed = ConsumerFeed(usher)
    assert feed.provides(CONSUMER, partition) == frozenset({"PartitionRevoked"})  # idle
    with pytest.raises(AccessDenied):
        feed.event_fetched(CONSUMER, partition, 0, payload("a"))
    usher.resume_from_checkpoint(partition)
    assert feed.provides(CONSUMER, partition) == frozenset({"EventFetched", "PartitionRevoked"})
    event = feed.event_fetched(CONSUMER, partition, 0, payload("a"))
    assert event.offset == 0
    assert partition.status is PartitionStatus.throttled
    assert feed.provides(CONSUMER, partition) == frozenset({"PartitionRevoked"})
    feed.partition_revoked(CONSUMER, partition)
    assert usher.partition(0) is None


# --------------------------------------------------------------------------
# Against the Ledger unit's own store
# --------------------------------------------------------------------------


@pytest.mark.allium("rule-entity-creation.QuarantinePoisonEvent.1", "rule-entity-creation.CompleteWardenDuplicate.1",
                    "rule-success.CommitBrokerOffset")
def test_dead_letters_and_duplicates_advance_the_ledger_checkpoint() -> None:
    clock = Clock()
    store = LedgerStore(clock=clock)
    usher = Usher(clock=clock, config=Config(max_decode_attempts=1), ledger=LedgerStorePort(store))
    partition = flowing_partition(usher, 0)  # AssignNewPartition creates the store's checkpoint
    assert store.checkpoint(0) is partition.checkpoint and partition.checkpoint.next_offset == 0
    poison = usher.fetch_event(partition, 0, BAD)
    dup = usher.fetch_event(partition, 1, payload("a"))
    usher.run_due()  # offset 0 quarantined, offset 1 decoded
    assert poison.status is LogEventStatus.quarantined
    assert [d.offset for d in store.dead_letters] == [0] and store.dead_letters[0].attempts == 1
    # The Ledger records the dead letter's Position and advances the checkpoint.
    assert store.position(0, 0).disposition is Disposition.quarantined
    assert partition.checkpoint.next_offset == 1
    usher.complete_warden_duplicate(dup.request)
    assert store.position(0, 1).disposition is Disposition.duplicate
    assert partition.checkpoint.next_offset == 2
    clock.advance(timedelta(seconds=5))
    assert [f.rule for f in usher.run_due()] == ["CommitBrokerOffset"]
    assert partition.broker_committed_offset == 2
    usher.check_invariants()
    store.check_invariants()


@pytest.mark.allium("rule-entity-creation.DecodeEvent.1")
def test_log_fingerprint_is_cores_canonical_fingerprint() -> None:
    usher, _, _ = make_usher()
    partition = flowing_partition(usher)
    env = envelope("r-7", owner="alice", kind=OperationKind.open, amount_minor=0)
    event = usher.fetch_event(partition, 0, JsonEnvelopeCodec.encode(env))
    request = usher.decode_event(event)
    # Log and REST requests must fingerprint alike for the Warden's dedup.
    assert request.fingerprint == core_fingerprint(env)
    assert request.owner == "alice"


@pytest.mark.allium("rule-success.CompleteWardenDuplicate", "rule-success.QuarantineReusedRequestId")
def test_warden_events_drive_completion_and_quarantine() -> None:
    clock = Clock()
    store = LedgerStore(clock=clock)
    usher = Usher(clock=clock, ledger=LedgerStorePort(store))
    warden = Warden(store.journal, clock)
    warden.subscribe(usher.on_warden_event)
    usher.on_request_created = warden.on_request_created  # core/Request.created -> the Warden
    partition = flowing_partition(usher, 0)
    original = usher.fetch_event(partition, 0, payload("k"))
    retry = usher.fetch_event(partition, 1, payload("k"))  # same body: a duplicate
    reused = usher.fetch_event(partition, 2, payload("k", amount_minor=999))  # same id, new body
    usher.run_due()
    assert original.status is LogEventStatus.decoded  # admitted, awaiting its round
    assert retry.status is LogEventStatus.completed  # DuplicateResolved
    assert store.position(0, 1).disposition is Disposition.duplicate
    assert reused.status is LogEventStatus.quarantined  # RequestIdConflict
    assert [(d.offset, d.cause) for d in store.dead_letters] == [(2, REUSED_REQUEST_ID_CAUSE)]
    assert partition.in_flight == 1
    # Events about REST requests are not the Usher's: nothing changes.
    assert usher.on_warden_event(WardenDuplicateResolved(request=rest_request("k"))) is None
    assert partition.in_flight == 1
    usher.check_invariants()
