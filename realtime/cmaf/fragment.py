"""CMAF chunks: one moof (mfhd + a traf per track) followed by its mdat.

Owns `Sample`, `TrackRun` and `build_fragment`. Every traf uses
default-base-is-moof (tfhd flag 0x020000), a 64-bit tfdt (version 1) and a
version 1 trun (signed composition offsets) that carries the data offset and
per-sample duration, size, flags and composition offset. The mdat holds the
tracks' sample data in traf order.

Hot path (one call per LL-HLS part): every box size is known up front (the
layout is fixed), so the headers are packed directly, each trun's entries with
one `struct.pack`, and the whole fragment is made with a single `b"".join` —
the sample data is copied exactly once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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
_TRUN_FLAGS_ALL = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS | _TRUN_CTO

# Fixed sizes of the fragment's boxes (bytes, headers included).
_MFHD_SIZE = 16  # box header 8 + version/flags 4 + sequence_number 4
_TRAF_FIXED = 8 + 16 + 20 + 20  # traf header + tfhd + tfdt(v1) + trun without entries
_TRUN_ENTRY_SIZE = 16  # duration, size, flags, composition offset

# moof header + mfhd (size, type, size, type, version/flags, sequence_number)
_MOOF_HEAD = struct.Struct(">I4sI4sII")
# traf header + tfhd + tfdt + trun header up to (and including) data_offset
_TRAF_HEAD = struct.Struct(">I4s" + "I4sII" + "I4sIQ" + "I4sIIi")
_MDAT_HEAD = struct.Struct(">I4s")
_MDAT_LARGE_HEAD = struct.Struct(">I4sQ")
_TFHD_VF = _TFHD_DEFAULT_BASE_IS_MOOF  # version 0
_TFDT_VF = 1 << 24  # version 1, no flags
_TRUN_VF = (1 << 24) | _TRUN_FLAGS_ALL  # version 1

_entry_structs: dict[int, struct.Struct] = {}


def _entries_struct(n: int) -> struct.Struct:
    """The Struct packing n trun entries (cached: parts hold a handful of sizes of n)."""
    s = _entry_structs.get(n)
    if s is None:
        s = struct.Struct(">" + "IIIi" * n)
        if len(_entry_structs) < 1024:
            _entry_structs[n] = s
    return s


@dataclass(slots=True)
class Sample:
    """One sample of a track run (plain slotted class: built per frame, never hashed)."""

    data: bytes
    duration: int
    """In the track's media timescale."""
    sync: bool
    composition_offset: int = 0
    """pts - dts in the media timescale (may be negative)."""


@dataclass(slots=True)
class TrackRun:
    """The samples of one track inside one chunk."""

    track_id: int
    base_decode_time: int
    """tfdt: decode time of the first sample, in the media timescale."""
    samples: tuple[Sample, ...]


def build_fragment(sequence_number: int, runs: list[TrackRun] | tuple[TrackRun, ...]) -> bytes:
    """moof + mdat for the given runs (runs without samples are left out)."""
    kept = [r for r in runs if r.samples]
    if not kept:
        raise ValueError("a fragment needs at least one sample")
    moof_size = 8 + _MFHD_SIZE
    mdat_body = 0
    for r in kept:
        moof_size += _TRAF_FIXED + _TRUN_ENTRY_SIZE * len(r.samples)
        for s in r.samples:
            mdat_body += len(s.data)
    large = mdat_body + 8 > 0xFFFFFFFF
    pos = moof_size + (16 if large else 8)  # first sample's offset from the moof
    out: list[bytes] = [
        _MOOF_HEAD.pack(moof_size, b"moof", _MFHD_SIZE, b"mfhd", 0, sequence_number & 0xFFFFFFFF)
    ]
    datas: list[bytes] = []
    for r in kept:
        samples = r.samples
        n = len(samples)
        trun_size = 20 + _TRUN_ENTRY_SIZE * n
        out.append(
            _TRAF_HEAD.pack(
                _TRAF_FIXED + _TRUN_ENTRY_SIZE * n,
                b"traf",
                16,
                b"tfhd",
                _TFHD_VF,
                r.track_id,
                20,
                b"tfdt",
                _TFDT_VF,
                r.base_decode_time,
                trun_size,
                b"trun",
                _TRUN_VF,
                n,
                pos,
            )
        )
        flat: list[int] = []
        for s in samples:
            size = len(s.data)
            flat += (
                s.duration,
                size,
                SYNC_SAMPLE_FLAGS if s.sync else NON_SYNC_SAMPLE_FLAGS,
                s.composition_offset,
            )
            datas.append(s.data)
            pos += size
        out.append(_entries_struct(n).pack(*flat))
    if large:
        out.append(_MDAT_LARGE_HEAD.pack(1, b"mdat", mdat_body + 16))
    else:
        out.append(_MDAT_HEAD.pack(mdat_body + 8, b"mdat"))
    out += datas
    return b"".join(out)
