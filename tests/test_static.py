"""mypy and ruff over the code, as part of the test suite (so CI runs them).

Configured in pyproject.toml ([tool.mypy], [tool.ruff]); pinned in the
`test` extra.  A failure prints every finding as the tool wrote it,
file:line first, so a branch that merged new code sees what to fix.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(tool: str, *args: str) -> None:
    if importlib.util.find_spec(tool) is None:
        pytest.fail(f"{tool} is not installed: pip install -e '.[test]' installs it")
    proc = subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        findings = (proc.stdout + proc.stderr).strip()
        pytest.fail(f"{tool} {' '.join(args)} found problems (config in pyproject.toml):\n\n{findings}",
                    pytrace=False)


def test_mypy_finds_nothing_in_allium() -> None:
    _run("mypy")  # files = ["allium"], from [tool.mypy]


def test_ruff_finds_nothing() -> None:
    _run("ruff", "check", "--output-format", "concise", ".")
