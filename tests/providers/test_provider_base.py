"""Request hashing and payloads, usage and cost, tool-call validation, turn assembly."""

from __future__ import annotations

import dataclasses
import json

import pytest

from allium.errors import AlliumError
from allium.providers.anthropic import (
    DroppedStreamError,
    RetryPolicy,
    classify,
    parse_retry_after,
)
from allium.providers.base import (
    DEFAULT_MODEL,
    MalformedToolCallError,
    ProviderError,
    RefusalError,
    Request,
    Response,
    TranscriptMissingError,
    TruncatedError,
    Usage,
    extract_files,
    merge_files,
    price_for,
    resolve_max_tokens,
    resolve_model,
)
from allium.providers.stream import StreamAccumulator
from tests.providers.conftest import make_request


def test_request_hash_is_deterministic_and_covers_the_whole_payload():
    base = make_request()
    assert base.request_hash() == make_request().request_hash()
    assert len(base.request_hash()) == 64
    variants = [make_request(prompt="other"), make_request(model="claude-opus-4-5"),
                make_request(max_tokens=100), make_request(cached_prefix_blocks=1),
                make_request(system=("changed",) + base.system[1:]), make_request(tools=[])]
    hashes = {v.request_hash() for v in variants} | {base.request_hash()}
    assert len(hashes) == len(variants) + 1


def test_request_hash_ignores_unit_and_metadata_which_are_not_sent():
    assert (make_request(unit="a", metadata={"x": "1"}).request_hash()
            == make_request(unit="b").request_hash())


def test_request_is_frozen_and_copies_caller_lists():
    messages = [{"role": "user", "content": "hi"}]
    request = make_request(messages=messages)
    messages.append({"role": "user", "content": "sneaky"})
    assert len(request.messages) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.model = "x"  # type: ignore[misc]


def test_payload_marks_only_the_last_prefix_block_for_caching():
    request = make_request(system=("a", "b", "c"), cached_prefix_blocks=2)
    marks = [("cache_control" in b) for b in request.to_payload()["system"]]
    assert marks == [False, True, False]
    assert not any("cache_control" in b for b in
                   make_request(system=("a",), cached_prefix_blocks=0).to_payload()["system"])
    with pytest.raises(ValueError):
        make_request(system=("a",), cached_prefix_blocks=2)


def test_model_and_max_tokens_resolution(monkeypatch):
    monkeypatch.delenv("ALLIUM_MODEL", raising=False)
    monkeypatch.delenv("ALLIUM_MAX_TOKENS", raising=False)
    assert resolve_model() == DEFAULT_MODEL == "claude-sonnet-5-5"
    monkeypatch.setenv("ALLIUM_MODEL", "claude-opus-4-5")
    monkeypatch.setenv("ALLIUM_MAX_TOKENS", "1234")
    assert (resolve_model(), resolve_max_tokens()) == ("claude-opus-4-5", 1234)
    assert (resolve_model("claude-haiku-4-5"), resolve_max_tokens(99)) == ("claude-haiku-4-5", 99)
    request = Request.simple(unit="u", prefix=["p1", "p2"], prompt="go")
    assert (request.model, request.max_tokens, request.cached_prefix_blocks) == (
        "claude-opus-4-5", 1234, 2)


def test_cost_uses_each_token_kind_at_its_price():
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000,
                  cache_creation_input_tokens=1_000_000, cache_read_input_tokens=1_000_000)
    assert usage.cost_usd("claude-sonnet-4-5") == pytest.approx(3 + 15 + 3.75 + 0.30)
    assert usage.cost_usd("claude-sonnet-4-5-20250929") == usage.cost_usd("claude-sonnet-4-5")
    assert price_for("claude-opus-4-1-20250805") == price_for("claude-opus-4-1")
    # the longest family wins: opus-4-5 is not priced as opus-4
    assert price_for("claude-opus-4-5-20251101").input == 5.0  # type: ignore[union-attr]
    assert usage.cost_usd("gpt-4") is None
    # a newer family is not priced as the older one it extends
    assert usage.cost_usd("claude-sonnet-5-5") == pytest.approx(2 + 10 + 2.50 + 0.20)
    assert price_for("claude-opus-5-5-20261015") == price_for("claude-opus-5-5") != price_for("claude-opus-5")
    assert (Usage(1, 2, 3, 4) + Usage(10, 20, 30, 40)) == Usage(11, 22, 33, 44)
    assert Usage(1, 2, 3, 4).total_input_tokens == 8


def test_usage_from_api_treats_null_cache_fields_as_zero():
    assert Usage.from_dict({"input_tokens": 5, "output_tokens": 2,
                            "cache_read_input_tokens": None}) == Usage(5, 2, 0, 0)


def test_response_round_trips_through_json():
    response = Response(({"type": "text", "text": "hi"},), (("a.py", "x\n"),), "end_turn",
                        "claude-haiku-4-5", Usage(1, 2, 3, 4), turns=2)
    assert Response.from_dict(json.loads(json.dumps(response.to_dict()))) == response
    assert response.cost_usd() == Usage(1, 2, 3, 4).cost_usd("claude-haiku-4-5")


def _call(data: object, name: str = "write_file") -> dict:
    return {"type": "tool_use", "id": "t", "name": name, "input": data}


@pytest.mark.parametrize("block", [
    _call({"path": "a.py"}),
    _call({"path": "a.py", "content": "x", "mode": "w"}),
    _call({"path": 3, "content": "x"}),
    _call({"path": "", "content": "x"}),
    _call("{}"),
    _call({"path": "a.py", "content": "x"}, name="delete_file"),
])
def test_invalid_write_file_calls_are_rejected(block):
    with pytest.raises(MalformedToolCallError):
        extract_files([block], "u")


def test_valid_calls_become_files_in_order_and_later_writes_win():
    blocks = [{"type": "text", "text": "hi"}, _call({"path": "/abs.py", "content": "1"}),
              _call({"path": "b.py", "content": "2"}), _call({"path": "/abs.py", "content": "3"})]
    files = extract_files(blocks)
    assert files == [("/abs.py", "1"), ("b.py", "2"), ("/abs.py", "3")]
    assert merge_files(files) == (("/abs.py", "3"), ("b.py", "2"))


def test_errors_share_one_root():
    for cls in (ProviderError, RefusalError, TruncatedError, MalformedToolCallError):
        assert issubclass(cls, AlliumError)
    error = TranscriptMissingError("orders", "ab" * 32, "/store")
    assert "'orders'" in str(error) and "ab" * 32 in str(error) and error.unit == "orders"


def _stream(*events: dict) -> StreamAccumulator:
    acc = StreamAccumulator()
    acc.feed({"type": "message_start", "message": {"model": "m", "usage": {
        "input_tokens": 3, "output_tokens": 1}}})
    for event in events:
        acc.feed(event)
    return acc


def _tool(index: int, raw: str) -> list[dict]:
    return [{"type": "content_block_start", "index": index,
             "content_block": {"type": "tool_use", "id": f"t{index}", "name": "write_file",
                               "input": {}}},
            {"type": "content_block_delta", "index": index,
             "delta": {"type": "input_json_delta", "partial_json": raw}}]


def test_truncated_tail_is_dropped_and_named_but_earlier_bad_json_is_an_error():
    good = json.dumps({"path": "a.py", "content": "x"})
    cut = json.dumps({"path": 'b "q".py', "content": "yyyy"})[:-8]
    turn = _stream(*_tool(0, good), {"type": "content_block_stop", "index": 0},
                   *_tool(1, cut)).turn()
    kept, dropped = turn.without_truncated_tail("u")
    assert [b["input"] for b in kept] == [{"path": "a.py", "content": "x"}]
    assert dropped == 'b "q".py'
    bad_then_cut = _stream(*_tool(0, '{"path": '), {"type": "content_block_stop", "index": 0},
                           *_tool(1, cut)).turn()
    with pytest.raises(MalformedToolCallError):
        bad_then_cut.without_truncated_tail("u")


def test_stream_usage_takes_final_counts_and_keeps_start_values():
    acc = _stream({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                   "usage": {"output_tokens": 42, "cache_read_input_tokens": None}},
                  {"type": "message_stop"})
    turn = acc.turn()
    assert acc.finished and turn.usage == Usage(3, 42, 0, 0) and turn.stop_reason == "end_turn"


def test_retry_after_parsing():
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_exponential_jittered_and_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = {policy.backoff(attempt) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1


def test_incomplete_stream_and_unknown_errors_are_classified():
    verdict = classify(DroppedStreamError("ended early"))
    assert verdict is not None and verdict.retryable
    assert classify(KeyError("x")) is None  # a bug of ours: never retried, never wrapped
