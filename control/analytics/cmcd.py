"""Common Media Client Data (CTA-5004) as players send it on playback requests.

A player puts its keys in the ``CMCD`` query argument (URL-encoded) or spreads
them over four headers (``CMCD-Request``, ``CMCD-Object``, ``CMCD-Status``,
``CMCD-Session``); either way the value is a comma-separated list of
``key=value`` (strings quoted, tokens bare) or bare ``key`` (a boolean true).
`parse_cmcd` reads both, keeps the keys onair uses (v1's ``sid``, ``cid``,
``br``, ``bl``, ``bs``, ``mtp``, ``ot``, ``su``, ``rtp``, ``d``, ``tb``,
``pr``, ``sf``, ``st`` and v2's ``ltc``, ``ttfb``) and ignores everything else,
malformed pairs included: CMCD is advisory, a bad key never refuses a request.

It runs on every playback request of a player that sends it, the playback
edge's fast path included, so it is one split per pair and no regular
expression.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

HEADERS = ("cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session")
"""Header names (lower case) that carry CMCD keys."""
_INTS = frozenset({"br", "bl", "mtp", "rtp", "d", "tb", "ltc", "ttfb"})
_STRINGS = frozenset({"sid", "cid"})
_TOKENS = frozenset({"ot", "sf", "st"})
_BOOLS = frozenset({"bs", "su"})
_MAX_STRING = 64
"""CTA-5004 caps sid and cid at 64 characters."""


@dataclass(slots=True)
class Cmcd:
    """The keys one request carried (None: not sent)."""

    sid: str | None = None
    """Session id: one playback session, the player's choice."""
    cid: str | None = None
    """Content id."""
    br: int | None = None
    """Encoded bitrate of the object, kbps."""
    bl: int | None = None
    """Buffer length, ms."""
    bs: bool = False
    """Buffer starvation since the last request (a stall)."""
    mtp: int | None = None
    """Measured throughput, kbps."""
    ot: str | None = None
    """Object type: m manifest, a audio, v video, av muxed, i init, ..."""
    su: bool = False
    """Startup: the object is needed urgently, at start or after a seek/stall."""
    rtp: int | None = None
    d: int | None = None
    """Object duration, ms."""
    tb: int | None = None
    """Top bitrate the player may select, kbps."""
    pr: float | None = None
    """Playback rate (1 real time, 0 paused)."""
    sf: str | None = None
    """Streaming format: h HLS, d DASH, ..."""
    st: str | None = None
    """Stream type: v VOD, l live."""
    ltc: int | None = None
    """CMCD v2 live latency, ms."""
    ttfb: int | None = None
    """CMCD v2 time to first byte of the previous request, ms."""


def _pairs(value: str) -> list[str]:
    """Split on commas outside quoted strings."""
    if '"' not in value:
        return value.split(",")
    out: list[str] = []
    start, quoted = 0, False
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append(value[start:i])
            start = i + 1
    out.append(value[start:])
    return out


def _apply(cmcd: Cmcd, value: str) -> bool:
    """Set the known keys of one CMCD list on `cmcd`; whether any was known."""
    found = False
    for pair in _pairs(value):
        key, eq, raw = pair.strip().partition("=")
        if key in _BOOLS:
            # a bare key is true; "=false" is not sent by conforming players
            setattr(cmcd, key, not eq or raw == "true")
        elif not eq:
            continue
        elif key in _INTS:
            try:
                number = int(raw)
            except ValueError:
                continue
            if not 0 <= number < 1 << 31:
                continue
            setattr(cmcd, key, number)
        elif key in _STRINGS:
            if len(raw) < 2 or raw[0] != '"' or raw[-1] != '"':
                continue
            text = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            if not text or len(text) > _MAX_STRING:
                continue
            setattr(cmcd, key, text)
        elif key in _TOKENS:
            if not raw or len(raw) > 8 or not raw.isalnum():
                continue
            setattr(cmcd, key, raw)
        elif key == "pr":
            try:
                rate = float(raw)
            except ValueError:
                continue
            if not 0 <= rate <= 100:
                continue
            cmcd.pr = rate
        else:
            continue
        found = True
    return found


def parse_cmcd(query: str | None, headers: Mapping[str, str] | None = None) -> Cmcd | None:
    """The CMCD of one request: `query` is the decoded ``CMCD`` argument (None:
    absent); `headers` maps lower-case header names to values. None when neither
    carried a key onair knows."""
    cmcd = Cmcd()
    found = False
    if query:
        found = _apply(cmcd, query)
    if headers:
        for name in HEADERS:
            value = headers.get(name)
            if value:
                found = _apply(cmcd, value) or found
    return cmcd if found else None


def cmcd_query_value(raw_query: str) -> str | None:
    """The decoded ``CMCD`` argument of a raw query string, without parsing the
    rest (the edge's fast path has the query as one string)."""
    start = raw_query.find("CMCD=")
    while start > 0 and raw_query[start - 1] != "&":
        start = raw_query.find("CMCD=", start + 1)
    if start < 0:
        return None
    end = raw_query.find("&", start)
    return urllib.parse.unquote(raw_query[start + 5 : end if end >= 0 else None])
