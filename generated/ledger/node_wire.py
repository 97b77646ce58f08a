"""A lean keep-alive HTTP/1.1 client on asyncio streams (AgreeOnBatch / ForwardToPrimary).

AgreeOnBatch's @guidance: votes and forwards go over a lean keep-alive HTTP/1.1
client on asyncio streams, httptools parsing the response, a few connections per
peer, bodies encoded with msgspec (a profile of the primary at 1,500 requests/s
spent more CPU in httpx than in the votes).  One ``WireClient`` talks to one peer
over a small pool of kept-alive connections; every exchange is bounded by a
deadline, and a connection that did not finish its exchange is closed, never
reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httptools
import msgspec


class WireError(Exception):
    """The exchange failed: no connection, the peer closed it, a bad response or the deadline."""


@dataclass
class WireResponse:
    """A parsed response: status code, lower-case headers and the body bytes."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body decoded as JSON (msgspec); WireError when it is not JSON."""
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError as exc:
            raise WireError(f"the answer is not JSON: {exc}") from None


class _Parse:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        # llhttp answers should_keep_alive() correctly only inside this callback.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()
        self.complete = True


class _Connection:
    """One kept-alive TCP connection to the peer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # closing a broken transport must not raise
            pass

    async def exchange(self, request: bytes) -> tuple[WireResponse, bool]:
        """Send one request and read its response; (response, connection still usable)."""
        self.writer.write(request)
        await self.writer.drain()
        parse = _Parse()
        parser = parse.parser = httptools.HttpResponseParser(parse)
        received = False
        while not parse.complete:
            data = await self.reader.read(65536)
            if not data:
                raise WireError("the peer closed the connection" if received else "closed before answering")
            received = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise WireError(f"malformed response: {exc}") from None
        response = WireResponse(parser.get_status_code(), parse.headers, b"".join(parse.chunks))
        return response, parse.keep_alive


class WireClient:
    """Keep-alive HTTP/1.1 client for one peer (host, port) with at most ``connections`` open."""

    def __init__(self, host: str, port: int, connections: int = 4) -> None:
        self.host = host
        self.port = port
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: Mapping[str, str] | None = None, *, timeout: float) -> WireResponse:
        """One exchange within ``timeout`` seconds (waiting for a connection included).

        WireError on any failure or on the deadline; the caller answers 503.
        """
        try:
            # asyncio.timeout, not wait_for: no extra task per exchange (AdmitRequest's
            # @guidance measured wait_for's task per request on this hot path).
            async with asyncio.timeout(timeout):
                return await self._request(method, path, body, headers or {})
        except TimeoutError:
            raise WireError(f"no answer from {self.host}:{self.port} within {timeout:.3f} s") from None
        except OSError as exc:
            raise WireError(f"cannot reach {self.host}:{self.port}: {exc}") from None

    async def _request(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> WireResponse:
        if self._closed:
            raise WireError("the client is closed")
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        async with self._slots:
            conn = await self._connection()
            try:
                try:
                    response, keep = await conn.exchange(request)
                except WireError as exc:
                    if not conn.reused or "before answering" not in str(exc):
                        raise
                    # The peer closed an idle kept-alive connection just as it was
                    # reused: nothing was answered, so the request goes out once more
                    # on a fresh connection (a vote or a forward with its request id
                    # is safe to repeat).
                    conn.close()
                    conn = await self._connect()
                    response, keep = await conn.exchange(request)
            except BaseException:
                conn.close()  # an unfinished exchange leaves the connection unusable
                raise
            if keep and not self._closed:
                conn.reused = True
                self._idle.append(conn)
            else:
                conn.close()
            return response

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        return await self._connect()

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    async def close(self) -> None:
        """Close every idle connection; exchanges in flight close theirs when they end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class WirePool:
    """One ``WireClient`` per peer base URL ("http://host:port"), created on first use."""

    def __init__(self, connections: int = 4) -> None:
        self.connections = connections
        self._clients: dict[str, WireClient] = {}

    def client(self, base_url: str) -> WireClient:
        found = self._clients.get(base_url)
        if found is None:
            host, _, port = base_url.removeprefix("http://").rstrip("/").rpartition(":")
            found = self._clients[base_url] = WireClient(host, int(port), self.connections)
        return found

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()
