"""Careless and hostile answers: refused in one line, never recorded, generated/ untouched.

Each test starts from a good generation of the two-unit e2e fixture, then
answers one unit badly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from allium.errors import AlliumError
from allium.generate.runner import Generator
from allium.generate.units import Plan
from allium.providers.base import Request, Response
from allium.providers.transcripts import TranscriptStore
from tests.generate.test_end_to_end import ALARMS, COUNTERS, SPECS
from tests.trees import file_tree

GOOD = {"counters": COUNTERS, "alarms": ALARMS}


class Scripted:
    """A provider that answers each unit with the files it is given."""

    name = "scripted"

    def __init__(self, answers: Mapping[str, Mapping[str, str] | list[tuple[str, str]]]) -> None:
        self.answers = dict(answers)
        self.asked: list[str] = []

    def complete(self, request: Request) -> Response:
        self.asked.append(request.unit)
        files = self.answers[request.unit]
        pairs = tuple(files.items()) if isinstance(files, Mapping) else tuple(files)
        content = tuple({"type": "tool_use", "id": f"t{i}", "name": "write_file",
                         "input": {"path": p, "content": c}} for i, (p, c) in enumerate(pairs))
        return Response(content, pairs, "end_turn", "scripted")


@pytest.fixture
def project(tmp_path: Path, plan: Plan) -> Path:
    """A project whose generated/ holds a good answer for every unit."""
    Generator(plan, Scripted(GOOD), TranscriptStore(tmp_path / "t0"), tmp_path / "generated",
              jobs=1).run(list(plan.units))
    return tmp_path


def regenerate(project: Path, plan: Plan, answers, store: str = "t1", unit: str = "counters"):
    provider = Scripted({**GOOD, unit: answers})
    store_ = TranscriptStore(project / store)
    generator = Generator(plan, provider, store_, project / "generated", jobs=1)
    return generator, provider, store_


def refused(project: Path, plan: Plan, answers, match: str, unit: str = "counters") -> TranscriptStore:
    before = file_tree(project / "generated")
    generator, _, store = regenerate(project, plan, answers, unit=unit)
    with pytest.raises(AlliumError, match=match) as info:
        generator.run([plan.unit(unit)])
    assert "\n" not in str(info.value).split(";")[0]  # the reason is one line
    assert file_tree(project / "generated") == before
    assert list(store) == []  # nothing recorded as a transcript
    return store


def test_an_answer_without_files_is_refused_and_deletes_nothing(project, plan) -> None:
    store = refused(project, plan, {}, r"writes no files; an answer must write every file")
    assert list(store.rejected_root.glob("*.json"))  # kept apart, for inspection


def test_an_answer_without_its_test_file_is_refused(project, plan) -> None:
    only_module = {"app/counters.py": COUNTERS["app/counters.py"]}
    refused(project, plan, only_module, r"writes no tests/test_counters.py")


def test_duplicate_paths_are_refused(project, plan) -> None:
    twice = [*COUNTERS.items(), ("app/./counters.py", "x = 1\n")]
    refused(project, plan, twice, r"writes app/counters.py more than once")


def test_a_syntax_error_is_refused_before_it_is_recorded(project, plan) -> None:
    broken = {**COUNTERS, "app/counters.py": "def broken(:\n"}
    refused(project, plan, broken, r"app/counters.py:1: ")


def test_a_path_component_over_255_bytes_is_one_clear_error(project, plan) -> None:
    long = {**COUNTERS, f"app/counters_{'x' * 300}.py": "x = 1\n"}
    refused(project, plan, long, r"longer than 255 bytes")


def test_a_lone_surrogate_is_refused(project, plan) -> None:
    bad = {**COUNTERS, "app/counters.py": "x = '\ud800'\n"}
    refused(project, plan, bad, r"not valid Unicode text")


def test_answers_over_the_size_cap_are_refused(project, plan) -> None:
    huge = {**COUNTERS, "app/counters.py": "#" * (2 << 20) + "\n"}
    refused(project, plan, huge, r"larger than 1 MiB")


def test_a_stored_bad_answer_says_how_to_discard_it_and_discard_asks_again(project, plan) -> None:
    # An answer recorded by an older allium, which accepted it unchecked.
    generator, provider, store = regenerate(project, plan, {"app/counters.py": "x = 1\n"})
    generator.recorder.check = None
    with pytest.raises(AlliumError):
        generator.run([plan.unit("counters")])
    assert len(list(store)) == 1  # stored, as the old code did
    with pytest.raises(AlliumError, match="--discard counters"):
        generator.run([plan.unit("counters")])
    before = list(provider.asked)
    assert "moved to" in generator.discard([plan.unit("counters")])[0]
    provider.answers["counters"] = COUNTERS
    generator.recorder.check = generator._check_fresh
    generator.run([plan.unit("counters")])
    assert provider.asked == [*before, "counters"]  # asked again, not replayed


def test_tests_that_do_not_collect_are_set_aside_and_asked_again(project, plan) -> None:
    before = file_tree(project / "generated")
    bad_tests = {**COUNTERS, "tests/test_counters.py": "import no_such_module_anywhere\n"}
    generator, provider, store = regenerate(project, plan, bad_tests)
    with pytest.raises(AlliumError, match="do not collect") as info:
        generator.run([plan.unit("counters")])
    assert "counters: run again to ask again" in str(info.value)
    assert file_tree(project / "generated") == before
    assert list(store) == [] and list(store.rejected_root.glob("*.json"))
    provider.answers["counters"] = COUNTERS
    generator.run([plan.unit("counters")])
    assert provider.asked == ["counters", "counters"]


def test_a_collection_timeout_is_one_clear_error(project, plan, monkeypatch) -> None:
    import allium.generate.runner as runner

    real = runner._check_tests_collect
    monkeypatch.setattr(runner, "_check_tests_collect", lambda root: real(root, timeout=3))
    hangs = {**COUNTERS, "tests/test_counters.py": "import time\ntime.sleep(60)\n"}
    before = file_tree(project / "generated")
    generator, _, _ = regenerate(project, plan, hangs)
    with pytest.raises(AlliumError, match="did not finish collecting within 3 s"):
        generator.run([plan.unit("counters")])
    assert file_tree(project / "generated") == before


def test_the_discard_flag_sets_the_stored_answer_aside_and_asks_again(project, plan, monkeypatch) -> None:
    from click.testing import CliRunner

    from allium.cli import main

    monkeypatch.chdir(project)
    exchange = project / "exchange"
    argv = ["generate", str(SPECS), "--provider", "exchange", "--exchange-dir", str(exchange),
            "--transcripts", str(project / "t0"), "--out", str(project / "generated")]
    result = CliRunner().invoke(main, [*argv, "--discard", "counters"], catch_exceptions=False)
    assert "counters: stored answer moved to" in result.output
    assert result.exit_code == 1 and "await an answer" in result.output  # asked again, by exchange
    assert (exchange / "counters.request.md").exists() and not (exchange / "alarms.request.md").exists()
    # asked from scratch: an answer set aside is not the base for the next one
    assert "Current implementation" not in (exchange / "counters.request.md").read_text()


def test_a_second_generate_on_a_busy_output_is_refused_before_asking(project, plan) -> None:
    import subprocess
    import sys

    out = project / "generated"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom allium.generate.writer import OutputLock\n"
         f"lock = OutputLock({str(out)!r}).__enter__()\nprint('locked', flush=True)\ntime.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        generator, provider, _ = regenerate(project, plan, COUNTERS)
        with pytest.raises(AlliumError, match="another allium run is writing"):
            generator.run([plan.unit("counters")])
        assert provider.asked == []  # refused before paying for an answer
    finally:
        holder.kill()
        holder.wait()
