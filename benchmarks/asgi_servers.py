"""Which ASGI server (and event loop) should serve a node: uvicorn or granian.

    python benchmarks/asgi_servers.py [--candidates uvicorn-asyncio,uvicorn-uvloop,granian-asyncio,granian-uvloop]
        [--rates 1000,2000,4000,6000] [--duration 2] [--repeats 5] [--json benchmarks/results/asgi-servers.json]

Serves one small app (benchmarks/showcase/asgi_app.py: the per-request work of
a node's REST hot path) under each candidate, each in its own child process on
a free loopback port, all started up front so measurements can alternate. For
each rate and repeat it drives every candidate in turn (the order rotating per
repeat) with the harness's open-loop keep-alive client, and records achieved
req/s, p50/p99 from the scheduled send time, and the server's CPU seconds per
1,000 requests (CPU time of its whole process tree, from /proc; and of its
busiest thread, since the thread running Python caps throughput first). The
machine is noisy (2 shared cores), so it prints medians over the repeats and
ratios against uvicorn + asyncio, the node's configuration at the time.

CPU per request is the figure that decides: the client shares the two cores,
so above ~4-5k req/s the client, not the server, may set the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.showcase.asgi_app import sample_body  # noqa: E402
from benchmarks.showcase.http import Pool  # noqa: E402
from benchmarks.showcase.load import monotonic, open_loop  # noqa: E402
from benchmarks.showcase_load import new_histogram  # noqa: E402

BASELINE = "uvicorn-asyncio"
APP = "benchmarks.showcase.asgi_app"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _uvicorn(loop: str) -> list[str]:
    return ["-m", APP, "--loop", loop, "--port"]


def _granian(loop: str) -> list[str]:
    # One worker process with one runtime thread (granian's defaults, spelled
    # out): a node is one process, and the machine has two cores for everything.
    return ["-m", "granian", "--interface", "asgi", "--workers", "1", "--runtime-threads", "1", "--loop", loop,
            "--no-access-log", "--log-level", "warning", "--host", "127.0.0.1", f"{APP}:app", "--port"]


# name -> (argv before the port, modules it needs)
CANDIDATES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "uvicorn-asyncio": (_uvicorn("asyncio"), ("uvicorn", "httptools")),
    "uvicorn-uvloop": (_uvicorn("uvloop"), ("uvicorn", "httptools", "uvloop")),
    "granian-asyncio": (_granian("asyncio"), ("granian",)),
    "granian-uvloop": (_granian("uvloop"), ("granian", "uvloop")),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """root and its live descendants (granian runs its worker as a child process)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += parents.get(pid, [])
    return tree


def thread_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds of every thread of these processes: nanoseconds on the CPU from
    schedstat, or a process's user + system clock ticks (10 ms grain) where that is missing."""
    out: dict[str, float] = {}
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                out[f"{pid}/{tid}"] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            if (fields := _stat(pid)) is not None:
                out[str(pid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return out


def cpu_seconds(pids: list[int]) -> float:
    return sum(thread_cpu(pids).values())


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path
    pids: list[int] = field(default_factory=list)

    def stop(self) -> dict:
        """SIGTERM, as a supervisor would; how long it took and how it ended."""
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return {"stop_s": round(time.monotonic() - t0, 3), "exit_code": code}


def missing(name: str) -> list[str]:
    return [m for m in CANDIDATES[name][1] if importlib.util.find_spec(m) is None]


async def start(name: str, workdir: Path) -> Server:
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *CANDIDATES[name][0], str(port)], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, proc, port, log)
    pool = Pool("127.0.0.1", port, 1)
    deadline = time.monotonic() + 30
    while (await pool.request("GET", "/", None, 1.0))[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not come up on port {port}: {log.read_text()[-2000:]}")
        await asyncio.sleep(0.1)
    pool.close()
    server.pids = process_tree(proc.pid)
    return server


async def measure(server: Server, rate: float, duration: float, conns: int, timeout: float) -> dict:
    """One open-loop run at `rate` for `duration` seconds against one server."""
    count = max(1, int(rate * duration))
    bodies = [sample_body(i) for i in range(count)]
    pool = Pool("127.0.0.1", server.port, conns)
    hist = new_histogram()
    received: list[float] = []
    errors = dropped = 0

    async def launch(i: int, due: float) -> None:
        nonlocal errors, dropped
        status, data, _ = await pool.request("POST", "/v1/requests", bodies[i], timeout)
        if isinstance(status, str):
            dropped += 1
            return
        now = monotonic()
        received.append(now)
        hist.record_value(max(1, int((now - due) * 1e6)))
        if status != 200 or not data.startswith(b'{"request_id"'):
            errors += 1

    # Warm the connections first, so no run pays for its connects.
    await asyncio.gather(*(pool.request("GET", "/", None, timeout) for _ in range(min(conns, 32))))
    threads, client_cpu = thread_cpu(server.pids), time.process_time()
    start = await open_loop(rate, count, launch, monotonic)
    client_cpu = time.process_time() - client_cpu
    spent = [v - threads.get(k, 0.0) for k, v in thread_cpu(server.pids).items()]
    pool.close()
    answered = len(received)
    per_1k = 1e6 / max(answered, 1)
    return {
        "candidate": server.name, "offered": rate, "sent": count,
        "achieved": round(answered / max(max(received, default=start) - start, 1e-9), 1),
        "p50_ms": hist.get_value_at_percentile(50) / 1000, "p99_ms": hist.get_value_at_percentile(99) / 1000,
        "max_ms": hist.get_max_value() / 1000, "errors": errors, "dropped": dropped,
        "server_cpu_ms_per_1k": round(sum(spent) * per_1k, 1),
        # A thread holding the GIL caps throughput before the process's total does.
        "busiest_thread_ms_per_1k": round(max(spent, default=0.0) * per_1k, 1),
        "client_cpu_us_per_req": round(client_cpu / count * 1e6, 1),
    }


def summarize(runs: list[dict], names: list[str], rates: list[float]) -> list[dict]:
    """Medians over repeats per (rate, candidate), with ratios against the baseline."""
    keys = ("achieved", "p50_ms", "p99_ms", "server_cpu_ms_per_1k", "busiest_thread_ms_per_1k",
            "client_cpu_us_per_req")
    rows = []
    for rate in rates:
        medians = {}
        for name in names:
            mine = [r for r in runs if r["candidate"] == name and r["offered"] == rate]
            medians[name] = {k: round(statistics.median(r[k] for r in mine), 3) for k in keys}
            medians[name].update(errors=sum(r["errors"] for r in mine), dropped=sum(r["dropped"] for r in mine),
                                 repeats=len(mine))
        base = medians.get(BASELINE)
        for name in names:
            row = {"offered": rate, "candidate": name, **medians[name]}
            if base is not None:
                for k in ("achieved", "p99_ms", "server_cpu_ms_per_1k", "busiest_thread_ms_per_1k"):
                    row[f"{k}_vs_baseline"] = round(medians[name][k] / base[k], 3) if base[k] else None
            rows.append(row)
    return rows


HEADER = (f"{'offered':>8} {'candidate':<16} {'achieved':>9} {'p50 ms':>7} {'p99 ms':>8} {'cpu ms/1k':>9} "
          f"{'x cpu':>6} {'busiest':>7} {'x bus':>6} {'x p99':>6} {'err':>4} {'drop':>5}")


def line(r: dict) -> str:
    def ratio(key: str) -> float:
        return r.get(f"{key}_vs_baseline") or 0.0
    return (f"{r['offered']:>8.0f} {r['candidate']:<16} {r['achieved']:>9.0f} {r['p50_ms']:>7.2f} "
            f"{r['p99_ms']:>8.2f} {r['server_cpu_ms_per_1k']:>9.1f} {ratio('server_cpu_ms_per_1k'):>6.2f} "
            f"{r['busiest_thread_ms_per_1k']:>7.1f} {ratio('busiest_thread_ms_per_1k'):>6.2f} "
            f"{ratio('p99_ms'):>6.2f} {r['errors']:>4} {r['dropped']:>5}")


async def run(args: argparse.Namespace) -> dict:
    servers: list[Server] = []
    runs: list[dict] = []
    stops: dict[str, dict] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name in args.candidates:
                servers.append(await start(name, Path(tmp)))
            for rate in args.rates:
                for rep in range(args.repeats):
                    k = rep % len(servers)  # rotate the order, so no candidate always runs first
                    for server in servers[k:] + servers[:k]:
                        result = await measure(server, rate, args.duration, args.conns, args.timeout)
                        runs.append({**result, "repeat": rep})
                        if args.verbose:
                            print(f"  {rate:>6.0f} #{rep} {server.name:<16} {result['achieved']:>7.0f}/s "
                                  f"p99 {result['p99_ms']:.2f} ms, cpu {result['server_cpu_ms_per_1k']} ms/1k",
                                  flush=True)
                        await asyncio.sleep(args.pause)
        finally:
            for server in servers:
                stops[server.name] = server.stop()
    rows = summarize(runs, args.candidates, args.rates)
    print(HEADER)
    for r in rows:
        print(line(r))
    versions = {}
    for dist in ("uvicorn", "uvloop", "granian", "httptools", "msgspec"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
            "versions": versions, "duration_s": args.duration, "repeats": args.repeats, "baseline": BASELINE,
            "summary": rows, "stops": stops, "runs": runs}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=lambda s: s.split(","), default=list(CANDIDATES))
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[1000, 2000, 4000, 6000])
    p.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--conns", type=int, default=128, help="keep-alive connections per server")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--pause", type=float, default=0.3, help="seconds of quiet between runs")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "asgi-servers.json")
    p.add_argument("--verbose", action="store_true", help="print every run as it ends")
    args = p.parse_args(argv)
    for name in args.candidates:
        if name not in CANDIDATES:
            p.error(f"unknown candidate {name!r}; choose from {', '.join(CANDIDATES)}")
        if missing(name):
            p.error(f"{name} needs {', '.join(missing(name))}: pip install -e '.[bench]'")
    if not Path("/proc/self/stat").exists():
        p.error("server CPU is read from /proc: run this on Linux")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loop_factory = None
    try:  # the client's own loop: the faster it is, the less it caps the servers
        import uvloop
        loop_factory = uvloop.new_event_loop  # for this run only, not as the process-wide policy
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        out = runner.run(run(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
