"""NRI's connection multiplexer: several logical byte streams over one unix socket.

Written against containerd/nri `pkg/net/multiplex/mux.go` and `ttrpc.go` (v0.8.0, what
containerd 2.1 pins; the frame format is v0.6.1's, containerd 1.7's, too):

* Every frame is an 8-byte header — connection id (uint32, big-endian), payload length
  (uint32, BE) — and the payload. Connection id 0 is reserved; NRI uses 1 for the plugin's
  service (the runtime calls the plugin: here the plugin is the ttrpc *server*) and 2 for the
  runtime's service (the plugin calls `RegisterPlugin`: the plugin is the ttrpc *client*).
* A logical connection is a byte stream: a ttrpc message may span frames, a frame may hold
  several messages. Opening one is not signalled; frames for a connection nobody opened are
  dropped by the Go reader.
* The Go writer cuts a write into frames of at most 10 + 4 MiB (`maxPayloadSize`: a ttrpc
  header plus its largest data; v0.6.1 allowed 16 MiB per write, but ttrpc never writes more
  than one header and its data at once); a longer frame is refused as a broken stream.
* The Go reader hands one frame per `Read` and fails with ENOMEM when the reader's buffer is
  smaller than the frame, and ttrpc reads through a 4096-byte `bufio.Reader`: frames sent to
  the runtime must be at most `SEND_CHUNK` (4096) bytes, or the runtime's ttrpc fails.

`encode` and `MuxDecoder` are the sans-I/O codec; `Mux` carries it over a trio stream.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, NoReturn

import trio

from .errors import ConnectionCut, ProtocolError
from .ttrpc import HEADER_LEN as TTRPC_HEADER_LEN
from .ttrpc import MAX_DATA as TTRPC_MAX_DATA

HEADER: Final = struct.Struct(">II")
HEADER_LEN: Final = HEADER.size  # 8
#: the multiplexer's `PluginServiceConn`: the runtime calls the plugin's service on it
PLUGIN_SERVICE_CONN: Final = 1
#: `RuntimeServiceConn`: the plugin calls the runtime's service on it
RUNTIME_SERVICE_CONN: Final = 2
#: the longest payload the Go writer sends in one frame (`maxPayloadSize`)
MAX_PAYLOAD: Final = TTRPC_HEADER_LEN + TTRPC_MAX_DATA
#: the longest payload sent here per frame: what the runtime's 4096-byte ttrpc read buffer
#: takes in one `Read` (see the module's docstring)
SEND_CHUNK: Final = 4096
#: bytes asked of the socket per read: a few frames of a busy runtime at once
RECEIVE_SIZE: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Segment:
    """The payload of one frame: the next bytes of logical connection `conn_id`."""

    conn_id: int
    data: bytes


def encode(conn_id: int, data: bytes, chunk: int = SEND_CHUNK) -> bytes:
    """`data` for connection `conn_id` as frames of at most `chunk` bytes of payload each.

    Raises:
        ValueError: a reserved or out-of-range connection id, or a chunk size out of range.
    """
    if not 0 < conn_id <= 0xFFFF_FFFF:
        raise ValueError(f"not a multiplexed connection id: {conn_id}")
    if not 0 < chunk <= MAX_PAYLOAD:
        raise ValueError(f"not a frame payload size: {chunk}")
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for start in range(0, len(view), chunk):
        piece = view[start : start + chunk]
        parts += [HEADER.pack(conn_id, len(piece)), piece]
    return b"".join(parts)


class MuxDecoder:
    """Segments out of the trunk's byte stream, which arrives in pieces of any size.

    Synopsis::

        decoder = MuxDecoder()
        for segment in decoder.feed(data): ...   # Segment(conn_id, payload), in order
        decoder.end()                            # at EOF: ConnectionCut if a frame was cut short

    Memory is bounded: a header announcing more than `MAX_PAYLOAD` raises as soon as it is
    complete. Frames of any connection id are returned (the caller drops those it did not
    open); empty frames are skipped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken: ProtocolError | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray) -> list[Segment]:
        """The segments `data` completes.

        Raises:
            ProtocolError: a frame longer than `MAX_PAYLOAD`; every later call raises it
                again (the trunk has lost its framing).
        """
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        segments: list[Segment] = []
        while len(self._buffer) >= HEADER_LEN:
            conn_id, length = HEADER.unpack_from(self._buffer)
            if length > MAX_PAYLOAD:
                self._fail(f"multiplexed frame of {length} bytes exceeds {MAX_PAYLOAD}")
            end = HEADER_LEN + length
            if len(self._buffer) < end:
                break
            if length:
                segments.append(Segment(conn_id, bytes(self._buffer[HEADER_LEN:end])))
            del self._buffer[:end]
        return segments

    def end(self) -> None:
        """The trunk ended. Raises `ConnectionCut` when it ended inside a frame."""
        if cut := len(self._buffer):
            self._buffer.clear()
            raise ConnectionCut(f"the connection ended {cut} bytes into a multiplexed frame")

    def _fail(self, message: str) -> NoReturn:
        self._broken = ProtocolError(message)
        self._buffer.clear()
        raise self._broken


class Mux:
    """NRI's multiplexer over a trio stream (the unix socket to the runtime).

    Synopsis::

        mux = Mux(stream)
        await mux.send(RUNTIME_SERVICE_CONN, frame_bytes)   # any task; sends never interleave
        while segments := await mux.receive(): ...          # one reader; [] at EOF

    Cancellation: a `send` cancelled midway has written part of a frame; the trunk is then
    unusable, and the caller closes it (every send here runs under a deadline whose expiry
    ends the connection). Error handling: `ProtocolError` for a broken trunk,
    `ConnectionCut` for one that ended mid-frame; the stream's own errors
    (`trio.BrokenResourceError`, `trio.ClosedResourceError`) pass through.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._decoder = MuxDecoder()
        self._send_lock = trio.Lock()

    async def send(self, conn_id: int, data: bytes) -> None:
        """Write `data` on logical connection `conn_id`, whole, before any other send."""
        wire = encode(conn_id, data)
        async with self._send_lock:
            await self.stream.send_all(wire)

    async def receive(self) -> list[Segment]:
        """The next segments from the trunk (at least one), or [] once it has ended.

        Raises:
            ProtocolError: an oversized frame.
            ConnectionCut: the trunk ended inside a frame.
        """
        while True:
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                self._decoder.end()
                return []
            if segments := self._decoder.feed(data):
                return segments
