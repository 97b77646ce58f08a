"""A fake Anthropic Messages API server for tests and benchmarks (see server.py)."""

from tests.fakeapi.server import Block, FakeAnthropic, HttpError, LoggedRequest, Reply

__all__ = ["Block", "FakeAnthropic", "HttpError", "LoggedRequest", "Reply"]
