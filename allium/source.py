"""Source text and the mapping from offsets to human positions.

Everything downstream (AST spans, diagnostics, carets) speaks in character
offsets into a :class:`SourceFile`; this module is the one place that turns
those into 1-based lines and columns and into UTF-8 byte offsets.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import cached_property, partial
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple


class Position(NamedTuple):
    line: int  # 1-based
    column: int  # 1-based, in characters
    offset: int  # 0-based character offset
    byte_offset: int  # 0-based UTF-8 byte offset


_new_position = partial(tuple.__new__, Position)  # Position(...) without NamedTuple's Python __new__


class Span(tuple):
    """A half-open range of characters in one file: `file`, `start`, `end`.

    Stored flat, as (file, start line, column, offset, byte offset, end
    line, column, offset, byte offset): the parser makes one span per AST
    node, and one tuple of atoms is made in a fraction of the time of a span
    holding two positions, and drops out of the cyclic GC's scans.  `start`
    and `end` build their Position when asked.  Equality, hashing and order
    are the tuple's, so they follow (file, start, end).
    """

    __slots__ = ()

    def __new__(cls, file: str, start: Position, end: Position) -> Span:
        return tuple.__new__(cls, (file, *start, *end))

    def __getnewargs__(self) -> tuple[str, Position, Position]:  # pickle and copy
        return self.file, self.start, self.end

    file = property(itemgetter(0), doc="the file's path, as given to SourceFile")
    line = property(itemgetter(1), doc="the start's line")
    column = property(itemgetter(2), doc="the start's column")

    @property
    def start(self) -> Position:
        return _new_position(self[1:5])

    @property
    def end(self) -> Position:
        return _new_position(self[5:9])

    def __repr__(self) -> str:
        return f"Span(file={self.file!r}, start={self.start!r}, end={self.end!r})"

    def to_json(self) -> dict[str, object]:
        _, line, col, offset, byte_offset, end_line, end_col, end_offset, end_byte_offset = self
        return {
            "file": self.file,
            "line": line,
            "col": col,
            "end_line": end_line,
            "end_col": end_col,
            "offset": offset,
            "end_offset": end_offset,
            "byte_offset": byte_offset,
            "end_byte_offset": end_byte_offset,
        }


@dataclass(frozen=True)
class SourceFile:
    path: str
    text: str
    _line_starts: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = [0]
        text = self.text
        find = text.find
        i = find("\n")
        while i != -1:
            starts.append(i + 1)
            i = find("\n", i + 1)
        object.__setattr__(self, "_line_starts", starts)

    @classmethod
    def read(cls, path: str | Path) -> SourceFile:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8-sig", errors="replace")
        return cls(str(path), text.replace("\r\n", "\n"))

    @property
    def line_starts(self) -> list[int]:
        """Offset of the first character of each line (shared, do not modify)."""
        return self._line_starts

    @cached_property
    def is_ascii(self) -> bool:
        return self.text.isascii()

    def position(self, offset: int) -> Position:
        offset = max(0, min(offset, len(self.text)))
        index = bisect.bisect_right(self._line_starts, offset) - 1
        line_start = self._line_starts[index]
        byte_offset = offset if self.is_ascii else self.byte_offset(offset, index + 1)
        return Position(index + 1, offset - line_start + 1, offset, byte_offset)

    def byte_offset(self, offset: int, line: int) -> int:
        """The UTF-8 byte offset of character `offset`, which is on (1-based) `line`.

        Most lines of a file that is not all ASCII still are, and there bytes
        and characters advance together: only a line with other characters
        is encoded, and only up to `offset`.
        """
        byte_starts, ascii_lines = self._line_bytes
        index = line - 1
        line_start = self._line_starts[index]
        if ascii_lines[index]:
            return byte_starts[index] + offset - line_start
        return byte_starts[index] + len(self.text[line_start:offset].encode("utf-8", "surrogatepass"))

    @cached_property
    def _line_bytes(self) -> tuple[list[int], list[bool]]:
        """Each line's UTF-8 byte offset, and whether the line is all ASCII."""
        text, starts = self.text, self._line_starts
        byte_starts, ascii_lines = [0], []
        for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
            line = text[start:end]
            ascii_lines.append(line.isascii())
            size = len(line) if ascii_lines[-1] else len(line.encode("utf-8", "surrogatepass"))
            byte_starts.append(byte_starts[-1] + size)
        return byte_starts, ascii_lines

    def span(self, start: int, end: int) -> Span:
        return Span(self.path, self.position(start), self.position(max(start, end)))

    def line_text(self, line: int) -> str:
        if not 1 <= line <= len(self._line_starts):
            return ""
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start:] if end == -1 else self.text[start:end]

    @property
    def line_count(self) -> int:
        return len(self._line_starts)
