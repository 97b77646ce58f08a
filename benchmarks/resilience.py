"""Fault scenarios under steady load, each judged by the history checker.

    python benchmarks/resilience.py [--quick] [--rate 1000] [--duration 40]
        [--only NAME,...] [--json out.json]

For each scenario: a fresh set of accounts is opened and funded, steady
open-loop load runs through REST (round-robin over every node, retrying 503s
and lost connections with the same request id) and through the log, the fault
is injected at a quarter of the run and healed 35% of the run (at most
--fault-s seconds) later, then every outcome and
account is read back and the scenario's history is checked; at the end the
whole history of each deployment is checked once more. Prints: scenario,
events, throughput during the fault, longest window without a commit, lost,
duplicated, mismatches. Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.showcase import cluster, faults  # noqa: E402
from benchmarks.showcase.history import Final, Op, check  # noqa: E402
from benchmarks.showcase.load import (RestTarget, Workload, monotonic, open_loop,  # noqa: E402
                                      read_final, send_rest, touched_accounts)
from benchmarks.showcase.logpath import Producer, append_with_retry, log_url, wait_for_outcomes  # noqa: E402

Action = Callable[["Run"], Awaitable[None]]


@dataclass
class Scenario:
    name: str
    store: str
    log: str
    inject: Action
    heal: Action
    describe: str
    faults: tuple[tuple[str, str], ...] = ()  # the launcher's --fault NODE=FAULT
    proxied: bool = False  # node-to-node traffic through cuttable proxies

    @property
    def deployment(self) -> tuple:
        return (self.store, self.log, self.faults, self.proxied)


@dataclass
class Run:
    dep: cluster.Deployment
    notes: list[str]
    victims: list[str]
    extra: dict

    def note(self, text: str) -> None:
        self.notes.append(f"{monotonic():.2f} {text}")


SCENARIOS = [
    Scenario("kill-primary", "sqlite", "embedded", faults.kill_primary, faults.restart_victims,
             "kill -9 the lease holder"),
    Scenario("kill-backup", "sqlite", "embedded", faults.kill_backup, faults.restart_victims,
             "kill -9 one backup"),
    Scenario("kill-two", "sqlite", "embedded", faults.kill_two, faults.restart_victims,
             "kill -9 the primary and a backup at once (stall expected until one returns)"),
    Scenario("kill-in-recovery", "sqlite", "embedded", faults.kill_during_recovery, faults.restart_victims,
             "kill -9 the primary, then its successor as soon as it claims"),
    Scenario("corrupt-replica", "sqlite", "embedded", faults.nothing, faults.nothing,
             "n3 flips accepted verdicts before hashing, all run long", (("n3", "corrupt_outcomes"),)),
    Scenario("lying-replica", "sqlite", "embedded", faults.nothing, faults.nothing,
             "n3 votes random digests, all run long", (("n3", "lie_about_digests"),)),
    Scenario("slow-replica", "sqlite", "embedded", faults.nothing, faults.nothing,
             "n3 sleeps 2 s before every vote, all run long", (("n3", "slow_votes"),)),
    Scenario("partition", "sqlite", "embedded", faults.partition, faults.heal_partition,
             "the primary cut off from both peers by a dropping proxy", proxied=True),
    Scenario("restart-nats", "postgres", "nats", faults.kill_named("nats"), faults.restart_victims,
             "kill -9 the NATS server, restart it"),
    Scenario("kill-postgres", "postgres", "nats", faults.kill_named("postgres"), faults.restart_victims,
             "kill -9 PostgreSQL, restart it"),
]


async def run_scenario(sc: Scenario, dep: cluster.Deployment, args: argparse.Namespace,
                       producer: Producer | None, extra: dict) -> tuple[dict, list[Op], Final]:
    nodes = dep.node_ports()
    leader = dep.leader() if args.target == "leader" else None
    target = RestTarget(list(nodes.values()), conns=args.conns, timeout=args.timeout,
                        sticky=args.target == "leader", first=list(nodes).index(leader) if leader else 0)
    work = Workload(f"{sc.name}-{int(time.time())}", args.accounts, seed=hash(sc.name) & 0xFFFF)
    rng = random.Random(7)
    setup_ops = [Op(e, "rest", 0.0) for e in work.setup()]
    for wave in (setup_ops[: len(setup_ops) // 2], setup_ops[len(setup_ops) // 2:]):
        await asyncio.gather(*(_rest(target, op, monotonic(), args) for op in wave))
    count = int(args.rate * args.duration)
    ops = [Op(work.next(), "log" if producer and rng.random() < args.log_share else "rest", 0.0)
           for _ in range(count)]
    run = Run(dep, [], [], extra)

    async def launch(i: int, due: float) -> None:
        op = ops[i]
        op.invoked = due
        if op.channel == "log":
            await append_with_retry(producer, op, due + args.retry_s)
        else:
            await send_rest(target, op, due, due + args.retry_s, monotonic)

    async def timeline() -> tuple[float, float]:
        await asyncio.sleep(args.duration * 0.25)
        t0 = monotonic()
        run.note(f"inject: {sc.describe}")
        await sc.inject(run)
        await asyncio.sleep(max(0.0, t0 + min(args.duration * 0.35, args.fault_s) - monotonic()))
        t1 = monotonic()
        run.note("heal")
        await sc.heal(run)
        return t0, t1

    load_start = monotonic()
    (_, (t0, t1)) = await asyncio.gather(open_loop(args.rate, count, launch, monotonic), timeline())
    await faults.wait_all_serving(dep, timeout=60)
    history = setup_ops + ops
    never = await wait_for_outcomes(dep.state()["store_url"], history, timeout=120)
    final = await read_final(target, history, touched_accounts(history), dep.state()["store_url"], work.run_id)
    target.close()
    report = check(history, final).as_dict()
    v = report["violations"]
    acks = sorted(a.received for op in ops for a in op.attempts if a.status == 200 and a.received)
    gaps = [b - a for a, b in zip(([load_start] + acks)[:-1], acks, strict=True)]
    result = {
        "scenario": sc.name, "store": sc.store, "log": sc.log, "events": len(history),
        "throughput_during_fault": round(sum(1 for t in acks if t0 <= t <= t1) / max(t1 - t0, 1e-9), 1),
        "max_unavailable_s": round(max(gaps, default=0.0), 2),
        "lost": v["lost"], "duplicated": v["duplicated"],
        "mismatches": v["model_mismatch"] + v["changed"] + v["realtime"] + v["log_order"],
        "other_violations": {k: n for k, n in v.items() if n and k not in
                             ("lost", "duplicated", "model_mismatch", "changed", "realtime", "log_order")},
        "log_never_committed": never, "ok": report["ok"], "check": report,
        "timeline": [f"{float(note.split()[0]) - load_start:+.2f}s {note.split(' ', 1)[1]}" for note in run.notes],
        # Answers per second since the load started: where the outage and the recovery show.
        "ok_per_s": _per_second([t - load_start for t in acks]),
        "failed_tries_per_s": _per_second([a.received - load_start for op in ops for a in op.attempts
                                           if a.received and a.status in ("timeout", "conn_error", 503)]),
    }
    return result, history, final


def _per_second(times: list[float]) -> list[int]:
    counts = [0] * (int(max(times, default=0)) + 1)
    for t in times:
        if t >= 0:
            counts[int(t)] += 1
    return counts


async def _rest(target: RestTarget, op: Op, now: float, args: argparse.Namespace) -> None:
    op.invoked = now
    await send_rest(target, op, now, now + args.retry_s, monotonic)


async def run_all(args: argparse.Namespace) -> dict:
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    results, overall = [], []
    groups: dict[tuple, list[Scenario]] = {}
    for sc in chosen:
        groups.setdefault(sc.deployment, []).append(sc)
    for (store, log, fault_list, proxied), group in groups.items():
        dep = cluster.up(store, log, nodes=3, faults=dict(fault_list))
        extra: dict = {}
        producer = Producer(log_url(dep))
        histories: list[Op] = []
        try:
            await producer.open()
            if proxied:
                extra["proxied"] = faults.ProxiedCluster(dep)
                await extra["proxied"].start()
            for sc in group:
                print(f"-- {sc.name}: {sc.describe}", flush=True)
                result, history, _ = await run_scenario(sc, dep, args, producer, extra)
                results.append(result)
                histories += history
                print(row(result), flush=True)
                for cls, examples in result["check"]["examples"].items():
                    print(f"   {cls} ({result['check']['violations'][cls]}): {examples[:2]}", flush=True)
            target = RestTarget(list(dep.node_ports().values()), conns=args.conns, timeout=args.timeout)
            final = await read_final(target, histories, touched_accounts(histories), dep.state()["store_url"])
            target.close()
            overall.append({"store": store, "log": log, "scenarios": [s.name for s in group],
                            **check(histories, final).as_dict()})
        finally:
            if "proxied" in extra:
                await extra["proxied"].stop()
            await producer.close()
            dep.down()
    ok = all(r["ok"] for r in results) and all(o["ok"] for o in overall)
    return {"rate": args.rate, "duration_s": args.duration, "accounts": args.accounts, "target": args.target,
            "events": sum(r["events"] for r in results), "ok": ok, "scenarios": results, "overall": overall}


HEADER = (f"{'scenario':<18} {'events':>7} {'tput in fault':>13} {'max unavail s':>13} "
          f"{'lost':>5} {'dup':>4} {'mismatch':>8} {'other':>6} {'ok':>3}")


def row(r: dict) -> str:
    return (f"{r['scenario']:<18} {r['events']:>7} {r['throughput_during_fault']:>13.0f} "
            f"{r['max_unavailable_s']:>13.2f} {r['lost']:>5} {r['duplicated']:>4} {r['mismatches']:>8} "
            f"{sum(r['other_violations'].values()):>6} {'yes' if r['ok'] else 'NO':>3}")


def plot(out: dict, path: Path) -> None:
    """Answers per second through each scenario, fault window shaded: the outage
    and the recovery at a glance."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    scenarios = out["scenarios"]
    fig, axes = plt.subplots((len(scenarios) + 1) // 2, 2, figsize=(10, 1.6 * ((len(scenarios) + 1) // 2)),
                             sharex=True, squeeze=False)
    for ax, sc in zip(axes.flat, scenarios, strict=False):  # an odd count leaves one panel empty
        ax.plot(sc["ok_per_s"], lw=0.8)
        marks = [float(n.split("s ", 1)[0]) for n in sc["timeline"] if " inject" in n or n.endswith(" heal")]
        if len(marks) == 2:
            ax.axvspan(*marks, color="red", alpha=0.15)
        ax.set_title(f"{sc['scenario']}  ({'ok' if sc['ok'] else 'FAILED'})", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.supylabel("answered (200) per second", fontsize=8)
    fig.supxlabel("seconds since the load started; red: fault injected to healed", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small counts, every scenario (CI)")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=40.0)
    p.add_argument("--accounts", type=int, default=200)
    p.add_argument("--log-share", type=float, default=0.25)
    p.add_argument("--retry-s", type=float, default=30.0, help="how long a client retries one request")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--target", choices=["any", "leader"], default="any",
                   help="any: round-robin over every node (backups forward to the primary); "
                        "leader: stay on the primary, move to the next node when it fails to answer")
    p.add_argument("--fault-s", type=float, default=10.0, help="longest a fault lasts before it is healed")
    p.add_argument("--only", type=lambda s: set(s.split(",")), default=None)
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path, help="answers per second per scenario, as a PNG")
    args = p.parse_args(argv)
    if args.quick:
        args.rate, args.duration, args.accounts = 100.0, 5.0, 20
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = asyncio.run(run_all(args))
    print(HEADER)
    for r in out["scenarios"]:
        print(row(r))
    for o in out["overall"]:
        print(f"whole history of {', '.join(o['scenarios'])}: {'ok' if o['ok'] else 'FAILED'} "
              f"({o['stats']['requests']} requests)")
    print(f"events: {out['events']}; all checks {'passed' if out['ok'] else 'FAILED'}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        plot(out, args.plot)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
