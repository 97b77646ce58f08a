"""store.allium: the durable store (contract DurableStore) on SQLite and PostgreSQL.

Usage (other units call exactly these names)::

    store = open_store("sqlite:///path/to/ledger.db")   # or "postgresql://..."
    await store.open()            # OpenDatabase + Migrate: status opening -> ready
    epoch = await store.claim_epoch("n1", expected_epoch=0, lease_micros=1_500_000)
    ok = await store.renew_lease("n1", epoch, 1_500_000)
    lease = await store.current_lease()                            # Lease: who is primary
    results = await store.commit(epoch, [CommitItem(...), ...])   # list[CommitResult]
    rows = await store.accounts({"acc-1", "acc-2"})                # list[AccountRow]
    outcome = await store.find_outcome(client_id, request_id)      # core.Outcome | None
    offset = await store.next_offset(partition)                    # checkpoint, 1 when new
    recorded = await store.dead_letter(partition, offset, payload_digest, cause)
    await store.close()           # CloseDatabase: ready -> closed

``async with open_store(url) as store:`` opens and closes it too. A SQLite URL is
``sqlite:///`` followed by the file path, so an absolute path gives four slashes
(``sqlite:////run/ledger.db``); a PostgreSQL URL is handed to asyncpg unchanged
(unix-socket hosts and query settings such as ``search_path`` included).

Read helpers (for a launcher's invariant check, ``/healthz`` and ``/v1/nodes``):

- ``lease() -> Lease``: the same as ``current_lease()`` (kept for existing callers).
- ``journal() -> ledger.Journal``: epoch, primary_node_id, next_sequence.
- ``grants() -> list[ledger.EpochGrant]``: every epoch ever granted, in order.
- ``all_accounts() -> list[AccountRow]``: every account, sorted by account_id.
- ``books() -> core.Books``: net_inflow_minor, applied_outcomes, accepted_outcomes.
- ``outcome_count() -> int``: how many outcomes are stored.
- ``position(partition, offset) -> ledger.Position | None``.
- ``dead_letters() -> list[ledger.DeadLetter]``: held and acknowledged letters.
- ``heartbeat(node_id, status=..., epoch=..., url=...)`` records a node's liveness;
  ``nodes() -> list[NodeRow]`` lists every node that ever sent one.
- ``release_lease(node_id, epoch) -> bool``: a graceful primary lets its lease lapse now.
- ``clock_micros() -> int``: the store's clock (PostgreSQL's now(); the caller's
  wall clock on SQLite), the clock leases are measured on.
- ``violated_invariants() -> list[str]`` / ``check_invariants()``: the store-level
  invariants (LeaseHolderHoldsLatestGrant, MoneyIsConserved, NonNegativeBalance,
  BalanceWithinLimit, ClosedAccountIsEmpty, AppliedCountMatchesOutcomes) over one
  consistent snapshot.

Errors: a driver failure (locked file, lost connection, ...) and any call on a
store that is not ready raise ``StoreError``; a caller answers 503 for it.
A rule whose ``requires`` fails raises ``core.Rejected`` (OpenDatabase's URL check,
CommitItems' batch bound, Migrate on a closed store) or reports it by its return
value where the contract returns one (claim_epoch -> None, renew_lease -> False,
dead_letter -> False, a refused commit item -> CommitResult.refusal).

Both backends share every transaction body: each body is written once as an
``async def`` against ``_Tx``. PostgreSQL awaits asyncpg inside it; SQLite runs
the same body on one of the store's two database threads (writes on the writer
thread, read-only operations on the reader thread with a connection of its own,
so a read never queues behind a commit), where none of its awaits ever
suspends, so one operation is one thread hop and one transaction
(@invariant OneTransactionPerCall, @invariant SameBehaviourOnEveryBackend).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import re
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar, runtime_checkable

from allium.verify import implements

from ledger.core import (
    AccountStatus,
    Books,
    Channel,
    Envelope,
    InvariantViolation,
    OperationKind,
    Outcome,
    RejectReason,
    Rejected,
    Request,
    TransitionRejected,
    Verdict,
    link_outcome,
    outcome_digest,
)
from ledger.core import Config as CoreConfig
from ledger.ledger import Config as LedgerConfig
from ledger.ledger import (
    DeadLetter,
    DeadLetterStatus,
    Disposition,
    EpochGrant,
    Journal,
    Position,
    Proposal,
    ProposalStatus,
)

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FIRST_OFFSET = 1  # eventlog.allium @invariant DenseOffsets: offsets are 1, 2, 3, ...
_PG_MIGRATION_LOCK = 0x4C45_4447  # pg_advisory_xact_lock key serialising migrations ("LEDG")


def micros_to_datetime(micros: int) -> datetime:
    """A store timestamp (microseconds since the Unix epoch) as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=micros)


def datetime_to_micros(moment: datetime) -> int:
    """An aware datetime as microseconds since the Unix epoch (exact, no float)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def wall_clock_micros() -> int:
    """The callers' wall clock on one machine (settled decision on the lease clock)."""
    return time.time_ns() // 1_000


# --------------------------------------------------------------------------- values


class StoreRefusal(str, enum.Enum):
    """enum StoreRefusal: why the commit transaction refused an item, re-checked inside it."""

    stale_epoch = "stale_epoch"
    version_conflict = "version_conflict"
    fingerprint_mismatch = "fingerprint_mismatch"
    negative_balance = "negative_balance"
    balance_above_limit = "balance_above_limit"
    transfer_not_net_zero = "transfer_not_net_zero"
    account_not_active = "account_not_active"
    position_taken = "position_taken"
    out_of_order = "out_of_order"


@dataclass(frozen=True, kw_only=True)
class AccountRow:
    """value AccountRow: the durable image of one account, as the store returns it."""

    account_id: str
    owner: str
    status: AccountStatus
    balance_minor: int
    version: int


@dataclass(frozen=True, kw_only=True)
class CommitItem:
    """value CommitItem: one agreed decision handed to the commit transaction.

    A log item must carry its (partition, offset): without them the checkpoint
    could never pass it, so such an item is refused at construction, before any
    transaction, rather than inside a batch where it would have no refusal to map to.
    """

    envelope: Envelope
    fingerprint: str
    channel: Channel
    partition: int | None = None
    offset: int | None = None
    verdict: Verdict
    reason: RejectReason | None = None
    account_delta_minor: int = 0
    counterparty_delta_minor: int = 0
    digest: str
    expected_primary_version: int
    expected_counter_version: int

    def __post_init__(self) -> None:
        if self.channel is Channel.log and (self.partition is None or self.offset is None):
            raise ValueError("a log CommitItem needs both partition and offset")

    @property
    def key(self) -> tuple[str, str]:
        """The idempotency key (client_id, request_id)."""
        return (self.envelope.client_id, self.envelope.request_id)

    @property
    def is_quarantine(self) -> bool:
        """Mirrors ledger's Proposal.is_quarantine: reason = quarantined."""
        return self.reason is RejectReason.quarantined


@dataclass(frozen=True, kw_only=True)
class CommitResult:
    """value CommitResult: what the commit transaction did with one item.

    Exactly one of ``disposition`` and ``refusal`` is set. ``sequence`` is the
    committed outcome's sequence; for a duplicate it is the prior outcome's.
    """

    disposition: Disposition | None = None
    refusal: StoreRefusal | None = None
    sequence: int | None = None

    @property
    def ok(self) -> bool:
        """Committed or duplicate: the key now has a stored outcome to answer with."""
        return self.disposition is not None


@dataclass(frozen=True, kw_only=True)
class NodeRow:
    """A node's last heartbeat (read helper for ``/v1/nodes``; not a spec construct)."""

    node_id: str
    url: str
    status: str
    epoch: int
    seen_micros: int


@dataclass(frozen=True)
class Config:
    """config block of store.allium."""

    lease_micros: int = 1_500_000
    pool_size: int = 4


# --------------------------------------------------------------------------- entities


@dataclass(kw_only=True)
class Lease:
    """entity Lease: which node is primary, held in the journal row."""

    epoch: int
    holder: str | None = None
    expires_at: datetime


class Backend(str, enum.Enum):
    """Database.backend: sqlite | postgres."""

    sqlite = "sqlite"
    postgres = "postgres"


class DatabaseStatus(str, enum.Enum):
    """Database.status: opening | ready | closed."""

    opening = "opening"
    ready = "ready"
    closed = "closed"


DATABASE_TRANSITIONS: Mapping[DatabaseStatus, frozenset[DatabaseStatus]] = {
    DatabaseStatus.opening: frozenset({DatabaseStatus.ready}),
    DatabaseStatus.ready: frozenset({DatabaseStatus.closed}),
    DatabaseStatus.closed: frozenset(),  # terminal: closed
}


@dataclass(eq=False, kw_only=True)
class Database:
    """entity Database: a database the store has opened."""

    url: str
    backend: Backend
    status: DatabaseStatus = DatabaseStatus.opening

    def transition_to(self, status: DatabaseStatus) -> None:
        """Move along `transitions status`; any undeclared move is rejected."""
        if status not in DATABASE_TRANSITIONS[self.status]:
            raise TransitionRejected(
                "Database.status", 0, f"{self.status.value} -> {status.value} is not declared"
            )
        self.status = status


class StoreError(Exception):
    """The store could not run an operation (not ready, locked, unreachable): answer 503."""


# --------------------------------------------------------------------------- contract


@runtime_checkable
class Store(Protocol):
    """contract DurableStore, plus ``open`` and ``close`` (see the module docstring)."""

    database: Database

    async def open(self) -> None: ...

    async def close(self) -> bool: ...

    async def migrate(self) -> bool: ...

    async def claim_epoch(self, node_id: str, expected_epoch: int, lease_micros: int) -> int | None: ...

    async def renew_lease(self, node_id: str, epoch: int, lease_micros: int) -> bool: ...

    async def current_lease(self) -> Lease: ...

    async def commit(self, epoch: int, items: Sequence[CommitItem]) -> list[CommitResult]: ...

    async def accounts(self, account_ids: Iterable[str]) -> list[AccountRow]: ...

    async def find_outcome(self, client_id: str, request_id: str) -> Outcome | None: ...

    async def next_offset(self, partition: int) -> int: ...

    async def dead_letter(self, partition: int, offset: int, payload_digest: str, cause: str) -> bool: ...


@implements("OpenDatabase")
def backend_of(url: str) -> Backend:
    """``backend_of(url)``; rule OpenDatabase's requires: only sqlite:/// and postgresql:// URLs."""
    if url.startswith("sqlite:///"):
        return Backend.sqlite
    if url.startswith("postgresql://"):
        return Backend.postgres
    raise Rejected("OpenDatabase", 1, f"unsupported store URL {url!r} (sqlite:/// or postgresql://)")


@implements("OpenDatabase")
def open_store(
    url: str,
    *,
    config: Config | None = None,
    clock: Callable[[], int] | None = None,
) -> SqliteStore | PostgresStore:
    """rule OpenDatabase: ``Database.created(url, backend_of(url), status: opening)``.

    Returns an unopened store; ``await store.open()`` connects and migrates.
    ``clock`` (microseconds) is the SQLite lease clock; PostgreSQL always uses
    the database's now() (settled decision "How is the lease clock kept safe").
    """
    backend = backend_of(url)
    if backend is Backend.sqlite:
        return SqliteStore(url, config=config, clock=clock)
    return PostgresStore(url, config=config)


# --------------------------------------------------------------------------- schema

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS journal (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL,
        primary_node_id TEXT,
        lease_expires_micros BIGINT NOT NULL,
        next_sequence BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS epoch_grants (
        epoch BIGINT PRIMARY KEY,
        node_id TEXT NOT NULL,
        granted_at_micros BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS accounts (
        account_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        status TEXT NOT NULL,
        balance_minor BIGINT NOT NULL CHECK (balance_minor >= 0),
        version BIGINT NOT NULL,
        opened_at_micros BIGINT NOT NULL,
        closed_at_micros BIGINT)""",
    """CREATE TABLE IF NOT EXISTS outcomes (
        sequence BIGINT PRIMARY KEY,
        client_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        account_id TEXT NOT NULL,
        counterparty_id TEXT,
        owner TEXT,
        amount_minor BIGINT NOT NULL,
        channel TEXT NOT NULL,
        log_partition BIGINT,
        log_offset BIGINT,
        fingerprint TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT,
        account_delta_minor BIGINT NOT NULL,
        counterparty_delta_minor BIGINT NOT NULL,
        digest TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        committed_at_micros BIGINT NOT NULL,
        applied INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS outcomes_key ON outcomes (client_id, request_id)",
    """CREATE TABLE IF NOT EXISTS positions (
        log_partition BIGINT NOT NULL,
        log_offset BIGINT NOT NULL,
        disposition TEXT NOT NULL,
        recorded_at_micros BIGINT NOT NULL,
        PRIMARY KEY (log_partition, log_offset))""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        log_partition BIGINT PRIMARY KEY,
        next_offset BIGINT NOT NULL,
        advanced_at_micros BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        log_partition BIGINT NOT NULL,
        log_offset BIGINT NOT NULL,
        payload_digest TEXT NOT NULL,
        cause TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        quarantined_at_micros BIGINT NOT NULL,
        status TEXT NOT NULL,
        acknowledged_by TEXT,
        acknowledged_at_micros BIGINT,
        PRIMARY KEY (log_partition, log_offset))""",
    """CREATE TABLE IF NOT EXISTS books (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        net_inflow_minor BIGINT NOT NULL,
        applied_outcomes BIGINT NOT NULL,
        accepted_outcomes BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS nodes (
        node_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        status TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        seen_at_micros BIGINT NOT NULL)""",
    """INSERT INTO journal (id, epoch, primary_node_id, lease_expires_micros, next_sequence)
        VALUES (1, 0, NULL, 0, 1) ON CONFLICT DO NOTHING""",
    """INSERT INTO books (id, net_inflow_minor, applied_outcomes, accepted_outcomes)
        VALUES (1, 0, 0, 0) ON CONFLICT DO NOTHING""",
)

_OUTCOME_COLUMNS = (
    "sequence, client_id, request_id, kind, account_id, counterparty_id, owner, amount_minor, "
    "channel, log_partition, log_offset, fingerprint, verdict, reason, account_delta_minor, "
    "counterparty_delta_minor, digest, epoch, committed_at_micros, applied"
)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


# --------------------------------------------------------------------------- transactions


@dataclass
class _JournalRow:
    epoch: int
    holder: str | None
    lease_expires_micros: int
    next_sequence: int
    now_micros: int


class _Tx(Protocol):
    """One open database transaction; SQL uses ``?`` placeholders on both backends."""

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]: ...

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Any] | None: ...

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def lock_journal(self) -> _JournalRow: ...

    async def now_micros(self) -> int: ...


_JOURNAL_SELECT = "SELECT epoch, primary_node_id, lease_expires_micros, next_sequence FROM journal WHERE id = 1"


# --------------------------------------------------------------------------- commit logic


@dataclass
class _WorkingAccount:
    """An account row as the batch has left it so far (written back at the end)."""

    account_id: str
    owner: str
    status: AccountStatus
    balance_minor: int
    version: int
    opened_at_micros: int
    closed_at_micros: int | None
    is_new: bool = False
    dirty: bool = False


@dataclass
class _BatchState:
    """Everything one commit transaction reads, then evolves item by item in order."""

    now_micros: int
    next_sequence: int
    outcomes: dict[tuple[str, str], tuple[str, int]]  # key -> (fingerprint, sequence)
    accounts: dict[str, _WorkingAccount]
    taken: set[tuple[int, int]]  # positions at or above their partition's checkpoint
    checkpoints: dict[int, int]  # partition -> next_offset (absent partitions start at 1)
    outcome_rows: list[tuple[Any, ...]] = field(default_factory=list)
    position_rows: list[tuple[int, int, str, int]] = field(default_factory=list)
    net_inflow: int = 0
    applied: int = 0
    accepted: int = 0
    # now_micros as a datetime, converted once per batch rather than once per item.
    now_at: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.now_at = micros_to_datetime(self.now_micros)


@dataclass
class _Effect:
    """The account changes one accepted item makes (core's Apply rules)."""

    changes: list[tuple[str, int]]  # (account_id, delta) in application order
    creates: bool = False
    closes: bool = False
    net_inflow: int = 0


def _account_ids(items: Sequence[CommitItem]) -> set[str]:
    ids: set[str] = set()
    for item in items:
        ids.add(item.envelope.account_id)
        if item.envelope.counterparty_id is not None:
            ids.add(item.envelope.counterparty_id)
    return ids


async def _load_batch_state(tx: _Tx, items: Sequence[CommitItem], journal: _JournalRow) -> _BatchState:
    """Read, in bulk, every row the batch's checks can touch."""
    state = _BatchState(
        now_micros=journal.now_micros,
        next_sequence=journal.next_sequence,
        outcomes={},
        accounts={},
        taken=set(),
        checkpoints={},
    )
    keys = {item.key for item in items}
    clients = sorted({k[0] for k in keys})
    requests = sorted({k[1] for k in keys})
    # client_id IN (...) AND request_id IN (...) uses the unique index on
    # (client_id, request_id) on both backends; the superset is filtered here.
    rows = await tx.fetchall(
        f"SELECT client_id, request_id, fingerprint, sequence FROM outcomes "
        f"WHERE client_id IN ({_marks(len(clients))}) AND request_id IN ({_marks(len(requests))})",
        [*clients, *requests],
    )
    state.outcomes = {(r[0], r[1]): (r[2], r[3]) for r in rows if (r[0], r[1]) in keys}
    ids = sorted(_account_ids(items))
    for row in await tx.fetchall(
        "SELECT account_id, owner, status, balance_minor, version, opened_at_micros, closed_at_micros "
        f"FROM accounts WHERE account_id IN ({_marks(len(ids))})",
        ids,
    ):
        state.accounts[row[0]] = _WorkingAccount(
            row[0], row[1], AccountStatus(row[2]), row[3], row[4], row[5], row[6]
        )
    partitions = sorted({i.partition for i in items if i.channel is Channel.log and i.partition is not None})
    if partitions:
        # The checkpoints first: their values bound the position lookup's key ranges.
        state.checkpoints = await _checkpoints(tx, partitions)
        state.taken = await _positions_from_checkpoint(tx, partitions, state.checkpoints)
    return state


# One key range of the positions primary key: (log_partition = ?, log_offset >= ?).
_POSITIONS_FROM = "SELECT log_partition, log_offset FROM positions WHERE log_partition = ? AND log_offset >= ?"
# Partitions per UNION ALL statement: well under SQLite's default limit of 500
# terms in a compound SELECT, and one statement for any usual batch.
_RANGES_PER_STATEMENT = 64


async def _positions_from_checkpoint(
    tx: _Tx, partitions: Sequence[int], checkpoints: Mapping[int, int]
) -> set[tuple[int, int]]:
    """The recorded positions at or above each partition's checkpoint.

    Those below it are implied by the checkpoint. The ones above it (a
    dead letter recorded ahead, say) are what the batch's in-memory checkpoint
    walks over as its items fill the gaps before them.

    CommitItems' Cost guidance: each partition is read as one range of the
    primary key, ``log_partition = ? AND log_offset >= <its next_offset>``, the
    ranges joined by UNION ALL, so the lookup visits only the positions at or
    above the checkpoints, however long the partitions' histories are. (A join
    to checkpoints with ``COALESCE(next_offset, 1)`` as the lower bound cannot
    bound the index: it visited every position the partition ever had.)
    """
    taken: set[tuple[int, int]] = set()
    for first in range(0, len(partitions), _RANGES_PER_STATEMENT):
        chunk = partitions[first:first + _RANGES_PER_STATEMENT]
        args: list[int] = []
        for partition in chunk:
            args += [partition, checkpoints.get(partition, _FIRST_OFFSET)]
        rows = await tx.fetchall(" UNION ALL ".join([_POSITIONS_FROM] * len(chunk)), args)
        taken.update((r[0], r[1]) for r in rows)
    return taken


async def _checkpoints(tx: _Tx, partitions: Sequence[int]) -> dict[int, int]:
    rows = await tx.fetchall(
        f"SELECT log_partition, next_offset FROM checkpoints WHERE log_partition IN ({_marks(len(partitions))})",
        list(partitions),
    )
    return {r[0]: r[1] for r in rows}


def _checkpoint_of(state: _BatchState, partition: int) -> int:
    """The partition's next_offset as the batch-mates before this item left it."""
    return state.checkpoints.get(partition, _FIRST_OFFSET)


def _position_taken(state: _BatchState, partition: int, offset: int) -> bool:
    """A recorded Position, or an offset the checkpoint already passed (its row may be pruned)."""
    return offset < _checkpoint_of(state, partition) or (partition, offset) in state.taken


def _out_of_order(state: _BatchState, partition: int, offset: int) -> bool:
    """CommitItems' order check: the offset is beyond its partition's checkpoint.

    A partition's records are decided strictly in offset order (settled decision
    "Who enforces the log's per-partition order"), so only the record at the
    checkpoint may be decided; one refused or missing holds back every later one.
    """
    return offset > _checkpoint_of(state, partition)


def _version_of(state: _BatchState, account_id: str | None) -> int:
    """``Account{account_id}?.version ?? 0``; an absent id finds nothing."""
    if account_id is None:
        return 0
    account = state.accounts.get(account_id)
    return account.version if account is not None else 0


def _versions_match(state: _BatchState, item: CommitItem) -> bool:
    """DetectStaleSnapshot's comparison; quarantine rejections depend on no account."""
    if item.is_quarantine:
        return True
    return (
        _version_of(state, item.envelope.account_id) == item.expected_primary_version
        and _version_of(state, item.envelope.counterparty_id) == item.expected_counter_version
    )


def _deltas_net_out(item: CommitItem) -> bool:
    """The deltas a kind and verdict allow (core's Outcome invariants).

    ASSUMPTION: StoreRefusal has a single refusal about deltas,
    transfer_not_net_zero; it also refuses every other delta shape core's Outcome
    invariants forbid (RejectionHasNoEffect, OnlyTransfersTouchCounterparty, and
    open/close moving money), so a faulty decision can never be stored.
    """
    account, counter = item.account_delta_minor, item.counterparty_delta_minor
    if item.verdict is Verdict.rejected:
        return account == 0 and counter == 0
    kind = item.envelope.kind
    if kind is OperationKind.transfer:
        return account + counter == 0
    if kind in (OperationKind.open, OperationKind.close):
        return account == 0 and counter == 0
    return counter == 0


def _effect_of(item: CommitItem) -> _Effect:
    """The account changes of core's Apply rule for an accepted item."""
    env = item.envelope
    kind = env.kind
    if kind is OperationKind.open:
        return _Effect(changes=[(env.account_id, 0)], creates=True)
    if kind is OperationKind.close:
        return _Effect(changes=[(env.account_id, 0)], closes=True)
    if kind is OperationKind.transfer:
        changes = [(env.account_id, item.account_delta_minor)]
        if env.counterparty_id is not None:
            changes.append((env.counterparty_id, item.counterparty_delta_minor))
        return _Effect(changes=changes)
    return _Effect(changes=[(env.account_id, item.account_delta_minor)], net_inflow=item.account_delta_minor)


def _check_effect(state: _BatchState, item: CommitItem, effect: _Effect, max_balance: int) -> StoreRefusal | None:
    """CommitItems' bound, net-zero and status checks, in the guidance's order."""
    totals: dict[str, int] = {}
    for account_id, delta in effect.changes:
        totals[account_id] = totals.get(account_id, 0) + delta
    for account_id, delta in totals.items():
        current = state.accounts.get(account_id)
        balance = (current.balance_minor if current is not None else 0) + delta
        if balance < 0:
            return StoreRefusal.negative_balance
        if balance > max_balance:
            return StoreRefusal.balance_above_limit
        if effect.closes and balance != 0:
            # ASSUMPTION: a closed account's limit is zero (ClosedAccountIsEmpty),
            # so closing a funded account is refused as balance_above_limit.
            return StoreRefusal.balance_above_limit
    if not _deltas_net_out(item):
        return StoreRefusal.transfer_not_net_zero
    if item.envelope.kind is OperationKind.transfer and item.envelope.counterparty_id is None:
        return StoreRefusal.account_not_active  # the target account is missing
    for account_id in totals:
        current = state.accounts.get(account_id)
        if effect.creates:
            if current is not None:
                # ASSUMPTION: an accepted open whose account exists was evaluated on a
                # state where it did not: the snapshot is stale, so version_conflict.
                return StoreRefusal.version_conflict
        elif current is None or current.status is not AccountStatus.active:
            return StoreRefusal.account_not_active
    return None


def _apply_effect(state: _BatchState, item: CommitItem, effect: _Effect, committed_at: int) -> None:
    """core's ApplyOpen / ApplySingleAccountChange / ApplyTransfer / ApplyClose on working rows."""
    env = item.envelope
    if effect.creates:
        state.accounts[env.account_id] = _WorkingAccount(
            env.account_id,
            env.owner if env.owner is not None else env.client_id,
            AccountStatus.active,
            0,
            1,
            committed_at,
            None,
            is_new=True,
            dirty=True,
        )
    else:
        for account_id, delta in effect.changes:
            account = state.accounts[account_id]
            account.balance_minor += delta
            account.version += 1
            account.dirty = True
            if effect.closes:
                account.status = AccountStatus.closed
                account.closed_at_micros = committed_at
    state.net_inflow += effect.net_inflow
    state.accepted += 1


def _request_of(item: CommitItem, received_at: datetime) -> Request:
    """The ``core/Request`` a CommitItem describes, carrying the item's fingerprint as given.

    CommitItems' guidance: the primary computed the fingerprint once at
    admission and f + 1 replicas' digests over it agreed, so the commit never
    recomputes it (nor any other value the item carries). core.new_request is
    deliberately not used here: it hashes the envelope again.
    """
    env = item.envelope
    return Request(
        request_id=env.request_id,
        client_id=env.client_id,
        kind=env.kind,
        account_id=env.account_id,
        counterparty_id=env.counterparty_id,
        owner=env.owner,
        amount_minor=env.amount_minor,
        channel=item.channel,
        partition=item.partition,
        offset=item.offset,
        fingerprint=item.fingerprint,
        received_at=received_at,
    )


def _build_outcome(item: CommitItem, epoch: int, sequence: int, committed_at: datetime) -> Outcome:
    """``core/Outcome.created`` as CommitProposal creates it, sealed by core.outcome_digest.

    The outcome digest is the only digest computed per committed item
    (CommitItems' guidance); everything else is copied from the item.
    """
    env = item.envelope
    outcome = Outcome(
        # ASSUMPTION: CommitItem carries no received_at; the stored Request is
        # stamped with its commit time.
        request=_request_of(item, committed_at),
        request_id=env.request_id,
        client_id=env.client_id,
        kind=env.kind,
        verdict=item.verdict,
        reason=item.reason,
        account_id=env.account_id,
        counterparty_id=env.counterparty_id,
        account_delta_minor=item.account_delta_minor,
        counterparty_delta_minor=item.counterparty_delta_minor,
        digest="",
        epoch=epoch,
        sequence=sequence,
        committed_at=committed_at,
        applied=True,
    )
    outcome.digest = outcome_digest(outcome)  # DigestSealsContent by construction
    return outcome


def _outcome_row(item: CommitItem, outcome: Outcome, committed_at: int) -> tuple[Any, ...]:
    env = item.envelope
    return (
        outcome.sequence,
        env.client_id,
        env.request_id,
        env.kind.value,
        env.account_id,
        env.counterparty_id,
        env.owner,
        env.amount_minor,
        item.channel.value,
        item.partition,
        item.offset,
        item.fingerprint,
        item.verdict.value,
        item.reason.value if item.reason is not None else None,
        item.account_delta_minor,
        item.counterparty_delta_minor,
        outcome.digest,
        outcome.epoch,
        committed_at,
        1,
    )


def _record_position(state: _BatchState, item: CommitItem, disposition: Disposition) -> None:
    """Position.created, then the in-batch AdvanceCheckpoint the next batch-mates are checked against."""
    assert item.partition is not None and item.offset is not None
    state.taken.add((item.partition, item.offset))
    state.position_rows.append((item.partition, item.offset, disposition.value, state.now_micros))
    next_offset = _checkpoint_of(state, item.partition)
    while (item.partition, next_offset) in state.taken:  # first_unrecorded_offset
        next_offset += 1
    state.checkpoints[item.partition] = next_offset


def _settle_duplicate(state: _BatchState, item: CommitItem) -> CommitResult:
    """DetectDuplicateProposal: same fingerprint -> duplicate (recording an unseen log offset)."""
    fingerprint, sequence = state.outcomes[item.key]
    if fingerprint != item.fingerprint:
        return CommitResult(refusal=StoreRefusal.fingerprint_mismatch)
    if item.channel is Channel.log:
        assert item.partition is not None and item.offset is not None
        if not _position_taken(state, item.partition, item.offset):
            if _out_of_order(state, item.partition, item.offset):
                # ASSUMPTION: DetectDuplicateProposal must record an unseen log
                # offset's Position, and recording it beyond the checkpoint would
                # decide it ahead of an earlier record; so a duplicate beyond the
                # checkpoint is refused out_of_order, changes nothing, and is
                # answered as a duplicate when the consumer retries it in order.
                return CommitResult(refusal=StoreRefusal.out_of_order)
            _record_position(state, item, Disposition.duplicate)
    return CommitResult(disposition=Disposition.duplicate, sequence=sequence)


def _settle_item(state: _BatchState, item: CommitItem, epoch: int, max_balance: int) -> CommitResult:
    """One item against the state the previous items left; a refusal changes nothing.

    The checks run in CommitItems' order: duplicate / fingerprint_mismatch,
    version_conflict, the effect's bounds, net-zero and status, then for a log
    item position_taken and out_of_order (the epoch was checked for the batch).
    """
    if item.key in state.outcomes:
        return _settle_duplicate(state, item)
    if not _versions_match(state, item):
        return CommitResult(refusal=StoreRefusal.version_conflict)
    effect: _Effect | None = None
    if item.verdict is Verdict.accepted:
        effect = _effect_of(item)
        refusal = _check_effect(state, item, effect, max_balance)
        if refusal is not None:
            return CommitResult(refusal=refusal)
    elif not _deltas_net_out(item):
        return CommitResult(refusal=StoreRefusal.transfer_not_net_zero)
    if item.channel is Channel.log:
        assert item.partition is not None and item.offset is not None
        if _position_taken(state, item.partition, item.offset):
            return CommitResult(refusal=StoreRefusal.position_taken)
        if _out_of_order(state, item.partition, item.offset):
            return CommitResult(refusal=StoreRefusal.out_of_order)
    return _commit_item(state, item, epoch, effect)


def _commit_item(state: _BatchState, item: CommitItem, epoch: int, effect: _Effect | None) -> CommitResult:
    """CommitProposal: next sequence, the sealed Outcome, its Apply rule, its Position."""
    sequence = state.next_sequence
    state.next_sequence += 1
    committed_at = state.now_micros
    outcome = _build_outcome(item, epoch, sequence, state.now_at)
    state.outcome_rows.append(_outcome_row(item, outcome, committed_at))
    state.outcomes[item.key] = (item.fingerprint, sequence)
    if effect is not None:
        _apply_effect(state, item, effect, committed_at)
    state.applied += 1  # every Apply rule (ApplyRejection too) counts the outcome
    if item.channel is Channel.log:
        _record_position(state, item, Disposition.committed)
    return CommitResult(disposition=Disposition.committed, sequence=sequence)


async def _write_batch(tx: _Tx, state: _BatchState) -> None:
    """Write back what the batch committed: outcomes, accounts, books, journal, positions."""
    if state.outcome_rows:
        await tx.executemany(
            f"INSERT INTO outcomes ({_OUTCOME_COLUMNS}) VALUES ({_marks(20)})", state.outcome_rows
        )
    new = [a for a in state.accounts.values() if a.is_new]
    changed = [a for a in state.accounts.values() if a.dirty and not a.is_new]
    if new:
        await tx.executemany(
            "INSERT INTO accounts (account_id, owner, status, balance_minor, version, opened_at_micros, "
            "closed_at_micros) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (a.account_id, a.owner, a.status.value, a.balance_minor, a.version, a.opened_at_micros,
                 a.closed_at_micros)
                for a in new
            ],
        )
    if changed:
        await tx.executemany(
            "UPDATE accounts SET status = ?, balance_minor = ?, version = ?, closed_at_micros = ? "
            "WHERE account_id = ?",
            [(a.status.value, a.balance_minor, a.version, a.closed_at_micros, a.account_id) for a in changed],
        )
    if state.applied:
        await tx.execute(
            "UPDATE books SET net_inflow_minor = net_inflow_minor + ?, applied_outcomes = applied_outcomes + ?, "
            "accepted_outcomes = accepted_outcomes + ? WHERE id = 1",
            (state.net_inflow, state.applied, state.accepted),
        )
        await tx.execute("UPDATE journal SET next_sequence = ? WHERE id = 1", (state.next_sequence,))
    await _insert_positions(tx, state.position_rows, state.now_micros)


async def _insert_positions(tx: _Tx, rows: Sequence[tuple[int, int, str, int]], now_micros: int) -> None:
    """Position.created for each row, then AdvanceCheckpoint for each touched partition."""
    if not rows:
        return
    await tx.executemany(
        "INSERT INTO positions (log_partition, log_offset, disposition, recorded_at_micros) VALUES (?, ?, ?, ?)",
        rows,
    )
    for partition in sorted({r[0] for r in rows}):
        await _advance_checkpoint(tx, partition, now_micros)


@implements("AdvanceCheckpoint")
async def _advance_checkpoint(tx: _Tx, partition: int, now_micros: int) -> None:
    """ledger's AdvanceCheckpoint: move next_offset over the contiguous run of positions.

    A partition's checkpoint is created at the first offset (1) the first time
    one of its positions is recorded. The run is found from one key range of
    the positions primary key starting at the checkpoint (CommitItems' Cost
    guidance), so advancing never visits the partition's history below it.
    """
    await tx.execute(
        "INSERT INTO checkpoints (log_partition, next_offset, advanced_at_micros) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (partition, _FIRST_OFFSET, now_micros),
    )
    row = await tx.fetchone("SELECT next_offset FROM checkpoints WHERE log_partition = ?", (partition,))
    assert row is not None
    start = row[0]
    recorded = await tx.fetchall(f"{_POSITIONS_FROM} ORDER BY log_offset", (partition, start))
    next_offset = _first_unrecorded_offset(start, (r[1] for r in recorded))
    if next_offset != start:
        await tx.execute(
            "UPDATE checkpoints SET next_offset = ?, advanced_at_micros = ? WHERE log_partition = ?",
            (next_offset, now_micros, partition),
        )


def _first_unrecorded_offset(start: int, recorded: Iterable[int]) -> int:
    """ledger's first_unrecorded_offset: one past the run of offsets start, start + 1, ...

    ``recorded`` holds the partition's recorded offsets at or above ``start``, ascending.
    """
    next_offset = start
    for offset in recorded:
        if offset != next_offset:
            break
        next_offset += 1
    return next_offset


# --------------------------------------------------------------------------- the shared store


class _SqlStore:
    """Everything both backends share: every contract operation as one transaction body."""

    backend: Backend

    def __init__(self, url: str, *, config: Config | None = None) -> None:
        self.config = config or Config()
        self.core_config = CoreConfig()
        self.ledger_config = LedgerConfig()
        self.database = Database(url=url, backend=backend_of(url))
        self._connected = False

    # -- backend hooks ---------------------------------------------------------------

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    async def _write(self, body: Callable[[_Tx], Coroutine[Any, Any, T]]) -> T:
        """Run ``body`` in one write transaction (journal lockable, commits whole or not at all)."""
        raise NotImplementedError

    async def _read(self, body: Callable[[_Tx], Coroutine[Any, Any, T]]) -> T:
        """Run ``body`` in one read-only transaction over one consistent snapshot."""
        raise NotImplementedError

    async def _migrate_tx(self) -> None:
        """Run Migrate's transaction (a backend may retry it: it is idempotent)."""
        await self._write(self._migrate_body)

    async def _migrate_body(self, tx: _Tx) -> None:
        for statement in _SCHEMA:
            await tx.execute(statement)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> _SqlStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect and fire Migrate (it triggers on ``Database.created``); idempotent when ready."""
        if self.database.status is DatabaseStatus.ready:
            return
        if self.database.status is DatabaseStatus.closed:
            raise TransitionRejected("OpenDatabase", 0, "a closed database stays closed (terminal)")
        await self.migrate()

    @implements("Migrate")
    async def migrate(self) -> bool:
        """rule Migrate: create every table if missing; status opening -> ready.

        Returns True when this call migrated. On a store that is already ready
        the rule's requires fails harmlessly and it returns False; on a closed
        store it raises Rejected.
        """
        status = self.database.status
        if status is DatabaseStatus.closed:
            raise Rejected("Migrate", 1, "database is closed, not opening")
        if status is DatabaseStatus.ready:
            return False
        if not self._connected:
            await self._connect()
            self._connected = True
        try:
            await self._migrate_tx()
        except BaseException:
            await self._release()
            raise
        self.database.transition_to(DatabaseStatus.ready)
        return True

    @implements("CloseDatabase")
    async def close(self) -> bool:
        """rule CloseDatabase: ready -> closed. Returns False (nothing changes) unless ready.

        Connections are released either way, so a store that failed to open
        can still be closed in a ``finally``.
        """
        if self.database.status is not DatabaseStatus.ready:
            if self.database.status is DatabaseStatus.opening:
                await self._release()
            return False
        await self._release()
        self.database.transition_to(DatabaseStatus.closed)
        return True

    async def _release(self) -> None:
        if self._connected:
            self._connected = False
            await self._disconnect()

    def _require_ready(self, operation: str) -> None:
        if self.database.status is not DatabaseStatus.ready:
            raise StoreError(f"{operation}: store is {self.database.status.value}, not ready")

    # -- leases ----------------------------------------------------------------------

    @implements("ClaimLease")
    async def claim_epoch(self, node_id: str, expected_epoch: int, lease_micros: int | None = None) -> int | None:
        """rule ClaimLease (and ledger's GrantEpoch): the new epoch, or None when refused.

        Refused unless journal.epoch = expected_epoch and the lease is free or
        expired on the store's clock. On success the journal holds epoch + 1, the
        holder and the expiry, and an EpochGrant is recorded, in one transaction.
        """
        self._require_ready("claim_epoch")
        lease = self._lease_micros(lease_micros)

        async def body(tx: _Tx) -> int | None:
            journal = await tx.lock_journal()
            if journal.epoch != expected_epoch:
                return None
            if journal.holder is not None and journal.lease_expires_micros > journal.now_micros:
                return None
            new_epoch = expected_epoch + 1
            await tx.execute(
                "UPDATE journal SET epoch = ?, primary_node_id = ?, lease_expires_micros = ? WHERE id = 1",
                (new_epoch, node_id, journal.now_micros + lease),
            )
            await tx.execute(
                "INSERT INTO epoch_grants (epoch, node_id, granted_at_micros) VALUES (?, ?, ?)",
                (new_epoch, node_id, journal.now_micros),
            )
            return new_epoch

        return await self._write(body)

    @implements("RenewLease")
    async def renew_lease(self, node_id: str, epoch: int, lease_micros: int | None = None) -> bool:
        """rule RenewLease: the holder of ``epoch`` extends its lease to now + lease_micros."""
        self._require_ready("renew_lease")
        lease = self._lease_micros(lease_micros)

        async def body(tx: _Tx) -> bool:
            journal = await tx.lock_journal()
            if journal.epoch != epoch or journal.holder != node_id:
                return False
            await tx.execute(
                "UPDATE journal SET lease_expires_micros = ? WHERE id = 1", (journal.now_micros + lease,)
            )
            return True

        return await self._write(body)

    async def release_lease(self, node_id: str, epoch: int) -> bool:
        """A graceful primary lets its lease expire now so a backup may claim at once.

        The holder is kept, so LeaseHolderHoldsLatestGrant still holds.
        """
        self._require_ready("release_lease")

        async def body(tx: _Tx) -> bool:
            journal = await tx.lock_journal()
            if journal.epoch != epoch or journal.holder != node_id:
                return False
            await tx.execute("UPDATE journal SET lease_expires_micros = ? WHERE id = 1", (journal.now_micros,))
            return True

        return await self._write(body)

    def _lease_micros(self, lease_micros: int | None) -> int:
        lease = self.config.lease_micros if lease_micros is None else lease_micros
        if lease < 0:
            raise ValueError("lease_micros must be >= 0")
        return lease

    # -- commit ----------------------------------------------------------------------

    @implements("CommitItems", "FenceStaleProposal", "DetectDuplicateProposal", "DetectStaleSnapshot",
                "CommitProposal")
    async def commit(self, epoch: int, items: Sequence[CommitItem]) -> list[CommitResult]:
        """rule CommitItems: one transaction for the batch, items in order, one result each.

        The journal row is locked first, so commits and epoch claims are ordered
        by the store itself; every check is made inside the transaction against
        the state the previous items left. A refused item changes nothing and
        never aborts its batch-mates; a log item is decided only at its
        partition's checkpoint, so a refused one holds back (out_of_order)
        every later item of its partition.
        """
        if len(items) > self.ledger_config.commit_batch_max:
            raise Rejected(
                "CommitItems", 1, f"{len(items)} items > commit_batch_max {self.ledger_config.commit_batch_max}"
            )
        self._require_ready("commit")
        if not items:
            return []
        batch = list(items)
        max_balance = self.core_config.max_balance_minor

        async def body(tx: _Tx) -> list[CommitResult]:
            journal = await tx.lock_journal()
            if journal.epoch != epoch:
                return [CommitResult(refusal=StoreRefusal.stale_epoch) for _ in batch]
            state = await _load_batch_state(tx, batch, journal)
            results = [_settle_item(state, item, epoch, max_balance) for item in batch]
            await _write_batch(tx, state)
            return results

        return await self._write(body)

    # -- reads -----------------------------------------------------------------------

    async def accounts(self, account_ids: Iterable[str]) -> list[AccountRow]:
        """DurableStore.accounts: the rows that exist among ``account_ids``, sorted by id."""
        self._require_ready("accounts")
        ids = sorted(set(account_ids))
        if not ids:
            return []
        rows = await self._read(
            lambda tx: tx.fetchall(
                "SELECT account_id, owner, status, balance_minor, version FROM accounts "
                f"WHERE account_id IN ({_marks(len(ids))}) ORDER BY account_id",
                ids,
            )
        )
        return [_account_row(r) for r in rows]

    async def all_accounts(self) -> list[AccountRow]:
        """Every account, sorted by account_id (read helper)."""
        self._require_ready("all_accounts")
        rows = await self._read(
            lambda tx: tx.fetchall(
                "SELECT account_id, owner, status, balance_minor, version FROM accounts ORDER BY account_id"
            )
        )
        return [_account_row(r) for r in rows]

    async def find_outcome(self, client_id: str, request_id: str) -> Outcome | None:
        """DurableStore.find_outcome: ``core/Outcome{client_id, request_id}``, linked to its Request."""
        self._require_ready("find_outcome")
        row = await self._read(
            lambda tx: tx.fetchone(
                f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE client_id = ? AND request_id = ?",
                (client_id, request_id),
            )
        )
        return _outcome_from_row(row) if row is not None else None

    async def next_offset(self, partition: int) -> int:
        """DurableStore.next_offset: the partition's checkpoint; 1 (the first offset) when new."""
        self._require_ready("next_offset")
        row = await self._read(
            lambda tx: tx.fetchone("SELECT next_offset FROM checkpoints WHERE log_partition = ?", (partition,))
        )
        return row[0] if row is not None else _FIRST_OFFSET

    async def current_lease(self) -> Lease:
        """DurableStore.current_lease: the journal row's epoch, holder and expiry, in one statement.

        It is how a backup learns which node is primary; the holder is None
        before any claim.
        """
        self._require_ready("current_lease")
        row = await self._read(
            lambda tx: tx.fetchone("SELECT epoch, primary_node_id, lease_expires_micros FROM journal WHERE id = 1")
        )
        assert row is not None  # Migrate inserted the journal row
        return Lease(epoch=row[0], holder=row[1], expires_at=micros_to_datetime(row[2]))

    async def lease(self) -> Lease:
        """The Lease held in the journal row: ``current_lease()`` under its earlier name (read helper)."""
        return await self.current_lease()

    async def journal(self) -> Journal:
        """ledger's Journal row: epoch, primary_node_id, next_sequence (read helper)."""
        self._require_ready("journal")
        row = await self._read(lambda tx: tx.fetchone(_JOURNAL_SELECT))
        assert row is not None
        return Journal(epoch=row[0], primary_node_id=row[1], next_sequence=row[3])

    async def grants(self) -> list[EpochGrant]:
        """Every EpochGrant, by epoch (read helper)."""
        self._require_ready("grants")
        rows = await self._read(
            lambda tx: tx.fetchall("SELECT epoch, node_id, granted_at_micros FROM epoch_grants ORDER BY epoch")
        )
        return [EpochGrant(epoch=r[0], node_id=r[1], granted_at=micros_to_datetime(r[2])) for r in rows]

    async def books(self) -> Books:
        """core's Books row (read helper)."""
        self._require_ready("books")
        row = await self._read(
            lambda tx: tx.fetchone(
                "SELECT net_inflow_minor, applied_outcomes, accepted_outcomes FROM books WHERE id = 1"
            )
        )
        assert row is not None
        return Books(net_inflow_minor=row[0], applied_outcomes=row[1], accepted_outcomes=row[2])

    async def outcome_count(self) -> int:
        """How many outcomes are stored (read helper)."""
        self._require_ready("outcome_count")
        row = await self._read(lambda tx: tx.fetchone("SELECT COUNT(*) FROM outcomes"))
        assert row is not None
        return int(row[0])

    async def position(self, partition: int, offset: int) -> Position | None:
        """``Position{partition, offset}`` (read helper)."""
        self._require_ready("position")
        row = await self._read(
            lambda tx: tx.fetchone(
                "SELECT disposition, recorded_at_micros FROM positions WHERE log_partition = ? AND log_offset = ?",
                (partition, offset),
            )
        )
        if row is None:
            return None
        return Position(
            partition=partition, offset=offset, disposition=Disposition(row[0]),
            recorded_at=micros_to_datetime(row[1]),
        )

    async def dead_letters(self) -> list[DeadLetter]:
        """Every DeadLetter, by (partition, offset) (read helper)."""
        self._require_ready("dead_letters")
        rows = await self._read(
            lambda tx: tx.fetchall(
                "SELECT log_partition, log_offset, payload_digest, cause, attempts, quarantined_at_micros, status "
                "FROM dead_letters ORDER BY log_partition, log_offset"
            )
        )
        return [
            DeadLetter(
                partition=r[0], offset=r[1], payload_digest=r[2], cause=r[3], attempts=r[4],
                quarantined_at=micros_to_datetime(r[5]), status=DeadLetterStatus(r[6]),
            )
            for r in rows
        ]

    async def clock_micros(self) -> int:
        """The store's clock, the one leases are measured on (read helper)."""
        self._require_ready("clock_micros")
        return await self._read(lambda tx: tx.now_micros())

    # -- dead letters ----------------------------------------------------------------

    @implements("RecordDeadLetter", "RecordDeadLetterPosition")
    async def dead_letter(self, partition: int, offset: int, payload_digest: str, cause: str) -> bool:
        """rule RecordDeadLetter: hold the letter and record its quarantined Position.

        Returns False, changing nothing, when the offset already has a Position
        (or the checkpoint already passed it). The checkpoint advances in the
        same transaction, so it can pass the letter.
        """
        self._require_ready("dead_letter")
        # ASSUMPTION: RecordDeadLetter requires only that the offset has no
        # Position, so a letter may be recorded ahead of the checkpoint (no
        # out_of_order here): it moves no money, so deciding it early cannot
        # reorder an account's records, and the checkpoint passes it once the
        # offsets before it are decided.

        async def body(tx: _Tx) -> bool:
            journal = await tx.lock_journal()  # orders this Position with concurrent commits
            now = journal.now_micros
            checkpoints = await _checkpoints(tx, [partition])
            if offset < checkpoints.get(partition, _FIRST_OFFSET) or await tx.fetchone(
                "SELECT 1 FROM positions WHERE log_partition = ? AND log_offset = ?", (partition, offset)
            ) is not None:
                return False
            await tx.execute(
                "INSERT INTO dead_letters (log_partition, log_offset, payload_digest, cause, attempts, "
                "quarantined_at_micros, status) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (partition, offset, payload_digest, cause, now, DeadLetterStatus.held.value),
            )
            await _insert_positions(tx, [(partition, offset, Disposition.quarantined.value, now)], now)
            return True

        return await self._write(body)

    # -- nodes -----------------------------------------------------------------------

    async def heartbeat(self, node_id: str, *, status: str, epoch: int, url: str = "") -> None:
        """Record that a node is alive, its status and epoch (for ``/v1/nodes``)."""
        self._require_ready("heartbeat")

        async def body(tx: _Tx) -> None:
            now = await tx.now_micros()
            await tx.execute(
                "INSERT INTO nodes (node_id, url, status, epoch, seen_at_micros) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (node_id) DO UPDATE SET url = excluded.url, status = excluded.status, "
                "epoch = excluded.epoch, seen_at_micros = excluded.seen_at_micros",
                (node_id, url, status, epoch, now),
            )

        await self._write(body)

    async def nodes(self) -> list[NodeRow]:
        """Every node that ever sent a heartbeat, by node_id (read helper)."""
        self._require_ready("nodes")
        rows = await self._read(
            lambda tx: tx.fetchall("SELECT node_id, url, status, epoch, seen_at_micros FROM nodes ORDER BY node_id")
        )
        return [NodeRow(node_id=r[0], url=r[1], status=r[2], epoch=r[3], seen_micros=r[4]) for r in rows]

    # -- invariants ------------------------------------------------------------------

    async def violated_invariants(self) -> list[str]:
        """Names of the store-level invariants that do not hold, over one snapshot."""
        self._require_ready("violated_invariants")
        max_balance = self.core_config.max_balance_minor

        async def body(tx: _Tx) -> list[str]:
            journal = await tx.fetchone(_JOURNAL_SELECT)
            assert journal is not None
            violated: list[str] = []
            if journal[1] is not None and await tx.fetchone(
                "SELECT 1 FROM epoch_grants WHERE epoch = ? AND node_id = ?", (journal[0], journal[1])
            ) is None:
                violated.append("LeaseHolderHoldsLatestGrant")
            totals = await tx.fetchone(
                "SELECT COALESCE(SUM(balance_minor), 0), COALESCE(MIN(balance_minor), 0), "
                "COALESCE(MAX(balance_minor), 0) FROM accounts"
            )
            books = await tx.fetchone("SELECT net_inflow_minor, applied_outcomes FROM books WHERE id = 1")
            count = await tx.fetchone("SELECT COUNT(*) FROM outcomes")
            closed_funded = await tx.fetchone(
                "SELECT COUNT(*) FROM accounts WHERE status = ? AND balance_minor != 0",
                (AccountStatus.closed.value,),
            )
            assert totals is not None and books is not None and count is not None and closed_funded is not None
            if int(totals[0]) != books[0]:
                violated.append("MoneyIsConserved")
            if int(totals[1]) < 0:
                violated.append("NonNegativeBalance")
            if int(totals[2]) > max_balance:
                violated.append("BalanceWithinLimit")
            if int(closed_funded[0]) != 0:
                violated.append("ClosedAccountIsEmpty")
            if int(count[0]) != books[1]:
                violated.append("AppliedCountMatchesOutcomes")
            return violated

        return await self._read(body)

    async def check_invariants(self) -> None:
        """Raise core's InvariantViolation naming every store-level invariant that does not hold."""
        violated = await self.violated_invariants()
        if violated:
            raise InvariantViolation(", ".join(violated))


async def lease_holder_holds_latest_grant(store: _SqlStore) -> bool:
    """invariant LeaseHolderHoldsLatestGrant: a held lease has the grant for its epoch and holder."""
    return "LeaseHolderHoldsLatestGrant" not in await store.violated_invariants()


def _account_row(row: Sequence[Any]) -> AccountRow:
    return AccountRow(
        account_id=row[0], owner=row[1], status=AccountStatus(row[2]), balance_minor=row[3], version=row[4]
    )


def _outcome_from_row(row: Sequence[Any]) -> Outcome:
    """Rebuild the stored Outcome and its Request (linked both ways)."""
    (sequence, client_id, request_id, kind, account_id, counterparty_id, owner, amount_minor, channel,
     partition, offset, fingerprint, verdict, reason, account_delta, counter_delta, digest, epoch,
     committed_at, applied) = row
    committed = micros_to_datetime(committed_at)
    request = Request(
        request_id=request_id, client_id=client_id, kind=OperationKind(kind), account_id=account_id,
        counterparty_id=counterparty_id, owner=owner, amount_minor=amount_minor, channel=Channel(channel),
        partition=partition, offset=offset, fingerprint=fingerprint, received_at=committed,
    )
    outcome = Outcome(
        request=request, request_id=request_id, client_id=client_id, kind=OperationKind(kind),
        verdict=Verdict(verdict), reason=RejectReason(reason) if reason is not None else None,
        account_id=account_id, counterparty_id=counterparty_id, account_delta_minor=account_delta,
        counterparty_delta_minor=counter_delta, digest=digest, epoch=epoch, sequence=sequence,
        committed_at=committed, applied=bool(applied),
    )
    link_outcome(outcome)
    return outcome


def proposal_of(epoch: int, item: CommitItem) -> Proposal:
    """``ledger/Proposal.created`` exactly as rule CommitItems' ensures clause states it."""
    return Proposal(
        request=_request_of(item, _EPOCH),  # the item's fingerprint, as given
        attempt=1,
        epoch=epoch,
        digest=item.digest,
        verdict=item.verdict,
        reason=item.reason,
        account_delta_minor=item.account_delta_minor,
        counterparty_delta_minor=item.counterparty_delta_minor,
        expected_primary_version=item.expected_primary_version,
        expected_counter_version=item.expected_counter_version,
        status=ProposalStatus.pending,
    )


def settled_status(result: CommitResult) -> ProposalStatus:
    """The ledger Proposal status a CommitResult settles to (fenced, duplicate, conflicted, committed)."""
    if result.disposition is Disposition.committed:
        return ProposalStatus.committed
    if result.disposition is Disposition.duplicate:
        return ProposalStatus.duplicate
    if result.refusal is StoreRefusal.stale_epoch:
        return ProposalStatus.fenced
    return ProposalStatus.conflicted


# --------------------------------------------------------------------------- SQLite


class _SqliteTx:
    """A transaction on one of the store's two threads: every ``await`` here completes without suspending."""

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], int]) -> None:
        self._conn = conn
        self._clock = clock

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return self._conn.execute(sql, tuple(args)).fetchall()

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Any] | None:
        return self._conn.execute(sql, tuple(args)).fetchone()

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(args)).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, [tuple(r) for r in rows])

    async def lock_journal(self) -> _JournalRow:
        # BEGIN IMMEDIATE already holds the database's write lock.
        row = self._conn.execute(_JOURNAL_SELECT).fetchone()
        return _JournalRow(row[0], row[1], row[2], row[3], self._clock())

    async def now_micros(self) -> int:
        return self._clock()


def _drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion, synchronously."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a SQLite transaction body awaited something other than the database")


_BUSY_TIMEOUT_MS = 5000  # contract DurableStore @guidance: busy_timeout 5000 ms
_BUSY_PRIMARY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _NotYetWal(sqlite3.OperationalError):
    """The WAL switch answered another journal mode: treated like busy and retried."""


def _is_busy(exc: sqlite3.Error) -> bool:
    """True when SQLite reports the file locked or busy (any extended SQLITE_BUSY/LOCKED code)."""
    if isinstance(exc, _NotYetWal):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _BUSY_PRIMARY_CODES
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _retry_while_busy(fn: Callable[[], T], *, timeout_ms: int | None = None) -> T:
    """Run ``fn``; while it fails with busy/locked, wait briefly and run it again.

    Bounded by ``timeout_ms`` from the first attempt (the busy timeout): the
    last busy error is raised once it has passed. Any other error is raised at
    once. Runs on a database thread, so sleeping never blocks the event loop.
    """
    deadline = time.monotonic() + (_BUSY_TIMEOUT_MS if timeout_ms is None else timeout_ms) / 1000
    pause = 0.002
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            remaining = deadline - time.monotonic()
            if not _is_busy(exc) or remaining <= 0:
                raise
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.05)


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """PRAGMA journal_mode = WAL, checking that the file really is in WAL mode now."""
    row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    mode = str(row[0]).lower() if row else ""
    if mode != "wal":
        raise _NotYetWal(f"journal_mode is {mode or 'unknown'}, not wal")


class _SqliteWorker:
    """One SQLite connection and the single thread that alone ever uses it.

    A SqliteStore has two: the writer (every write, BEGIN IMMEDIATE) and the
    reader (the read-only operations, on a ``query_only`` connection). Work
    on one worker runs in submission order, so ``stop()`` closes the
    connection only after everything submitted before it has finished.
    """

    def __init__(self, role: str, path: str, clock: Callable[[], int], *, query_only: bool) -> None:
        self.role = role
        self._path = path
        self._clock = clock
        self._query_only = query_only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ledger-sqlite-{role}")
        self.conn: sqlite3.Connection | None = None

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on this worker's thread; a driver failure becomes StoreError."""
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except RuntimeError as exc:  # the executor was shut down: the store closed meanwhile
            raise StoreError(f"sqlite {self.role}: store is closed") from exc
        try:
            return await future
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    async def start(self) -> None:
        """Open the connection on the thread; on failure the thread is gone too (nothing leaks)."""
        try:
            await self.call(self._open_connection)
        except BaseException:
            self._executor.shutdown(wait=True)
            raise

    async def stop(self) -> None:
        """Wait for the work already submitted, close the connection, then join the thread."""
        closing = asyncio.ensure_future(self.call(self._close_connection))
        try:
            # Shielded: a cancelled close() must not unqueue the connection's close.
            await asyncio.shield(closing)
        finally:
            # Once the close has run the thread is idle and this join is
            # immediate. If close() itself was cancelled, the close still runs
            # after the in-flight work and the thread then exits by itself:
            # never block the event loop joining it.
            self._executor.shutdown(wait=closing.done())

    def transact(self, begin: str, body: Callable[[_Tx], Coroutine[Any, Any, T]]) -> T:
        """On the thread: run ``body`` in one transaction that commits whole or rolls back."""
        conn = self.conn
        if conn is None:
            raise sqlite3.ProgrammingError(f"the {self.role} connection is closed")
        conn.execute(begin)
        try:
            result = _drive(body(_SqliteTx(conn, self._clock)))
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (and a COMMIT that failed
            # leaves the transaction open): roll back only what is still open,
            # so the original error is the one raised and a retry starts clean.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def transact_retrying(self, begin: str, body: Callable[[_Tx], Coroutine[Any, Any, T]]) -> T:
        """On the thread: ``transact`` again while SQLite reports busy, up to the busy timeout.

        Only for bodies that are safe to repeat: Migrate (idempotent) and the
        read-only operations. A busy transaction changed nothing (it rolled back).
        """
        return _retry_while_busy(lambda: self.transact(begin, body))

    def _open_connection(self) -> None:
        """rule OpenDatabase @guidance: safe when several processes open one new file at once.

        busy_timeout is the first statement on the connection; the WAL switch
        and the connection's first read of the file are retried while SQLite
        reports the file locked or busy, up to the busy timeout, because SQLite
        does not call the busy handler when a read lock must be upgraded (the
        journal-mode change reads the header, then writes it).
        """
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if self._query_only:
                # The file is already in WAL mode (the writer set it, and it
                # persists in the file); this connection refuses any write.
                conn.execute("PRAGMA query_only = ON")
            else:
                _retry_while_busy(lambda: _switch_to_wal(conn))
                conn.execute("PRAGMA synchronous = NORMAL")
            # The connection's first read of the file (header, WAL index) happens
            # here, under the retry, not in the first operation after open().
            _retry_while_busy(lambda: conn.execute("PRAGMA schema_version").fetchone())
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _close_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


class SqliteStore(_SqlStore):
    """DurableStore on one SQLite file: WAL, synchronous=NORMAL, BEGIN IMMEDIATE for writes.

    contract DurableStore @guidance: every write runs on one dedicated writer
    thread (a single-worker executor with its own connection); the read-only
    operations (accounts, find_outcome, next_offset, current_lease, and the
    read helpers) run on a second connection on its own single-worker thread,
    so a read never queues behind a commit. WAL gives the reader the last
    committed state without waiting for the write lock, and a read transaction
    that begins after a commit returned sees that commit. The event loop
    never blocks on storage; several processes may share the file.
    """

    backend = Backend.sqlite

    def __init__(self, url: str, *, config: Config | None = None, clock: Callable[[], int] | None = None) -> None:
        super().__init__(url, config=config)
        self.path = url[len("sqlite:///"):]
        if not self.path:
            raise Rejected("OpenDatabase", 1, "sqlite:/// URL has no file path")
        # sqlite:////abs/path keeps its leading slash; sqlite:///rel/path is relative.
        self._clock = clock or wall_clock_micros
        self._writer: _SqliteWorker | None = None
        self._reader: _SqliteWorker | None = None

    @property
    def _conn(self) -> sqlite3.Connection | None:
        """The writer's connection (use it only on the writer thread, through ``_on_thread``)."""
        return self._writer.conn if self._writer is not None else None

    @property
    def _reader_conn(self) -> sqlite3.Connection | None:
        """The reader's connection (use it only on the reader thread, through ``_on_reader_thread``)."""
        return self._reader.conn if self._reader is not None else None

    def _worker(self, worker: _SqliteWorker | None) -> _SqliteWorker:
        if worker is None:
            raise StoreError("sqlite: not connected")
        return worker

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer thread."""
        return await self._worker(self._writer).call(fn)

    async def _on_reader_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the reader thread."""
        return await self._worker(self._reader).call(fn)

    async def _connect(self) -> None:
        # The writer connects first: it creates the file and puts it in WAL
        # mode, which the reader's connection then inherits from the file.
        writer = _SqliteWorker("writer", self.path, self._clock, query_only=False)
        await writer.start()
        reader = _SqliteWorker("reader", self.path, self._clock, query_only=True)
        try:
            await reader.start()
        except BaseException:
            await writer.stop()  # a failed open leaves no thread and no connection behind
            raise
        self._writer, self._reader = writer, reader

    async def _disconnect(self) -> None:
        """Close both connections and join both threads, each after its in-flight work."""
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None  # later calls fail fast with StoreError
        try:
            if reader is not None:
                await reader.stop()
        finally:
            # The writer closes last: as the file's last connection in this
            # process it checkpoints the WAL.
            if writer is not None:
                await writer.stop()

    async def _write(self, body: Callable[[_Tx], Coroutine[Any, Any, T]]) -> T:
        writer = self._worker(self._writer)
        return await writer.call(functools.partial(writer.transact, "BEGIN IMMEDIATE", body))

    async def _read(self, body: Callable[[_Tx], Coroutine[Any, Any, T]]) -> T:
        # A deferred BEGIN on the query_only connection: one WAL snapshot for
        # the whole body, taken at its first statement, never the write lock.
        # ASSUMPTION: the guidance names accounts, find_outcome, next_offset and
        # current_lease; the read helpers (books, journal, position, ...) are
        # read-only too and take the same path, so none of them queues behind a
        # commit either. Every write, heartbeat included, stays on the writer.
        # A read changes nothing, so a read transaction that meets a busy file
        # (another process opening or checkpointing it) is simply taken again.
        reader = self._worker(self._reader)
        return await reader.call(functools.partial(reader.transact_retrying, "BEGIN", body))

    async def _migrate_tx(self) -> None:
        # rule OpenDatabase @guidance: Migrate is idempotent, so while several
        # processes open one new file its transaction is retried while busy.
        writer = self._worker(self._writer)
        await writer.call(functools.partial(writer.transact_retrying, "BEGIN IMMEDIATE", self._migrate_body))


# --------------------------------------------------------------------------- PostgreSQL

_PLACEHOLDER = re.compile(r"\?")


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...`` (no SQL here has a literal '?')."""
    counter = iter(range(1, 1_000_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


_PG_NOW = "(extract(epoch from now()) * 1000000)::bigint"


class _PostgresTx:
    """A transaction on one pooled asyncpg connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(await self._conn.fetch(_pg_sql(sql), *args))

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Any] | None:
        return await self._conn.fetchrow(_pg_sql(sql), *args)  # type: ignore[no-any-return]

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        status: str = await self._conn.execute(_pg_sql(sql), *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(_pg_sql(sql), [tuple(r) for r in rows])

    async def lock_journal(self) -> _JournalRow:
        # FOR UPDATE on the single ordering row serialises commits and claims
        # under READ COMMITTED; now() is the database's clock for leases.
        row = await self._conn.fetchrow(
            "SELECT epoch, primary_node_id, lease_expires_micros, next_sequence, "
            f"{_PG_NOW} FROM journal WHERE id = 1 FOR UPDATE"
        )
        return _JournalRow(row[0], row[1], row[2], row[3], row[4])

    async def now_micros(self) -> int:
        return int(await self._conn.fetchval(f"SELECT {_PG_NOW}"))


class PostgresStore(_SqlStore):
    """DurableStore on PostgreSQL through an asyncpg pool of config.pool_size connections."""

    backend = Backend.postgres

    def __init__(self, url: str, *, config: Config | None = None) -> None:
        super().__init__(url, config=config)
        self._pool: Any = None

    async def _connect(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncio.wait_for(
                asyncpg.create_pool(self.database.url, min_size=1, max_size=self.config.pool_size),
                timeout=10,
            )
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: cannot connect: {exc}") from exc

    async def _disconnect(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.wait_for(pool.close(), timeout=10)

    async def _transact(self, body: Callable[[_Tx], Coroutine[Any, Any, T]], *, readonly: bool) -> T:
        import asyncpg

        if self._pool is None:
            raise StoreError("postgresql: not connected")
        try:
            async with self._pool.acquire() as conn:
                isolation = "repeatable_read" if readonly else "read_committed"
                async with conn.transaction(isolation=isolation, readonly=readonly):
                    return await body(_PostgresTx(conn))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc

    async def _write(self, body: Callable[[_Tx], Coroutine[Any, Any, T]]) -> T:
        return await self._transact(body, readonly=False)

    async def _read(self, body: Callable[[_Tx], Coroutine[Any, Any, T]]) -> T:
        return await self._transact(body, readonly=True)

    async def _migrate_body(self, tx: _Tx) -> None:
        # CREATE TABLE IF NOT EXISTS races between sessions on PostgreSQL; a
        # transaction-scoped advisory lock makes concurrent migrations queue.
        await tx.fetchone("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
        await super()._migrate_body(tx)


__all__ = [
    "AccountRow",
    "Backend",
    "CommitItem",
    "CommitResult",
    "Config",
    "DATABASE_TRANSITIONS",
    "Database",
    "DatabaseStatus",
    "Lease",
    "NodeRow",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreRefusal",
    "backend_of",
    "datetime_to_micros",
    "lease_holder_holds_latest_grant",
    "micros_to_datetime",
    "open_store",
    "proposal_of",
    "settled_status",
    "wall_clock_micros",
]
