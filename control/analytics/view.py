"""One view: what a node learned about one viewer's playback session, and the
view the API reports once every node's account is merged.

`ViewPart` is one node's account, built from what reached that node: player
beacons (`control.analytics.beacons`), the CMCD keys of playback requests
(`control.analytics.cmcd`) and, for a player that sends neither, the bare fact
that it kept asking. Times are the server's clock (Unix seconds): a beacon's
``at`` is the player's clock, moved onto the server's by the offset seen when
the beacon that reached it soonest, so differences (startup, stall lengths)
are the player's own and the clock skew between them cancels.

A view is stored as one record (`COLLECTION`) holding every node's part under
``parts`` and, beside them, the merged figures of `summarize` that
``GET /v1/views`` lists and the timeseries read. Everything here is sans-IO.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from control.analytics.beacons import Beacon
from control.analytics.cmcd import Cmcd

COLLECTION = "views"
MAX_STALLS = 200
"""Stalls one part keeps (the first ones: a view stalling more is broken anyway,
and the count goes on)."""
MAX_RENDITIONS = 16
_VIDEO_OBJECTS = frozenset({"v", "av"})


@dataclass
class ViewPart:
    """One node's account of one view. Beacon times stay on the player's clock
    here (`*_c` fields, seconds) and move onto the server's in `to_dict`, with
    the best offset known by then."""

    id: str
    playback_id: str
    node: str
    first_seen: float
    last_seen: float
    measured: bool = False
    """The player sent CMCD or beacons (else only its requests were counted)."""
    player: str | None = None
    clock_offset_s: float | None = None
    """Server time minus the player's clock: the smallest (receipt time minus the
    beacon's `sent_at`, else its newest event) seen, so the one sent soonest."""
    start_c: float | None = None
    first_frame_c: float | None = None
    end_c: float | None = None
    """The player said `end`."""
    idle_at: float | None = None
    """The node stopped hearing from the player (server time)."""
    stalls_c: list[list[float | None]] = field(default_factory=list)
    """[start, end or None while it lasts]."""
    stall_count: int = 0
    errors: int = 0
    fatal_error: str | None = None
    renditions: list[str] = field(default_factory=list)
    bitrate_kbps: float | None = None
    """The rendition playing now (beacons), since `bitrate_since_c`."""
    bitrate_since_c: float | None = None
    bitrate_kbps_s: float = 0.0
    """∫ bitrate dt over the time played at a known bitrate, and that time:
    the average is their ratio."""
    bitrate_s: float = 0.0
    cmcd_br_sum: float = 0.0
    cmcd_br_count: int = 0
    cmcd_starvations: int = 0
    latency_ms_sum: float = 0.0
    latency_count: int = 0
    requests: int = 0
    cmcd_due: float = 0.0
    """When the tracker next reads this view's CMCD in full (not stored)."""

    @property
    def ended_at(self) -> float | None:
        """When the view ended (server time), None while it lasts."""
        if self.end_c is not None and self.clock_offset_s is not None:
            return self.end_c + self.clock_offset_s
        return self.idle_at

    # -- what reaches the node ---------------------------------------------------------
    def request(self, now: float, cmcd: Cmcd | None) -> None:
        """A playback request of this view (with the CMCD it carried)."""
        self.requests += 1
        self.last_seen = max(self.last_seen, now)
        if cmcd is None:
            return
        self.measured = True
        if cmcd.br is not None and (cmcd.ot is None or cmcd.ot in _VIDEO_OBJECTS):
            self.cmcd_br_sum += cmcd.br
            self.cmcd_br_count += 1
        if cmcd.bs:
            self.cmcd_starvations += 1
        if cmcd.ltc is not None:
            self.latency_ms_sum += cmcd.ltc
            self.latency_count += 1

    def beacon(self, now: float, beacon: Beacon) -> None:
        """A beacon from the player, received at `now`."""
        self.measured = True
        self.last_seen = max(self.last_seen, now)
        sent_ms = beacon.sent_at_ms
        if sent_ms is None and beacon.events:
            sent_ms = beacon.events[-1].at_ms
        if sent_ms is not None:
            offset = now - sent_ms / 1000
            if self.clock_offset_s is None or offset < self.clock_offset_s:
                self.clock_offset_s = offset
        for event in beacon.events:
            self._event(event.type, event.at_ms / 1000, event.fields)
        if beacon.latency_s is not None:
            self.latency_ms_sum += beacon.latency_s * 1000
            self.latency_count += 1

    def _event(self, kind: str, at: float, fields: dict[str, Any]) -> None:
        if self.end_c is not None:
            return  # nothing happens after the end
        if kind == "start":
            if self.start_c is None or at < self.start_c:
                self.start_c = at
            self.player = fields.get("player") or self.player
        elif kind == "first_frame":
            if self.first_frame_c is None:
                self.first_frame_c = at
                self._close_stall(at)  # waiting before the first frame is startup
        elif kind == "stall_start":
            if self.stalls_c and self.stalls_c[-1][1] is None:
                return
            if self.first_frame_c is not None and at < self.first_frame_c:
                return
            self.stall_count += 1
            if len(self.stalls_c) < MAX_STALLS:
                self.stalls_c.append([at, None])
        elif kind == "stall_end":
            self._close_stall(at)
        elif kind == "error":
            self.errors += 1
            if fields.get("fatal") and self.fatal_error is None:
                self.fatal_error = str(fields.get("code", "unknown"))
        elif kind == "quality":
            self._bitrate_until(at)
            rendition = fields.get("rendition")
            if (
                rendition
                and rendition not in self.renditions
                and len(self.renditions) < MAX_RENDITIONS
            ):
                self.renditions.append(rendition)
            if "bitrate" in fields:
                self.bitrate_kbps = float(fields["bitrate"])
                self.bitrate_since_c = at
        elif kind == "end":
            self._close_stall(at)
            self._bitrate_until(at)
            self.bitrate_kbps = None
            self.end_c = at

    def _close_stall(self, at: float) -> None:
        if self.stalls_c and self.stalls_c[-1][1] is None:
            start = self.stalls_c[-1][0]
            assert start is not None
            self.stalls_c[-1][1] = max(start, at)

    def _bitrate_until(self, at: float) -> None:
        since = self.bitrate_since_c
        if self.bitrate_kbps is not None and since is not None and at > since:
            self.bitrate_kbps_s += self.bitrate_kbps * (at - since)
            self.bitrate_s += at - since
            self.bitrate_since_c = at

    def idle_cut(self) -> None:
        """The node stopped hearing from the player: the view ended when it did."""
        if self.ended_at is not None:
            return
        self.idle_at = self.last_seen
        if self.clock_offset_s is not None:
            self._close_stall(self.last_seen - self.clock_offset_s)
            self._bitrate_until(self.last_seen - self.clock_offset_s)
            self.bitrate_kbps = None

    # -- storage -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """This part on the server's clock, for the view record."""
        offset = self.clock_offset_s or 0.0

        def server(t: float | None) -> float | None:
            return None if t is None else t + offset

        kbps_s, seconds = self.bitrate_kbps_s, self.bitrate_s
        if self.bitrate_kbps is not None and self.bitrate_since_c is not None:
            # what the rendition playing now adds up to so far
            span = max(0.0, self.last_seen - offset - self.bitrate_since_c)
            kbps_s += self.bitrate_kbps * span
            seconds += span
        return {
            "id": self.id,
            "playback_id": self.playback_id,
            "node": self.node,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "measured": self.measured,
            "player": self.player,
            "clock_offset_s": self.clock_offset_s,
            "start_at": server(self.start_c),
            "first_frame_at": server(self.first_frame_c),
            "ended_at": self.ended_at,
            "stalls": [[server(a), server(b)] for a, b in self.stalls_c],
            "stall_count": self.stall_count,
            "errors": self.errors,
            "fatal_error": self.fatal_error,
            "renditions": list(self.renditions),
            "bitrate_kbps_s": kbps_s,
            "bitrate_s": seconds,
            "cmcd_br_sum": self.cmcd_br_sum,
            "cmcd_br_count": self.cmcd_br_count,
            "cmcd_starvations": self.cmcd_starvations,
            "latency_ms_sum": self.latency_ms_sum,
            "latency_count": self.latency_count,
            "requests": self.requests,
        }


def summarize(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The view every node's part makes together: the figures of ``GET /v1/views``
    (without `id`), and `stalls` for the timeseries."""
    ps = list(parts)
    assert ps, "a view has at least one part"
    first_seen = min(p["first_seen"] for p in ps)
    last_seen = max(p["last_seen"] for p in ps)
    starts = [p["start_at"] for p in ps if p.get("start_at") is not None]
    frames = [p["first_frame_at"] for p in ps if p.get("first_frame_at") is not None]
    started_at = min([first_seen, *starts])
    ended = [p.get("ended_at") for p in ps]
    ended_at = max(e for e in ended if e is not None) if all(e is not None for e in ended) else None
    until = ended_at if ended_at is not None else last_seen
    first_frame = min(frames) if frames else None
    startup_ms = (
        round((first_frame - min(starts)) * 1000) if first_frame is not None and starts else None
    )
    # a node that did not hear of the first frame kept the stalls before it:
    # waiting for the first frame is startup, not rebuffering
    stalls = _merged_stalls(ps, until, first_frame)
    beacons_seen = any(p.get("clock_offset_s") is not None for p in ps)
    if beacons_seen:
        rebuffer_count = len(stalls)
        if any(len(p.get("stalls", [])) >= MAX_STALLS for p in ps):
            rebuffer_count = max(rebuffer_count, *(p.get("stall_count", 0) for p in ps))
    else:
        rebuffer_count = sum(p.get("cmcd_starvations", 0) for p in ps)
    rebuffer_ms = round(sum(end - start for start, end in stalls) * 1000)
    kbps_s = sum(p.get("bitrate_kbps_s", 0.0) for p in ps)
    bitrate_s = sum(p.get("bitrate_s", 0.0) for p in ps)
    br_sum = sum(p.get("cmcd_br_sum", 0.0) for p in ps)
    br_count = sum(p.get("cmcd_br_count", 0) for p in ps)
    average_bitrate = (
        round(kbps_s / bitrate_s)
        if bitrate_s > 0
        else round(br_sum / br_count)
        if br_count
        else None
    )
    latency_sum = sum(p.get("latency_ms_sum", 0.0) for p in ps)
    latency_count = sum(p.get("latency_count", 0) for p in ps)
    renditions: list[str] = []
    for p in ps:
        renditions += [r for r in p.get("renditions", []) if r not in renditions]
    fatal = next((p["fatal_error"] for p in ps if p.get("fatal_error")), None)
    latest = max(ps, key=lambda p: p["last_seen"])
    return {
        "playback_id": ps[0]["playback_id"],
        "started_at": started_at,
        "ended_at": ended_at,
        "last_seen": last_seen,
        "measured": any(p.get("measured") for p in ps),
        "first_frame_at": first_frame,
        "startup_time_ms": startup_ms,
        "watch_time_ms": max(0, round((until - started_at) * 1000)),
        "rebuffer_count": rebuffer_count,
        "rebuffer_ms": rebuffer_ms,
        "stalls": [[round(s, 3), round(e, 3)] for s, e in stalls],
        "errors": sum(p.get("errors", 0) for p in ps),
        "fatal_error": fatal,
        "average_bitrate_kbps": average_bitrate,
        "renditions": renditions[:MAX_RENDITIONS],
        "latency_s": round(latency_sum / latency_count / 1000, 3) if latency_count else None,
        "player": next((p["player"] for p in ps if p.get("player")), None),
        "node": latest["node"],
    }


def _merged_stalls(
    parts: list[dict[str, Any]], until: float, first_frame: float | None
) -> list[tuple[float, float]]:
    """Every part's stalls on one axis, overlapping ones joined (two nodes may
    each have heard of the same stall), an open one lasting `until`, none
    before the first frame (none at all without one)."""
    if first_frame is None:
        return []
    spans = sorted(
        (max(float(s), first_frame), float(e) if e is not None else max(float(s), until))
        for p in parts
        for s, e in p.get("stalls", [])
        if (float(e) if e is not None else until) > first_frame
    )
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + 0.05:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
