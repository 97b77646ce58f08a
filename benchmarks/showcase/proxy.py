"""A filtering TCP proxy on loopback, for cutting one node off from the others.

While `cut` is set the proxy behaves like a firewall that drops packets: new
connections are accepted but nothing is forwarded, and open connections stall,
so the peers see timeouts rather than clean refusals (the harsher case).
"""

from __future__ import annotations

import asyncio


class Proxy:
    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self.cut = False
        self.server: asyncio.AbstractServer | None = None
        self.links: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        for a, b in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(a, b))
            self.links.add(task)
            task.add_done_callback(self.links.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while self.cut:  # hold the bytes: a dropped packet is never delivered late here
                    await asyncio.sleep(0.05)
                    data = b""
                if data:
                    writer.write(data)
                    await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def heal(self) -> None:
        """Reconnect cleanly: connections that lived through the cut are reset,
        as a real partition's TCP sessions would be after their retransmits died."""
        self.cut = False
        for task in list(self.links):
            task.cancel()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.links):
            task.cancel()
