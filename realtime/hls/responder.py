"""What to answer to an LL-HLS request on one `LiveHls`, without any I/O.

Owns the decisions of RFC 8216bis delivery: blocking playlist reload
(`_HLS_msn` / `_HLS_part`, 400 when asked for more than two segments beyond the
live edge, 503 when the wait times out), delta updates (`_HLS_skip`), parts and
segments that block until they exist (preload hints), and the cache headers
that fit a CDN (immutable media; short-lived playlists; blocking answers
cacheable because a CDN keys them by their query).

A request is answered by a `Reply`, or by a `Pending`: a future to wait on (the
stream's shared position or change future), a deadline, and `resume(timed_out)`
giving the next step. Two drivers run these steps: the aiohttp handlers in
`realtime.hls.http` (a task per request) and the playback edge in
`realtime.hls.edge` (a done-callback per waiting connection, no task), so both
answer byte for byte the same.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from realtime.hls.live import LiveHls
from realtime.segments import Part

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
INIT_TYPE = "video/mp4"
MEDIA_TYPE = "video/iso.segment"
TEXT_TYPE = "text/plain"
IMMUTABLE = "public, max-age=31536000, immutable"
NO_STORE = "no-store"

_INIT_RE = re.compile(r"^init-(\d{1,9})\.mp4$")
_SEGMENT_RE = re.compile(r"^(\d{1,12})\.m4s$")
_PART_RE = re.compile(r"^(\d{1,12})\.(\d{1,6})\.m4s$")


@dataclass(slots=True)
class Reply:
    """A complete answer: status, body and the headers that vary by answer."""

    status: int
    content_type: str
    cache_control: str
    body: bytes
    retry_after: str | None = None


@dataclass(slots=True)
class Pending:
    """Wait for `future` (or until the loop time `deadline`), then call `resume`."""

    future: asyncio.Future[None]
    deadline: float
    resume: Callable[[bool], Reply | Pending]
    """Called with timed_out=True at the deadline, False when the future completed."""


Step = Reply | Pending


def error(status: int, message: str, *, retry_after: str | None = None) -> Reply:
    return Reply(status, TEXT_TYPE, NO_STORE, (message + "\n").encode(), retry_after)


def _now() -> float:
    return asyncio.get_running_loop().time()


def wait_until(
    live: LiveHls, predicate: Callable[[], bool], deadline: float, then: Callable[[], Step]
) -> Step:
    """`then()` once `predicate()` holds after some change, or at `deadline`."""
    if predicate():
        return then()

    def resume(timed_out: bool) -> Step:
        if timed_out or predicate() or _now() >= deadline:
            return then()
        return Pending(live.change_future(), deadline, resume)

    return Pending(live.change_future(), deadline, resume)


# -- multivariant -----------------------------------------------------------------


def multivariant(live: LiveHls, media_uri: str, suffix: str) -> Step:
    """The multivariant playlist (waits briefly for the first init segment so
    CODECS/RESOLUTION are real)."""

    def answer() -> Step:
        if live.current_init is None:
            return error(503, "stream not started yet", retry_after="1")
        text = live.multivariant_playlist(media_uri, suffix=suffix)
        return Reply(200, PLAYLIST_TYPE, "public, max-age=1", text.encode())

    return wait_until(
        live,
        lambda: live.current_init is not None or live.ended,
        _now() + live.blocking_timeout(),
        answer,
    )


# -- media playlist ---------------------------------------------------------------


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise ValueError(f"bad {name}")
    return int(raw)


def media_playlist(live: LiveHls, query: Mapping[str, str], suffix: str) -> Step:
    """The media playlist; blocking reload with `_HLS_msn`/`_HLS_part`, delta with `_HLS_skip`."""
    try:
        msn = _int_param(query, "_HLS_msn")
        part = _int_param(query, "_HLS_part")
    except ValueError as exc:
        return error(400, str(exc))
    if part is not None and msn is None:
        return error(400, "_HLS_part requires _HLS_msn")
    request = _PlaylistRequest(live, msn, part, query.get("_HLS_skip") in ("YES", "v2"), suffix)
    if not live.has_media and not live.ended:
        return wait_until(
            live,
            lambda: live.has_media or live.ended,
            _now() + live.blocking_timeout(),
            request.after_media,
        )
    return request.block()


class _PlaylistRequest:
    """One media playlist request through its steps (a class, not closures: this
    runs five times a second per viewer)."""

    __slots__ = ("deadline", "live", "msn", "part", "skip", "suffix")

    def __init__(
        self, live: LiveHls, msn: int | None, part: int | None, skip: bool, suffix: str
    ) -> None:
        self.live = live
        self.msn = msn
        self.part = part
        self.skip = skip
        self.suffix = suffix
        self.deadline = 0.0

    def render(self) -> Reply:
        live = self.live
        body = live.media_playlist_bytes(skip=self.skip, suffix=self.suffix)
        if live.ended:
            cache = "public, max-age=2"
        elif self.msn is not None:
            # A CDN keys this by its query: the answer for (msn, part) stays correct.
            cache = f"public, max-age={6 * live.target_duration}"
        else:
            cache = "public, max-age=1"
        return Reply(200, PLAYLIST_TYPE, cache, body)

    def after_media(self) -> Step:
        if not self.live.has_media and not self.live.ended:
            return error(503, "no media yet", retry_after="1")
        return self.block()

    def block(self) -> Step:
        live, msn, part = self.live, self.msn, self.part
        if msn is None or live.ended:
            return self.render()
        # RFC 8216bis 6.2.5.2: an _HLS_msn greater than the last (complete) Media
        # Segment's number plus two is answered at once with 400 Bad Request.
        if msn > live.last_complete_msn + 2:
            return error(400, "_HLS_msn is too far beyond the live edge")
        if live.has_position(msn, part):
            return self.render()
        self.deadline = _now() + live.blocking_timeout()
        return Pending(live.position_future(msn, part), self.deadline, self.resume)

    def resume(self, timed_out: bool) -> Step:
        live, msn = self.live, self.msn
        assert msn is not None
        if live.has_position(msn, self.part):
            return self.render()
        if timed_out:
            return error(503, "timed out waiting for the requested segment", retry_after="1")
        return Pending(live.position_future(msn, self.part), self.deadline, self.resume)


# -- media ------------------------------------------------------------------------


def init(live: LiveHls, generation: int) -> Reply:
    segment = live.get_init(generation)
    if segment is None:
        return error(404, "no such init segment")
    return Reply(200, INIT_TYPE, IMMUTABLE, segment.data)


COLD_TIMEOUT_S = 10.0
"""How long a segment read back from the recording (or the window's disk cache) may take."""


def from_cold(live: LiveHls, msn: int, index: int | None) -> Step | None:
    """A segment (or part `index` of it) past the live edge, whose bytes are read
    back from the cold source; None when `msn` is not such a segment."""
    ready = live.read_cold(msn)
    if ready is None:
        return None

    def answer(timed_out: bool) -> Step:
        data = live.cold_bytes(msn, index)
        if data is not None:
            return Reply(200, MEDIA_TYPE, IMMUTABLE, data)
        if timed_out:
            return error(503, "segment not readable now", retry_after="1")
        return error(404, "no such segment" if index is None else "no such part")

    if ready.done():
        return answer(False)
    return Pending(ready, _now() + COLD_TIMEOUT_S, answer)


def part(live: LiveHls, msn: int, index: int) -> Step:
    """A part; a part that may still come (the preload hint) blocks until it exists.
    A hint that a keyframe overtook is answered with the part that came instead."""

    def found() -> Part | None:
        return live.get_part(msn, index) or live.hinted_successor(msn, index)

    got = found()
    if got is not None:
        return Reply(200, MEDIA_TYPE, IMMUTABLE, got.data)
    if (cold := from_cold(live, msn, index)) is not None:
        return cold
    if not live.part_may_come(msn, index) or msn > live.open_msn + 1:
        return error(404, "no such part")

    def answer() -> Step:
        got = found()
        if got is not None:
            return Reply(200, MEDIA_TYPE, IMMUTABLE, got.data)
        if live.part_may_come(msn, index):
            return error(503, "part not ready", retry_after="1")
        return error(404, "no such part")

    return wait_until(
        live,
        lambda: found() is not None or not live.part_may_come(msn, index),
        _now() + live.blocking_timeout(),
        answer,
    )


def segment(live: LiveHls, msn: int) -> Step:
    """A complete segment; the one being built blocks until it is complete."""
    found = live.segment_bytes(msn)
    if found is not None:
        return Reply(200, MEDIA_TYPE, IMMUTABLE, found)
    if (cold := from_cold(live, msn, None)) is not None:
        return cold
    if not live.segment_may_come(msn) or msn > live.open_msn:
        return error(404, "no such segment")

    def answer() -> Step:
        got = live.segment_bytes(msn)
        if got is not None:
            return Reply(200, MEDIA_TYPE, IMMUTABLE, got)
        return error(404 if not live.segment_may_come(msn) else 503, "segment not ready")

    return wait_until(
        live,
        lambda: live.segment_bytes(msn) is not None or not live.segment_may_come(msn),
        _now() + live.blocking_timeout(),
        answer,
    )


def child(live: LiveHls, name: str, query: Mapping[str, str], suffix: str) -> Step:
    """/play/{playback_id}/{name}: dispatch on the last path segment."""
    if name == "media.m3u8":
        return media_playlist(live, query, suffix)
    if m := _PART_RE.match(name):
        return part(live, int(m.group(1)), int(m.group(2)))
    if m := _SEGMENT_RE.match(name):
        return segment(live, int(m.group(1)))
    if m := _INIT_RE.match(name):
        return init(live, int(m.group(1)))
    return error(404, "not found")
