"""A TCP relay between a test client and the server that records every WebSocket frame header.

The client libraries hide whether a message went out compressed; the relay sees the bytes on
the wire, so a test can check that permessage-deflate was really used both ways (RSV1 set on the
first frame of every compressed message), whatever the library does inside.
"""

import asyncio
from dataclasses import dataclass, field

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2


@dataclass
class FrameHeader:
    fin: bool
    rsv1: bool
    opcode: int
    payload_len: int


@dataclass
class Direction:
    """One direction of the connection: the HTTP head, then the frames that followed it."""

    head: bytes = b""
    frames: list = field(default_factory=list)
    wire_bytes: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _in_head: bool = True

    def feed(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        self._buffer += data
        if self._in_head:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = bytes(self._buffer[: end + 4])
            del self._buffer[: end + 4]
            self._in_head = False
        while (frame := self._take_frame()) is not None:
            self.frames.append(frame)

    def _take_frame(self):
        buf = self._buffer
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        length = b1 & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            offset = 10
        if b1 & 0x80:
            offset += 4  # masking key
        if len(buf) < offset + length:
            return None
        del buf[: offset + length]
        return FrameHeader(
            fin=bool(b0 & 0x80), rsv1=bool(b0 & 0x40), opcode=b0 & 0x0F, payload_len=length
        )

    def message_starts(self):
        """The first frame of every text or binary message (where RSV1 says "compressed")."""
        return [f for f in self.frames if f.opcode in (OPCODE_TEXT, OPCODE_BINARY)]


@dataclass
class TappedConnection:
    to_server: Direction = field(default_factory=Direction)
    to_client: Direction = field(default_factory=Direction)


class WireTap:
    """`async with WireTap(host, port) as tap:` relays `tap.port` on 127.0.0.1 to the server;
    `tap.connections` holds what each relayed connection carried, in connection order."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.connections = []
        self._server = None
        self._tasks = set()
        self.port = None

    async def __aenter__(self):
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, client_reader, client_writer):
        tapped = TappedConnection()
        self.connections.append(tapped)
        server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        pumps = [
            asyncio.ensure_future(self._pump(client_reader, server_writer, tapped.to_server)),
            asyncio.ensure_future(self._pump(server_reader, client_writer, tapped.to_client)),
        ]
        self._tasks.update(pumps)

    @staticmethod
    async def _pump(reader, writer, direction: Direction):
        try:
            while data := await reader.read(65536):
                direction.feed(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
