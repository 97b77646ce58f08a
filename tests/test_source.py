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


# A spec as some editors save it: byte-order mark, CRLF line ends, non-ASCII.
SAVED = (
    "\ufeff-- allium: 3\r\n-- Préférences\r\nentity Cafe {\r\n    nom: String  -- é\r\n    n: Integer\r\n}\r\n"
    'rule Rename {\r\n    when: Renamed(c)\r\n    ensures: c.nom = "Crème brûlée"\r\n}\r\n'
)


def test_read_keeps_the_file_as_written_so_byte_offsets_index_the_file(tmp_path) -> None:
    from allium.syntax import parse_file

    path = tmp_path / "saved.allium"
    path.write_bytes(SAVED.encode("utf-8"))
    raw = path.read_bytes()
    result = parse_file(str(path))
    assert result.ok and not result.diagnostics
    source = result.source
    assert source.text == SAVED[1:] and source.byte_base == 3  # the mark is not text; CRLF stays
    nodes = list(result.module.walk())
    assert len(nodes) > 5
    for node in nodes:
        span = node.span
        chars = source.text[span.start.offset : span.end.offset]
        assert raw[span.start.byte_offset : span.end.byte_offset].decode("utf-8") == chars, node
        # Lines and columns as an editor shows them (the mark is not a column).
        line = SAVED[1:].split("\r\n")[span.start.line - 1]
        assert line[span.start.column - 1 :].startswith(chars.split("\r\n")[0]), node
    [entity] = result.module.entities
    assert entity.name == "Cafe" and entity.doc_comment == "Préférences"
    assert [f.name for f in entity.fields] == ["nom", "n"]


def test_line_text_leaves_out_a_carriage_return() -> None:
    source = SourceFile("x.allium", "a\r\nb\r\nc")
    assert [source.line_text(n) for n in (1, 2, 3)] == ["a", "b", "c"]


def test_bytes_that_are_not_utf8_are_an_error_at_their_place(tmp_path) -> None:
    from allium.syntax import parse_file

    path = tmp_path / "latin1.allium"
    path.write_bytes("-- allium: 3\nentity A {\n    x: String  -- café\n}\n".encode("latin-1"))
    result = parse_file(str(path))
    [diag] = result.diagnostics
    assert diag.code == "allium.source.encoding" and "0xe9" in diag.message
    assert (diag.span.start.line, diag.span.start.column) == (3, 22)
    assert diag.span.start.byte_offset == path.read_bytes().index(b"\xe9")  # '?' is one byte, as was 0xe9
    assert result.module is not None and result.source.text.count("?") == 1  # the rest still parses


def test_parse_text_sets_a_byte_order_mark_aside_as_read_does() -> None:
    from allium.syntax import parse_text

    result = parse_text("\ufeff-- allium: 3\nentity A {}\n")
    assert result.ok and not result.diagnostics
    [entity] = result.module.entities
    assert entity.span.start.offset == 13 and entity.span.start.byte_offset == 16
    assert entity.span.start.column == 1
