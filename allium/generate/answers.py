"""What a unit's answer must be before it is recorded or written.

Model output is untrusted input, and people answering through the exchange
provider make mistakes. An answer is accepted only if it writes *every* file
the unit owns (``Unit.files`` is the source of truth: a refusal or a
text-only reply must not delete the unit's module and tests), each path once,
each path safe and inside the unit's area, each file valid text within the
size caps, and each ``.py`` file compiles. Anything else is refused with one
line that says what is wrong; nothing is recorded as a transcript and
``generated/`` is not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Protocol

from allium.errors import AlliumError
from allium.generate.lockfile import LOCKFILE_NAME
from allium.generate.writer import OutputArea, UnsafePathError, normalise

# Documented in the README. The largest committed file is ~66 KB; a model has
# no business writing megabytes, and a runaway answer must not fill the disk.
MAX_FILE_BYTES = 1 << 20  # 1 MiB per file
MAX_ANSWER_BYTES = 4 << 20  # 4 MiB per answer, all files together
MAX_FILES = 64


class AnswerRejected(AlliumError):
    """An answer that must not be recorded or written; the message says why."""

    def __init__(self, unit: str, reason: str) -> None:
        super().__init__(f"unit {unit!r}: answer refused: {reason}")
        self.unit = unit
        self.reason = reason


class OwningArea(OutputArea, Protocol):
    """An output area that also lists the files it must contain."""

    @property
    def files(self) -> tuple[str, ...]: ...


def check_answer(area: OwningArea, files: Sequence[tuple[str, str]]) -> None:
    """Raise AnswerRejected (or UnsafePathError) unless ``files`` is a whole, safe answer."""
    unit = area.name
    if len(files) > MAX_FILES:
        raise AnswerRejected(unit, f"{len(files)} files; at most {MAX_FILES} are accepted")
    seen: set[str] = set()
    total = 0
    for path, content in files:
        clean = check_answer_path(path, area)
        if clean in seen:
            raise AnswerRejected(unit, f"it writes {clean} more than once")
        seen.add(clean)
        size = _check_text(unit, clean, content)
        total += size
        if total > MAX_ANSWER_BYTES:
            raise AnswerRejected(unit, f"the files add up to more than {MAX_ANSWER_BYTES >> 20} MiB")
        if clean.endswith(".py"):
            _check_compiles(unit, clean, content)
    missing = [f for f in area.files if f not in seen]
    if missing:
        what = "no files" if not files else "no " + ", ".join(missing)
        raise AnswerRejected(unit, f"it writes {what}; an answer must write every file the unit owns "
                                   f"({', '.join(area.files)}), so nothing was kept")


def check_answer_path(path: str, area: OutputArea) -> str:
    """The clean form of a model path, refused when unsafe or outside the unit's area."""
    clean = normalise(path, area.name)
    for part in clean.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > 255:
            raise UnsafePathError(path[:80] + "…", area.name, "a path component is longer than 255 bytes")
    if len(clean) > 1024:
        raise UnsafePathError(clean[:80] + "…", area.name, "path longer than 1024 characters")
    if PurePosixPath(clean).name == LOCKFILE_NAME:
        raise UnsafePathError(path, area.name, "the lockfile belongs to allium")
    if not area.allows(clean):
        raise UnsafePathError(path, area.name, "outside the unit's output area")
    _check_encodable(area.name, clean, clean)
    return clean


def _check_text(unit: str, path: str, content: str) -> int:
    if len(content) > MAX_FILE_BYTES:  # before encoding: a character is at least a byte
        raise AnswerRejected(unit, f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB")
    data = _check_encodable(unit, path, content)
    if len(data) > MAX_FILE_BYTES:
        raise AnswerRejected(unit, f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB")
    if "\x00" in content:
        raise AnswerRejected(unit, f"{path} contains a NUL character")
    return len(data)


def _check_encodable(unit: str, path: str, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, from JSON "\ud800" say
        raise AnswerRejected(unit, f"{path!r} is not valid Unicode text (character "
                                   f"{exc.start}: {text[exc.start]!r})") from None


def _check_compiles(unit: str, path: str, content: str) -> None:
    try:
        compile(content, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise AnswerRejected(unit, f"{path}:{exc.lineno or 0}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise AnswerRejected(unit, f"{path} does not compile: {exc}") from None


def with_hint(exc: AlliumError, unit: str, hint: str) -> AnswerRejected:
    """A refusal (of any kind) restated with what the user should do next."""
    if isinstance(exc, AnswerRejected):
        reason = exc.reason
    elif isinstance(exc, UnsafePathError):
        reason = f"refusing to write {exc.path!r}: {exc.reason}"
    else:
        reason = str(exc)
    return AnswerRejected(unit, f"{reason}; {hint}")
