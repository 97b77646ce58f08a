"""Time the spec-vs-tests check (`verify_package`, without --run) on a large project.

    python benchmarks/verify.py [--repeats N] [--copies K]

Builds, in a temp dir, a spec set from the showcase specs in specs/ (3,660
lines; ``--copies`` replicates it under renamed modules for a larger set), a
package with one module per component and one tagged test per construct (a
few hundred tests, tagging every obligation), and a matching allium.lock.
Then times whole `verify_package` calls: spec check, obligations, the
collection subprocess, vacuity analysis, lockfile drift. Prints the median and
spread, and the collection subprocess alone.

Target: under 3 s for a 3,000-line spec set with a few hundred tests.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from allium.check import check_paths  # noqa: E402
from allium.generate import lockfile as lf  # noqa: E402
from allium.generate.units import load_plan  # noqa: E402
from allium.verify.coverage import derive_all, verify_package  # noqa: E402

PACKAGE = "benchpkg"


def build_specs(dest: Path, copies: int) -> list[Path]:
    """The showcase specs, plus `copies - 1` renamed replicas (file stems and `use` paths)."""
    dest.mkdir(parents=True)
    sources = sorted((ROOT / "specs").glob("*.allium"))
    for n in range(copies):
        suffix = "" if n == 0 else f"_{n}"
        for src in sources:
            text = src.read_text(encoding="utf-8")
            if suffix:
                text = re.sub(r'use "\./?([a-z_]+)\.allium"', rf'use "./\1{suffix}.allium"', text)
            (dest / f"{src.stem}{suffix}.allium").write_text(text, encoding="utf-8")
    return sorted(dest.glob("*.allium"))


def build_package(out: Path, obligations: list) -> int:
    """One module and one test file per component; one test per construct. Returns the test count."""
    (out / PACKAGE).mkdir(parents=True)
    (out / PACKAGE / "__init__.py").write_text("")
    (out / "tests").mkdir()
    by_component: dict[str, dict[str, list[str]]] = {}
    for ob in obligations:
        construct = ob.id.split(".")[1]
        by_component.setdefault(ob.component, {}).setdefault(construct, []).append(ob.id)
    count = 0
    for component, constructs in by_component.items():
        (out / PACKAGE / f"{component}.py").write_text(
            "def touch(name: str, **fields: object) -> dict:\n    return {'name': name, **fields}\n"
        )
        lines = ["import pytest", f"from {PACKAGE}.{component} import touch", ""]
        for i, (construct, ids) in enumerate(constructs.items()):
            tags = ", ".join(repr(i) for i in ids)
            lines += ["", f"@pytest.mark.allium({tags})", f"def test_{i}():",
                      f"    result = touch({construct!r}, status='ok')",
                      f"    assert result['name'] == {construct!r}", ""]
            count += 1
        (out / "tests" / f"test_{component}.py").write_text("\n".join(lines))
    return count


def write_lock(specs: list[Path], out: Path) -> None:
    plan = load_plan(specs, package=PACKAGE, obligations=lambda m: ())
    units = {
        u.name: lf.UnitLock(u.slice_hash, "0" * 64,
                            {f: lf.sha256_file(out / f) for f in u.files if (out / f).is_file()})
        for u in plan.units
    }
    spec_files = lf.spec_file_hashes(specs[0].parent, [p.name for p in specs])
    lf.save(lf.Lockfile(PACKAGE, spec_files, units), out / "allium.lock")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--copies", type=int, default=1, help="replicate the showcase spec set K times")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="allium-bench-verify-"))
    try:
        specs = build_specs(tmp / "specs", args.copies)
        checked = check_paths(specs)
        obligations = derive_all(checked.modules.values())
        out = tmp / "generated"
        tests = build_package(out, obligations)
        write_lock(specs, out)
        lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in specs)
        verify_package(specs, out)  # warm: OS file cache, bytecode of the generated package
        runs = [verify_package(specs, out) for _ in range(args.repeats)]
        report = runs[-1]
        totals = [r.seconds for r in runs]
        collects = [r.collect_seconds for r in runs]
        print(f"spec set: {len(specs)} files, {lines} lines; {len(obligations)} obligations; "
              f"package: {tests} tagged tests in {len(list((out / 'tests').glob('*.py')))} files")
        print(f"result: {report.covered}/{report.total} covered, findings: {report.codes() or 'none'}")
        print(f"{'':32} {'median':>8} {'min':>7} {'max':>7}")
        for name, values in (("verify_package (no --run)", totals), ("  pytest subprocess (overlapped)", collects)):
            print(f"{name:32} {statistics.median(values) * 1000:7.0f}ms {min(values) * 1000:6.0f}ms "
                  f"{max(values) * 1000:6.0f}ms")
        verdict = "OK" if statistics.median(totals) < 3.0 else "OVER"
        print(f"target: under 3 s for a 3,000-line spec set with a few hundred tests: {verdict}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
