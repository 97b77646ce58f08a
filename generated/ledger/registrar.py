"""Unit `registrar` (registrar.allium): the account cache in front of the Ledger.

For each admitted request the Registrar produces a ReadSet (a snapshot of the
accounts the request names) from a bounded in-memory cache, loads from the
Ledger on a miss, writes through on commit and never serves a value from an
earlier epoch. The cache is an optimisation with a safety net: every decision
carries the versions it read and the Ledger refuses stale versions, so a
cache bug costs a retry, never a wrong balance.

Public names (stable; other units import them):

* ``ReadSource``, ``ReadSetStatus``           - enums (spec enum / ReadSet.status)
* ``CacheEntry``, ``ReadSet``                 - entities
* ``Config``                                  - the unit's config block
* ``Registrar``                               - the rules, over ``given journal``
* ``AccountStore``, ``DictAccountStore``      - the storage read LoadOnMiss uses
* ``CacheMaintenance``, ``is_cache_responder`` - surface and actor
* ``check_*`` functions                       - the invariants, callable by tests

Coupling to dependency units: ``ledger.core`` enums and failure types, and the
spec fields of ``ledger.ledger`` Journal / Proposal / EpochGrant and
``ledger.warden`` DedupEntry, read duck-typed.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from allium.verify import implements

from ledger.core import (
    AccessDenied,
    AccountStatus,
    InvariantViolation,
    OperationKind,
    OperatorRole,
    Rejected,
    Request,
    TransitionRejected,
    Verdict,
)

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from ledger.core import Operator
    from ledger.ledger import EpochGrant, Journal, Proposal
    from ledger.warden import DedupEntry

Clock = Callable[[], datetime]

__all__ = [
    "AccountStore",
    "CacheEntry",
    "CacheMaintenance",
    "Config",
    "DictAccountStore",
    "ReadSet",
    "ReadSetStatus",
    "ReadSource",
    "Registrar",
    "TERMINAL",
    "TRANSITIONS",
    "check_cache_is_bounded",
    "check_cache_is_from_current_epoch",
    "check_cache_never_ahead",
    "check_one_entry_per_account",
    "is_cache_responder",
]


# Enumerations ---------------------------------------------------------


class ReadSource(str, enum.Enum):
    """enum ReadSource { cache | storage }."""

    cache = "cache"
    storage = "storage"


class ReadSetStatus(str, enum.Enum):
    """ReadSet.status: loading | ready | abandoned."""

    loading = "loading"
    ready = "ready"
    abandoned = "abandoned"


# `transitions status { ... }` of entity ReadSet: the only legal edges.
TRANSITIONS: dict[ReadSetStatus, frozenset[ReadSetStatus]] = {
    ReadSetStatus.loading: frozenset({ReadSetStatus.ready, ReadSetStatus.abandoned}),
    ReadSetStatus.ready: frozenset(),
    ReadSetStatus.abandoned: frozenset(),
}
TERMINAL: frozenset[ReadSetStatus] = frozenset({ReadSetStatus.ready, ReadSetStatus.abandoned})

# `field: T when status = ready` clauses of ReadSet. Required ones must be set
# exactly when ready; optional ones (`T?`) may be null even when ready, but
# must be null otherwise.
WHEN_REQUIRED: tuple[str, ...] = (
    "source",
    "primary_present",
    "primary_balance_minor",
    "primary_version",
    "counter_present",
    "counter_balance_minor",
    "counter_version",
    "ready_at",
)
WHEN_OPTIONAL: tuple[str, ...] = ("primary_status", "counter_status")


def _value(x: Any) -> Any:
    """The plain spec value of an enum member (or the value itself).

    Why: dependency units may hand us their own enum classes or plain strings;
    comparing on values keeps the coupling to the spec's names only.
    """
    return getattr(x, "value", x)


# Config ---------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """config block of registrar.allium."""

    # Cached accounts per node; about 120 bytes each, so ~240 MB by default.
    max_entries: int = 2_000_000


# Entities -------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class CacheEntry:
    """entity CacheEntry: one cached account snapshot, tagged with its epoch.

    ``present = false`` caches a missing account too, so a burst of requests
    against a wrong id does not hammer storage (LoadOnMiss guidance).
    """

    account_id: str
    present: bool
    account_status: AccountStatus | None = None
    balance_minor: int
    version: int
    epoch: int
    last_used_at: datetime


@dataclass(eq=False, kw_only=True)
class ReadSet:
    """entity ReadSet: the snapshot one attempt at one request is evaluated against.

    The ``when status = ready`` fields are ``None`` until the read is ready.
    """

    request: Request
    attempt: int
    epoch: int
    requested_at: datetime
    status: ReadSetStatus = ReadSetStatus.loading
    source: ReadSource | None = None
    primary_present: bool | None = None
    primary_status: AccountStatus | None = None
    primary_balance_minor: int | None = None
    primary_version: int | None = None
    counter_present: bool | None = None
    counter_status: AccountStatus | None = None
    counter_balance_minor: int | None = None
    counter_version: int | None = None
    ready_at: datetime | None = None

    def __post_init__(self) -> None:
        # Accept the spec's plain value ("loading") as well as the member.
        self.status = ReadSetStatus(self.status)

    @property
    def is_transfer(self) -> bool:
        """Derived ReadSet.is_transfer: request.counterparty_id != null."""
        return self.request.counterparty_id is not None

    def can_transition(self, to: ReadSetStatus | str) -> bool:
        """Whether `status -> to` is a declared edge of ReadSet.status."""
        return ReadSetStatus(to) in TRANSITIONS[self.status]

    def transition(self, to: ReadSetStatus | str) -> None:
        """Move ReadSet.status along a declared edge; anything else raises TransitionRejected."""
        target = ReadSetStatus(to)
        if target not in TRANSITIONS[self.status]:
            raise TransitionRejected(
                "ReadSet.status", 0, f"{self.status.value} -> {target.value} is not a declared transition"
            )
        self.status = target

    def when_field_violations(self) -> list[str]:
        """Fields present outside (or absent inside) their `when status = ready` state."""
        ready = self.status is ReadSetStatus.ready
        problems = []
        for name in WHEN_REQUIRED:
            present = getattr(self, name) is not None
            if present != ready:
                problems.append(f"ReadSet.{name} {'present' if present else 'absent'} in status {self.status.value}")
        for name in WHEN_OPTIONAL:
            if not ready and getattr(self, name) is not None:
                problems.append(f"ReadSet.{name} present in status {self.status.value}")
        return problems


# What this unit reads of its dependencies ------------------------------


class AccountLike(Protocol):
    """The spec fields of core/Account that a storage read yields."""

    account_id: str
    status: Any
    balance_minor: int
    version: int


class AccountStore(Protocol):
    """The Ledger read behind LoadOnMiss: one call for all the ids it names.

    Returns the accounts that exist, keyed by id; missing ids are simply absent.
    One call for both accounts of a transfer means both snapshots are taken
    at the same commit sequence (LoadOnMiss guidance).
    """

    def read_accounts(self, account_ids: Sequence[str]) -> Mapping[str, AccountLike]:
        """Read the named accounts in one storage round trip."""
        ...


class DictAccountStore:
    """An AccountStore over a dict of core/Account (tests, and in-memory deployments)."""

    def __init__(self, accounts: Mapping[str, AccountLike] | Iterable[AccountLike] = ()) -> None:
        if isinstance(accounts, Mapping):
            self.accounts: dict[str, AccountLike] = dict(accounts)
        else:
            self.accounts = {a.account_id: a for a in accounts}
        self.reads: list[tuple[str, ...]] = []  # every read_accounts call, for observability

    def read_accounts(self, account_ids: Sequence[str]) -> Mapping[str, AccountLike]:
        """Read the named accounts in one call."""
        self.reads.append(tuple(account_ids))
        return {i: self.accounts[i] for i in account_ids if i in self.accounts}


class _DedupEntryLike(Protocol):
    status: Any
    request: Request


class _OperatorLike(Protocol):
    role: Any


# The account cache: epoch-tagged, CLOCK-evicted -------------------------


class _ClockCache:
    """The physical store behind the spec's ``CacheEntries``.

    * Epoch tagging (InvalidateOnEpochChange guidance): every slot carries the
      generation it was stored in; invalidation bumps the generation in O(1)
      and older slots are logically absent. They are reclaimed lazily, by
      lookups and by the eviction hand. Because every slot alive at a bump
      becomes stale and new slots are appended behind them, stale slots
      always form a prefix of the ring, which the hand pops for free.
    * CLOCK (EvictLeastRecentlyUsed guidance): the ring is insertion ordered;
      a hit only sets a reference bit (no list update on the hot path); the
      hand gives a referenced slot a second chance by clearing its bit and
      moving it behind the others.
    """

    def __init__(self) -> None:
        self._ring: OrderedDict[str, tuple[CacheEntry, int]] = OrderedDict()
        self._referenced: set[str] = set()
        self._generation = 0
        self._stale = 0  # slots in _ring from older generations

    # -- logical view (the spec's CacheEntries) --

    def get(self, account_id: str | None) -> CacheEntry | None:
        """CacheEntry{account_id: ...}: the live entry, or None."""
        if account_id is None:
            return None
        slot = self._ring.get(account_id)
        if slot is None:
            return None
        entry, generation = slot
        if generation != self._generation:
            self._drop(account_id)  # lazy reclaim of an invalidated slot
            return None
        return entry

    def live(self) -> list[CacheEntry]:
        """All live entries, in ring order."""
        return [e for e, g in self._ring.values() if g == self._generation]

    def count(self) -> int:
        """CacheEntries.count, in O(1)."""
        return len(self._ring) - self._stale

    def physical_size(self) -> int:
        """Slots held, live or awaiting reclaim."""
        return len(self._ring)

    # -- mutation --

    def put(self, entry: CacheEntry) -> None:
        """Store a new entry behind all others, with a clear reference bit."""
        self._drop(entry.account_id)
        self._ring[entry.account_id] = (entry, self._generation)

    def touch(self, account_id: str) -> None:
        """Mark a hit: set the reference bit only."""
        self._referenced.add(account_id)

    def delete(self, account_id: str) -> bool:
        """`not exists entry` for a live entry; False if there was none."""
        if self.get(account_id) is None:
            return False
        self._drop(account_id)
        return True

    def invalidate_all(self) -> None:
        """Make every current entry logically absent, in O(1)."""
        self._generation += 1
        self._stale = len(self._ring)
        self._referenced.clear()

    def reclaim_stale(self, keep: int) -> None:
        """Pop invalidated slots off the front of the ring until at most `keep` slots remain."""
        while len(self._ring) > keep and self._stale:
            account_id, (_, generation) = next(iter(self._ring.items()))
            if generation == self._generation:
                return  # prefix exhausted (cannot happen, but never pop a live slot)
            self._drop(account_id)

    def victim(self, exclude: CacheEntry | None) -> CacheEntry | None:
        """The CLOCK approximation of least_recently_used(CacheEntries).

        ``exclude`` (the entry whose creation triggered eviction) is never
        chosen: it has just been used, so it is the most recently used entry.
        """
        # Each live slot is passed at most twice (once to clear its bit);
        # the bound keeps the sweep finite when only `exclude` is left.
        for _ in range(2 * len(self._ring) + 2):
            if not self._ring:
                return None
            account_id, (entry, generation) = next(iter(self._ring.items()))
            if generation != self._generation:
                self._drop(account_id)  # already logically gone: reclaim for free
                continue
            if entry is exclude or account_id in self._referenced:
                self._referenced.discard(account_id)  # second chance
                self._ring.move_to_end(account_id)
                continue
            return entry
        return None

    def _drop(self, account_id: str) -> None:
        slot = self._ring.pop(account_id, None)
        self._referenced.discard(account_id)
        if slot is not None and slot[1] != self._generation:
            self._stale -= 1


# The rules ------------------------------------------------------------


class Registrar:
    """The rules of registrar.allium over ``given journal`` and the cache.

    Triggers from other units arrive through the ``on_*`` methods; each rule
    is also callable on its own. A rule whose ``requires`` fails raises
    ``ledger.core.Rejected`` (clause = the 1-based requires clause; 0 for the
    trigger's own condition) and changes nothing.
    """

    def __init__(
        self,
        journal: Journal,
        store: AccountStore,
        *,
        clock: Clock,
        config: Config | None = None,
        on_ready: Callable[[ReadSet], None] | None = None,
    ) -> None:
        self.journal = journal
        self.store = store
        self.clock = clock
        self.config = config or Config()
        # Subscriber of `ReadSet.status becomes ready` (the Clerk's StartRound).
        self.on_ready = on_ready
        self._cache = _ClockCache()
        # Only loading read sets are kept: ready/abandoned ones are terminal
        # and belong to whoever consumes them.
        self._loading: dict[int, ReadSet] = {}

    # -- views --

    @property
    def cache_entries(self) -> list[CacheEntry]:
        """The spec's ``CacheEntries``: every live entry."""
        return self._cache.live()

    @property
    def cache_count(self) -> int:
        """``CacheEntries.count``."""
        return self._cache.count()

    @property
    def loading_reads(self) -> list[ReadSet]:
        """``ReadSets where status = loading``."""
        return list(self._loading.values())

    def entry(self, account_id: str | None) -> CacheEntry | None:
        """``CacheEntry{account_id: account_id}``: the live entry or None."""
        return self._cache.get(account_id)

    # -- reading --

    @implements("BeginRead")
    def begin_read(self, entry: DedupEntry | _DedupEntryLike, *, resolve: bool = True) -> ReadSet:
        """rule BeginRead: an admitted (in-flight) request gets its first read set.

        With ``resolve`` the read set's creation immediately triggers
        ServeFromCache or LoadOnMiss (exactly one of them applies).
        """
        if _value(entry.status) != "in_flight":
            raise Rejected("BeginRead", 1, "entry.status = in_flight does not hold")
        read = self._create_read(entry.request, attempt=1)
        if resolve:
            self.on_read_set_created(read)
        return read

    def on_dedup_entry_created(self, event: Any) -> ReadSet | None:
        """Trigger `warden/DedupEntry.created`: BeginRead, if the entry is in flight.

        Accepts the warden's ``DedupEntryCreated`` notification (``.entry``)
        or the DedupEntry itself; returns the read set, or None when BeginRead
        does not apply.
        """
        entry = getattr(event, "entry", event)
        try:
            return self.begin_read(entry)
        except Rejected:
            return None  # requires entry.status = in_flight does not hold

    def on_read_set_created(self, read: ReadSet) -> ReadSet:
        """Trigger `ReadSet.created`: ServeFromCache on a hit, LoadOnMiss otherwise."""
        if read.status is not ReadSetStatus.loading:
            return read  # neither rule's first requires holds: nothing to do
        if self._misses(read):
            self.load_on_miss(read)
        else:
            self.serve_from_cache(read)
        return read

    def resolve_pending(self) -> list[ReadSet]:
        """Resolve every loading read set, batching all misses into one storage read.

        LoadOnMiss guidance: misses arriving together are served by one
        multi-key read, and a miss on an account another pending read also
        misses on is read once (coalesced). Read sets are resolved in
        creation order against that one snapshot, which is what resolving
        them one by one would have produced.
        """
        pending = [r for r in self._loading.values() if r.status is ReadSetStatus.loading]
        wanted: list[str] = []
        for read in pending:
            if self._misses(read):
                for account_id in self._ids_of(read):
                    if account_id not in wanted:
                        wanted.append(account_id)
        snapshot = dict(self.store.read_accounts(wanted)) if wanted else {}
        queried = set(wanted)
        for read in pending:
            if not self._misses(read):
                self.serve_from_cache(read)
            elif queried.issuperset(self._ids_of(read)):
                self.load_on_miss(read, snapshot=snapshot)
            else:
                # A hit at planning time was evicted by an earlier load in this
                # batch: the snapshot does not cover it, so read it afresh
                # (absence from the snapshot must never read as "no account").
                self.load_on_miss(read)
        return pending

    @implements("ServeFromCache")
    def serve_from_cache(self, read: ReadSet) -> ReadSet:
        """rule ServeFromCache: both accounts are cached in the read's epoch."""
        if read.status is not ReadSetStatus.loading:
            raise Rejected("ServeFromCache", 1, "read.status = loading does not hold")
        p = self._cache.get(read.request.account_id)
        c = self._cache.get(read.request.counterparty_id)
        if not (p is not None and p.epoch == read.epoch):
            raise Rejected("ServeFromCache", 2, "no primary entry cached in the read's epoch")
        if read.is_transfer and not (c is not None and c.epoch == read.epoch):
            raise Rejected("ServeFromCache", 3, "no counterparty entry cached in the read's epoch")
        now = self.clock()
        read.transition(ReadSetStatus.ready)
        read.source = ReadSource.cache
        read.primary_present = p.present
        read.primary_status = p.account_status
        read.primary_balance_minor = p.balance_minor
        read.primary_version = p.version
        read.counter_present = c.present if c is not None else False
        read.counter_status = c.account_status if c is not None else None
        read.counter_balance_minor = c.balance_minor if c is not None else 0
        read.counter_version = c.version if c is not None else 0
        read.ready_at = now
        self._use(p, now)
        if c is not None:
            self._use(c, now)
        self._became_ready(read)
        return read

    @implements("LoadOnMiss")
    def load_on_miss(self, read: ReadSet, *, snapshot: Mapping[str, AccountLike] | None = None) -> ReadSet:
        """rule LoadOnMiss: a miss on either account reloads both from the Ledger in one read.

        ``snapshot`` is a storage read already taken for this read set (see
        ``resolve_pending``); without it the store is read here.
        """
        if read.status is not ReadSetStatus.loading:
            raise Rejected("LoadOnMiss", 1, "read.status = loading does not hold")
        if not self._misses(read):
            raise Rejected("LoadOnMiss", 2, "both accounts are cached in the read's epoch")
        ids = self._ids_of(read)
        # The storage read happens before any change, so a failing read leaves
        # everything as it was (ensures are all-or-nothing).
        accounts = snapshot if snapshot is not None else self.store.read_accounts(ids)
        a = accounts.get(read.request.account_id)
        b = accounts.get(read.request.counterparty_id) if read.is_transfer else None
        now = self.clock()
        read.transition(ReadSetStatus.ready)
        read.source = ReadSource.storage
        read.primary_present = a is not None
        read.primary_status = _status_of(a)
        read.primary_balance_minor = a.balance_minor if a is not None else 0
        read.primary_version = a.version if a is not None else 0
        read.counter_present = b is not None
        read.counter_status = _status_of(b)
        read.counter_balance_minor = b.balance_minor if b is not None else 0
        read.counter_version = b.version if b is not None else 0
        read.ready_at = now
        # `if exists p: not exists p`, then CacheEntry.created (each creation
        # triggers EvictLeastRecentlyUsed before the next one, as in the spec).
        self._cache.delete(read.request.account_id)
        self._entry_created(self._snapshot_entry(read.request.account_id, a, read.epoch, now))
        if read.request.counterparty_id is not None:
            self._cache.delete(read.request.counterparty_id)
            self._entry_created(self._snapshot_entry(read.request.counterparty_id, b, read.epoch, now))
        self._became_ready(read)
        return read

    @implements("RereadAfterConflict")
    def reread_after_conflict(self, proposal: Proposal) -> ReadSet:
        """rule RereadAfterConflict: drop both accounts' entries and read again for the next attempt."""
        if _value(proposal.status) != "conflicted":
            raise Rejected("RereadAfterConflict", 0, "proposal.status is not conflicted")
        self._cache.delete(proposal.request.account_id)
        if proposal.request.counterparty_id is not None:
            self._cache.delete(proposal.request.counterparty_id)
        read = self._create_read(proposal.request, attempt=proposal.attempt + 1)
        self.on_read_set_created(read)
        return read

    # -- write-through, invalidation, eviction --

    @implements("WriteThroughPrimary")
    def write_through_primary(self, proposal: Proposal) -> CacheEntry | None:
        """rule WriteThroughPrimary: apply the committed delta iff the entry holds the version read.

        Returns the updated entry, or None when the entry was dropped.
        """
        if _value(proposal.status) != "committed":
            raise Rejected("WriteThroughPrimary", 0, "proposal.status is not committed")
        if _value(proposal.verdict) != Verdict.accepted.value:
            raise Rejected("WriteThroughPrimary", 1, "proposal.verdict = accepted does not hold")
        p = self._cache.get(proposal.request.account_id)
        if p is None:
            raise Rejected("WriteThroughPrimary", 2, "no cached entry for the account")
        if p.version != proposal.expected_primary_version:
            # The entry is not the snapshot the decision read: drop it, the
            # next read reloads it (never guess a balance).
            self._cache.delete(p.account_id)
            return None
        closing = _value(proposal.request.kind) == OperationKind.close.value
        now = self.clock()
        p.present = True
        p.account_status = AccountStatus.closed if closing else AccountStatus.active
        p.balance_minor = p.balance_minor + proposal.account_delta_minor
        p.version = p.version + 1
        self._use(p, now)
        return p

    @implements("WriteThroughCounterparty")
    def write_through_counterparty(self, proposal: Proposal) -> CacheEntry | None:
        """rule WriteThroughCounterparty: as WriteThroughPrimary, for a transfer's counterparty."""
        if _value(proposal.status) != "committed":
            raise Rejected("WriteThroughCounterparty", 0, "proposal.status is not committed")
        if _value(proposal.verdict) != Verdict.accepted.value:
            raise Rejected("WriteThroughCounterparty", 1, "proposal.verdict = accepted does not hold")
        if _value(proposal.request.kind) != OperationKind.transfer.value:
            raise Rejected("WriteThroughCounterparty", 2, "proposal.request.kind = transfer does not hold")
        c = self._cache.get(proposal.request.counterparty_id)
        if c is None:
            raise Rejected("WriteThroughCounterparty", 3, "no cached entry for the counterparty")
        if c.version != proposal.expected_counter_version:
            self._cache.delete(c.account_id)
            return None
        now = self.clock()
        c.balance_minor = c.balance_minor + proposal.counterparty_delta_minor
        c.version = c.version + 1
        self._use(c, now)
        return c

    def on_proposal_committed(self, proposal: Proposal) -> None:
        """Trigger `Proposal.status becomes committed`: both write-through rules, each if it applies."""
        for rule in (self.write_through_primary, self.write_through_counterparty):
            try:
                rule(proposal)
            except Rejected:
                pass  # that rule's requires do not hold: it does not fire

    def on_proposal_conflicted(self, proposal: Proposal) -> ReadSet:
        """Trigger `Proposal.status becomes conflicted`: RereadAfterConflict."""
        return self.reread_after_conflict(proposal)

    @implements("InvalidateOnEpochChange")
    def invalidate_on_epoch_change(self, grant: EpochGrant) -> None:
        """rule InvalidateOnEpochChange: every cache entry ceases to exist, in O(1)."""
        self._cache.invalidate_all()

    @implements("AbandonLoadingReads")
    def abandon_loading_reads(self, grant: EpochGrant) -> list[ReadSet]:
        """rule AbandonLoadingReads: every loading read set is abandoned."""
        abandoned = list(self._loading.values())
        for read in abandoned:
            read.transition(ReadSetStatus.abandoned)
        self._loading.clear()
        return abandoned

    def on_epoch_grant_created(self, grant: EpochGrant) -> list[ReadSet]:
        """Trigger `EpochGrant.created`: both rules it fires, in one step."""
        self.invalidate_on_epoch_change(grant)
        return self.abandon_loading_reads(grant)

    @implements("FlushAccount")
    def flush_account(self, operator: Operator | _OperatorLike, account_id: str) -> None:
        """rule FlushAccount: a responder drops one cached account (changes latency, never results)."""
        if _value(operator.role) != OperatorRole.responder.value:
            raise Rejected("FlushAccount", 1, "operator.role = responder does not hold")
        if not self._cache.delete(account_id):
            raise Rejected("FlushAccount", 2, f"no cached entry for {account_id!r}")

    @implements("EvictLeastRecentlyUsed")
    def evict_least_recently_used(self, entry: CacheEntry) -> CacheEntry:
        """rule EvictLeastRecentlyUsed: over the bound, drop the (CLOCK-approximated) LRU entry.

        Returns the evicted victim.
        """
        if not self._cache.count() > self.config.max_entries:
            raise Rejected("EvictLeastRecentlyUsed", 1, "CacheEntries.count > config.max_entries does not hold")
        # ASSUMPTION: least_recently_used excludes the entry whose creation
        # triggered the rule: it was used at `now`, so it is never the least
        # recently used unless it is alone, and evicting it would undo the load.
        victim = self._cache.victim(exclude=entry)
        if victim is None:
            raise Rejected("EvictLeastRecentlyUsed", 2, "no least recently used entry to evict")
        self._cache.delete(victim.account_id)
        return victim

    # -- invariants --

    def invariant_violations(self) -> list[str]:
        """Every violated invariant of registrar.allium, as messages."""
        entries = self.cache_entries
        ledger_view = self.store.read_accounts([e.account_id for e in entries]) if entries else {}
        return [
            *check_one_entry_per_account(entries),
            *check_cache_is_from_current_epoch(entries, self.journal),
            *check_cache_never_ahead(entries, ledger_view),
            *check_cache_is_bounded(entries, self.config),
        ]

    def assert_invariants(self) -> None:
        """Raise InvariantViolation if any invariant fails."""
        problems = self.invariant_violations()
        if problems:
            raise InvariantViolation("; ".join(problems))

    # -- helpers --

    def _create_read(self, request: Request, *, attempt: int) -> ReadSet:
        read = ReadSet(
            request=request,
            attempt=attempt,
            epoch=self.journal.epoch,
            requested_at=self.clock(),
            status=ReadSetStatus.loading,
        )
        self._loading[id(read)] = read
        return read

    def _misses(self, read: ReadSet) -> bool:
        """LoadOnMiss's second requires; exactly the negation of ServeFromCache's."""
        p = self._cache.get(read.request.account_id)
        c = self._cache.get(read.request.counterparty_id)
        primary_hit = p is not None and p.epoch == read.epoch
        counter_hit = c is not None and c.epoch == read.epoch
        return not primary_hit or (read.is_transfer and not counter_hit)

    @staticmethod
    def _ids_of(read: ReadSet) -> list[str]:
        ids = [read.request.account_id]
        if read.request.counterparty_id is not None:
            ids.append(read.request.counterparty_id)
        return ids

    def _use(self, entry: CacheEntry, now: datetime) -> None:
        entry.last_used_at = now
        self._cache.touch(entry.account_id)

    def _snapshot_entry(self, account_id: str, account: AccountLike | None, epoch: int, now: datetime) -> CacheEntry:
        entry = CacheEntry(
            account_id=account_id,
            present=account is not None,
            account_status=_status_of(account),
            balance_minor=account.balance_minor if account is not None else 0,
            version=account.version if account is not None else 0,
            epoch=epoch,
            last_used_at=now,
        )
        self._cache.put(entry)
        return entry

    def _entry_created(self, entry: CacheEntry) -> None:
        """Trigger `CacheEntry.created`: EvictLeastRecentlyUsed, if it applies."""
        # Keep physical memory bounded too: slots invalidated by an epoch
        # change are reclaimed here, off the front of the ring.
        self._cache.reclaim_stale(keep=self.config.max_entries + 1)
        try:
            self.evict_least_recently_used(entry)
        except Rejected:
            pass  # within bounds: the rule does not fire

    def _became_ready(self, read: ReadSet) -> None:
        self._loading.pop(id(read), None)
        if self.on_ready is not None:
            self.on_ready(read)


def _status_of(account: AccountLike | None) -> AccountStatus | None:
    """``a?.status`` as core/AccountStatus."""
    return None if account is None else AccountStatus(_value(account.status))


# Invariants -----------------------------------------------------------


def check_one_entry_per_account(entries: Sequence[CacheEntry]) -> list[str]:
    """invariant OneEntryPerAccount: distinct entries name distinct accounts."""
    seen: set[str] = set()
    problems = []
    for e in entries:
        if e.account_id in seen:
            problems.append(f"OneEntryPerAccount: two entries for {e.account_id!r}")
        seen.add(e.account_id)
    return problems


def check_cache_is_from_current_epoch(entries: Sequence[CacheEntry], journal: Journal) -> list[str]:
    """invariant CacheIsFromCurrentEpoch: every cached value is from journal.epoch."""
    return [
        f"CacheIsFromCurrentEpoch: {e.account_id!r} cached in epoch {e.epoch}, journal is at {journal.epoch}"
        for e in entries
        if e.epoch != journal.epoch
    ]


def check_cache_never_ahead(entries: Sequence[CacheEntry], accounts: Mapping[str, AccountLike]) -> list[str]:
    """invariant CacheNeverAhead: e.version <= (core/Account{account_id}?.version ?? 0)."""
    problems = []
    for e in entries:
        account = accounts.get(e.account_id)
        stored = account.version if account is not None else 0
        if e.version > stored:
            problems.append(f"CacheNeverAhead: {e.account_id!r} cached at version {e.version} > stored {stored}")
    return problems


def check_cache_is_bounded(entries: Sequence[CacheEntry], config: Config) -> list[str]:
    """invariant CacheIsBounded: CacheEntries.count <= config.max_entries + 1."""
    if len(entries) > config.max_entries + 1:
        return [f"CacheIsBounded: {len(entries)} entries > {config.max_entries} + 1"]
    return []


# Actor and surface ----------------------------------------------------


def is_cache_responder(operator: Operator | _OperatorLike | Any) -> bool:
    """actor CacheResponder: identified_by core/Operator where role = responder."""
    return _value(getattr(operator, "role", None)) == OperatorRole.responder.value


class CacheMaintenance:
    """surface CacheMaintenance: what a responder sees of one cache entry, and may do to it.

    @guarantee FlushIsAlwaysSafe: flushing only removes the entry; the next
    read of the account misses and reloads it from the Ledger.
    """

    def __init__(self, registrar: Registrar, responder: Operator | _OperatorLike, entry: CacheEntry) -> None:
        if not is_cache_responder(responder):
            raise AccessDenied("CacheMaintenance", 0, "facing CacheResponder: operator is not a responder")
        self.registrar = registrar
        self.responder = responder
        self.entry = entry

    def exposes(self) -> dict[str, Any]:
        """The exposed items: entry.account_id, entry.version, entry.epoch, entry.last_used_at."""
        return {
            "account_id": self.entry.account_id,
            "version": self.entry.version,
            "epoch": self.entry.epoch,
            "last_used_at": self.entry.last_used_at,
        }

    def provides(self) -> set[str]:
        """Operations on offer: FlushAccount while the context entry still exists."""
        # FlushAccount requires `exists entry`; offer it only while it holds.
        live = self.registrar.entry(self.entry.account_id) is self.entry
        return {"FlushAccount"} if live else set()

    def flush_account(self) -> None:
        """FlushAccount(responder, entry.account_id)."""
        if "FlushAccount" not in self.provides():
            raise Rejected("FlushAccount", 2, "the context entry no longer exists")
        self.registrar.flush_account(self.responder, self.entry.account_id)
