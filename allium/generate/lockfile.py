"""``generated/allium.lock``: what produced the generated files, and from what.

JSON with sorted keys, two-space indent and a final newline, so the same
state always serialises to the same bytes and diffs read well in review::

    {
      "format": 1,
      "package": "ledgerd",
      "spec_files": {"core.allium": "<sha256>", ...},
      "units": {
        "core": {
          "spec_slice": "<sha256 of the unit's spec slice>",
          "request_hash": "<sha256 of the request payload>",
          "transcript": "<transcript id: the request hash in the store>",
          "model": "claude-...",
          "files": {"ledgerd/core.py": "<sha256>", "tests/test_core.py": "<sha256>"},
          "tokens": {"input": 0, "cache_write": 0, "cached": 0, "output": 0},
          "cost_usd": 0.0
        }
      }
    }

``tokens.input`` counts uncached input, ``cache_write`` input written to the
prompt cache, ``cached`` input read from it; together they are the whole
prompt. ``cost_usd`` is null when the model has no known price.

Two questions are answered from it: which units are stale (their spec slice
changed, or they are new) and which outputs were edited by hand since.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from allium.errors import AlliumError
from allium.providers.base import Usage

FORMAT_VERSION = 1
LOCKFILE_NAME = "allium.lock"


class LockfileError(AlliumError):
    """The lockfile exists but cannot be read."""


# The lockfile's names for the token counts of providers.base.Usage.
_TOKEN_KEYS = {
    "input": "input_tokens",
    "cache_write": "cache_creation_input_tokens",
    "cached": "cache_read_input_tokens",
    "output": "output_tokens",
}


def _tokens_to_dict(usage: Usage) -> dict[str, int]:
    return {key: getattr(usage, name) for key, name in _TOKEN_KEYS.items()}


def _tokens_from_dict(data: Mapping[str, Any]) -> Usage:
    return Usage(**{name: int(data.get(key, 0) or 0) for key, name in _TOKEN_KEYS.items()})


@dataclass(frozen=True)
class UnitLock:
    spec_slice: str
    request_hash: str
    files: Mapping[str, str]  # relative output path -> sha256 of its bytes
    transcript: str = ""
    model: str = ""
    usage: Usage = Usage()
    cost_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec_slice": self.spec_slice,
            "request_hash": self.request_hash,
            "files": dict(self.files),
            "transcript": self.transcript,
            "model": self.model,
            "tokens": _tokens_to_dict(self.usage),
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitLock:
        cost = data.get("cost_usd")
        return cls(str(data["spec_slice"]), str(data["request_hash"]),
                   {str(k): str(v) for k, v in data.get("files", {}).items()},
                   str(data.get("transcript", "")), str(data.get("model", "")),
                   _tokens_from_dict(data.get("tokens", {})),
                   None if cost is None else float(cost))


@dataclass(frozen=True)
class Lockfile:
    package: str = ""
    spec_files: Mapping[str, str] = field(default_factory=dict)  # spec path -> sha256
    units: Mapping[str, UnitLock] = field(default_factory=dict)

    def with_unit(self, name: str, entry: UnitLock) -> Lockfile:
        return replace(self, units={**self.units, name: entry})

    def without_units(self, names: set[str]) -> Lockfile:
        return replace(self, units={k: v for k, v in self.units.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "package": self.package,
            "spec_files": dict(self.spec_files),
            "units": {name: u.to_dict() for name, u in self.units.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lockfile:
        if data.get("format") != FORMAT_VERSION:
            raise LockfileError(f"unsupported lockfile format {data.get('format')!r}")
        return cls(str(data.get("package", "")),
                   {str(k): str(v) for k, v in data.get("spec_files", {}).items()},
                   {str(k): UnitLock.from_dict(v) for k, v in data.get("units", {}).items()})

    @property
    def total_cost_usd(self) -> float:
        return sum(u.cost_usd or 0.0 for u in self.units.values())


# ---------------------------------------------------------------- hashing


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str]) -> str:
    return sha256_bytes(Path(path).read_bytes())


def spec_file_hashes(root: str | os.PathLike[str], files: list[str]) -> dict[str, str]:
    """sha256 of each spec file, keyed by its path relative to ``root``."""
    return {f: sha256_file(Path(root) / f) for f in sorted(files)}


def unit_entry(*, spec_slice: str, request_hash: str, files: Mapping[str, str],
               transcript: str, model: str, usage: Usage) -> UnitLock:
    """A unit's lock entry from its answer; ``files`` maps path -> content written."""
    return UnitLock(spec_slice, request_hash,
                    {path: sha256_text(content) for path, content in sorted(files.items())},
                    transcript, model, usage, usage.cost_usd(model))


# ---------------------------------------------------------------- load and save


def dumps(lock: Lockfile) -> str:
    return json.dumps(lock.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def loads(text: str) -> Lockfile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockfileError(f"lockfile is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LockfileError("lockfile is not a JSON object")
    try:
        return Lockfile.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LockfileError(f"lockfile is malformed: {exc!r}") from exc


def load(path: str | os.PathLike[str]) -> Lockfile | None:
    """The lockfile at ``path``, or None if there is none yet."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        return loads(p.read_text(encoding="utf-8"))
    except LockfileError as exc:
        raise LockfileError(f"{p}: {exc}") from exc


def save(lock: Lockfile, path: str | os.PathLike[str]) -> None:
    """Write atomically (temp file + rename), so a reader never sees half a lockfile."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(dumps(lock))
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------- diffs


def locked_files(output: str | os.PathLike[str], entry: UnitLock) -> dict[str, str] | None:
    """A unit's files as the lock recorded them, read from ``output``.

    None when any is missing, unreadable or changed since it was written: a
    file edited by hand must never be passed off to the model as its own
    earlier answer."""
    out: dict[str, str] = {}
    for rel, digest in sorted(entry.files.items()):
        try:
            text = (Path(output) / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        if sha256_text(text) != digest:
            return None
        out[rel] = text
    return out or None


def stale_units(lock: Lockfile | None, current: Mapping[str, str]) -> list[str]:
    """Units (in ``current``'s order) whose slice hash differs from the lock, or are new."""
    locked = lock.units if lock is not None else {}
    return [name for name, slice_hash in current.items()
            if name not in locked or locked[name].spec_slice != slice_hash]


def removed_units(lock: Lockfile | None, current: Mapping[str, str]) -> list[str]:
    """Units in the lock that the current plan no longer has."""
    return sorted(set(lock.units) - set(current)) if lock is not None else []


def changed_spec_files(lock: Lockfile | None, current: Mapping[str, str]) -> list[str]:
    """Spec files added, removed or edited since the lock was written."""
    locked = lock.spec_files if lock is not None else {}
    return sorted(f for f in set(locked) | set(current) if locked.get(f) != current.get(f))


@dataclass(frozen=True)
class HandEdit:
    unit: str
    path: str
    change: str  # "modified" | "missing"


def hand_edits(lock: Lockfile | None, output: str | os.PathLike[str]) -> list[HandEdit]:
    """Owned outputs whose bytes no longer match the lock (edited or deleted by hand)."""
    if lock is None:
        return []
    out = Path(output)
    edits: list[HandEdit] = []
    for name in sorted(lock.units):
        for rel, digest in sorted(lock.units[name].files.items()):
            path = out / rel
            if not path.is_file():
                edits.append(HandEdit(name, rel, "missing"))
            elif sha256_file(path) != digest:
                edits.append(HandEdit(name, rel, "modified"))
    return edits
