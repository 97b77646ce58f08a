"""The fault actions of benchmarks/resilience.py. Each takes the scenario's Run,
acts through the service's own launcher (in a thread, so the load keeps its
schedule), and records what it did in the run's timeline."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Awaitable, Callable

from benchmarks.showcase import cluster
from benchmarks.showcase.load import monotonic

if TYPE_CHECKING:
    from benchmarks.resilience import Run


async def _launcher(run: "Run", verb: str, name: str, env: dict[str, str] | None = None) -> None:
    fn = {"kill": run.dep.kill, "restart": run.dep.restart}[verb]
    await asyncio.to_thread(fn, name, *([env] if verb == "restart" else []))
    run.note(f"{verb} {name}" + (f" {env}" if env else ""))


async def _leader(run: "Run") -> str:
    leader = await asyncio.to_thread(run.dep.leader, 15.0)
    if leader is None:
        raise RuntimeError("no leader to act on")
    return leader


async def _backups(run: "Run") -> list[str]:
    leader = await _leader(run)
    return [n for n in run.dep.node_ports() if n != leader]


async def kill_primary(run: "Run") -> None:
    run.victims = [await _leader(run)]
    await _launcher(run, "kill", run.victims[0])


async def kill_backup(run: "Run") -> None:
    run.victims = [(await _backups(run))[-1]]
    await _launcher(run, "kill", run.victims[0])


async def kill_two(run: "Run") -> None:
    leader, backup = await _leader(run), (await _backups(run))[0]
    run.victims = [leader, backup]
    await asyncio.gather(_launcher(run, "kill", leader), _launcher(run, "kill", backup))


async def kill_during_recovery(run: "Run") -> None:
    """Kill the primary, then the first backup that claims the lease, while it
    is still rebuilding its state from the store."""
    first = await _leader(run)
    run.victims = [first]
    await _launcher(run, "kill", first)
    deadline = monotonic() + 15
    while monotonic() < deadline:
        for node in run.dep.node_ports():
            if node == first:
                continue
            doc = await asyncio.to_thread(run.dep.health, node, 0.5)
            if doc and doc.get("status") == "leader":
                run.victims.append(node)
                await _launcher(run, "kill", node)
                return
        await asyncio.sleep(0.02)
    run.note("no successor claimed within 15 s")


def byzantine(fault: str) -> Callable[["Run"], Awaitable[None]]:
    async def act(run: "Run") -> None:
        victim = (await _backups(run))[-1]
        run.victims = [victim]
        await _launcher(run, "kill", victim)
        await _launcher(run, "restart", victim, {"LEDGER_FAULT": fault})
    return act


def kill_named(name: str) -> Callable[["Run"], Awaitable[None]]:
    async def act(run: "Run") -> None:
        run.victims = [name]
        await _launcher(run, "kill", name)
    return act


async def restart_victims(run: "Run") -> None:
    for victim in run.victims:
        await _launcher(run, "restart", victim)


async def restart_victims_clean(run: "Run") -> None:
    for victim in run.victims:
        await _launcher(run, "kill", victim)
        await _launcher(run, "restart", victim, {"LEDGER_FAULT": "none"})


async def partition(run: "Run") -> None:
    raise NotImplementedError("partition needs the node command line from deployment.json")


async def heal_partition(run: "Run") -> None:
    raise NotImplementedError


async def wait_all_serving(dep: cluster.Deployment, timeout: float) -> None:
    """Every node answers /healthz as leader or backup and one of them leads."""
    deadline = monotonic() + timeout
    while monotonic() < deadline:
        docs = [await asyncio.to_thread(dep.health, n, 0.5) for n in dep.node_ports()]
        if all(d and d.get("status") in ("leader", "backup") for d in docs) and \
                any(d.get("status") == "leader" for d in docs if d):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the deployment did not recover within {timeout} s: {docs}")
