"""The ONE adapter between the node and the store / event-log units.

Every call the node makes to ``ledger.store`` (contract DurableStore) and
``ledger.eventlog`` (contract EventLog) goes through here, so a mismatch with
those units is visible in one place.  Anything missing or failing becomes
``PortUnavailable``, which the node answers with 503 (never a 500).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Callable

log = logging.getLogger("ledger.node.ports")


class PortUnavailable(Exception):
    """The store or the log cannot serve this call (missing, closed or failing)."""


def _name(value: Any) -> str | None:
    """An enum member's value (or a plain string) as text; None stays None."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _store_module() -> Any:
    try:
        return importlib.import_module("ledger.store")
    except ImportError as exc:
        raise PortUnavailable(f"ledger.store is not available: {exc}") from None


DEFAULT_LEASE_MICROS = 1_500_000  # store.allium's config.lease_micros default


def store_lease_micros() -> int:
    """store.allium's config.lease_micros, from ledger.store when it is there."""
    try:
        return int(_store_module().Config().lease_micros)
    except Exception:  # no store unit, or no Config: the spec's default
        return DEFAULT_LEASE_MICROS


@dataclass(frozen=True)
class LeaseView:
    """What the node reads of store.allium's Lease: epoch, holder and expiry."""

    epoch: int
    holder: str | None
    expires_at: datetime


@dataclass(frozen=True)
class CommitOutcome:
    """One CommitResult as the node reads it: disposition / refusal names and the sequence."""

    disposition: str | None
    refusal: str | None
    sequence: int | None


# DurableStore.current_lease is the lease reader (ForwardToPrimary's @guidance).
_LEASE_READERS = ("current_lease",)


class StorePort:
    """contract DurableStore, as the node uses it."""

    def __init__(self, store: Any, *, commit_item_type: Callable[..., Any] | None = None,
                 account_row_type: Callable[..., Any] | None = None) -> None:
        self._store = store
        self._commit_item_type = commit_item_type
        self._account_row_type = account_row_type

    @classmethod
    async def open(cls, url: str) -> StorePort:
        """``open_store(url)``, ``open()`` and ``migrate()``; PortUnavailable when any fails."""
        module = _store_module()
        try:
            store = module.open_store(url)
            await store.open()
            await store.migrate()
        except Exception as exc:  # the store unit's own errors are not known here
            raise PortUnavailable(f"cannot open store {url}: {exc}") from exc
        return cls(store)

    async def _call(self, name: str, *args: Any) -> Any:
        method = getattr(self._store, name, None)
        if method is None:
            raise PortUnavailable(f"the store has no {name}()")
        try:
            return await method(*args)
        except PortUnavailable:
            raise
        except Exception as exc:
            log.warning("store.%s failed: %r", name, exc)
            raise PortUnavailable(f"store.{name} failed: {exc}") from exc

    async def close(self) -> None:
        """``close()``; errors at close are logged, never raised."""
        try:
            await self._store.close()
        except Exception as exc:
            log.warning("store close failed: %r", exc)

    async def claim_epoch(self, node_id: str, expected_epoch: int, lease_micros: int) -> int | None:
        return await self._call("claim_epoch", node_id, expected_epoch, lease_micros)

    async def renew_lease(self, node_id: str, epoch: int, lease_micros: int) -> bool:
        return bool(await self._call("renew_lease", node_id, epoch, lease_micros))

    async def read_lease(self) -> LeaseView | None:
        """``current_lease()`` as a LeaseView; None when the store has no lease reader."""
        for name in _LEASE_READERS:
            if callable(getattr(self._store, name, None)):
                raw = await self._call(name)
                return _lease_view(raw)
        return None

    def commit_item(self, **fields: Any) -> Any:
        """A ``ledger.store.CommitItem`` with the given fields."""
        factory = self._commit_item_type or _store_module().CommitItem
        return factory(**fields)

    def account_row(self, **fields: Any) -> Any:
        """A ``ledger.store.AccountRow`` (attribute bag if the store unit is absent)."""
        factory = self._account_row_type
        if factory is None:
            try:
                factory = _store_module().AccountRow
            except PortUnavailable:
                factory = SimpleNamespace
        return factory(**fields)

    async def commit(self, epoch: int, items: Sequence[Any]) -> list[CommitOutcome]:
        results = await self._call("commit", epoch, list(items))
        if len(results) != len(items):
            raise PortUnavailable(f"store.commit returned {len(results)} results for {len(items)} items")
        return [CommitOutcome(_name(getattr(r, "disposition", None)), _name(getattr(r, "refusal", None)),
                              getattr(r, "sequence", None)) for r in results]

    async def accounts(self, account_ids: Iterable[str]) -> list[Any]:
        return list(await self._call("accounts", set(account_ids)))

    async def find_outcome(self, client_id: str, request_id: str) -> Any | None:
        return await self._call("find_outcome", client_id, request_id)

    async def next_offset(self, partition: int) -> int:
        return int(await self._call("next_offset", partition))

    async def dead_letter(self, partition: int, offset: int, payload_digest: str, cause: str) -> bool:
        return bool(await self._call("dead_letter", partition, offset, payload_digest, cause))


def _lease_view(raw: Any) -> LeaseView | None:
    """Read a lease object, mapping or tuple the store returned (epoch, holder, expiry)."""
    if raw is None:
        return None
    get = raw.get if isinstance(raw, dict) else (lambda k, d=None: getattr(raw, k, d))
    epoch = get("epoch")
    if epoch is None:
        return None
    holder = get("holder", get("primary_node_id"))
    expires = get("expires_at", None)
    if expires is None:
        micros = get("expires_at_micros", get("lease_expires_micros", 0)) or 0
        expires = datetime.fromtimestamp(int(micros) / 1e6, tz=timezone.utc)
    elif isinstance(expires, (int, float)):
        expires = datetime.fromtimestamp(expires / 1e6, tz=timezone.utc)
    return LeaseView(int(epoch), holder, expires)


class LogPort:
    """contract EventLog, as the node uses it."""

    def __init__(self, log_: Any) -> None:
        self._log = log_

    @classmethod
    async def open(cls, url: str, partitions: int | None = None) -> LogPort:
        try:
            module = importlib.import_module("ledger.eventlog")
            count = partitions if partitions is not None else module.Config().partitions
            handle = module.open_log(url, partitions=count)  # open_log(url, partitions=None, *, config)
            await handle.open()
        except Exception as exc:
            raise PortUnavailable(f"cannot open log {url}: {exc}") from exc
        return cls(handle)

    @property
    def partitions(self) -> int:
        """How many partitions the log has (the eventlog config default when it does not say)."""
        count = getattr(self._log, "partitions", None)
        if isinstance(count, int):
            return count
        try:
            return int(importlib.import_module("ledger.eventlog").Config().partitions)
        except Exception:
            return 4

    async def _call(self, name: str, *args: Any) -> Any:
        try:
            return await getattr(self._log, name)(*args)
        except Exception as exc:
            log.warning("log.%s failed: %r", name, exc)
            raise PortUnavailable(f"log.{name} failed: {exc}") from exc

    async def close(self) -> None:
        try:
            await self._log.close()
        except Exception as exc:
            log.warning("log close failed: %r", exc)

    async def append(self, partition: int, payload: str) -> int:
        return int(await self._call("append", partition, payload))

    async def read(self, partition: int, from_offset: int, max_count: int) -> list[Any]:
        return list(await self._call("read", partition, from_offset, max_count))

    async def end_offset(self, partition: int) -> int:
        return int(await self._call("end_offset", partition))

    def partition_of(self, account_id: str) -> int:
        return int(self._log.partition_of(account_id))
