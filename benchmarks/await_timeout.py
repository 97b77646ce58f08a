"""The cheapest way for a request handler to await its outcome with a timeout.

    python benchmarks/await_timeout.py [--requests 256] [--rounds 40] [--repeats 7]

A node's REST handler awaits the pipeline's answer for each request under a
deadline (`asyncio.wait_for(pipeline.submit(...), response_wait)` in
generated/ledger/node_runtime.py). This times, per request, in CPython's own
asyncio loop and in uvloop, with the answer arriving before the deadline (the
common case):

  bare            await the coroutine, no deadline (the floor)
  wait_for        asyncio.wait_for(coroutine, T): what the node does; on 3.11 it wraps
                  the coroutine in a Task and adds a waiter future and a timer
  wait_for_future asyncio.wait_for(future, T): the future the coroutine would await
  timeout         async with asyncio.timeout(T): await coroutine
  call_later      one timer per request that fails the future at the deadline
  batch_deadline  one timer per batch of requests, failing every unanswered future

Each round starts `--requests` handler tasks, lets them all register, then
answers every future at once, as a committed batch does. Variants alternate;
medians of `--repeats` are printed, per request and less the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

T = 10.0  # the deadline; never reached in the timed rounds


class Pipeline:
    """Hands each request a future; answer() resolves every pending one."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future] = []
        self.batch_timer: asyncio.TimerHandle | None = None
        self.batch: list[asyncio.Future] = []

    def register(self) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        return fut

    async def submit(self) -> Any:
        return await self.register()

    def register_batched(self, timeout: float) -> asyncio.Future:
        """Join the open batch; its first member arms the batch's one timer."""
        fut = self.register()
        if self.batch_timer is None:
            self.batch = []
            self.batch_timer = asyncio.get_running_loop().call_later(timeout, _expire_all, self.batch)
        self.batch.append(fut)
        return fut

    def answer(self) -> None:
        for fut in self.pending:
            if not fut.done():
                fut.set_result(1)
        self.pending = []
        if self.batch_timer is not None:
            self.batch_timer.cancel()
            self.batch_timer = None


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


def _expire_all(batch: list[asyncio.Future]) -> None:
    for fut in batch:
        _expire(fut)


async def bare(p: Pipeline, timeout: float) -> Any:
    return await p.submit()


async def wait_for(p: Pipeline, timeout: float) -> Any:
    return await asyncio.wait_for(p.submit(), timeout)


async def wait_for_future(p: Pipeline, timeout: float) -> Any:
    return await asyncio.wait_for(p.register(), timeout)


async def timeout_cm(p: Pipeline, timeout: float) -> Any:
    async with asyncio.timeout(timeout):
        return await p.submit()


async def call_later(p: Pipeline, timeout: float) -> Any:
    fut = p.register()
    timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
    try:
        return await fut
    finally:
        timer.cancel()


async def batch_deadline(p: Pipeline, timeout: float) -> Any:
    return await p.register_batched(timeout)


Handler = Callable[[Pipeline, float], Coroutine[Any, Any, Any]]
VARIANTS: dict[str, Handler] = {"bare": bare, "wait_for": wait_for, "wait_for_future": wait_for_future,
                                "timeout": timeout_cm, "call_later": call_later, "batch_deadline": batch_deadline}


async def one_round(handler: Handler, n: int) -> None:
    p = Pipeline()
    tasks = [asyncio.ensure_future(handler(p, T)) for _ in range(n)]
    while len(p.pending) < n:  # wait_for on a coroutine registers one loop turn later
        await asyncio.sleep(0)
    p.answer()
    await asyncio.gather(*tasks)


async def time_variant(handler: Handler, n: int, rounds: int) -> float:
    """Microseconds per request over `rounds` rounds."""
    t0 = time.perf_counter()
    for _ in range(rounds):
        await one_round(handler, n)
    return (time.perf_counter() - t0) / (n * rounds) * 1e6


async def check_deadlines() -> None:
    """Every variant but the floor must fail an unanswered request at its deadline."""
    for name, handler in VARIANTS.items():
        if name == "bare":
            continue
        p = Pipeline()
        tasks = [asyncio.ensure_future(handler(p, 0.01)) for _ in range(3)]
        done, stuck = await asyncio.wait(tasks, timeout=2.0)  # a variant without a deadline would hang
        for task in stuck:
            task.cancel()
        if stuck or not all(isinstance(t.exception(), TimeoutError) for t in done):
            raise SystemExit(f"{name} does not enforce its deadline")


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    await check_deadlines()
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for rep in range(args.repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(await time_variant(VARIANTS[name], args.requests, args.rounds))
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256, help="handlers per round (a batch)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
    try:
        import uvloop
        loops["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    print(f"Python {sys.version.split()[0]}; {args.requests} requests per round, medians of {args.repeats}")
    print(f"{'loop':<8} {'variant':<16} {'us/request':>10} {'over floor':>10}")
    for loop_name, factory in loops.items():
        with asyncio.Runner(loop_factory=factory) as runner:
            samples = runner.run(measure(args))
        floor = statistics.median(samples["bare"])
        for name, values in samples.items():
            med = statistics.median(values)
            print(f"{loop_name:<8} {name:<16} {med:>10.2f} {med - floor:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
