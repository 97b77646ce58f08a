"""AnthropicProvider driving the real SDK against the fake Messages API."""

from __future__ import annotations

import json

import pytest

from allium.providers.anthropic import AnthropicProvider, RetryPolicy
from allium.providers.base import (
    WRITE_FILE_TOOL,
    MalformedToolCallError,
    ProviderError,
    RefusalError,
    TruncatedError,
)
from tests.fakeapi import scenarios as sc
from tests.fakeapi.server import Block, Reply
from tests.providers.conftest import KEY, make_request

A = "def a() -> int:\n    return 1\n"
B = "def b() -> str:\n    return '" + "b" * 300 + "'\n"


@pytest.mark.parametrize("stream", [True, False])
def test_success_returns_files_text_and_summed_usage(fake, make_provider, stream):
    fake.script(*sc.files_then_done({"pkg/a.py": A, "pkg/b.py": B}, note="Writing two files."))
    response = make_provider(stream=stream).complete(make_request())

    assert response.files == (("pkg/a.py", A), ("pkg/b.py", B))
    assert response.text == "Writing two files.Done."
    assert (response.stop_reason, response.turns) == ("end_turn", 2)
    calls = fake.message_requests
    assert [c.stream for c in calls] == [stream, stream]
    server_output = sum(c.usage["output_tokens"] for c in calls)
    assert response.usage.output_tokens == server_output
    assert response.usage.total_input_tokens == sum(
        sum(v for k, v in c.usage.items() if k != "output_tokens") for c in calls)


def test_payload_is_cacheable_strict_and_free_of_sampling_params(fake, make_provider):
    fake.script(sc.text("ok"))
    make_provider().complete(make_request())
    (call,) = fake.message_requests
    body = call.body
    assert [("cache_control" in b) for b in body["system"]] == [False, True]
    assert body["tools"] == [WRITE_FILE_TOOL]
    schema = body["tools"][0]["input_schema"]
    assert schema["additionalProperties"] is False and schema["required"] == ["path", "content"]
    assert not {"temperature", "top_p", "top_k"} & set(body)
    assert body["messages"][-1]["role"] == "user"  # no assistant prefill
    # The key went in its header, and nowhere else; the SDK's own retries are off.
    assert call.had_api_key and KEY not in json.dumps(call.headers) + json.dumps(body)
    assert call.headers["anthropic-version"] and "authorization" not in call.headers
    assert call.headers["x-stainless-retry-count"] == "0"


def test_tool_use_turns_are_answered_ok_and_files_accumulate(fake, make_provider):
    fake.script(sc.files({"a.py": A}), sc.files({"b.py": B}), sc.text("All done."))
    response = make_provider().complete(make_request())

    assert response.files == (("a.py", A), ("b.py", B))
    assert response.turns == 3
    second, third = fake.message_requests[1].body, fake.message_requests[2].body
    assistant, results = second["messages"][1], second["messages"][2]
    (call,) = [b for b in assistant["content"] if b["type"] == "tool_use"]
    assert call["input"] == {"path": "a.py", "content": A}
    assert results["content"][0]["tool_use_id"] == call["id"]
    assert results["content"][0]["content"] == "ok"
    # Continuations mark the newest block for caching, so the conversation is re-read cheaply.
    assert third["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in json.dumps(third["messages"][:-1])
    assert fake.message_requests[2].usage["cache_read_input_tokens"] > 0


@pytest.mark.parametrize("stream", [True, False])
def test_thinking_blocks_go_back_unmodified_with_the_tool_results(fake, make_provider, stream):
    # Current models think between tool calls and reject a next turn whose
    # thinking blocks lost their text or signature; the fake does the same.
    thinking = Block("thinking", text="Two modules: the entity first, then its rules. " * 20)
    fake.script(Reply([thinking, sc.write_file_block("a.py", A)], "tool_use"), sc.text("Done."))
    response = make_provider(stream=stream).complete(make_request())

    assert response.files == (("a.py", A),) and response.turns == 2
    second = fake.message_requests[1]
    assert second.status == 200
    sent = [b for b in second.body["messages"][1]["content"] if b["type"] == "thinking"]
    assert [(b["thinking"], b["signature"] in fake.signatures) for b in sent] == [(thinking.text, True)]


def test_a_tampered_thinking_block_is_refused_by_the_fake(fake):
    issued = fake.render_blocks(Reply([Block("thinking", text="plan")]))[0]
    good = {"messages": [{"role": "assistant", "content": [issued]}]}
    bad = {"messages": [{"role": "assistant", "content": [{**issued, "thinking": ""}]}]}
    assert fake.tampered_thinking(good) is None
    assert "unmodified" in fake.tampered_thinking(bad)


def test_progress_reports_rising_token_counts_ending_at_the_real_total(fake, make_provider,
                                                                      progress):
    fake.script(*sc.files_then_done({"a.py": A * 20}))
    response = make_provider().complete(make_request())
    counts = [p.output_tokens for p in progress if p.kind == "tokens"]
    assert len(counts) > 5 and counts == sorted(counts)
    assert counts[-1] == response.usage.output_tokens
    assert [p.kind for p in progress].count("continue") == 1


def test_second_unit_reads_the_shared_prefix_from_cache(fake, make_provider):
    fake.script(sc.text("one"), sc.text("two"))
    provider = make_provider()
    first = provider.complete(make_request("orders"))
    second = provider.complete(make_request("billing", prompt="Implement billing."))
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens > 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0


def test_count_tokens_uses_the_endpoint(fake, make_provider):
    count = make_provider().count_tokens(make_request())
    (call,) = fake.log
    assert call.path == "/v1/messages/count_tokens"
    assert set(call.body) == {"model", "system", "messages", "tools"}
    assert count > 900  # the prefix alone is ~3,700 characters


@pytest.mark.parametrize("stream", [True, False])
def test_max_tokens_drops_the_cut_off_file_and_asks_again(fake, make_provider, stream):
    fake.script(sc.truncated({"a.py": A}, "b.py", B), sc.files({"b.py": B}), sc.text("Done."))
    response = make_provider(stream=stream).complete(make_request())

    assert response.files == (("a.py", A), ("b.py", B))
    resumed = fake.message_requests[1].body["messages"]
    kept_calls = [b["input"]["path"] for b in resumed[1]["content"] if b["type"] == "tool_use"]
    assert kept_calls == ["a.py"]  # the partial b.py call is not sent back
    note = resumed[2]["content"][-1]["text"]
    assert "'b.py'" in note and "NOT saved" in note
    assert [b["type"] for b in resumed[2]["content"]] == ["tool_result", "text"]


def test_max_tokens_before_any_file_keeps_nothing_partial(fake, make_provider):
    fake.script(sc.truncated({}, "big.py", B), sc.files({"big.py": B}), sc.text("Done."))
    response = make_provider().complete(make_request())
    assert response.files == (("big.py", B),)
    assistant = fake.message_requests[1].body["messages"][1]
    assert assistant["content"][0]["type"] == "text"  # a placeholder, not an empty turn


def test_max_tokens_continuations_are_bounded(fake, make_provider):
    fake.script(*[sc.truncated_text()] * 5)
    with pytest.raises(TruncatedError, match="max_tokens"):
        make_provider(max_continuations=2).complete(make_request())
    assert len(fake.message_requests) == 3


def test_refusal_is_a_clear_error(fake, make_provider):
    fake.script(sc.refusal("I can't help with that."))
    with pytest.raises(RefusalError, match=r"'orders'.*refused.*can't help") as info:
        make_provider().complete(make_request())
    assert info.value.unit == "orders"
    assert len(fake.message_requests) == 1


@pytest.mark.parametrize("reply,stream,says", [
    (sc.malformed_json(), True, "invalid JSON input"),
    (sc.missing_field(), True, "exactly 'path' and 'content'"),
    (sc.missing_field(), False, "exactly 'path' and 'content'"),
    (sc.malformed_json(), False, "exactly"),  # unparseable input arrives as {} without the fields
    (sc.unknown_tool(), True, "unknown tool 'run_shell'"),
])
def test_malformed_tool_calls_are_errors_not_files(fake, make_provider, reply, stream, says):
    fake.script(reply, sc.text("Done."))
    with pytest.raises(MalformedToolCallError, match=f"'orders'.*{says}"):
        make_provider(stream=stream).complete(make_request())
    assert len(fake.message_requests) == 1


def test_path_traversal_is_passed_on_for_the_writer_to_refuse(fake, make_provider):
    fake.script(sc.path_traversal("../../outside/evil.py"), sc.text("Done."))
    response = make_provider().complete(make_request())
    assert response.files == (("../../outside/evil.py", "print('escaped')\n"),)


OK_REPLY = sc.text("recovered " * 30)


@pytest.mark.parametrize("fault", [
    sc.overloaded(), sc.server_error(), sc.rate_limited(retry_after=0.01),
    sc.dropped(OK_REPLY, after_events=4), sc.stream_error(OK_REPLY, after_events=3),
], ids=["529", "500", "429", "dropped-stream", "error-event"])
def test_transient_faults_are_retried_to_success(fake, make_provider, progress, sleeps, fault):
    fake.script(fault, OK_REPLY)
    response = make_provider().complete(make_request())
    assert response.text == OK_REPLY.blocks[0].text
    assert len(fake.message_requests) == 2
    assert fake.message_requests[0].outcome != "ok"
    retries = [p for p in progress if p.kind == "retry"]
    assert [r.attempt for r in retries] == [1] and len(sleeps.delays) == 1


def test_dropped_non_streaming_request_is_retried(fake, make_provider):
    fake.script(sc.dropped(OK_REPLY), OK_REPLY)
    assert make_provider(stream=False).complete(make_request()).text == OK_REPLY.blocks[0].text
    assert [c.outcome for c in fake.message_requests] == ["dropped", "ok"]


@pytest.mark.parametrize("header", ["retry-after", "retry-after-ms"])
def test_retry_after_is_honoured(fake, make_provider, sleeps, header):
    fake.script(sc.rate_limited(retry_after=0.05, header=header), sc.text("ok"))
    # A large backoff proves the server's wait was used instead of ours.
    make_provider(retry=RetryPolicy(base_delay=5.0)).complete(make_request())
    assert sleeps.delays == [pytest.approx(0.05)]
    first, second = fake.message_requests
    assert second.received_at - first.received_at >= 0.05


def test_a_retry_after_beyond_the_limit_is_reported_not_slept(fake, make_provider, sleeps):
    fake.script(sc.rate_limited(retry_after=3600))
    with pytest.raises(ProviderError, match="wait 3600s"):
        make_provider().complete(make_request())
    assert sleeps.delays == []


def test_retries_give_up_after_max_attempts_with_growing_backoff(fake, make_provider, sleeps):
    fake.script(*[sc.overloaded()] * 4)
    policy = RetryPolicy(max_attempts=4, base_delay=0.004, max_delay=1.0)
    with pytest.raises(ProviderError, match="gave up after 4 attempts.*529") as info:
        make_provider(retry=policy).complete(make_request())
    assert info.value.attempts == 4 and info.value.status == 529
    assert len(fake.message_requests) == 4
    for attempt, delay in enumerate(sleeps.delays, 1):
        ceiling = 0.004 * 2 ** (attempt - 1)
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize("fault,status,words", [
    (sc.spend_limit(), 429, "spend limit"),
    (sc.bad_request("max_tokens: too large"), 400, "too large"),
])
def test_hopeless_errors_are_not_retried(fake, make_provider, sleeps, fault, status, words):
    fake.script(fault, sc.text("should never be fetched"))
    with pytest.raises(ProviderError, match=words) as info:
        make_provider().complete(make_request())
    assert info.value.status == status and info.value.attempts == 1
    assert len(fake.message_requests) == 1 and sleeps.delays == []


def test_bad_key_is_not_retried_and_not_echoed(fake, make_provider):
    wrong = "sk-ant-wrong-key-0000000000"
    with pytest.raises(ProviderError, match="ANTHROPIC_API_KEY") as info:
        make_provider(api_key=wrong).complete(make_request())
    assert info.value.status == 401 and wrong not in str(info.value)
    assert len(fake.message_requests) == 1


def test_missing_key_is_reported_before_any_request(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ProviderError, match="ANTHROPIC_API_KEY"):
        AnthropicProvider()


def test_env_supplies_key_and_base_url(fake, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    fake.script(sc.text("from env"))
    provider = AnthropicProvider()
    assert KEY not in repr(provider)
    assert provider.complete(make_request()).text == "from env"
    provider.close()


def test_a_file_rewritten_in_a_later_turn_keeps_only_its_last_version(fake, make_provider):
    fake.script(sc.files({"a.py": "v1\n", "b.py": B}), sc.files({"a.py": "v2\n"}), sc.text("ok"))
    response = make_provider().complete(make_request())
    assert response.files == (("a.py", "v2\n"), ("b.py", B))


def test_every_provider_satisfies_the_interface(make_provider, tmp_path):
    from allium.providers.base import Provider
    from allium.providers.exchange import ExchangeProvider
    from allium.providers.replay import ReplayProvider
    from allium.providers.transcripts import RecordingProvider, TranscriptStore

    live = make_provider()
    store = TranscriptStore(tmp_path)
    for provider in (live, ReplayProvider(store), ExchangeProvider(tmp_path),
                     RecordingProvider(live, store)):
        assert isinstance(provider, Provider)
    assert RecordingProvider(live, store).name == "anthropic"


@pytest.mark.parametrize("stop,error", [("model_context_window_exceeded", TruncatedError),
                                        ("pause_turn", ProviderError)])
def test_other_stop_reasons_are_errors_naming_the_unit(fake, make_provider, stop, error):
    fake.script(sc.text("partial", stop_reason=stop))
    with pytest.raises(error, match="'orders'"):
        make_provider().complete(make_request())
