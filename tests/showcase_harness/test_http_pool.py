"""The load client's connection pool must not lose capacity to timeouts or
dead servers: a leak once left a resilience run waiting forever after a kill."""

from __future__ import annotations

import asyncio

from benchmarks.showcase.http import CONN_ERROR, TIMEOUT, Pool


async def _server(mute: list[bool]) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            if mute[0]:
                continue  # swallow the request: the client must time out
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_timeouts_and_refusals_do_not_leak_slots() -> None:
    async def scenario() -> None:
        mute = [True]
        server = await _server(mute)
        port = server.sockets[0].getsockname()[1]
        pool = Pool("127.0.0.1", port, size=2)
        results = await asyncio.gather(*(pool.request("GET", "/", timeout=0.2) for _ in range(10)))
        assert {r[0] for r in results} <= {TIMEOUT, CONN_ERROR} and TIMEOUT in {r[0] for r in results}
        mute[0] = False
        ok = await asyncio.gather(*(pool.request("GET", "/", timeout=2) for _ in range(10)))
        assert [r[0] for r in ok] == [200] * 10
        server.close()
        await server.wait_closed()
        refused = Pool("127.0.0.1", port, size=1)
        assert (await refused.request("GET", "/", timeout=0.5))[0] == CONN_ERROR
        assert (await refused.request("GET", "/", timeout=0.5))[0] == CONN_ERROR  # the slot came back
        pool.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
