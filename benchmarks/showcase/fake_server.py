"""A small stand-in for one ledger node, for measuring and testing the harness.

    python -m benchmarks.showcase.fake_server --port P [--mode trivial|ledger] [--bug lose_every=N]

`trivial` answers every request with a canned 200 at once: the load client's
own ceiling is measured against it. `ledger` serves node.allium's ClientApi
shapes from the reference model in memory, so the harness can be exercised
end to end without the real service; `--bug` makes it misbehave on purpose
(forget every Nth acknowledged outcome) so tests can prove the harness notices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.showcase.model import Envelope, Ledger  # noqa: E402

CANNED = (b'{"request_id":"x","client_id":"c","kind":"deposit","verdict":"accepted","reason":null,'
          b'"account_id":"a","counterparty_id":null,"account_delta_minor":1,'
          b'"counterparty_delta_minor":0,"sequence":1,"epoch":1,"replayed":false}')


class Service:
    def __init__(self, mode: str, lose_every: int = 0) -> None:
        self.mode, self.lose_every = mode, lose_every
        self.ledger, self.outcomes, self.seq = Ledger(), {}, 0

    def handle(self, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
        if self.mode == "trivial":
            return 200, CANNED
        parts = path.strip("/").split("/")
        if method == b"POST" and parts == ["v1", "requests"]:
            return self.submit(json.loads(body))
        if method == b"GET" and parts[:2] == ["v1", "requests"] and len(parts) == 4:
            row = self.outcomes.get((parts[2], parts[3]))
            return (200, json.dumps(row).encode()) if row else (404, b'{"error":"unknown_request"}')
        if method == b"GET" and parts[:2] == ["v1", "accounts"] and len(parts) == 3:
            acct = self.ledger.accounts.get(parts[2])
            if acct is None:
                return 404, b'{"error":"unknown_account"}'
            return 200, json.dumps({"account_id": parts[2], "owner": acct.owner, "status": acct.status,
                                    "balance_minor": acct.balance_minor, "version": acct.version}).encode()
        if method == b"GET" and parts == ["healthz"]:
            return 200, b'{"node_id":"n1","status":"leader","epoch":1,"leader":"n1"}'
        return 404, b'{"error":"not_found"}'

    def submit(self, doc: dict) -> tuple[int, bytes]:
        env = Envelope(doc["client_id"], doc["request_id"], doc["kind"], doc["account_id"],
                       doc.get("counterparty_id"), doc.get("owner"), doc["amount_minor"])
        prior = self.outcomes.get(env.key)
        if prior is not None:
            return 200, json.dumps(dict(prior, replayed=True)).encode()
        d = self.ledger.evaluate(env)
        self.ledger.apply(env, d, env.client_id)
        self.seq += 1
        row = {"request_id": env.request_id, "client_id": env.client_id, "kind": env.kind,
               "verdict": d.verdict, "reason": d.reason, "account_id": env.account_id,
               "counterparty_id": env.counterparty_id, "account_delta_minor": d.account_delta_minor,
               "counterparty_delta_minor": d.counterparty_delta_minor, "sequence": self.seq,
               "epoch": 1, "replayed": False}
        if not (self.lose_every and self.seq % self.lose_every == 0 and d.verdict == "rejected"):
            self.outcomes[env.key] = row
        return 200, json.dumps(row).encode()


class _Http(asyncio.Protocol):
    def __init__(self, service: Service) -> None:
        self.service, self.parser = service, httptools.HttpRequestParser(self)
        self.url, self.body = b"", []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status, payload = self.service.handle(self.parser.get_method(), self.url.decode(), b"".join(self.body))
        self.url, self.body = b"", []
        reason = {200: b"OK", 404: b"Not Found"}.get(status, b"X")
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (status, reason, len(payload), payload))


async def serve(port: int, service: Service) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _Http(service), "127.0.0.1", port)
    print(json.dumps({"ready": True, "port": port}), flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["trivial", "ledger"], default="trivial")
    parser.add_argument("--lose-every", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(args.port, Service(args.mode, args.lose_every)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
