"""A lean HTTP/1.1 keep-alive client for load generation.

httpx costs several hundred microseconds of CPU per request, which on a
two-core machine would make the load generator the bottleneck it is meant to
measure. This client keeps a pool of raw asyncio connections per server, one
request in flight on each, and parses responses with httptools (already a
dependency of the service's uvicorn). It speaks only what the ledger's REST
API needs: GET and POST with a JSON body, Content-Length framed responses.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

TIMEOUT = "timeout"
CONN_ERROR = "conn_error"


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


class _Conn(asyncio.Protocol):
    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.body: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("connection closed"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body), self.headers))
        self.body, self.headers = [], {}

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, raw: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)  # type: ignore[union-attr]
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Up to `size` keep-alive connections to one server; callers beyond that
    wait, for at most their timeout. Capacity is a semaphore released in a
    finally, so no timeout or lost connection can leak a slot."""

    def __init__(self, host: str, port: int, size: int = 64) -> None:
        self.host, self.port = host, port
        self.slots = asyncio.Semaphore(size)
        self.idle: deque[_Conn] = deque()
        self.head = f"Host: {host}:{port}\r\n".encode()

    async def _connection(self) -> _Conn:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        _, conn = await asyncio.get_running_loop().create_connection(lambda: _Conn(self), self.host, self.port)
        return conn

    async def request(self, method: str, path: str, body: bytes | None = None,
                      timeout: float = 10.0) -> tuple[int | str, bytes, dict]:
        """(status, body, headers); status is TIMEOUT or CONN_ERROR when no response came."""
        raw = [f"{method} {path} HTTP/1.1\r\n".encode(), self.head]
        if body is not None:
            raw.append(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
            raw.append(body)
        else:
            raw.append(b"\r\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.slots.locked():  # only this path can wait, so only it pays for wait_for
            try:
                await asyncio.wait_for(self.slots.acquire(), timeout)
            except asyncio.TimeoutError:  # every connection stayed busy: the server is behind
                return (TIMEOUT, b"", {})
        else:
            await self.slots.acquire()
        conn: _Conn | None = None
        try:
            try:
                conn = await asyncio.wait_for(self._connection(), max(0.01, deadline - loop.time()))
            except (OSError, asyncio.TimeoutError):
                return (CONN_ERROR, b"", {})
            # A timer on the future rather than asyncio.wait_for: wait_for costs
            # more CPU than the rest of the request on this path.
            fut = conn.send(b"".join(raw))
            timer = loop.call_later(max(0.01, deadline - loop.time()), _expire, fut)
            try:
                status, data, headers = await fut
            except asyncio.TimeoutError:
                return (TIMEOUT, b"", {})
            except ConnectionError:
                return (CONN_ERROR, b"", {})
            finally:
                timer.cancel()
            if headers.get(b"connection", b"").lower() != b"close":
                self.idle.append(conn)
                conn = None
            return (status, data, headers)
        finally:
            if conn is not None:
                conn.close()
            self.slots.release()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
