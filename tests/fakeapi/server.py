"""A real HTTP fake of the Anthropic Messages API, for driving the real SDK in tests.

``FakeAnthropic`` listens on 127.0.0.1 (ephemeral port) in a background thread and
serves ``POST /v1/messages`` (JSON or SSE, per the request's ``stream`` flag) and
``POST /v1/messages/count_tokens``. Answers come from a script: a queue of
``Reply`` / ``HttpError`` items, then an optional ``responder(body)`` function.
Everything received is kept in ``log`` (headers minus credentials).

Wire format follows the SDK (anthropic/_streaming.py, lib/streaming/_messages.py):
``event: <type>\\ndata: <json>\\n\\n`` with message_start, ping, content_block_start,
content_block_delta (text_delta / input_json_delta), content_block_stop,
message_delta (stop_reason, cumulative usage) and message_stop; errors as
``{"type": "error", "error": {"type": ..., "message": ...}}``.

Token counts are estimates (4 characters per token of canonical JSON). Prompt
caching is modelled: every ``cache_control`` breakpoint's prefix (tools, then
system, then messages) is remembered once a response starts, and a later request
with the same prefix reports it as ``cache_read_input_tokens``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jiter  # installed with the anthropic SDK

CHARS_PER_TOKEN = 4
_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})


@dataclass
class Block:
    """One scripted content block. For tool calls ``raw_json`` is streamed verbatim,
    so it can be cut off or invalid on purpose."""

    type: str  # "text" | "tool_use" | "thinking"
    text: str = ""
    name: str = "write_file"
    raw_json: str = ""


@dataclass
class Reply:
    blocks: list[Block]
    stop_reason: str = "end_turn"
    drop_after_events: int | None = None  # close the socket mid-stream (non-streaming: at once)
    error_event_after: int | None = None  # emit an `overloaded_error` event mid-stream


@dataclass
class HttpError:
    status: int
    error_type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


ScriptItem = Reply | HttpError
Responder = Callable[[dict[str, Any]], ScriptItem]


@dataclass
class LoggedRequest:
    path: str
    headers: dict[str, str]  # lower-cased, without x-api-key / authorization
    had_api_key: bool
    body: dict[str, Any]
    received_at: float  # time.monotonic()
    status: int = 0
    outcome: str = ""
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


def tokens(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def _pieces(body: dict[str, Any]) -> list[Any]:
    """The request in cache order: tools, system blocks, then message blocks."""
    pieces: list[Any] = list(body.get("tools") or [])
    system = body.get("system") or []
    pieces += [system] if isinstance(system, str) else list(system)
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            pieces.append({"role": message["role"], "text": content})
        else:
            pieces += [{"role": message["role"], **block} for block in content or []]
    return pieces


class FakeAnthropic:
    def __init__(self, *, ttft: float = 0.0, tokens_per_second: float | None = None,
                 chunk_tokens: int = 8, api_key: str | None = None, min_cache_tokens: int = 0,
                 responder: Responder | None = None) -> None:
        self.ttft = ttft
        self.tokens_per_second = tokens_per_second
        self.chunk_tokens = chunk_tokens
        self.api_key = api_key
        self.min_cache_tokens = min_cache_tokens
        self.responder = responder
        self.log: list[LoggedRequest] = []
        self._script: deque[ScriptItem] = deque()
        # prefix hash -> when it becomes readable.  Like the real API, a cache
        # entry is only there for requests that arrive after the writing
        # request has started answering (its time to first token), so
        # simultaneous requests each pay for the write.
        self._cache: dict[str, float] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        # signature -> thinking text, for every thinking block handed out: like
        # the real API, one sent back must come back unmodified.
        self.signatures: dict[str, str] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> FakeAnthropic:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def script(self, *items: ScriptItem) -> None:
        with self._lock:
            self._script.extend(items)

    @property
    def pending(self) -> int:
        return len(self._script)

    @property
    def message_requests(self) -> list[LoggedRequest]:
        return [r for r in self.log if r.path == "/v1/messages"]

    def usage_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for entry in self.message_requests:
            for key, value in entry.usage.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    # ------------------------------------------------------------------ internals

    def next_item(self, body: dict[str, Any]) -> ScriptItem:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.responder is not None:
            return self.responder(body)
        return HttpError(400, "invalid_request_error", "fake server: script exhausted")

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_fake_{next(self._ids):04d}"

    def input_usage(self, body: dict[str, Any]) -> dict[str, int]:
        """Input token split, and remember this request's cache prefixes."""
        pieces = _pieces(body)
        total = sum(tokens(_strip_cache_control(p)) for p in pieces)
        breakpoints = [i for i, p in enumerate(pieces) if isinstance(p, dict) and "cache_control" in p]
        read = written = 0
        with self._lock:
            for i in breakpoints:
                prefix = _strip_cache_control(pieces[: i + 1])
                size = sum(tokens(p) for p in prefix)
                if size < self.min_cache_tokens:
                    continue
                key = hashlib.sha256(json.dumps(prefix, sort_keys=True).encode()).hexdigest()
                now = time.monotonic()
                if self._cache.get(key, float("inf")) <= now:
                    read = size
                else:
                    written = size - read
                    self._cache.setdefault(key, now + self.ttft)
        return {"input_tokens": total - read - written, "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read}

    def tampered_thinking(self, body: dict[str, Any]) -> str | None:
        """Why a thinking block sent back in `body` is not one we issued, or None."""
        for message in body.get("messages", []):
            content = message.get("content")
            for block in content if isinstance(content, list) else []:
                if block.get("type") != "thinking":
                    continue
                issued = self.signatures.get(block.get("signature", ""))
                if issued is None or issued != block.get("thinking"):
                    return "messages: thinking blocks must be passed back unmodified"
        return None

    def render_blocks(self, reply: Reply) -> list[dict[str, Any]]:
        """Wire blocks for a reply (ids assigned here), paired with their stream text."""
        out = []
        for block in reply.blocks:
            if block.type == "text":
                out.append({"type": "text", "text": block.text})
            elif block.type == "thinking":
                signature = self.new_id("sig")
                with self._lock:
                    self.signatures[signature] = block.text
                out.append({"type": "thinking", "thinking": block.text, "signature": signature})
            else:
                out.append({"type": "tool_use", "id": self.new_id("toolu"), "name": block.name,
                            "_raw": block.raw_json})
        return out


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 makes the 6th simultaneous connection wait for a
    # SYN retransmit (~1 s), which would distort any --jobs 8 timing.
    request_queue_size = 128
    daemon_threads = True


def _parse_or_empty(raw: str, truncated: bool) -> Any:
    """Tool input for a non-streaming body, which must be valid JSON: input cut off by
    max_tokens arrives partially parsed (as the SDK's own partial parser would), and
    input that is simply invalid arrives as {}."""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        if not truncated:
            return {}
    try:
        return jiter.from_json(raw.encode(), partial_mode="trailing-strings")
    except ValueError:
        return {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streaming and keep-alive, like the real API
    # Headers and body go out in separate writes; with Nagle on, the second waits for
    # the client's delayed ACK (~40 ms per request), which would swamp any timing.
    disable_nagle_algorithm = True
    fake: FakeAnthropic

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry = LoggedRequest(
            path=urlsplit(self.path).path,
            headers={k: v for k, v in headers.items() if k not in _SECRET_HEADERS},
            had_api_key="x-api-key" in headers or "authorization" in headers,
            body=json.loads(raw or b"{}"), received_at=time.monotonic())
        with self.fake._lock:
            self.fake.log.append(entry)
        # Older SDKs send `x-api-key`, newer ones `Authorization: Bearer`; accept either.
        sent = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        if self.fake.api_key is not None and sent != self.fake.api_key:
            return self._error(entry, HttpError(401, "authentication_error", "invalid x-api-key"))
        if entry.path == "/v1/messages/count_tokens":
            total = sum(tokens(_strip_cache_control(p)) for p in _pieces(entry.body))
            return self._json(entry, 200, {"input_tokens": total})
        if entry.path != "/v1/messages":
            return self._error(entry, HttpError(404, "not_found_error", f"no route {entry.path}"))
        tampered = self.fake.tampered_thinking(entry.body)
        if tampered:
            return self._error(entry, HttpError(400, "invalid_request_error", tampered))
        item = self.fake.next_item(entry.body)
        if isinstance(item, HttpError):
            return self._error(entry, item)
        time.sleep(self.fake.ttft)
        if entry.stream:
            self._stream(entry, item)
        else:
            self._message(entry, item)

    # ------------------------------------------------------------------ plain responses

    def _json(self, entry: LoggedRequest, status: int, payload: Any,
              extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        entry.status = status
        entry.outcome = entry.outcome or ("ok" if status == 200 else f"http {status}")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", self.fake.new_id("req"))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, entry: LoggedRequest, err: HttpError) -> None:
        body = {"type": "error", "error": {"type": err.error_type, "message": err.message}}
        self._json(entry, err.status, body, err.headers)

    def _drop(self, entry: LoggedRequest) -> None:
        entry.outcome = "dropped"
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _message(self, entry: LoggedRequest, reply: Reply) -> None:
        if reply.drop_after_events is not None:
            return self._drop(entry)
        usage = self.fake.input_usage(entry.body)
        content = []
        for block in self.fake.render_blocks(reply):
            if block["type"] == "tool_use":
                block["input"] = _parse_or_empty(block.pop("_raw"),
                                                 reply.stop_reason == "max_tokens")
            content.append(block)
        usage["output_tokens"] = max(1, tokens(json.dumps(content)))
        entry.usage = usage
        if self.fake.tokens_per_second:
            time.sleep(usage["output_tokens"] / self.fake.tokens_per_second)
        self._json(entry, 200, {
            "id": self.fake.new_id("msg"), "type": "message", "role": "assistant",
            "model": entry.body.get("model"), "content": content,
            "stop_reason": reply.stop_reason, "stop_sequence": None, "usage": usage})

    # ------------------------------------------------------------------ streaming

    def _stream(self, entry: LoggedRequest, reply: Reply) -> None:
        entry.status = 200
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self.fake.new_id("req"))
        self.end_headers()
        usage = self.fake.input_usage(entry.body)
        try:
            for count, (event, data) in enumerate(self._events(entry, reply, usage), 1):
                if event == "content_block_delta":
                    self._pace(data["delta"])
                if reply.drop_after_events is not None and count > reply.drop_after_events:
                    return self._drop(entry)
                if reply.error_event_after is not None and count > reply.error_event_after:
                    self._sse("error", {"type": "error", "error": {
                        "type": "overloaded_error", "message": "Overloaded"}})
                    entry.outcome = "stream error"
                    break
                self._sse(event, data)
            self.wfile.write(b"0\r\n\r\n")
            entry.outcome = entry.outcome or "ok"
        except (BrokenPipeError, ConnectionResetError):
            entry.outcome = "client went away"
            self.close_connection = True

    def _events(self, entry: LoggedRequest, reply: Reply, usage: dict[str, int]
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        yield "message_start", {"type": "message_start", "message": {
            "id": self.fake.new_id("msg"), "type": "message", "role": "assistant",
            "model": entry.body.get("model"), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}}
        yield "ping", {"type": "ping"}
        output = 1
        step = self.fake.chunk_tokens * CHARS_PER_TOKEN
        for index, block in enumerate(self.fake.render_blocks(reply)):
            if block["type"] == "thinking":
                yield from self._thinking_events(index, block)
                output += tokens(block["thinking"])
                continue
            raw = block.pop("_raw", None)
            start = {**block, "input": {}} if raw is not None else {**block, "text": ""}
            yield "content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": start}
            text = raw if raw is not None else block["text"]
            for i in range(0, len(text), step):
                delta = ({"type": "input_json_delta", "partial_json": text[i:i + step]}
                         if raw is not None else {"type": "text_delta", "text": text[i:i + step]})
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": delta}
            output += tokens(text)
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        entry.usage = {**usage, "output_tokens": output}
        yield "message_delta", {"type": "message_delta", "delta": {
            "stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output}}
        yield "message_stop", {"type": "message_stop"}

    def _thinking_events(self, index: int, block: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        # As the API streams it: empty start, thinking deltas, then the signature.
        yield "content_block_start", {"type": "content_block_start", "index": index,
                                      "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
        text, step = block["thinking"], self.fake.chunk_tokens * CHARS_PER_TOKEN
        for i in range(0, len(text), step):
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "thinking_delta", "thinking": text[i:i + step]}}
        yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                      "delta": {"type": "signature_delta", "signature": block["signature"]}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}

    def _pace(self, delta: dict[str, Any]) -> None:
        """Sleep as long as the model would take to produce this delta."""
        if self.fake.tokens_per_second:
            produced = tokens(delta.get("text") or delta.get("partial_json") or "")
            time.sleep(produced / self.fake.tokens_per_second)

    def _sse(self, event: str, data: dict[str, Any]) -> None:
        chunk = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
