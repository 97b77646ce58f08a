"""The fault actions of benchmarks/resilience.py. Each takes the scenario's Run,
acts through the service's own launcher (in a thread, so the load keeps its
schedule), and records what it did in the run's timeline."""

from __future__ import annotations

import asyncio
import subprocess
from typing import TYPE_CHECKING, Awaitable, Callable

from benchmarks.showcase import cluster
from benchmarks.showcase.load import monotonic
from benchmarks.showcase.proxy import Proxy

if TYPE_CHECKING:
    from benchmarks.resilience import Run


async def _launcher(run: "Run", verb: str, name: str) -> None:
    fn = {"kill": run.dep.kill, "restart": run.dep.restart}[verb]
    await asyncio.to_thread(fn, name)
    run.note(f"{verb} {name}")


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


async def nothing(run: "Run") -> None:
    """For faults present all along (a Byzantine replica started by the launcher)."""
    run.note("fault present from the start")


def kill_named(name: str) -> Callable[["Run"], Awaitable[None]]:
    async def act(run: "Run") -> None:
        run.victims = [name]
        await _launcher(run, "kill", name)
    return act


async def restart_victims(run: "Run") -> None:
    for victim in run.victims:
        await _launcher(run, "restart", victim)


async def partition(run: "Run") -> None:
    """Cut the primary off from both peers (both directions); clients still reach it."""
    proxied: ProxiedCluster = run.extra["proxied"]
    victim = await _leader(run)
    run.victims = [victim]
    proxied.cut(victim)
    run.note(f"cut {victim} off from its peers")


async def heal_partition(run: "Run") -> None:
    run.extra["proxied"].heal()
    run.note("partition healed")


class ProxiedCluster:
    """The deployment's nodes restarted by the harness so that every node-to-node
    connection runs through a proxy it can cut. Node k gets its own --base-port
    Q_k: it listens on Q_k + k and reaches peer j at Q_k + j, where a proxy
    forwards to peer j's real port (node_config.url_of: base port + ordinal)."""

    def __init__(self, dep: cluster.Deployment) -> None:
        self.dep = dep
        self.procs: dict[str, subprocess.Popen] = {}
        self.proxies: dict[tuple[str, str], Proxy] = {}

    async def start(self) -> None:
        state = self.dep.state()
        nodes = [c for c in cluster._children(state) if c.get("kind") == "node"]
        for child in nodes:
            await asyncio.to_thread(self.dep.kill, child["name"])
        n = len(nodes)
        bases = {c["name"]: cluster.free_block(n) for c in nodes}
        listen = {name: base + int(name[1:]) for name, base in bases.items()}
        for child in nodes:
            argv = list(child["argv"])
            argv[argv.index("--base-port") + 1] = str(bases[child["name"]])
            env = dict(cluster._env(child.get("env") or {}))
            log = open(self.dep.run_dir / f"{child['name']}-proxied.log", "ab")
            self.procs[child["name"]] = subprocess.Popen(argv, cwd=self.dep.workdir, env=env, stdout=log,
                                                         stderr=subprocess.STDOUT, start_new_session=True)
        for k in bases:
            for j in bases:
                if j != k:
                    proxy = Proxy(bases[k] + int(j[1:]), listen[j])
                    await proxy.start()
                    self.proxies[(k, j)] = proxy
        self.dep.ports_override = listen
        await wait_all_serving(self.dep, timeout=60)

    def cut(self, victim: str) -> None:
        for (k, j), proxy in self.proxies.items():
            if victim in (k, j):
                proxy.cut = True

    def heal(self) -> None:
        for proxy in self.proxies.values():
            if proxy.cut:
                proxy.heal()

    async def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        for proxy in self.proxies.values():
            await proxy.stop()
        self.dep.ports_override = None


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
