"""Clips: ``[start_s, end_s]`` of an existing asset as a new asset, without re-encoding.

``clip_to_cmaf(sources, out_dir, start_s, end_s)`` (a plain function for a
process pool) copies packets from the video keyframe at or before ``start_s``
up to ``end_s`` into new CMAF HLS segments; so the clip starts at most one GOP
early and ends on time. ``sources`` are the local files covering the range
(``vod.jobs`` fetches only the segments that overlap it) with their offsets on
the source asset's timeline. ``plan_clip`` picks those segments from a manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vod.inputs import MediaPath
from vod.manifest import Manifest, SegmentEntry
from vod.media import Source, package_cmaf


class ClipError(ValueError):
    """The requested range is not inside the source asset."""


def plan_clip(manifest: Manifest, start_s: float, end_s: float) -> tuple[float, float, list[int]]:
    """Validate the range against the asset and return (start, end, segment indexes)."""
    duration = manifest.duration_s
    if not manifest.segments:
        raise ClipError("the source asset has no media")
    if not (0 <= start_s < end_s):
        raise ClipError("need 0 <= start_s < end_s")
    if start_s >= duration:
        raise ClipError(f"start_s is past the end of the asset ({duration:.3f} s)")
    end_s = min(end_s, duration)
    first = manifest.segment_at(start_s)
    last = manifest.segment_at(max(start_s, end_s - 1e-3))
    return start_s, end_s, list(range(first, last + 1))


def runs(manifest: Manifest, indexes: Sequence[int]) -> list[tuple[int, list[SegmentEntry], float]]:
    """Group segment indexes into runs of one generation: (generation, segments, offset_s)."""
    offsets = manifest.offsets()
    out: list[tuple[int, list[SegmentEntry], float]] = []
    prev: int | None = None
    for i in indexes:
        seg = manifest.segments[i]
        contiguous = prev is not None and i == prev + 1 and not seg.discontinuity
        if out and seg.generation == out[-1][0] and contiguous:
            out[-1][1].append(seg)
        else:
            out.append((seg.generation, [seg], offsets[i]))
        prev = i
    return out


def clip_to_cmaf(
    sources: Sequence[tuple[MediaPath, float]], out_dir: str, start_s: float, end_s: float
) -> dict[str, Any]:
    """Package ``[start_s, end_s)`` of the sources as CMAF HLS in ``out_dir``."""
    return package_cmaf([Source(p, o) for p, o in sources], out_dir, window=(start_s, end_s))
