"""benchmarks/asgi_servers.py in a tiny mode, so its machinery cannot rot
unnoticed: the server comes up, the app answers what the node's hot path
answers, and server CPU is counted across the whole process tree (granian's
worker is a child process; missing it would make granian look free)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import asgi_servers

SPIN = ("import os, sys, time\n"
        "if sys.argv[1] == 'parent': os.spawnl(os.P_NOWAIT, sys.executable, sys.executable, '-c', sys.argv[2], 'child')\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('spun', flush=True)\n"
        "time.sleep(30)\n")


def test_cpu_is_counted_over_the_process_tree() -> None:
    parent = subprocess.Popen([sys.executable, "-c", SPIN, "parent", SPIN], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == "spun\n" and parent.stdout.readline() == "spun\n"
        pids = asgi_servers.process_tree(parent.pid)
        assert len(pids) == 2 and pids[0] == parent.pid
        # Two processes each spun 0.3 s of CPU, plus their interpreters' start-up.
        assert 0.6 <= asgi_servers.cpu_seconds(pids) < 3.0
        assert asgi_servers.cpu_seconds(pids[:1]) < asgi_servers.cpu_seconds(pids)
    finally:
        for pid in asgi_servers.process_tree(parent.pid)[1:]:
            subprocess.run(["kill", str(pid)], check=False)
        parent.kill()
        parent.wait()


def test_tiny_run_against_uvicorn_asyncio(tmp_path: Path) -> None:
    out = tmp_path / "asgi.json"
    t0 = time.monotonic()
    assert asgi_servers.main(["--candidates", "uvicorn-asyncio", "--rates", "300", "--duration", "0.5",
                              "--repeats", "2", "--pause", "0", "--json", str(out)]) == 0
    assert time.monotonic() - t0 < 20
    doc = json.loads(out.read_text())
    [row] = doc["summary"]
    assert row["candidate"] == "uvicorn-asyncio" and row["repeats"] == 2
    assert row["errors"] == 0 and row["dropped"] == 0  # every answer was the app's 200 outcome
    assert row["achieved"] > 200 and 0 < row["p50_ms"] <= row["p99_ms"]
    assert row["server_cpu_ms_per_1k"] > 0 and row["server_cpu_ms_per_1k_vs_baseline"] == 1.0
    assert 0 < row["busiest_thread_ms_per_1k"] <= row["server_cpu_ms_per_1k"]
    assert doc["stops"]["uvicorn-asyncio"]["stop_s"] < 10
    assert len(doc["runs"]) == 2


def test_await_timeout_variants_time_out_and_run(capsys) -> None:
    """benchmarks/await_timeout.py: every variant it times must really enforce its
    deadline (checked before timing), else its figure would flatter it."""
    from benchmarks import await_timeout
    assert await_timeout.main(["--requests", "8", "--rounds", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for name in await_timeout.VARIANTS:
        assert f" {name} " in out


def test_await_timeout_rejects_a_variant_without_a_deadline(monkeypatch) -> None:
    from benchmarks import await_timeout
    monkeypatch.setitem(await_timeout.VARIANTS, "call_later", await_timeout.bare)
    with pytest.raises(SystemExit, match="call_later does not enforce its deadline"):
        await_timeout.main(["--requests", "4", "--rounds", "1", "--repeats", "1"])
