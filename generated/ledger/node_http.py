"""The node's HTTP API as a plain ASGI callable (no web framework, JSON via msgspec).

Surfaces ClientApi (@guarantee JsonShapes), PeerVotes (@guarantee
AuthenticatedPeers) and ServiceDocument (@guarantee OpenApiMatchesApiSpec).
No route ever answers 500: an unforeseen error is logged with its traceback
and answered 503 (settled decision).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from ledger.core import Envelope
from ledger.node import Ballot, Config
from ledger.node_http_schema import EnvelopeInvalid, envelope_from_json, openapi_document
from ledger.node_pipeline import Answer, unavailable
from ledger.node_votes import ballot_to_wire, body_is_signed

__all__ = ["NodeApp", "NodeService", "openapi_document", "VOTE_BODY_LIMIT"]

log = logging.getLogger("ledger.node.http")

VOTE_BODY_LIMIT = 8 * 1024 * 1024  # a full batch of items and reads; peers are authenticated first
FORWARDED_HEADER = "x-ledger-forwarded"


class NodeService(Protocol):
    """What the HTTP layer asks of the running node (ledger.node_runtime.NodeRuntime)."""

    config: Config
    keys: Mapping[str, bytes]

    async def submit_rest(self, envelope: Envelope, forwarded: bool) -> Answer: ...
    async def request_status(self, client_id: str, request_id: str) -> Answer: ...
    async def account(self, account_id: str) -> Answer: ...
    def health(self) -> tuple[int, dict[str, Any]]: ...
    async def nodes(self) -> list[dict[str, Any]]: ...
    async def cast_vote(self, batch_id: str, epoch: int, items: Sequence[Envelope],
                        reads: Sequence[Mapping[str, Any]]) -> Ballot | None: ...


@dataclass
class Reply:
    """One HTTP response."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class BodyTooLarge(Exception):
    """The body passed its limit: 413."""


class ClientGone(Exception):
    """The client disconnected before sending its whole body: nobody to answer."""


def json_reply(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, msgspec.json.encode(body), headers=dict(headers or {}))


def error_reply(status: int, error: str, detail: str) -> Reply:
    headers = {"Retry-After": "1"} if status == 503 else {}
    return json_reply(status, {"error": error, "detail": detail}, headers)


def answer_reply(answer: Answer) -> Reply:
    return json_reply(answer.status, answer.body, answer.headers)


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes:
    """The whole request body, or BodyTooLarge as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _is_json(headers: Mapping[str, str]) -> bool:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


OUTCOME_LABELS = ("accepted", "rejected", "replayed", "deferred", "conflict", "refused", "invalid")


class NodeApp:
    """The ASGI application of one node."""

    def __init__(self, service: NodeService) -> None:
        self.service = service
        self.requests: Counter[str] = Counter({label: 0 for label in OUTCOME_LABELS})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return None
        try:
            reply = await self.dispatch(scope, receive)
        except ClientGone:
            reply = error_reply(400, "incomplete_body", "the client went away")
        except Exception:  # never a 500: log the bug, answer 503
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            reply = error_reply(503, "internal_error", "the node could not answer; retry")
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [(b"content-type", reply.content_type.encode()),
                                *((k.lower().encode(), v.encode()) for k, v in reply.headers.items())]})
        await send({"type": "http.response.body", "body": reply.body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def dispatch(self, scope: Mapping[str, Any], receive: Any) -> Reply:
        method, path = scope["method"], scope["path"]
        # Split the raw path so an id containing an encoded "/" stays one segment.
        raw = scope.get("raw_path") or path.encode("utf-8")
        parts = [unquote(p.decode("latin-1")) for p in raw.split(b"?", 1)[0].split(b"/") if p]
        if path == "/v1/requests":
            return await self._only(method, "POST", lambda: self.post_request(scope, receive))
        if path == "/internal/votes":
            return await self._only(method, "POST", lambda: self.post_votes(scope, receive))
        if len(parts) == 4 and parts[:2] == ["v1", "requests"]:
            return await self._only(method, "GET", lambda: self._answer(
                self.service.request_status(parts[2], parts[3])))
        if len(parts) == 3 and parts[:2] == ["v1", "accounts"]:
            return await self._only(method, "GET", lambda: self._answer(self.service.account(parts[2])))
        simple = {"/healthz": self.get_health, "/v1/nodes": self.get_nodes, "/metrics": self.get_metrics,
                  "/openapi.json": self.get_openapi}
        if path in simple:
            return await self._only(method, "GET", simple[path])
        return error_reply(404, "not_found", f"no route {path}")

    async def _only(self, method: str, allowed: str, handler: Callable[[], Awaitable[Reply]]) -> Reply:
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            return Reply(405, msgspec.json.encode({"error": "method_not_allowed", "detail": f"use {allowed}"}),
                         headers={"Allow": allowed})
        return await handler()

    async def _answer(self, pending: Awaitable[Answer]) -> Reply:
        return answer_reply(await pending)

    # POST /v1/requests ------------------------------------------------------------------------

    async def post_request(self, scope: Mapping[str, Any], receive: Any) -> Reply:
        """ClientApi: 415, 413, 400, 422 before anything is recorded; then the pipeline's answer."""
        headers = _headers(scope)
        if not _is_json(headers):
            return self._count(error_reply(415, "unsupported_media_type", "send application/json"))
        limit = self.service.config.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return self._count(error_reply(413, "body_too_large", f"at most {limit} bytes"))
        try:
            raw = await read_body(receive, limit)
        except BodyTooLarge:
            return self._count(error_reply(413, "body_too_large", f"at most {limit} bytes"))
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            return self._count(error_reply(400, "bad_json", str(exc)))
        try:
            envelope = envelope_from_json(data)
        except EnvelopeInvalid as exc:
            return self._count(error_reply(422, "invalid_request", str(exc)))
        answer = await self.service.submit_rest(envelope, forwarded=FORWARDED_HEADER in headers)
        return self._count(answer_reply(answer), answer)

    def _count(self, reply: Reply, answer: Answer | None = None) -> Reply:
        """ledger_requests_total{outcome=...} for GET /metrics."""
        if answer is not None and reply.status == 200:
            label = "replayed" if answer.body.get("replayed") else str(answer.body.get("verdict"))
        else:
            label = {202: "deferred", 409: "conflict", 503: "refused"}.get(reply.status, "invalid")
        self.requests[label if label in OUTCOME_LABELS else "invalid"] += 1
        return reply

    # POST /internal/votes ---------------------------------------------------------------------

    async def post_votes(self, scope: Mapping[str, Any], receive: Any) -> Reply:
        """PeerVotes (@guarantee AuthenticatedPeers): 401 unless signed by a configured node."""
        headers = _headers(scope)
        try:
            raw = await read_body(receive, VOTE_BODY_LIMIT)
        except BodyTooLarge:
            return error_reply(413, "body_too_large", f"at most {VOTE_BODY_LIMIT} bytes")
        sender, signature = headers.get("x-ledger-node"), headers.get("x-ledger-signature")
        if not body_is_signed(self.service.keys, sender, signature, raw):
            log.warning("refused an unauthenticated vote request (X-Ledger-Node=%r)", sender)
            return error_reply(401, "unauthenticated", "a configured node's signed request is required")
        if not _is_json(headers):
            return error_reply(415, "unsupported_media_type", "send application/json")
        try:
            data = msgspec.json.decode(raw)
            batch_id, epoch = data["batch_id"], data["epoch"]
            items = [envelope_from_json(item) for item in data["items"]]
            reads = list(data["reads"])
            if not isinstance(batch_id, str) or not isinstance(epoch, int) or not all(
                    isinstance(r, dict) for r in reads):
                raise EnvelopeInvalid("batch_id, epoch or reads have the wrong type")
        except msgspec.DecodeError as exc:
            return error_reply(400, "bad_json", str(exc))
        except (EnvelopeInvalid, KeyError, TypeError) as exc:
            return error_reply(422, "invalid_votes_request", str(exc))
        ballot = await self.service.cast_vote(batch_id, epoch, items, reads)
        if ballot is None:
            return error_reply(503, "unavailable", "this node is not serving")
        return json_reply(200, ballot_to_wire(ballot))

    # Reads ------------------------------------------------------------------------------------

    async def get_health(self) -> Reply:
        status, body = self.service.health()
        return json_reply(status, body)

    async def get_nodes(self) -> Reply:
        return json_reply(200, await self.service.nodes())

    async def get_metrics(self) -> Reply:
        lines = ["# HELP ledger_requests_total REST submissions by outcome",
                 "# TYPE ledger_requests_total counter"]
        lines += [f'ledger_requests_total{{outcome="{k}"}} {v}' for k, v in sorted(self.requests.items())]
        return Reply(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")

    async def get_openapi(self) -> Reply:
        return json_reply(200, openapi_document())


def refusal(detail: str) -> Answer:
    """The 503 a node answers when it cannot take a submission (RefuseWhenNotServing)."""
    return unavailable("unavailable", detail)
