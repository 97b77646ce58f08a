"""Safe writes: model-supplied files are staged, checked, then swapped in whole.

The output folder (``generated/``) is never written in place. A run works on
a staging copy next to it (``.generated.staging``); every path the model asks
for is checked before anything is written (no absolute paths, no ``..``, no
writing through a symlink, never the lockfile, only inside the unit's own
area), every ``.py`` file must byte-compile, and only then does
:meth:`StagedOutput.commit` swap the staging folder in:

1. rename ``generated`` to ``.generated.old``;
2. rename the staging folder to ``generated``;
3. remove ``.generated.old``.

Renames within one folder are atomic, so at every instant one complete tree
exists: ``generated`` itself, or (between steps 1 and 2) ``.generated.old``.
If step 2 fails the old tree is renamed back. If the process dies between the
steps, :func:`recover` (called by every new ``StagedOutput``) puts the old
tree back.

Two runs never share an output folder at the same time: a ``StagedOutput``
(and ``allium generate`` for its whole run) holds :class:`OutputLock`, an
exclusive lock on ``.generated.lock`` next to the folder; a second run is
refused with a message rather than deleting the first one's staging folder.
An output that is a symlink is followed once, on purpose: the folder it
points to is the one staged and swapped (so the link keeps working); a
dangling link, or one to something that is not a folder, is refused.
"""

from __future__ import annotations

import os
import py_compile
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Protocol

from allium.errors import AlliumError
from allium.generate.lockfile import LOCKFILE_NAME


class UnsafePathError(AlliumError):
    """A model-supplied path that would write outside the unit's output area."""

    def __init__(self, path: str, unit: str, reason: str) -> None:
        super().__init__(f"unit {unit!r}: refusing to write {path!r}: {reason}")
        self.path = path
        self.unit = unit
        self.reason = reason


class OutputCheckError(AlliumError):
    """Staged output failed a check (a .py file that does not compile)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("generated output failed its checks; nothing was changed:\n  "
                         + "\n  ".join(problems))
        self.problems = problems


class OutputArea(Protocol):
    """The part of the output a unit may write (see ``allium.generate.units.Unit``)."""

    @property
    def name(self) -> str: ...

    def allows(self, path: str) -> bool: ...


# ---------------------------------------------------------------- path checks


def normalise(path: str, unit: str) -> str:
    """The model's path as a clean relative '/'-path, or UnsafePathError.

    Deliberately strict: ``..`` is refused even when it would stay inside the
    area (``a/../b``), since a legitimate answer never needs it."""
    if not path or "\x00" in path:
        raise UnsafePathError(path, unit, "empty path or NUL character")
    if "\\" in path:
        raise UnsafePathError(path, unit, "backslashes are not path separators here")
    pure = PurePosixPath(path)
    if pure.is_absolute() or (len(path) > 1 and path[1] == ":"):
        raise UnsafePathError(path, unit, "absolute path")
    parts = [p for p in pure.parts if p != "."]
    if ".." in parts:
        raise UnsafePathError(path, unit, "path contains '..'")
    if not parts:
        raise UnsafePathError(path, unit, "path names no file")
    return "/".join(parts)


def check_path(path: str, area: OutputArea, root: Path) -> Path:
    """The file under ``root`` that ``path`` may write, after every safety check."""
    clean = normalise(path, area.name)
    if PurePosixPath(clean).name == LOCKFILE_NAME:
        raise UnsafePathError(path, area.name, "the lockfile belongs to allium")
    if not area.allows(clean):
        raise UnsafePathError(path, area.name, "outside the unit's output area")
    target = root.joinpath(*clean.split("/"))
    _refuse_symlinks(path, area.name, root, target)
    return target


def _refuse_symlinks(path: str, unit: str, root: Path, target: Path) -> None:
    # Any symlink on the way (or at the target) could point anywhere; the
    # generator never creates one, so refusing them all is simplest and safe.
    current = root
    for part in target.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise UnsafePathError(path, unit, f"{current.relative_to(root)} is a symlink")
    resolved_root = root.resolve()
    if not target.resolve().is_relative_to(resolved_root):  # belt and braces
        raise UnsafePathError(path, unit, "resolves outside the output folder")


# ---------------------------------------------------------------- the output folder


class OutputBusy(AlliumError):
    """Another run holds the output folder's lock."""


def resolve_output(output: str | os.PathLike[str]) -> Path:
    """The folder to stage and swap: ``output`` itself, or the folder a symlinked output names."""
    path = Path(output).absolute()
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            raise AlliumError(f"{path} is a symlink to {target}, which does not exist; create that "
                              "folder or remove the link")
        if not target.is_dir():
            raise AlliumError(f"{path} is a symlink to {target}, which is not a folder")
        return target
    if path.exists() and not path.is_dir():
        raise AlliumError(f"{path} exists and is not a folder")
    return path


def lock_file(output: Path) -> Path:
    return output.parent / f".{output.name}.lock"


class OutputLock:
    """An exclusive, non-blocking lock on one output folder, re-entrant within a process.

    The lock file stays behind (removing it would race with a run taking it);
    the operating system drops the lock when its holder exits, however it dies."""

    _held: dict[Path, list[int]] = {}  # lock file -> [fd, depth]
    _guard = threading.Lock()

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.path = lock_file(resolve_output(output))

    def __enter__(self) -> OutputLock:
        with self._guard:
            held = self._held.get(self.path)
            if held is not None:
                held[1] += 1
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            if not _try_lock(fd):
                os.close(fd)
                raise OutputBusy(f"another allium run is writing {self.path.parent / self.path.name[1:-5]} "
                                 f"(it holds {self.path}); wait for it to finish, then run again")
            self._held[self.path] = [fd, 1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        with self._guard:
            held = self._held.get(self.path)
            if held is None:
                return
            held[1] -= 1
            if held[1] == 0:
                del self._held[self.path]
                os.close(held[0])  # closing the descriptor releases the lock


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- staging


def staging_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.staging"


def backup_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.old"


def recover(output: str | os.PathLike[str]) -> str | None:
    """Repair what an interrupted commit left behind; say what was done.

    * output missing, backup present: the crash came between the renames,
      so the old tree goes back;
    * both present: the swap finished but cleanup did not; drop the backup;
    * a stale staging folder is always discarded (it was never committed).
    """
    out = Path(output)
    backup, staging = backup_dir(out), staging_dir(out)
    done = None
    if backup.exists() and not out.exists():
        os.rename(backup, out)
        done = f"restored {out} from an interrupted commit"
    elif backup.exists():
        shutil.rmtree(backup)
        done = f"removed the leftover {backup.name}"
    if staging.exists():
        shutil.rmtree(staging)
    return done


class StagedOutput:
    """A staging copy of the output folder, written unit by unit, swapped in whole.

    Use as a context manager: leaving with an exception discards the staging
    copy and leaves the output untouched; :meth:`commit` must be called
    explicitly once the whole run has succeeded."""

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.output = resolve_output(output)
        self._lock = OutputLock(self.output).__enter__()
        try:
            self.recovered = recover(self.output)
            self.root = staging_dir(self.output)
            self.written: list[str] = []
            self._open = True
            if self.output.exists():
                # Start from the current output so units not regenerated are kept.
                shutil.copytree(self.output, self.root, symlinks=True)
            else:
                self.root.mkdir(parents=True)
        except BaseException:
            self._lock.release()
            raise

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._open:
            self.discard()

    # ------------------------------------------------------------ writing

    def write(self, area: OutputArea, path: str, content: str) -> str:
        """Stage one file; returns its clean relative path."""
        self._require_open()
        target = check_path(path, area, self.root)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8", newline="")
        except (OSError, UnicodeEncodeError) as exc:  # a name too long, a folder in the way...
            raise OutputCheckError([f"{path}: cannot be written: {getattr(exc, 'strerror', None) or exc}"]) from None
        clean = target.relative_to(self.root).as_posix()
        self.written.append(clean)
        return clean

    def write_unit(self, area: OutputArea, files: Iterable[tuple[str, str]]) -> list[str]:
        """Replace everything the unit owned with ``files``.

        Every path is checked before any is written, so one bad path stages
        nothing for the unit."""
        self._require_open()
        files = list(files)
        for path, _ in files:
            check_path(path, area, self.root)
        self._clear_area(area)
        return [self.write(area, path, content) for path, content in files]

    def write_own(self, relative: str, content: str) -> None:
        """A file allium itself owns (the lockfile, scaffolding): not model input."""
        self._require_open()
        target = self.root.joinpath(*normalise(relative, "allium").split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8", newline="")

    def _clear_area(self, area: OutputArea) -> None:
        # Files a unit no longer writes must not linger from an earlier run.
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.is_symlink() and area.allows(rel):
                path.unlink()

    # ------------------------------------------------------------ checking and committing

    def check(self) -> None:
        """Every staged .py must byte-compile; OutputCheckError lists those that do not."""
        problems: list[str] = []
        # Bytecode goes to a throwaway folder so no __pycache__ lands in the output.
        with tempfile.TemporaryDirectory(prefix="allium-pyc-") as scratch:
            for i, path in enumerate(sorted(self.root.rglob("*.py"))):
                try:
                    py_compile.compile(str(path), cfile=os.path.join(scratch, f"{i}.pyc"),
                                       doraise=True)
                except py_compile.PyCompileError as exc:
                    problems.append(f"{path.relative_to(self.root).as_posix()}: {exc.msg.strip()}")
        if problems:
            raise OutputCheckError(problems)

    def commit(self) -> None:
        """Check, then swap the staging folder in (see the module docstring)."""
        self._require_open()
        try:
            self.check()
        except OutputCheckError:
            self.discard()
            raise
        backup = backup_dir(self.output)
        had_output = self.output.exists()
        if had_output:
            os.rename(self.output, backup)
        try:
            os.rename(self.root, self.output)
        except BaseException:
            if had_output and not self.output.exists():
                os.rename(backup, self.output)
            raise
        self._open = False
        try:
            if had_output:
                shutil.rmtree(backup, ignore_errors=True)
        finally:
            self._lock.release()

    def discard(self) -> None:
        try:
            if self.root.exists():
                shutil.rmtree(self.root)
        finally:
            if self._open:
                self._lock.release()
            self._open = False

    def _require_open(self) -> None:
        if not self._open:
            raise AlliumError("this staged output was already committed or discarded")
