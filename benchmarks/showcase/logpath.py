"""The log path: append operations to the service's event log as a producer.

The harness appends with the service's own log client (ledger.eventlog from
generated/, used as a library and never modified): the log's format and
partitioning are part of the contract the nodes consume, and re-implementing
them here would test the harness instead of the service.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

from benchmarks.showcase import cluster
from benchmarks.showcase.history import Attempt, Op
from benchmarks.showcase.load import RestTarget, Workload, monotonic, open_loop

PARTITIONS = 4  # eventlog.allium config.partitions


class Producer:
    def __init__(self, url: str) -> None:
        if str(cluster.GENERATED) not in sys.path:
            sys.path.insert(0, str(cluster.GENERATED))
        from ledger import eventlog  # the service's own client library
        self.eventlog = eventlog
        self.url = url
        self.log: Any = None

    async def open(self) -> None:
        self.log = self.eventlog.open_log(self.url, PARTITIONS)
        await self.log.open()

    async def append(self, op: Op, payload: str) -> Attempt:
        sent = monotonic()
        try:
            partition = self.log.partition_of(op.env.account_id)
            offset = await self.log.append(partition, payload)
        except Exception as exc:  # a broker error is an explicit failure, recorded as such
            attempt = Attempt(sent=sent, status="append_failed", received=monotonic(), body={"error": repr(exc)})
        else:
            attempt = Attempt(sent=sent, status="appended", received=monotonic())
            op.position = (partition, offset)
        op.attempts.append(attempt)
        return attempt

    async def close(self) -> None:
        if self.log is not None:
            await self.log.close()


def payload(op: Op) -> str:
    import msgspec
    env = op.env
    return msgspec.json.encode({
        "request_id": env.request_id, "client_id": env.client_id, "kind": env.kind,
        "account_id": env.account_id, "counterparty_id": env.counterparty_id,
        "owner": env.owner, "amount_minor": env.amount_minor}).decode()


def log_url(dep: cluster.Deployment) -> str:
    state = dep.state()
    for key in ("log_url", "log"):
        if isinstance(state.get(key), str) and "://" in state[key]:
            return state[key]
    raise RuntimeError(f"deployment.json names no log URL: {sorted(state)}")


async def append_with_retry(producer: Producer, op: Op, retry_until: float | None) -> Attempt:
    body = payload(op)
    while True:
        attempt = await producer.append(op, body)
        if attempt.status == "appended" or retry_until is None or monotonic() > retry_until:
            return attempt
        await asyncio.sleep(0.25 + random.random() * 0.5)


async def log_rate(dep: cluster.Deployment, target: RestTarget, work: Workload, rate: float,
                   duration: float, hist) -> tuple[dict, list[Op]]:
    """Append rate x duration operations on schedule. Latency runs from the
    scheduled time to the outcome's commit time as the store recorded it (same
    machine, same wall clock), so the client never polls and adds no load."""
    from benchmarks.showcase import storeview
    from benchmarks.showcase_load import summarize  # one summary format for both paths
    store_url = dep.state()["store_url"]
    since = max((r["sequence"] for r in await storeview.outcomes(store_url)), default=0)
    producer = Producer(log_url(dep))
    await producer.open()
    ops = [Op(work.next(), "log", 0.0) for _ in range(int(rate * duration))]
    bodies = [payload(op) for op in ops]

    async def launch(i: int, due: float) -> None:
        ops[i].invoked = due
        await producer.append(ops[i], bodies[i])

    cpu = time.process_time()
    wall = time.time() - monotonic()
    start = await open_loop(rate, len(ops), launch, monotonic)
    cpu = time.process_time() - cpu
    await producer.close()
    due = {op.env.key: op.invoked for op in ops if op.acknowledged}
    committed: dict[tuple, float] = {}
    deadline = monotonic() + 60
    while len(committed) < len(due) and monotonic() < deadline:
        await asyncio.sleep(0.25)
        for row in await storeview.outcomes(store_url, since):
            key = (row["client_id"], row["request_id"])
            since = max(since, row["sequence"])
            if key in due and row.get(storeview.COMMITTED_AT) is not None:
                committed[key] = row[storeview.COMMITTED_AT] / 1e6 - wall
    for key, at in committed.items():
        hist.record_value(max(1, int((at - due[key]) * 1e6)))
    summary = summarize("log", rate, ops, start, hist)
    summary["client_cpu_us_per_op"] = round(cpu / max(len(ops), 1) * 1e6, 1)
    summary["not_committed_in_60s"] = len(due) - len(committed)
    if committed:
        summary["achieved"] = round(len(committed) / max(max(committed.values()) - start, 1e-9), 1)
    return summary, ops


async def wait_for_outcomes(store_url: str, ops: list[Op], timeout: float) -> int:
    """Wait until every appended log request has an outcome in the store;
    returns how many never did."""
    from benchmarks.showcase import storeview
    waiting = {op.env.key for op in ops if op.channel == "log" and op.acknowledged}
    deadline = monotonic() + timeout
    since = 0
    while waiting:
        for row in await storeview.outcomes(store_url, since):
            since = max(since, row["sequence"])
            waiting.discard((row["client_id"], row["request_id"]))
        if not waiting or monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    return len(waiting)
