"""The exchange provider: requests out as files, answers in as files."""

from __future__ import annotations

import json

import pytest

from allium.providers.exchange import (
    EXCHANGE_MODEL,
    ExchangePending,
    ExchangeProvider,
    ExchangeResponseError,
    file_stem,
)
from allium.providers.base import MalformedToolCallError
from allium.providers.replay import ReplayProvider
from allium.providers.transcripts import RecordingProvider, TranscriptStore
from tests.providers.conftest import PREFIX, make_request

ORDERS = "def place() -> None:\n    pass\n"
TESTS_WITH_FENCE = 'DOC = """\n```python\nexample()\n```\n"""\n'


def response_md(request_hash: str | None = None) -> str:
    head = f"request-hash: {request_hash}\n" if request_hash else ""
    return (f"{head}I assumed orders cannot be empty.\n\n"
            "### file: pkg/orders.py\n```python\n" + ORDERS + "```\n\n"
            "### file: tests/test_orders.py\n\n````python\n" + TESTS_WITH_FENCE + "````\n\n"
            "### file: pkg/__init__.py\n~~~\n~~~\n")


def test_without_an_answer_it_writes_the_request_and_says_what_to_write(tmp_path):
    request = make_request(unit="shop/orders")
    with pytest.raises(ExchangePending) as info:
        ExchangeProvider(tmp_path).complete(request)
    assert info.value.response_path == tmp_path / "shop_orders.response.md"
    assert "shop_orders.response.md" in str(info.value) and info.value.unit == "shop/orders"
    assert json.loads((tmp_path / "shop_orders.request.json").read_text()) == request.to_payload()
    readable = (tmp_path / "shop_orders.request.md").read_text()
    for expected in (request.request_hash(), PREFIX[0].strip(), PREFIX[1].strip(),
                     "Implement the orders module.", "write_file", '"additionalProperties": false',
                     "shop_orders.response.md"):
        assert expected in readable


def test_markdown_answer_becomes_files_and_notes(tmp_path):
    request = make_request()
    (tmp_path / "orders.response.md").write_text(response_md(request.request_hash()))
    response = ExchangeProvider(tmp_path).complete(request)
    assert response.files == (("pkg/orders.py", ORDERS), ("tests/test_orders.py", TESTS_WITH_FENCE),
                              ("pkg/__init__.py", ""))
    assert response.text == "I assumed orders cannot be empty."
    assert (response.stop_reason, response.model) == ("end_turn", EXCHANGE_MODEL)
    calls = [b for b in response.content if b["type"] == "tool_use"]
    assert [c["input"]["path"] for c in calls] == [p for p, _ in response.files]


def test_json_answer_wins_over_markdown(tmp_path):
    (tmp_path / "orders.response.md").write_text(response_md())
    (tmp_path / "orders.response.json").write_text(json.dumps(
        {"request_hash": make_request().request_hash(), "text": "from json",
         "files": [{"path": "a.py", "content": "a = 1\n"}]}))
    response = ExchangeProvider(tmp_path).complete(make_request())
    assert response.files == (("a.py", "a = 1\n"),) and response.text == "from json"


def test_an_answer_to_an_older_request_is_refused(tmp_path):
    (tmp_path / "orders.response.md").write_text(response_md("ab" * 32))
    with pytest.raises(ExchangeResponseError, match="delete it"):
        ExchangeProvider(tmp_path).complete(make_request())


def test_the_request_asks_for_its_hash_and_an_answer_without_one_is_refused(tmp_path):
    request = make_request()
    with pytest.raises(ExchangePending):
        ExchangeProvider(tmp_path).complete(request)
    assert f"request-hash: {request.request_hash()}" in (tmp_path / "orders.request.md").read_text()
    (tmp_path / "orders.response.md").write_text(response_md())
    with pytest.raises(ExchangeResponseError, match=f"start it with the line 'request-hash: {request.request_hash()}'"):
        ExchangeProvider(tmp_path).complete(request)


def test_an_answer_to_the_request_before_a_spec_edit_is_refused(tmp_path):
    old = make_request(prompt="Implement the orders module, version 1.")
    (tmp_path / "orders.response.md").write_text(response_md(old.request_hash()))
    assert ExchangeProvider(tmp_path).complete(old).files
    with pytest.raises(ExchangeResponseError, match="read the new orders.request.md"):
        ExchangeProvider(tmp_path).complete(make_request(prompt="Implement the orders module, version 2."))


def test_a_hash_prefix_of_twelve_digits_in_backticks_is_enough(tmp_path):
    request = make_request()
    (tmp_path / "orders.response.md").write_text(response_md(f"`{request.request_hash()[:12]}`"))
    assert ExchangeProvider(tmp_path).complete(request).files


def test_request_files_are_never_written_through_a_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = tmp_path / "exchange"
    folder.mkdir()
    (folder / "orders.request.md").symlink_to(victim)
    (folder / "orders.request.json").symlink_to(victim)
    with pytest.raises(ExchangePending):
        ExchangeProvider(folder).complete(make_request())
    assert victim.read_text() == "precious\n"
    assert not (folder / "orders.request.md").is_symlink()


@pytest.mark.parametrize("name,data,message", [
    ("orders.response.md", b"request-hash: HASH\n\xff\xfe not utf-8\n", "orders.response.md:2: not UTF-8"),
    ("orders.response.json", b'{"request_hash": "HASH", "files": [{"path": "a.py", "content": "\\ud800"}]}', None),
    ("orders.response.json", b"[" * 100_000, "not a valid response"),
    ("orders.response.json", b'{"request_hash": 5, "files": []}', "does not say which request"),
])
def test_hostile_bytes_are_one_clear_error(tmp_path, name, data, message):
    request = make_request()
    (tmp_path / name).write_bytes(data.replace(b"HASH", request.request_hash().encode()))
    if message is None:  # readable; the generator refuses the content (tests/generate/test_answers.py)
        ExchangeProvider(tmp_path).complete(request)
        return
    with pytest.raises(ExchangeResponseError, match=message):
        ExchangeProvider(tmp_path).complete(request)


def test_an_oversized_or_symlinked_response_is_refused_unread(tmp_path, monkeypatch):
    import allium.providers.exchange as exchange

    monkeypatch.setattr(exchange, "MAX_RESPONSE_BYTES", 1000)
    (tmp_path / "orders.response.md").write_text("x" * 1001)
    with pytest.raises(ExchangeResponseError, match="over 0 MiB are refused|bytes; answers over"):
        ExchangeProvider(tmp_path).complete(make_request())
    (tmp_path / "orders.response.md").unlink()
    (tmp_path / "secret").write_text("request-hash: 00\n")
    (tmp_path / "orders.response.md").symlink_to(tmp_path / "secret")
    with pytest.raises(ExchangeResponseError, match="is a symlink"):
        ExchangeProvider(tmp_path).complete(make_request())


@pytest.mark.parametrize("name,text,message", [
    ("orders.response.md", "### file: a.py\nno fence here\n", "fenced block"),
    ("orders.response.md", "### file: a.py\n```\nnever closed\n", "never closed"),
    ("orders.response.json", '{"files": [{"path": "a.py"}]}', "not a valid response"),
    ("orders.response.json", '{"files": [{"path": 1, "content": "x"}]}', "string path"),
])
def test_broken_answers_are_clear_errors(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ExchangeResponseError, match=message):
        ExchangeProvider(tmp_path).complete(make_request())


def test_empty_path_is_a_malformed_call(tmp_path):
    (tmp_path / "orders.response.json").write_text(json.dumps(
        {"request_hash": make_request().request_hash(), "files": [{"path": "", "content": "x"}]}))
    with pytest.raises(MalformedToolCallError):
        ExchangeProvider(tmp_path).complete(make_request())


def test_exchange_answers_are_recorded_and_replayable(tmp_path):
    folder, store = tmp_path / "exchange", TranscriptStore(tmp_path / "transcripts")
    recording = RecordingProvider(ExchangeProvider(folder), store)
    with pytest.raises(ExchangePending):
        recording.complete(make_request())
    assert list(store) == []
    (folder / "orders.response.md").write_text(response_md(make_request().request_hash()))
    answered = recording.complete(make_request())
    replayed = ReplayProvider(store).complete(make_request())
    assert json.dumps(replayed.to_dict()) == json.dumps(answered.to_dict())
    assert store.get(make_request().request_hash()).provider == "exchange"  # type: ignore[union-attr]


def test_file_stems_are_safe_names():
    assert file_stem("pkg/orders") == "pkg_orders"
    assert file_stem("../../etc") == "_.._etc"
    assert file_stem("") == "request"
