"""The MUSTs of RFC 8216bis for media and multivariant playlists, as a checker.

Written from the specification, not from onair's playlists: `check_media`
returns the rules a live (LL-)HLS media playlist breaks, `check_reload` those
that a reload breaks against an earlier copy (§6.2.1: a server may only
append, remove from the front, and drop old parts), `check_multivariant` those
of a multivariant playlist. Each violation is a sentence naming the rule, so a
failing test says what to fix.

Covered (section numbers of draft-pantos-hls-rfc8216bis):
* 4.4.1: #EXTM3U first; EXT-X-VERSION at most once.
* 4.4.3.1: EXT-X-TARGETDURATION present, a decimal integer; every EXTINF
  rounded to the nearest integer ≤ it.
* 4.4.3.2: EXT-X-MEDIA-SEQUENCE before the first segment.
* 4.4.3.7 / 4.4.3.8: EXT-X-PART-INF present when there are parts; with
  CAN-BLOCK-RELOAD, PART-HOLD-BACK ≥ 2 x PART-TARGET; HOLD-BACK ≥ 3 x target
  duration; CAN-SKIP-UNTIL ≥ 6 x target duration.
* 4.4.4.9: every part ≤ PART-TARGET; every part ≥ 85 % of PART-TARGET except
  INDEPENDENT=YES parts and the last part of its parent segment; and, as a
  consistency check, a segment's listed parts add up to its EXTINF within 20 ms.
* 4.4.4.5 / 4.4.4.6: EXT-X-MAP before the first segment (fMP4); a valid
  EXT-X-PROGRAM-DATE-TIME.
* 4.4.5.2 / 4.4.5.3: at most one PRELOAD-HINT per TYPE; a PART hint comes after
  the last part; EXT-X-SKIP only where CAN-SKIP-UNTIL allows it, with
  SKIPPED-SEGMENTS.
* 6.2.2: without EXT-X-ENDLIST the playlist lasts at least three target
  durations once it has dropped a segment.
* 4.4.6.2: EXT-X-STREAM-INF with BANDWIDTH (and CODECS), a URI on the next
  line; EXT-X-MEDIA with TYPE, GROUP-ID and NAME.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^",]*)')


def attrs(value: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTR.findall(value)}


@dataclass
class Part:
    duration: float
    uri: str
    independent: bool


@dataclass
class Segment:
    msn: int
    duration: float
    uri: str
    parts: list[Part] = field(default_factory=list)


@dataclass
class MediaPlaylist:
    text: str
    version: int | None = None
    target: int | None = None
    media_sequence: int | None = None
    part_target: float | None = None
    server_control: dict[str, str] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    trailing_parts: list[Part] = field(default_factory=list)
    """Parts of the segment in progress (listed after the last EXTINF)."""
    hints: list[dict[str, str]] = field(default_factory=list)
    skipped: int = 0
    ended: bool = False
    violations: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)


def parse_media(text: str) -> MediaPlaylist:
    pl = MediaPlaylist(text)
    bad = pl.violations.append
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != "#EXTM3U":
        bad("4.4.1.1: the first line is not #EXTM3U")
    if sum(ln.startswith("#EXT-X-VERSION:") for ln in lines) > 1:
        bad("4.4.1.2: EXT-X-VERSION appears more than once")
    parts: list[Part] = []
    extinf: float | None = None
    seen_map = False
    for ln in lines[1:]:
        tag, _, value = ln.partition(":")
        if tag == "#EXT-X-VERSION":
            pl.version = int(value)
        elif tag == "#EXT-X-TARGETDURATION":
            if not value.isdigit():
                bad(f"4.4.3.1: EXT-X-TARGETDURATION {value!r} is not a decimal integer")
            else:
                pl.target = int(value)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            if pl.segments:
                bad("4.4.3.2: EXT-X-MEDIA-SEQUENCE after the first segment")
            pl.media_sequence = int(value)
        elif tag == "#EXT-X-PART-INF":
            pl.part_target = float(attrs(value)["PART-TARGET"])
        elif tag == "#EXT-X-SERVER-CONTROL":
            pl.server_control = attrs(value)
        elif tag == "#EXT-X-MAP":
            seen_map = True
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            try:
                datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                bad(f"4.4.4.6: EXT-X-PROGRAM-DATE-TIME {value!r} is not ISO 8601")
        elif tag == "#EXT-X-SKIP":
            a = attrs(value)
            if "SKIPPED-SEGMENTS" not in a:
                bad("4.4.5.2: EXT-X-SKIP without SKIPPED-SEGMENTS")
            pl.skipped = int(a.get("SKIPPED-SEGMENTS", "0"))
        elif tag == "#EXT-X-PART":
            a = attrs(value)
            parts.append(Part(float(a["DURATION"]), a["URI"], a.get("INDEPENDENT") == "YES"))
        elif tag == "#EXT-X-PRELOAD-HINT":
            pl.hints.append(attrs(value))
        elif tag == "#EXTINF":
            extinf = float(value.split(",")[0])
        elif tag == "#EXT-X-ENDLIST":
            pl.ended = True
        elif not ln.startswith("#"):
            if extinf is None:
                bad(f"4.4.4.1: segment {ln} has no EXTINF")
                continue
            if not seen_map:
                bad(f"4.4.4.5: segment {ln} comes before any EXT-X-MAP")
            msn = (pl.media_sequence or 0) + pl.skipped + len(pl.segments)
            pl.segments.append(Segment(msn, extinf, ln, parts))
            parts, extinf = [], None
    pl.trailing_parts = parts
    return pl


def check_media(text: str, first_msn: int = 0) -> list[str]:
    """Every MUST the playlist breaks (empty: conformant). `first_msn` is the
    server's first media sequence number: a MEDIA-SEQUENCE above it means the
    playlist has dropped segments."""
    pl = parse_media(text)
    bad = pl.violations.append
    if pl.target is None:
        bad("4.4.3.1: no EXT-X-TARGETDURATION")
        return pl.violations
    if pl.segments and pl.media_sequence is None:
        bad("4.4.3.2: no EXT-X-MEDIA-SEQUENCE")
    for seg in pl.segments:
        if round(seg.duration) > pl.target:
            bad(f"4.4.3.1: segment {seg.msn} lasts {seg.duration} s > target {pl.target}")
    all_parts = [p for s in pl.segments for p in s.parts] + pl.trailing_parts
    sc = pl.server_control
    if all_parts and pl.part_target is None:
        bad("4.4.3.7: EXT-X-PART without EXT-X-PART-INF")
    if pl.part_target is not None:
        pt = pl.part_target
        if sc.get("CAN-BLOCK-RELOAD") == "YES" and "PART-HOLD-BACK" not in sc:
            bad("4.4.3.8: a low-latency playlist without PART-HOLD-BACK")
        if "PART-HOLD-BACK" in sc and float(sc["PART-HOLD-BACK"]) < 2 * pt - 1e-9:
            bad(f"4.4.3.8: PART-HOLD-BACK {sc['PART-HOLD-BACK']} < 2 x PART-TARGET {pt}")
        groups = [s.parts for s in pl.segments] + [pl.trailing_parts]
        for gi, group in enumerate(groups):
            complete = gi < len(pl.segments)
            for i, part in enumerate(group):
                if part.duration > pt + 1e-9:
                    bad(f"4.4.4.9: part {part.uri} lasts {part.duration} s > PART-TARGET {pt}")
                last_of_parent = complete and i == len(group) - 1
                if part.duration < 0.85 * pt - 1e-9 and not part.independent and not last_of_parent:
                    bad(
                        f"4.4.4.9: part {part.uri} lasts {part.duration} s < 85 % of "
                        f"PART-TARGET {pt} (neither independent nor its segment's last)"
                    )
        for seg in pl.segments:
            # consistency more than a MUST: a segment's parts cover it, give or take
            # the rounding of an estimated last frame (a gap decoders step over)
            if seg.parts and abs(sum(p.duration for p in seg.parts) - seg.duration) > 0.02:
                bad(
                    f"4.4.4.9: segment {seg.msn} lasts {seg.duration} s but its parts add "
                    f"up to {sum(p.duration for p in seg.parts):.5f} s"
                )
    if "HOLD-BACK" in sc and float(sc["HOLD-BACK"]) < 3 * pl.target - 1e-9:
        bad(f"4.4.3.8: HOLD-BACK {sc['HOLD-BACK']} < 3 x target duration {pl.target}")
    if "CAN-SKIP-UNTIL" in sc and float(sc["CAN-SKIP-UNTIL"]) < 6 * pl.target - 1e-9:
        bad(f"4.4.3.8: CAN-SKIP-UNTIL {sc['CAN-SKIP-UNTIL']} < 6 x target duration {pl.target}")
    if pl.skipped and "CAN-SKIP-UNTIL" not in sc:
        bad("4.4.5.2: EXT-X-SKIP without CAN-SKIP-UNTIL")
    kinds = [h.get("TYPE") for h in pl.hints]
    if len(kinds) != len(set(kinds)):
        bad(f"4.4.5.3: more than one PRELOAD-HINT of a TYPE: {kinds}")
    for hint in pl.hints:
        if hint.get("TYPE") not in ("PART", "MAP") or "URI" not in hint:
            bad(f"4.4.5.3: PRELOAD-HINT {hint} lacks TYPE=PART|MAP or URI")
    dropped = pl.media_sequence is not None and pl.media_sequence > first_msn
    if not pl.ended and dropped and not pl.skipped and pl.duration < 3 * pl.target - 1e-6:
        bad(
            f"6.2.2: a live playlist that has dropped segments lasts {pl.duration:.3f} s "
            f"< 3 x target duration {pl.target}"
        )
    return pl.violations


def check_reload(earlier: str, later: str) -> list[str]:
    """What `later` changed that a server may not change (§6.2.1)."""
    a, b = parse_media(earlier), parse_media(later)
    out: list[str] = []
    if a.target != b.target:
        out.append(f"6.2.1: EXT-X-TARGETDURATION changed from {a.target} to {b.target}")
    if (b.media_sequence or 0) < (a.media_sequence or 0):
        out.append("6.2.1: EXT-X-MEDIA-SEQUENCE went back")
    if b.ended is False and a.ended:
        out.append("6.2.1: EXT-X-ENDLIST went away")
    old = {s.msn: s for s in a.segments}
    for seg in b.segments:
        was = old.get(seg.msn)
        if was is not None and (was.uri != seg.uri or abs(was.duration - seg.duration) > 1e-6):
            out.append(
                f"6.2.1: segment {seg.msn} was {was.uri} ({was.duration} s), "
                f"now {seg.uri} ({seg.duration} s)"
            )
    if a.segments and b.segments and b.segments[-1].msn < a.segments[-1].msn:
        out.append("6.2.1: segments at the end were removed")
    return out


def check_multivariant(text: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    out: list[str] = []
    if not lines or lines[0] != "#EXTM3U":
        out.append("4.4.1.1: the first line is not #EXTM3U")
    variants = 0
    for i, ln in enumerate(lines):
        tag, _, value = ln.partition(":")
        if tag == "#EXT-X-STREAM-INF":
            variants += 1
            a = attrs(value)
            if "BANDWIDTH" not in a or not a["BANDWIDTH"].isdigit():
                out.append(f"4.4.6.2: EXT-X-STREAM-INF without a BANDWIDTH: {ln}")
            if "CODECS" not in a:
                out.append(f"4.4.6.2: EXT-X-STREAM-INF without CODECS (SHOULD): {ln}")
            if i + 1 >= len(lines) or lines[i + 1].startswith("#"):
                out.append(f"4.4.6.2: EXT-X-STREAM-INF not followed by a URI: {ln}")
        elif tag == "#EXT-X-MEDIA":
            a = attrs(value)
            for name in ("TYPE", "GROUP-ID", "NAME"):
                if name not in a:
                    out.append(f"4.4.6.1: EXT-X-MEDIA without {name}: {ln}")
        elif tag in ("#EXTINF", "#EXT-X-TARGETDURATION", "#EXT-X-PART"):
            out.append(f"4.4.1: a media playlist tag in a multivariant playlist: {ln}")
    if variants == 0:
        out.append("4.4.6.2: no EXT-X-STREAM-INF")
    return out
