"""A small ASGI app that does per request what a ledger node's REST hot path does.

    python -m benchmarks.showcase.asgi_app --port P [--loop asyncio|uvloop]

It reads a JSON body of about 200 bytes, decodes it with msgspec into a
Struct, applies it to an in-memory balance (the trivial work), and answers
200 with a msgspec-encoded outcome of about 300 bytes, over keep-alive. It
has no framework, like the generated node (generated/ledger/node_http.py), so
what benchmarks/asgi_servers.py measures is the server and event loop around
it. Run as a module it serves itself with uvicorn configured as the node
configures it (httptools, no lifespan, no access log); granian imports `app`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec


class Request(msgspec.Struct):
    client_id: str
    request_id: str
    kind: str
    account_id: str
    counterparty_id: str | None
    owner: str | None
    amount_minor: int


class Outcome(msgspec.Struct):
    request_id: str
    client_id: str
    kind: str
    verdict: str
    reason: str | None
    account_id: str
    counterparty_id: str | None
    account_delta_minor: int
    counterparty_delta_minor: int
    balance_minor: int
    sequence: int
    epoch: int
    replayed: bool


def sample_body(i: int) -> bytes:
    """A request body of the size the load client sends the node (~200 bytes)."""
    return msgspec.json.encode(Request(f"bench-client-{i % 64:04d}", f"request-{i:012d}", "transfer",
                                       f"bench-account-{i % 1000:06d}", f"bench-account-{(i * 7) % 1000:06d}",
                                       None, 1 + i % 5000))


_decode = msgspec.json.Decoder(Request).decode
_encode = msgspec.json.Encoder().encode
_balances: dict[str, int] = {}
_sequence = [0]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_BAD = {"type": "http.response.start", "status": 400, "headers": [(b"content-length", b"0")]}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":  # granian's ASGI interface runs it; uvicorn here does not
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["method"] != "POST":  # readiness probes
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    try:
        req = _decode(b"".join(chunks))
    except msgspec.ValidationError:
        await send(_BAD)
        await send({"type": "http.response.body", "body": b""})
        return
    balance = _balances.get(req.account_id, 0) + req.amount_minor
    _balances[req.account_id] = balance
    _sequence[0] += 1
    body = _encode(Outcome(req.request_id, req.client_id, req.kind, "accepted", None, req.account_id,
                           req.counterparty_id, req.amount_minor, 0, balance, _sequence[0], 1, False))
    await send({"type": "http.response.start", "status": 200,
                "headers": _JSON_HEADERS + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop=args.loop, http="httptools", lifespan="off",
                log_level="warning", access_log=False, timeout_keep_alive=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
