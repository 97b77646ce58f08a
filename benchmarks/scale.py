"""How `allium plan` and `allium check` grow with spec size: 1, 2, 4 and 10 MB.

    python benchmarks/scale.py [--sizes 1,2,4,10] [--repeats N]

Each size is one generated spec file: a block of an entity with a transition
graph, four rules and a surface, repeated under fresh names until the file
reaches the size. Each run is a fresh interpreter (`python -m allium plan|check
FILE`); the figures are the median wall time, CPU time (user + system) and
peak resident memory of that process, and each size's CPU time as a multiple
of the smallest size's, then scaled to its bytes (1.0 = linear; the target is
10 MB within 10x of 1 MB). CPU time is the ratio's basis because wall time
on a shared machine swings with the load of others.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK = """
entity Order{i} {{
    customer: String
    total: Integer
    status: pending | paid | shipped | cancelled
    transitions status {{
        pending -> paid
        paid -> shipped
        pending -> cancelled
        terminal: shipped, cancelled
    }}
    is_large: total > 100
}}

rule Pay{i} {{
    when: Pay{i}(order)
    requires: order.status = pending
    requires: order.total > 0
    ensures: order.status = paid
}}

rule Ship{i} {{
    when: Ship{i}(order)
    requires: order.status = paid
    ensures:
        order.status = shipped
        Shipped{i}(order: order)
}}

rule Cancel{i} {{
    when: Cancel{i}(order)
    requires: order.status = pending
    ensures: order.status = cancelled
}}

rule Open{i} {{
    when: Open{i}(customer, total)
    ensures: Order{i}.created(customer: customer, total: total, status: pending)
}}

surface Shop{i} {{
    facing shopper: String
    provides:
        Open{i}(customer, total)
        Pay{i}(order)
        Ship{i}(order)
        Cancel{i}(order)
}}
"""


def write_spec(path: Path, megabytes: float) -> int:
    """A spec of at least ``megabytes`` MB; returns its size in bytes."""
    parts, size, i = ["-- allium: 3\n"], 0, 0
    while size < megabytes * 1_000_000:
        block = BLOCK.format(i=i)
        parts.append(block)
        size += len(block)
        i += 1
    text = "".join(parts)
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def run_once(command: str, spec: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one `python -m allium COMMAND SPEC`."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "allium", command, str(spec)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # 1: the spec has warnings, which is expected
        raise SystemExit(f"allium {command} {spec} exited with {proc.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,10", help="spec sizes in MB, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="allium-scale-") as tmp:
        specs = {}
        for mb in sizes:
            path = Path(tmp) / f"spec_{mb:g}mb.allium"
            specs[mb] = (path, write_spec(path, mb))
        for command in ("plan", "check"):
            print(f"allium {command}")
            print(f"  {'size':>8} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'x cpu':>7} {'per byte':>9}")
            base: tuple[float, int] | None = None
            for mb in sizes:
                path, size = specs[mb]
                runs = [run_once(command, path) for _ in range(args.repeats)]
                wall, cpu, peak = (statistics.median(r[i] for r in runs) for i in range(3))
                base = base or (cpu, size)
                ratio = cpu / base[0]
                per_byte = ratio / (size / base[1])
                print(f"  {size / 1e6:6.2f}MB {wall:8.2f} {cpu:8.2f} {peak:8.0f} {ratio:6.1f}x {per_byte:8.2f}")


if __name__ == "__main__":
    main()
