"""ttrpc's framing and envelope (`watcher.nri.ttrpc`), against containerd/ttrpc's PROTOCOL.md:
round trips in pieces of any size, the limits, and bad input that never gets past a
`ProtocolError` (or, for a well-framed bad request, an error answer as ttrpc's Go server gives;
for a frame of an unknown type, `Ignored`, as that server ignores it); a stream that ends
mid-frame is `ConnectionCut`, a peer gone, not a broken one.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.errors import Code
from watcher.nri.errors import ConnectionCut, ProtocolError
from watcher.nri.ttrpc import (
    MAX_DATA,
    Answer,
    Call,
    ClientConnection,
    Flag,
    Frame,
    FrameDecoder,
    Ignored,
    MessageType,
    Refused,
    Request,
    Response,
    ServerConnection,
    Status,
    decode_request,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
)

frames = st.builds(
    Frame,
    st.integers(0, 0xFFFF_FFFF),
    st.sampled_from(MessageType),
    st.integers(0, 0xFF),
    st.binary(max_size=300),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (any, in any order)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(st.lists(frames, max_size=20), st.lists(st.integers(0, 10_000), max_size=30))
def test_frames_survive_any_split(sent: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f) for f in sent)
    decoder = FrameDecoder()
    received = [f for piece in split(wire, cuts) for f in decoder.feed(piece)]
    assert received == sent
    assert decoder.pending == 0
    decoder.end()  # nothing cut off


def test_the_header_is_ttrpcs() -> None:
    # length, stream id (big-endian uint32 each), type, flags: PROTOCOL.md's "Message Frame"
    frame = Frame(0x01020304, MessageType.DATA, Flag.REMOTE_CLOSED | Flag.NO_DATA, b"xy")
    assert encode_frame(frame) == bytes.fromhex("00000002010203040305") + b"xy"


@given(
    st.builds(
        Request,
        service=st.text(),
        method=st.text(),
        payload=st.binary(),
        timeout_nano=st.integers(-(2**63), 2**63 - 1),
        metadata=st.lists(st.tuples(st.text(), st.text()), max_size=3).map(tuple),
    )
)
def test_requests_round_trip(request_: Request) -> None:
    assert decode_request(encode_request(request_)) == request_


@given(st.sampled_from(Code), st.text(), st.binary())
def test_responses_round_trip(code: Code, message: str, payload: bytes) -> None:
    response = Response(status=Status(code=code, message=message), payload=payload)
    assert decode_response(encode_response(response)) == response


def test_an_ok_response_carries_its_status_as_gos_server_writes_it() -> None:
    # ttrpc's server always sets Status (status.New(codes.OK, "").Proto()): field 1, empty
    assert encode_response(Response()) == b"\x0a\x00"
    assert encode_response(Response(payload=b"p")) == b"\x0a\x00\x12\x01p"


def test_a_status_code_grpc_does_not_define_is_an_unknown_error() -> None:
    assert decode_response(b"\x0a\x02\x08\x63").status.code is Code.UNKNOWN  # code 99


# --- limits and bad frames -----------------------------------------------------------------


def header(length: int, stream_id: int = 1, kind: int = 1, flags: int = 0) -> bytes:
    return struct.pack(">IIBB", length, stream_id, kind, flags)


def test_data_of_4_mib_is_a_frame() -> None:
    frame = Frame(1, MessageType.REQUEST, 0, bytes(MAX_DATA))
    assert FrameDecoder().feed(encode_frame(frame)) == [frame]


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(header(MAX_DATA + 1))  # no data needed: nothing is buffered for it
    with pytest.raises(ProtocolError):  # the stream has lost its framing for good
        decoder.feed(encode_frame(Frame(1, MessageType.REQUEST, 0, b"")))
    assert decoder.pending == 0


def test_sending_an_oversized_frame_is_our_mistake() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(Frame(1, MessageType.REQUEST, 0, bytes(MAX_DATA + 1)))


#: data that would be an oversized header if it were read as one
NOT_A_HEADER = header(MAX_DATA + 1)


@pytest.mark.parametrize("kind", [0, 4, 0x80, 0xFF])
@given(cuts=st.lists(st.integers(0, 100), max_size=5))
def test_a_frame_of_an_unknown_message_type_is_skipped_whole(kind: int, cuts: list[int]) -> None:
    after = Frame(3, MessageType.REQUEST, 0, b"next")
    wire = header(len(NOT_A_HEADER), stream_id=5, kind=kind) + NOT_A_HEADER + encode_frame(after)
    decoder = FrameDecoder()
    received = [f for piece in split(wire, cuts) for f in decoder.feed(piece)]
    assert received == [Ignored(5, f"a frame of unknown message type {kind:#04x}"), after]
    assert decoder.pending == 0
    decoder.end()


def test_a_frame_of_an_unknown_message_type_is_still_bounded() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        FrameDecoder().feed(header(MAX_DATA + 1, kind=9))


def test_both_ends_pass_a_frame_of_an_unknown_message_type_on_as_ignored() -> None:
    unknown = header(2, stream_id=9, kind=9) + b"xy"
    server, client = ServerConnection(), ClientConnection()
    sid, _ = client.call(Request(service="s", method="m"))
    ignored = Ignored(9, "a frame of unknown message type 0x09")
    assert [type(e) for e in server.receive(unknown + request_frame(1))] == [Ignored, Call]
    assert server.receive(unknown) == [ignored]
    assert client.receive(unknown + server.respond(sid)) == [ignored, Answer(sid, Response())]


@pytest.mark.parametrize("sent", [b"\x00\x00", header(10) + b"0123456"], ids=["header", "data"])
def test_a_stream_cut_inside_a_frame_is_a_cut_connection_not_a_protocol_error(
    sent: bytes,
) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(sent) == []
    with pytest.raises(ConnectionCut, match=f"ended {len(sent)} bytes into a ttrpc frame"):
        decoder.end()
    decoder.end()  # said once


def test_both_ends_say_a_cut_stream_is_a_cut_connection() -> None:
    for end in (ServerConnection(), ClientConnection()):
        assert end.receive(header(10)) == []
        with pytest.raises(ConnectionCut):
            end.end()


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_gives_frames_or_a_protocol_error_and_nothing_else(pieces: list[bytes]) -> None:
    for end in (FrameDecoder(), ServerConnection(), ClientConnection()):
        try:
            for piece in pieces:
                if isinstance(end, FrameDecoder):
                    end.feed(piece)
                else:
                    end.receive(piece)
            end.end()
        except (ProtocolError, ConnectionCut):
            pass


# --- the server's end ----------------------------------------------------------------------


def request_frame(stream_id: int, method: str = "Configure", payload: bytes = b"") -> bytes:
    data = encode_request(Request(service="svc", method=method, payload=payload))
    return encode_frame(Frame(stream_id, MessageType.REQUEST, 0, data))


def test_a_request_is_a_call_answered_on_its_stream() -> None:
    server = ServerConnection()
    [call] = server.receive(request_frame(1, payload=b"arg"))
    assert call == Call(1, Request(service="svc", method="Configure", payload=b"arg"))
    reply = FrameDecoder().feed(server.respond(1, payload=b"res"))
    assert reply == [Frame(1, MessageType.RESPONSE, 0, encode_response(Response(payload=b"res")))]


def test_the_server_refuses_what_gos_server_refuses() -> None:
    server = ServerConnection()
    events = server.receive(
        request_frame(2) + request_frame(5) + request_frame(3) + request_frame(5)
        + encode_frame(Frame(7, MessageType.REQUEST, 0, b"\xff\xff"))
    )  # fmt: skip
    assert [type(e) for e in events] == [Refused, Call, Refused, Refused, Refused]
    codes = {e.status.code for e in events if isinstance(e, Refused)}
    assert codes == {Code.INVALID_ARGUMENT}
    assert [e.stream_id for e in events] == [2, 5, 3, 5, 7]  # answered on the stream it named
    assert "odd" in events[0].status.message  # type: ignore[union-attr]
    assert "re-used" in events[2].status.message  # type: ignore[union-attr]
    assert "unmarshal" in events[4].status.message  # type: ignore[union-attr]


def test_data_and_response_frames_at_a_unary_server_are_ignored() -> None:
    server = ServerConnection()
    events = server.receive(
        encode_frame(Frame(1, MessageType.DATA, Flag.REMOTE_CLOSED, b""))
        + encode_frame(Frame(3, MessageType.RESPONSE, 0, b""))
        + request_frame(5)
    )
    assert [type(e) for e in events] == [Ignored, Ignored, Call]


# --- the client's end ----------------------------------------------------------------------


def test_the_client_numbers_its_streams_odd_and_rising() -> None:
    client = ClientConnection()
    ids = [client.call(Request(service="s", method="m"))[0] for _ in range(3)]
    assert ids == [1, 3, 5]


def test_the_client_matches_answers_to_its_calls() -> None:
    client, server = ClientConnection(), ServerConnection()
    sid, frame = client.call(Request(service="s", method="m", payload=b"q"))
    [call] = server.receive(frame)
    assert isinstance(call, Call) and call.stream_id == sid
    error = Status(code=Code.NOT_FOUND, message="no")
    events = client.receive(
        server.respond(99, payload=b"stray")  # no call of ours
        + server.respond(sid, error)
        + server.respond(sid)  # answered already
        + request_frame(7)  # a request at a client
    )
    assert events == [
        Ignored(99, "a response to no call of ours"),
        Answer(sid, Response(status=error)),
        Ignored(sid, "a response to no call of ours"),
        Ignored(7, "a request frame at a client"),
    ]


def test_an_undecodable_answer_is_an_error_answer() -> None:
    client = ClientConnection()
    sid, _ = client.call(Request(service="s", method="m"))
    [answer] = client.receive(encode_frame(Frame(sid, MessageType.RESPONSE, 0, b"\xff")))
    assert isinstance(answer, Answer) and answer.response.status.code is Code.UNKNOWN
