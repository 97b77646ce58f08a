"""Source text and the mapping from offsets to human positions.

Everything downstream (AST spans, diagnostics, carets) speaks in character
offsets into a :class:`SourceFile`; this module is the one place that turns
those into 1-based lines and columns and into UTF-8 byte offsets.

A file's text is what an editor shows: a UTF-8 byte-order mark is not part
of it, and line ends stay as written (`\r\n` too), so character offsets
count from after the mark and byte offsets index the file itself.
"""

from __future__ import annotations

import bisect
import codecs
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
    # Bytes before `text` in its file: 3 for a byte-order mark.
    byte_base: int = 0
    # Where the file stopped being UTF-8: (character offset, the byte there).
    # The text has a '?' in its place; the parser reports it.
    undecodable: tuple[int, int | None] | None = None
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
        return cls.from_text(str(path), raw.decode("utf-8", errors="surrogateescape"))

    @classmethod
    def from_text(cls, path: str, text: str) -> SourceFile:
        """`text` as decoded with surrogateescape (or any str): a leading byte-order
        mark is set aside and each undecodable byte becomes '?', the first noted.

        One character of one byte per bad byte, so that offsets after it
        still index the file.
        """
        base = 0
        if text.startswith("\ufeff"):
            text, base = text[1:], len(codecs.BOM_UTF8)
        undecodable = None
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                # surrogateescape keeps a bad byte b as the lone surrogate
                # U+DC00+b; any other lone surrogate has no bytes either.
                char = ord(text[exc.start])
                undecodable = (exc.start, char - 0xDC00 if 0xDC80 <= char <= 0xDCFF else None)
                text = text.encode("utf-8", "replace").decode("utf-8")  # one '?' per surrogate
        return cls(path, text, base, undecodable)

    @property
    def line_starts(self) -> list[int]:
        """Offset of the first character of each line (shared, do not modify)."""
        return self._line_starts

    @cached_property
    def chars_are_bytes(self) -> bool:
        """Is every character offset also the byte offset (ASCII, nothing before it)?"""
        return not self.byte_base and self.text.isascii()

    def position(self, offset: int) -> Position:
        offset = max(0, min(offset, len(self.text)))
        index = bisect.bisect_right(self._line_starts, offset) - 1
        line_start = self._line_starts[index]
        byte_offset = offset if self.chars_are_bytes else self.byte_offset(offset, index + 1)
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
        byte_starts, ascii_lines = [self.byte_base], []
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
        return self.text[start:] if end == -1 else self.text[start:end].removesuffix("\r")

    @property
    def line_count(self) -> int:
        return len(self._line_starts)
