"""CMAF chunks: one moof (mfhd + a traf per track) followed by its mdat.

Owns `Sample`, `TrackRun` and `build_fragment`. Every traf uses
default-base-is-moof (tfhd flag 0x020000), a 64-bit tfdt (version 1) and a
version 1 trun (signed composition offsets) that carries the data offset and
per-sample duration, size, flags and composition offset. The mdat holds the
tracks' sample data in traf order.
"""

from __future__ import annotations

from dataclasses import dataclass

from realtime.cmaf.boxes import box, full_box, s32, u32, u64

SYNC_SAMPLE_FLAGS = 0x02000000
"""sample_depends_on = 2 (independent), sample_is_non_sync_sample = 0."""
NON_SYNC_SAMPLE_FLAGS = 0x01010000
"""sample_depends_on = 1, sample_is_non_sync_sample = 1."""

_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200
_TRUN_FLAGS = 0x000400
_TRUN_CTO = 0x000800


@dataclass(frozen=True, slots=True)
class Sample:
    data: bytes
    duration: int
    """In the track's media timescale."""
    sync: bool
    composition_offset: int = 0
    """pts - dts in the media timescale (may be negative)."""


@dataclass(frozen=True, slots=True)
class TrackRun:
    """The samples of one track inside one chunk."""

    track_id: int
    base_decode_time: int
    """tfdt: decode time of the first sample, in the media timescale."""
    samples: tuple[Sample, ...]


def _traf(run: TrackRun, data_offset: int) -> bytes:
    flags = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS | _TRUN_CTO
    entries = b"".join(
        u32(s.duration)
        + u32(len(s.data))
        + u32(SYNC_SAMPLE_FLAGS if s.sync else NON_SYNC_SAMPLE_FLAGS)
        + s32(s.composition_offset)
        for s in run.samples
    )
    return box(
        b"traf",
        full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, u32(run.track_id)),
        full_box(b"tfdt", 1, 0, u64(run.base_decode_time)),
        full_box(b"trun", 1, flags, u32(len(run.samples)), s32(data_offset), entries),
    )


def _moof(sequence_number: int, runs: list[TrackRun], offsets: list[int]) -> bytes:
    return box(
        b"moof",
        full_box(b"mfhd", 0, 0, u32(sequence_number & 0xFFFFFFFF)),
        *(_traf(r, o) for r, o in zip(runs, offsets, strict=True)),
    )


def build_fragment(sequence_number: int, runs: list[TrackRun] | tuple[TrackRun, ...]) -> bytes:
    """moof + mdat for the given runs (runs without samples are left out)."""
    kept = [r for r in runs if r.samples]
    if not kept:
        raise ValueError("a fragment needs at least one sample")
    moof_size = len(_moof(sequence_number, kept, [0] * len(kept)))
    offsets: list[int] = []
    pos = moof_size + 8
    for r in kept:
        offsets.append(pos)
        pos += sum(len(s.data) for s in r.samples)
    moof = _moof(sequence_number, kept, offsets)
    mdat = box(b"mdat", *(s.data for r in kept for s in r.samples))
    return moof + mdat
