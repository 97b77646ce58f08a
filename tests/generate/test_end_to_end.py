"""`allium generate` end to end: the real CLI, the real anthropic SDK, a fake API over HTTP.

The fake plays a model that answers each unit's request with write_file
calls; we then run the generated tests, replay the transcripts into a fresh
folder, and break things on purpose (a path traversal, a rate limit, a failed
unit followed by a rerun).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from allium.cli import main
from tests.cli.schemas import SCHEMAS
from tests.fakeapi import FakeAnthropic
from tests.fakeapi import scenarios as sc
from tests.trees import file_tree

SPECS = Path(__file__).parent / "fixtures" / "e2e"
KEY = "sk-ant-e2e-LEAKCHECK-31f0"

COUNTERS = {
    "app/counters.py": '''"""Counters that only go up."""
from dataclasses import dataclass

from allium.verify import implements


class Refused(Exception):
    pass


@dataclass
class Counter:
    name: str
    value: int = 0


@implements("Increment")
def increment(counter: Counter) -> None:
    if not counter.value < 100:
        raise Refused("counter.value < 100")
    counter.value += 1
''',
    "tests/test_counters.py": '''import pytest

from app.counters import Counter, Refused, increment


@pytest.mark.allium("rule-success.Increment", "entity-fields.Counter")
def test_increment_adds_one():
    counter = Counter("hits", 41)
    increment(counter)
    assert counter.value == 42


@pytest.mark.allium("rule-failure.Increment.1")
def test_increment_refused_at_100():
    counter = Counter("hits", 100)
    with pytest.raises(Refused):
        increment(counter)
    assert counter.value == 100
''',
}

ALARMS = {
    "app/alarms.py": '''"""Alarms that trip at a threshold."""
from dataclasses import dataclass

from allium.verify import implements
from app.counters import Counter

THRESHOLD = 10


@dataclass
class Alarm:
    counter: Counter
    tripped: bool = False


@implements("Trip")
def trip(alarm: Alarm) -> bool:
    if alarm.counter.value >= THRESHOLD:
        alarm.tripped = True
    return alarm.tripped
''',
    "tests/test_alarms.py": '''import pytest

from app.alarms import Alarm, trip
from app.counters import Counter


@pytest.mark.allium("rule-success.Trip")
def test_trips_at_threshold():
    alarm = Alarm(Counter("c", 10))
    assert trip(alarm) is True


@pytest.mark.allium("rule-failure.Trip.1")
def test_stays_quiet_below_threshold():
    alarm = Alarm(Counter("c", 9))
    assert trip(alarm) is False
''',
}

ANSWERS = {"counters": COUNTERS, "alarms": ALARMS}


def unit_of(body: dict[str, Any]) -> str | None:
    """The unit a request is for; None for the engine's cache warm-up request."""
    first = body["messages"][0]["content"]
    text = first if isinstance(first, str) else " ".join(b.get("text", "") for b in first)
    match = re.search(r"# Generate unit `([a-z_]+)`", text)
    return match.group(1) if match else None


def is_tool_result(body: dict[str, Any]) -> bool:
    last = body["messages"][-1]["content"]
    return isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)


def model(overrides: dict[str, Any] | None = None):
    """A responder: each unit's files, then 'Done.' after the tool results."""
    overrides = overrides or {}

    def respond(body: dict[str, Any]):
        if is_tool_result(body):
            return sc.text("Done.")
        unit = unit_of(body)
        if unit is None:
            return sc.text("OK")
        if unit in overrides:
            return overrides[unit]
        return sc.files(ANSWERS[unit])

    return respond


def generate(tmp: Path, fake: FakeAnthropic | None, *args: str):
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.url if fake else "http://127.0.0.1:9"}
    argv = ["generate", str(SPECS), "--out", str(tmp / "generated"), "--transcripts",
            str(tmp / "transcripts"), "--model", "claude-haiku-4-5", "--jobs", "2", *args]
    return CliRunner().invoke(main, argv, env=env, catch_exceptions=False)



def requested_units(fake: FakeAnthropic) -> list[str]:
    units = (unit_of(r.body) for r in fake.message_requests if not is_tool_result(r.body))
    return sorted(u for u in units if u is not None)


@pytest.fixture
def fake():
    with FakeAnthropic(api_key=KEY, responder=model()) as server:
        yield server


def test_generates_a_package_whose_tests_pass_and_replay_is_byte_identical(tmp_path: Path, fake) -> None:
    result = generate(tmp_path, fake)
    assert result.exit_code == 0, result.output
    out = tmp_path / "generated"
    assert (out / "app" / "counters.py").read_text() == COUNTERS["app/counters.py"]
    lock = json.loads((out / "allium.lock").read_text())
    assert set(lock["units"]) == {"counters", "alarms"}
    assert set(lock["units"]["alarms"]["files"]) == set(ALARMS)
    assert lock["units"]["counters"]["tokens"]["output"] > 0

    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(out / "tests")],
                         cwd=out, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout

    replay_root = tmp_path / "replay"
    replay_root.mkdir()
    (replay_root / "transcripts").symlink_to(tmp_path / "transcripts")
    replayed = generate(replay_root, None, "--provider", "replay")
    assert replayed.exit_code == 0, replayed.output
    assert file_tree(replay_root / "generated") == file_tree(out)
    for transcript in (tmp_path / "transcripts").glob("*.json"):
        assert KEY not in transcript.read_text()


def test_path_traversal_is_refused_and_output_untouched(tmp_path: Path, fake) -> None:
    assert generate(tmp_path, fake).exit_code == 0
    before = file_tree(tmp_path / "generated")
    fake.responder = model({"alarms": sc.files({"../escape.py": "x = 1\n"})})
    result = generate(tmp_path, fake, "--all", "--transcripts", str(tmp_path / "t2"))
    assert result.exit_code == 1
    assert "refusing to write '../escape.py'" in result.output
    assert file_tree(tmp_path / "generated") == before
    assert not (tmp_path / "escape.py").exists()


def test_rate_limit_is_retried_to_success(tmp_path: Path, fake) -> None:
    fake.script(sc.rate_limited(0.05))
    result = generate(tmp_path, fake, "--jobs", "1")
    assert result.exit_code == 0, result.output
    statuses = [r.status for r in fake.message_requests]
    assert statuses.count(429) == 1
    assert (tmp_path / "generated" / "app" / "alarms.py").exists()


def test_failed_run_changes_nothing_and_rerun_asks_only_for_unfinished_units(tmp_path: Path, fake) -> None:
    fake.responder = model({"alarms": sc.bad_request("simulated failure")})
    failed = generate(tmp_path, fake)
    assert failed.exit_code == 1
    assert "left unchanged" in failed.output
    assert not (tmp_path / "generated").exists()

    fake.log.clear()
    fake.responder = model()
    rerun = generate(tmp_path, fake)
    assert rerun.exit_code == 0, rerun.output
    assert requested_units(fake) == ["alarms"]  # counters came from its transcript
    assert "(transcript)" in rerun.output


def test_up_to_date_units_are_not_regenerated(tmp_path: Path, fake) -> None:
    assert generate(tmp_path, fake).exit_code == 0
    fake.log.clear()
    again = generate(tmp_path, fake)
    assert again.exit_code == 0, again.output
    assert requested_units(fake) == []
    assert "0 unit(s) written" in again.output


def test_parallel_run_warms_the_prompt_cache_first(tmp_path: Path, fake) -> None:
    assert generate(tmp_path, fake, "--jobs", "2").exit_code == 0
    first, *rest = [r for r in fake.message_requests if not is_tool_result(r.body)]
    assert unit_of(first.body) is None and first.body["max_tokens"] == 16
    assert first.usage["cache_creation_input_tokens"] > 0
    assert all(r.usage["cache_read_input_tokens"] > 0 for r in rest)


def test_dry_run_estimates_without_calling_the_api(tmp_path: Path, fake) -> None:
    result = generate(tmp_path, fake, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would request 2 unit(s): counters, alarms" in result.output
    assert re.search(r"estimated cost: \$\d+\.\d\d", result.output)
    assert fake.log == []
    assert not (tmp_path / "generated").exists()


def test_killed_run_resumes_asking_only_for_unfinished_units(tmp_path: Path, fake) -> None:
    import os
    import signal
    import threading
    import time

    release = threading.Event()
    answer = model()

    def slow_alarms(body):
        if not is_tool_result(body) and unit_of(body) == "alarms":
            release.wait(30)  # hold the alarms answer until the process is dead
        return answer(body)

    fake.responder = slow_alarms
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.url}
    argv = [sys.executable, "-m", "allium", "generate", str(SPECS), "--out", str(tmp_path / "generated"),
            "--transcripts", str(tmp_path / "transcripts"), "--model", "claude-haiku-4-5", "--jobs", "2"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "transcripts").glob("*.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "counters never answered"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        release.set()
    assert not (tmp_path / "generated").exists()

    fake.log.clear()
    fake.responder = model()
    rerun = generate(tmp_path, fake)
    assert rerun.exit_code == 0, rerun.output
    assert requested_units(fake) == ["alarms"]


def test_max_cost_stops_before_a_unit_that_would_pass_the_budget(tmp_path: Path, fake) -> None:
    result = generate(tmp_path, fake, "--max-cost", "0.0001", "--jobs", "1")
    assert result.exit_code == 1
    assert "would pass --max-cost" in result.output
    assert requested_units(fake) == []
    assert not (tmp_path / "generated").exists()


def test_only_regenerates_the_named_unit_and_json_summarises(tmp_path: Path, fake) -> None:
    assert generate(tmp_path, fake).exit_code == 0
    fake.log.clear()
    fake.responder = model({"counters": sc.files({**COUNTERS, "app/counters.py": COUNTERS["app/counters.py"] + "# v2\n"})})
    result = generate(tmp_path, fake, "--only", "counters", "--json", "--transcripts", str(tmp_path / "t2"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # the one JSON document; progress goes to stderr
    jsonschema.validate(summary, SCHEMAS["generate"])
    assert summary["dry_run"] is False and summary["exit_code"] == 0
    assert [u["unit"] for u in summary["units"]] == ["counters"]
    assert summary["skipped"] == ["alarms"]
    assert requested_units(fake) == ["counters"]
    assert (tmp_path / "generated" / "app" / "counters.py").read_text().endswith("# v2\n")
    assert (tmp_path / "generated" / "app" / "alarms.py").read_text() == ALARMS["app/alarms.py"]


def test_config_file_sets_defaults_and_the_command_line_wins(tmp_path: Path, fake, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "allium.toml").write_text('[generate]\npackage = "fromconfig"\njobs = 1\n')
    result = generate(tmp_path, fake, "--dry-run")
    assert "fromconfig/counters.py" in result.output
    (tmp_path / "allium.toml").write_text('[generate]\nmax-cost = "lots"\n')
    bad = generate(tmp_path, fake, "--dry-run")
    assert bad.exit_code == 2


def test_a_text_only_reply_is_refused_keeps_the_output_and_is_asked_again(tmp_path: Path, fake) -> None:
    assert generate(tmp_path, fake).exit_code == 0
    before = file_tree(tmp_path / "generated")
    fake.responder = model({"alarms": sc.text("I would rather not write this one.")})
    refused = generate(tmp_path, fake, "--all", "--transcripts", str(tmp_path / "t2"))
    assert refused.exit_code == 1
    assert "unit 'alarms': answer refused: it writes no files" in refused.output
    assert "Traceback" not in refused.output
    assert file_tree(tmp_path / "generated") == before
    fake.log.clear()
    fake.responder = model()
    again = generate(tmp_path, fake, "--all", "--transcripts", str(tmp_path / "t2"))
    assert again.exit_code == 0, again.output
    assert requested_units(fake) == ["alarms"]  # counters was recorded; alarms was not


def request_text(fake: FakeAnthropic, unit: str) -> str:
    for r in fake.message_requests:
        if unit_of(r.body) == unit and not is_tool_result(r.body):
            first = r.body["messages"][0]["content"]
            return first if isinstance(first, str) else " ".join(b.get("text", "") for b in first)
    raise AssertionError(f"no request for {unit}")


def test_a_regenerated_unit_is_asked_to_amend_its_current_files(tmp_path: Path, fake) -> None:
    assert generate(tmp_path, fake).exit_code == 0
    fake.log.clear()
    assert generate(tmp_path, fake, "--only", "counters", "--transcripts", str(tmp_path / "t2")).exit_code == 0
    text = request_text(fake, "counters")
    assert "## Current implementation (amend it)" in text
    assert "### file: app/counters.py\n````python\n" + COUNTERS["app/counters.py"] + "````" in text
    assert "### file: tests/test_counters.py" in text and "app/alarms.py" not in text


def test_fresh_and_hand_edited_units_are_asked_from_scratch(tmp_path: Path, fake) -> None:
    assert generate(tmp_path, fake).exit_code == 0
    fake.log.clear()
    assert generate(tmp_path, fake, "--only", "counters", "--fresh", "--transcripts", str(tmp_path / "t2")).exit_code == 0
    assert "Current implementation" not in request_text(fake, "counters")

    fake.log.clear()  # a hand edit must never be passed off to the model as its own answer
    module = tmp_path / "generated" / "app" / "alarms.py"
    module.write_text(module.read_text() + "# edited by hand\n")
    result = generate(tmp_path, fake, "--only", "alarms", "--transcripts", str(tmp_path / "t3"))
    assert result.exit_code == 0, result.output
    assert "Current implementation" not in request_text(fake, "alarms")
    assert "asked afresh: its files differ from the lock" in result.output
