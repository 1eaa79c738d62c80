"""Property: whatever bytes a peer sends, the RTMP session and the FLV demuxer raise
nothing but `ProtocolError`, and what they hold stays within their limits."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtmpclient import FFMPEG_CAPTURE, GSTREAMER_CAPTURE, handshake_bytes, publish_prologue

from ingest.flv import FlvDemuxer
from ingest.rtmp.chunk import ChunkLimits
from ingest.rtmp.errors import ProtocolError
from ingest.rtmp.session import AudioData, MetaData, RtmpSession, State, VideoData

LIMITS = ChunkLimits(
    max_chunk_size=65536,
    max_message_size=1 << 20,
    max_chunk_streams=16,
    max_in_flight=4,
    max_pending_bytes=2 << 20,
)
CAPTURES = [FFMPEG_CAPTURE.read_bytes(), GSTREAMER_CAPTURE.read_bytes()]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def drive(data: bytes, step: int) -> None:
    """Feed `data` in `step`-byte reads the way the server does; check the bounds."""
    s = RtmpSession(apps=frozenset({"live"}), chunk_limits=LIMITS)
    demux = FlvDemuxer()
    try:
        for i in range(0, len(data), step):
            s.receive_data(data[i : i + step])
            reader = s._reader
            assert reader.buffered <= reader.chunk_size + 18
            assert reader.pending_bytes <= LIMITS.max_pending_bytes
            assert s._held_bytes <= LIMITS.max_pending_bytes
            while True:
                if s.state is State.PUBLISH_PENDING:
                    s.accept_publish()
                ev = s.next_event()
                if ev is None:
                    break
                if isinstance(ev, VideoData):
                    demux.video(ev.timestamp, ev.payload)
                elif isinstance(ev, AudioData):
                    demux.audio(ev.timestamp, ev.payload)
                elif isinstance(ev, MetaData):
                    demux.set_metadata(ev.values)
            assert len(s._out) < 1 << 20
            s.data_to_send()
        s.receive_data(b"")
    except ProtocolError:
        pass


mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "duplicate"]),
    st.floats(min_value=0.0, max_value=1.0),
    st.binary(min_size=1, max_size=16),
    st.integers(min_value=1, max_value=600),
)


def mutate(data: bytes, mutations: list[tuple[str, float, bytes, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, blob, n in mutations:
        # Mostly after the handshake, where the interesting parsers are.
        pos = 3073 + int(where * max(0, len(buf) - 3073 - 1)) if len(buf) > 3074 else 0
        if op == "flip":
            buf[pos] ^= blob[0] or 0xFF
        elif op == "set":
            buf[pos : pos + len(blob)] = blob
        elif op == "insert":
            buf[pos:pos] = blob
        elif op == "delete":
            del buf[pos : pos + n]
        else:
            buf[pos:pos] = buf[pos : pos + n]
    return bytes(buf)


@FUZZ
@given(
    st.sampled_from([0, 1]),
    st.lists(mutation, min_size=1, max_size=8),
    st.integers(min_value=1, max_value=9000),
    st.floats(min_value=0.05, max_value=1.0),
)
def test_mutated_captured_sessions(which: int, mutations: list, step: int, keep: float) -> None:
    data = mutate(CAPTURES[which], mutations)
    drive(data[: max(1, int(len(data) * keep))], step)


@FUZZ
@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=5000), st.booleans())
def test_random_bytes_after_a_valid_prologue(tail: bytes, step: int, full: bool) -> None:
    prologue = publish_prologue()[0] if full else handshake_bytes()
    drive(prologue + tail, step)


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes_from_the_start(data: bytes) -> None:
    drive(b"\x03" + data, 512)


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_flv_demuxer_on_random_tags(video: bytes, audio: bytes) -> None:
    demux = FlvDemuxer()
    for payload in (b"\x17\x00" + video, video, b"\x17\x01" + video):
        try:
            demux.video(1000, payload)
        except ProtocolError:
            pass
    for payload in (b"\xaf\x00" + audio, audio, b"\xaf\x01" + audio):
        try:
            demux.audio(1000, payload)
        except ProtocolError:
            pass
