"""Player beacons: the body of ``POST /beacon/{playback_id}``, checked.

A beacon is JSON ``{"session_id": "...", "events": [...]}``; each event has a
``type`` and ``at`` (the player's clock, milliseconds since the Unix epoch:
``Date.now()``) and, by type, a few fields of its own:

* ``start`` — the viewer asked to play (``player``, ``player_version``
  optional: the player family, e.g. ``hls.js``);
* ``first_frame`` — the first frame is on screen (startup time is the time
  since ``start``);
* ``stall_start`` / ``stall_end`` — playback stopped for want of data, and
  went on;
* ``error`` — ``code`` (string or number), ``fatal`` (bool), ``message``;
* ``quality`` — the rendition now playing: ``rendition`` (a name),
  ``bitrate`` (kbps);
* ``end`` — the viewer left (``navigator.sendBeacon`` on pagehide).

An optional ``sent_at`` (the player's clock when it sent the beacon) lets the
server place the events on its own clock exactly; without it the newest
event's ``at`` stands for it. An optional ``latency_s`` is the player's
latency to live when it sent the beacon (now minus the program date time
playing), for players that send no CMCD ``ltc``. An empty ``events`` list is a heartbeat: the
viewer is still there. Keys not named here are dropped; a value of the wrong
type, an unknown event type, an ``at`` that is not a plausible time, or more
events than `MAX_EVENTS` refuse the whole beacon (`BeaconError`, a 400 with the reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_BODY_BYTES = 16 * 1024
MAX_EVENTS = 64
SESSION_ID_MAX = 64
EVENT_TYPES = frozenset(
    {"start", "first_frame", "stall_start", "stall_end", "error", "quality", "end"}
)
_MIN_AT_MS = 1_500_000_000_000.0
"""2017: a player clock before this is not a clock."""
_MAX_AT_MS = 4_102_444_800_000.0
"""2100."""
_TEXT_MAX = 64
_MESSAGE_MAX = 256
_SESSION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:")


class BeaconError(ValueError):
    """The beacon is refused; the message says why."""


@dataclass(frozen=True, slots=True)
class BeaconEvent:
    type: str
    at_ms: float
    """The player's clock."""
    fields: dict[str, Any] = field(default_factory=dict)
    """The type's own fields that were sent (checked), nothing else."""


@dataclass(frozen=True, slots=True)
class Beacon:
    session_id: str
    events: list[BeaconEvent]
    sent_at_ms: float | None = None
    latency_s: float | None = None


def _text(event: dict[str, Any], key: str, limit: int = _TEXT_MAX) -> str | None:
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BeaconError(f"{key} must be a string")
    text = str(value)
    if len(text) > limit:
        raise BeaconError(f"{key} is longer than {limit} characters")
    return text


def _number(event: dict[str, Any], key: str) -> float | None:
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BeaconError(f"{key} must be a number")
    if not 0 <= value < 1e9:
        raise BeaconError(f"{key} is out of range")
    return float(value)


def _fields(kind: str, event: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if kind == "start":
        for key in ("player", "player_version"):
            text = _text(event, key)
            if text is not None:
                out[key] = text
    elif kind == "error":
        code = _text(event, "code")
        out["code"] = code if code is not None else "unknown"
        fatal = event.get("fatal", False)
        if not isinstance(fatal, bool):
            raise BeaconError("fatal must be true or false")
        out["fatal"] = fatal
        message = _text(event, "message", _MESSAGE_MAX)
        if message is not None:
            out["message"] = message
    elif kind == "quality":
        rendition = _text(event, "rendition")
        if rendition is not None:
            out["rendition"] = rendition
        bitrate = _number(event, "bitrate")
        if bitrate is not None:
            out["bitrate"] = bitrate
    return out


def parse_beacon(body: Any) -> Beacon:
    """The beacon in a decoded JSON body, or `BeaconError`."""
    if not isinstance(body, dict):
        raise BeaconError("the body must be a JSON object")
    sid = body.get("session_id")
    if not isinstance(sid, str) or not 1 <= len(sid) <= SESSION_ID_MAX:
        raise BeaconError(f"session_id must be a string of 1 to {SESSION_ID_MAX} characters")
    if not _SESSION_CHARS.issuperset(sid):
        raise BeaconError("session_id may hold letters, digits and - _ . : only")
    raw_events = body.get("events", [])
    if not isinstance(raw_events, list):
        raise BeaconError("events must be a list")
    if len(raw_events) > MAX_EVENTS:
        raise BeaconError(f"at most {MAX_EVENTS} events per beacon")
    events: list[BeaconEvent] = []
    for i, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            raise BeaconError(f"events[{i}] must be an object")
        kind = raw.get("type")
        if kind not in EVENT_TYPES:
            raise BeaconError(f"events[{i}].type must be one of {', '.join(sorted(EVENT_TYPES))}")
        at = raw.get("at")
        if at is None or not _is_time_ms(at):
            raise BeaconError(f"events[{i}].at must be milliseconds since the epoch (Date.now())")
        try:
            fields = _fields(kind, raw)
        except BeaconError as exc:
            raise BeaconError(f"events[{i}]: {exc}") from None
        events.append(BeaconEvent(kind, float(at), fields))
    events.sort(key=lambda e: e.at_ms)
    sent = body.get("sent_at")
    if sent is not None and not _is_time_ms(sent):
        raise BeaconError("sent_at must be milliseconds since the epoch (Date.now())")
    latency = body.get("latency_s")
    if latency is not None and (
        isinstance(latency, bool)
        or not isinstance(latency, int | float)
        or not 0 <= latency <= 3600
    ):
        raise BeaconError("latency_s must be a number of seconds (0 to 3600)")
    return Beacon(
        sid,
        events,
        float(sent) if sent is not None else None,
        float(latency) if latency is not None else None,
    )


def _is_time_ms(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and _MIN_AT_MS <= value <= _MAX_AT_MS
    )
