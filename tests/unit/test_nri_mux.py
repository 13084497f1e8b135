"""NRI's connection multiplexer (`watcher.nri.mux`), against containerd/nri
`pkg/net/multiplex/mux.go`: interleaved logical connections come apart whole and in order,
however the trunk cuts them; frames the runtime's reader would choke on are never sent; bad
frames end in a `ProtocolError`, a trunk that ends mid-frame in a `ConnectionCut`, never
anything else.
"""

from __future__ import annotations

import itertools
import struct

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from watcher.nri.errors import ConnectionCut, ProtocolError
from watcher.nri.mux import (
    MAX_PAYLOAD,
    PLUGIN_SERVICE_CONN,
    RUNTIME_SERVICE_CONN,
    SEND_CHUNK,
    Mux,
    MuxDecoder,
    Segment,
    encode,
)

writes = st.lists(
    st.tuples(st.integers(1, 5), st.binary(min_size=1, max_size=600), st.integers(1, 700)),
    max_size=25,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]


def by_conn(segments: list[Segment]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for segment in segments:
        out[segment.conn_id] = out.get(segment.conn_id, b"") + segment.data
    return out


@given(writes, st.lists(st.integers(0, 100_000), max_size=40))
def test_interleaved_connections_come_apart_whole_and_in_order(
    sent: list[tuple[int, bytes, int]], cuts: list[int]
) -> None:
    # each write cut into frames of its own size, writes of several connections interleaved,
    # the trunk read in arbitrary pieces
    wire = b"".join(encode(conn, data, chunk) for conn, data, chunk in sent)
    decoder = MuxDecoder()
    segments = [s for piece in split(wire, cuts) for s in decoder.feed(piece)]
    expected: dict[int, bytes] = {}
    for conn, data, _ in sent:
        expected[conn] = expected.get(conn, b"") + data
    assert by_conn(segments) == expected
    decoder.end()


def frame_lengths(wire: bytes) -> list[int]:
    lengths, at = [], 0
    while at < len(wire):
        _, length = struct.unpack_from(">II", wire, at)
        lengths.append(length)
        at += 8 + length
    return lengths


def test_frames_sent_fit_the_runtimes_4096_byte_reads() -> None:
    # the runtime's ttrpc reads through a 4096-byte bufio.Reader, and NRI's mux fails a Read
    # into a smaller buffer than the frame with ENOMEM
    wire = encode(PLUGIN_SERVICE_CONN, bytes(10_000))
    assert frame_lengths(wire) == [SEND_CHUNK, SEND_CHUNK, 10_000 - 2 * SEND_CHUNK]


def test_the_header_is_conn_id_then_length_big_endian() -> None:
    assert encode(RUNTIME_SERVICE_CONN, b"abc") == bytes.fromhex("0000000200000003") + b"abc"


@pytest.mark.parametrize("conn_id", [0, 2**32])
def test_the_reserved_connection_is_never_written(conn_id: int) -> None:
    with pytest.raises(ValueError, match="connection id"):
        encode(conn_id, b"x")


def test_a_frame_of_the_go_writers_largest_size_is_accepted() -> None:
    decoder = MuxDecoder()
    assert decoder.feed(struct.pack(">II", 1, MAX_PAYLOAD)) == []  # waits for its payload


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    decoder = MuxDecoder()
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(struct.pack(">II", 1, MAX_PAYLOAD + 1))
    with pytest.raises(ProtocolError):
        decoder.feed(encode(1, b"x"))
    assert decoder.pending == 0


@pytest.mark.parametrize(
    "sent", [b"\x00\x00\x00", encode(1, b"hello")[:-1]], ids=["header", "data"]
)
def test_a_trunk_cut_inside_a_frame_is_a_cut_connection_not_a_protocol_error(sent: bytes) -> None:
    decoder = MuxDecoder()
    assert decoder.feed(sent) == []
    with pytest.raises(ConnectionCut, match=f"ended {len(sent)} bytes into a multiplexed frame"):
        decoder.end()
    decoder.end()  # said once


def test_frames_of_any_connection_are_returned_and_empty_ones_skipped() -> None:
    wire = struct.pack(">II", 7, 0) + encode(7, b"x") + encode(0xFFFF_FFFF, b"y")
    assert MuxDecoder().feed(wire) == [Segment(7, b"x"), Segment(0xFFFF_FFFF, b"y")]


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_gives_segments_or_a_protocol_error_and_nothing_else(pieces: list[bytes]) -> None:
    decoder = MuxDecoder()
    try:
        for piece in pieces:
            decoder.feed(piece)
        decoder.end()
    except (ProtocolError, ConnectionCut):
        pass


# --- over a trio stream --------------------------------------------------------------------


async def test_concurrent_senders_share_the_trunk_without_corrupting_it() -> None:
    # two tasks sending large writes at once (trio refuses concurrent send_all on one stream:
    # the Mux serialises them whole)
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = Mux(left), Mux(right)
    big = {PLUGIN_SERVICE_CONN: bytes(range(256)) * 400, RUNTIME_SERVICE_CONN: b"\x07" * 70_000}
    got: list[Segment] = []

    async def send(conn: int) -> None:
        for _ in range(3):
            await sender.send(conn, big[conn])

    async def receive() -> None:
        while segments := await receiver.receive():
            got.extend(segments)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            async with trio.open_nursery() as senders:
                senders.start_soon(send, PLUGIN_SERVICE_CONN)
                senders.start_soon(send, RUNTIME_SERVICE_CONN)
            await left.aclose()  # the receiver ends at EOF
    assert by_conn(got) == {conn: data * 3 for conn, data in big.items()}


async def test_a_bad_trunk_raises_a_protocol_error_and_eof_is_an_empty_read() -> None:
    left, right = trio.testing.memory_stream_pair()
    mux = Mux(right)
    await left.send_all(encode(1, b"ok"))
    assert await mux.receive() == [Segment(1, b"ok")]
    await left.send_all(b"\xde\xad\xbe\xef" * 4)
    with pytest.raises(ProtocolError):
        await mux.receive()
    left2, right2 = trio.testing.memory_stream_pair()
    await left2.aclose()
    assert await Mux(right2).receive() == []


async def test_a_trunk_that_ends_mid_frame_raises_a_cut_connection() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(encode(1, b"hello")[:-1])
    await left.aclose()
    with pytest.raises(ConnectionCut):
        await Mux(right).receive()
