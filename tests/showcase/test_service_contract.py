"""The running service against its own OpenAPI document, with schemathesis.

Starts a real deployment of the generated service (three node processes, SQLite store,
embedded log) with `python -m ledger up`, and lets schemathesis generate requests from
the document every node serves at /openapi.json. Every check must pass: no 5xx, every
response as documented, and no request that the document calls valid refused as invalid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.showcase.cluster import free_block

GENERATED = Path(__file__).resolve().parents[2] / "generated"
pytestmark = pytest.mark.skipif(not (GENERATED / "ledger" / "main.py").exists(),
                                reason="the service is not generated")


def _ledger(*args: str, run_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(GENERATED)}
    return subprocess.run([sys.executable, "-m", "ledger", *args, "--run-dir", str(run_dir)],
                          cwd=GENERATED, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run_dir = tmp_path_factory.mktemp("service") / "run"
    base = free_block(3)
    started = _ledger("up", "--base-port", str(base), run_dir=run_dir, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{base + 1}"
    finally:
        _ledger("down", run_dir=run_dir, timeout=60)


def test_schemathesis_finds_no_server_error_and_no_contract_violation(node_url: str) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st, "schemathesis is in the test extra"
    # The peers' vote endpoint is documented but authenticated; clients cannot call it.
    result = subprocess.run(
        [st, "run", f"{node_url}/openapi.json", "--checks", "all", "--max-examples", "25",
         "--exclude-path", "/internal/votes", "--seed", "20261203", "--no-color"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
