"""Shared helpers for the front-end tests."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from allium import ast
from allium.diagnostics import Severity
from allium.syntax import ParseResult, parse_text

CORPUS = Path(os.environ.get("ALLIUM_CORPUS", Path(__file__).resolve().parents[2].parent / "shared" / "corpus"))


def src(text: str, version: int | None = 3) -> str:
    """Dedent a snippet and put a version marker in front of it."""
    body = textwrap.dedent(text).strip("\n") + "\n"
    if version is None or body.startswith("-- allium:"):
        return body
    return f"-- allium: {version}\n{body}"


def errors(result: ParseResult) -> list:
    return [d for d in result.diagnostics if d.severity is Severity.ERROR]


def parse_ok(text: str, version: int | None = 3) -> ast.Module:
    result = parse_text(src(text, version), "t.allium")
    assert result.module is not None, [d.message for d in result.diagnostics]
    assert not errors(result), [d.message for d in result.diagnostics]
    return result.module


def strip_spans(node):
    """The AST as plain data without spans: handy for structural equality."""
    data = ast.to_json(node)

    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items() if not k.endswith("span")}
        if isinstance(x, list):
            return [walk(i) for i in x]
        return x

    return walk(data)


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS
