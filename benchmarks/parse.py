"""Front-end throughput: parse the whole corpus, report MB/s and lines/s.

    python benchmarks/parse.py [--repeats 5] [--jobs N] [--corpus DIR]

Parses every MANIFEST.tsv file whose language_version is 1, 2 or 3 (read
into memory first, so disk speed does not count) `--repeats` times and prints
the median MB/s and lines/s, in one process and, with --jobs > 1 (default:
the number of CPUs), spread over a process pool.  The pool's figure is what the
machine can do with per-file work that stays in the workers: handing the
ASTs back would not pay, as unpickling them takes longer than parsing.  It
also times parser construction in fresh interpreters: warm (lark's grammar
cache on disk) and cold (an empty cache directory).

Between the one-process repeats it times a fixed pure-Python loop that has
nothing to do with allium.  On a shared machine that loop slows down with
the parse, so it tells a slow phase of the machine from slower code.

Targets (issue 2): >= 1 MB/s of spec text on the 2-core machine; parser
construction < 50 ms warm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from allium.syntax import parse_text  # noqa: E402
from allium.syntax.grammar import build_engine  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
TARGET_MBPS = 1.0
TARGET_BUILD_MS = 50.0


def corpus_texts(corpus: Path) -> list[tuple[str, str]]:
    rows = (corpus / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    out = []
    for row in rows:
        cols = row.split("\t")
        if len(cols) >= 5 and cols[4].strip() in {"1", "2", "3"}:
            path = corpus / cols[0]
            out.append((str(path), path.read_bytes().decode("utf-8-sig", errors="replace").replace("\r\n", "\n")))
    return out


def _parse_all(texts: list[tuple[str, str]]) -> int:
    failures = 0
    for path, text in texts:
        if parse_text(text, path).module is None:
            failures += 1
    return failures


def _worker_init() -> None:
    build_engine()


def _machine_loop() -> int:
    """Dict stores, string slicing, tuples: the parser's kind of work, but none of its code."""
    table: dict[str, tuple[str, int, int]] = {}
    for i in range(100_000):
        text = str(i)
        table[text[-3:]] = (text, i, len(text))
    return len(table)


def time_serial(texts, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per corpus parse, and per run of the machine loop between them."""
    build_engine()
    _parse_all(texts)  # warm-up: first-use lexer scanners, imports
    times, machine = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        _machine_loop()
        machine.append(time.perf_counter() - start)
        start = time.perf_counter()
        _parse_all(texts)
        times.append(time.perf_counter() - start)
    return times, machine


def time_parallel(texts, repeats: int, jobs: int) -> list[float]:
    # Deal files round-robin by size so the workers finish together.
    ordered = sorted(texts, key=lambda t: -len(t[1]))
    chunks = [ordered[i::jobs] for i in range(jobs)]
    times = []
    with ProcessPoolExecutor(jobs, initializer=_worker_init) as pool:
        list(pool.map(_parse_all, chunks))  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(_parse_all, chunks))
            times.append(time.perf_counter() - start)
    return times


_BUILD_SNIPPET = (
    "import time, sys; sys.path.insert(0, {root!r});"
    "from allium.syntax import grammar as p;"
    "t = time.perf_counter(); p.build_engine(); print((time.perf_counter() - t) * 1000)"
)


def construction_ms(cold: bool, runs: int = 5) -> float:
    """Median time to build the parser in fresh interpreters, imports excluded.

    Warm: the engine's tables come from the user's cache folder.  Cold: an
    empty cache folder, so lark compiles the grammar and the engine derives
    its tables from that.
    """
    results = []
    for _ in range(runs):
        env = dict(os.environ)
        with tempfile.TemporaryDirectory(prefix="allium-bench-") as tmp:
            if cold:
                env["XDG_CACHE_HOME"] = tmp  # an empty cache folder: lark compiles the grammar
            out = subprocess.run(
                [sys.executable, "-c", _BUILD_SNIPPET.format(root=str(ROOT))],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
        results.append(float(out.stdout.strip()))
    return statistics.median(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", "-n", type=int, default=5)
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--corpus", type=Path, default=Path(os.environ.get("ALLIUM_CORPUS", DEFAULT_CORPUS)))
    args = parser.parse_args(argv)

    if not (args.corpus / "MANIFEST.tsv").is_file():
        print(f"corpus not found at {args.corpus}", file=sys.stderr)
        return 2
    texts = corpus_texts(args.corpus)
    size = sum(len(t.encode("utf-8")) for _, t in texts)
    lines = sum(t.count("\n") + (not t.endswith("\n")) for _, t in texts)
    print(f"corpus: {len(texts)} files, {size / 1e6:.2f} MB, {lines} lines; {args.repeats} repeats (median)")

    serial_times, machine = time_serial(texts, args.repeats)
    serial = statistics.median(serial_times)
    mbps = size / serial / 1e6
    print(f"1 process : {serial:6.2f} s  {mbps:5.2f} MB/s  {lines / serial:9.0f} lines/s")
    print(f"machine loop between repeats: {statistics.median(machine) * 1000:.1f} ms median (higher: a slower machine)")
    best = mbps
    if args.jobs > 1:
        parallel = statistics.median(time_parallel(texts, args.repeats, args.jobs))
        pmbps = size / parallel / 1e6
        best = max(best, pmbps)
        print(f"{args.jobs} processes: {parallel:6.2f} s  {pmbps:5.2f} MB/s  {lines / parallel:9.0f} lines/s")

    warm = construction_ms(cold=False)
    cold = construction_ms(cold=True, runs=3)
    print(f"parser construction: warm {warm:.1f} ms (cache on disk), cold {cold:.1f} ms (no cache)")
    print(
        f"targets: >= {TARGET_MBPS} MB/s: 1 process {'met' if mbps >= TARGET_MBPS else 'NOT met'}"
        + (f", {args.jobs} processes {'met' if best >= TARGET_MBPS else 'NOT met'}" if args.jobs > 1 else "")
        + f"; construction < {TARGET_BUILD_MS:.0f} ms warm: {'met' if warm < TARGET_BUILD_MS else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
