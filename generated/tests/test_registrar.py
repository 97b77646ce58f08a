"""Tests for unit `registrar` (registrar.allium): the account cache in front of the Ledger."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ledger.core import (
    AccessDenied,
    Account,
    AccountStatus,
    Channel,
    InvariantViolation,
    OperationKind,
    Operator,
    OperatorRole,
    RejectReason,
    Rejected,
    Request,
    TransitionRejected,
    Verdict,
)
from ledger.ledger import EpochGrant, Journal, Proposal, ProposalStatus
from ledger.warden import DedupEntry, DedupEntryCreated, DedupEntryStatus
from ledger.registrar import (
    CacheEntry,
    CacheMaintenance,
    Config,
    DictAccountStore,
    ReadSet,
    ReadSetStatus,
    ReadSource,
    Registrar,
    check_cache_is_bounded,
    check_cache_is_from_current_epoch,
    check_cache_never_ahead,
    check_one_entry_per_account,
    is_cache_responder,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# Test doubles -----------------------------------------------------------


class FakeClock:
    """An injected clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> datetime:
        self.now = self.now + timedelta(seconds=seconds)
        return self.now


# Helpers ----------------------------------------------------------------


def make_account(account_id: str, balance: int = 1_000, version: int = 3,
                 status: AccountStatus = AccountStatus.active) -> Account:
    return Account(account_id=account_id, owner="owner-" + account_id, status=status,
                   balance_minor=balance, version=version, opened_at=T0)


def make_request(account_id: str = "A", counterparty_id: str | None = None,
                 kind: OperationKind | None = None, amount: int = 100, request_id: str = "r1") -> Request:
    if kind is None:
        kind = OperationKind.transfer if counterparty_id is not None else OperationKind.deposit
    return Request(request_id=request_id, client_id="c1", kind=kind, account_id=account_id,
                   counterparty_id=counterparty_id, owner=None, amount_minor=amount,
                   channel=Channel.rest, fingerprint="fp-" + request_id, received_at=T0)


def make_proposal(request: Request, status: ProposalStatus, *, verdict: Verdict = Verdict.accepted,
                  account_delta: int = 0, counter_delta: int = 0, expected_primary: int = 0,
                  expected_counter: int = 0, attempt: int = 1, epoch: int = 1) -> Proposal:
    return Proposal(request=request, attempt=attempt, epoch=epoch, digest="d",
                    verdict=verdict,
                    reason=None if verdict == Verdict.accepted else RejectReason.insufficient_funds,
                    account_delta_minor=account_delta, counterparty_delta_minor=counter_delta,
                    expected_primary_version=expected_primary, expected_counter_version=expected_counter,
                    status=status,
                    sequence=1 if status == ProposalStatus.committed else None,
                    committed_at=T0 if status == ProposalStatus.committed else None)


def make_registrar(*accounts: Account, max_entries: int | None = None, epoch: int = 1,
                   clock: FakeClock | None = None) -> tuple[Registrar, DictAccountStore, FakeClock, Journal]:
    clock = clock or FakeClock()
    store = DictAccountStore(accounts)
    journal = Journal(epoch=epoch, primary_node_id="n1", next_sequence=1)
    config = Config() if max_entries is None else Config(max_entries=max_entries)
    return Registrar(journal, store, clock=clock, config=config), store, clock, journal


def admitted(request: Request, status: DedupEntryStatus = DedupEntryStatus.in_flight) -> DedupEntry:
    answered = status == DedupEntryStatus.answered
    return DedupEntry(client_id=request.client_id, request_id=request.request_id, fingerprint=request.fingerprint,
                      request=request, admitted_at=T0, status=status,
                      answered_at=T0 if answered else None, expires_at=T0 if answered else None)


def read_for(registrar: Registrar, request: Request, *, resolve: bool = True) -> ReadSet:
    return registrar.begin_read(admitted(request), resolve=resolve)


def responder() -> Operator:
    return Operator(name="rita", role=OperatorRole.responder)


def observer() -> Operator:
    return Operator(name="oscar", role=OperatorRole.observer)


# Enum, entities, config ---------------------------------------------------


@pytest.mark.allium("enum-comparable.ReadSource")
def test_read_source_values_compare_by_identity_and_value() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    first = read_for(registrar, make_request("A"))
    second = read_for(registrar, make_request("A", request_id="r2"))
    assert first.source == ReadSource.storage
    assert second.source == ReadSource.cache
    assert first.source != second.source
    assert ReadSource("cache") is ReadSource.cache
    assert [s.value for s in ReadSource] == ["cache", "storage"]


@pytest.mark.allium("entity-fields.CacheEntry")
def test_cache_entry_declares_the_spec_fields() -> None:
    hints = typing.get_type_hints(CacheEntry)
    names = [f.name for f in dataclasses.fields(CacheEntry)]
    assert names == ["account_id", "present", "account_status", "balance_minor", "version", "epoch",
                     "last_used_at"]
    assert hints["account_id"] is str and hints["present"] is bool
    assert hints["balance_minor"] is int and hints["version"] is int and hints["epoch"] is int
    assert hints["last_used_at"] is datetime
    registrar, _, clock, _ = make_registrar(make_account("A", balance=70, version=4))
    read_for(registrar, make_request("A"))
    entry = registrar.entry("A")
    assert entry is not None
    assert (entry.account_id, entry.present, entry.account_status) == ("A", True, AccountStatus.active)
    assert (entry.balance_minor, entry.version, entry.epoch, entry.last_used_at) == (70, 4, 1, clock.now)


@pytest.mark.allium("entity-optional.CacheEntry.account_status")
def test_cache_entry_account_status_is_null_for_a_missing_account() -> None:
    registrar, _, _, _ = make_registrar(make_account("A", status=AccountStatus.closed, balance=0))
    read_for(registrar, make_request("A", counterparty_id="GHOST"))
    known, missing = registrar.entry("A"), registrar.entry("GHOST")
    assert known is not None and known.account_status == AccountStatus.closed
    assert missing is not None and missing.present is False and missing.account_status is None
    assert (missing.balance_minor, missing.version) == (0, 0)


@pytest.mark.allium(
    "when-presence.ReadSet.source",
    "when-presence.ReadSet.primary_present",
    "when-presence.ReadSet.primary_status",
    "when-presence.ReadSet.primary_balance_minor",
    "when-presence.ReadSet.primary_version",
    "when-presence.ReadSet.counter_present",
    "when-presence.ReadSet.counter_status",
    "when-presence.ReadSet.counter_balance_minor",
    "when-presence.ReadSet.counter_version",
    "when-presence.ReadSet.ready_at",
)
def test_ready_fields_are_present_exactly_when_ready() -> None:
    registrar, _, clock, _ = make_registrar(make_account("A"), make_account("B", balance=5, version=2))
    read = read_for(registrar, make_request("A", counterparty_id="B"), resolve=False)
    when_fields = ("source", "primary_present", "primary_status", "primary_balance_minor", "primary_version",
                   "counter_present", "counter_status", "counter_balance_minor", "counter_version", "ready_at")
    assert read.status == ReadSetStatus.loading
    assert all(getattr(read, name) is None for name in when_fields)
    assert read.when_field_violations() == []

    registrar.on_read_set_created(read)
    assert read.status == ReadSetStatus.ready
    assert read.source == ReadSource.storage
    assert read.primary_present is True and read.primary_status == AccountStatus.active
    assert read.primary_balance_minor == 1_000 and read.primary_version == 3
    assert read.counter_present is True and read.counter_status == AccountStatus.active
    assert read.counter_balance_minor == 5 and read.counter_version == 2
    assert read.ready_at == clock.now
    assert read.when_field_violations() == []

    abandoned = read_for(registrar, make_request("A", request_id="r2"), resolve=False)
    registrar.on_epoch_grant_created(EpochGrant(epoch=2, node_id="n2", granted_at=clock.now))
    assert abandoned.status == ReadSetStatus.abandoned
    assert all(getattr(abandoned, name) is None for name in when_fields)
    assert abandoned.when_field_violations() == []

    # A ready read set missing a required field, or a loading one carrying
    # one, is reported.
    read.ready_at = None
    assert read.when_field_violations() == ["ReadSet.ready_at absent in status ready"]
    abandoned.counter_status = AccountStatus.active
    assert abandoned.when_field_violations() == ["ReadSet.counter_status present in status abandoned"]


@pytest.mark.allium("transition-edge.ReadSet.loading.ready")
def test_loading_to_ready_is_reached_by_serving_or_loading() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    loaded = read_for(registrar, make_request("A"), resolve=False)
    assert loaded.status == ReadSetStatus.loading
    registrar.load_on_miss(loaded)
    assert loaded.status == ReadSetStatus.ready
    served = read_for(registrar, make_request("A", request_id="r2"), resolve=False)
    registrar.serve_from_cache(served)
    assert served.status == ReadSetStatus.ready


@pytest.mark.allium("transition-edge.ReadSet.loading.abandoned")
def test_loading_to_abandoned_is_reached_on_an_epoch_grant() -> None:
    registrar, _, clock, _ = make_registrar(make_account("A"))
    read = read_for(registrar, make_request("A"), resolve=False)
    abandoned = registrar.abandon_loading_reads(EpochGrant(epoch=2, node_id="n2", granted_at=clock.now))
    assert abandoned == [read]
    assert read.status == ReadSetStatus.abandoned


@pytest.mark.allium("transition-rejected.ReadSet.status")
def test_undeclared_read_set_transitions_are_rejected() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    read = read_for(registrar, make_request("A"), resolve=False)
    assert not read.can_transition(ReadSetStatus.loading)
    with pytest.raises(TransitionRejected):
        read.transition(ReadSetStatus.loading)
    assert read.status == ReadSetStatus.loading
    read.transition(ReadSetStatus.ready)
    with pytest.raises(TransitionRejected):
        read.transition(ReadSetStatus.loading)
    with pytest.raises(TransitionRejected):
        read.transition(ReadSetStatus.abandoned)
    assert read.status == ReadSetStatus.ready


@pytest.mark.allium("transition-terminal.ReadSet.status")
def test_ready_and_abandoned_are_terminal() -> None:
    registrar, _, clock, _ = make_registrar(make_account("A"))
    ready = read_for(registrar, make_request("A"))
    abandoned = read_for(registrar, make_request("A", request_id="r2"), resolve=False)
    registrar.abandon_loading_reads(EpochGrant(epoch=2, node_id="n2", granted_at=clock.now))
    for read, state in ((ready, ReadSetStatus.ready), (abandoned, ReadSetStatus.abandoned)):
        assert read.status == state
        assert not any(read.can_transition(to) for to in ReadSetStatus)
        # No rule moves a terminal read set either.
        with pytest.raises(Rejected):
            registrar.serve_from_cache(read)
        with pytest.raises(Rejected):
            registrar.load_on_miss(read)
        assert read.status == state


@pytest.mark.allium("entity-fields.ReadSet")
def test_read_set_declares_the_spec_fields() -> None:
    names = [f.name for f in dataclasses.fields(ReadSet)]
    assert names == ["request", "attempt", "epoch", "requested_at", "status", "source", "primary_present",
                     "primary_status", "primary_balance_minor", "primary_version", "counter_present",
                     "counter_status", "counter_balance_minor", "counter_version", "ready_at"]
    hints = typing.get_type_hints(ReadSet)
    assert hints["request"] is Request and hints["attempt"] is int and hints["epoch"] is int
    assert hints["requested_at"] is datetime and hints["status"] is ReadSetStatus
    assert hints["source"] == ReadSource | None
    registrar, _, clock, _ = make_registrar(make_account("A"))
    request = make_request("A")
    read = read_for(registrar, request)
    assert (read.request, read.attempt, read.epoch, read.requested_at) == (request, 1, 1, clock.now)
    assert isinstance(read.primary_balance_minor, int) and isinstance(read.primary_present, bool)


@pytest.mark.allium("entity-optional.ReadSet.primary_status", "entity-optional.ReadSet.counter_status")
def test_read_set_statuses_are_null_for_missing_accounts() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    found = read_for(registrar, make_request("A", counterparty_id="NOPE"))
    assert found.primary_status == AccountStatus.active
    assert found.counter_status is None and found.counter_present is False
    missing = read_for(registrar, make_request("NEW", counterparty_id="A", request_id="r2"))
    assert missing.primary_status is None and missing.primary_present is False
    assert missing.counter_status == AccountStatus.active
    assert missing.when_field_violations() == []


@pytest.mark.allium("derived.ReadSet.is_transfer")
def test_is_transfer_follows_the_counterparty() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"), make_account("B"))
    assert read_for(registrar, make_request("A", counterparty_id="B")).is_transfer is True
    assert read_for(registrar, make_request("A", request_id="r2")).is_transfer is False
    # Derived from the request, not the kind: any counterparty makes it one.
    odd = make_request("A", counterparty_id="B", kind=OperationKind.deposit, request_id="r3")
    assert read_for(registrar, odd).is_transfer is True


@pytest.mark.allium("config-default.max_entries")
def test_max_entries_defaults_to_two_million() -> None:
    assert Config().max_entries == 2_000_000
    registrar, _, _, _ = make_registrar()
    assert registrar.config.max_entries == 2_000_000
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().max_entries = 1  # type: ignore[misc]


# BeginRead --------------------------------------------------------------


@pytest.mark.allium("rule-success.BeginRead", "rule-entity-creation.BeginRead.1")
def test_begin_read_creates_a_loading_first_attempt_in_the_journal_epoch() -> None:
    registrar, _, clock, journal = make_registrar(make_account("A"), epoch=7)
    request = make_request("A")
    entry = admitted(request)
    assert entry.status == DedupEntryStatus.in_flight
    read = registrar.begin_read(entry, resolve=False)
    assert read.request is request
    assert read.attempt == 1
    assert read.epoch == journal.epoch == 7
    assert read.requested_at == clock.now
    assert read.status == ReadSetStatus.loading
    assert registrar.loading_reads == [read]


@pytest.mark.allium("rule-failure.BeginRead.1")
def test_begin_read_refuses_an_answered_entry() -> None:
    registrar, store, _, _ = make_registrar(make_account("A"))
    entry = admitted(make_request("A"), DedupEntryStatus.answered)
    with pytest.raises(Rejected) as refused:
        registrar.begin_read(entry)
    assert (refused.value.rule, refused.value.clause) == ("BeginRead", 1)
    assert registrar.on_dedup_entry_created(DedupEntryCreated(entry)) is None
    assert registrar.loading_reads == [] and registrar.cache_entries == [] and store.reads == []


def test_the_warden_notification_drives_begin_read() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    entry = admitted(make_request("A"))
    read = registrar.on_dedup_entry_created(DedupEntryCreated(entry))
    assert read is not None and read.request is entry.request
    assert read.status == ReadSetStatus.ready and read.attempt == 1


# ServeFromCache ---------------------------------------------------------


@pytest.mark.allium("rule-success.ServeFromCache")
def test_serve_from_cache_copies_the_cached_snapshot() -> None:
    registrar, store, clock, _ = make_registrar(make_account("A", balance=40, version=9))
    read_for(registrar, make_request("A"))
    clock.tick()
    read = read_for(registrar, make_request("A", request_id="r2"))
    entry = registrar.entry("A")
    assert entry is not None
    assert read.status == ReadSetStatus.ready and read.source == ReadSource.cache
    assert (read.primary_present, read.primary_status) == (True, AccountStatus.active)
    assert (read.primary_balance_minor, read.primary_version) == (40, 9)
    assert read.ready_at == clock.now and entry.last_used_at == clock.now
    assert len(store.reads) == 1  # served without touching storage


@pytest.mark.allium("rule-failure.ServeFromCache.1")
def test_serve_from_cache_requires_a_loading_read() -> None:
    registrar, _, clock, _ = make_registrar(make_account("A"))
    read_for(registrar, make_request("A"))
    read = read_for(registrar, make_request("A", request_id="r2"), resolve=False)
    registrar.abandon_loading_reads(EpochGrant(epoch=1, node_id="n1", granted_at=clock.now))
    with pytest.raises(Rejected) as refused:
        registrar.serve_from_cache(read)
    assert refused.value.clause == 1
    assert read.status == ReadSetStatus.abandoned and read.source is None


@pytest.mark.allium("rule-failure.ServeFromCache.2")
def test_serve_from_cache_requires_the_primary_cached_in_the_read_epoch() -> None:
    registrar, _, clock, journal = make_registrar(make_account("A"))
    cold = read_for(registrar, make_request("A"), resolve=False)
    with pytest.raises(Rejected) as refused:
        registrar.serve_from_cache(cold)
    assert refused.value.clause == 2 and cold.status == ReadSetStatus.loading
    registrar.load_on_miss(cold)
    entry = registrar.entry("A")
    assert entry is not None and entry.epoch == 1
    journal.epoch = 2  # the cached entry is now from an older epoch than new reads
    stale = read_for(registrar, make_request("A", request_id="r2"), resolve=False)
    used_at = entry.last_used_at
    clock.tick()
    with pytest.raises(Rejected) as refused:
        registrar.serve_from_cache(stale)
    assert refused.value.clause == 2
    assert stale.status == ReadSetStatus.loading and entry.last_used_at == used_at


@pytest.mark.allium("rule-failure.ServeFromCache.3")
def test_serve_from_cache_requires_a_transfer_counterparty_cached() -> None:
    registrar, _, clock, _ = make_registrar(make_account("A"), make_account("B"))
    read_for(registrar, make_request("A"))  # caches A only
    primary = registrar.entry("A")
    assert primary is not None
    used_at = primary.last_used_at
    clock.tick()
    read = read_for(registrar, make_request("A", counterparty_id="B", request_id="r2"), resolve=False)
    with pytest.raises(Rejected) as refused:
        registrar.serve_from_cache(read)
    assert refused.value.clause == 3
    assert read.status == ReadSetStatus.loading and read.source is None
    assert primary.last_used_at == used_at  # all or nothing


@pytest.mark.allium("rule-branch.ServeFromCache.1")
def test_serve_from_cache_uses_the_counterparty_exactly_when_it_exists() -> None:
    registrar, _, clock, _ = make_registrar(make_account("A"), make_account("B", balance=7, version=5))
    read_for(registrar, make_request("A", counterparty_id="B"))
    counter = registrar.entry("B")
    assert counter is not None
    clock.tick()
    transfer = read_for(registrar, make_request("A", counterparty_id="B", request_id="r2"))
    assert transfer.source == ReadSource.cache
    assert (transfer.counter_present, transfer.counter_status) == (True, AccountStatus.active)
    assert (transfer.counter_balance_minor, transfer.counter_version) == (7, 5)
    assert counter.last_used_at == clock.now
    clock.tick()
    single = read_for(registrar, make_request("A", request_id="r3"))
    assert single.source == ReadSource.cache
    assert (single.counter_present, single.counter_status) == (False, None)
    assert (single.counter_balance_minor, single.counter_version) == (0, 0)
    assert counter.last_used_at == clock.now - timedelta(seconds=1)  # untouched


# LoadOnMiss -------------------------------------------------------------


@pytest.mark.allium("rule-success.LoadOnMiss", "rule-entity-creation.LoadOnMiss.1")
def test_load_on_miss_reads_storage_once_and_caches_both_accounts() -> None:
    registrar, store, clock, _ = make_registrar(make_account("A", balance=10, version=2),
                                                make_account("B", balance=20, version=6))
    read = read_for(registrar, make_request("A", counterparty_id="B"))
    assert store.reads == [("A", "B")]  # one read for both: same commit sequence
    assert read.status == ReadSetStatus.ready and read.source == ReadSource.storage
    assert (read.primary_present, read.primary_balance_minor, read.primary_version) == (True, 10, 2)
    assert (read.counter_present, read.counter_balance_minor, read.counter_version) == (True, 20, 6)
    assert read.ready_at == clock.now
    a, b = registrar.entry("A"), registrar.entry("B")
    assert a is not None and b is not None
    assert (a.account_id, a.present, a.account_status, a.balance_minor, a.version, a.epoch, a.last_used_at) == (
        "A", True, AccountStatus.active, 10, 2, read.epoch, clock.now)
    assert (b.account_id, b.present, b.account_status, b.balance_minor, b.version, b.epoch, b.last_used_at) == (
        "B", True, AccountStatus.active, 20, 6, read.epoch, clock.now)


@pytest.mark.allium("rule-failure.LoadOnMiss.1")
def test_load_on_miss_requires_a_loading_read() -> None:
    registrar, store, _, _ = make_registrar(make_account("A"))
    read = read_for(registrar, make_request("A"))
    assert read.status == ReadSetStatus.ready
    with pytest.raises(Rejected) as refused:
        registrar.load_on_miss(read)
    assert refused.value.clause == 1 and len(store.reads) == 1


@pytest.mark.allium("rule-failure.LoadOnMiss.2")
def test_load_on_miss_requires_a_miss() -> None:
    registrar, store, _, _ = make_registrar(make_account("A"), make_account("B"))
    read_for(registrar, make_request("A", counterparty_id="B"))
    cached = registrar.entry("A")
    read = read_for(registrar, make_request("A", counterparty_id="B", request_id="r2"), resolve=False)
    with pytest.raises(Rejected) as refused:
        registrar.load_on_miss(read)
    assert refused.value.clause == 2
    assert read.status == ReadSetStatus.loading and len(store.reads) == 1
    assert registrar.entry("A") is cached


@pytest.mark.allium("rule-branch.LoadOnMiss.1")
def test_load_on_miss_replaces_an_existing_primary_entry() -> None:
    registrar, store, _, _ = make_registrar(make_account("A", balance=10), make_account("B"))
    read_for(registrar, make_request("A"))
    old = registrar.entry("A")
    assert old is not None
    store.accounts["A"] = make_account("A", balance=55, version=4)  # committed elsewhere meanwhile
    # The counterparty misses, so both are reloaded and A's entry replaced.
    read = read_for(registrar, make_request("A", counterparty_id="B", request_id="r2"))
    new = registrar.entry("A")
    assert read.source == ReadSource.storage
    assert new is not None and new is not old
    assert (new.balance_minor, new.version) == (55, 4)
    assert [e.account_id for e in registrar.cache_entries].count("A") == 1
    # Without an existing entry there is nothing to replace: only a creation.
    fresh = read_for(registrar, make_request("C", request_id="r3"))
    created = registrar.entry("C")
    assert fresh.primary_present is False and created is not None and created.present is False


@pytest.mark.allium("rule-branch.LoadOnMiss.2")
def test_load_on_miss_replaces_an_existing_counterparty_entry() -> None:
    registrar, store, _, _ = make_registrar(make_account("A"), make_account("B", balance=8))
    read_for(registrar, make_request("B"))
    old = registrar.entry("B")
    assert old is not None
    store.accounts["B"] = make_account("B", balance=9, version=4)
    read = read_for(registrar, make_request("A", counterparty_id="B", request_id="r2"))
    new = registrar.entry("B")
    assert new is not None and new is not old
    assert (read.counter_balance_minor, new.balance_minor, new.version) == (9, 9, 4)
    assert [e.account_id for e in registrar.cache_entries].count("B") == 1


@pytest.mark.allium("rule-branch.LoadOnMiss.3")
def test_load_on_miss_caches_the_counterparty_only_for_transfers() -> None:
    registrar, store, _, _ = make_registrar(make_account("A"), make_account("B"))
    single = read_for(registrar, make_request("A"))
    assert single.is_transfer is False
    assert store.reads == [("A",)]
    assert [e.account_id for e in registrar.cache_entries] == ["A"]
    transfer = read_for(registrar, make_request("C", counterparty_id="B", request_id="r2"))
    assert transfer.is_transfer is True
    assert sorted(e.account_id for e in registrar.cache_entries) == ["A", "B", "C"]


def test_resolve_pending_batches_and_coalesces_misses() -> None:
    registrar, store, _, _ = make_registrar(make_account("A"), make_account("B"), make_account("C"))
    first = read_for(registrar, make_request("A", counterparty_id="B"), resolve=False)
    second = read_for(registrar, make_request("B", request_id="r2"), resolve=False)
    third = read_for(registrar, make_request("C", counterparty_id="A", request_id="r3"), resolve=False)
    assert registrar.resolve_pending() == [first, second, third]
    assert store.reads == [("A", "B", "C")]
    assert first.source == ReadSource.storage and second.source == ReadSource.cache
    assert third.source == ReadSource.storage and third.counter_version == 3
    assert registrar.loading_reads == []


def test_resolve_pending_rereads_an_entry_evicted_within_the_batch() -> None:
    registrar, store, _, _ = make_registrar(make_account("A"), make_account("B", balance=42), max_entries=1)
    read_for(registrar, make_request("B"))  # B cached
    first = read_for(registrar, make_request("A", request_id="r2"), resolve=False)
    second = read_for(registrar, make_request("B", request_id="r3"), resolve=False)
    registrar.resolve_pending()  # loading A evicts B, so the second read must reload B
    assert first.primary_present is True
    assert second.primary_present is True and second.primary_balance_minor == 42
    assert store.reads == [("B",), ("A",), ("B",)]


def test_on_ready_subscriber_sees_every_ready_read_set() -> None:
    seen: list[ReadSet] = []
    clock = FakeClock()
    registrar = Registrar(Journal(epoch=1), DictAccountStore([make_account("A")]), clock=clock, on_ready=seen.append)
    loaded = read_for(registrar, make_request("A"))
    served = read_for(registrar, make_request("A", request_id="r2"))
    assert seen == [loaded, served]


# RereadAfterConflict ----------------------------------------------------


@pytest.mark.allium("rule-success.RereadAfterConflict", "rule-entity-creation.RereadAfterConflict.1")
def test_conflict_starts_the_next_attempt_from_storage() -> None:
    registrar, store, clock, journal = make_registrar(make_account("A", version=3), make_account("B"))
    request = make_request("A", counterparty_id="B")
    read_for(registrar, request)
    store.accounts["A"] = make_account("A", balance=1, version=4)
    clock.tick()
    proposal = make_proposal(request, ProposalStatus.conflicted, attempt=2)
    read = registrar.reread_after_conflict(proposal)
    assert read.request is request
    assert read.attempt == 3
    assert read.epoch == journal.epoch
    assert read.requested_at == clock.now
    # Created loading, then resolved from storage since both entries were dropped.
    assert read.status == ReadSetStatus.ready and read.source == ReadSource.storage
    assert (read.primary_balance_minor, read.primary_version) == (1, 4)


def test_reread_requires_a_conflicted_proposal() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    with pytest.raises(Rejected):
        registrar.reread_after_conflict(make_proposal(make_request("A"), ProposalStatus.committed))
    assert registrar.loading_reads == []


@pytest.mark.allium("rule-branch.RereadAfterConflict.1")
def test_conflict_drops_the_primary_entry_when_cached() -> None:
    registrar, store, _, _ = make_registrar(make_account("A"))
    request = make_request("A")
    read_for(registrar, request)
    stale = registrar.entry("A")
    seen_stores = len(store.reads)
    read = registrar.reread_after_conflict(make_proposal(request, ProposalStatus.conflicted))
    assert registrar.entry("A") is not stale
    assert read.source == ReadSource.storage and len(store.reads) == seen_stores + 1
    # Nothing cached: nothing to drop, the new attempt still reads.
    other = make_request("Z", request_id="r9")
    assert registrar.entry("Z") is None
    assert registrar.reread_after_conflict(make_proposal(other, ProposalStatus.conflicted)).attempt == 2


@pytest.mark.allium("rule-branch.RereadAfterConflict.2")
def test_conflict_drops_the_counterparty_entry_when_cached() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"), make_account("B"))
    read_for(registrar, make_request("B"))
    counter = registrar.entry("B")
    assert counter is not None
    request = make_request("A", counterparty_id="B", request_id="r2")
    read = registrar.reread_after_conflict(make_proposal(request, ProposalStatus.conflicted))
    assert registrar.entry("B") is not counter
    assert read.source == ReadSource.storage and read.counter_present is True


# Write-through ----------------------------------------------------------


@pytest.mark.allium("rule-success.WriteThroughPrimary", "rule-branch.WriteThroughPrimary.1")
def test_write_through_applies_the_delta_when_versions_line_up() -> None:
    registrar, store, clock, _ = make_registrar(make_account("A", balance=100, version=3))
    request = make_request("A", amount=25)
    read = read_for(registrar, request)
    clock.tick()
    proposal = make_proposal(request, ProposalStatus.committed, account_delta=25,
                             expected_primary=read.primary_version)
    entry = registrar.write_through_primary(proposal)
    assert entry is registrar.entry("A") and entry is not None
    assert (entry.present, entry.account_status) == (True, AccountStatus.active)
    assert (entry.balance_minor, entry.version, entry.last_used_at) == (125, 4, clock.now)
    # A close commits the account closed, and an open makes a missing entry present.
    close = make_request("A", kind=OperationKind.close, amount=0, request_id="r2")
    closed = registrar.write_through_primary(make_proposal(close, ProposalStatus.committed,
                                                           account_delta=-125, expected_primary=4))
    assert closed is not None and closed.account_status == AccountStatus.closed and closed.balance_minor == 0
    opening = make_request("N", kind=OperationKind.open, amount=0, request_id="r3")
    assert read_for(registrar, opening).primary_present is False
    opened = registrar.write_through_primary(make_proposal(opening, ProposalStatus.committed, expected_primary=0))
    assert opened is not None and (opened.present, opened.account_status, opened.version) == (
        True, AccountStatus.active, 1)
    assert len(store.reads) == 2


@pytest.mark.allium("rule-failure.WriteThroughPrimary.1")
def test_write_through_ignores_rejected_decisions() -> None:
    registrar, _, _, _ = make_registrar(make_account("A", balance=100, version=3))
    request = make_request("A")
    read_for(registrar, request)
    proposal = make_proposal(request, ProposalStatus.committed, verdict=Verdict.rejected, expected_primary=3)
    with pytest.raises(Rejected) as refused:
        registrar.write_through_primary(proposal)
    entry = registrar.entry("A")
    assert refused.value.clause == 1
    assert entry is not None and (entry.balance_minor, entry.version) == (100, 3)


@pytest.mark.allium("rule-failure.WriteThroughPrimary.2")
def test_write_through_primary_needs_a_cached_entry() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    proposal = make_proposal(make_request("A"), ProposalStatus.committed, account_delta=5, expected_primary=3)
    with pytest.raises(Rejected) as refused:
        registrar.write_through_primary(proposal)
    assert refused.value.clause == 2
    assert registrar.entry("A") is None and registrar.cache_entries == []


@pytest.mark.allium("rule-branch.WriteThroughPrimary.2")
def test_write_through_drops_an_entry_at_another_version() -> None:
    registrar, _, _, _ = make_registrar(make_account("A", balance=100, version=3))
    request = make_request("A")
    read_for(registrar, request)
    proposal = make_proposal(request, ProposalStatus.committed, account_delta=5, expected_primary=2)
    assert registrar.write_through_primary(proposal) is None
    assert registrar.entry("A") is None
    assert read_for(registrar, make_request("A", request_id="r2")).source == ReadSource.storage


@pytest.mark.allium("rule-success.WriteThroughCounterparty", "rule-branch.WriteThroughCounterparty.1")
def test_counterparty_write_through_applies_the_delta() -> None:
    registrar, _, clock, _ = make_registrar(make_account("A", balance=100), make_account("B", balance=1, version=8))
    request = make_request("A", counterparty_id="B", amount=30)
    read = read_for(registrar, request)
    clock.tick()
    proposal = make_proposal(request, ProposalStatus.committed, account_delta=-30, counter_delta=30,
                             expected_primary=read.primary_version, expected_counter=read.counter_version)
    registrar.on_proposal_committed(proposal)
    a, b = registrar.entry("A"), registrar.entry("B")
    assert a is not None and (a.balance_minor, a.version) == (70, 4)
    assert b is not None and (b.balance_minor, b.version, b.last_used_at) == (31, 9, clock.now)


@pytest.mark.allium("rule-failure.WriteThroughCounterparty.1")
def test_counterparty_write_through_ignores_rejected_decisions() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"), make_account("B", balance=1, version=8))
    request = make_request("A", counterparty_id="B")
    read_for(registrar, request)
    proposal = make_proposal(request, ProposalStatus.committed, verdict=Verdict.rejected, expected_counter=8)
    with pytest.raises(Rejected) as refused:
        registrar.write_through_counterparty(proposal)
    entry = registrar.entry("B")
    assert refused.value.clause == 1 and entry is not None and (entry.balance_minor, entry.version) == (1, 8)


@pytest.mark.allium("rule-failure.WriteThroughCounterparty.2")
def test_counterparty_write_through_only_for_transfers() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"), make_account("B", balance=1, version=8))
    request = make_request("A", counterparty_id="B", kind=OperationKind.deposit)
    read_for(registrar, request)
    proposal = make_proposal(request, ProposalStatus.committed, counter_delta=4, expected_counter=8)
    with pytest.raises(Rejected) as refused:
        registrar.write_through_counterparty(proposal)
    entry = registrar.entry("B")
    assert refused.value.clause == 2 and entry is not None and (entry.balance_minor, entry.version) == (1, 8)


@pytest.mark.allium("rule-failure.WriteThroughCounterparty.3")
def test_counterparty_write_through_needs_a_cached_entry() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"), make_account("B"))
    request = make_request("A", counterparty_id="B")
    proposal = make_proposal(request, ProposalStatus.committed, counter_delta=4, expected_counter=3)
    with pytest.raises(Rejected) as refused:
        registrar.write_through_counterparty(proposal)
    assert refused.value.clause == 3 and registrar.entry("B") is None


@pytest.mark.allium("rule-branch.WriteThroughCounterparty.2")
def test_counterparty_write_through_drops_an_entry_at_another_version() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"), make_account("B", version=8))
    request = make_request("A", counterparty_id="B")
    read_for(registrar, request)
    proposal = make_proposal(request, ProposalStatus.committed, counter_delta=4, expected_counter=7)
    assert registrar.write_through_counterparty(proposal) is None
    assert registrar.entry("B") is None and registrar.entry("A") is not None


# Epoch change -----------------------------------------------------------


@pytest.mark.allium("rule-success.InvalidateOnEpochChange")
def test_an_epoch_grant_invalidates_every_entry() -> None:
    registrar, store, clock, journal = make_registrar(make_account("A"), make_account("B"))
    read_for(registrar, make_request("A", counterparty_id="B"))
    assert registrar.cache_count == 2
    journal.epoch = 2
    registrar.invalidate_on_epoch_change(EpochGrant(epoch=2, node_id="n2", granted_at=clock.now))
    assert registrar.cache_entries == [] and registrar.cache_count == 0
    assert registrar.entry("A") is None and registrar.entry("B") is None
    read = read_for(registrar, make_request("A", request_id="r2"))
    entry = registrar.entry("A")
    assert read.source == ReadSource.storage and read.epoch == 2
    assert entry is not None and entry.epoch == 2 and registrar.cache_count == 1
    assert len(store.reads) == 2


@pytest.mark.allium("rule-success.AbandonLoadingReads")
def test_an_epoch_grant_abandons_only_loading_reads() -> None:
    registrar, _, clock, _ = make_registrar(make_account("A"))
    done = read_for(registrar, make_request("A"))
    pending = [read_for(registrar, make_request("A", request_id=f"p{i}"), resolve=False) for i in range(3)]
    abandoned = registrar.abandon_loading_reads(EpochGrant(epoch=2, node_id="n2", granted_at=clock.now))
    assert abandoned == pending
    assert all(r.status == ReadSetStatus.abandoned for r in pending)
    assert done.status == ReadSetStatus.ready
    assert registrar.loading_reads == []


# FlushAccount -----------------------------------------------------------


@pytest.mark.allium("rule-success.FlushAccount")
def test_a_responder_flushes_one_entry() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"), make_account("B"))
    read_for(registrar, make_request("A", counterparty_id="B"))
    registrar.flush_account(responder(), "A")
    assert registrar.entry("A") is None and registrar.entry("B") is not None
    # Latency, never results: the next read reloads the same values.
    read = read_for(registrar, make_request("A", request_id="r2"))
    assert read.source == ReadSource.storage and (read.primary_balance_minor, read.primary_version) == (1_000, 3)


@pytest.mark.allium("rule-failure.FlushAccount.1")
def test_an_observer_cannot_flush() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    read_for(registrar, make_request("A"))
    with pytest.raises(Rejected) as refused:
        registrar.flush_account(observer(), "A")
    assert refused.value.clause == 1 and registrar.entry("A") is not None


@pytest.mark.allium("rule-failure.FlushAccount.2")
def test_flushing_an_uncached_account_is_refused() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    read_for(registrar, make_request("A"))
    with pytest.raises(Rejected) as refused:
        registrar.flush_account(responder(), "B")
    assert refused.value.clause == 2 and registrar.cache_count == 1


# EvictLeastRecentlyUsed -------------------------------------------------


@pytest.mark.allium("rule-success.EvictLeastRecentlyUsed")
def test_over_the_bound_the_least_recently_used_entry_is_evicted() -> None:
    registrar, _, clock, _ = make_registrar(*(make_account(i) for i in "ABCD"), max_entries=3)
    for account_id in "ABC":
        read_for(registrar, make_request(account_id, request_id="r" + account_id))
        clock.tick()
    read_for(registrar, make_request("A", request_id="again"))  # A is used again: B is now the LRU
    clock.tick()
    read_for(registrar, make_request("D", request_id="rD"))  # creation pushes the count to 4 > 3
    ids = sorted(e.account_id for e in registrar.cache_entries)
    assert ids == ["A", "C", "D"]
    assert registrar.cache_count == 3
    # Calling the rule directly past the bound returns its victim.
    registrar.config = Config(max_entries=2)
    d = registrar.entry("D")
    assert d is not None
    victim = registrar.evict_least_recently_used(d)
    assert victim.account_id in {"A", "C"} and registrar.entry(victim.account_id) is None
    assert registrar.entry("D") is d


@pytest.mark.allium("rule-failure.EvictLeastRecentlyUsed.1")
def test_within_the_bound_nothing_is_evicted() -> None:
    registrar, _, _, _ = make_registrar(*(make_account(i) for i in "AB"), max_entries=2)
    read_for(registrar, make_request("A", counterparty_id="B"))
    b = registrar.entry("B")
    assert b is not None
    with pytest.raises(Rejected) as refused:
        registrar.evict_least_recently_used(b)
    assert refused.value.clause == 1 and registrar.cache_count == 2


@pytest.mark.allium("rule-failure.EvictLeastRecentlyUsed.2")
def test_without_a_victim_nothing_is_evicted() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"), max_entries=0)
    read_for(registrar, make_request("A"))
    only = registrar.entry("A")
    assert only is not None and registrar.cache_count == 1  # 1 > 0, but no other entry
    with pytest.raises(Rejected) as refused:
        registrar.evict_least_recently_used(only)
    assert refused.value.clause == 2 and registrar.entry("A") is only
    assert check_cache_is_bounded(registrar.cache_entries, registrar.config) == []


# Invariants -------------------------------------------------------------


def run_every_rule(registrar: Registrar, store: DictAccountStore, clock: FakeClock, journal: Journal) -> list[str]:
    """Drive every state-changing rule once, collecting invariant violations after each."""
    problems: list[str] = []

    def step() -> None:
        clock.tick()
        problems.extend(registrar.invariant_violations())

    transfer = make_request("A", counterparty_id="B", amount=10)
    read = read_for(registrar, transfer)  # BeginRead + LoadOnMiss (+ eviction)
    step()
    read_for(registrar, make_request("A", counterparty_id="B", request_id="r2"))  # ServeFromCache
    step()
    for account_id in "CDE":
        read_for(registrar, make_request(account_id, request_id="x" + account_id))  # eviction pressure
        step()
    # The Ledger commits the transfer; write-through follows.
    store.accounts["A"] = make_account("A", balance=990, version=4)
    store.accounts["B"] = make_account("B", balance=1_010, version=4)
    committed = make_proposal(transfer, ProposalStatus.committed, account_delta=-10, counter_delta=10,
                              expected_primary=read.primary_version or 0,
                              expected_counter=read.counter_version or 0)
    registrar.on_proposal_committed(committed)
    step()
    registrar.reread_after_conflict(make_proposal(make_request("C", request_id="c"), ProposalStatus.conflicted))
    step()
    if registrar.entry("C") is not None:
        registrar.flush_account(responder(), "C")
    step()
    read_for(registrar, make_request("D", request_id="pending"), resolve=False)
    journal.epoch += 1
    registrar.on_epoch_grant_created(EpochGrant(epoch=journal.epoch, node_id="n2", granted_at=clock.now))
    step()
    read_for(registrar, make_request("A", counterparty_id="B", request_id="after"))
    step()
    return problems


def invariant_registrar() -> tuple[Registrar, DictAccountStore, FakeClock, Journal]:
    return make_registrar(*(make_account(i) for i in "ABCDE"), max_entries=3)


@pytest.mark.allium("invariant.OneEntryPerAccount")
def test_one_entry_per_account_holds_after_every_rule() -> None:
    registrar, store, clock, journal = invariant_registrar()
    assert run_every_rule(registrar, store, clock, journal) == []
    ids = [e.account_id for e in registrar.cache_entries]
    assert len(ids) == len(set(ids))
    # Same-account transfers still yield one entry.
    read_for(registrar, make_request("A", counterparty_id="A", request_id="same"))
    assert check_one_entry_per_account(registrar.cache_entries) == []
    twin = [CacheEntry(account_id="X", present=True, balance_minor=0, version=1, epoch=1, last_used_at=T0)
            for _ in range(2)]
    assert check_one_entry_per_account(twin) == ["OneEntryPerAccount: two entries for 'X'"]


@pytest.mark.allium("invariant.CacheIsFromCurrentEpoch")
def test_cache_is_from_current_epoch_after_every_rule() -> None:
    registrar, store, clock, journal = invariant_registrar()
    assert run_every_rule(registrar, store, clock, journal) == []
    assert all(e.epoch == journal.epoch for e in registrar.cache_entries)
    # Before the grant is applied the check sees old entries as violations.
    journal.epoch += 1
    assert check_cache_is_from_current_epoch(registrar.cache_entries, journal) != []
    registrar.invalidate_on_epoch_change(EpochGrant(epoch=journal.epoch, node_id="n3", granted_at=clock.now))
    assert check_cache_is_from_current_epoch(registrar.cache_entries, journal) == []


@pytest.mark.allium("invariant.CacheNeverAhead")
def test_cache_never_ahead_of_the_ledger_after_every_rule() -> None:
    registrar, store, clock, journal = invariant_registrar()
    assert run_every_rule(registrar, store, clock, journal) == []
    for e in registrar.cache_entries:
        stored = store.accounts.get(e.account_id)
        assert e.version <= (stored.version if stored is not None else 0)
    ahead = CacheEntry(account_id="A", present=True, balance_minor=0, version=99, epoch=1, last_used_at=T0)
    assert check_cache_never_ahead([ahead], store.accounts) != []
    ghost = CacheEntry(account_id="Q", present=False, balance_minor=0, version=0, epoch=1, last_used_at=T0)
    assert check_cache_never_ahead([ghost], store.accounts) == []


@pytest.mark.allium("invariant.CacheIsBounded")
def test_cache_is_bounded_after_every_rule() -> None:
    registrar, store, clock, journal = invariant_registrar()
    assert run_every_rule(registrar, store, clock, journal) == []
    assert registrar.cache_count <= registrar.config.max_entries + 1
    for i in range(20):
        store.accounts[f"N{i}"] = make_account(f"N{i}")
        read_for(registrar, make_request(f"N{i}", request_id=f"n{i}"))
        assert registrar.cache_count <= registrar.config.max_entries + 1
    entries = registrar.cache_entries
    assert check_cache_is_bounded(entries, Config(max_entries=len(entries) - 2)) != []
    registrar.assert_invariants()
    registrar.config = Config(max_entries=0)
    with pytest.raises(InvariantViolation):
        registrar.assert_invariants()


def test_invalidated_slots_are_reclaimed_physically() -> None:
    registrar, store, clock, journal = make_registrar(*(make_account(i) for i in "ABCD"), max_entries=2)
    read_for(registrar, make_request("A", counterparty_id="B"))
    journal.epoch = 2
    registrar.on_epoch_grant_created(EpochGrant(epoch=2, node_id="n2", granted_at=clock.now))
    read_for(registrar, make_request("C", counterparty_id="D"))
    assert registrar._cache.physical_size() <= registrar.config.max_entries + 1
    assert sorted(e.account_id for e in registrar.cache_entries) == ["C", "D"]


# Actor and surface ------------------------------------------------------


@pytest.mark.allium("surface-actor.CacheMaintenance")
def test_cache_maintenance_faces_responders_only() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    read_for(registrar, make_request("A"))
    entry = registrar.entry("A")
    assert entry is not None
    assert is_cache_responder(responder()) and not is_cache_responder(observer())
    with pytest.raises(AccessDenied):
        CacheMaintenance(registrar, observer(), entry)
    surface = CacheMaintenance(registrar, responder(), entry)
    assert surface.responder.role == OperatorRole.responder


@pytest.mark.allium("surface-exposure.CacheMaintenance")
def test_cache_maintenance_exposes_the_entry() -> None:
    registrar, _, clock, _ = make_registrar(make_account("A", version=6))
    read_for(registrar, make_request("A"))
    entry = registrar.entry("A")
    assert entry is not None
    shown: dict[str, Any] = CacheMaintenance(registrar, responder(), entry).exposes()
    assert shown == {"account_id": "A", "version": 6, "epoch": 1, "last_used_at": clock.now}
    assert shown["account_id"] == entry.account_id and shown["last_used_at"] == entry.last_used_at


@pytest.mark.allium("surface-provides.CacheMaintenance")
def test_cache_maintenance_offers_flush_while_the_entry_exists() -> None:
    registrar, _, _, _ = make_registrar(make_account("A"))
    read_for(registrar, make_request("A"))
    entry = registrar.entry("A")
    assert entry is not None
    surface = CacheMaintenance(registrar, responder(), entry)
    assert surface.provides() == {"FlushAccount"}
    surface.flush_account()
    assert registrar.entry("A") is None
    assert surface.provides() == set()
    with pytest.raises(Rejected):
        surface.flush_account()
