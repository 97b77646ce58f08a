"""allium.source: positions, and spans stored as one flat tuple."""

from __future__ import annotations

import copy
import pickle

from allium.source import Position, SourceFile, Span

START, END = Position(2, 3, 10, 12), Position(4, 1, 30, 33)


def test_span_reads_back_its_positions() -> None:
    span = Span("a.allium", START, END)
    assert (span.file, span.start, span.end) == ("a.allium", START, END)
    assert (span.line, span.column) == (2, 3)
    assert span.start.byte_offset == 12 and span.end.offset == 30


def test_spans_compare_and_sort_as_file_then_start_then_end() -> None:
    a = Span("a", Position(1, 9, 8, 8), Position(9, 1, 90, 90))
    b = Span("a", Position(2, 1, 12, 12), Position(2, 5, 16, 16))
    c = Span("b", Position(1, 1, 0, 0), Position(1, 2, 1, 1))
    assert sorted([c, b, a]) == [a, b, c]
    assert Span("a", START, END) == Span("a", START, END)
    assert hash(Span("a", START, END)) == hash(Span("a", START, END))
    assert Span("a", START, END) != Span("a", START, START)


def test_span_survives_pickle_and_copy() -> None:
    span = Span("a.allium", START, END)
    for twin in (pickle.loads(pickle.dumps(span)), copy.copy(span), copy.deepcopy(span)):
        assert type(twin) is Span and twin == span and twin.end == END


def test_span_repr_and_json_name_the_fields() -> None:
    span = Span("a.allium", START, END)
    assert repr(span) == f"Span(file='a.allium', start={START!r}, end={END!r})"
    assert span.to_json() == {
        "file": "a.allium", "line": 2, "col": 3, "end_line": 4, "end_col": 1,
        "offset": 10, "end_offset": 30, "byte_offset": 12, "end_byte_offset": 33,
    }  # fmt: skip


def test_source_span_counts_lines_columns_and_utf8_bytes() -> None:
    source = SourceFile("x.allium", "ab\nçd -- é\n")
    span = source.span(3, 5)  # "çd"
    assert span.start == Position(2, 1, 3, 3)
    assert span.end == Position(2, 3, 5, 6)  # ç is two bytes
    assert source.span(5, 2).end == Position(2, 3, 5, 6)  # an end before the start clamps to it


def test_byte_offsets_match_encoding_the_text_up_to_each_character() -> None:
    # tests/syntax/test_engine.py compares the parser's spans with
    # SourceFile.span, which shares byte_offset; this is the independent check.
    text = "ab\nçd -- é\n\n☃x\nplain line\n\ttab é☃ end"
    source = SourceFile("x.allium", text)
    for offset in range(len(text) + 1):
        assert source.position(offset).byte_offset == len(text[:offset].encode("utf-8")), offset
