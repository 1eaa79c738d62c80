"""The SRT `streamid` a caller sends: which stream key, and what it wants to do.

Two forms are accepted, as SRT servers commonly do:

* plain: the whole streamid is the stream key (`srt://host:9000?streamid=sk_…`);
* the SRT Access Control syntax (`#!::r=sk_…,m=publish`): comma-separated
  `key=value` pairs after `#!::`, where `r` is the resource (the stream key)
  and `m` the mode (`publish` here; `request`, i.e. play, is not served over
  SRT). `u`, `s`, `h` and `t=stream` are understood and ignored; another `t`
  or an unknown key in the standard's reserved one-letter set is refused, as
  the syntax asks. Longer keys are the application's and are ignored.

Pure functions: no I/O, no libsrt.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.srt.libsrt import REJX_BAD_MODE, REJX_BAD_REQUEST, REJX_KEY_NOTSUP, REJX_NOTSUP_MEDIA

ACCESS_CONTROL_PREFIX = "#!::"
MAX_STREAMID = 512
"""The SRT limit on a streamid's length."""

_KNOWN = frozenset({"r", "m", "u", "s", "h", "t"})


class StreamIdError(ValueError):
    """The streamid cannot be read; `reason` is the SRT reject code to answer with."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StreamId:
    key: str
    mode: str = "publish"
    user: str = ""


def parse_streamid(raw: str) -> StreamId:
    """The caller's stream key and mode, or `StreamIdError`."""
    if len(raw) > MAX_STREAMID:
        raise StreamIdError("streamid longer than 512 characters", REJX_BAD_REQUEST)
    if not raw.startswith(ACCESS_CONTROL_PREFIX):
        key = raw.strip()
        if not key:
            raise StreamIdError("no streamid: send the stream key as streamid", REJX_BAD_REQUEST)
        return StreamId(key)
    fields: dict[str, str] = {}
    for item in raw[len(ACCESS_CONTROL_PREFIX) :].split(","):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise StreamIdError(f"streamid item {item!r} is not key=value", REJX_BAD_REQUEST)
        if len(name) == 1 and name not in _KNOWN:
            raise StreamIdError(f"streamid key {name!r} is not supported", REJX_KEY_NOTSUP)
        fields[name] = value
    mode = fields.get("m", "publish")
    if mode != "publish":
        raise StreamIdError(
            f"streamid mode {mode!r}: this server takes publishers only", REJX_BAD_MODE
        )
    if fields.get("t", "stream") != "stream":
        raise StreamIdError(f"streamid type {fields['t']!r}: only live streams", REJX_NOTSUP_MEDIA)
    key = fields.get("r", "")
    if not key:
        raise StreamIdError("streamid has no r= (the stream key)", REJX_BAD_REQUEST)
    return StreamId(key, mode, fields.get("u", ""))
