"""Fixtures: a fake Messages API per test and providers pointed at it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from allium.providers.anthropic import AnthropicProvider, RetryPolicy
from allium.providers.base import Progress, Request
from tests.fakeapi import FakeAnthropic

# Distinctive so a leak anywhere (transcripts, logs, messages) is easy to spot.
KEY = "sk-ant-test-LEAKCHECK-5f1c9a7e0b3d"
PREFIX = ("You generate Python packages from Allium specs. " * 40,
          "entity Order { status: pending | shipped }\n" * 40)


def make_request(unit: str = "orders", prompt: str = "Implement the orders module.",
                 **overrides: Any) -> Request:
    fields: dict[str, Any] = dict(model="claude-haiku-4-5", system=PREFIX,
                                  messages=[{"role": "user", "content": prompt}],
                                  max_tokens=4096, unit=unit, cached_prefix_blocks=2)
    fields.update(overrides)
    return Request(**fields)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


class SleepRecorder:
    """Stands in for time.sleep: records each delay and really sleeps it, so the
    fake server's arrival times show whether retry-after was honoured."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def progress() -> list[Progress]:
    return []


@pytest.fixture
def make_provider(fake: FakeAnthropic, sleeps: SleepRecorder, progress: list[Progress]
                  ) -> Iterator[Callable[..., AnthropicProvider]]:
    created: list[AnthropicProvider] = []

    def make(**kwargs: Any) -> AnthropicProvider:
        kwargs.setdefault("api_key", KEY)
        kwargs.setdefault("base_url", fake.url)
        kwargs.setdefault("retry", RetryPolicy(max_attempts=4, base_delay=0.002, max_delay=0.01))
        kwargs.setdefault("sleep", sleeps)
        kwargs.setdefault("on_progress", progress.append)
        kwargs.setdefault("timeout", 10.0)
        provider = AnthropicProvider(**kwargs)
        created.append(provider)
        return provider

    yield make
    for provider in created:
        provider.close()
