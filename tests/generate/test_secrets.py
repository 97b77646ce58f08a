"""Model-written code runs without the caller's secrets (allium.untrusted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from allium.generate.runner import Generator
from allium.providers.transcripts import TranscriptStore
from allium.untrusted import resource_limits, scrubbed_env
from allium.verify.coverage import verify_package
from tests.generate.test_answers import GOOD, Scripted
from tests.generate.test_end_to_end import COUNTERS, SPECS

SECRET = "sk-ant-untrusted-LEAKCHECK-77c1"
SPY = '''
import os
from pathlib import Path

Path(__file__).with_name("seen_" + os.environ.get("ALLIUM_SPY_RUN", "x") + ".txt").write_text(
    repr(sorted(os.environ.items())))
'''


def test_generated_tests_never_see_api_keys_during_generate_or_check_run(tmp_path: Path, plan, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    monkeypatch.setenv("ALLIUM_SPY_RUN", "check")
    out = tmp_path / "generated"
    spying = {**COUNTERS, "tests/test_counters.py": COUNTERS["tests/test_counters.py"] + SPY}
    Generator(plan, Scripted({**GOOD, "counters": spying}), TranscriptStore(tmp_path / "t", secrets=()),
              out, jobs=1).run(list(plan.units))
    # Collection imported the spy; ALLIUM_SPY_RUN is not on the allow-list, hence "x".
    during_generate = (out / "tests" / "seen_x.txt").read_text()
    assert "PATH" in during_generate
    assert SECRET not in during_generate and "GITHUB_TOKEN" not in during_generate

    monkeypatch.setenv("ALLIUM_PASS_ENV", "ALLIUM_SPY_RUN")
    report = verify_package([str(p) for p in sorted(SPECS.glob("*.allium"))], out, run=True, timeout=120)
    assert report.failures == []
    during_check = (out / "tests" / "seen_check.txt").read_text()
    assert "ALLIUM_SPY_RUN" in during_check  # let through on purpose
    assert SECRET not in during_check and "ANTHROPIC_API_KEY" not in during_check


def test_the_environment_is_an_allow_list() -> None:
    env = scrubbed_env({"PATH": "/bin", "LC_ALL": "C", "AWS_SECRET_ACCESS_KEY": "s", "ANTHROPIC_API_KEY": "k",
                        "PYTEST_ADDOPTS": "-x", "ALLIUM_PASS_ENV": "EXTRA, OTHER", "EXTRA": "1"}, MINE="2")
    assert env == {"PATH": "/bin", "LC_ALL": "C", "EXTRA": "1", "MINE": "2"}


def test_resource_limits_are_optional_and_checked() -> None:
    from allium.errors import UsageError

    assert resource_limits({}) is None
    assert callable(resource_limits({"ALLIUM_TEST_MEMORY_MB": "2048", "ALLIUM_TEST_CPU_SECONDS": "60"}))
    with pytest.raises(UsageError, match="positive whole number"):
        resource_limits({"ALLIUM_TEST_MEMORY_MB": "-5"})


def test_a_memory_limit_stops_a_greedy_test(tmp_path: Path) -> None:
    import subprocess
    import sys

    limits = resource_limits({"ALLIUM_TEST_MEMORY_MB": "300"})
    greedy = subprocess.run([sys.executable, "-c", "x = bytearray(1 << 30)"], preexec_fn=limits,
                            capture_output=True, text=True)
    assert greedy.returncode != 0 and "MemoryError" in greedy.stderr
