"""generated/allium.lock: stable JSON, round trips, staleness and hand edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from allium.generate import lockfile
from allium.generate.lockfile import (HandEdit, Lockfile, LockfileError, UnitLock,
                                      changed_spec_files, hand_edits, load, removed_units, save,
                                      stale_units, unit_entry)
from allium.providers.base import Usage

CORE = {"pkg/core.py": "A = 1\n", "tests/test_core.py": "def test_a():\n    pass\n"}


def _lock() -> Lockfile:
    usage = Usage(input_tokens=1200, output_tokens=3000, cache_creation_input_tokens=0,
                  cache_read_input_tokens=40_000)
    core = unit_entry(spec_slice="s-core", request_hash="r-core", files=CORE,
                      transcript="r-core", model="claude-sonnet-4-5", usage=usage)
    api = UnitLock("s-api", "r-api", {"pkg/api.py": lockfile.sha256_text("B = 2\n")},
                   "r-api", "unpriced-model", Usage(10, 30, 20, 0), None)
    return Lockfile("pkg", {"specs/core.allium": "h1", "specs/api.allium": "h2"},
                    {"core": core, "api": api})


def test_save_is_stable_sorted_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "generated" / "allium.lock"
    save(_lock(), path)
    text = path.read_text()
    assert text.endswith("}\n")
    data = json.loads(text)
    assert list(data) == sorted(data) and list(data["units"]) == ["api", "core"]
    assert data["format"] == 1
    assert load(path) == _lock()
    save(load(path), path)
    assert path.read_text() == text  # byte-stable
    assert [p.name for p in path.parent.iterdir()] == ["allium.lock"]  # no temp files left


def test_unit_entry_records_hashes_tokens_and_cost() -> None:
    core = _lock().units["core"]
    assert core.files["pkg/core.py"] == lockfile.sha256_text("A = 1\n")
    assert core.usage == Usage(input_tokens=1200, output_tokens=3000, cache_creation_input_tokens=0,
                               cache_read_input_tokens=40_000)
    assert core.to_dict()["tokens"] == {"input": 1200, "cache_write": 0, "cached": 40_000, "output": 3000}
    expected = (1200 * 3.0 + 3000 * 15.0 + 40_000 * 0.30) / 1_000_000
    assert core.cost_usd == pytest.approx(expected)
    assert _lock().units["api"].cost_usd is None
    assert _lock().total_cost_usd == pytest.approx(expected)


def test_missing_lockfile_is_none(tmp_path: Path) -> None:
    assert load(tmp_path / "allium.lock") is None


@pytest.mark.parametrize("text", ["not json", "[]", '{"format": 99}', '{"format": 1, "units": {"x": {}}}'])
def test_malformed_lockfile_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "allium.lock"
    path.write_text(text)
    with pytest.raises(LockfileError, match="allium.lock"):
        load(path)


def test_stale_units() -> None:
    lock = _lock()
    current = {"core": "s-core", "api": "s-api-edited", "new": "s-new"}
    assert stale_units(lock, current) == ["api", "new"]
    assert stale_units(None, current) == ["core", "api", "new"]
    assert stale_units(lock, {"core": "s-core", "api": "s-api"}) == []
    assert removed_units(lock, {"core": "s-core"}) == ["api"]


def test_changed_spec_files() -> None:
    lock = _lock()
    assert changed_spec_files(lock, {"specs/core.allium": "h1", "specs/api.allium": "h2"}) == []
    assert changed_spec_files(lock, {"specs/core.allium": "h1*", "specs/new.allium": "h3"}) == [
        "specs/api.allium", "specs/core.allium", "specs/new.allium"]


def test_hand_edits(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    for rel, content in {**CORE, "pkg/api.py": "B = 2\n"}.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(content.encode())
    lock = _lock()
    assert hand_edits(lock, out) == []
    (out / "pkg" / "core.py").write_text("A = 1  # tweaked by hand\n")
    (out / "pkg" / "api.py").unlink()
    assert hand_edits(lock, out) == [HandEdit("api", "pkg/api.py", "missing"),
                                     HandEdit("core", "pkg/core.py", "modified")]
    assert hand_edits(None, out) == []


def test_with_and_without_units() -> None:
    lock = _lock()
    entry = lock.units["api"]
    updated = lock.without_units({"api"}).with_unit("api2", entry)
    assert set(updated.units) == {"core", "api2"} and set(lock.units) == {"core", "api"}


def test_spec_file_hashes(tmp_path: Path) -> None:
    (tmp_path / "a.allium").write_text("x")
    assert lockfile.spec_file_hashes(tmp_path, ["a.allium"]) == {"a.allium": lockfile.sha256_text("x")}
