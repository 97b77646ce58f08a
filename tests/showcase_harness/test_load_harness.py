"""The load harness end to end, against a stand-in server on loopback: a correct
server passes, and one that forgets acknowledged outcomes is caught."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import showcase_load

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fake_server():
    procs = []

    def start(*extra: str) -> int:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.showcase.fake_server", "--port", str(port),
                                 "--mode", "ledger", *extra], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert json.loads(proc.stdout.readline())["ready"]
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def run(port: int, out: Path) -> int:
    return showcase_load.main(["--ports", str(port), "--path", "rest", "--rates", "300", "--duration", "1",
                               "--accounts", "20", "--pause", "0", "--json", str(out)])


def test_a_correct_server_passes_with_every_request_answered(fake_server, tmp_path: Path) -> None:
    assert run(fake_server(), tmp_path / "out.json") == 0
    out = json.loads((tmp_path / "out.json").read_text())
    (result,) = out["results"]
    assert result["sent"] == 300 and result["dropped"] == 0 and result["errors"] == 0
    assert out["history"]["ok"] and out["history"]["stats"]["outcomes"] == 340


def test_a_server_that_forgets_outcomes_fails_the_run(fake_server, tmp_path: Path) -> None:
    assert run(fake_server("--lose-every", "20"), tmp_path / "out.json") == 1
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["history"]["violations"]["lost"] >= 1


def test_the_final_read_is_retried_until_no_commit_lands_during_it(monkeypatch) -> None:
    """A late commit between reading the outcomes and the accounts once paired
    accounts newer than the outcomes, and the checker saw impossible states."""
    import asyncio

    from benchmarks.showcase import load, storeview

    rows = [{"sequence": 1, "client_id": "c"}]
    balance = {"a": 10}

    async def outcomes(url: str, since: int = 0) -> list[dict]:
        return [r for r in rows if r["sequence"] > since]

    class Target:
        reads = 0

        async def get_json(self, path: str, timeout: float):
            self.reads += 1
            if self.reads == 1:  # a request a client gave up on commits right now
                rows.append({"sequence": 2, "client_id": "c"})
                balance["a"] += 5
            return 200, {"account_id": "a", "balance_minor": balance["a"]}

    monkeypatch.setattr(storeview, "outcomes", outcomes)
    target = Target()
    final = asyncio.run(load.read_final(target, [], {"a"}, "sqlite:///unused", "c"))
    assert [r["sequence"] for r in final.outcomes] == [1, 2]
    assert final.accounts["a"]["balance_minor"] == 15 and target.reads == 2


def test_a_202_whose_outcome_never_shows_is_resubmitted_with_the_same_id(monkeypatch) -> None:
    """A primary that steps down drops what it answered 202; the status then
    stays 404 forever. The client must resubmit (safe: exactly-once), not
    stop at the first 404 as it once did, leaving the request unanswered."""
    import asyncio
    import time

    from benchmarks.showcase import load
    from benchmarks.showcase.history import Op
    from benchmarks.showcase.model import Envelope

    monkeypatch.setattr(load, "PENDING_PATIENCE_S", 0.3)
    calls: list[str] = []

    class Pool:
        async def request(self, method: str, path: str, body, timeout: float):
            calls.append(method)
            if method == "GET":
                return 404, b'{"error": "unknown_request"}', {}
            if calls.count("POST") == 1:
                return 202, b'{"status": "pending"}', {}
            return 200, b'{"request_id": "r1", "verdict": "accepted"}', {}

    class Target:
        timeout = 1.0

        def pick(self) -> Pool:
            return Pool()

        def failed(self, pool: Pool) -> None:
            pass

    op = Op(Envelope("c1", "r1", "deposit", "a1", amount_minor=5), "rest", 0.0)
    clock = time.monotonic
    attempt = asyncio.run(load.send_rest(Target(), op, clock(), clock() + 5, clock, b"{}"))
    assert attempt.status == 200 and op.answered
    assert calls.count("POST") == 2 and calls.count("GET") >= 2


def test_repeated_sweeps_report_the_median_of_each_figure_per_rate() -> None:
    runs = [[{"path": "rest", "offered": 1000, "sent": 8000, "achieved": a, "p99_ms": p, "dropped": d}]
            for a, p, d in ((990, 80.0, 0), (700, 900.0, 5), (995, 70.0, 0))]
    (row,) = showcase_load.medians(runs)
    assert row == {"path": "rest", "offered": 1000, "runs": 3, "sent": 8000,
                   "achieved": 990, "p99_ms": 80.0, "dropped": 0}


def test_the_open_loop_scheduler_never_asks_for_sub_tick_sleeps(monkeypatch) -> None:
    """A sleep shorter than a tick spins the event loop (libuv rounds it to zero)
    and cost the client a whole core; every request must still start on time or
    late, never early, and all of them must start."""
    import asyncio

    from benchmarks.showcase import load

    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(load.asyncio, "sleep", recording_sleep)
    started: list[tuple[float, float]] = []

    async def launch(i: int, due: float) -> None:
        started.append((due, load.monotonic()))

    count = 500
    asyncio.run(load.open_loop(10_000, count, launch, load.monotonic))
    assert len(started) == count
    assert min(sleeps) >= load.TICK_S
    assert all(at >= due for due, at in started)
    # 500 requests at 10,000/s span 50 ms: about 50 ticks, not one wake per request.
    assert len(sleeps) <= 100


def test_the_open_loop_freezes_what_the_run_prepared_out_of_collections(monkeypatch) -> None:
    """Ops built before the load starts must never be walked by a collection
    during it: a full collection over a run's history paused the client."""
    import asyncio
    import gc

    from benchmarks.showcase import load

    threshold = gc.get_threshold()
    prepared = [{"op": i} for i in range(20_000)]

    async def launch(i: int, due: float) -> None:
        return None

    try:
        gc.unfreeze()
        asyncio.run(load.open_loop(1000, 3, launch, load.monotonic))
        assert gc.get_freeze_count() >= len(prepared)
        assert gc.get_threshold()[0] >= 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_down_removes_the_files_of_a_deployment_the_harness_created(tmp_path: Path, monkeypatch) -> None:
    """Every benchmark run used to leave its run directory and PostgreSQL data
    behind in /tmp; one the caller named, or one whose down failed, is kept."""
    from benchmarks.showcase import cluster

    def make(name: str, owned: bool) -> tuple[cluster.Deployment, Path]:
        work = tmp_path / name
        pgdata = tmp_path / f"{name}-pgdata"
        (work / ".ledger-run").mkdir(parents=True)
        pgdata.mkdir()
        (work / ".ledger-run" / "pgdata.path").write_text(str(pgdata))
        return cluster.Deployment(work, "postgres", "nats", 3, owned=owned), pgdata

    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(cluster.Deployment, "ledger", lambda self, *args, **kw: calls.append(args) or "")
    owned, owned_pg = make("owned", True)
    owned.down()
    assert not owned.workdir.exists() and not owned_pg.exists()
    named, named_pg = make("named", False)
    named.down()
    assert named.workdir.exists() and named_pg.exists()
    assert calls == [("down",), ("down",)]

    def failing(self, *args, **kw):
        raise RuntimeError("down failed")

    monkeypatch.setattr(cluster.Deployment, "ledger", failing)
    kept, kept_pg = make("kept", True)
    kept.down()
    assert kept.workdir.exists() and kept_pg.exists()
