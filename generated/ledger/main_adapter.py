"""The one place where unit `main` calls the node, store and event-log units.

Those units are generated in parallel from their own specs, so this module
programs against the names their specs give (node.allium StartNode guidance,
eventlog.allium EventLog guidance, store.allium DurableStore guidance) and
nothing else.  If one of them is generated differently, the mismatch shows up
here and only here.  Everything else in `main` talks to the running system
through its REST API (node.allium surface ClientApi) or through processes.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from typing import Any, Protocol

from ledger.core import Envelope

# eventlog.allium config.partitions; used when the generated module does not
# expose its Config.  ASSUMPTION: nodes are started without a partitions
# option, so they use this same default.
DEFAULT_PARTITIONS = 4


class EventLogLike(Protocol):
    """The part of eventlog.allium's EventLog contract the demo uses."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def append(self, partition: int, payload: str) -> int: ...


def run_node(argv: list[str]) -> int:
    """``python -m ledger node ...``: node.allium StartNode's ``node_main(argv)``."""
    try:
        from ledger.node import node_main
    except ImportError as exc:
        print(f"error: the node unit is not available: {exc}", file=sys.stderr)
        return 2
    return int(node_main(argv) or 0)


def log_partitions() -> int:
    """eventlog ``config.partitions`` (the generated Config if present)."""
    module = importlib.import_module("ledger.eventlog")
    config = getattr(module, "Config", None)
    try:
        return int(config().partitions) if config is not None else DEFAULT_PARTITIONS
    except (TypeError, AttributeError, ValueError):
        return DEFAULT_PARTITIONS


def make_log(url: str) -> Any:
    """``open_log(url, partitions)``: an EventLog (not yet opened)."""
    from ledger.eventlog import open_log

    return open_log(url, log_partitions())


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def envelope_payload(envelope: Envelope) -> str:
    """The log payload: the JSON text of a core Envelope (eventlog guidance).

    Uses the event log's own ``envelope_json`` when it has one so the node
    decodes exactly what the log unit encodes; otherwise the Envelope's
    fields by name, enums by value.
    """
    try:
        from ledger.eventlog import envelope_json  # type: ignore[attr-defined]
    except ImportError:
        envelope_json = None
    if envelope_json is not None:
        return str(envelope_json(envelope))
    return json.dumps({
        "request_id": envelope.request_id,
        "client_id": envelope.client_id,
        "kind": envelope.kind.value,
        "account_id": envelope.account_id,
        "counterparty_id": envelope.counterparty_id,
        "owner": envelope.owner,
        "amount_minor": envelope.amount_minor,
    }, separators=(",", ":"))


async def append_envelope(log: Any, envelope: Envelope) -> int:
    """PublishOperation: append to ``partition_of(account_id)``; returns the offset."""
    partition = await _maybe_await(log.partition_of(envelope.account_id))
    return int(await log.append(int(partition), envelope_payload(envelope)))


def real_units_available() -> str | None:
    """Capability check for the end-to-end path: None, or why it cannot run."""
    wanted = {
        "ledger.node": ("node_main",),
        "ledger.store": ("open_store",),
        "ledger.eventlog": ("open_log",),
    }
    for module_name, names in wanted.items():
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
            return f"{module_name} cannot be imported: {exc}"
        missing = [n for n in names if not callable(getattr(module, n, None))]
        if missing:
            return f"{module_name} lacks {', '.join(missing)}"
    return None
