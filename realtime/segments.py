"""What the CMAF segmenter produces, and the sink protocol for whoever keeps it.

These are plain data so that the live HLS playlist (realtime), the recorder and
the VOD packager (vod) agree without importing each other's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class InitSegment:
    """An fMP4 initialization segment (ftyp+moov) for one generation's tracks."""

    generation: int
    data: bytes
    codecs: str
    """RFC 6381 codecs string for the playlist, e.g. "avc1.64001f,mp4a.40.2"."""
    width: int
    height: int
    bandwidth: int
    """Peak bits/s estimate for the multivariant playlist."""
    frame_rate: float = 0.0
    """The video's frame rate (0.0 when unknown or no video)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One LL-HLS partial segment: a moof+mdat pair (CMAF chunk)."""

    msn: int
    """Media sequence number of the segment this part belongs to."""
    index: int
    """Index within that segment, from 0."""
    data: bytes
    duration: float
    independent: bool
    """Starts with a video keyframe (or the stream has no video)."""
    program_date_time: float = 0.0
    """Wall-clock (epoch seconds) of its segment's first sample; 0 when unknown."""
    discontinuity: bool = False
    """Its segment starts a discontinuity (a new generation after the first)."""
    generation: int = 0
    """The publication generation the part belongs to."""
    init_generation: int = 0
    """The generation of the init segment (EXT-X-MAP) it needs."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A completed media segment: its parts concatenated, starting at a keyframe."""

    msn: int
    duration: float
    parts: tuple[Part, ...]
    """The segment's bytes are its parts' payloads, in order. They are not joined
    up front because most segments are never asked for whole (LL-HLS viewers
    fetch parts): joining every one would copy each byte again and hold it twice."""
    program_date_time: float
    """Wall-clock (epoch seconds) of the segment's first sample."""
    discontinuity: bool
    """First segment after a new generation (reconnect, takeover) — not the very first."""
    generation: int
    init: InitSegment
    start_pts: float
    """Presentation time of the first sample in seconds, on the stream's timeline."""
    _joined: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        return sum(len(p.data) for p in self.parts)

    def join(self) -> bytes:
        """The whole segment as one new `bytes` (not kept: see `data`)."""
        return b"".join(p.data for p in self.parts)

    @property
    def data(self) -> bytes:
        """The whole segment as one `bytes`, joined on first use and kept (a
        segment asked for whole is usually asked for by every such viewer)."""
        joined = self._joined
        if joined is None:
            joined = self.join()
            object.__setattr__(self, "_joined", joined)
        return joined


class SegmentSink(Protocol):
    """Receives the segmenter's output on the event loop; must not block it."""

    def on_init(self, init: InitSegment) -> None: ...

    def on_part(self, part: Part) -> None: ...

    def on_segment(self, segment: Segment) -> None: ...

    def on_end(self) -> None:
        """The stream's broadcast is over (no more segments will come)."""
        ...


class SegmentSource(Protocol):
    """Where a live window reads back the segments whose bytes left its memory
    (the recording, or an on-disk cache of the window)."""

    async def read_segment(self, msn: int) -> bytes | None:
        """Segment `msn`'s bytes (None: not kept, or not readable now)."""
        ...


FIRST_MSN = 1
"""A new live playlist's first media sequence number. Not 0: hls.js (1.6) tests
the last complete segment's number for truth before it makes a blocking
reload, so a viewer who joins in a stream's first segment would poll once per
target duration instead, stall, and add a second to its target latency for the
rest of the session (its `liveSyncOnStallIncrease`)."""


@dataclass(frozen=True, slots=True)
class Continuation:
    """Where a live playlist another server was serving left off, so a new one
    continues it: its next media sequence number, and the discontinuity
    sequence number of the last segment it had. The new playlist's first
    segment then follows with a discontinuity (a new encoder session)."""

    next_msn: int
    discontinuity_sequence: int
