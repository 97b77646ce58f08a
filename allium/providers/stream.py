"""One API turn, assembled from a Messages event stream or a whole message.

We accumulate raw events ourselves rather than use the SDK's ``MessageStream``
helper because that helper raises a bare ``ValueError`` as soon as tool-input
JSON fails to parse, which would hide the one case we must tell apart: a
``write_file`` call cut off by ``max_tokens`` (drop it and ask again) versus a
genuinely malformed call (an error).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from allium.providers.base import MalformedToolCallError, Usage

_PATH_IN_JSON = re.compile(r'"path"\s*:\s*("(?:[^"\\]|\\.)*")')
_CHARS_PER_TOKEN = 4  # only for the live progress estimate; the API reports the real count


@dataclass
class Turn:
    """The assistant's reply in one API round trip."""

    blocks: list[dict[str, Any]]
    stop_reason: str | None
    model: str
    usage: Usage
    # tool_use block index -> the raw input JSON that did not parse (its block has input {})
    invalid: dict[int, str] = field(default_factory=dict)

    def text(self) -> str:
        return "".join(b.get("text", "") for b in self.blocks if b.get("type") == "text")

    def check_complete(self, unit: str) -> None:
        """Raise if any tool call's input was not valid JSON."""
        for index, raw in self.invalid.items():
            raise MalformedToolCallError(
                f"unit {unit!r}: tool call #{index} "
                f"({self.blocks[index].get('name')}) has invalid JSON input: {raw[:200]!r}",
                unit=unit)

    def without_truncated_tail(self, unit: str = "") -> tuple[list[dict[str, Any]], str | None]:
        """The blocks worth keeping after a ``max_tokens`` stop, and the path of the
        file whose call was cut off (None if the cut fell elsewhere).

        The last block, if it is a tool call, is dropped even when its JSON happens
        to parse: a non-streaming answer may carry a partial input we cannot tell
        from a complete one, and re-requesting one file is cheap."""
        blocks = list(self.blocks)
        dropped: str | None = None
        if blocks and blocks[-1].get("type") == "tool_use":
            index = len(blocks) - 1
            dropped = _path_of(blocks.pop(), self.invalid.get(index, ""))
        Turn(blocks, self.stop_reason, self.model, self.usage,
             {i: raw for i, raw in self.invalid.items() if i < len(blocks)}).check_complete(unit)
        return sendable(blocks), dropped


def sendable(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks fit to be sent back as an assistant turn: the API rejects empty text blocks."""
    return [b for b in blocks if b.get("type") != "text" or str(b.get("text", "")).strip()]


def _path_of(block: Mapping[str, Any], raw: str) -> str | None:
    data = block.get("input")
    if isinstance(data, Mapping) and isinstance(data.get("path"), str):
        return data["path"]
    match = _PATH_IN_JSON.search(raw)
    if match:
        try:
            return str(json.loads(match.group(1)))
        except ValueError:
            return None
    return None


def _param_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """A response block reduced to the shape the API accepts back as input."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block["id"], "name": block["name"],
                "input": block.get("input", {})}
    return {k: v for k, v in block.items() if v is not None}


def _parse_input(raw: str) -> dict[str, Any] | None:
    """Tool input from its streamed JSON; None if invalid or not an object."""
    if not raw.strip():
        return {}  # a tool with no arguments streams no JSON at all
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def turn_from_message(message: Mapping[str, Any]) -> Turn:
    """A Turn from a non-streaming ``Message`` (as a JSON dict)."""
    blocks, invalid = [], {}
    for index, block in enumerate(message.get("content") or []):
        param = _param_block(block)
        if param.get("type") == "tool_use" and not isinstance(param["input"], dict):
            invalid[index] = json.dumps(param["input"])
            param["input"] = {}
        blocks.append(param)
    return Turn(blocks, message.get("stop_reason"), str(message.get("model") or ""),
                Usage.from_dict(message.get("usage") or {}), invalid)


class StreamAccumulator:
    """Feeds on raw stream events (as JSON dicts) and builds a Turn."""

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json: dict[int, str] = {}
        self.model = ""
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.finished = False
        self._chars = 0
        self._final_usage = False

    @property
    def output_tokens(self) -> int:
        """Exact once the turn's usage has arrived, an estimate before."""
        reported = int(self.usage.get("output_tokens") or 0)
        return reported if self._final_usage else max(reported, self._chars // _CHARS_PER_TOKEN)

    def feed(self, event: Mapping[str, Any]) -> bool:
        """Take one event; True when the output-token count may have moved."""
        kind = event.get("type")
        if kind == "message_start":
            message = event["message"]
            self.model = str(message.get("model") or "")
            self.usage = dict(message.get("usage") or {})
        elif kind == "content_block_start":
            block = _param_block(event["content_block"])
            if block["type"] == "tool_use":
                block["input"], self.json[event["index"]] = {}, ""
            self.blocks[event["index"]] = block
        elif kind == "content_block_delta":
            return self._delta(event["index"], event["delta"])
        elif kind == "content_block_stop":
            self._finish_block(event["index"])
        elif kind == "message_delta":
            self.stop_reason = event["delta"].get("stop_reason")
            # Usage here is cumulative; absent or null fields keep their message_start value.
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            self._final_usage = True
            return True
        elif kind == "message_stop":
            self.finished = True
        return False

    def _delta(self, index: int, delta: Mapping[str, Any]) -> bool:
        if delta.get("type") == "text_delta":
            self.blocks[index]["text"] += delta["text"]
            self._chars += len(delta["text"])
        elif delta.get("type") == "input_json_delta":
            self.json[index] += delta["partial_json"]
            self._chars += len(delta["partial_json"])
        elif delta.get("type") == "thinking_delta":
            # Kept whole, signature included: a thinking block sent back in the
            # next turn (tool results, continuations) must be unmodified.
            self.blocks[index]["thinking"] = self.blocks[index].get("thinking", "") + delta["thinking"]
            self._chars += len(delta["thinking"])
        elif delta.get("type") == "signature_delta":
            self.blocks[index]["signature"] = self.blocks[index].get("signature", "") + delta["signature"]
            return False
        else:
            return False
        return True

    def _finish_block(self, index: int) -> None:
        if index in self.json:
            parsed = _parse_input(self.json[index])
            self.blocks[index]["input"] = parsed if parsed is not None else {}

    def turn(self) -> Turn:
        invalid = {}
        ordered = [self.blocks[i] for i in sorted(self.blocks)]
        positions = {index: pos for pos, index in enumerate(sorted(self.blocks))}
        for index, raw in self.json.items():
            parsed = _parse_input(raw)
            if parsed is None:
                invalid[positions[index]] = raw
            else:
                self.blocks[index]["input"] = parsed
        return Turn(ordered, self.stop_reason, self.model, Usage.from_dict(self.usage), invalid)
