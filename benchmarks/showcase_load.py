"""Open-loop load on the running showcase service, through REST and the log.

    python benchmarks/showcase_load.py [--path rest|log|both] [--rates 1000,2000,5000,10000]
        [--duration 10] [--accounts 1000] [--hot-fraction 0.0] [--store sqlite|postgres]
        [--log embedded|nats] [--json out.json] [--plot out.png] [--client-ceiling]

Starts a deployment with the service's own launcher (`python -m ledger up`),
opens and funds the accounts, then for each rate sends rate x duration
operations on a fixed schedule and prints offered and achieved ops/s,
p50/p99/p99.9/max latency from the scheduled send time, errors (definite
non-200 answers) and dropped (no answer at all). The whole history is then
checked (benchmarks/showcase/history.py): speed never counts if an invariant
broke. --client-ceiling measures the load client alone against a trivial
server instead, so the numbers above can be trusted not to be the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.showcase import cluster, logpath  # noqa: E402
from benchmarks.showcase.history import Op, check  # noqa: E402
from benchmarks.showcase.load import (RestTarget, Workload, encode, monotonic, open_loop,  # noqa: E402
                                      read_final, send_rest, touched_accounts)

HEADER = (f"{'path':<5} {'offered':>8} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
          f"{'max ms':>8} {'errors':>7} {'dropped':>8} {'client us/op':>12}")


def new_histogram():
    from hdrh.histogram import HdrHistogram
    return HdrHistogram(1, 120_000_000, 3)  # microseconds, up to two minutes


def summarize(path: str, rate: float, ops: list[Op], start: float, hist) -> dict:
    answered = [op.attempts[-1] for op in ops if op.answered]
    end = max((a.received or start) for a in answered) if answered else start
    errors = sum(1 for op in ops if op.answered and op.attempts[-1].status not in (200, "appended"))
    return {
        "path": path, "offered": rate, "sent": len(ops),
        "achieved": round(len(answered) / max(end - start, 1e-9), 1),
        "p50_ms": hist.get_value_at_percentile(50) / 1000, "p99_ms": hist.get_value_at_percentile(99) / 1000,
        "p999_ms": hist.get_value_at_percentile(99.9) / 1000, "max_ms": hist.get_max_value() / 1000,
        "errors": errors, "dropped": sum(1 for op in ops if not op.answered),
    }


def row(r: dict) -> str:
    return (f"{r['path']:<5} {r['offered']:>8.0f} {r['achieved']:>9.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['p999_ms']:>9.1f} {r['max_ms']:>8.1f} {r['errors']:>7} {r['dropped']:>8} "
            f"{r.get('client_cpu_us_per_op', 0):>12.0f}")


async def rest_rate(target: RestTarget, work: Workload, rate: float, duration: float) -> tuple[dict, list[Op]]:
    ops = [Op(work.next(), "rest", 0.0) for _ in range(int(rate * duration))]
    bodies = [encode(op) for op in ops]  # prepared ahead, like the schedule itself
    hist = new_histogram()

    async def launch(i: int, due: float) -> None:
        op = ops[i]
        op.invoked = due
        last = await send_rest(target, op, due, None, monotonic, bodies[i])
        if last.received is not None and op.answered:
            hist.record_value(max(1, int((last.received - due) * 1e6)))

    cpu = time.process_time()
    start = await open_loop(rate, len(ops), launch, monotonic)
    summary = summarize("rest", rate, ops, start, hist)
    summary["client_cpu_us_per_op"] = round((time.process_time() - cpu) / max(len(ops), 1) * 1e6, 1)
    return summary, ops


async def setup(target: RestTarget, work: Workload) -> list[Op]:
    """Open and fund the accounts (closed loop, not measured): opens first,
    then deposits, so no deposit races its account's open."""
    envs = work.setup()
    ops = [Op(e, "rest", 0.0) for e in envs]
    half = len(ops) // 2
    sem = asyncio.Semaphore(32)

    async def one(op: Op) -> None:
        async with sem:
            op.invoked = monotonic()
            await send_rest(target, op, op.invoked, monotonic() + 60, monotonic)

    for wave in (ops[:half], ops[half:]):
        await asyncio.gather(*(one(op) for op in wave))
    bad = [op for op in ops if op.attempts[-1].status != 200]
    if bad:
        raise RuntimeError(f"setup failed for {len(bad)} requests, e.g. {bad[0].env.key}: {bad[0].attempts[-1]}")
    return ops


async def run_service(args: argparse.Namespace) -> dict:
    dep = None if args.ports else cluster.up(args.store, args.log, args.nodes)
    results: list[dict] = []
    history: list[Op] = []
    try:
        if dep is None:
            chosen = args.ports
        else:
            ports = dep.node_ports()
            chosen = [ports[dep.leader()]] if args.target == "leader" else list(ports.values())
        target = RestTarget(chosen, conns=args.conns, timeout=args.timeout)
        work = Workload(f"L{int(time.time())}", args.accounts, args.hot_fraction, args.hot_accounts)
        history += await setup(target, work)
        print(HEADER)
        for rate in args.rates:
            for path in (["rest", "log"] if args.path == "both" else [args.path]):
                if path == "rest":
                    summary, ops = await rest_rate(target, work, rate, args.duration)
                else:
                    summary, ops = await logpath.log_rate(dep, target, work, rate, args.duration, new_histogram())
                history += ops
                results.append(summary)
                print(row(summary), flush=True)
                await asyncio.sleep(args.pause)
        if dep is not None:
            await logpath.wait_for_outcomes(dep.state()["store_url"], history, timeout=120)
        store_url = dep.state()["store_url"] if dep is not None else None
        final = await read_final(target, history, touched_accounts(history), store_url, work.run_id)
        report = check(history, final).as_dict()
        target.close()
    finally:
        if dep is not None:
            dep.down()
    print(f"history check: {'ok' if report['ok'] else 'FAILED'}, safety {'ok' if report['safe'] else 'VIOLATED'} "
          f"({report['stats']['requests']} requests, {report['stats']['outcomes']} outcomes, "
          f"{report['violations']['unanswered']} unanswered within the client timeout)")
    for cls, examples in report["examples"].items():
        print(f"  {cls}: {report['violations'][cls]}, e.g. {examples[0]}")
    return {"store": args.store, "log": args.log, "nodes": args.nodes, "duration_s": args.duration,
            "accounts": args.accounts, "hot_fraction": args.hot_fraction, "target": args.target,
            "results": results, "history": report}


async def run_ceiling(args: argparse.Namespace) -> dict:
    """The load client alone, against a server that answers a canned 200."""
    port = 7390
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.showcase.fake_server", "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()
        target = RestTarget([port], conns=args.conns, timeout=args.timeout)
        work = Workload("ceiling", args.accounts)
        results = []
        print(HEADER)
        for rate in args.rates:
            summary, _ = await rest_rate(target, work, rate, args.duration)
            summary["path"] = "fake"
            results.append(summary)
            print(row(summary), flush=True)
        target.close()
    finally:
        server.terminate()
        server.wait()
    return {"client_ceiling": True, "results": results}


def plot(results: list[dict], out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for path in sorted({r["path"] for r in results}):
        rs = [r for r in results if r["path"] == path]
        for key, style in (("p50_ms", "o--"), ("p99_ms", "o-"), ("p999_ms", "x:")):
            ax.plot([r["offered"] for r in rs], [r[key] for r in rs], style, label=f"{path} {key[:-3]}")
    ax.axhline(100, color="grey", lw=0.8)
    ax.set_xlabel("offered load (ops/s)")
    ax.set_ylabel("latency from scheduled send (ms)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", choices=["rest", "log", "both"], default="both")
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[1000, 2000, 5000, 10000])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--hot-fraction", type=float, default=0.0)
    p.add_argument("--hot-accounts", type=int, default=1)
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--log", choices=["embedded", "nats"], default="embedded")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--target", choices=["leader", "any"], default="leader",
                   help="send REST requests to the leader, or round-robin over every node")
    p.add_argument("--conns", type=int, default=256, help="keep-alive connections per node")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--pause", type=float, default=2.0, help="seconds of quiet between rates")
    p.add_argument("--client-ceiling", action="store_true")
    p.add_argument("--ports", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="use the nodes already listening on these loopback ports (REST path only)")
    p.add_argument("--repeat", type=int, default=1, help="sweeps, each on a fresh deployment; medians per rate")
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path)
    args = p.parse_args(argv)
    if args.ports and args.path != "rest":
        p.error("--ports drives an existing deployment over REST only; add --path rest")
    return args


MEDIAN_FIELDS = ("achieved", "p50_ms", "p99_ms", "p999_ms", "max_ms", "errors", "dropped", "client_cpu_us_per_op")


def medians(runs: list[list[dict]]) -> list[dict]:
    """Per (path, offered rate), the median of each figure over the runs: one
    run on two shared cores moves with its neighbours, a median less so."""
    from statistics import median
    rows: dict[tuple[str, float], list[dict]] = {}
    for results in runs:
        for r in results:
            rows.setdefault((r["path"], r["offered"]), []).append(r)
    out = []
    for (path, offered), rs in rows.items():
        row_ = {"path": path, "offered": offered, "runs": len(rs), "sent": rs[0]["sent"]}
        for key in MEDIAN_FIELDS:
            values = [r[key] for r in rs if key in r]
            if values:
                row_[key] = median(values)
        out.append(row_)
    return out


def repeated(args: argparse.Namespace) -> dict:
    """`--repeat N` sweeps, each on a fresh deployment; medians per rate."""
    outs = []
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"-- run {i + 1} of {args.repeat}", flush=True)
        outs.append(asyncio.run(run_service(args)))
    if len(outs) == 1:
        return outs[0]
    out = dict(outs[0], results=medians([o["results"] for o in outs]), runs=[o["results"] for o in outs],
               history={"safe": all(o["history"]["safe"] for o in outs), "ok": all(o["history"]["ok"] for o in outs),
                        "runs": [o["history"] for o in outs]})
    print(f"medians of {len(outs)} runs:\n{HEADER}")
    for r in out["results"]:
        print(row(r))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    out = asyncio.run(run_ceiling(args)) if args.client_ceiling else repeated(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        plot(out["results"], args.plot, "load client ceiling" if args.client_ceiling
             else f"ledger, {args.store} + {args.log}, {args.nodes} nodes, 2 cores")
    # Dropped requests are a measured figure (the table shows them); a broken
    # invariant is a failure whatever the speed.
    return 0 if out.get("history", {"safe": True})["safe"] else 1


if __name__ == "__main__":
    sys.exit(main())
