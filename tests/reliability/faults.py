"""Fault injection for the reliability tests: a TCP forwarder that clients dial instead of the server.

The Temporal dev server cannot come back on the port it just left (its old connections hold the port in
TIME_WAIT, and the dev stack refuses a port it cannot bind), so the worker and the clients dial this
forwarder's fixed address; a restarted server listens on a new port and the forwarder is pointed at it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Forwarder:
    address: str = ""
    upstream: tuple[str, int] | None = None  # None: refuse connections, as a server that is down
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def point_at(self, address: str | None) -> None:
        """Forward new connections to `address` (host:port), or to nothing; existing ones are cut."""
        if address is None:
            self.upstream = None
        else:
            host, port = address.rsplit(":", 1)
            self.upstream = (host, int(port))
        for writer in list(self._writers):
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.upstream is None:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}
            writer.close()
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def forwarder() -> AsyncIterator[Forwarder]:
    fwd = Forwarder()
    server = await asyncio.start_server(fwd._accept, "127.0.0.1", 0)
    fwd.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        try:
            yield fwd
        finally:
            fwd.point_at(None)
