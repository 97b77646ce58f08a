"""Where a generated package lives: its output root, lockfile and tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from allium.errors import UsageError

LOCKFILE_NAME = "allium.lock"  # same name allium.generate.writer refuses to let models write


@dataclass(frozen=True, slots=True)
class PackageLayout:
    root: Path  # the output root (normally `generated/`): node ids and lockfile paths are relative to it
    tests_dir: Path
    lockfile: Path | None

    @property
    def name(self) -> str:
        return self.root.name


def find_package(path: str | Path = "generated") -> PackageLayout:
    """The package at ``path``: an output root with ``allium.lock``, a project with
    ``generated/allium.lock``, or any directory of tests (then without a lockfile)."""
    given = Path(path)
    if given.is_file() and given.name == LOCKFILE_NAME:
        given = given.parent
    if not given.is_dir():
        raise UsageError(f"no package at {path}: not a directory")
    for root in (given, given / "generated"):
        if (root / LOCKFILE_NAME).is_file():
            return _layout(root, root / LOCKFILE_NAME)
    return _layout(given, None)


def _layout(root: Path, lockfile: Path | None) -> PackageLayout:
    root = root.resolve()
    tests = root / "tests"
    return PackageLayout(root, tests if tests.is_dir() else root, lockfile)
