"""A content-addressed store of every provider call.

Layout: one file per question, ``<store>/<request hash>.json``, holding the exact
request payload, the response, model, usage (including cache reads and writes),
cost, duration, provider name and a UTC timestamp. Because the name is the hash
of the payload, a rerun that asks the same question finds its answer, which is
what lets ``replay`` rebuild output byte-for-byte and an interrupted run resume.

Answers that were refused (an unsafe path, a missing file, tests that do not
collect) are never kept as transcripts: they go to ``<store>/rejected/``, for
inspection only, so the next run asks again (or re-reads the exchange file)
instead of replaying the same bad answer.

Files never contain credentials: payloads carry none, and ``put`` refuses to
write a transcript in which any configured secret appears verbatim (defence in
depth against a key pasted into a spec or a guidance block).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from allium.providers.base import Provider, ProviderError, Request, Response

FORMAT_VERSION = 1
_SECRET_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


@dataclass(frozen=True)
class Transcript:
    request_hash: str
    unit: str
    provider: str
    request: Mapping[str, Any]
    response: Response
    duration_s: float
    created_at: str

    @property
    def model(self) -> str:
        return self.response.model

    def to_dict(self) -> dict[str, Any]:
        usage = self.response.usage
        return {
            "format": FORMAT_VERSION,
            "request_hash": self.request_hash,
            "unit": self.unit,
            "provider": self.provider,
            "model": self.model,
            "usage": usage.to_dict(),
            "cost_usd": usage.cost_usd(self.model),
            "duration_s": round(self.duration_s, 3),
            "created_at": self.created_at,
            "request": self.request,
            "response": self.response.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transcript:
        return cls(data["request_hash"], data.get("unit", ""), data.get("provider", ""),
                   data["request"], Response.from_dict(data["response"]),
                   float(data.get("duration_s", 0.0)), data.get("created_at", ""))


class TranscriptStore:
    """A folder of transcripts keyed by request hash. Safe for concurrent writers:
    each file appears whole or not at all (temp file + ``os.replace``)."""

    def __init__(self, root: str | os.PathLike[str], secrets: Iterable[str] | None = None) -> None:
        self.root = Path(root)
        if secrets is None:
            secrets = (os.environ.get(name, "") for name in _SECRET_ENV)
        # Short strings would make the guard fire on ordinary text; real keys are long.
        self._secrets = tuple(s for s in secrets if len(s) >= 8)

    def path_for(self, request_hash: str) -> Path:
        if not request_hash.isalnum():  # the hash becomes a file name
            raise ValueError(f"not a request hash: {request_hash!r}")
        return self.root / f"{request_hash}.json"

    def __contains__(self, request_hash: object) -> bool:
        return isinstance(request_hash, str) and self.path_for(request_hash).is_file()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(p.stem for p in self.root.glob("*.json")))

    def get(self, request_hash: str) -> Transcript | None:
        path = self.path_for(request_hash)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:
            raise ProviderError(f"corrupt transcript {path}: not UTF-8 ({exc.reason} at byte {exc.start}); "
                                "delete it, or set it aside with --discard UNIT") from None
        try:
            return Transcript.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise ProviderError(f"corrupt transcript {path}: {exc}") from exc

    @property
    def rejected_root(self) -> Path:
        return self.root / "rejected"

    def reject(self, transcript: Transcript, reason: str) -> Path:
        """Keep a refused answer apart from the accepted ones, with why it was refused."""
        data = {**transcript.to_dict(), "rejected_because": reason}
        text = json.dumps(data, indent=2, ensure_ascii=True) + "\n"  # ASCII: any string survives
        if any(secret in text for secret in self._secrets):
            return self.rejected_root  # never write a credential, not even here
        path = self.rejected_root / f"{transcript.request_hash}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, text)
        return path

    def discard(self, request_hash: str) -> Path | None:
        """Move an accepted transcript to ``rejected/``; its path there, or None if there was none."""
        source = self.path_for(request_hash)
        if not source.is_file():
            return None
        target = self.rejected_root / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return target

    def put(self, transcript: Transcript) -> Path:
        # Key order is kept, not sorted, so a replayed response serialises to the same
        # bytes as the live one did.
        text = json.dumps(transcript.to_dict(), indent=2, ensure_ascii=False) + "\n"
        if any(secret in text for secret in self._secrets):
            raise ProviderError(f"refusing to record unit {transcript.unit!r}: the transcript "
                                "would contain an API credential", unit=transcript.unit)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ProviderError(f"refusing to record unit {transcript.unit!r}: the answer is not "
                                "valid Unicode text", unit=transcript.unit) from None
        path = self.path_for(transcript.request_hash)
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, text)
        return path


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


Check = Callable[[Request, Response], None]


class RecordingProvider:
    """Wraps a provider and records every accepted call in a store.

    With ``reuse=True`` a question already in the store is answered from it
    without calling the inner provider: this is how an interrupted run resumes
    without paying again for the units it had finished. ``check`` judges a
    fresh answer before it is recorded; one it refuses (by raising) goes to
    the store's ``rejected/`` folder instead, and the error propagates."""

    def __init__(self, inner: Provider, store: TranscriptStore, *, reuse: bool = False,
                 check: Check | None = None) -> None:
        self.inner = inner
        self.store = store
        self.reuse = reuse
        self.check = check
        self.name = getattr(inner, "name", type(inner).__name__)

    def complete(self, request: Request) -> Response:
        request_hash = request.request_hash()
        if self.reuse:
            existing = self.store.get(request_hash)
            if existing is not None:
                return existing.response
        started = time.monotonic()
        response = self.inner.complete(request)
        transcript = Transcript(
            request_hash=request_hash,
            unit=request.unit,
            provider=self.name,
            request=request.to_payload(),
            response=response,
            duration_s=time.monotonic() - started,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        if self.check is not None:
            try:
                self.check(request, response)
            except Exception as exc:
                self.store.reject(transcript, str(exc))
                raise
        self.store.put(transcript)
        return response
