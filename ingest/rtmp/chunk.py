"""The RTMP chunk stream: message reassembly from chunks, and chunking on output.

Owns the chunk layer of RTMP (spec section 5.3): basic headers with one-, two-
and three-byte chunk stream ids; message headers of all four types (fmt 0 full,
1 same stream, 2 timestamp delta only, 3 none); extended timestamps, including
the fmt 3 continuation rule (the 4-byte field is repeated by librtmp/ffmpeg/OBS
and omitted by some others: we accept both by comparing with the value in
effect); Set Chunk Size and Abort, which act on the chunk layer itself.

Hard limits (`ChunkLimits`) bound everything a peer can make us hold: the chunk
size it may set, the size of one message, the number of chunk streams it may
use and may have partially sent at once, and the total bytes of partial
messages. Breaking one raises `ProtocolError`.

Hot path notes: parsing works on a memoryview of the received bytes (or of the
leftover buffer), a message that fits in one chunk is copied once out of the
input, a longer one is assembled in a bytearray that is handed on as is: up to
`_PREALLOC_MAX` it is allocated at its announced length at the first chunk and
filled by slice assignment (no regrowth, one copy); `pending_bytes` counts what
is allocated, so the limits bound memory held, not only bytes sent.
`RawMessage` is a plain slotted class (one per message; frozen dataclasses pay
an `object.__setattr__` per field).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ingest.rtmp.errors import ProtocolError

DEFAULT_CHUNK_SIZE = 128

_FMT0 = struct.Struct(">BHBHB")  # ts(3) length(3) type(1), split to fit struct
_FMT1 = struct.Struct(">BHBHB")
_FMT2 = struct.Struct(">BH")
_U32BE = struct.Struct(">I")
_U32LE = struct.Struct("<I")
_HEADER_LEN = (11, 7, 3, 0)
_MAX_HEADER_LEN = 3 + 11 + 4
"""Basic header, type-0 message header, extended timestamp."""
_EXT = 0xFFFFFF
_PREALLOC_MAX = 256 * 1024
"""A partial message up to this size is allocated whole at its first chunk (one
copy per chunk, no regrowth); a larger one grows as it arrives, so a peer cannot
make us allocate (and zero) much more than it has sent by announcing big messages."""


@dataclass(frozen=True, slots=True)
class ChunkLimits:
    max_chunk_size: int = 1 << 20
    """Largest chunk size a peer may set (RTMP allows 2**31-1; clients use 128..65536)."""
    max_message_size: int = 16 << 20
    """Largest message; a 4K keyframe is a few MiB."""
    max_chunk_streams: int = 64
    """Distinct chunk stream ids one connection may use."""
    max_in_flight: int = 8
    """Chunk streams with a partially received message at the same time."""
    max_pending_bytes: int = 24 << 20
    """Bytes of partially received messages, all chunk streams together."""


@dataclass(slots=True)
class RawMessage:
    """One reassembled message, before interpretation of its payload."""

    chunk_stream_id: int
    type_id: int
    stream_id: int
    timestamp: int
    """Milliseconds, 32 bits (wraps)."""
    payload: bytes | bytearray


class _ChunkStream:
    __slots__ = (
        "buf",
        "delta",
        "ext_value",
        "extended",
        "have",
        "length",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False
        self.ext_value = 0
        self.buf: bytearray | None = None
        """The partial message, allocated at its full length; `have` bytes filled."""
        self.have = 0


class ChunkReader:
    """Turns received bytes into `RawMessage`s. Sans-IO: `feed(data)` returns messages."""

    def __init__(self, limits: ChunkLimits | None = None) -> None:
        self.limits = limits or ChunkLimits()
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _ChunkStream] = {}
        self._buf = bytearray()
        self._in_flight = 0
        self.pending_bytes = 0
        """Bytes allocated for partially received messages."""
        self.aborted = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed (less than one chunk)."""
        return len(self._buf)

    def keyframe_remaining(self) -> int | None:
        """Payload bytes still to come of the partially received video keyframe
        nearest completion (None: none is partial). The unparsed tail may hold
        some of them already: the wire bytes needed are at least this less
        `buffered`, never fewer."""
        best: int | None = None
        if not self._in_flight:
            return None
        for cs in self._streams.values():
            buf = cs.buf
            # FLV video tag: frame type in bits 4-6 of the first byte (1 =
            # keyframe; bit 7 is Enhanced RTMP's ExHeader flag)
            if buf is not None and cs.type_id == 9 and cs.have and (buf[0] >> 4) & 7 == 1:
                left = cs.length - cs.have
                if best is None or left < best:
                    best = left
        return best

    def feed(self, data: bytes | bytearray | memoryview) -> list[RawMessage]:
        """Parse `data` after what is buffered. Nothing keeps a reference to
        `data`: the caller may reuse its buffer as soon as this returns."""
        out: list[RawMessage] = []
        view = memoryview(data)
        try:
            start = 0
            buf = self._buf
            if buf:
                # The buffered tail is less than one chunk with its header, so this
                # much of `data` completes it; the rest is parsed where it lies
                # rather than copied onto the tail.
                head = len(buf)
                take = self.chunk_size + _MAX_HEADER_LEN
                buf += view[:take]
                pos = self._parse_buffered(out)
                if pos < head or len(view) <= take:
                    if len(view) > take:  # pragma: no cover - the tail was under a chunk
                        buf += view[take:]
                        self._parse_buffered(out)
                    return self._checked(out)
                start = pos - head
                buf.clear()
            mv = view[start:]
            try:
                pos = self._parse(mv, out)
                if pos < len(mv):
                    self._buf = bytearray(mv[pos:])
            finally:
                mv.release()
        finally:
            view.release()
        return self._checked(out)

    def _parse_buffered(self, out: list[RawMessage]) -> int:
        """Parse the buffer; drop what was consumed; return how much that was."""
        mv = memoryview(self._buf)
        try:
            pos = self._parse(mv, out)
        finally:
            mv.release()
        del self._buf[:pos]
        return pos

    def _checked(self, out: list[RawMessage]) -> list[RawMessage]:
        # Whatever stays unparsed is shorter than one chunk with its header.
        if len(self._buf) > self.chunk_size + _MAX_HEADER_LEN:
            raise ProtocolError("chunk stream: unparsed input over one chunk")  # pragma: no cover
        return out

    def _parse(self, mv: memoryview, out: list[RawMessage]) -> int:
        end = len(mv)
        pos = 0
        streams = self._streams
        limits = self.limits
        while pos < end:
            b0 = mv[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            p = pos + 1
            if csid == 0:
                if p + 1 > end:
                    break
                csid = 64 + mv[p]
                p += 1
            elif csid == 1:
                if p + 2 > end:
                    break
                csid = 64 + mv[p] + (mv[p + 1] << 8)
                p += 2
            if p + _HEADER_LEN[fmt] > end:
                break
            cs = streams.get(csid)
            if cs is None:
                if fmt >= 2:
                    raise ProtocolError(f"chunk stream {csid}: first chunk has header type {fmt}")
                if len(streams) >= limits.max_chunk_streams:
                    raise ProtocolError("too many chunk streams")
                cs = streams[csid] = _ChunkStream()
            # Parse the header into locals; commit only once the chunk is complete.
            continuation = False
            ext_field = False
            if fmt == 0:
                t_hi, t_lo, l_hi, l_lo, type_id = _FMT0.unpack_from(mv, p)
                tfield = (t_hi << 16) | t_lo
                length = (l_hi << 16) | l_lo
                stream_id = _U32LE.unpack_from(mv, p + 7)[0]
                p += 11
            elif fmt == 1:
                t_hi, t_lo, l_hi, l_lo, type_id = _FMT1.unpack_from(mv, p)
                tfield = (t_hi << 16) | t_lo
                length = (l_hi << 16) | l_lo
                stream_id = cs.stream_id
                p += 7
            elif fmt == 2:
                t_hi, t_lo = _FMT2.unpack_from(mv, p)
                tfield = (t_hi << 16) | t_lo
                length = cs.length
                type_id = cs.type_id
                stream_id = cs.stream_id
                p += 3
            else:
                length = cs.length
                type_id = cs.type_id
                stream_id = cs.stream_id
                tfield = -1
                continuation = cs.buf is not None
                if cs.extended:
                    # Repeated extended timestamp (librtmp, ffmpeg, OBS) or not (some others).
                    if p + 4 > end:
                        break
                    if _U32BE.unpack_from(mv, p)[0] == cs.ext_value:
                        p += 4
            if tfield == _EXT:
                if p + 4 > end:
                    break
                ext_value = _U32BE.unpack_from(mv, p)[0]
                tvalue = ext_value
                ext_field = True
                p += 4
            else:
                ext_value = 0
                tvalue = tfield
            if fmt != 3 and cs.buf is not None:
                # A new header while a message is unfinished: the peer gave that one up.
                self.pending_bytes -= len(cs.buf)
                self._in_flight -= 1
                cs.buf = None
                self.aborted += 1
            if fmt != 3 and length > limits.max_message_size:
                raise ProtocolError(f"message of {length} bytes over the limit")
            have = cs.have if continuation else 0
            n = length - have
            if n > self.chunk_size:
                n = self.chunk_size
            if p + n > end:
                break
            # The whole chunk is here: commit.
            if fmt != 3:
                cs.length = length
                cs.type_id = type_id
                cs.stream_id = stream_id
                cs.extended = ext_field
                cs.ext_value = ext_value
                if fmt == 0:
                    cs.timestamp = tvalue
                    cs.delta = tvalue
                else:
                    cs.delta = tvalue
                    cs.timestamp = (cs.timestamp + tvalue) & 0xFFFFFFFF
            elif not continuation:
                cs.timestamp = (cs.timestamp + cs.delta) & 0xFFFFFFFF
            pos = p + n
            buf = cs.buf
            if buf is None:
                if n == length:
                    out.append(RawMessage(csid, type_id, stream_id, cs.timestamp, bytes(mv[p:pos])))
                    if type_id <= 2:
                        self._control(out[-1])
                    continue
                if self._in_flight >= limits.max_in_flight:
                    raise ProtocolError("too many interleaved partial messages")
                if length <= _PREALLOC_MAX:
                    # Checked before allocating: the whole message is allocated now.
                    if self.pending_bytes + length > limits.max_pending_bytes:
                        raise ProtocolError("too many bytes in partial messages")
                    buf = cs.buf = bytearray(length)
                    buf[:n] = mv[p:pos]
                else:
                    buf = cs.buf = bytearray(mv[p:pos])
                cs.have = n
                self._in_flight += 1
                self.pending_bytes += len(buf)
            else:
                have = cs.have
                if have + n <= len(buf):
                    buf[have : have + n] = mv[p:pos]
                else:
                    buf += mv[p:pos]  # a large message grows as it arrives
                    self.pending_bytes += n
                have += n
                cs.have = have
                if have >= length:
                    cs.buf = None
                    self._in_flight -= 1
                    self.pending_bytes -= length
                    out.append(RawMessage(csid, type_id, stream_id, cs.timestamp, buf))
                    if type_id <= 2:
                        self._control(out[-1])
                    continue
            if self.pending_bytes > limits.max_pending_bytes:
                raise ProtocolError("too many bytes in partial messages")
        return pos

    def _control(self, msg: RawMessage) -> None:
        """Set Chunk Size and Abort act on this layer, at once."""
        if msg.stream_id != 0 and msg.chunk_stream_id != 2:
            pass  # accepted anyway: some clients send them on other streams
        if len(msg.payload) < 4:
            if msg.type_id in (1, 2):
                raise ProtocolError(f"control message type {msg.type_id} too short")
            return
        value = _U32BE.unpack_from(msg.payload, 0)[0]
        if msg.type_id == 1:
            size = value & 0x7FFFFFFF
            if size < 1 or size > self.limits.max_chunk_size:
                raise ProtocolError(f"chunk size {size} outside 1..{self.limits.max_chunk_size}")
            self.chunk_size = size
        elif msg.type_id == 2:
            cs = self._streams.get(value)
            if cs is not None and cs.buf is not None:
                self.pending_bytes -= len(cs.buf)
                self._in_flight -= 1
                cs.buf = None
                self.aborted += 1


class _OutState:
    __slots__ = ("delta", "length", "stream_id", "timestamp", "type_id")

    def __init__(
        self, stream_id: int, length: int, type_id: int, timestamp: int, delta: int
    ) -> None:
        self.stream_id = stream_id
        self.length = length
        self.type_id = type_id
        self.timestamp = timestamp
        self.delta = delta


def _basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes(((fmt << 6) | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= 65599:
        v = csid - 64
        return bytes(((fmt << 6) | 1, v & 0xFF, v >> 8))
    raise ValueError(f"chunk stream id {csid} out of range")


class ChunkWriter:
    """Chunks outgoing messages, compressing headers (fmt 1/2/3) where it can."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._state: dict[int, _OutState] = {}

    def write(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
    ) -> bytes:
        timestamp &= 0xFFFFFFFF
        length = len(payload)
        prev = self._state.get(csid)
        if prev is None or prev.stream_id != stream_id or timestamp < prev.timestamp:
            fmt, tvalue = 0, timestamp
        else:
            delta = timestamp - prev.timestamp
            if prev.length != length or prev.type_id != type_id:
                fmt, tvalue = 1, delta
            elif delta != prev.delta:
                fmt, tvalue = 2, delta
            else:
                fmt, tvalue = 3, delta
        extended = tvalue >= _EXT
        tfield = _EXT if extended else tvalue
        head = bytearray(_basic_header(fmt, csid))
        if fmt <= 2:
            head += tfield.to_bytes(3, "big")
        if fmt <= 1:
            head += length.to_bytes(3, "big")
            head.append(type_id)
        if fmt == 0:
            head += _U32LE.pack(stream_id)
        ext = _U32BE.pack(tvalue) if extended else b""
        head += ext
        self._state[csid] = _OutState(stream_id, length, type_id, timestamp, tvalue)
        out = bytearray(head)
        size = self.chunk_size
        out += payload[:size]
        cont = _basic_header(3, csid) + ext
        for off in range(size, length, size):
            out += cont
            out += payload[off : off + size]
        return bytes(out)
