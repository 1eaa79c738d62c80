"""The asset manifest: the one JSON document every VOD asset is played from.

A recording, an upload and a clip all end up as ``<prefix>/manifest.json`` plus
the blobs it names (one init segment per generation, CMAF media segments), so
one playback path (``vod.playlist``) and one export path (``vod.mp4``) serve
all of them. URIs in the manifest are relative to the asset's prefix, which is
also how they appear in playlists: ``<prefix>/<uri>`` is the blob key.

Gaps (reconnects) are derived from program-date-time at discontinuities: the
wall-clock time between the end of the last segment before a discontinuity and
the first one after it.
"""

from __future__ import annotations

import json
import operator
import re
import time
from dataclasses import dataclass, field, fields
from typing import Any

from vod.blobstore import BlobNotFound, BlobStore, InvalidKey, join_key

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_NAME = re.compile(r"(init-g\d+\.mp4|seg\d{6}-g\d+\.m4s)")


def init_name(generation: int) -> str:
    return f"init-g{generation}.mp4"


def segment_name(index: int, generation: int) -> str:
    return f"seg{index:06d}-g{generation}.m4s"


def segment_prefix(index: int) -> str:
    return f"seg{index:06d}-"


def is_media_name(name: str) -> bool:
    """True for names the asset layout uses for inits and segments (route guard)."""
    return bool(_NAME.fullmatch(name))


def media_key(prefix: str, name: str) -> str:
    """The blob key of the init/segment ``name`` of the asset at ``prefix``.

    Raises InvalidKey (a BlobNotFound: answer 404) for anything that is not an
    init or segment name, so a playback route cannot be walked elsewhere.
    """
    if not is_media_name(name):
        raise InvalidKey(name)
    return join_key(prefix, name)


def content_type_for(name: str) -> str:
    """Content-Type to serve an asset file with."""
    if name.endswith(".m4s"):
        return "video/iso.segment"
    if name.endswith(".mp4"):
        return "video/mp4"
    if name.endswith(".m3u8"):
        return "application/vnd.apple.mpegurl"
    if name.endswith(".jpg"):
        return "image/jpeg"
    if name.endswith(".json"):
        return "application/json"
    return "application/octet-stream"


def _fields_of(entry: InitEntry | SegmentEntry) -> dict[str, Any]:
    # dataclasses.asdict deep-copies every value: ~10x slower on an hour's manifest.
    return {name: getattr(entry, name) for name in _FIELD_NAMES[type(entry)]}


def manifest_key(prefix: str) -> str:
    return join_key(prefix, MANIFEST_NAME)


@dataclass(slots=True)
class InitEntry:
    generation: int
    uri: str
    codecs: str = ""
    width: int = 0
    height: int = 0
    bandwidth: int = 0


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    index: int
    uri: str
    duration: float
    generation: int
    discontinuity: bool = False
    msn: int = 0
    program_date_time: float = 0.0
    start_pts: float = 0.0
    size: int = 0
    gap: str | None = None
    """Why a discontinuity sits before this segment: ``reconnect`` (the publisher
    came back), ``storage`` (segments before it could not be stored) or
    ``node_lost`` (the recording continued on another node, or after a crash)."""


GAP_REASONS = ("reconnect", "storage", "node_lost")

_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in (InitEntry, SegmentEntry)
}


@dataclass(slots=True)
class Gap:
    at_s: float
    """Position in the asset's timeline (seconds from its start) where the gap sits."""
    duration_s: float
    """Wall-clock time missing there (0 if the reconnect was instant)."""
    reason: str = "reconnect"
    """`GAP_REASONS`: a reconnect, a storage failure, or a lost node."""

    def to_dict(self) -> dict[str, float | str]:
        return {
            "at_s": round(self.at_s, 3),
            "duration_s": round(self.duration_s, 3),
            "reason": self.reason,
        }


@dataclass(slots=True)
class Manifest:
    kind: str = "live"
    """live | upload | clip | room."""
    inits: list[InitEntry] = field(default_factory=list)
    segments: list[SegmentEntry] = field(default_factory=list)
    final: bool = False
    created_at: float = field(default_factory=time.time)
    finalized_at: float | None = None
    dropped: int = 0
    """Segments the recorder could not store (storage stalled); each left a discontinuity."""
    version: int = MANIFEST_VERSION
    _encoded: tuple[list[SegmentEntry], list[str]] = field(
        default_factory=lambda: ([], []), init=False, repr=False, compare=False
    )
    """The segments `to_json` encoded last time and their JSON, by identity."""

    # -- derived --------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        return sum(s.duration for s in self.segments)

    @property
    def target_duration(self) -> int:
        longest = max((s.duration for s in self.segments), default=1.0)
        return max(1, int(longest + 0.5))

    def init_for(self, generation: int) -> InitEntry:
        for init in self.inits:
            if init.generation == generation:
                return init
        raise KeyError(generation)

    @property
    def last_generation(self) -> int:
        return max((i.generation for i in self.inits), default=-1)

    def gaps(self) -> list[Gap]:
        out: list[Gap] = []
        t = 0.0
        prev: SegmentEntry | None = None
        for seg in self.segments:
            if prev is not None and seg.discontinuity:
                missing = seg.program_date_time - (prev.program_date_time + prev.duration)
                out.append(Gap(t, max(0.0, missing), seg.gap or "reconnect"))
            t += seg.duration
            prev = seg
        return out

    def offsets(self) -> list[float]:
        """Start time of each segment in the asset's timeline."""
        out: list[float] = []
        t = 0.0
        for seg in self.segments:
            out.append(t)
            t += seg.duration
        return out

    def segment_at(self, t: float) -> int:
        """Index into ``segments`` of the segment playing at ``t`` (clamped)."""
        if not self.segments:
            raise ValueError("empty manifest")
        acc = 0.0
        for i, seg in enumerate(self.segments):
            if t < acc + seg.duration:
                return i
            acc += seg.duration
        return len(self.segments) - 1

    def summary(self) -> dict[str, Any]:
        """What an asset record wants: duration, gaps, final, counts."""
        return {
            "duration_s": round(self.duration_s, 3),
            "gaps": [g.to_dict() for g in self.gaps()],
            "final": self.final,
            "segments": len(self.segments),
            "generations": len(self.inits),
            "dropped": self.dropped,
        }

    # -- JSON -----------------------------------------------------------------

    def to_json(self) -> bytes:
        doc = {
            "version": self.version,
            "kind": self.kind,
            "final": self.final,
            "created_at": self.created_at,
            "finalized_at": self.finalized_at,
            "dropped": self.dropped,
            "inits": [_fields_of(i) for i in self.inits],
            "segments": [],
        }
        head = json.dumps(doc, separators=(",", ":"))
        assert head.endswith("[]}")
        return (head[:-2] + ",".join(self._encoded_segments()) + "]}").encode()

    def _encoded_segments(self) -> list[str]:
        """Each segment's JSON. A live recording saves its manifest every few
        seconds and only appends to it, so entries encoded before (the same
        objects; entries are frozen) are reused: encoding all of them each time
        took ~45 ms of the event loop per save of a two-hour recording."""
        entries, texts = self._encoded
        segments = self.segments
        same = len(entries)
        if same > len(segments) or not all(map(operator.is_, entries, segments)):
            same = next(
                (i for i, (a, b) in enumerate(zip(entries, segments, strict=False)) if a is not b),
                min(same, len(segments)),
            )
            del entries[same:], texts[same:]
        for entry in segments[same:]:
            entries.append(entry)
            texts.append(json.dumps(_fields_of(entry), separators=(",", ":")))
        return texts

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION:
            raise ValueError("not an onair asset manifest")
        return cls(
            kind=str(doc.get("kind", "live")),
            inits=[InitEntry(**i) for i in doc.get("inits", [])],
            segments=[SegmentEntry(**s) for s in doc.get("segments", [])],
            final=bool(doc.get("final", False)),
            created_at=float(doc.get("created_at", 0.0)),
            finalized_at=doc.get("finalized_at"),
            dropped=int(doc.get("dropped", 0)),
        )


async def load_manifest(blobs: BlobStore, prefix: str) -> Manifest:
    """The stored manifest of the asset at ``prefix``. Raises BlobNotFound."""
    return Manifest.from_json(await blobs.get(manifest_key(prefix)))


async def save_manifest(blobs: BlobStore, prefix: str, manifest: Manifest) -> None:
    await blobs.put(manifest_key(prefix), manifest.to_json(), "application/json")


async def try_load_manifest(blobs: BlobStore, prefix: str) -> Manifest | None:
    try:
        return await load_manifest(blobs, prefix)
    except BlobNotFound:
        return None
