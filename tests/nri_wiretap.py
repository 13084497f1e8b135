"""A wiretap between an NRI plugin and a real containerd: what the plugin answered, as seen on
the socket, decoded without `watcher.nri`.

Why a proxy with a decoder of its own: the observe-only proof must not rely on the code it
proves. The plugin connects to the tap's socket; the tap connects to containerd's NRI socket
and forwards every byte both ways, frame by frame, unchanged, while it reads them with its own
few lines of framing (NRI's multiplexer: conn id + length, big-endian uint32 each; ttrpc:
length, stream id, type, flags) and of protobuf's wire format. It records, per call containerd
made on the plugin's service (multiplexed connection 1), the method and the plugin's response
— status code and payload bytes — and whether containerd answered the plugin's
`RegisterPlugin` (connection 2) with OK.

It can also *withhold*: a call from containerd whose method `hold` accepts is not forwarded,
nor is anything after it on that socket (`held` is set), to kill the plugin while containerd
waits for an answer that will never come.

Synopsis::

    async with open_nri_wiretap(containerd.nri_socket, sockdir) as tap:
        async with open_nri_plugin(NriSettings(socket=tap.address)) as plugin:
            ...
        for reply in tap.replies: assert reply.code == 0 and ...
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

MUX_HEADER = struct.Struct(">II")
TTRPC_HEADER = struct.Struct(">IIBB")
PLUGIN_CONN, RUNTIME_CONN = 1, 2
REQUEST, RESPONSE = 1, 2


@dataclass(frozen=True)
class Reply:
    """The plugin's response to one call of containerd's."""

    method: str
    code: int  # google.rpc.Status.code: 0 is OK
    payload: bytes


def varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def wire_fields(data: bytes) -> dict[int, list[int | bytes]]:
    """Protobuf's wire format, field number -> values (varints and length-delimited only
    decoded; the envelopes have no others)."""
    fields: dict[int, list[int | bytes]] = {}
    at = 0
    while at < len(data):
        key, at = varint(data, at)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, at = varint(data, at)
        elif wire_type == 2:
            length, at = varint(data, at)
            value, at = data[at : at + length], at + length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, at = data[at : at + size], at + size
        else:
            raise ValueError(f"wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


def first(fields: dict[int, list[int | bytes]], number: int, default: int | bytes) -> int | bytes:
    return fields.get(number, [default])[0]


class _Direction:
    """One direction of one connection: splits the bytes into whole mux frames, and each
    logical connection's bytes into whole ttrpc frames."""

    def __init__(self) -> None:
        self.trunk = b""
        self.conns: dict[int, bytes] = {}

    def frames(self, data: bytes) -> list[tuple[bytes, list[tuple[int, int, int, bytes]]]]:
        """(the raw mux frame, the ttrpc frames it completes) for each whole mux frame."""
        self.trunk += data
        out = []
        while len(self.trunk) >= MUX_HEADER.size:
            conn, length = MUX_HEADER.unpack_from(self.trunk)
            end = MUX_HEADER.size + length
            if len(self.trunk) < end:
                break
            raw, self.trunk = self.trunk[:end], self.trunk[end:]
            buffer = self.conns.get(conn, b"") + raw[MUX_HEADER.size :]
            messages = []
            while len(buffer) >= TTRPC_HEADER.size:
                size, stream, kind, _ = TTRPC_HEADER.unpack_from(buffer)
                if len(buffer) < TTRPC_HEADER.size + size:
                    break
                body = buffer[TTRPC_HEADER.size : TTRPC_HEADER.size + size]
                messages.append((conn, stream, kind, body))
                buffer = buffer[TTRPC_HEADER.size + size :]
            self.conns[conn] = buffer
            out.append((raw, messages))
        return out


@dataclass
class NriWiretap:
    upstream: Path
    address: str
    hold: Callable[[str], bool] = lambda method: False
    replies: list[Reply] = field(default_factory=list)
    #: containerd answered a RegisterPlugin OK (once per registration)
    registrations: int = 0
    held: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)
    _calls: dict[int, str] = field(default_factory=dict)  # containerd's calls: stream -> method
    _registering: set[int] = field(default_factory=set)  # the plugin's RegisterPlugin streams

    def methods(self) -> set[str]:
        return {r.method for r in self.replies}

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds (the caller's cancel scope bounds the wait)."""
        while not predicate():
            await self.changed.wait()

    def _note(self) -> None:
        changed, self.changed = self.changed, trio.Event()
        changed.set()

    async def _connection(self, plugin: trio.SocketStream) -> None:
        async with plugin:
            try:
                runtime = await trio.open_unix_socket(str(self.upstream))
            except OSError:
                return  # containerd not there: the plugin sees its connection closed
            async with runtime, trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, runtime, plugin, self._from_runtime, nursery)
                nursery.start_soon(self._pump, plugin, runtime, self._from_plugin, nursery)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream,
        read: Callable[[int, int, int, bytes], bool], nursery: trio.Nursery,
    ) -> None:  # fmt: skip
        direction = _Direction()
        withholding = False
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                for raw, messages in direction.frames(data):
                    for message in messages:
                        withholding |= read(*message)
                    if not withholding:
                        await sink.send_all(raw)
        nursery.cancel_scope.cancel()  # one side gone: the tap hangs up on the other

    def _from_runtime(self, conn: int, stream: int, kind: int, body: bytes) -> bool:
        """A message containerd sent; True: withhold it and all that follows."""
        if conn == PLUGIN_CONN and kind == REQUEST:
            method = first(wire_fields(body), 2, b"")
            assert isinstance(method, bytes)
            self._calls[stream] = method.decode()
            if self.hold(method.decode()):
                self.held.set()
                return True
        elif conn == RUNTIME_CONN and kind == RESPONSE and stream in self._registering:
            status = first(wire_fields(body), 1, b"")
            assert isinstance(status, bytes)
            if first(wire_fields(status), 1, 0) == 0:
                self.registrations += 1
                self._note()
        return False

    def _from_plugin(self, conn: int, stream: int, kind: int, body: bytes) -> bool:
        if conn == PLUGIN_CONN and kind == RESPONSE:
            fields = wire_fields(body)
            status = first(fields, 1, b"")
            payload = first(fields, 2, b"")
            assert isinstance(status, bytes) and isinstance(payload, bytes)
            code = first(wire_fields(status), 1, 0)
            assert isinstance(code, int)
            self.replies.append(Reply(self._calls.pop(stream, "?"), code, payload))
            self._note()
        elif conn == RUNTIME_CONN and kind == REQUEST:
            method = first(wire_fields(body), 2, b"")
            if method == b"RegisterPlugin":
                self._registering.add(stream)
        return False


@contextlib.asynccontextmanager
async def open_nri_wiretap(
    upstream: Path, sockdir: str, hold: Callable[[str], bool] = lambda method: False
) -> AsyncIterator[NriWiretap]:
    """A tap listening at `sockdir/tap.sock`, forwarding to the NRI socket `upstream`."""
    tap = NriWiretap(upstream, os.path.join(sockdir, "tap.sock"), hold)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(tap.address)
    sock.listen(8)
    listener = trio.SocketListener(sock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, tap._connection, [listener])
        try:
            yield tap
        finally:
            nursery.cancel_scope.cancel()
