"""The provider interface: a request in, a response out, usage reported.

Everything else in this package wraps one method, ``Provider.complete``. A
``Request`` is the exact Messages API payload (plus the unit name, which is
*not* part of the payload), so its hash identifies the question asked and can
key the transcript store. A ``Response`` carries the assistant's content
blocks as plain dicts and the files it wrote through the ``write_file`` tool.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from allium.errors import AlliumError

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_MAX_TOKENS = 32_000
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}

# The one tool the generator offers. `strict` asks the API to guarantee that
# inputs match the schema; we still validate every call ourselves because a
# truncated or replayed answer bypasses that guarantee.
WRITE_FILE_TOOL: dict[str, Any] = {
    "name": "write_file",
    "description": (
        "Write one complete file of the generated package. Call once per file, "
        "with the file's whole content; paths are relative to the output root."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Relative path, '/'-separated."},
            "content": {"type": "string", "description": "The entire file content."},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    },
    "strict": True,
}


# --------------------------------------------------------------------------- errors


class ProviderError(AlliumError):
    """A provider could not produce a usable response."""

    def __init__(self, message: str, *, unit: str | None = None, status: int | None = None,
                 attempts: int | None = None) -> None:
        super().__init__(message)
        self.unit = unit
        self.status = status
        self.attempts = attempts


class RefusalError(ProviderError):
    """The model declined to answer (stop_reason ``refusal``)."""


class TruncatedError(ProviderError):
    """The answer kept hitting ``max_tokens`` after the allowed continuations."""


class MalformedToolCallError(ProviderError):
    """A ``write_file`` call whose input is not exactly ``{path: str, content: str}``."""


class TranscriptMissingError(ProviderError):
    """Replay was asked a question that was never recorded."""

    def __init__(self, unit: str, request_hash: str, where: str) -> None:
        super().__init__(
            f"no transcript for unit {unit!r} (request hash {request_hash}) in {where}; "
            "the spec, templates or model changed since recording: run with a live or "
            "exchange provider to answer it",
            unit=unit,
        )
        self.request_hash = request_hash


# --------------------------------------------------------------------------- pricing

# USD per million tokens, from https://www.anthropic.com/pricing and the model pages at
# https://platform.claude.com/docs/en/models/ as of PRICES_AS_OF. Cache writes are the
# 5-minute TTL rate (1.25x input), cache reads 0.1x input.
PRICES_AS_OF = "2026-11-29"


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_write: float
    cache_read: float


PRICES: dict[str, Price] = {
    "claude-opus-5-5": Price(4.0, 20.0, 5.0, 0.40),
    "claude-opus-5": Price(5.0, 25.0, 6.25, 0.50),
    "claude-sonnet-5-5": Price(2.0, 10.0, 2.50, 0.20),
    "claude-sonnet-5": Price(2.0, 10.0, 2.50, 0.20),
    "claude-opus-4-8": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-6": Price(5.0, 25.0, 6.25, 0.50),
    "claude-sonnet-4-6": Price(3.0, 15.0, 3.75, 0.30),
    "claude-opus-4-5": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-1": Price(15.0, 75.0, 18.75, 1.50),
    "claude-opus-4": Price(15.0, 75.0, 18.75, 1.50),
    "claude-sonnet-4-5": Price(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4": Price(3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": Price(1.0, 5.0, 1.25, 0.10),
    "claude-3-5-haiku": Price(0.80, 4.0, 1.0, 0.08),
}


def price_for(model: str) -> Price | None:
    """The price of ``model``; dated ids (``claude-sonnet-4-5-20250929``) match their family.

    The longest matching prefix wins so that ``claude-opus-4-1`` is not priced as ``claude-opus-4``.
    """
    matches = [name for name in PRICES if model == name or model.startswith(name + "-")]
    return PRICES[max(matches, key=len)] if matches else None


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
        )

    @property
    def total_input_tokens(self) -> int:
        """All input tokens, however billed (the API reports the three parts separately)."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def cost_usd(self, model: str) -> float | None:
        """Cost at list price, or None when the model is not in the price table."""
        price = price_for(model)
        if price is None:
            return None
        return (
            self.input_tokens * price.input
            + self.output_tokens * price.output
            + self.cache_creation_input_tokens * price.cache_write
            + self.cache_read_input_tokens * price.cache_read
        ) / 1_000_000

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        # The API sends null for cache fields it does not apply; treat as zero.
        return cls(**{k: int(data.get(k) or 0) for k in cls().to_dict()})


def canonical_json(value: Any) -> str:
    """The one serialisation used for hashing: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Request:
    """One generation question. ``system[:cached_prefix_blocks]`` is the stable prefix
    shared by every unit; the provider marks its last block for prompt caching."""

    model: str
    system: tuple[str, ...]
    messages: tuple[Mapping[str, Any], ...]
    max_tokens: int = DEFAULT_MAX_TOKENS
    unit: str = ""
    cached_prefix_blocks: int = 1
    tools: tuple[Mapping[str, Any], ...] = (WRITE_FILE_TOOL,)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples so the request cannot change after hashing.
        for name in ("system", "messages", "tools"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not 0 <= self.cached_prefix_blocks <= len(self.system):
            raise ValueError("cached_prefix_blocks must be within the system blocks")

    @classmethod
    def simple(cls, *, unit: str, prefix: str | Sequence[str], prompt: str,
               model: str | None = None, max_tokens: int | None = None) -> Request:
        """A request with a cacheable prefix (one or more blocks) and one user message."""
        blocks = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        return cls(model=resolve_model(model), system=blocks,
                   messages=({"role": "user", "content": prompt},),
                   max_tokens=resolve_max_tokens(max_tokens), unit=unit,
                   cached_prefix_blocks=len(blocks))

    def system_blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text} for text in self.system]
        if self.cached_prefix_blocks:
            blocks[self.cached_prefix_blocks - 1]["cache_control"] = dict(EPHEMERAL)
        return blocks

    def to_payload(self) -> dict[str, Any]:
        """The exact Messages API body (minus transport flags such as ``stream``).

        Deliberately no temperature/top_p/top_k and no assistant prefill: current
        models reject them, and the answer must not depend on them anyway."""
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": self.system_blocks(),
            "messages": [json.loads(canonical_json(m)) for m in self.messages],
        }
        if self.tools:
            payload["tools"] = [json.loads(canonical_json(t)) for t in self.tools]
        return payload

    def request_hash(self) -> str:
        """sha256 of the canonical payload. Never includes credentials: the payload has none."""
        return hashlib.sha256(canonical_json(self.to_payload()).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Response:
    content: tuple[Mapping[str, Any], ...]
    files: tuple[tuple[str, str], ...]
    stop_reason: str
    model: str
    usage: Usage = Usage()
    turns: int = 1

    @property
    def text(self) -> str:
        return "".join(str(b.get("text", "")) for b in self.content if b.get("type") == "text")

    def cost_usd(self) -> float | None:
        return self.usage.cost_usd(self.model)

    def to_dict(self) -> dict[str, Any]:
        return {
            "content": [dict(b) for b in self.content],
            "files": [{"path": p, "content": c} for p, c in self.files],
            "stop_reason": self.stop_reason,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "turns": self.turns,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Response:
        return cls(
            content=tuple(data["content"]),
            files=tuple((f["path"], f["content"]) for f in data["files"]),
            stop_reason=data["stop_reason"],
            model=data["model"],
            usage=Usage.from_dict(data.get("usage", {})),
            turns=int(data.get("turns", 1)),
        )


@dataclass(frozen=True)
class Progress:
    """What a live provider reports while it works, for the per-unit display.

    ``kind`` is ``"tokens"`` (``output_tokens`` so far, an estimate until the turn
    ends), ``"retry"`` (``attempt`` failed; next try after ``delay`` seconds),
    or ``"continue"`` (a new turn: tool results or resuming after max_tokens)."""

    unit: str
    kind: str
    output_tokens: int = 0
    attempt: int = 0
    delay: float = 0.0
    message: str = ""


ProgressCallback = Callable[[Progress], None]


@runtime_checkable
class Provider(Protocol):
    """Anything that can answer a ``Request``."""

    name: str

    def complete(self, request: Request) -> Response: ...


# --------------------------------------------------------------------------- helpers


def resolve_model(explicit: str | None = None) -> str:
    """Argument, then ``ALLIUM_MODEL``, then ``DEFAULT_MODEL``."""
    return explicit or os.environ.get("ALLIUM_MODEL") or DEFAULT_MODEL


def resolve_max_tokens(explicit: int | None = None) -> int:
    """Argument, then ``ALLIUM_MAX_TOKENS``, then ``DEFAULT_MAX_TOKENS``."""
    if explicit is not None:
        return explicit
    env = os.environ.get("ALLIUM_MAX_TOKENS")
    return int(env) if env else DEFAULT_MAX_TOKENS


def validate_write_file(block: Mapping[str, Any], unit: str = "") -> tuple[str, str]:
    """The (path, content) of one ``write_file`` tool_use block, or MalformedToolCallError.

    Path safety (absolute, ``..``) is deliberately not judged here: the writer
    owns that decision and must see the path the model really asked for."""
    name, data = block.get("name"), block.get("input")
    where = f"unit {unit!r}: " if unit else ""
    if name != "write_file":
        raise MalformedToolCallError(f"{where}model called unknown tool {name!r}", unit=unit)
    if not isinstance(data, Mapping):
        raise MalformedToolCallError(f"{where}write_file input is not a JSON object: {data!r:.200}",
                                     unit=unit)
    if set(data) != {"path", "content"}:
        raise MalformedToolCallError(
            f"{where}write_file input must have exactly 'path' and 'content', got {sorted(data)}",
            unit=unit)
    path, content = data["path"], data["content"]
    if not isinstance(path, str) or not isinstance(content, str) or not path:
        raise MalformedToolCallError(f"{where}write_file path and content must be strings "
                                     f"(path={path!r:.100})", unit=unit)
    return path, content


def extract_files(blocks: Sequence[Mapping[str, Any]], unit: str = "") -> list[tuple[str, str]]:
    """Files written by the tool_use blocks in ``blocks``, in call order."""
    return [validate_write_file(b, unit) for b in blocks if b.get("type") == "tool_use"]


def merge_files(files: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Later writes of a path replace earlier ones; a path keeps its first position."""
    merged: dict[str, str] = {}
    for path, content in files:
        merged[path] = content
    return tuple(merged.items())
