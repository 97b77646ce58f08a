"""LLM providers: one small interface (``Provider.complete``) and the things that wrap it.

* ``anthropic.AnthropicProvider`` — Claude via the official SDK (imported lazily);
* ``transcripts.RecordingProvider`` / ``TranscriptStore`` — every call on disk, by request hash;
* ``replay.ReplayProvider`` — answers from transcripts only;
* ``exchange.ExchangeProvider`` — a person or coding agent answers through a folder.
"""

from __future__ import annotations

from allium.providers.base import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_MODEL,
    PRICES,
    PRICES_AS_OF,
    WRITE_FILE_TOOL,
    MalformedToolCallError,
    Progress,
    ProgressCallback,
    Provider,
    ProviderError,
    RefusalError,
    Request,
    Response,
    TranscriptMissingError,
    TruncatedError,
    Usage,
    resolve_max_tokens,
    resolve_model,
)

__all__ = [
    "DEFAULT_MAX_TOKENS", "DEFAULT_MODEL", "PRICES", "PRICES_AS_OF", "WRITE_FILE_TOOL",
    "MalformedToolCallError", "Progress", "ProgressCallback", "Provider", "ProviderError",
    "RefusalError", "Request", "Response", "TranscriptMissingError", "TruncatedError", "Usage",
    "resolve_max_tokens", "resolve_model",
]
