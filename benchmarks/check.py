"""Time `allium check` as a whole process, cold, on the largest spec sets.

    python benchmarks/check.py [--repeats N]

Each run is a fresh interpreter (`python -m allium check ...`), so imports,
grammar loading (from lark's on-disk cache) and all passes are included; the
allium package is byte-compiled first, as `pip install` leaves it.
Prints the median and spread per target, and lines per second.
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"


def first_lines(files: list[Path], lines: int) -> list[Path]:
    """The first files (in order) that together reach `lines` lines."""
    chosen, total = [], 0
    for path in files:
        if total >= lines:
            break
        chosen.append(path)
        total += len(path.read_text(encoding="utf-8").splitlines())
    return chosen


def known_invalid() -> set[str]:
    listing = ROOT / "tests" / "syntax" / "known_invalid.tsv"
    rows = listing.read_text().splitlines() if listing.exists() else []
    return {r.split("\t")[0] for r in rows if r and not r.startswith("#")}


def targets() -> list[tuple[str, list[Path]]]:
    showcase = sorted((ROOT / "specs").glob("*.allium"))
    out = [("specs/ (showcase set)", showcase),
           ("specs/ files up to 3,000 lines (the issue's target size)", first_lines(showcase, 3000))]
    manifest = CORPUS / "MANIFEST.tsv"
    if manifest.exists():
        rows = [line.split("\t") for line in manifest.read_text().splitlines()[1:]]
        skip = known_invalid()
        files = [(int(r[6]), CORPUS / r[0]) for r in rows
                 if r[4] == "3" and r[5] == "file" and r[0] not in skip]
        largest = [p for _, p in sorted(files, reverse=True)[:3]]
        for path in largest:
            out.append((path.relative_to(CORPUS).as_posix(), [path]))
    return out


def time_once(files: list[Path]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "allium", "check", "--specs-only", *map(str, files)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    # Time allium as installed: pip byte-compiles a package when it installs
    # it, so a user's first run does not compile our source; a checkout run
    # with PYTHONDONTWRITEBYTECODE set would recompile it on every run.
    compileall.compile_dir(ROOT / "allium", quiet=1)
    time_once(targets()[0][1])  # warm lark's grammar cache and the OS file cache
    print(f"{'target':62} {'lines':>6} {'median':>8} {'min':>7} {'max':>7} {'lines/s':>9}")
    medians = {}
    for name, files in targets():
        lines = sum(len(p.read_text(encoding='utf-8').splitlines()) for p in files)
        runs = [time_once(files) for _ in range(args.repeats)]
        median = medians[name] = statistics.median(runs)
        print(f"{name[:62]:62} {lines:6d} {median*1000:7.0f}ms {min(runs)*1000:6.0f}ms "
              f"{max(runs)*1000:6.0f}ms {lines/median:9.0f}")
    size_target = targets()[1][0]
    verdict = "met" if medians[size_target] < 0.5 else "NOT met"
    print(f"target: a 3,000-line spec set checked in under 500 ms (whole process): {verdict} "
          f"({medians[size_target] * 1000:.0f} ms median)")


if __name__ == "__main__":
    main()
