"""Helpers for the plan tests: parse inline specs, collect ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from allium import ast
from allium.plan import Obligation, derive_obligations
from allium.syntax import parse_text

CORPUS = Path(os.environ.get("ALLIUM_CORPUS", Path(__file__).resolve().parents[2].parent / "shared" / "corpus"))
REPO = Path(__file__).resolve().parents[2]


def parse(text: str, path: str = "spec.allium") -> ast.Module:
    result = parse_text(text, path)
    if result.module is None:
        pytest.fail(f"fixture does not parse: {[d.message for d in result.diagnostics]}")
    return result.module


def plan(text: str, path: str = "spec.allium") -> list[Obligation]:
    return derive_obligations(parse(text, path), text)


def ids(text: str) -> list[str]:
    return [o.id for o in plan(text)]


def by_id(text: str) -> dict[str, Obligation]:
    return {o.id: o for o in plan(text)}
