"""Fuzzing the exchange reader: random and hostile answers, a fixed seed.

Every answer either generates or is refused with an AlliumError (one clear
message, never a traceback); a refused answer changes nothing in generated/
and records no transcript. The tests-collect check is stubbed (it is a
subprocess per answer, and what is fuzzed here is the reading and judging of
answers; tests/generate/test_answers.py covers collection failures).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

import allium.generate.runner as runner
import allium.providers.exchange as exchange
from allium.errors import AlliumError
from allium.generate import answers
from allium.generate.runner import Generator
from allium.providers.exchange import ExchangeProvider
from allium.providers.transcripts import TranscriptStore
from tests.generate.test_answers import GOOD, Scripted
from tests.generate.test_end_to_end import COUNTERS
from tests.trees import file_tree

SEED = 1717
ROUNDS = 120

HOSTILE_PATHS = [
    "../escape.py", "/etc/passwd", "app/../../escape.py", "C:\\evil.py", "app\\counters.py", "allium.lock",
    "tests/conftest.py", "app/__init__.py", "app/alarms.py", "tests/test_alarms.py", "app/counters_" + "x" * 300
    + ".py", "app/counters_\x00.py", "", ".", "app/", "app/counters.py/x.py", "app/counters_link.py",
    "app/counters_\udcff.py", "app/counters_ü.py", "tests/../app/counters.py", "./app/counters.py",
]
HOSTILE_CONTENT = ["", "def broken(:\n", "\x00", "x = '\ud800'\n", "#" * 5000, "(" * 10_000, "é" * 100,
                   "import os\nos._exit(3)\n", "\ufeffx = 1\n", "x = 1\r\n"]


def markdown(request_hash: str | None, files: list[tuple[str, str]], notes: str = "notes") -> str:
    head = f"request-hash: {request_hash}\n" if request_hash else ""
    body = "".join(f"### file: {p}\n````python\n{c}{'' if c.endswith(chr(10)) or not c else chr(10)}````\n\n"
                   for p, c in files)
    return head + notes + "\n\n" + body


def hostile(rng: random.Random, request_hash: str) -> tuple[str, bytes]:
    """One answer file: (name, bytes)."""
    files = list(COUNTERS.items())
    kind = rng.randrange(9)
    if kind == 0:  # a hostile path added or swapped in
        path = rng.choice(HOSTILE_PATHS)
        files.insert(rng.randrange(len(files) + 1), (path, "x = 1\n"))
        if rng.random() < 0.5:
            files.pop(rng.randrange(len(files)))
    elif kind == 1:  # hostile content for one file
        i = rng.randrange(len(files))
        files[i] = (files[i][0], rng.choice(HOSTILE_CONTENT))
    elif kind == 2:  # a file missing, or every file, or one twice
        choice = rng.randrange(3)
        files = [] if choice == 0 else files[:1] if choice == 1 else files + files[:1]
    elif kind == 3:  # the request hash missing, wrong, short or foreign
        claim = rng.choice([None, "", "0" * 64, request_hash[:6], request_hash.upper(), "zz" + request_hash])
        return "counters.response.md", markdown(claim, files).encode("utf-8", "surrogatepass")
    if kind <= 3:
        text = markdown(request_hash, files)
        return "counters.response.md", text.encode("utf-8", "surrogatepass")
    if kind == 4:  # the JSON form, possibly mangled in its structure
        doc: object = {"request_hash": request_hash, "files": [{"path": p, "content": c} for p, c in files]}
        doc = rng.choice([doc, [doc], {"request_hash": request_hash, "files": "app/counters.py"},
                          {"request_hash": request_hash, "files": [["app/counters.py", "x"]]},
                          {"request_hash": request_hash, "files": [{"path": None, "content": 1}]},
                          {"request_hash": [request_hash], "files": []}, None, 5])
        return "counters.response.json", json.dumps(doc).encode()
    data = bytearray(markdown(request_hash, files).encode())
    if kind == 5:  # random byte flips
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 6:  # truncated
        del data[rng.randrange(len(data)):]
    elif kind == 7:  # random lines duplicated or dropped
        lines = data.split(b"\n")
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines.insert(i, lines[i])
            else:
                del lines[i]
        data = bytearray(b"\n".join(lines))
    else:  # random garbage, or a JSON file that is not JSON
        garbage = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        return rng.choice(["counters.response.md", "counters.response.json"]), garbage
    return "counters.response.md", bytes(data)


@pytest.fixture
def small_caps(monkeypatch) -> None:
    # Caps small enough for random answers to cross them now and then.
    monkeypatch.setattr(answers, "MAX_FILE_BYTES", 4096)
    monkeypatch.setattr(answers, "MAX_ANSWER_BYTES", 6144)
    monkeypatch.setattr(exchange, "MAX_RESPONSE_BYTES", 8192)
    monkeypatch.setattr(runner, "_check_tests_collect", lambda root: None)


def test_random_and_hostile_exchange_answers_never_traceback_or_touch_output(tmp_path: Path, plan, small_caps,
                                                                              monkeypatch) -> None:
    pristine = tmp_path / "pristine"
    Generator(plan, Scripted(GOOD), TranscriptStore(tmp_path / "t0"), pristine, jobs=1).run(list(plan.units))
    # A planted symlink in the output must never be written through either.
    outside = tmp_path / "outside.py"
    outside.write_text("SAFE = 1\n")
    (pristine / "app" / "counters_link.py").symlink_to(outside)
    before = file_tree(pristine)
    rng = random.Random(SEED)
    requests = Generator(plan, Scripted(GOOD), TranscriptStore(tmp_path / "t0"), pristine).requests(
        [plan.unit("counters")])
    request_hash = requests["counters"].request_hash()
    # Rendering the prompt is the slow part of a round and is not what is fuzzed.
    monkeypatch.setattr(Generator, "requests", lambda self, units: {u.name: requests[u.name] for u in units})
    outcomes = {"accepted": 0, "refused": 0}
    out = tmp_path / "generated"
    for round_ in range(ROUNDS):
        name, data = hostile(rng, request_hash)
        folder = tmp_path / "exchange"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / name).write_bytes(data)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(pristine, out, symlinks=True)
        store = TranscriptStore(tmp_path / "t" / str(round_))
        try:
            Generator(plan, ExchangeProvider(folder), store, out, jobs=1).run([plan.unit("counters")])
        except AlliumError as exc:
            outcomes["refused"] += 1
            assert str(exc).strip(), name
            assert file_tree(out) == before, (round_, name, data[:200], str(exc))
            # A sound answer refused only because of the planted link stays recorded: the
            # fault is the output folder's, and a rerun after removing the link reuses it.
            assert list(store) == [] or "is a symlink" in str(exc), (round_, str(exc))
        else:
            outcomes["accepted"] += 1
            assert len(list(store)) == 1
        assert outside.read_text() == "SAFE = 1\n"
        assert not (tmp_path / "escape.py").exists()
    # The mix is meaningful: most answers are refused, some get through.
    assert outcomes["refused"] > ROUNDS // 2 and outcomes["accepted"] > 0, outcomes
