"""A TCP wire between a client and a server that a test can cut: both ends reset, no goodbye.

Cutting the wire is a network failure (a modem dropping, a cable pulled) rather than a crash:
the server stays up with everything it acknowledged, so what a client loses across a cut is
the client's own fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator


class Wire:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.host = "127.0.0.1"
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._joined, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self, down_for: float) -> None:
        """Reset every connection through the wire, and refuse new ones for `down_for` seconds."""
        async with self.down():
            await asyncio.sleep(down_for)

    @contextlib.asynccontextmanager
    async def down(self) -> AsyncIterator[None]:
        """Reset every connection through the wire, and refuse new ones until the block ends."""
        self.cuts += 1
        await self._close()
        try:
            yield
        finally:
            await self.start()

    async def stop(self) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def _joined(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._open |= {writer, up_writer}
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer), return_exceptions=True)
        for end in (writer, up_writer):
            self._open.discard(end)
            _reset(end)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset: linger 0, so nothing buffered is sent and the peer gets no FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
