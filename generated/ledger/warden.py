"""Unit `warden` (warden.allium): idempotency and deduplication.

The in-memory index of recent idempotency keys on the primary. A new key is
admitted for evaluation; a repeated key is answered without evaluation: with
the original answer if one exists, as pending if the original is still in
flight, or as a conflict if the body differs.

The Warden is a fast path, not the source of truth (settled decision "Is the
dedup window what guarantees exactly-once?"): the Ledger's unique key enforces
exactly-once for all time, so expiry, eviction and rebuild may be aggressive.

Layout:

* ``DedupEntry`` / ``Rebuild``: the entities, with guarded status lifecycles.
* Event values emitted by the rules: ``AnswerReplayed``, ``DuplicateInFlight``,
  ``DuplicateResolved``, ``RequestIdConflict``, ``IndexSaturated`` and the
  provided trigger ``WardenRebuilt``; plus ``DedupEntryCreated`` and
  ``RebuildDone`` notifications for units that trigger on
  ``DedupEntry.created`` (registrar) and ``Rebuild.status becomes done``
  (cluster).
* ``Warden``: the index (``given { journal }``, injected clock), one method per
  rule, ``check_*`` invariants.
* ``RebuildLoader``: the surface through which the new primary streams the
  committed outcomes of the window into a loading Rebuild.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from allium.verify import implements

from ledger.core import (
    AccessDenied,
    InvariantViolation,
    Outcome,
    Rejected,
    Request,
    TransitionRejected,
)

__all__ = [
    "Config",
    "DedupEntryStatus",
    "RebuildStatus",
    "DedupEntry",
    "Rebuild",
    "AnswerReplayed",
    "DuplicateInFlight",
    "DuplicateResolved",
    "RequestIdConflict",
    "IndexSaturated",
    "WardenRebuilt",
    "DedupEntryCreated",
    "RebuildDone",
    "Warden",
    "RebuildLoader",
    "DEDUP_ENTRY_TRANSITIONS",
    "REBUILD_TRANSITIONS",
    "check_dedup_entry_transition",
    "check_rebuild_transition",
    "check_one_entry_per_key",
    "check_replayed_answer_is_the_committed_one",
    "check_index_is_bounded",
    "check_dedup_entry_when_fields",
    "check_rebuild_when_fields",
]


# Config ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """config block of warden.allium."""

    #: How long an answered key is remembered after its answer.
    dedup_window: timedelta = timedelta(minutes=2)
    #: Hard bound on index entries (in flight plus answered).
    max_entries: int = 1_500_000


# Status enums and transition tables ------------------------------------------------


class DedupEntryStatus(str, enum.Enum):
    """DedupEntry.status: in_flight | answered."""

    in_flight = "in_flight"
    answered = "answered"


class RebuildStatus(str, enum.Enum):
    """Rebuild.status: loading | done."""

    loading = "loading"
    done = "done"


#: DedupEntry.status transitions { in_flight -> answered; terminal: answered }.
DEDUP_ENTRY_TRANSITIONS: Mapping[DedupEntryStatus, frozenset[DedupEntryStatus]] = {
    DedupEntryStatus.in_flight: frozenset({DedupEntryStatus.answered}),
    DedupEntryStatus.answered: frozenset(),
}

#: Rebuild.status transitions { loading -> done; terminal: done }.
REBUILD_TRANSITIONS: Mapping[RebuildStatus, frozenset[RebuildStatus]] = {
    RebuildStatus.loading: frozenset({RebuildStatus.done}),
    RebuildStatus.done: frozenset(),
}


def check_dedup_entry_transition(current: DedupEntryStatus, target: DedupEntryStatus) -> None:
    """Reject any DedupEntry.status change the transition table does not declare."""
    current, target = DedupEntryStatus(current), DedupEntryStatus(target)
    if target not in DEDUP_ENTRY_TRANSITIONS[current]:
        raise TransitionRejected(
            "DedupEntry.status", 0, f"undeclared transition {current.value} -> {target.value}"
        )


def check_rebuild_transition(current: RebuildStatus, target: RebuildStatus) -> None:
    """Reject any Rebuild.status change the transition table does not declare."""
    current, target = RebuildStatus(current), RebuildStatus(target)
    if target not in REBUILD_TRANSITIONS[current]:
        raise TransitionRejected(
            "Rebuild.status", 0, f"undeclared transition {current.value} -> {target.value}"
        )


# Entities ---------------------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class DedupEntry:
    """entity DedupEntry: one idempotency key in the index.

    ``outcome``, ``answered_at`` and ``expires_at`` are present exactly when
    status = answered (None while in flight). Status only moves
    in_flight -> answered; every assignment is checked.
    """

    client_id: str
    request_id: str
    fingerprint: str
    request: Request
    admitted_at: datetime
    replays: int = 0
    status: DedupEntryStatus = DedupEntryStatus.in_flight
    outcome: Outcome | None = None
    answered_at: datetime | None = None
    expires_at: datetime | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Guard the lifecycle on every assignment after construction.
        if name == "status":
            value = DedupEntryStatus(value)
            current = self.__dict__.get("status")
            if current is not None and current != value:
                check_dedup_entry_transition(current, value)
        object.__setattr__(self, name, value)

    @property
    def key(self) -> tuple[str, str]:
        """The idempotency key (client_id, request_id)."""
        return (self.client_id, self.request_id)

    @property
    def is_answered(self) -> bool:
        """status = answered."""
        return self.status == DedupEntryStatus.answered


@dataclass(eq=False, kw_only=True)
class Rebuild:
    """entity Rebuild: rebuilding the index after an epoch change.

    ``restored`` and ``finished_at`` are present exactly when status = done.
    """

    epoch: int
    node_id: str
    started_at: datetime
    status: RebuildStatus = RebuildStatus.loading
    restored: int | None = None
    finished_at: datetime | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "status":
            value = RebuildStatus(value)
            current = self.__dict__.get("status")
            if current is not None and current != value:
                check_rebuild_transition(current, value)
        object.__setattr__(self, name, value)

    @property
    def is_done(self) -> bool:
        """status = done."""
        return self.status == RebuildStatus.done


# Events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerReplayed:
    """Event AnswerReplayed(request, outcome): the stored answer, replayed as is."""

    request: Request
    outcome: Outcome


@dataclass(frozen=True)
class DuplicateInFlight:
    """Event DuplicateInFlight(request, original): a pending answer."""

    request: Request
    original: Request


@dataclass(frozen=True)
class DuplicateResolved:
    """Event DuplicateResolved(request): the duplicate needs no evaluation."""

    request: Request


@dataclass(frozen=True)
class RequestIdConflict:
    """Event RequestIdConflict(request, original): one id, two bodies."""

    request: Request
    original: Request


@dataclass(frozen=True)
class IndexSaturated:
    """Event IndexSaturated(evicted): an answered entry was evicted for room."""

    evicted: str


@dataclass(frozen=True)
class WardenRebuilt:
    """Trigger WardenRebuilt(rebuild, restored), provided by surface RebuildLoader."""

    rebuild: Rebuild
    restored: int


@dataclass(frozen=True)
class DedupEntryCreated:
    """Notification ``DedupEntry.created`` (registrar's BeginRead listens)."""

    entry: DedupEntry


@dataclass(frozen=True)
class RebuildDone:
    """Notification ``Rebuild.status becomes done`` (cluster's CompleteRecovery)."""

    rebuild: Rebuild


WardenEvent = (
    AnswerReplayed
    | DuplicateInFlight
    | DuplicateResolved
    | RequestIdConflict
    | IndexSaturated
    | DedupEntryCreated
    | RebuildDone
)

Listener = Callable[[Any], None]


class JournalLike(Protocol):
    """What the Warden reads of ``given { journal: ledger/Journal }``."""

    epoch: int


class ProposalLike(Protocol):
    """What RecordPriorAnswer reads of ledger/Proposal."""

    request: Request
    status: Any


class GrantLike(Protocol):
    """What StartRebuild reads of ledger/EpochGrant."""

    epoch: int
    node_id: str


OutcomeLookup = Callable[[str, str], "Outcome | None"]


def _value(x: Any) -> Any:
    """An enum member's value, or the value itself (robust to enum styles)."""
    return getattr(x, "value", x)


# Invariants -------------------------------------------------------------------------


def _violation(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise InvariantViolation(f"{name}: {why}")


def check_one_entry_per_key(entries: Iterable[DedupEntry]) -> None:
    """invariant OneEntryPerKey: distinct entries have distinct keys."""
    seen: dict[tuple[str, str], DedupEntry] = {}
    for e in entries:
        other = seen.get(e.key)
        _violation(
            other is None or other is e, "OneEntryPerKey", f"two entries for key {e.key}"
        )
        seen[e.key] = e


def check_replayed_answer_is_the_committed_one(entries: Iterable[DedupEntry]) -> None:
    """invariant ReplayedAnswerIsTheCommittedOne: an answered entry's outcome has its key."""
    for e in entries:
        if e.status == DedupEntryStatus.answered:
            o = e.outcome
            _violation(
                o is not None and o.client_id == e.client_id and o.request_id == e.request_id,
                "ReplayedAnswerIsTheCommittedOne",
                f"entry {e.key} holds outcome "
                f"{None if o is None else (o.client_id, o.request_id)}",
            )


def check_index_is_bounded(count: int, config: Config) -> None:
    """invariant IndexIsBounded: DedupEntries.count <= config.max_entries + 1."""
    _violation(
        count <= config.max_entries + 1,
        "IndexIsBounded",
        f"{count} entries > max_entries + 1 = {config.max_entries + 1}",
    )


def check_dedup_entry_when_fields(entry: DedupEntry) -> None:
    """``when status = answered`` presence of outcome, answered_at and expires_at."""
    fields = (entry.outcome, entry.answered_at, entry.expires_at)
    if entry.status == DedupEntryStatus.answered:
        _violation(all(f is not None for f in fields), "DedupEntry.when", "answered entry lacks a field")
    else:
        _violation(all(f is None for f in fields), "DedupEntry.when", "in-flight entry has an answer field")


def check_rebuild_when_fields(rebuild: Rebuild) -> None:
    """``when status = done`` presence of restored and finished_at."""
    fields = (rebuild.restored, rebuild.finished_at)
    if rebuild.status == RebuildStatus.done:
        _violation(all(f is not None for f in fields), "Rebuild.when", "done rebuild lacks a field")
    else:
        _violation(all(f is None for f in fields), "Rebuild.when", "loading rebuild has a done field")


# The Warden -------------------------------------------------------------------------


class Warden:
    """The dedup index on the primary, and the rules of warden.allium.

    ``journal`` is the spec's ``given``; ``clock`` is the injected ``now``;
    ``outcome_lookup(client_id, request_id)`` resolves
    ``core/Outcome{client_id, request_id}`` for RecordPriorAnswer (for
    example ``LedgerStore.outcome_for``). Listeners receive every emitted
    event value, in emission order; ``events`` keeps them too.
    """

    def __init__(
        self,
        journal: JournalLike,
        clock: Callable[[], datetime],
        config: Config = Config(),
        *,
        outcome_lookup: OutcomeLookup | None = None,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.config = config
        self.outcome_lookup = outcome_lookup
        self._entries: dict[tuple[str, str], DedupEntry] = {}
        # Answered entries in answer order = expires_at order (constant
        # window): the amortised FIFO of the EntryExpires guidance. Stale
        # items (entries already removed) are skipped lazily when popped.
        self._answered: deque[DedupEntry] = deque()
        self.rebuilds: list[Rebuild] = []
        self.events: list[Any] = []
        self._listeners: list[Listener] = []

    # -- plumbing ---------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Register a listener for emitted events."""
        self._listeners.append(listener)

    def _emit(self, event: Any) -> None:
        self.events.append(event)
        for listener in list(self._listeners):
            listener(event)

    def now(self) -> datetime:
        """The injected clock."""
        return self.clock()

    # -- queries ----------------------------------------------------------------

    @property
    def entries(self) -> list[DedupEntry]:
        """DedupEntries (all live entries)."""
        return list(self._entries.values())

    @property
    def count(self) -> int:
        """DedupEntries.count."""
        return len(self._entries)

    def entry(self, client_id: str, request_id: str) -> DedupEntry | None:
        """DedupEntry{client_id, request_id}, or None."""
        return self._entries.get((client_id, request_id))

    def _is_live(self, entry: DedupEntry) -> bool:
        return self._entries.get(entry.key) is entry

    def oldest_answered(self) -> DedupEntry | None:
        """oldest_answered(DedupEntries): the head of the answer FIFO, if any."""
        while self._answered and not self._is_live(self._answered[0]):
            self._answered.popleft()  # drop stale items left by other removals
        return self._answered[0] if self._answered else None

    def _remove(self, entry: DedupEntry) -> None:
        """not exists entry (the FIFO item becomes stale and is skipped later)."""
        if self._is_live(entry):
            del self._entries[entry.key]

    # -- classification ---------------------------------------------------------

    def on_request_created(
        self, request: Request
    ) -> DedupEntry | AnswerReplayed | DuplicateInFlight | RequestIdConflict:
        """Trigger ``core/Request.created``: classify by exactly one of four rules.

        Due entries are expired first (EntryExpires guidance: pop the FIFO
        head on every admission), so an expired key is admitted afresh.
        Returns the new entry (AdmitRequest) or the rule's main event.
        """
        self.expire_due()
        entry = self.entry(request.client_id, request.request_id)
        if entry is None:
            return self.admit_request(request)
        if entry.fingerprint != request.fingerprint:
            return self.reject_reused_request_id(request)
        if entry.status == DedupEntryStatus.answered:
            return self.replay_answer(request)
        return self.hold_duplicate_in_flight(request)

    @implements("AdmitRequest")
    def admit_request(self, request: Request) -> DedupEntry:
        """rule AdmitRequest: a new key becomes an in-flight entry."""
        if self.entry(request.client_id, request.request_id) is not None:
            raise Rejected("AdmitRequest", 1, f"an entry exists for {(request.client_id, request.request_id)}")
        entry = DedupEntry(
            client_id=request.client_id,
            request_id=request.request_id,
            fingerprint=request.fingerprint,
            request=request,
            admitted_at=self.now(),
            replays=0,
            status=DedupEntryStatus.in_flight,
        )
        self._entries[entry.key] = entry
        self._on_entry_created(entry)
        return entry

    def _on_entry_created(self, entry: DedupEntry) -> None:
        """Trigger ``DedupEntry.created``: EvictOldestAnswer if over the bound, then notify."""
        if self.count > self.config.max_entries and self.oldest_answered() is not None:
            self.evict_oldest_answer(entry)
        self._emit(DedupEntryCreated(entry))

    def _existing(self, request: Request, rule: str) -> DedupEntry:
        entry = self.entry(request.client_id, request.request_id)
        if entry is None:
            raise Rejected(rule, 1, f"no entry for {(request.client_id, request.request_id)}")
        return entry

    @implements("ReplayAnswer")
    def replay_answer(self, request: Request) -> AnswerReplayed:
        """rule ReplayAnswer: a duplicate of an answered key gets the stored Outcome.

        The stored Outcome object is replayed as is (original committed_at and
        sequence); the Ledger is not re-read on this path.
        """
        entry = self._existing(request, "ReplayAnswer")
        if entry.fingerprint != request.fingerprint:
            raise Rejected("ReplayAnswer", 2, "fingerprint differs from the entry's")
        if entry.status != DedupEntryStatus.answered:
            raise Rejected("ReplayAnswer", 3, "entry is not answered")
        assert entry.outcome is not None
        entry.replays = entry.replays + 1
        event = AnswerReplayed(request=request, outcome=entry.outcome)
        self._emit(event)
        self._emit(DuplicateResolved(request=request))
        return event

    @implements("HoldDuplicateInFlight")
    def hold_duplicate_in_flight(self, request: Request) -> DuplicateInFlight:
        """rule HoldDuplicateInFlight: a duplicate of an in-flight key gets a pending answer."""
        entry = self._existing(request, "HoldDuplicateInFlight")
        if entry.fingerprint != request.fingerprint:
            raise Rejected("HoldDuplicateInFlight", 2, "fingerprint differs from the entry's")
        if entry.status != DedupEntryStatus.in_flight:
            raise Rejected("HoldDuplicateInFlight", 3, "entry is not in flight")
        entry.replays = entry.replays + 1
        event = DuplicateInFlight(request=request, original=entry.request)
        self._emit(event)
        self._emit(DuplicateResolved(request=request))
        return event

    @implements("RejectReusedRequestId")
    def reject_reused_request_id(self, request: Request) -> RequestIdConflict:
        """rule RejectReusedRequestId: same key, different body: a client error.

        Never evaluated; the original entry is left untouched.
        """
        entry = self._existing(request, "RejectReusedRequestId")
        if entry.fingerprint == request.fingerprint:
            raise Rejected("RejectReusedRequestId", 2, "fingerprint equals the entry's")
        event = RequestIdConflict(request=request, original=entry.request)
        self._emit(event)
        return event

    # -- answers and expiry -----------------------------------------------------

    def _answer(self, entry: DedupEntry, outcome: Outcome) -> None:
        """The shared ensures of RecordAnswer / RecordPriorAnswer, applied together."""
        now = self.now()
        check_dedup_entry_transition(entry.status, DedupEntryStatus.answered)
        entry.outcome = outcome
        entry.answered_at = now
        entry.expires_at = now + self.config.dedup_window
        entry.status = DedupEntryStatus.answered
        self._answered.append(entry)

    @implements("RecordAnswer")
    def record_answer(self, outcome: Outcome) -> DedupEntry:
        """rule RecordAnswer: trigger ``core/Outcome.created``; the entry is answered."""
        entry = self.entry(outcome.client_id, outcome.request_id)
        if entry is None:
            raise Rejected("RecordAnswer", 1, f"no entry for {(outcome.client_id, outcome.request_id)}")
        if entry.status != DedupEntryStatus.in_flight:
            raise Rejected("RecordAnswer", 2, "entry is not in flight")
        self._answer(entry, outcome)
        return entry

    @implements("RecordPriorAnswer")
    def record_prior_answer(
        self, proposal: ProposalLike, prior: Outcome | None = None
    ) -> DedupEntry:
        """rule RecordPriorAnswer: trigger ``ledger/Proposal.status becomes duplicate``.

        The entry is answered with the outcome already on record for the key;
        ``prior`` may be passed in, otherwise it is looked up with
        ``outcome_lookup``.
        """
        client_id, request_id = proposal.request.client_id, proposal.request.request_id
        entry = self.entry(client_id, request_id)
        if entry is None:
            raise Rejected("RecordPriorAnswer", 1, f"no entry for {(client_id, request_id)}")
        if prior is None and self.outcome_lookup is not None:
            prior = self.outcome_lookup(client_id, request_id)
        if prior is None or (prior.client_id, prior.request_id) != (client_id, request_id):
            raise Rejected("RecordPriorAnswer", 2, f"no outcome on record for {(client_id, request_id)}")
        if entry.status != DedupEntryStatus.in_flight:
            raise Rejected("RecordPriorAnswer", 3, "entry is not in flight")
        self._answer(entry, prior)
        return entry

    @implements("EntryExpires")
    def entry_expires(self, entry: DedupEntry) -> None:
        """rule EntryExpires: temporal, ``entry.expires_at <= now``; the entry goes.

        Fires at the deadline, not before; once removed it cannot fire again.
        """
        if entry.status != DedupEntryStatus.answered:
            raise Rejected("EntryExpires", 1, "entry is not answered")
        if not self._is_live(entry):
            raise Rejected("EntryExpires", 0, "entry no longer exists (already expired)")
        assert entry.expires_at is not None
        if entry.expires_at > self.now():
            raise Rejected("EntryExpires", 0, "expires_at is still in the future")
        self._remove(entry)

    def expire_due(self) -> list[DedupEntry]:
        """Fire EntryExpires for every due entry by popping the FIFO head.

        Called on every admission and on the periodic (100 ms) tick; never
        scans the index.
        """
        now = self.now()
        expired: list[DedupEntry] = []
        while True:
            head = self.oldest_answered()
            if head is None or head.expires_at is None or head.expires_at > now:
                return expired
            self.entry_expires(head)
            self._answered.popleft()
            expired.append(head)

    def tick(self) -> list[DedupEntry]:
        """The periodic expiry tick."""
        return self.expire_due()

    @implements("EvictOldestAnswer")
    def evict_oldest_answer(self, entry: DedupEntry) -> IndexSaturated:
        """rule EvictOldestAnswer: trigger ``DedupEntry.created`` when over the bound.

        In-flight entries are never evicted. Sustained eviction is an alert
        (the IndexSaturated event), not an error.
        """
        if not self.count > self.config.max_entries:
            raise Rejected("EvictOldestAnswer", 1, f"count {self.count} <= max_entries")
        victim = self.oldest_answered()
        if victim is None:
            raise Rejected("EvictOldestAnswer", 2, "no answered entry to evict")
        self._answered.popleft()
        self._remove(victim)
        event = IndexSaturated(evicted=victim.request_id)
        self._emit(event)
        return event

    # -- rebuild after failover ---------------------------------------------------

    @implements("StartRebuild")
    def start_rebuild(self, grant: GrantLike) -> Rebuild:
        """rule StartRebuild: trigger ``ledger/EpochGrant.created``.

        Every entry goes, and a loading Rebuild is created for the grant.
        """
        self._entries.clear()
        self._answered.clear()
        rebuild = Rebuild(
            epoch=grant.epoch,
            node_id=grant.node_id,
            started_at=self.now(),
            status=RebuildStatus.loading,
        )
        self.rebuilds.append(rebuild)
        return rebuild

    @implements("FinishRebuild")
    def finish_rebuild(self, rebuild: Rebuild, restored: int) -> Rebuild:
        """rule FinishRebuild: trigger ``WardenRebuilt(rebuild, restored)``."""
        if rebuild.status != RebuildStatus.loading:
            raise Rejected("FinishRebuild", 1, "rebuild is not loading")
        if rebuild.epoch != self.journal.epoch:
            raise Rejected(
                "FinishRebuild", 2, f"rebuild epoch {rebuild.epoch} != journal epoch {self.journal.epoch}"
            )
        check_rebuild_transition(rebuild.status, RebuildStatus.done)
        rebuild.restored = restored
        rebuild.finished_at = self.now()
        rebuild.status = RebuildStatus.done
        self._emit(RebuildDone(rebuild))
        return rebuild

    def on_warden_rebuilt(self, event: WardenRebuilt) -> Rebuild:
        """Route the provided trigger WardenRebuilt to FinishRebuild."""
        return self.finish_rebuild(event.rebuild, event.restored)

    def restore(self, outcome: Outcome) -> DedupEntry | None:
        """Put one committed outcome of the window back as an answered entry.

        Part of loading a Rebuild (StartRebuild guidance): ``answered_at`` is
        the commit time, so it expires a window after its commit. Returns None
        when the key is already present (newest first: the first one wins).
        """
        request = outcome.request
        key = (outcome.client_id, outcome.request_id)
        if key in self._entries:
            return None
        committed_at = outcome.committed_at
        entry = DedupEntry(
            client_id=outcome.client_id,
            request_id=outcome.request_id,
            fingerprint=request.fingerprint,
            request=request,
            admitted_at=committed_at,
            replays=0,
            status=DedupEntryStatus.in_flight,
        )
        entry.outcome = outcome
        entry.answered_at = committed_at
        entry.expires_at = committed_at + self.config.dedup_window
        entry.status = DedupEntryStatus.answered
        self._entries[key] = entry
        # Streamed newest first, so each restored entry is older than those
        # already in the FIFO: it goes to the head.
        self._answered.appendleft(entry)
        return entry

    # -- invariants ------------------------------------------------------------------

    def check_invariants(self) -> None:
        """All of warden.allium's invariants over the live index."""
        entries = self.entries
        check_one_entry_per_key(entries)
        check_replayed_answer_is_the_committed_one(entries)
        check_index_is_bounded(len(entries), self.config)
        for e in entries:
            check_dedup_entry_when_fields(e)
        for r in self.rebuilds:
            check_rebuild_when_fields(r)


# Surface RebuildLoader ------------------------------------------------------------------


class RebuildLoader:
    """surface RebuildLoader: context ``rebuild: Rebuild where status = loading``.

    Exposes the rebuild's epoch, node_id and started_at; provides
    ``WardenRebuilt(rebuild, restored)`` while the rebuild is loading. The
    surface declares no facing actor; its context is the access rule, so it
    can only be opened on (and used while) a loading Rebuild of this Warden.
    """

    PROVIDES: tuple[str, ...] = ("WardenRebuilt",)

    def __init__(self, warden: Warden, rebuild: Rebuild) -> None:
        if not any(r is rebuild for r in warden.rebuilds):
            raise AccessDenied("RebuildLoader", 0, "rebuild does not belong to this warden")
        if rebuild.status != RebuildStatus.loading:
            raise AccessDenied("RebuildLoader", 0, "context requires rebuild.status = loading")
        self._warden = warden
        self._rebuild = rebuild

    # exposes ----------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """rebuild.epoch."""
        return self._rebuild.epoch

    @property
    def node_id(self) -> str:
        """rebuild.node_id."""
        return self._rebuild.node_id

    @property
    def started_at(self) -> datetime:
        """rebuild.started_at."""
        return self._rebuild.started_at

    # provides -----------------------------------------------------------------------

    def available(self) -> tuple[str, ...]:
        """The provided operations available now (none once the rebuild is done)."""
        return self.PROVIDES if self._rebuild.status == RebuildStatus.loading else ()

    def warden_rebuilt(self, restored: int) -> Rebuild:
        """Provided trigger WardenRebuilt(rebuild, restored) -> FinishRebuild."""
        if "WardenRebuilt" not in self.available():
            raise AccessDenied("RebuildLoader", 0, "WardenRebuilt is not provided: rebuild is done")
        return self._warden.on_warden_rebuilt(WardenRebuilt(rebuild=self._rebuild, restored=restored))

    def load(self, outcomes_newest_first: Iterable[Outcome]) -> Rebuild:
        """Stream the window's committed outcomes in, then provide WardenRebuilt.

        ``outcomes_newest_first`` is consumed lazily (never materialised):
        loading stops at the first outcome older than ``now - dedup_window``
        or once ``max_entries`` are restored.
        """
        warden = self._warden
        horizon = warden.now() - warden.config.dedup_window
        restored = 0
        for outcome in _newest_first_within(outcomes_newest_first, horizon):
            if restored >= warden.config.max_entries:
                break
            if warden.restore(outcome) is not None:
                restored += 1
        return self.warden_rebuilt(restored)


def _newest_first_within(outcomes: Iterable[Outcome], horizon: datetime) -> Iterator[Outcome]:
    """Outcomes with committed_at >= horizon, from a newest-first stream."""
    for outcome in outcomes:
        if outcome.committed_at < horizon:
            return
        yield outcome
