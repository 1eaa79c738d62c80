"""LL-HLS playlist rendering (RFC 8216bis): pure functions over a snapshot.

Owns the text of the multivariant playlist and of the live media playlist:
EXT-X-VERSION 9, TARGETDURATION, MEDIA-SEQUENCE, DISCONTINUITY-SEQUENCE,
SERVER-CONTROL (CAN-BLOCK-RELOAD, PART-HOLD-BACK, CAN-SKIP-UNTIL), PART-INF,
EXT-X-MAP, PROGRAM-DATE-TIME, EXT-X-PART (INDEPENDENT=YES), PRELOAD-HINT,
DISCONTINUITY, SKIP (delta updates) and ENDLIST.

URIs are relative to the playlist; `suffix` (for example "?token=...") is
appended to every child URI so signed playback carries its token:

    /play/{playback_id}.m3u8            multivariant -> "{playback_id}/media.m3u8"
    /play/{playback_id}/media.m3u8      media playlist, whose children are
    /play/{playback_id}/init-{gen}.mp4  init segment of a generation
    /play/{playback_id}/{msn}.m4s       complete segment
    /play/{playback_id}/{msn}.{part}.m4s   part
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

PART_HOLD_BACK_PARTS = 3.0
"""PART-HOLD-BACK in part targets (the spec asks for at least 2, recommends 3)."""
SKIP_TARGETS = 6.0
"""CAN-SKIP-UNTIL in target durations (the spec's minimum is 6)."""
PART_WINDOW_TARGETS = 3.0
"""Parts are listed for every segment that ends within this many target durations of the end."""


@dataclass(frozen=True, slots=True)
class PartEntry:
    msn: int
    index: int
    duration: float
    independent: bool


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """A segment in the playlist; `complete` False is the open one (parts only)."""

    msn: int
    duration: float
    parts: tuple[PartEntry, ...]
    program_date_time: float
    discontinuity: bool
    init_generation: int
    complete: bool = True


@dataclass(frozen=True, slots=True)
class MediaPlaylistState:
    target_duration: int
    part_target: float
    media_sequence: int
    discontinuity_sequence: int
    segments: tuple[SegmentEntry, ...]
    """Complete segments of the window, then at most one open segment."""
    preload_hint: tuple[int, int] | None
    ended: bool


def init_uri(generation: int) -> str:
    return f"init-{generation}.mp4"


def segment_uri(msn: int) -> str:
    return f"{msn}.m4s"


def part_uri(msn: int, index: int) -> str:
    return f"{msn}.{index}.m4s"


def media_playlist_uri(playback_id: str) -> str:
    """The media playlist, relative to the multivariant playlist `/play/{playback_id}.m3u8`."""
    return f"{playback_id}/media.m3u8"


def format_pdt(epoch_s: float) -> str:
    t = dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _num(v: float) -> str:
    return f"{v:.5f}"


def _short(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") if v else "0"


def render_multivariant(
    media_uri: str,
    *,
    bandwidth: int,
    codecs: str,
    width: int = 0,
    height: int = 0,
    frame_rate: float = 0.0,
    average_bandwidth: int = 0,
    suffix: str = "",
) -> str:
    """A multivariant playlist with one variant stream."""
    attrs = [f"BANDWIDTH={max(1, int(bandwidth))}"]
    if average_bandwidth:
        attrs.append(f"AVERAGE-BANDWIDTH={int(average_bandwidth)}")
    attrs.append(f'CODECS="{codecs}"')
    if width and height:
        attrs.append(f"RESOLUTION={width}x{height}")
    if frame_rate > 0:
        attrs.append(f"FRAME-RATE={frame_rate:.3f}")
    return (
        "#EXTM3U\n"
        "#EXT-X-VERSION:9\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        f"#EXT-X-STREAM-INF:{','.join(attrs)}\n"
        f"{media_uri}{suffix}\n"
    )


def skippable_segments(state: MediaPlaylistState) -> int:
    """How many leading complete segments a delta update may replace by EXT-X-SKIP:
    those that start more than CAN-SKIP-UNTIL seconds before the playlist's end."""
    skip_until = SKIP_TARGETS * state.target_duration
    total = sum(_segment_duration(s) for s in state.segments)
    n = 0
    start = 0.0
    for s in state.segments:
        if not s.complete or total - start <= skip_until:
            break
        # skipping s leaves its successors; all of s must lie beyond the boundary
        if total - (start + s.duration) < skip_until:
            break
        n += 1
        start += s.duration
    return n


def _segment_duration(s: SegmentEntry) -> float:
    return s.duration if s.complete else sum(p.duration for p in s.parts)


def render_media_playlist(
    state: MediaPlaylistState, *, skip: bool = False, suffix: str = ""
) -> str:
    """The live media playlist (a delta update when `skip`)."""
    td = state.target_duration
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:9",
        f"#EXT-X-TARGETDURATION:{td}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"CAN-SKIP-UNTIL={_short(SKIP_TARGETS * td)},"
        f"PART-HOLD-BACK={_short(PART_HOLD_BACK_PARTS * state.part_target)}",
        f"#EXT-X-PART-INF:PART-TARGET={_short(state.part_target)}",
        f"#EXT-X-MEDIA-SEQUENCE:{state.media_sequence}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{state.discontinuity_sequence}",
    ]
    skipped = skippable_segments(state) if skip else 0
    if skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")

    # Which segments list their parts: every segment with a part that lies within
    # the part window (3 target durations) of the end keeps all its parts.
    durations = [_segment_duration(s) for s in state.segments]
    remaining = sum(durations)
    with_parts: list[bool] = []
    for d in durations:
        remaining -= d
        with_parts.append(remaining < PART_WINDOW_TARGETS * td - 1e-6)
    if state.segments and not state.segments[-1].complete:
        with_parts[-1] = True

    prev_init: int | None = None
    for i, seg in enumerate(state.segments):
        if i < skipped:
            prev_init = seg.init_generation
            continue
        if not seg.complete and not seg.parts:
            continue
        first = i == skipped
        # on the first segment too: DISCONTINUITY-SEQUENCE counts only the tags
        # that left the playlist (a continued playlist starts with one)
        if seg.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if first or seg.init_generation != prev_init:
            lines.append(f'#EXT-X-MAP:URI="{init_uri(seg.init_generation)}{suffix}"')
        prev_init = seg.init_generation
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(seg.program_date_time)}")
        if with_parts[i]:
            for p in seg.parts:
                uri = part_uri(p.msn, p.index) + suffix
                attrs = f'#EXT-X-PART:DURATION={_num(p.duration)},URI="{uri}"'
                if p.independent:
                    attrs += ",INDEPENDENT=YES"
                lines.append(attrs)
        if seg.complete:
            lines.append(f"#EXTINF:{_num(seg.duration)},")
            lines.append(f"{segment_uri(seg.msn)}{suffix}")
    if state.ended:
        lines.append("#EXT-X-ENDLIST")
    elif state.preload_hint is not None:
        msn, idx = state.preload_hint
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_uri(msn, idx)}{suffix}"')
    return "\n".join(lines) + "\n"


def target_duration_for(segment_target_s: float, durations: list[float] | tuple[float, ...]) -> int:
    """EXT-X-TARGETDURATION: every EXTINF rounded to the nearest integer must fit."""
    td = max(1, math.ceil(segment_target_s - 1e-9))
    for d in durations:
        td = max(td, math.floor(d + 0.5))
    return td
