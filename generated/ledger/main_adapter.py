"""The one place where unit `main` calls the node and event-log units' code.

It uses exactly the names their generated modules export: ``ledger.node.node_main``
(node.allium StartNode), ``ledger.eventlog.open_log`` and
``ledger.eventlog.publish_operation`` (eventlog.allium OpenLog and
PublishOperation).  The store is never opened here: `main` reads balances and
outcomes through the nodes' REST API (node.allium surface ClientApi), and the
nodes open the store themselves from the ``--store`` URL it passes them.
Imports are lazy so that ``python -m ledger status`` and friends do not pay
for loading the node's server stack.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from ledger.core import Envelope

if TYPE_CHECKING:
    from ledger.eventlog import EventLog


def run_node(argv: list[str]) -> int:
    """``python -m ledger node ...``: node.allium StartNode's ``node_main(argv)``."""
    try:
        from ledger.node import node_main
    except ImportError as exc:
        print(f"error: the node unit is not available: {exc}", file=sys.stderr)
        return 2
    return int(node_main(argv) or 0)


def make_log(url: str) -> EventLog:
    """eventlog OpenLog: an EventLog for ``url`` (not yet opened).

    ASSUMPTION: the nodes are started without a partitions option, so both
    sides use eventlog's ``config.partitions`` default and agree on where an
    account's operations go.
    """
    from ledger.eventlog import open_log

    return open_log(url)


async def append_envelope(log: EventLog, envelope: Envelope) -> int:
    """eventlog PublishOperation: append to the account's partition; returns the offset."""
    from ledger.eventlog import publish_operation

    return (await publish_operation(log, envelope)).offset


def real_units_available() -> str | None:
    """Capability check for the end-to-end tests: None, or why they cannot run."""
    wanted = {
        "ledger.node": ("node_main",),
        "ledger.store": ("open_store",),
        "ledger.eventlog": ("open_log", "publish_operation"),
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
