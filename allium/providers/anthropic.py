"""The live provider: Claude through the official ``anthropic`` SDK.

One ``complete`` call may take several API turns: files arrive as ``write_file``
tool calls; when the model stops on ``tool_use`` we answer each call with an
``ok`` tool_result and let it carry on; when it stops on ``max_tokens`` we drop
the file whose call was cut off and ask it to resume (a bounded number of
times). Retries are ours, not the SDK's (``max_retries=0``), so that they are
visible to the progress display, honour ``retry-after`` exactly, and never
repeat a request that cannot succeed.

The SDK is imported lazily so that ``import allium`` stays fast.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from allium.providers.base import (
    Progress,
    ProgressCallback,
    ProviderError,
    RefusalError,
    Request,
    Response,
    TruncatedError,
    Usage,
    extract_files,
    merge_files,
)
from allium.providers.stream import StreamAccumulator, Turn, sendable, turn_from_message

if TYPE_CHECKING:  # pragma: no cover
    import anthropic as sdk

T = TypeVar("T")

ENV_API_KEY = "ANTHROPIC_API_KEY"
ENV_BASE_URL = "ANTHROPIC_BASE_URL"

# A 429 is normally "slow down", but these say "you are out of money/quota":
# waiting will not help, so we must not hammer the API with retries.
_HOPELESS_429 = ("spend limit", "usage limit", "credit balance", "billing")
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error",
                                      "timeout_error"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server ``retry-after`` overrides the backoff."""

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 300.0  # a longer requested wait is reported instead of slept
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based), jittered into [d/2, d]
        so that parallel jobs that failed together do not retry together."""
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return delay * self.rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class _Verdict:
    retryable: bool
    reason: str
    status: int | None = None
    retry_after: float | None = None


class DroppedStreamError(Exception):
    """The event stream ended before ``message_stop``: the answer is incomplete."""


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Low-level HTTP errors the SDK lets through while a stream is being read."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            types.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def classify(exc: BaseException) -> _Verdict | None:
    """Whether a failed attempt may succeed if repeated. None: not an API failure at all."""
    import anthropic as sdk

    if isinstance(exc, sdk.APIStatusError):
        return _classify_status(exc)
    if isinstance(exc, sdk.APIConnectionError):
        return _Verdict(True, f"connection error: {exc}")
    if isinstance(exc, DroppedStreamError):
        return _Verdict(True, f"stream dropped: {exc}")
    if isinstance(exc, _transport_errors()):
        return _Verdict(True, f"connection dropped: {type(exc).__name__}: {exc}")
    return None


def _classify_status(exc: sdk.APIStatusError) -> _Verdict:
    status = exc.status_code
    body = exc.body if isinstance(exc.body, Mapping) else {}
    raw = body.get("error")
    error = raw if isinstance(raw, Mapping) else {}
    kind = str(error.get("type") or "")
    message = str(error.get("message") or exc.message)
    reason = f"HTTP {status} {kind}: {message}".replace(" : ", ": ")
    if status < 300:  # an `error` event inside a 200 stream
        return _Verdict(kind in _RETRYABLE_STREAM_ERRORS, f"stream error {kind}: {message}", status)
    if status == 429 and any(s in message.lower() for s in _HOPELESS_429):
        return _Verdict(False, reason + " (a spend or usage limit: not retried)", status)
    if status in _RETRYABLE_STATUS or status >= 500:
        return _Verdict(True, reason, status, parse_retry_after(exc.response.headers))
    if status == 401:
        reason += f" (check {ENV_API_KEY})"
    return _Verdict(False, reason, status)


class AnthropicProvider:
    """Answers requests with Claude. Thread-safe: one instance can serve many jobs."""

    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        stream: bool = True,
        retry: RetryPolicy | None = None,
        max_continuations: int = 3,
        max_turns: int = 64,
        timeout: float = 600.0,
        on_progress: ProgressCallback | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key = api_key or os.environ.get(ENV_API_KEY)
        if not key:
            raise ProviderError(f"no API key: set {ENV_API_KEY}, or use the exchange provider "
                                "to answer requests without one")
        self._api_key = key
        self.base_url = base_url or os.environ.get(ENV_BASE_URL) or None
        self.stream = stream
        self.retry = retry or RetryPolicy()
        self.max_continuations = max_continuations
        self.max_turns = max_turns
        self.timeout = timeout
        self.on_progress = on_progress
        self._sleep = sleep
        self._client: sdk.Anthropic | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"AnthropicProvider(base_url={self.base_url!r}, stream={self.stream})"

    # ------------------------------------------------------------------ public

    def complete(self, request: Request) -> Response:
        payload = request.to_payload()
        messages: list[dict[str, Any]] = payload["messages"]
        content: list[dict[str, Any]] = []
        files: list[tuple[str, str]] = []
        usage, model, continuations = Usage(), request.model, 0
        for turn_no in range(1, self.max_turns + 1):
            body = {**payload, "messages": _cache_last_turn(messages) if turn_no > 1 else messages}
            turn = self._with_retries(request.unit, lambda: self._call(body, request.unit, usage))  # noqa: B023 - called at once
            usage, model = usage + turn.usage, turn.model or model
            if turn.stop_reason == "refusal":
                raise RefusalError(f"unit {request.unit!r}: the model refused to answer"
                                   + (f": {turn.text()[:300]}" if turn.text() else ""),
                                   unit=request.unit)
            if turn.stop_reason == "max_tokens":
                continuations += 1
                if continuations > self.max_continuations:
                    raise TruncatedError(
                        f"unit {request.unit!r}: output hit max_tokens ({request.max_tokens}) "
                        f"{continuations} times; raise --max-tokens or split the unit",
                        unit=request.unit)
                kept, dropped = turn.without_truncated_tail(request.unit)
                files += extract_files(kept, request.unit)
                content += kept
                messages += _resume_after_truncation(kept, dropped)
                self._report(Progress(request.unit, "continue", usage.output_tokens,
                                      message="resuming after max_tokens"))
                continue
            turn.check_complete(request.unit)
            files += extract_files(turn.blocks, request.unit)
            content += turn.blocks
            if turn.stop_reason == "tool_use":
                messages += [{"role": "assistant", "content": sendable(turn.blocks)},
                             {"role": "user", "content": _tool_results(turn.blocks)}]
                self._report(Progress(request.unit, "continue", usage.output_tokens,
                                      message="tool results sent"))
                continue
            if turn.stop_reason in ("end_turn", "stop_sequence"):
                return Response(tuple(content), merge_files(files), turn.stop_reason, model,
                                usage, turn_no)
            if turn.stop_reason == "model_context_window_exceeded":
                raise TruncatedError(f"unit {request.unit!r}: the conversation outgrew the "
                                     "model's context window; split the unit", unit=request.unit)
            raise ProviderError(f"unit {request.unit!r}: unexpected stop_reason "
                                f"{turn.stop_reason!r}", unit=request.unit)
        raise ProviderError(f"unit {request.unit!r}: no end_turn after {self.max_turns} turns",
                            unit=request.unit)

    def count_tokens(self, request: Request) -> int:
        """Input tokens the request would use, from the API's free counting endpoint."""
        payload = request.to_payload()
        args = {k: payload[k] for k in ("model", "system", "messages", "tools") if k in payload}
        result = self._with_retries(request.unit,
                                    lambda: self._get_client().messages.count_tokens(**args))
        return int(result.input_tokens)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # ------------------------------------------------------------------ calls

    def _get_client(self) -> sdk.Anthropic:
        with self._lock:
            if self._client is None:
                import anthropic as sdk

                self._client = sdk.Anthropic(api_key=self._api_key, base_url=self.base_url,
                                             max_retries=0, timeout=self.timeout)
            return self._client

    def _call(self, body: dict[str, Any], unit: str, before: Usage) -> Turn:
        client = self._get_client()
        # An explicit timeout also stops the SDK refusing large non-streaming max_tokens.
        if not self.stream:
            message = client.messages.create(**body, timeout=self.timeout)
            return turn_from_message(message.to_dict(mode="json"))
        acc = StreamAccumulator()
        with client.messages.create(**body, stream=True, timeout=self.timeout) as events:
            for event in events:
                if acc.feed(event.to_dict(mode="json")) and self.on_progress:
                    self._report(Progress(unit, "tokens", before.output_tokens + acc.output_tokens))
        if not acc.finished:
            raise DroppedStreamError("the stream ended before message_stop")
        return acc.turn()

    def _with_retries(self, unit: str, attempt_once: Callable[[], T]) -> T:
        policy = self.retry
        for attempt in range(1, policy.max_attempts + 1):
            try:
                return attempt_once()
            except Exception as exc:
                verdict = classify(exc)
                if verdict is None:
                    raise
                if not verdict.retryable:
                    raise ProviderError(f"unit {unit!r}: {verdict.reason}", unit=unit,
                                        status=verdict.status, attempts=attempt) from exc
                if attempt == policy.max_attempts:
                    raise ProviderError(f"unit {unit!r}: gave up after {attempt} attempts: "
                                        f"{verdict.reason}", unit=unit, status=verdict.status,
                                        attempts=attempt) from exc
                delay = verdict.retry_after
                if delay is None:
                    delay = policy.backoff(attempt)
                elif delay > policy.max_retry_after:
                    raise ProviderError(f"unit {unit!r}: server asked to wait {delay:.0f}s: "
                                        f"{verdict.reason}", unit=unit, status=verdict.status,
                                        attempts=attempt) from exc
                self._report(Progress(unit, "retry", attempt=attempt, delay=delay,
                                      message=verdict.reason))
                self._sleep(delay)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _report(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)


# ---------------------------------------------------------------------- conversation


def _tool_results(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "tool_result", "tool_use_id": b["id"], "content": "ok"}
            for b in blocks if b.get("type") == "tool_use"]


def _resume_after_truncation(kept: list[dict[str, Any]], dropped: str | None
                             ) -> list[dict[str, Any]]:
    """The assistant turn as kept plus a user turn asking it to carry on.

    The assistant turn may not be empty, so a cut-off reply with nothing usable
    is represented by a short note rather than omitted (two user turns in a row
    would blur which instructions came from whom)."""
    assistant = kept or [{"type": "text", "text": "(reply cut off by the output limit)"}]
    note = "Your previous reply was cut off by the output token limit."
    if dropped is not None:
        note += (f" The write_file call for {dropped!r} was incomplete and was NOT saved:"
                 " write that file again in full.")
    note += (" Files you already wrote are saved; do not repeat them. Continue with the"
             " remaining work.")
    return [{"role": "assistant", "content": assistant},
            {"role": "user", "content": [*_tool_results(kept), {"type": "text", "text": note}]}]


def _cache_last_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of ``messages`` with a cache breakpoint on the newest block, so each
    continuation re-reads the conversation so far from cache instead of paying for it."""
    copied = json.loads(json.dumps(messages))
    last = copied[-1]
    if isinstance(last["content"], str):
        last["content"] = [{"type": "text", "text": last["content"]}]
    last["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return copied


__all__ = ["AnthropicProvider", "DroppedStreamError", "RetryPolicy", "classify",
           "parse_retry_after"]
