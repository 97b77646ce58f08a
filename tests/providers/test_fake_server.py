"""The fake Messages API itself: wire format, pacing, caching model, concurrency."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import pytest

from tests.fakeapi import FakeAnthropic
from tests.fakeapi import scenarios as sc

MODEL = "claude-haiku-4-5"
SYSTEM = [{"type": "text", "text": "stable prefix " * 200, "cache_control": {"type": "ephemeral"}}]


def client(fake: FakeAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k" * 20, base_url=fake.url, max_retries=0)


def ask(fake: FakeAnthropic, prompt: str = "hi", **kwargs):
    return client(fake).messages.create(model=MODEL, max_tokens=1000, system=SYSTEM,
                                        messages=[{"role": "user", "content": prompt}], **kwargs)


def test_the_sdk_stream_helper_assembles_the_same_message_as_plain_json():
    reply = sc.files({"a.py": "print('hi')\n" * 30}, note="Here you go.")
    with FakeAnthropic(chunk_tokens=3) as fake:
        fake.script(reply, reply)
        plain = ask(fake)
        with client(fake).messages.stream(model=MODEL, max_tokens=1000, system=SYSTEM,
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            events = [event.type for event in stream]
            streamed = stream.get_final_message()
    assert events.count("input_json") > 10  # tool input arrived in many pieces
    assert [b.type for b in streamed.content] == [b.type for b in plain.content]
    assert streamed.content[0].text == plain.content[0].text
    assert streamed.content[1].input == plain.content[1].input
    assert streamed.stop_reason == plain.stop_reason == "tool_use"
    assert streamed.usage.output_tokens > 1


def test_cache_reads_follow_a_seen_prefix_and_are_totalled():
    with FakeAnthropic() as fake:
        fake.script(sc.text("1"), sc.text("2"), sc.text("3"))
        first, second = ask(fake, "one"), ask(fake, "two")
        third = client(fake).messages.create(model=MODEL, max_tokens=10, system="no breakpoint",
                                             messages=[{"role": "user", "content": "x"}])
        totals = fake.usage_totals()
    assert first.usage.cache_read_input_tokens == 0 < first.usage.cache_creation_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert third.usage.cache_read_input_tokens == third.usage.cache_creation_input_tokens == 0
    assert totals["cache_read_input_tokens"] == second.usage.cache_read_input_tokens


def test_min_cache_tokens_disables_caching_of_short_prefixes():
    with FakeAnthropic(min_cache_tokens=10_000) as fake:
        fake.script(sc.text("1"), sc.text("2"))
        ask(fake), ask(fake)
    assert fake.usage_totals()["cache_read_input_tokens"] == 0


def test_latency_and_output_speed_are_applied():
    reply = sc.text("word " * 200)  # 250 tokens at 4 characters per token
    with FakeAnthropic(ttft=0.1, tokens_per_second=2500, chunk_tokens=25) as fake:
        fake.script(reply)
        started = time.monotonic()
        with client(fake).messages.stream(model=MODEL, max_tokens=1000,
                                          messages=[{"role": "user", "content": "x"}]) as stream:
            first_text_at = None
            for event in stream:
                if event.type == "text" and first_text_at is None:
                    first_text_at = time.monotonic() - started
        total = time.monotonic() - started
    assert first_text_at is not None and first_text_at >= 0.1
    assert total >= 0.1 + 250 / 2500


def test_parallel_requests_are_served_concurrently():
    with FakeAnthropic(ttft=0.2) as fake:
        fake.script(*[sc.text(str(i)) for i in range(8)])
        shared = client(fake)  # the SDK client is thread-safe, as jobs will share one

        def one(i: int) -> str:
            return shared.messages.create(model=MODEL, max_tokens=10, messages=[
                {"role": "user", "content": str(i)}]).content[0].text

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(8)))
        elapsed = time.monotonic() - started
    assert sorted(answers) == [str(i) for i in range(8)]
    assert elapsed < 0.2 * 4


def test_count_tokens_and_exhausted_script():
    with FakeAnthropic() as fake:
        counted = client(fake).messages.count_tokens(
            model=MODEL, system=SYSTEM, messages=[{"role": "user", "content": "hi"}])
        assert counted.input_tokens > 600
        with pytest.raises(anthropic.BadRequestError, match="script exhausted"):
            ask(fake)
        assert [r.path for r in fake.log] == ["/v1/messages/count_tokens", "/v1/messages"]


def test_responder_answers_as_a_function_of_the_request():
    with FakeAnthropic(responder=lambda body: sc.text(body["messages"][0]["content"][::-1])) as fake:
        assert ask(fake, "abc").content[0].text == "cba"


def test_importing_the_provider_does_not_import_the_sdk():
    code = ("import sys, allium.providers, allium.providers.anthropic, allium.providers.exchange;"
            "assert 'anthropic' not in sys.modules, 'SDK imported eagerly'")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root,
                   env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
