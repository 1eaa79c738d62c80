"""Common Media Client Data (CTA-5004) as players send it on playback requests.

A player puts its keys in the ``CMCD`` query argument (URL-encoded) or spreads
them over four headers (``CMCD-Request``, ``CMCD-Object``, ``CMCD-Status``,
``CMCD-Session``); either way the value is a comma-separated list of
``key=value`` (strings quoted, tokens bare) or bare ``key`` (a boolean true).
`parse_cmcd` reads both, keeps the keys onair uses (v1's ``sid``, ``cid``,
``br``, ``bl``, ``bs``, ``mtp``, ``ot``, ``su``, ``rtp``, ``d``, ``tb``,
``pr``, ``sf``, ``st`` and v2's ``ltc``, ``ttfb``) and ignores everything else,
malformed pairs included: CMCD is advisory, a bad key never refuses a request.

`parse_cmcd` reads every key. On every playback request (the playback
edge's fast path included) the view tracker needs five of them, so
`view_cmcd` looks just those up with `str.find` (C speed) instead of
splitting the whole list: that is what keeps a player's CMCD under 5 % of the
CPU of an answer (bench/hls_blocking.py --cmcd compare).
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
    """Split on commas outside quoted strings (a comma inside a string is rare:
    split, then join back the pieces that left a quote open)."""
    pieces = value.split(",")
    if '"' not in value:
        return pieces
    out: list[str] = []
    open_quote = False
    for piece in pieces:
        if open_quote:
            out[-1] += "," + piece
        else:
            out.append(piece)
        if (piece.count('"') - piece.count('\\"')) % 2:
            open_quote = not open_quote
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


def cmcd_query_raw(raw_query: str) -> str | None:
    """The ``CMCD`` argument of a raw query string, still percent-encoded, without
    parsing the rest (the edge's fast path has the query as one string)."""
    start = raw_query.find("CMCD=")
    while start > 0 and raw_query[start - 1] != "&":
        start = raw_query.find("CMCD=", start + 1)
    if start < 0:
        return None
    end = raw_query.find("&", start)
    return raw_query[start + 5 : end if end >= 0 else None]


def decode_query_value(value: str) -> str:
    """A percent-encoded CMCD argument, decoded."""
    # what players escape is , = and " (str.replace is C; unquote is not)
    value = value.replace("%2C", ",").replace("%3D", "=").replace("%22", '"')
    if "%" in value or "+" in value:
        value = urllib.parse.unquote_plus(value)
    return value


def cmcd_query_value(raw_query: str) -> str | None:
    """The decoded ``CMCD`` argument of a raw query string."""
    raw = cmcd_query_raw(raw_query)
    return None if raw is None else decode_query_value(raw)


_SID_FORMS = (('sid="', '"', ","), ("sid%3D%22", "%22", "%2C"))


def session_id(encoded_query: str | None, session_header: str | None) -> str | None:
    """Just the ``sid`` of a request, found cheaply: in the ``CMCD-Session``
    header, or in the CMCD argument as it came (percent-encoded or not). None
    when absent or when it holds escapes (then `view_cmcd` reads it)."""
    for value in (session_header, encoded_query):
        if not value:
            continue
        for marker, close, comma in _SID_FORMS:
            i = value.find(marker)
            if i < 0 or (i and not value.endswith(comma, 0, i)):
                continue
            j = value.find(close, i + len(marker))
            sid = value[i + len(marker) : j] if j > 0 else ""
            if not sid or len(sid) > _MAX_STRING or "\\" in sid or "%" in sid:
                return None
            return sid
    return None


def _lookup(value: str, key: str) -> str | None:
    """The raw value of `key` in a CMCD list ("" for a bare key), None when absent."""
    i = value.find(key)
    n = len(key)
    while i >= 0:
        j = i + n
        # (a key inside a quoted string has an odd number of quotes before it)
        if (i == 0 or value[i - 1] == ",") and not (
            (value.count('"', 0, i) - value.count('\\"', 0, i)) % 2
        ):
            if j == len(value) or value[j] == ",":
                return ""
            if value[j] == "=":
                if value.startswith('"', j + 1):
                    end = value.find('"', j + 2)
                    while end > 0 and value[end - 1] == "\\":
                        end = value.find('"', end + 1)
                    return value[j + 1 : end + 1] if end > 0 else None
                end = value.find(",", j)
                return value[j + 1 : end if end >= 0 else None]
        i = value.find(key, j)
    return None


def _int(raw: str | None) -> int | None:
    if not raw or not raw.isdigit() or len(raw) > 9:
        return None
    return int(raw)


def view_cmcd(query: str | None, headers: Mapping[str, str] | None = None) -> Cmcd | None:
    """The keys a view needs (`sid`, `br`, `ot`, `bs`, `ltc`) of one request, as
    `parse_cmcd` reads them; None when it carried none of them."""
    values = [query] if query else []
    if headers:
        values += [v for h in HEADERS if (v := headers.get(h))]
    if not values:
        return None
    value = values[0] if len(values) == 1 else ",".join(values)
    raw_sid = _lookup(value, "sid")
    sid = None
    if raw_sid is not None and 2 < len(raw_sid) <= _MAX_STRING + 2 and raw_sid[-1] == '"':
        sid = raw_sid[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    br = _int(_lookup(value, "br"))
    ltc = _int(_lookup(value, "ltc"))
    bs = _lookup(value, "bs") in ("", "true")
    ot = _lookup(value, "ot")
    if ot is not None and not (ot and len(ot) <= 8 and ot.isalnum()):
        ot = None
    if sid is None and br is None and ltc is None and not bs and ot is None:
        return None
    return Cmcd(sid=sid, br=br, ltc=ltc, bs=bs, ot=ot)
