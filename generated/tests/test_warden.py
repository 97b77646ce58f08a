"""Tests for unit `warden` (warden.allium): idempotency and deduplication."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime, timedelta, timezone

import pytest

from ledger.core import (
    AccessDenied,
    Channel,
    Envelope,
    InvariantViolation,
    OperationKind,
    Outcome,
    Rejected,
    Request,
    TransitionRejected,
    Verdict,
    new_request,
    outcome_digest,
)
from ledger.ledger import EpochGrant, Journal, Proposal, ProposalStatus
from ledger.warden import (
    AnswerReplayed,
    Config,
    DedupEntry,
    DedupEntryCreated,
    DedupEntryStatus,
    DuplicateInFlight,
    DuplicateResolved,
    IndexSaturated,
    Rebuild,
    RebuildDone,
    RebuildLoader,
    RebuildStatus,
    RequestIdConflict,
    Warden,
    WardenRebuilt,
    check_dedup_entry_transition,
    check_dedup_entry_when_fields,
    check_index_is_bounded,
    check_one_entry_per_key,
    check_rebuild_transition,
    check_rebuild_when_fields,
    check_replayed_answer_is_the_committed_one,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=2)


class FakeClock:
    """Deterministic injected clock."""

    def __init__(self, start: datetime = T0) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, delta: timedelta) -> None:
        self.t += delta


def make_request(
    request_id: str = "r-1",
    amount: int = 100,
    client_id: str = "c-1",
    channel: Channel = Channel.rest,
    received_at: datetime = T0,
) -> Request:
    env = Envelope(
        request_id=request_id,
        client_id=client_id,
        kind=OperationKind.deposit,
        account_id="acc-1",
        amount_minor=amount,
    )
    return new_request(env, channel=channel, received_at=received_at)


def make_outcome(request: Request, committed_at: datetime = T0, sequence: int = 1, epoch: int = 1) -> Outcome:
    outcome = Outcome(
        request=request,
        request_id=request.request_id,
        client_id=request.client_id,
        kind=request.kind,
        verdict=Verdict.accepted,
        reason=None,
        account_id=request.account_id,
        counterparty_id=None,
        account_delta_minor=request.amount_minor,
        counterparty_delta_minor=0,
        digest="",
        epoch=epoch,
        sequence=sequence,
        committed_at=committed_at,
        applied=True,
    )
    outcome.digest = outcome_digest(outcome)
    return outcome


def make_warden(config: Config = Config(), epoch: int = 1, outcomes: dict | None = None) -> tuple[Warden, FakeClock, Journal]:
    clock = FakeClock()
    journal = Journal(epoch=epoch, primary_node_id="node-a", next_sequence=1)
    lookup = None
    if outcomes is not None:
        lookup = lambda c, r: outcomes.get((c, r))  # noqa: E731
    return Warden(journal, clock, config, outcome_lookup=lookup), clock, journal


def duplicate_proposal(request: Request) -> Proposal:
    return Proposal(
        request=request,
        attempt=1,
        epoch=1,
        digest="d",
        verdict=Verdict.accepted,
        reason=None,
        account_delta_minor=request.amount_minor,
        counterparty_delta_minor=0,
        expected_primary_version=1,
        expected_counter_version=0,
        status=ProposalStatus.duplicate,
    )


def answered_entry(warden: Warden, clock: FakeClock, request_id: str = "r-1") -> tuple[DedupEntry, Outcome]:
    req = make_request(request_id)
    entry = warden.admit_request(req)
    outcome = make_outcome(req, committed_at=clock())
    warden.record_answer(outcome)
    return entry, outcome


# Entities -----------------------------------------------------------------------------


@pytest.mark.allium("entity-fields.DedupEntry")
def test_dedup_entry_fields() -> None:
    hints = typing.get_type_hints(DedupEntry)
    expected = {
        "client_id": str,
        "request_id": str,
        "fingerprint": str,
        "request": Request,
        "admitted_at": datetime,
        "replays": int,
        "status": DedupEntryStatus,
        "outcome": Outcome | None,
        "answered_at": datetime | None,
        "expires_at": datetime | None,
    }
    for name, tp in expected.items():
        assert hints[name] == tp, name
    assert {s.value for s in DedupEntryStatus} == {"in_flight", "answered"}
    warden, clock, _ = make_warden()
    req = make_request()
    entry = warden.admit_request(req)
    assert (entry.client_id, entry.request_id, entry.fingerprint) == ("c-1", "r-1", req.fingerprint)
    assert entry.request is req and entry.admitted_at == T0 and entry.replays == 0
    assert entry.status == DedupEntryStatus.in_flight


@pytest.mark.allium(
    "when-presence.DedupEntry.outcome",
    "when-presence.DedupEntry.answered_at",
    "when-presence.DedupEntry.expires_at",
)
def test_dedup_entry_answer_fields_present_only_when_answered() -> None:
    warden, clock, _ = make_warden()
    req = make_request()
    entry = warden.admit_request(req)
    assert entry.outcome is None and entry.answered_at is None and entry.expires_at is None
    check_dedup_entry_when_fields(entry)
    clock.advance(timedelta(seconds=3))
    outcome = make_outcome(req, committed_at=clock())
    warden.record_answer(outcome)
    assert entry.status == DedupEntryStatus.answered
    assert entry.outcome is outcome
    assert entry.answered_at == T0 + timedelta(seconds=3)
    assert entry.expires_at == entry.answered_at + WINDOW
    check_dedup_entry_when_fields(entry)
    leaked = warden.admit_request(make_request("r-2"))
    leaked.expires_at = T0
    with pytest.raises(InvariantViolation):
        check_dedup_entry_when_fields(leaked)
    leaked.expires_at = None
    leaked.outcome = outcome
    with pytest.raises(InvariantViolation):
        check_dedup_entry_when_fields(leaked)
    leaked.outcome = None
    leaked.answered_at = T0
    with pytest.raises(InvariantViolation):
        check_dedup_entry_when_fields(leaked)


@pytest.mark.allium("transition-edge.DedupEntry.in_flight.answered")
def test_dedup_entry_in_flight_to_answered_via_record_answer() -> None:
    warden, clock, _ = make_warden()
    req = make_request()
    entry = warden.admit_request(req)
    assert entry.status == DedupEntryStatus.in_flight
    warden.record_answer(make_outcome(req))
    assert entry.status == DedupEntryStatus.answered
    check_dedup_entry_transition(DedupEntryStatus.in_flight, DedupEntryStatus.answered)


@pytest.mark.allium("transition-rejected.DedupEntry.status")
def test_dedup_entry_undeclared_transitions_rejected() -> None:
    with pytest.raises(TransitionRejected):
        check_dedup_entry_transition(DedupEntryStatus.answered, DedupEntryStatus.in_flight)
    with pytest.raises(TransitionRejected):
        check_dedup_entry_transition(DedupEntryStatus.in_flight, DedupEntryStatus.in_flight)
    warden, clock, _ = make_warden()
    entry, _ = answered_entry(warden, clock)
    with pytest.raises(TransitionRejected):
        entry.status = DedupEntryStatus.in_flight
    assert entry.status == DedupEntryStatus.answered


@pytest.mark.allium("transition-terminal.DedupEntry.status")
def test_dedup_entry_answered_is_terminal() -> None:
    for target in DedupEntryStatus:
        with pytest.raises(TransitionRejected):
            check_dedup_entry_transition(DedupEntryStatus.answered, target)
    warden, clock, _ = make_warden()
    entry, outcome = answered_entry(warden, clock)
    with pytest.raises(Rejected):
        warden.record_answer(outcome)
    assert entry.status == DedupEntryStatus.answered and entry.outcome is outcome


@pytest.mark.allium("entity-fields.Rebuild")
def test_rebuild_fields() -> None:
    hints = typing.get_type_hints(Rebuild)
    expected = {
        "epoch": int,
        "node_id": str,
        "started_at": datetime,
        "status": RebuildStatus,
        "restored": int | None,
        "finished_at": datetime | None,
    }
    for name, tp in expected.items():
        assert hints[name] == tp, name
    assert {s.value for s in RebuildStatus} == {"loading", "done"}
    warden, clock, _ = make_warden(epoch=4)
    rebuild = warden.start_rebuild(EpochGrant(epoch=4, node_id="node-b", granted_at=T0))
    assert (rebuild.epoch, rebuild.node_id, rebuild.started_at, rebuild.status) == (
        4,
        "node-b",
        T0,
        RebuildStatus.loading,
    )


@pytest.mark.allium("when-presence.Rebuild.restored", "when-presence.Rebuild.finished_at")
def test_rebuild_done_fields_present_only_when_done() -> None:
    warden, clock, _ = make_warden(epoch=2)
    rebuild = warden.start_rebuild(EpochGrant(epoch=2, node_id="node-a", granted_at=T0))
    assert rebuild.restored is None and rebuild.finished_at is None
    check_rebuild_when_fields(rebuild)
    clock.advance(timedelta(seconds=1))
    warden.finish_rebuild(rebuild, 7)
    assert rebuild.status == RebuildStatus.done
    assert rebuild.restored == 7 and rebuild.finished_at == T0 + timedelta(seconds=1)
    check_rebuild_when_fields(rebuild)
    bad = Rebuild(epoch=2, node_id="n", started_at=T0, restored=3)
    with pytest.raises(InvariantViolation):
        check_rebuild_when_fields(bad)
    bad = Rebuild(epoch=2, node_id="n", started_at=T0, finished_at=T0)
    with pytest.raises(InvariantViolation):
        check_rebuild_when_fields(bad)


@pytest.mark.allium("transition-edge.Rebuild.loading.done")
def test_rebuild_loading_to_done_via_finish_rebuild() -> None:
    warden, clock, _ = make_warden(epoch=3)
    rebuild = warden.start_rebuild(EpochGrant(epoch=3, node_id="node-a", granted_at=T0))
    assert rebuild.status == RebuildStatus.loading
    warden.finish_rebuild(rebuild, 0)
    assert rebuild.status == RebuildStatus.done
    assert any(isinstance(e, RebuildDone) and e.rebuild is rebuild for e in warden.events)


@pytest.mark.allium("transition-rejected.Rebuild.status")
def test_rebuild_undeclared_transitions_rejected() -> None:
    with pytest.raises(TransitionRejected):
        check_rebuild_transition(RebuildStatus.done, RebuildStatus.loading)
    with pytest.raises(TransitionRejected):
        check_rebuild_transition(RebuildStatus.loading, RebuildStatus.loading)
    rebuild = Rebuild(epoch=1, node_id="n", started_at=T0)
    rebuild.status = RebuildStatus.done
    with pytest.raises(TransitionRejected):
        rebuild.status = RebuildStatus.loading
    assert rebuild.status == RebuildStatus.done


@pytest.mark.allium("transition-terminal.Rebuild.status")
def test_rebuild_done_is_terminal() -> None:
    for target in RebuildStatus:
        with pytest.raises(TransitionRejected):
            check_rebuild_transition(RebuildStatus.done, target)
    warden, clock, _ = make_warden(epoch=1)
    rebuild = warden.start_rebuild(EpochGrant(epoch=1, node_id="node-a", granted_at=T0))
    warden.finish_rebuild(rebuild, 2)
    with pytest.raises(Rejected):
        warden.finish_rebuild(rebuild, 5)
    assert rebuild.status == RebuildStatus.done and rebuild.restored == 2


# Config -------------------------------------------------------------------------------


@pytest.mark.allium("config-default.dedup_window")
def test_config_default_dedup_window() -> None:
    cfg = Config()
    assert cfg.dedup_window == timedelta(minutes=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dedup_window = timedelta(0)  # type: ignore[misc]
    warden, clock, _ = make_warden()
    entry, _ = answered_entry(warden, clock)
    assert entry.expires_at - entry.answered_at == cfg.dedup_window


@pytest.mark.allium("config-default.max_entries")
def test_config_default_max_entries() -> None:
    cfg = Config()
    assert cfg.max_entries == 1_500_000
    check_index_is_bounded(cfg.max_entries + 1, cfg)
    with pytest.raises(InvariantViolation):
        check_index_is_bounded(cfg.max_entries + 2, cfg)


# Classification -----------------------------------------------------------------------


@pytest.mark.allium("rule-success.AdmitRequest", "rule-entity-creation.AdmitRequest.1")
def test_admit_request_creates_in_flight_entry() -> None:
    warden, clock, _ = make_warden()
    seen: list[object] = []
    warden.subscribe(seen.append)
    req = make_request()
    entry = warden.on_request_created(req)
    assert isinstance(entry, DedupEntry)
    assert warden.entry("c-1", "r-1") is entry
    assert entry.client_id == req.client_id
    assert entry.request_id == req.request_id
    assert entry.fingerprint == req.fingerprint
    assert entry.request is req
    assert entry.admitted_at == clock()
    assert entry.replays == 0
    assert entry.status == DedupEntryStatus.in_flight
    assert seen == [DedupEntryCreated(entry)]
    warden.check_invariants()


@pytest.mark.allium("rule-failure.AdmitRequest.1")
def test_admit_request_rejected_when_key_exists() -> None:
    warden, clock, _ = make_warden()
    first = warden.admit_request(make_request())
    with pytest.raises(Rejected) as info:
        warden.admit_request(make_request())
    assert (info.value.rule, info.value.clause) == ("AdmitRequest", 1)
    assert warden.count == 1 and warden.entry("c-1", "r-1") is first


@pytest.mark.allium(
    "rule-success.ReplayAnswer",
    "rule-chained.ReplayAnswer.AnswerReplayed",
    "rule-chained.ReplayAnswer.DuplicateResolved",
)
def test_replay_answer_replays_stored_outcome() -> None:
    warden, clock, _ = make_warden()
    entry, outcome = answered_entry(warden, clock)
    # Downstream consumers (api AnswerReplayedSubmission, usher
    # CompleteWardenDuplicate) are stood in for by a listener.
    replayed: list[tuple[Request, Outcome]] = []
    resolved: list[Request] = []

    def downstream(event: object) -> None:
        if isinstance(event, AnswerReplayed):
            replayed.append((event.request, event.outcome))
        elif isinstance(event, DuplicateResolved):
            resolved.append(event.request)

    warden.subscribe(downstream)
    clock.advance(timedelta(seconds=30))
    retry = make_request(channel=Channel.log, received_at=clock())
    result = warden.on_request_created(retry)
    assert isinstance(result, AnswerReplayed)
    assert replayed == [(retry, outcome)]
    assert resolved == [retry]
    # Byte for byte: the original committed_at and sequence, not a new answer.
    assert replayed[0][1].committed_at == T0 and replayed[0][1].sequence == 1
    assert entry.replays == 1
    warden.check_invariants()


@pytest.mark.allium("rule-failure.ReplayAnswer.1")
def test_replay_answer_requires_entry() -> None:
    warden, clock, _ = make_warden()
    with pytest.raises(Rejected) as info:
        warden.replay_answer(make_request())
    assert (info.value.rule, info.value.clause) == ("ReplayAnswer", 1)
    assert warden.events == []


@pytest.mark.allium("rule-failure.ReplayAnswer.2")
def test_replay_answer_requires_same_fingerprint() -> None:
    warden, clock, _ = make_warden()
    entry, _ = answered_entry(warden, clock)
    with pytest.raises(Rejected) as info:
        warden.replay_answer(make_request(amount=999))
    assert (info.value.rule, info.value.clause) == ("ReplayAnswer", 2)
    assert entry.replays == 0


@pytest.mark.allium("rule-failure.ReplayAnswer.3")
def test_replay_answer_requires_answered() -> None:
    warden, clock, _ = make_warden()
    entry = warden.admit_request(make_request())
    with pytest.raises(Rejected) as info:
        warden.replay_answer(make_request())
    assert (info.value.rule, info.value.clause) == ("ReplayAnswer", 3)
    assert entry.replays == 0 and entry.status == DedupEntryStatus.in_flight


@pytest.mark.allium(
    "rule-success.HoldDuplicateInFlight",
    "rule-chained.HoldDuplicateInFlight.DuplicateInFlight",
    "rule-chained.HoldDuplicateInFlight.DuplicateResolved",
)
def test_hold_duplicate_in_flight() -> None:
    warden, clock, _ = make_warden()
    original = make_request()
    entry = warden.on_request_created(original)
    pending: list[tuple[Request, Request]] = []
    resolved: list[Request] = []

    def downstream(event: object) -> None:
        if isinstance(event, DuplicateInFlight):
            pending.append((event.request, event.original))
        elif isinstance(event, DuplicateResolved):
            resolved.append(event.request)

    warden.subscribe(downstream)
    dup = make_request(channel=Channel.log)
    result = warden.on_request_created(dup)
    assert isinstance(result, DuplicateInFlight)
    assert pending == [(dup, original)]
    assert resolved == [dup]
    assert entry.replays == 1 and entry.status == DedupEntryStatus.in_flight
    assert warden.count == 1


@pytest.mark.allium("rule-failure.HoldDuplicateInFlight.1")
def test_hold_duplicate_requires_entry() -> None:
    warden, clock, _ = make_warden()
    with pytest.raises(Rejected) as info:
        warden.hold_duplicate_in_flight(make_request())
    assert (info.value.rule, info.value.clause) == ("HoldDuplicateInFlight", 1)
    assert warden.count == 0


@pytest.mark.allium("rule-failure.HoldDuplicateInFlight.2")
def test_hold_duplicate_requires_same_fingerprint() -> None:
    warden, clock, _ = make_warden()
    entry = warden.admit_request(make_request())
    with pytest.raises(Rejected) as info:
        warden.hold_duplicate_in_flight(make_request(amount=5))
    assert (info.value.rule, info.value.clause) == ("HoldDuplicateInFlight", 2)
    assert entry.replays == 0


@pytest.mark.allium("rule-failure.HoldDuplicateInFlight.3")
def test_hold_duplicate_requires_in_flight() -> None:
    warden, clock, _ = make_warden()
    entry, _ = answered_entry(warden, clock)
    with pytest.raises(Rejected) as info:
        warden.hold_duplicate_in_flight(make_request())
    assert (info.value.rule, info.value.clause) == ("HoldDuplicateInFlight", 3)
    assert entry.replays == 0


@pytest.mark.allium("rule-success.RejectReusedRequestId", "rule-chained.RejectReusedRequestId.RequestIdConflict")
def test_reject_reused_request_id() -> None:
    warden, clock, _ = make_warden()
    original = make_request(amount=100)
    entry = warden.on_request_created(original)
    conflicts: list[tuple[Request, Request]] = []
    warden.subscribe(
        lambda e: conflicts.append((e.request, e.original)) if isinstance(e, RequestIdConflict) else None
    )
    reused = make_request(amount=200)
    result = warden.on_request_created(reused)
    assert isinstance(result, RequestIdConflict)
    assert conflicts == [(reused, original)]
    # Never evaluated, the original is unaffected.
    assert warden.entry("c-1", "r-1") is entry and entry.request is original
    assert entry.replays == 0 and entry.fingerprint == original.fingerprint
    assert not any(isinstance(e, DuplicateResolved) for e in warden.events)


@pytest.mark.allium("rule-failure.RejectReusedRequestId.1")
def test_reject_reused_requires_entry() -> None:
    warden, clock, _ = make_warden()
    with pytest.raises(Rejected) as info:
        warden.reject_reused_request_id(make_request())
    assert (info.value.rule, info.value.clause) == ("RejectReusedRequestId", 1)
    assert warden.events == []


@pytest.mark.allium("rule-failure.RejectReusedRequestId.2")
def test_reject_reused_requires_different_fingerprint() -> None:
    warden, clock, _ = make_warden()
    warden.admit_request(make_request())
    with pytest.raises(Rejected) as info:
        warden.reject_reused_request_id(make_request())
    assert (info.value.rule, info.value.clause) == ("RejectReusedRequestId", 2)
    assert not any(isinstance(e, RequestIdConflict) for e in warden.events)


# Answers and expiry ---------------------------------------------------------------------


@pytest.mark.allium("rule-success.RecordAnswer")
def test_record_answer() -> None:
    warden, clock, _ = make_warden()
    req = make_request()
    entry = warden.admit_request(req)
    clock.advance(timedelta(seconds=2))
    outcome = make_outcome(req, committed_at=clock())
    assert warden.record_answer(outcome) is entry
    assert entry.status == DedupEntryStatus.answered
    assert entry.outcome is outcome
    assert entry.answered_at == clock()
    assert entry.expires_at == clock() + Config().dedup_window
    warden.check_invariants()


@pytest.mark.allium("rule-failure.RecordAnswer.1")
def test_record_answer_requires_entry() -> None:
    warden, clock, _ = make_warden()
    with pytest.raises(Rejected) as info:
        warden.record_answer(make_outcome(make_request()))
    assert (info.value.rule, info.value.clause) == ("RecordAnswer", 1)
    assert warden.count == 0


@pytest.mark.allium("rule-failure.RecordAnswer.2")
def test_record_answer_requires_in_flight() -> None:
    warden, clock, _ = make_warden()
    entry, first = answered_entry(warden, clock)
    clock.advance(timedelta(seconds=5))
    with pytest.raises(Rejected) as info:
        warden.record_answer(make_outcome(entry.request, committed_at=clock(), sequence=9))
    assert (info.value.rule, info.value.clause) == ("RecordAnswer", 2)
    assert entry.outcome is first and entry.answered_at == T0


@pytest.mark.allium("rule-success.RecordPriorAnswer")
def test_record_prior_answer() -> None:
    earlier = make_request()
    prior = make_outcome(earlier, committed_at=T0 - timedelta(minutes=10), sequence=3)
    warden, clock, _ = make_warden(outcomes={("c-1", "r-1"): prior})
    clock.advance(timedelta(seconds=1))
    retry = make_request(received_at=clock())
    entry = warden.admit_request(retry)
    proposal = duplicate_proposal(retry)
    assert proposal.status == ProposalStatus.duplicate
    warden.record_prior_answer(proposal)
    assert entry.status == DedupEntryStatus.answered
    assert entry.outcome is prior
    assert entry.answered_at == clock()
    assert entry.expires_at == clock() + WINDOW
    # Explicitly passed prior outcomes work too.
    other = make_request("r-2")
    e2 = warden.admit_request(other)
    p2 = make_outcome(other, sequence=4)
    warden.record_prior_answer(duplicate_proposal(other), p2)
    assert e2.outcome is p2
    warden.check_invariants()


@pytest.mark.allium("rule-failure.RecordPriorAnswer.1")
def test_record_prior_answer_requires_entry() -> None:
    req = make_request()
    warden, clock, _ = make_warden(outcomes={("c-1", "r-1"): make_outcome(req)})
    with pytest.raises(Rejected) as info:
        warden.record_prior_answer(duplicate_proposal(req))
    assert (info.value.rule, info.value.clause) == ("RecordPriorAnswer", 1)
    assert warden.count == 0


@pytest.mark.allium("rule-failure.RecordPriorAnswer.2")
def test_record_prior_answer_requires_prior_outcome() -> None:
    warden, clock, _ = make_warden(outcomes={})
    req = make_request()
    entry = warden.admit_request(req)
    with pytest.raises(Rejected) as info:
        warden.record_prior_answer(duplicate_proposal(req))
    assert (info.value.rule, info.value.clause) == ("RecordPriorAnswer", 2)
    assert entry.status == DedupEntryStatus.in_flight and entry.outcome is None


@pytest.mark.allium("rule-failure.RecordPriorAnswer.3")
def test_record_prior_answer_requires_in_flight() -> None:
    req = make_request()
    prior = make_outcome(req, sequence=2)
    warden, clock, _ = make_warden(outcomes={("c-1", "r-1"): prior})
    entry = warden.admit_request(req)
    own = make_outcome(req, sequence=5)
    warden.record_answer(own)
    with pytest.raises(Rejected) as info:
        warden.record_prior_answer(duplicate_proposal(req))
    assert (info.value.rule, info.value.clause) == ("RecordPriorAnswer", 3)
    assert entry.outcome is own


@pytest.mark.allium("rule-success.EntryExpires")
def test_entry_expires_removes_answered_entry() -> None:
    warden, clock, _ = make_warden()
    entry, _ = answered_entry(warden, clock)
    clock.advance(WINDOW)
    warden.entry_expires(entry)
    assert warden.entry("c-1", "r-1") is None
    assert warden.count == 0
    # The key is admitted afresh after expiry.
    again = warden.on_request_created(make_request())
    assert isinstance(again, DedupEntry) and again is not entry


@pytest.mark.allium("temporal.EntryExpires")
def test_entry_expires_at_deadline_not_before_and_once() -> None:
    warden, clock, _ = make_warden()
    entry, _ = answered_entry(warden, clock)
    deadline = entry.expires_at
    clock.advance(WINDOW - timedelta(milliseconds=1))
    assert warden.tick() == []
    assert warden.entry("c-1", "r-1") is entry
    with pytest.raises(Rejected):
        warden.entry_expires(entry)
    clock.t = deadline
    assert warden.tick() == [entry]
    assert warden.entry("c-1", "r-1") is None
    # Does not re-fire.
    clock.advance(timedelta(minutes=5))
    assert warden.tick() == []
    with pytest.raises(Rejected):
        warden.entry_expires(entry)


@pytest.mark.allium("temporal.EntryExpires")
def test_expiry_is_fifo_and_happens_on_admission() -> None:
    warden, clock, _ = make_warden()
    e1, _ = answered_entry(warden, clock, "r-1")
    clock.advance(timedelta(seconds=30))
    e2, _ = answered_entry(warden, clock, "r-2")
    clock.advance(timedelta(seconds=95))  # e1 due (125s), e2 not (95s)
    warden.on_request_created(make_request("r-3"))
    assert warden.entry("c-1", "r-1") is None
    assert warden.entry("c-1", "r-2") is e2
    assert warden.count == 2


@pytest.mark.allium("rule-failure.EntryExpires.1")
def test_entry_expires_requires_answered() -> None:
    warden, clock, _ = make_warden()
    entry = warden.admit_request(make_request())
    clock.advance(timedelta(hours=1))
    with pytest.raises(Rejected) as info:
        warden.entry_expires(entry)
    assert (info.value.rule, info.value.clause) == ("EntryExpires", 1)
    assert warden.entry("c-1", "r-1") is entry
    assert warden.tick() == []  # in-flight entries never expire


@pytest.mark.allium("rule-success.EvictOldestAnswer", "rule-chained.EvictOldestAnswer.IndexSaturated")
def test_evict_oldest_answer_when_full() -> None:
    cfg = Config(max_entries=3)
    warden, clock, _ = make_warden(cfg)
    saturated: list[str] = []
    warden.subscribe(lambda e: saturated.append(e.evicted) if isinstance(e, IndexSaturated) else None)
    oldest, _ = answered_entry(warden, clock, "r-1")
    clock.advance(timedelta(seconds=1))
    answered_entry(warden, clock, "r-2")
    warden.admit_request(make_request("r-3"))
    assert warden.count == 3 and saturated == []
    warden.on_request_created(make_request("r-4"))
    assert saturated == ["r-1"]
    assert warden.entry("c-1", "r-1") is None
    assert warden.count == 3
    assert warden.entry("c-1", "r-4") is not None
    warden.check_invariants()


@pytest.mark.allium("rule-failure.EvictOldestAnswer.1")
def test_evict_requires_count_over_bound() -> None:
    warden, clock, _ = make_warden(Config(max_entries=3))
    answered_entry(warden, clock, "r-1")
    entry = warden.admit_request(make_request("r-2"))
    with pytest.raises(Rejected) as info:
        warden.evict_oldest_answer(entry)
    assert (info.value.rule, info.value.clause) == ("EvictOldestAnswer", 1)
    assert warden.count == 2


@pytest.mark.allium("rule-failure.EvictOldestAnswer.2")
def test_evict_requires_an_answered_victim() -> None:
    warden, clock, _ = make_warden(Config(max_entries=2))
    warden.admit_request(make_request("r-1"))
    warden.admit_request(make_request("r-2"))
    third = warden.admit_request(make_request("r-3"))  # in-flight entries are never evicted
    assert warden.count == 3
    with pytest.raises(Rejected) as info:
        warden.evict_oldest_answer(third)
    assert (info.value.rule, info.value.clause) == ("EvictOldestAnswer", 2)
    assert warden.count == 3
    assert not any(isinstance(e, IndexSaturated) for e in warden.events)


# Rebuild ----------------------------------------------------------------------------------


@pytest.mark.allium("rule-success.StartRebuild", "rule-entity-creation.StartRebuild.1")
def test_start_rebuild_clears_index_and_creates_rebuild() -> None:
    warden, clock, journal = make_warden(epoch=5)
    answered_entry(warden, clock, "r-1")
    warden.admit_request(make_request("r-2"))
    assert warden.count == 2
    clock.advance(timedelta(seconds=4))
    grant = EpochGrant(epoch=5, node_id="node-b", granted_at=clock())
    rebuild = warden.start_rebuild(grant)
    assert warden.count == 0 and warden.entries == []
    assert rebuild.epoch == 5
    assert rebuild.node_id == "node-b"
    assert rebuild.started_at == clock()
    assert rebuild.status == RebuildStatus.loading
    assert warden.rebuilds == [rebuild]


@pytest.mark.allium(
    "rule-success.FinishRebuild",
    "when-set.FinishRebuild.Rebuild.restored",
    "when-set.FinishRebuild.Rebuild.finished_at",
)
def test_finish_rebuild() -> None:
    warden, clock, journal = make_warden(epoch=6)
    rebuild = warden.start_rebuild(EpochGrant(epoch=6, node_id="node-a", granted_at=T0))
    assert rebuild.restored is None and rebuild.finished_at is None
    clock.advance(timedelta(seconds=9))
    warden.on_warden_rebuilt(WardenRebuilt(rebuild=rebuild, restored=42))
    assert rebuild.status == RebuildStatus.done
    assert rebuild.restored == 42
    assert rebuild.finished_at == clock()


@pytest.mark.allium("rule-failure.FinishRebuild.1")
def test_finish_rebuild_requires_loading() -> None:
    warden, clock, _ = make_warden(epoch=1)
    rebuild = warden.start_rebuild(EpochGrant(epoch=1, node_id="node-a", granted_at=T0))
    warden.finish_rebuild(rebuild, 1)
    with pytest.raises(Rejected) as info:
        warden.finish_rebuild(rebuild, 2)
    assert (info.value.rule, info.value.clause) == ("FinishRebuild", 1)
    assert rebuild.restored == 1


@pytest.mark.allium("rule-failure.FinishRebuild.2")
def test_finish_rebuild_requires_current_epoch() -> None:
    warden, clock, journal = make_warden(epoch=1)
    rebuild = warden.start_rebuild(EpochGrant(epoch=1, node_id="node-a", granted_at=T0))
    journal.epoch = 2  # a newer epoch was granted meanwhile
    with pytest.raises(Rejected) as info:
        warden.finish_rebuild(rebuild, 3)
    assert (info.value.rule, info.value.clause) == ("FinishRebuild", 2)
    assert rebuild.status == RebuildStatus.loading and rebuild.restored is None


# Invariants -------------------------------------------------------------------------------


@pytest.mark.allium("invariant.OneEntryPerKey")
def test_one_entry_per_key() -> None:
    warden, clock, _ = make_warden()
    warden.on_request_created(make_request("r-1"))
    warden.on_request_created(make_request("r-1"))  # duplicate: held, no new entry
    warden.on_request_created(make_request("r-1", amount=7))  # conflict: no new entry
    warden.on_request_created(make_request("r-2"))
    assert warden.count == 2
    check_one_entry_per_key(warden.entries)
    a = warden.entry("c-1", "r-1")
    clone = DedupEntry(
        client_id=a.client_id,
        request_id=a.request_id,
        fingerprint=a.fingerprint,
        request=a.request,
        admitted_at=T0,
    )
    with pytest.raises(InvariantViolation):
        check_one_entry_per_key([*warden.entries, clone])


@pytest.mark.allium("invariant.ReplayedAnswerIsTheCommittedOne")
def test_replayed_answer_is_the_committed_one() -> None:
    warden, clock, _ = make_warden()
    entry, outcome = answered_entry(warden, clock)
    event = warden.on_request_created(make_request())
    assert isinstance(event, AnswerReplayed) and event.outcome is outcome
    assert (entry.outcome.client_id, entry.outcome.request_id) == (entry.client_id, entry.request_id)
    check_replayed_answer_is_the_committed_one(warden.entries)
    wrong = warden.admit_request(make_request("r-9"))
    wrong.outcome = outcome  # someone else's outcome
    wrong.answered_at = wrong.expires_at = T0
    wrong.status = DedupEntryStatus.answered
    with pytest.raises(InvariantViolation):
        check_replayed_answer_is_the_committed_one(warden.entries)


@pytest.mark.allium("invariant.IndexIsBounded")
def test_index_is_bounded() -> None:
    cfg = Config(max_entries=4)
    warden, clock, _ = make_warden(cfg)
    for i in range(10):
        req = make_request(f"r-{i}")
        warden.on_request_created(req)
        warden.record_answer(make_outcome(req, committed_at=clock(), sequence=i + 1))
        clock.advance(timedelta(milliseconds=10))
        assert warden.count <= cfg.max_entries + 1
        check_index_is_bounded(warden.count, cfg)
        warden.check_invariants()
    assert warden.count == cfg.max_entries
    evicted = [e.evicted for e in warden.events if isinstance(e, IndexSaturated)]
    assert evicted == [f"r-{i}" for i in range(6)]
    with pytest.raises(InvariantViolation):
        check_index_is_bounded(cfg.max_entries + 2, cfg)


# Surface RebuildLoader --------------------------------------------------------------------


def _loading(warden: Warden, epoch: int = 1) -> Rebuild:
    return warden.start_rebuild(EpochGrant(epoch=epoch, node_id="node-a", granted_at=T0))


@pytest.mark.allium("surface-actor.RebuildLoader")
def test_rebuild_loader_only_in_its_context() -> None:
    warden, clock, _ = make_warden()
    rebuild = _loading(warden)
    loader = RebuildLoader(warden, rebuild)
    assert loader.epoch == rebuild.epoch
    stranger = Rebuild(epoch=1, node_id="node-z", started_at=T0)
    with pytest.raises(AccessDenied):
        RebuildLoader(warden, stranger)
    warden.finish_rebuild(rebuild, 0)
    assert rebuild.status == RebuildStatus.done
    with pytest.raises(AccessDenied):
        RebuildLoader(warden, rebuild)


@pytest.mark.allium("surface-exposure.RebuildLoader")
def test_rebuild_loader_exposes_epoch_node_and_start() -> None:
    warden, clock, _ = make_warden(epoch=8)
    clock.advance(timedelta(seconds=2))
    rebuild = _loading(warden, epoch=8)
    loader = RebuildLoader(warden, rebuild)
    assert loader.epoch == 8 == rebuild.epoch
    assert loader.node_id == "node-a" == rebuild.node_id
    assert loader.started_at == T0 + timedelta(seconds=2) == rebuild.started_at


@pytest.mark.allium("surface-provides.RebuildLoader")
def test_rebuild_loader_provides_warden_rebuilt_while_loading() -> None:
    warden, clock, _ = make_warden()
    rebuild = _loading(warden)
    loader = RebuildLoader(warden, rebuild)
    assert loader.available() == ("WardenRebuilt",)
    clock.advance(timedelta(minutes=3))
    # Newest first; the stream stops at the first outcome older than the window.
    fresh = [
        make_outcome(make_request(f"r-{i}"), committed_at=clock() - timedelta(seconds=i * 10), sequence=100 - i)
        for i in range(5)
    ]
    stale = make_outcome(make_request("r-old"), committed_at=clock() - timedelta(minutes=3))

    def stream():
        yield from fresh
        yield stale
        raise AssertionError("read past the window")  # never materialised

    loader.load(stream())
    assert rebuild.status == RebuildStatus.done
    assert rebuild.restored == 5
    assert warden.entry("c-1", "r-old") is None
    restored = warden.entry("c-1", "r-0")
    assert restored.status == DedupEntryStatus.answered and restored.outcome is fresh[0]
    assert loader.available() == ()
    with pytest.raises(AccessDenied):
        loader.warden_rebuilt(1)
    # A duplicate of a restored key is answered from the index, without a round.
    event = warden.on_request_created(make_request("r-2"))
    assert isinstance(event, AnswerReplayed) and event.outcome is fresh[2]
    # Restored entries expire oldest first.
    clock.advance(WINDOW - timedelta(seconds=35))
    assert [e.request_id for e in warden.tick()] == ["r-4"]
    warden.check_invariants()


@pytest.mark.allium("surface-provides.RebuildLoader")
def test_rebuild_loader_stops_at_max_entries() -> None:
    warden, clock, _ = make_warden(Config(max_entries=2))
    rebuild = _loading(warden)
    outcomes = [make_outcome(make_request(f"r-{i}"), committed_at=clock()) for i in range(4)]
    RebuildLoader(warden, rebuild).load(iter(outcomes))
    assert rebuild.restored == 2
    assert warden.count == 2
