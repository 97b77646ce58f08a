"""Snapshot what allium says about every corpus file, to compare two versions.

    python scripts/corpus_snapshot.py OUT.json [--corpus DIR]
    python scripts/corpus_snapshot.py --compare BEFORE.json AFTER.json

Per file: a digest of the AST's JSON (every node, span and comment), every
diagnostic of `check` on that file alone (code, severity, message,
position) and every obligation id of `plan`.  Run it on two checkouts; the
comparison prints each file whose record differs and exits 1 if any does.
A refactoring that claims to change nothing users see must compare equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"


def snapshot(corpus: Path) -> dict[str, dict[str, object]]:
    sys.path.insert(0, str(Path.cwd()))  # the checkout being measured
    from allium.ast import to_json
    from allium.check import check_results
    from allium.plan import plan_for
    from allium.syntax import parse_file

    rows = (corpus / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    out: dict[str, dict[str, object]] = {}
    for row in rows:
        name = row.split("\t")[0]
        result = parse_file(str(corpus / name))
        ast_json = json.dumps(to_json(result.module), sort_keys=True) if result.module else None
        report = check_results([result])
        out[name] = {
            "ast": hashlib.sha256(ast_json.encode()).hexdigest() if ast_json else None,
            "diagnostics": sorted(
                [d.code, d.severity.value, d.message, *(_position(d))] for d in report.diagnostics
            ),
            "obligations": [o.id for o in plan_for([result.module])] if result.module else None,
        }
    return out


def _position(diagnostic) -> list[int]:
    span = diagnostic.span
    return [] if span is None else [span.start.line, span.start.column, span.end.line, span.end.column]


def compare(before: dict, after: dict) -> int:
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    for name in changed:
        old, new = before.get(name) or {}, after.get(name) or {}
        parts = [key for key in ("ast", "diagnostics", "obligations") if old.get(key) != new.get(key)]
        print(f"{name}: {', '.join(parts) or 'added or removed'} changed")
    print(f"{len(before)} files before, {len(after)} after, {len(changed)} differ")
    return 1 if changed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(Path(p).read_text(encoding="utf-8")) for p in args.compare)
        return compare(before, after)
    if not args.out:
        parser.error("give OUT.json or --compare BEFORE AFTER")
    Path(args.out).write_text(json.dumps(snapshot(args.corpus), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
