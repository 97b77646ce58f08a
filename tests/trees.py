"""A folder's files as {relative path: bytes}, for comparing whole output trees."""

from __future__ import annotations

from pathlib import Path

_NOISE = ("__pycache__", ".pytest_cache", ".hypothesis")  # left by importing, collecting or running the tests, not written by allium


def file_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part in _NOISE for part in p.parts)
    }
