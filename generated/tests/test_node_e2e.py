"""End to end: three real node processes on loopback over the real store and log.

Runs only when ``ledger.store`` and ``ledger.eventlog`` exist and expose the
contracts the node programs against (DurableStore, EventLog); otherwise the
module is skipped.  Uses a SQLite store and the embedded (SQLite) log in
tmp_path, submits through REST, kills the leader with SIGKILL and checks that
a backup takes over.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

store_mod = pytest.importorskip("ledger.store")
log_mod = pytest.importorskip("ledger.eventlog")

STORE_METHODS = ("open", "close", "migrate", "claim_epoch", "renew_lease", "commit", "accounts", "find_outcome",
                 "next_offset", "dead_letter")
LOG_METHODS = ("open", "close", "append", "read", "end_offset", "partition_of")


def _capable() -> bool:
    if not callable(getattr(store_mod, "open_store", None)) or not callable(getattr(log_mod, "open_log", None)):
        return False
    return all(hasattr(store_mod, n) for n in ("CommitItem", "AccountRow", "CommitResult", "StoreRefusal"))


pytestmark = pytest.mark.skipif(not _capable(), reason="ledger.store / ledger.eventlog do not expose the contract")

ROOT = Path(__file__).resolve().parent.parent
NODES = 3
DEADLINE = 20.0


def _free_base(count: int) -> int:
    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] - 1
        probe.close()
        try:
            for i in range(1, count + 1):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                s.close()
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


class Cluster:
    """Three `ledger node` child processes and how to reach them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.base = _free_base(NODES)
        self.store_url = f"sqlite:///{tmp / 'store.db'}"
        self.log_url = f"sqlite:///{tmp / 'log.db'}"
        self.key_file = tmp / "cluster.key"
        self.key_file.write_text(os.urandom(24).hex())
        os.chmod(self.key_file, 0o600)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.base + int(node[1:])}"

    def start(self, node: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("LEDGER_CLUSTER_KEY", None)
        args = [sys.executable, "-c", "import sys; from ledger.node import node_main; sys.exit(node_main(sys.argv[1:]))",
                "--id", node, "--ordinal", node[1:], "--nodes", str(NODES), "--host", "127.0.0.1",
                "--base-port", str(self.base), "--store", self.store_url, "--log", self.log_url,
                "--key-file", str(self.key_file)]
        err = open(self.tmp / f"{node}.err", "wb")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, cwd=self.tmp, env=env)
        self.procs[node] = proc
        line = self._ready_line(proc)
        record = json.loads(line)
        assert record == {"ready": True, "node_id": node, "port": self.base + int(node[1:])}

    def _ready_line(self, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                return proc.stdout.readline().decode()
            if proc.poll() is not None:
                break
        raise AssertionError(f"node did not become ready (exit {proc.poll()})")

    def leader(self, among: set[str]) -> str:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            for node in sorted(among):
                try:
                    if httpx.get(f"{self.url(node)}/healthz", timeout=1).json().get("status") == "leader":
                        return node
                except (httpx.HTTPError, ValueError):
                    pass
            time.sleep(0.1)
        raise AssertionError("no leader")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    # Capability check on instances: the contract's methods must all be there.
    probe_store = store_mod.open_store(c.store_url)
    probe_log = log_mod.open_log(c.log_url, log_mod.Config().partitions)
    missing = [f"store.{m}" for m in STORE_METHODS if not callable(getattr(probe_store, m, None))]
    missing += [f"log.{m}" for m in LOG_METHODS if not callable(getattr(probe_log, m, None))]
    if missing:
        pytest.skip(f"the store / log units do not expose {missing}")
    try:
        for i in range(1, NODES + 1):
            c.start(f"n{i}")
        yield c
    finally:
        c.stop_all()


def submit(c: Cluster, node: str, body: dict[str, Any]) -> httpx.Response:
    """POST with the same request id until a definite answer (a 503 means no effect)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            r = httpx.post(f"{c.url(node)}/v1/requests", json=body, timeout=5)
            if r.status_code != 503 or time.monotonic() > deadline:
                return r
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def op(request_id: str, kind: str, account: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"client_id": "e2e", "request_id": request_id, "kind": kind, "account_id": account,
            "counterparty_id": None, "owner": None, "amount_minor": amount, **extra}


@pytest.mark.allium("rule-success.StartNode", "rule-success.ClaimPrimary", "rule-success.ForwardToPrimary",
                    "rule-success.CommitBatch")
def test_three_processes_serve_and_fail_over(cluster: Cluster) -> None:
    first = cluster.leader({"n1", "n2", "n3"})
    backup = next(n for n in ("n1", "n2", "n3") if n != first)
    assert submit(cluster, backup, op("open-1", "open", "e2e-acc", 0)).status_code == 200
    r = submit(cluster, backup, op("dep-1", "deposit", "e2e-acc", 500))
    assert r.status_code == 200 and r.json()["verdict"] == "accepted" and r.json()["replayed"] is False
    replay = submit(cluster, first, op("dep-1", "deposit", "e2e-acc", 500))
    assert replay.status_code == 200 and replay.json()["replayed"] is True
    assert submit(cluster, first, op("dep-1", "deposit", "e2e-acc", 7)).status_code == 409

    # The log path: an appended envelope is decided by the leader's consumer.
    async def append() -> None:
        handle = log_mod.open_log(cluster.log_url, log_mod.Config().partitions)
        await handle.open()
        try:
            await handle.append(handle.partition_of("e2e-acc"), json.dumps(op("log-1", "deposit", "e2e-acc", 25)))
        finally:
            await handle.close()

    asyncio.run(append())
    deadline = time.monotonic() + DEADLINE
    while httpx.get(f"{cluster.url(first)}/v1/requests/e2e/log-1", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the logged request was never decided"
        time.sleep(0.2)

    old_epoch = httpx.get(f"{cluster.url(first)}/healthz", timeout=5).json()["epoch"]
    cluster.procs[first].kill()  # a crash, not a stop
    cluster.procs[first].wait(timeout=10)
    survivors = {"n1", "n2", "n3"} - {first}
    second = cluster.leader(survivors)
    health = httpx.get(f"{cluster.url(second)}/healthz", timeout=5).json()
    assert health["epoch"] > old_epoch
    other = (survivors - {second}).pop()
    r2 = submit(cluster, other, op("dep-2", "deposit", "e2e-acc", 5))
    assert r2.status_code == 200 and r2.json()["epoch"] == health["epoch"]
    account = httpx.get(f"{cluster.url(second)}/v1/accounts/e2e-acc", timeout=5).json()
    assert account["balance_minor"] == 530


def test_sigterm_stops_a_node_gracefully(cluster: Cluster) -> None:
    alive = [n for n, p in cluster.procs.items() if p.poll() is None]
    victim = max(alive)
    cluster.procs[victim].send_signal(signal.SIGTERM)
    assert cluster.procs[victim].wait(timeout=15) == 0


def test_a_taken_port_is_refused_with_exit_2(cluster: Cluster) -> None:
    busy = next(n for n, p in cluster.procs.items() if p.poll() is None)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEDGER_CLUSTER_KEY": "z" * 32}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from ledger.node import node_main; sys.exit(node_main(sys.argv[1:]))",
         "--id", busy, "--ordinal", busy[1:], "--nodes", str(NODES), "--base-port", str(cluster.base),
         "--store", cluster.store_url, "--log", cluster.log_url],
        capture_output=True, env=env, timeout=30)
    assert done.returncode == 2 and len(done.stderr.decode().strip().splitlines()) == 1
