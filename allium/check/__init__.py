"""`allium check` on specs: discover files, parse them, run the checker passes.

The passes live in their own modules and are listed, in order, in
:data:`allium.check.passes.PASSES`; each is a function
``(module, context) -> Iterator[Diagnostic]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from allium import ast
from allium.diagnostics import Diagnostic
from allium.errors import UsageError
from allium.source import SourceFile
from allium.syntax import ParseResult, parse_file


@dataclass
class CheckReport:
    files: list[str]
    sources: dict[str, SourceFile]
    modules: dict[str, ast.Module]
    diagnostics: list[Diagnostic] = field(default_factory=list)


def discover(paths: Iterable[str | Path]) -> list[str]:
    """Every `.allium` file named or found (recursively) under the paths, sorted."""
    found: set[str] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.update(str(p) for p in path.rglob("*.allium") if p.is_file())
        elif path.is_file():
            found.add(str(path))
        else:
            raise UsageError(f"no such file or directory: {raw}")
    if not found:
        raise UsageError("no .allium files found in " + ", ".join(str(p) for p in paths))
    return sorted(found)


def parse_all(files: Sequence[str]) -> list[ParseResult]:
    return [parse_file(f) for f in files]


def check_paths(paths: Iterable[str | Path]) -> CheckReport:
    return check_results(parse_all(discover(paths)))


def check_results(results: Sequence[ParseResult]) -> CheckReport:
    from allium.check.passes import run_passes

    report = CheckReport(
        files=[r.source.path for r in results],
        sources={r.source.path: r.source for r in results},
        modules={r.source.path: r.module for r in results if r.module is not None},
    )
    for result in results:
        report.diagnostics.extend(result.diagnostics)
    report.diagnostics.extend(run_passes(report.modules))
    report.diagnostics = apply_suppressions(report.diagnostics, report.modules)
    return report


def apply_suppressions(diagnostics: Iterable[Diagnostic], modules: dict[str, ast.Module]) -> list[Diagnostic]:
    """Drop what an `-- allium-ignore code` comment silences (its line and the next)."""
    silenced: dict[tuple[str, int], set[str]] = {}
    for path, module in modules.items():
        for line, codes in module.suppressions:
            for target in (line, line + 1):
                silenced.setdefault((path, target), set()).update(codes)
    kept = []
    for diag in diagnostics:
        if diag.span is not None:
            silencing = silenced.get((diag.span.file, diag.span.start.line), set())
            if diag.code in silencing or "all" in silencing or _short(diag.code) in silencing:
                continue
        kept.append(diag)
    return kept


def _short(code: str) -> str:
    return code.removeprefix("allium.")
