"""Files as they were at a git revision: the 'before' side of a fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

from allium.errors import UsageError


def _git(root: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    except FileNotFoundError:
        raise UsageError("git is not installed; allium fix reads the previous state from git") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(f"git {' '.join(args)}: {message[-1] if message else 'failed'}")
    return done.stdout


def files_at(root: Path, rev: str, folder: str) -> dict[str, bytes]:
    """Every file under `folder` (relative to the repository root) at `rev`, by path."""
    listing = _git(root, "ls-tree", "-r", "-z", "--name-only", rev, "--", folder)
    names = [n for n in listing.decode().split("\0") if n]
    return {name: _git(root, "show", f"{rev}:{name}") for name in names}


def spec_diff(root: Path, rev: str, folder: str) -> str:
    """The unified diff of `folder` between `rev` and the working tree."""
    return _git(root, "diff", "--no-color", rev, "--", folder).decode()


def repo_root(start: Path) -> Path:
    return Path(_git(start, "rev-parse", "--show-toplevel").decode().strip())
