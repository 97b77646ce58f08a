"""Time the mutation gate on the showcase: `allium check specs/ --mutate` as a whole process.

    python benchmarks/mutate.py [--repeats N] [--jobs J] [--units core,ledger,clerk,arbiter]

Each repeat runs once with an empty result cache (every unit mutated) and
once more with the cache that run left (nothing changed, so nothing is
mutated again). Prints the medians, the mutants and the score per component
from the last cold run, and mutants per second.

Target: the whole gate on core, ledger, clerk and arbiter within 15 minutes
on the 2-core build machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_gate(units: list[str], jobs: int, cache: Path) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "allium", "check", "specs/", "--mutate", "--mutate-jobs", str(jobs),
           "--mutate-cache", str(cache), "--format", "json"]
    for unit in units:
        cmd += ["--mutate-only", unit]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    try:
        document = json.loads(done.stdout)
    except ValueError:
        document = {}
    if "mutation" not in document:
        sys.exit(f"the gate did not run (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, document["mutation"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--units", default="core,ledger,clerk,arbiter")
    args = parser.parse_args()
    units = args.units.split(",")
    cold, warm = [], []
    mutation: dict = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="allium-mutate-bench-") as tmp:
            seconds, mutation = run_gate(units, args.jobs, Path(tmp))
            cold.append(seconds)
            seconds, cached = run_gate(units, args.jobs, Path(tmp))
            assert sorted(cached["cached_units"]) == sorted(units), cached["cached_units"]
            warm.append(seconds)
    total = len(mutation["mutants"])
    print(f"{'component':10} {'mutants':>7} {'killed':>6} {'survived':>8} {'score':>6}")
    for name, score in mutation["components"].items():
        count = score["killed"] + score["survived"] + score["not_scored"]
        print(f"{name:10} {count:7d} {score['killed']:6d} {score['survived']:8d} {score['score']:5.1f}%")
    median = statistics.median(cold)
    print(f"cold (no cache): median {median:.1f}s, min {min(cold):.1f}s, max {max(cold):.1f}s over {args.repeats}; "
          f"{total} mutants, {total / median:.1f} mutants/s whole process, {args.jobs} workers")
    print(f"warm (unchanged units cached): median {statistics.median(warm):.1f}s")
    verdict = "met" if median < 15 * 60 else "NOT met"
    print(f"target: the gate on {', '.join(units)} within 15 minutes: {verdict}")


if __name__ == "__main__":
    main()
