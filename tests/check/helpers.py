"""Run the checker on inline spec text."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from allium.check import check_results
from allium.diagnostics import Diagnostic
from allium.syntax import parse_file, parse_text

HEADER = "-- allium: 3\n"


def spec(text: str) -> str:
    """Dedent and prefix the version marker, so line 2 is the first body line."""
    return HEADER + dedent(text).lstrip("\n")


def check_text(text: str, path: str = "spec.allium") -> list[Diagnostic]:
    return check_results([parse_text(spec(text), path)]).diagnostics


def check_files(tmp_path: Path, files: dict[str, str]) -> list[Diagnostic]:
    results = []
    for name, text in files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(spec(text), encoding="utf-8")
        results.append(parse_file(str(target)))
    return check_results(results).diagnostics


def found(diagnostics: list[Diagnostic], code: str) -> list[tuple[str, int]]:
    return sorted((d.code, d.span.start.line if d.span else 0) for d in diagnostics if d.code == code)
