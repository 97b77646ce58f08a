"""Open-loop load against the ledger service, recording a checkable history.

Requests go out on a fixed schedule (request i at start + i / rate) whatever
the service's pace, and latency is measured from the scheduled time, so a
stall shows up as latency for every request it delayed (no coordinated
omission). Every try and every answer is kept as a history.Op for the checker.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import msgspec

from benchmarks.showcase.history import Attempt, Final, Op
from benchmarks.showcase.http import CONN_ERROR, TIMEOUT, Pool
from benchmarks.showcase.model import Envelope

DEFINITE_HTTP = {200, 400, 404, 409, 413, 415, 422}
# How long a 202'd request may show no outcome before the client resubmits it
# (three times the service's 2 s sync wait).
PENDING_PATIENCE_S = 6.0


@dataclass
class Workload:
    """A mix of operations over `accounts` pre-opened accounts; with hot_fraction
    > 0 that share of operations targets the first `hot_accounts` accounts."""

    run_id: str
    accounts: int = 1000
    hot_fraction: float = 0.0
    hot_accounts: int = 1
    clients: int = 8
    seed: int = 1
    counter: int = 0
    fresh: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def account(self, i: int) -> str:
        return f"{self.run_id}-a{i}"

    def _pick(self) -> str:
        if self.hot_fraction and self.rng.random() < self.hot_fraction:
            return self.account(self.rng.randrange(self.hot_accounts))
        return self.account(self.rng.randrange(self.accounts))

    def _env(self, kind: str, acct: str, amount: int = 0, to: str | None = None,
             owner: str | None = None) -> Envelope:
        self.counter += 1
        client = f"{self.run_id}-c{self.counter % self.clients}"
        return Envelope(client, f"r{self.counter}", kind, acct, to, owner, amount)

    def setup(self) -> list[Envelope]:
        """Open every account, then fund it: two waves, the second after the first."""
        opens = [self._env("open", self.account(i), owner=f"owner{i}") for i in range(self.accounts)]
        funds = [self._env("deposit", self.account(i), 100_000) for i in range(self.accounts)]
        return opens + funds

    def next(self) -> Envelope:
        """5% opens (half of them closed again later), 35% deposits, 25% withdrawals,
        35% transfers; amounts make some withdrawals and transfers fail on funds."""
        r = self.rng.random()
        if r < 0.04:
            self.fresh += 1
            return self._env("open", f"{self.run_id}-f{self.fresh}")
        if r < 0.05 and self.fresh:
            return self._env("close", f"{self.run_id}-f{self.rng.randint(1, self.fresh)}")
        amount = self.rng.randint(1, 5_000)
        if r < 0.40:
            return self._env("deposit", self._pick(), amount)
        if r < 0.65:
            return self._env("withdraw", self._pick(), amount * 10)
        src, dst = self._pick(), self._pick()
        return self._env("transfer", src, amount * 10, dst)


class RestTarget:
    """Sends round-robin over the given nodes, or, when sticky, to one node (the
    leader first) until it fails to answer, then to the next: a client that
    knows the primary, so backups need not forward."""

    def __init__(self, ports: list[int], conns: int = 64, timeout: float = 10.0,
                 sticky: bool = False, first: int = 0) -> None:
        self.pools = [Pool("127.0.0.1", p, conns) for p in ports]
        self.timeout, self.turn, self.sticky = timeout, first, sticky

    def pick(self) -> Pool:
        if not self.sticky:
            self.turn += 1
        return self.pools[self.turn % len(self.pools)]

    def failed(self, pool: Pool) -> None:
        """The node behind `pool` gave no answer or a 503: a sticky client moves on."""
        if self.sticky and self.pools[self.turn % len(self.pools)] is pool:
            self.turn += 1

    async def get_json(self, path: str, patience: float = 0.0) -> tuple[int | str, dict | list | None]:
        """GET from any node; keeps trying other nodes for `patience` seconds
        (a node may be restarting, or still working off an overload)."""
        deadline = time.monotonic() + patience
        while True:
            for _ in range(len(self.pools)):
                status, data, _ = await self.pick().request("GET", path, None, self.timeout)
                if status in (200, 404):
                    return status, _DECODE(data) if data else None
            if time.monotonic() > deadline:
                return status, None
            await asyncio.sleep(0.5)

    def close(self) -> None:
        for pool in self.pools:
            pool.close()


def encode(op: Op) -> bytes:
    return _ENCODE(op.env.body())


_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder().decode


async def send_rest(target: RestTarget, op: Op, due: float, retry_until: float | None,
                    clock: Callable[[], float], body: bytes | None = None) -> Attempt:
    """POST the request; while retry_until allows, retry 503s and lost
    connections with the same request id on the next node, as the spec
    tells clients to. A 202 is followed by status polls until an outcome."""
    body = body or encode(op)
    path = f"/v1/requests/{op.env.client_id}/{op.env.request_id}"
    sent = due
    while True:
        pool = target.pick()
        status, data, headers = await pool.request("POST", "/v1/requests", body, target.timeout)
        if status in (CONN_ERROR, TIMEOUT, 503):
            target.failed(pool)
        attempt = Attempt(sent=sent, status=status, received=clock())
        op.attempts.append(attempt)
        if status in (200, 409, 202) and data:
            attempt.body = _DECODE(data)
        if status == 202:
            polled = await _poll_outcome(target, path, clock)
            if polled is not None:
                attempt = Attempt(sent=sent, status=200, received=clock(), body=_DECODE(polled), poll=True)
                op.attempts.append(attempt)
                return attempt
        if status in DEFINITE_HTTP or retry_until is None or clock() > retry_until:
            return attempt
        # Exponential backoff with jitter, capped at the spec's Retry-After of 1 s:
        # thousands of clients retrying in lockstep would be a load test of their own.
        tries = sum(1 for a in op.attempts if not a.poll)
        await asyncio.sleep(min(1.0, 0.05 * 2 ** tries) * (0.5 + random.random()))
        sent = clock()


async def _poll_outcome(target: RestTarget, path: str, clock: Callable[[], float],
                        patience: float | None = None) -> bytes | None:
    """After a 202, poll the request's status until it has an outcome.

    404 means "no outcome yet" and also "never heard of it": a pending request
    whose primary stepped down is dropped with nothing to show for it. So a
    404 that lasts `patience` seconds sends the client back to resubmitting
    with the same request id, which exactly-once makes safe."""
    deadline, pause = clock() + (PENDING_PATIENCE_S if patience is None else patience), 0.05
    while clock() < deadline:
        await asyncio.sleep(pause)
        status, data, _ = await target.pick().request("GET", path, None, target.timeout)
        if status == 200 and data:
            return data
        pause = min(0.5, pause * 1.5)
    return None


def quiet_gc() -> None:
    """Keep the garbage collector from pausing the client mid-run.

    The client holds every request of the run (the history the checker needs),
    hundreds of thousands of objects that each full collection walked while
    sends and answers waited: at 5,000 ops/s the client's own pauses alone made
    p99 158 ms against 55 ms with this. What exists now is frozen out of every
    later collection, and young collections run less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


# The scheduler wakes at most once per tick and starts every request that fell
# due since. Sleeping until each request's own due time instead asked the event
# loop for sub-millisecond timers, which libuv rounds to zero: the client spun a
# whole core at any rate and left the service one core of the two.
TICK_S = 0.001


async def open_loop(rate: float, count: int, launch: Callable[[int, float], Awaitable[None]],
                    clock: Callable[[], float]) -> float:
    """Start request i at start + i / rate; returns the start time. Awaits all.

    Latency is measured from the scheduled time, so starting a request up to
    one tick late shows up in its latency rather than hiding."""
    quiet_gc()
    start = clock() + 0.05
    tasks = []
    i = 0
    while i < count:
        due = start + i / rate
        now = clock()
        if due > now:
            await asyncio.sleep(max(due - now, TICK_S))
            continue
        while i < count and start + i / rate <= now:
            tasks.append(asyncio.ensure_future(launch(i, start + i / rate)))
            i += 1
    await asyncio.gather(*tasks)
    return start


async def read_final(target: RestTarget, ops: list[Op], account_ids: set[str],
                     store_url: str | None = None, client_prefix: str = "",
                     concurrency: int = 64) -> Final:
    """Every account's row over REST, and the committed outcomes: from the store
    when its URL is given (every row of clients under client_prefix, so an
    outcome nobody asked for shows up), else over REST for each request sent."""
    if not store_url:
        return await _read_final_once(target, ops, account_ids, None, client_prefix, concurrency)
    # A request whose client gave up may still commit while the accounts are
    # read, which would pair accounts newer than the outcomes. Each commit
    # writes its outcomes and accounts atomically, so a read during which the
    # store's last sequence did not move is a consistent snapshot.
    for _ in range(40):
        before = await _last_sequence(store_url)
        final = await _read_final_once(target, ops, account_ids, store_url, client_prefix, concurrency)
        if await _last_sequence(store_url) == before:
            return final
        await asyncio.sleep(0.5)
    raise RuntimeError("the store kept committing for 20 s after the load stopped")


async def _last_sequence(store_url: str) -> int:
    from benchmarks.showcase import storeview
    return max((r["sequence"] for r in await storeview.outcomes(store_url)), default=0)


async def _read_final_once(target: RestTarget, ops: list[Op], account_ids: set[str], store_url: str | None,
                           client_prefix: str, concurrency: int) -> Final:
    from benchmarks.showcase import storeview
    outcomes: list[dict] = []
    if store_url:
        outcomes = [r for r in await storeview.outcomes(store_url) if r["client_id"].startswith(client_prefix)]
        ops = []
    accounts: dict[str, dict] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one_outcome(op: Op) -> None:
        async with sem:
            status, doc = await target.get_json(f"/v1/requests/{op.env.client_id}/{op.env.request_id}", 60)
            if status == 200 and isinstance(doc, dict):
                outcomes.append(doc)
            elif status != 404:
                raise RuntimeError(f"cannot read the outcome of {op.env.key}: {status}")

    async def one_account(acct: str) -> None:
        async with sem:
            status, doc = await target.get_json(f"/v1/accounts/{acct}", 60)
            if status == 200 and isinstance(doc, dict):
                accounts[acct] = doc
            elif status != 404:
                raise RuntimeError(f"cannot read account {acct}: {status}")

    await asyncio.gather(*(one_outcome(op) for op in ops), *(one_account(a) for a in account_ids))
    return Final(outcomes, accounts)


def touched_accounts(ops: list[Op]) -> set[str]:
    return {a for op in ops for a in (op.env.account_id, op.env.counterparty_id) if a}


def monotonic() -> float:
    return time.monotonic()
