"""Read the committed outcomes straight from the service's store.

Over REST the harness can only ask about requests it sent; the store shows
every outcome row, so phantom outcomes become visible, and the commit time of
each row gives the log path's end-to-end latency without polling. Columns are
found by name (store.allium names them after core's Outcome), read only.
"""

from __future__ import annotations

import sqlite3


FIELDS = ("sequence", "client_id", "request_id", "kind", "verdict", "reason", "account_id",
          "counterparty_id", "account_delta_minor", "counterparty_delta_minor", "epoch")
COMMITTED_AT = "committed_at_micros"


def _columns(names: list[str]) -> list[str]:
    missing = [f for f in FIELDS if f not in names]
    if missing:
        raise RuntimeError(f"the store's outcomes table lacks {missing}; it has {names}")
    return list(FIELDS) + ([COMMITTED_AT] if COMMITTED_AT in names else [])


def _sqlite_rows(path: str, since: int) -> list[dict]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        names = [r[1] for r in db.execute("PRAGMA table_info(outcomes)")]
        cols = _columns(names)
        rows = db.execute(f"SELECT {', '.join(cols)} FROM outcomes WHERE sequence > ? ORDER BY sequence",
                          (since,)).fetchall()
    finally:
        db.close()
    return [dict(zip(cols, row, strict=True)) for row in rows]


async def _postgres_rows(url: str, since: int) -> list[dict]:
    import asyncpg
    conn = await asyncpg.connect(url)
    try:
        names = [r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'outcomes'")]
        cols = _columns(names)
        rows = await conn.fetch(f"SELECT {', '.join(cols)} FROM outcomes WHERE sequence > $1 ORDER BY sequence",
                                since)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def outcomes(store_url: str, since: int = 0) -> list[dict]:
    """Every outcome row with a sequence above `since`, in sequence order."""
    if store_url.startswith("sqlite:///"):
        import asyncio
        return await asyncio.to_thread(_sqlite_rows, store_url[len("sqlite:///"):], since)
    if store_url.startswith("postgresql://"):
        return await _postgres_rows(store_url, since)
    raise RuntimeError(f"unknown store URL {store_url}")
