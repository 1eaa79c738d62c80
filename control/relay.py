"""Live LL-HLS from any node: the edge side of origin-edge.

A live stream is served by the node that ingests it, its **origin** (the store
key ``origin:<stream id>``, claimed and renewed by the live lifecycle there).
Any other node answers that stream's playback URLs by relaying them from the
origin (`LiveRelay.request`; the playback edge writes the answers, so a
waiting viewer costs a done-callback, not a task):

* **one upstream request per URL however many viewers ask**: a request for a
  URL already on its way upstream waits for that answer (blocking playlist
  requests included: viewers are held here, not at the origin);
* answers are kept as long as the origin's ``Cache-Control`` allows (parts,
  segments and init are immutable: kept for the live window; a blocking
  playlist's answer for its ``_HLS_msn``/``_HLS_part`` never changes), in a
  bounded cache, so late viewers and players catching up cost nothing upstream;
* the bytes are the origin's, with its caching headers;
* the playback policy (a signed playback's token) is checked here before
  anything is relayed; the origin checks it again;
* the origin is looked up at most every `ORIGIN_TTL_S`, and again at once when
  it does not answer or no longer has the stream, so edges follow a stream that
  moved within a part.

The origin recognises a relayed request (`RELAY_HEADER`) and never relays it
further: a stream it does not hold is a 404 the edge answers by looking again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable

import aiohttp

from control.live import origin_key
from control.registry import alive_key
from control.store.base import Store
from realtime.hls.edge import RELAY_HEADER, Relayed

log = logging.getLogger(__name__)

ORIGIN_TTL_S = 0.5
CACHE_MAX = 4096
"""Answers kept at most (parts of the live window, blocking playlist answers)."""
KEEP_IMMUTABLE_S = 60.0
UPSTREAM_TIMEOUT_S = 20.0
"""A blocking playlist request is held up to three target durations."""
_MAX_AGE = re.compile(r"max-age=(\d+)")
_PASSED_HEADERS = ("Content-Type", "Cache-Control", "Access-Control-Allow-Origin")


NodeUrl = Callable[[str], Awaitable[str | None]]


class LiveRelay:
    def __init__(self, store: Store, *, node_id: str, node_url: NodeUrl) -> None:
        """`node_url(node_id)`: where a living node is reached (None: not alive)."""
        self.store = store
        self.node_id = node_id
        self._node_url = node_url
        self._origins: dict[str, tuple[float, str | None]] = {}
        self._cache: OrderedDict[str, tuple[float, Relayed]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Relayed | None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.upstream_requests: Counter[str] = Counter()
        """Requests sent upstream per path and query (for tests and metrics)."""

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=256),
        )

    async def stop(self) -> None:
        for future in self._inflight.values():
            future.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def origin_url(self, stream_id: str, *, fresh: bool = False) -> str | None:
        """The base URL of the node serving `stream_id`, if another living node does."""
        now = time.monotonic()
        cached = self._origins.get(stream_id)
        if cached is not None and cached[0] > now and not fresh:
            return cached[1]
        node = await self.store.kv_get(origin_key(stream_id))
        url = None
        if node is not None and node != self.node_id and await self.store.kv_get(alive_key(node)):
            url = await self._node_url(node)
        self._origins[stream_id] = (now + ORIGIN_TTL_S, url)
        return url

    def request(self, stream_id: str, path_qs: str) -> Relayed | asyncio.Future[Relayed | None]:
        """The origin's answer for `path_qs` (a playback URL of `stream_id`): kept,
        or the future every asker of that URL shares (None: no other node serves
        the stream). Waiters must not cancel it."""
        hit = self._cache.get(path_qs)
        if hit is not None:
            if hit[0] > time.monotonic():
                self._cache.move_to_end(path_qs)
                return hit[1]
            del self._cache[path_qs]
        pending = self._inflight.get(path_qs)
        if pending is None:
            pending = asyncio.ensure_future(self._upstream(stream_id, path_qs))
            self._inflight[path_qs] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(path_qs, None))
        return pending

    async def fetch(self, stream_id: str, path_qs: str) -> Relayed | None:
        """`request`, awaited."""
        got = self.request(stream_id, path_qs)
        if isinstance(got, Relayed):
            return got
        return await asyncio.shield(got)

    async def _upstream(self, stream_id: str, path_qs: str) -> Relayed | None:
        assert self._session is not None, "the relay is not started"
        for fresh in (False, True):
            base = await self.origin_url(stream_id, fresh=fresh)
            if base is None:
                return None
            self.upstream_requests[path_qs] += 1
            try:
                async with self._session.get(
                    base + path_qs, headers={RELAY_HEADER: self.node_id}
                ) as r:
                    body = await r.read()
                    headers = {k: r.headers[k] for k in _PASSED_HEADERS if k in r.headers}
                    reply = Relayed(r.status, headers, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("relay: origin %s of %s did not answer (%r)", base, stream_id, exc)
                continue  # look the origin up again: the stream may have moved
            if r.status == 404:
                continue  # the origin no longer has it
            self._keep(path_qs, reply)
            return reply
        return None

    def _keep(self, path_qs: str, reply: Relayed) -> None:
        if reply.status != 200:
            return
        cache_control = reply.headers.get("Cache-Control", "")
        if "immutable" in cache_control:
            ttl = KEEP_IMMUTABLE_S
        else:
            m = _MAX_AGE.search(cache_control)
            ttl = float(m.group(1)) if m else 0.0
        if ttl <= 0:
            return
        self._cache[path_qs] = (time.monotonic() + ttl, reply)
        while len(self._cache) > CACHE_MAX:
            with contextlib.suppress(KeyError):
                self._cache.popitem(last=False)
