"""allium fix run: failing tests go back to the model with the request, for a bounded number of rounds."""

from __future__ import annotations

import json
from pathlib import Path

from allium.fix.loop import run_loop, unit_test_failures, with_feedback
from allium.generate.units import load_plan
from allium.providers.base import Request, Response
from allium.providers.transcripts import TranscriptStore

SPEC = Path(__file__).resolve().parents[1] / "generate" / "fixtures" / "e2e" / "counters.allium"
BUGGY = "def increment(value: int) -> int:\n    return value + 2\n"
FIXED = "def increment(value: int) -> int:\n    return value + 1\n"
TEST = ("from app.counters import increment\n\n\n"
        "def test_increment_adds_one():\n    assert increment(41) == 42\n")


class LearningModel:
    """Answers with the bug until a request carries feedback naming the failing test."""

    name = "fake"

    def __init__(self, learns_after: int = 1) -> None:
        self.requests: list[Request] = []
        self.learns_after = learns_after

    def complete(self, request: Request) -> Response:
        self.requests.append(request)
        prompt = request.messages[-1]["content"]
        fixed = prompt.count("test_increment_adds_one") and len(self.requests) > self.learns_after
        files = (("app/counters.py", FIXED if fixed else BUGGY), ("tests/test_counters.py", TEST))
        content = tuple({"type": "tool_use", "id": f"t{i}", "name": "write_file",
                         "input": {"path": p, "content": c}} for i, (p, c) in enumerate(files))
        return Response(content, files, "end_turn", "fake-model")


def setup(tmp_path: Path):
    plan = load_plan([SPEC], package="app")
    return plan, TranscriptStore(tmp_path / "transcripts"), tmp_path / "generated", tmp_path / "state.json"


def test_failures_are_fed_back_until_green(tmp_path: Path) -> None:
    plan, store, out, state = setup(tmp_path)
    model = LearningModel(learns_after=1)
    result = run_loop(plan, model, store, out, rounds=3, state_path=state, run_tests=unit_test_failures)
    assert result.green and result.rounds == 2 and result.gave_up == []
    assert len(model.requests) == 2
    feedback = model.requests[1].messages[-1]["content"]
    assert "# Feedback: round 1 of 3" in feedback and "test_increment_adds_one" in feedback
    assert "Feedback" not in model.requests[0].messages[-1]["content"]
    assert (out / "app" / "counters.py").read_text() == FIXED
    assert not state.exists()  # nothing left to feed back
    assert len(list((tmp_path / "transcripts").glob("*.json"))) == 2  # each round is recorded


def test_the_loop_gives_up_after_the_allowed_rounds(tmp_path: Path) -> None:
    plan, store, out, state = setup(tmp_path)
    model = LearningModel(learns_after=99)
    result = run_loop(plan, model, store, out, rounds=3, state_path=state, run_tests=unit_test_failures)
    assert not result.green and result.gave_up == ["counters"] and result.rounds == 4
    assert "test_increment_adds_one" in result.failing["counters"][0]
    assert "round 3 of 3" in model.requests[-1].messages[-1]["content"]


def test_no_feedback_rounds_when_rounds_is_zero(tmp_path: Path) -> None:
    plan, store, out, state = setup(tmp_path)
    result = run_loop(plan, LearningModel(), store, out, rounds=0, state_path=state, run_tests=unit_test_failures)
    assert result.rounds == 1 and result.gave_up == ["counters"]


def _asked(tmp_path: Path) -> str:
    """The hash of the request now awaiting an answer: an exchange answer must name it."""
    import re

    request = (tmp_path / "exchange" / "counters.request.md").read_text()
    return re.search(r"request-hash: ([0-9a-f]{64})", request).group(1)  # type: ignore[union-attr]


def test_exchange_stops_while_an_answer_is_awaited_and_resumes(tmp_path: Path) -> None:
    from allium.providers.exchange import ExchangeProvider

    plan, store, out, state = setup(tmp_path)
    exchange = ExchangeProvider(tmp_path / "exchange")
    first = run_loop(plan, exchange, store, out, rounds=3, state_path=state, run_tests=unit_test_failures)
    assert first.waiting and first.rounds == 0
    answer = tmp_path / "exchange" / "counters.response.json"
    answer.write_text(json.dumps({"request_hash": _asked(tmp_path),
                                  "files": [{"path": "app/counters.py", "content": BUGGY},
                                            {"path": "tests/test_counters.py", "content": TEST}]}))
    second = run_loop(plan, exchange, store, out, rounds=3, state_path=state, run_tests=unit_test_failures)
    assert second.rounds == 1 and second.waiting  # the feedback request now awaits its answer
    assert not answer.exists()  # the spent answer is not reused for the new request
    request = (tmp_path / "exchange" / "counters.request.md").read_text()
    assert "# Feedback: round 1 of 3" in request
    assert json.loads(state.read_text())["counters"]["round"] == 1
    answer.write_text(json.dumps({"request_hash": _asked(tmp_path),
                                  "files": [{"path": "app/counters.py", "content": FIXED},
                                            {"path": "tests/test_counters.py", "content": TEST}]}))
    third = run_loop(plan, exchange, store, out, rounds=3, state_path=state, run_tests=unit_test_failures)
    assert third.green and not state.exists()


def test_with_feedback_appends_to_the_last_user_message() -> None:
    request = Request(model="m", system=("s",), messages=({"role": "user", "content": "do it"},), unit="u")
    assert with_feedback(request, "it failed").messages[-1]["content"] == "do it\n\nit failed"
    assert with_feedback(request, "x").request_hash() != request.request_hash()


def test_a_vacuous_test_in_an_up_to_date_unit_is_sent_back_with_its_finding(tmp_path: Path) -> None:
    """`--recheck`: passing tests that prove nothing are a reason to ask again,
    and the model is told which test and why; it amends its current files."""
    from tests.generate.test_end_to_end import COUNTERS

    good = COUNTERS["tests/test_counters.py"]
    weak = good.replace("        increment(counter)\n    assert counter.value == 100",
                        "        raise Refused('at 100')")
    assert weak != good

    class Model:
        name = "fake"

        def __init__(self) -> None:
            self.requests: list[Request] = []

        def complete(self, request: Request) -> Response:
            self.requests.append(request)
            told = "test_increment_refused_at_100" in request.messages[-1]["content"]
            files = (("app/counters.py", COUNTERS["app/counters.py"]), ("tests/test_counters.py", good if told else weak))
            content = tuple({"type": "tool_use", "id": f"t{i}", "name": "write_file",
                             "input": {"path": p, "content": c}} for i, (p, c) in enumerate(files))
            return Response(content, files, "end_turn", "fake-model")

    spec = tmp_path / "specs" / "counters.allium"  # the e2e counters without their surface
    spec.parent.mkdir()
    spec.write_text(SPEC.read_text().split("surface CounterApi")[0])
    plan = load_plan([spec], package="app")
    store, out, state = TranscriptStore(tmp_path / "transcripts"), tmp_path / "generated", tmp_path / "state.json"
    model = Model()
    first = run_loop(plan, model, store, out, rounds=0, state_path=state)  # written, then found vacuous
    (finding,) = first.failing["counters"]
    assert first.gave_up == ["counters"] and "test_increment_refused_at_100 is vacuous" in finding
    again = run_loop(plan, model, store, out, rounds=1, state_path=state, recheck=["counters"])
    assert again.green and len(model.requests) == 2
    prompt = model.requests[1].messages[-1]["content"]
    assert "test_increment_refused_at_100" in prompt and "is vacuous" in prompt
    assert "## Current implementation (amend it)" in prompt
    assert (out / "tests" / "test_counters.py").read_text() == good


def test_unit_tests_run_from_a_relative_output_folder(tmp_path: Path, monkeypatch) -> None:
    """`--out generated` is relative; pytest once got --rootdir=generated while
    running inside generated/ and could not collect anything."""
    from allium.fix.loop import unit_test_failures

    plan, _, _, _ = setup(tmp_path)
    out = tmp_path / "generated"
    (out / "app").mkdir(parents=True)
    (out / "tests").mkdir()
    (out / "app" / "counters.py").write_text(BUGGY)
    (out / "tests" / "test_counters.py").write_text(TEST)
    (out / "tests" / "conftest.py").write_text("import sys, pathlib\nsys.path.insert(0, str(pathlib.Path(__file__).parents[1]))\n")
    monkeypatch.chdir(tmp_path)
    (failure,) = unit_test_failures(Path("generated"), plan.unit("counters"))
    assert failure.startswith("tests/test_counters.py::test_increment_adds_one")
