"""The chunk stream: header types 0-3, extended timestamps, chunk size, abort, limits."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtmp.chunk import ChunkLimits, ChunkReader, ChunkWriter, RawMessage
from ingest.rtmp.errors import ProtocolError


def fmt0(csid: int, ts: int, length: int, type_id: int, sid: int) -> bytes:
    return (
        bytes((csid,))
        + min(ts, 0xFFFFFF).to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes((type_id,))
        + struct.pack("<I", sid)
        + (struct.pack(">I", ts) if ts >= 0xFFFFFF else b"")
    )


def fmt1(csid: int, delta: int, length: int, type_id: int) -> bytes:
    return (
        bytes((0x40 | csid,))
        + delta.to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes((type_id,))
    )


def fmt2(csid: int, delta: int) -> bytes:
    return bytes((0x80 | csid,)) + delta.to_bytes(3, "big")


def fmt3(csid: int) -> bytes:
    return bytes((0xC0 | csid,))


def summary(msgs: list[RawMessage]) -> list[tuple[int, int, int, int, bytes]]:
    return [
        (m.chunk_stream_id, m.type_id, m.stream_id, m.timestamp, bytes(m.payload)) for m in msgs
    ]


def test_all_four_header_types() -> None:
    data = (
        fmt0(4, 1000, 3, 9, 1)
        + b"abc"
        + fmt1(4, 33, 2, 8)
        + b"de"  # same stream, new length/type, delta 33
        + fmt2(4, 10)
        + b"fg"  # delta 10, same length/type
        + fmt3(4)
        + b"hi"  # a whole new message reusing delta 10
    )
    assert summary(ChunkReader().feed(data)) == [
        (4, 9, 1, 1000, b"abc"),
        (4, 8, 1, 1033, b"de"),
        (4, 8, 1, 1043, b"fg"),
        (4, 8, 1, 1053, b"hi"),
    ]


def test_fmt3_after_fmt0_reuses_the_timestamp_as_delta() -> None:
    data = fmt0(5, 40, 1, 8, 1) + b"a" + fmt3(5) + b"b"
    assert [m.timestamp for m in ChunkReader().feed(data)] == [40, 80]


def test_message_split_over_chunks_of_the_default_size() -> None:
    payload = bytes(range(256)) + b"tail"
    data = (
        fmt0(6, 5, len(payload), 9, 1)
        + payload[:128]
        + fmt3(6)
        + payload[128:256]
        + fmt3(6)
        + payload[256:]
    )
    (msg,) = ChunkReader().feed(data)
    assert msg.payload == payload and msg.timestamp == 5


def test_interleaved_chunk_streams() -> None:
    a, b = b"A" * 200, b"B" * 130
    data = (
        fmt0(4, 0, 200, 8, 1)
        + a[:128]
        + fmt0(6, 0, 130, 9, 1)
        + b[:128]
        + fmt3(4)
        + a[128:]
        + fmt3(6)
        + b[128:]
    )
    assert [bytes(m.payload) for m in ChunkReader().feed(data)] == [a, b]


def test_two_and_three_byte_chunk_stream_ids() -> None:
    two = b"\x00" + bytes((100 - 64,)) + fmt0(0, 7, 1, 8, 1)[1:] + b"x"
    three = b"\x01" + (3000 - 64).to_bytes(2, "little") + fmt0(0, 9, 1, 8, 1)[1:] + b"y"
    msgs = ChunkReader().feed(two + three)
    assert [(m.chunk_stream_id, bytes(m.payload)) for m in msgs] == [(100, b"x"), (3000, b"y")]


def test_extended_timestamp_with_repeated_field_on_continuation() -> None:
    """librtmp/ffmpeg/OBS repeat the 4-byte extended timestamp on fmt 3 continuations."""
    ts = 0x01000000
    payload = b"p" * 200
    ext = struct.pack(">I", ts)
    data = fmt0(4, ts, 200, 9, 1) + payload[:128] + fmt3(4) + ext + payload[128:]
    (msg,) = ChunkReader().feed(data)
    assert msg.timestamp == ts and msg.payload == payload


def test_extended_timestamp_without_repeated_field_on_continuation() -> None:
    ts = 0x01000000
    payload = b"q" * 200
    data = fmt0(4, ts, 200, 9, 1) + payload[:128] + fmt3(4) + payload[128:]
    (msg,) = ChunkReader().feed(data)
    assert msg.timestamp == ts and msg.payload == payload


def test_extended_delta_on_fmt1_and_new_message_fmt3() -> None:
    delta = 0x01000000
    ext = struct.pack(">I", delta)
    data = (
        fmt0(4, 10, 1, 8, 1)
        + b"a"
        + bytes((0x44,))
        + b"\xff\xff\xff"
        + (1).to_bytes(3, "big")
        + b"\x08"
        + ext
        + b"b"
        + fmt3(4)
        + ext
        + b"c"
    )
    assert [m.timestamp for m in ChunkReader().feed(data)] == [10, 10 + delta, 10 + 2 * delta]


def test_timestamps_wrap_at_32_bits() -> None:
    data = fmt0(4, 0xFFFFFFF0, 1, 8, 1) + b"a" + fmt2(4, 0x20) + b"b"
    assert [m.timestamp for m in ChunkReader().feed(data)] == [0xFFFFFFF0, 0x10]


def test_set_chunk_size_applies_to_following_chunks() -> None:
    payload = b"z" * 300
    data = fmt0(2, 0, 4, 1, 0) + struct.pack(">I", 4096) + fmt0(6, 0, 300, 9, 1) + payload
    reader = ChunkReader()
    msgs = reader.feed(data)
    assert reader.chunk_size == 4096
    assert msgs[-1].payload == payload


def test_abort_discards_the_partial_message() -> None:
    data = (
        fmt0(6, 0, 200, 9, 1)
        + b"x" * 128
        + fmt0(2, 0, 4, 2, 0)
        + struct.pack(">I", 6)
        + fmt0(6, 0, 3, 9, 1)
        + b"new"
    )
    reader = ChunkReader()
    msgs = reader.feed(data)
    assert summary(msgs)[-1] == (6, 9, 1, 0, b"new")
    assert reader.pending_bytes == 0 and reader.aborted == 1


def test_split_anywhere_gives_the_same_messages() -> None:
    w = ChunkWriter(128)
    data = b"".join(
        w.write(4 + i % 3, 9, 1, i * 33, bytes([i]) * (i * 37 % 500)) for i in range(30)
    )
    whole = summary(ChunkReader().feed(data))
    for step in (1, 7, 128, 1000):
        reader = ChunkReader()
        parts: list[RawMessage] = []
        for i in range(0, len(data), step):
            parts += reader.feed(data[i : i + step])
        assert summary(parts) == whole
    assert len(whole) == 30


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=6000), min_size=1, max_size=30))
def test_reads_from_one_reused_buffer_in_any_pieces_give_the_same_messages(
    sizes: list[int],
) -> None:
    # The server reads every connection into one shared buffer, overwritten by
    # the next read: the reader must have copied all it keeps before feed returns.
    w = ChunkWriter(128)
    data = w.write(2, 1, 0, 0, struct.pack(">I", 4096))  # Set Chunk Size, as ffmpeg sends
    w.chunk_size = 4096
    data += b"".join(
        w.write(4 + i % 2, 9 - i % 2, 1, i * 33, bytes([i]) * (i * 911 % 9000)) for i in range(40)
    )
    whole = summary(ChunkReader().feed(data))
    shared = bytearray(6000)
    reader = ChunkReader()
    got: list[RawMessage] = []
    pos = i = 0
    while pos < len(data):
        piece = data[pos : pos + sizes[i % len(sizes)]]
        shared[: len(piece)] = piece
        got += reader.feed(memoryview(shared)[: len(piece)])
        shared[: len(piece)] = b"\xee" * len(piece)  # the next read lands on it
        pos += len(piece)
        i += 1
    assert summary(got) == whole
    assert len(whole) == 41 and reader.buffered == 0


def test_writer_compresses_headers_and_reader_reads_them_back() -> None:
    w = ChunkWriter(128)
    msgs = [(4, 8, 1, t, b"a" * 6) for t in (0, 23, 46, 69)]
    msgs += [(4, 8, 1, 70, b"bb"), (6, 9, 1, 0x1000000, b"c" * 300)]
    data = [w.write(*m) for m in msgs]
    assert [d[0] >> 6 for d in data] == [0, 2, 3, 3, 1, 0]
    back = summary(ChunkReader().feed(b"".join(data)))
    assert back == msgs


# -- limits ---------------------------------------------------------------------


def test_chunk_size_over_the_limit_is_refused() -> None:
    reader = ChunkReader(ChunkLimits(max_chunk_size=65536))
    with pytest.raises(ProtocolError):
        reader.feed(fmt0(2, 0, 4, 1, 0) + struct.pack(">I", 65537))


def test_zero_chunk_size_is_refused() -> None:
    with pytest.raises(ProtocolError):
        ChunkReader().feed(fmt0(2, 0, 4, 1, 0) + struct.pack(">I", 0))


def test_message_over_the_size_limit_is_refused_at_its_header() -> None:
    reader = ChunkReader(ChunkLimits(max_message_size=1000))
    with pytest.raises(ProtocolError):
        reader.feed(fmt0(4, 0, 1001, 9, 1))


def test_too_many_chunk_streams() -> None:
    reader = ChunkReader(ChunkLimits(max_chunk_streams=4))
    with pytest.raises(ProtocolError):
        reader.feed(b"".join(fmt0(c, 0, 1, 8, 1) + b"x" for c in range(3, 9)))


def test_too_many_partial_messages_in_flight() -> None:
    reader = ChunkReader(ChunkLimits(max_in_flight=2))
    with pytest.raises(ProtocolError):
        reader.feed(b"".join(fmt0(c, 0, 1000, 9, 1) + b"x" * 128 for c in range(3, 6)))


def test_pending_bytes_are_bounded() -> None:
    reader = ChunkReader(ChunkLimits(max_pending_bytes=1000, max_in_flight=64))
    with pytest.raises(ProtocolError):
        reader.feed(b"".join(fmt0(c, 0, 100_000, 9, 1) + b"x" * 128 for c in range(3, 20)))


def test_first_chunk_of_a_stream_must_carry_a_header() -> None:
    with pytest.raises(ProtocolError):
        ChunkReader().feed(fmt3(9) + b"x")


@pytest.mark.parametrize("size", [10_000, 300_000])
def test_long_messages_reassemble_in_any_split(size: int) -> None:
    """Small enough to be allocated whole at the first chunk, or large and grown."""
    payload = bytes(range(256)) * (size // 256) + b"t" * (size % 256)
    w = ChunkWriter(4096)
    data = w.write(4, 8, 1, 0, b"a" * 300) + w.write(6, 9, 1, 40, payload)
    for step in (1000, 4099, 65536):
        reader = ChunkReader()
        reader.chunk_size = 4096
        msgs: list[RawMessage] = []
        for i in range(0, len(data), step):
            msgs += reader.feed(data[i : i + step])
            assert reader.pending_bytes <= size
        assert [(m.type_id, m.timestamp, bytes(m.payload)) for m in msgs] == [
            (8, 0, b"a" * 300),
            (9, 40, payload),
        ]
        assert reader.pending_bytes == 0


def test_a_partial_message_counts_what_it_holds() -> None:
    reader = ChunkReader(ChunkLimits(max_pending_bytes=50_000))
    reader.feed(fmt0(6, 0, 40_000, 9, 1) + b"x" * 128)
    assert reader.pending_bytes == 40_000  # allocated whole at its first chunk
    with pytest.raises(ProtocolError):
        reader.feed(fmt0(7, 0, 20_000, 9, 1) + b"y" * 128)


def test_keyframe_remaining_names_the_bytes_that_complete_a_partial_keyframe() -> None:
    r = ChunkReader()  # chunk size 128
    keyframe = b"\x17\x01" + bytes(298)  # a 300-byte FLV video tag, frame type 1
    inter = b"\x27\x01" + bytes(198)
    audio = b"\xaf\x01" + bytes(198)
    assert r.keyframe_remaining() is None
    r.feed(fmt0(6, 0, len(keyframe), 9, 1) + keyframe[:128])
    assert r.keyframe_remaining() == 300 - 128
    r.feed(fmt0(4, 0, len(audio), 8, 1) + audio[:128])  # a partial audio message
    r.feed(fmt0(7, 0, len(inter), 9, 1) + inter[:128])  # and a partial inter frame
    assert r.keyframe_remaining() == 300 - 128, "only keyframes count"
    r.feed(fmt3(6) + keyframe[128:256])
    assert r.keyframe_remaining() == 300 - 256
    done = r.feed(fmt3(6) + keyframe[256:])
    assert [m.payload for m in done] == [keyframe]
    assert r.keyframe_remaining() is None
    ex = bytes((0x80 | 0x10 | 1,)) + b"hvc1" + bytes(295)  # Enhanced RTMP: ExHeader bit
    r.feed(fmt0(5, 0, len(ex), 9, 1) + ex[:128])
    assert r.keyframe_remaining() == 300 - 128
