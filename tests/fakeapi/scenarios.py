"""Ready-made script items for FakeAnthropic: answers and the faults the issue lists."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from tests.fakeapi.server import Block, HttpError, Reply

Files = Mapping[str, str] | Iterable[tuple[str, str]]


def _pairs(files: Files) -> list[tuple[str, str]]:
    return list(files.items()) if isinstance(files, Mapping) else list(files)


def write_file_block(path: str, content: str) -> Block:
    return Block("tool_use", raw_json=json.dumps({"path": path, "content": content}))


def text(message: str, stop_reason: str = "end_turn") -> Reply:
    return Reply([Block("text", text=message)], stop_reason)


def files(files: Files, note: str = "", stop_reason: str = "tool_use") -> Reply:
    """The model writes ``files`` (one write_file call each) and waits for tool results."""
    blocks = [Block("text", text=note)] if note else []
    blocks += [write_file_block(p, c) for p, c in _pairs(files)]
    return Reply(blocks, stop_reason)


def files_then_done(files_: Files, note: str = "") -> list[Reply]:
    """What a well-behaved model does: write files, then end its turn after the results."""
    return [files(files_, note), text("Done.")]


# ---------------------------------------------------------------------- HTTP faults


def rate_limited(retry_after: float = 0.05, *, header: str = "retry-after") -> HttpError:
    value = str(int(retry_after * 1000)) if header == "retry-after-ms" else str(retry_after)
    return HttpError(429, "rate_limit_error", "Number of request tokens has exceeded your "
                     "per-minute rate limit", {header: value})


def spend_limit() -> HttpError:
    return HttpError(429, "rate_limit_error", "You have reached your specified workspace API "
                     "usage limits. Your spend limit resets at the start of next month.")


def overloaded() -> HttpError:
    return HttpError(529, "overloaded_error", "Overloaded")


def server_error() -> HttpError:
    return HttpError(500, "api_error", "Internal server error")


def bad_request(message: str = "messages: at least one message is required") -> HttpError:
    return HttpError(400, "invalid_request_error", message)


# ---------------------------------------------------------------------- answer faults


def dropped(reply: Reply, after_events: int = 4) -> Reply:
    """The connection is cut after ``after_events`` SSE events (non-streaming: no answer)."""
    return Reply(reply.blocks, reply.stop_reason, drop_after_events=after_events)


def stream_error(reply: Reply, after_events: int = 3) -> Reply:
    """An ``overloaded_error`` event arrives in the middle of a 200 stream."""
    return Reply(reply.blocks, reply.stop_reason, error_event_after=after_events)


def truncated(complete: Files, partial_path: str, partial_content: str, keep: float = 0.5
              ) -> Reply:
    """``max_tokens`` hit in the middle of the write_file call for ``partial_path``."""
    blocks = [write_file_block(p, c) for p, c in _pairs(complete)]
    raw = json.dumps({"path": partial_path, "content": partial_content})
    cut = max(len(raw) - len(partial_content) // 2, int(len(raw) * keep))
    blocks.append(Block("tool_use", raw_json=raw[: min(cut, len(raw) - 2)]))
    return Reply(blocks, "max_tokens")


def truncated_text(message: str = "I will now write the") -> Reply:
    return Reply([Block("text", text=message)], "max_tokens")


def malformed_json(path: str = "pkg/broken.py") -> Reply:
    """A write_file call whose input is not valid JSON (a stray quote breaks it)."""
    return Reply([Block("tool_use", raw_json='{"path": "' + path + '", "content": "x = "1"}')],
                 "tool_use")


def missing_field(path: str = "pkg/nocontent.py") -> Reply:
    return Reply([Block("tool_use", raw_json=json.dumps({"path": path}))], "tool_use")


def unknown_tool() -> Reply:
    return Reply([Block("tool_use", name="run_shell", raw_json='{"cmd": "rm -rf /"}')],
                 "tool_use")


def path_traversal(path: str = "../../outside/evil.py") -> Reply:
    """A well-formed call with a hostile path. Providers pass it on; the writer refuses it."""
    return files({path: "print('escaped')\n"})


def refusal(message: str = "I can't help with that.") -> Reply:
    return Reply([Block("text", text=message)], "refusal")
