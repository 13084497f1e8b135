"""ttrpc's wire protocol, sans I/O: frames, the Request/Response envelope, and the two ends of
a connection (a server that is called, a client that calls) as pure state machines.

Written against containerd/ttrpc's `PROTOCOL.md`, `channel.go` (framing and limits),
`request.proto` (the envelope), `server.go`/`services.go` (what a server answers to what) and
`client.go` (stream ids). The rules, all of them here:

* A frame is a 10-byte header — data length (uint32, big-endian), stream id (uint32, BE),
  message type (uint8), flags (uint8) — followed by that many bytes of data.
* Data is at most 4 MiB (`messageLengthMax`). A longer length means the byte stream is
  broken or hostile: the decoder raises `ProtocolError` (and keeps raising it), and the
  connection must be closed. (ttrpc's Go reader discards an oversized message and answers
  ResourceExhausted; NRI is unary-only and a plugin that misreads its runtime must not
  guess, so this one closes the connection and registers afresh.)
* A type other than Request (1), Response (2) or Data (3) is skipped, frame and data, as
  ttrpc's Go server ignores it "for future compat": its length still frames the stream.
* A byte stream that ends inside a frame is a peer that went away mid-write (containerd
  killed), not a broken one: `end` raises `ConnectionCut`.
* Clients start streams with odd ids, 1, 3, 5, … (`client.go`: `nextStreamID` += 2); a
  server refuses even or reused ids with InvalidArgument, answering on that very stream id.
* A unary call is one Request frame (a `ttrpc.Request` envelope: service, method, payload,
  timeout_nano, metadata) answered by one Response frame (`ttrpc.Response`: a
  `google.rpc.Status` and the payload). A status code other than OK (0) is an error.
* Data frames belong to streaming calls, which NRI does not have: they are ignored, as a
  Response arriving at a server or a Request at a client.

Events, not exceptions, carry what a peer did that the caller must act on or may log
(`Call`, `Refused`, `Answer`, `Ignored`); only a broken or cut byte stream raises.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from watcher.errors import Code

from .errors import ConnectionCut, ProtocolError

HEADER: Final = struct.Struct(">IIBB")
HEADER_LEN: Final = HEADER.size  # 10
#: ttrpc's `messageLengthMax`: the longest data of one frame
MAX_DATA: Final = 4 << 20
#: stream ids are uint32
MAX_STREAM_ID: Final = 0xFFFF_FFFF


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


class Flag(enum.IntFlag):
    """Frame flags; their meaning depends on the message type (`PROTOCOL.md`)."""

    REMOTE_CLOSED = 0x1
    REMOTE_OPEN = 0x2
    NO_DATA = 0x4


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    type: MessageType
    flags: int
    data: bytes


def encode_frame(frame: Frame) -> bytes:
    """The frame's bytes on the wire.

    Raises:
        ValueError: data longer than `MAX_DATA`, or a stream id or flags out of range
            (our own mistake: nothing is sent).
    """
    if len(frame.data) > MAX_DATA:
        raise ValueError(f"ttrpc data of {len(frame.data)} bytes exceeds {MAX_DATA}")
    if not 0 <= frame.stream_id <= MAX_STREAM_ID or not 0 <= frame.flags <= 0xFF:
        raise ValueError(f"not a ttrpc frame header: {frame!r}")
    return HEADER.pack(len(frame.data), frame.stream_id, frame.type, frame.flags) + frame.data


class FrameDecoder:
    """Frames out of a byte stream that arrives in pieces of any size.

    Synopsis::

        decoder = FrameDecoder()
        for frame in decoder.feed(data): ...   # complete frames (Ignored: unknown type)
        decoder.end()                          # at EOF: ConnectionCut if a frame was cut short

    Memory is bounded: a header announcing more than `MAX_DATA` raises as soon as it is
    complete, before any of its data is buffered. A frame of a message type ttrpc does not
    define comes out as `Ignored`, its data dropped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes received that are not yet a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray) -> list[Frame | Ignored]:
        """The frames `data` completes, and an `Ignored` for each of an unknown type.

        Raises:
            ProtocolError: an oversized length; every later call raises it again (the
                stream has lost its framing).
        """
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        frames: list[Frame | Ignored] = []
        while len(self._buffer) >= HEADER_LEN:
            length, stream_id, kind, flags = HEADER.unpack_from(self._buffer)
            if length > MAX_DATA:
                self._fail(f"ttrpc frame of {length} bytes exceeds the maximum of {MAX_DATA}")
            end = HEADER_LEN + length
            if len(self._buffer) < end:
                break
            if kind in _TYPES:
                body = bytes(self._buffer[HEADER_LEN:end])
                frames.append(Frame(stream_id, MessageType(kind), flags, body))
            else:
                frames.append(Ignored(stream_id, f"a frame of unknown message type {kind:#04x}"))
            del self._buffer[:end]
        return frames

    def end(self) -> None:
        """The byte stream ended.

        Raises:
            ConnectionCut: it ended inside a frame.
        """
        if cut := len(self._buffer):
            self._buffer.clear()
            raise ConnectionCut(f"the connection ended {cut} bytes into a ttrpc frame")

    def _fail(self, message: str) -> NoReturn:
        self._broken = ProtocolError(message)
        self._buffer.clear()
        raise self._broken


_TYPES: Final = frozenset(int(t) for t in MessageType)


# --- the envelope ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """`ttrpc.Request`: which method of which service, its serialized argument, the caller's
    deadline (nanoseconds from when it sent the call; 0: none) and metadata."""

    service: str
    method: str
    payload: bytes = b""
    timeout_nano: int = 0
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """`google.rpc.Status` (its `details` are not read)."""

    code: Code = Code.OK
    message: str = ""


OK: Final = Status()


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """`ttrpc.Response`: the call's status and, when OK, its serialized result."""

    status: Status = OK
    payload: bytes = b""


def _envelope_classes() -> tuple[type[Message], type[Message]]:
    """`ttrpc.Request` and `ttrpc.Response` as protobuf classes, built from descriptors.

    Transcribed from ttrpc's `request.proto` and googleapis' `google/rpc/status.proto`
    (field names, numbers and types as there; `Status.details`, a repeated `Any`, left out:
    protobuf skips the unknown field). In a private descriptor pool: registering
    `google.rpc.Status` in the default pool would collide with googleapis-common-protos in
    any process that also loads it.
    """
    d = descriptor_pb2.FieldDescriptorProto
    string, bytes_, int64, int32, message = (
        d.TYPE_STRING, d.TYPE_BYTES, d.TYPE_INT64, d.TYPE_INT32, d.TYPE_MESSAGE,
    )  # fmt: skip
    one, many = d.LABEL_OPTIONAL, d.LABEL_REPEATED

    def file(name: str, package: str, messages: dict[str, Sequence[tuple[Any, ...]]],
             deps: Sequence[str] = ()) -> descriptor_pb2.FileDescriptorProto:  # fmt: skip
        proto = descriptor_pb2.FileDescriptorProto(
            name=name, package=package, syntax="proto3", dependency=list(deps)
        )
        for message_name, fields in messages.items():
            out = proto.message_type.add(name=message_name)
            for field_name, number, kind, label, *type_name in fields:
                out.field.add(
                    name=field_name, number=number, type=kind, label=label,
                    type_name=type_name[0] if type_name else None,
                )  # fmt: skip
        return proto

    status = file("google/rpc/status.proto", "google.rpc", {
        "Status": [("code", 1, int32, one), ("message", 2, string, one)],
    })  # fmt: skip
    request = file("ttrpc/request.proto", "ttrpc", {
        "Request": [
            ("service", 1, string, one), ("method", 2, string, one),
            ("payload", 3, bytes_, one), ("timeout_nano", 4, int64, one),
            ("metadata", 5, message, many, ".ttrpc.KeyValue"),
        ],
        "Response": [
            ("status", 1, message, one, ".google.rpc.Status"), ("payload", 2, bytes_, one),
        ],
        "KeyValue": [("key", 1, string, one), ("value", 2, string, one)],
    }, deps=["google/rpc/status.proto"])  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(status)
    pool.Add(request)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("ttrpc.Request")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("ttrpc.Response")),
    )


_RequestPb, _ResponsePb = _envelope_classes()


def encode_request(request: Request) -> bytes:
    pb: Any = _RequestPb(
        service=request.service, method=request.method, payload=request.payload,
        timeout_nano=request.timeout_nano,
    )  # fmt: skip
    for key, value in request.metadata:
        pb.metadata.add(key=key, value=value)
    return bytes(pb.SerializeToString())


def decode_request(data: bytes) -> Request:
    """Raises `ProtocolError` for bytes that are no `ttrpc.Request`."""
    pb: Any = _RequestPb()
    try:
        pb.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"not a ttrpc request: {exc}") from exc
    return Request(
        service=pb.service, method=pb.method, payload=bytes(pb.payload),
        timeout_nano=pb.timeout_nano,
        metadata=tuple((kv.key, kv.value) for kv in pb.metadata),
    )  # fmt: skip


def encode_response(response: Response) -> bytes:
    # the status is always written, OK included, as ttrpc's Go server does (`0a 00` for OK)
    pb: Any = _ResponsePb(payload=response.payload)
    pb.status.code = response.status.code.value
    pb.status.message = response.status.message
    pb.status.SetInParent()
    return bytes(pb.SerializeToString())


def decode_response(data: bytes) -> Response:
    """Raises `ProtocolError` for bytes that are no `ttrpc.Response`."""
    pb: Any = _ResponsePb()
    try:
        pb.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"not a ttrpc response: {exc}") from exc
    try:
        code = Code(pb.status.code)
    except ValueError:
        code = Code.UNKNOWN  # a code gRPC does not define: an error all the same
    return Response(status=Status(code=code, message=pb.status.message), payload=bytes(pb.payload))


# --- the two ends of a connection ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """A well-formed request the server must answer (with `ServerConnection.respond`)."""

    stream_id: int
    request: Request


@dataclass(frozen=True, slots=True)
class Refused:
    """A request the server answers with an error status at once (bad stream id,
    undecodable envelope); the caller sends `ServerConnection.respond(stream_id, status)`."""

    stream_id: int
    status: Status


@dataclass(frozen=True, slots=True)
class Answer:
    """The response to one of the client's calls."""

    stream_id: int
    response: Response


@dataclass(frozen=True, slots=True)
class Ignored:
    """A frame that is no part of a unary exchange here; worth a log line, nothing more."""

    stream_id: int
    reason: str


ServerEvent = Call | Refused | Ignored
ClientEvent = Answer | Ignored


class ServerConnection:
    """The server's end of a ttrpc connection: bytes in, calls and refusals out.

    Synopsis::

        server = ServerConnection()
        for event in server.receive(data):            # ProtocolError: close the connection
            match event:
                case Call(stream_id, request): send(server.respond(stream_id, OK, payload))
                case Refused(stream_id, status): send(server.respond(stream_id, status))
                case Ignored(): log
        server.end()                                  # at EOF (ConnectionCut if mid-frame)
    """

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._last_stream_id = 0

    def receive(self, data: bytes) -> list[ServerEvent]:
        return [self._frame(f) if isinstance(f, Frame) else f for f in self._decoder.feed(data)]

    def _frame(self, frame: Frame) -> ServerEvent:
        sid = frame.stream_id
        if frame.type is not MessageType.REQUEST:
            return Ignored(
                sid, f"a {frame.type.name.lower()} frame: this server serves unary calls"
            )
        # the checks and messages of ttrpc's server.go
        if sid % 2 != 1:
            return Refused(sid, _invalid("StreamID must be odd for client initiated streams"))
        if sid <= self._last_stream_id:
            return Refused(sid, _invalid("StreamID cannot be re-used and must increment"))
        self._last_stream_id = sid
        try:
            request = decode_request(frame.data)
        except ProtocolError as exc:
            return Refused(sid, _invalid(f"unmarshal request error: {exc}"))
        return Call(sid, request)

    @staticmethod
    def respond(stream_id: int, status: Status = OK, payload: bytes = b"") -> bytes:
        """The Response frame that ends stream `stream_id`."""
        data = encode_response(Response(status=status, payload=payload))
        return encode_frame(Frame(stream_id, MessageType.RESPONSE, 0, data))

    def end(self) -> None:
        self._decoder.end()


class ClientConnection:
    """The client's end of a ttrpc connection: calls out, answers in.

    Synopsis::

        client = ClientConnection()
        stream_id, frame = client.call(Request(service=..., method=..., payload=...))
        send(frame)
        for event in client.receive(data): ...    # Answer(stream_id, response) | Ignored
    """

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._next_stream_id = 1
        self._pending: set[int] = set()

    def call(self, request: Request) -> tuple[int, bytes]:
        """A new stream id and the Request frame that opens it (unary: flags 0)."""
        sid = self._next_stream_id
        if sid > MAX_STREAM_ID:
            raise ValueError("ttrpc stream ids exhausted on this connection")
        self._next_stream_id += 2
        self._pending.add(sid)
        return sid, encode_frame(Frame(sid, MessageType.REQUEST, 0, encode_request(request)))

    def receive(self, data: bytes) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        for frame in self._decoder.feed(data):
            if isinstance(frame, Ignored):
                events.append(frame)
                continue
            sid = frame.stream_id
            if frame.type is not MessageType.RESPONSE:
                events.append(Ignored(sid, f"a {frame.type.name.lower()} frame at a client"))
            elif sid not in self._pending:
                events.append(Ignored(sid, "a response to no call of ours"))
            else:
                self._pending.discard(sid)
                try:
                    response = decode_response(frame.data)
                except ProtocolError as exc:
                    response = Response(status=Status(code=Code.UNKNOWN, message=str(exc)))
                events.append(Answer(sid, response))
        return events

    def end(self) -> None:
        self._decoder.end()


def _invalid(message: str) -> Status:
    return Status(code=Code.INVALID_ARGUMENT, message=message)
