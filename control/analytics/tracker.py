"""The views a node sees: every playback request and beacon it answers feeds
one `ViewPart` in memory, and every `flush_s` the parts that changed are
merged into their view records (`control.analytics.view`), so all nodes
contribute to one view whichever of them a player's requests reach.

Which view a request belongs to:

* a beacon's ``session_id``, or a request's CMCD ``sid``: the view of that
  session (the `/watch` page and `onairMonitor` use one id for both);
* otherwise the player's address, user agent and playback id: a player that
  sends nothing still makes a view (``measured: false``), and after
  `idle_s` without a request the next one starts another. Once a beacon
  came from that address, agent and id, their plain requests count for the
  beacon's view instead (a player reporting beacons without CMCD is one view,
  not two).

The node stops hearing from a view after `idle_s`: the view ends at its last
sign of life. A new view, a beacon and an end are written at the next flush;
what requests alone change (watch time, CMCD's bitrate and latency) every
`refresh_s` (six flushes), so a thousand viewers cost a thousand writes per
30 s, not per 5 s. Memory is bounded: at most `max_views` parts; beyond that new
views are not tracked (``onair_views_dropped_total``). Each flush also stores
how many viewers each live stream has on this node (`viewers_key`, a short
TTL), which `concurrent_viewers` adds up over the nodes alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from control.analytics.beacons import Beacon
from control.analytics.cmcd import (
    Cmcd,
    cmcd_query_raw,
    decode_query_value,
    session_id,
    view_cmcd,
)
from control.analytics.view import COLLECTION, ViewPart, summarize
from control.domain.live_streams import PLAYBACK_IDS
from control.metrics import Registry
from control.outbox import Change, Contended, Outbox
from control.registry import alive
from control.store.base import Conflict, Delete, Op, Put, Record, Store

log = logging.getLogger(__name__)

IDLE_S = 30.0
CMCD_SAMPLE_S = 5.0
CMCD_READ_FIRST = 3
"""A view's CMCD figures (bitrate, latency) are read on its first 3 requests,
then once per 5 s at most (an LL-HLS player asks about five times a second:
reading one request in 25 keeps CMCD within 5 % of an answer's CPU)."""
FLUSH_S = 5.0
MAX_VIEWS = 50_000
_OBJECTS_MAX = 10_000
_RETIRED_MAX = 50_000
_COUNTED = frozenset({200, 206, 304})
RELAY_FIELD = "x-onair-relay"
"""Requests another node relays for its viewers: that node counts them."""
_TAG_FOR = {"live_stream": "live_stream_id", "asset": "asset_id", "room": "room_id"}


def view_id_for(playback_id: str, session_id: str) -> str:
    """The view of a player's session on a playback id (players choose session ids,
    so the playback id is part of it)."""
    digest = hashlib.sha256(f"{playback_id}\0{session_id}".encode()).hexdigest()
    return "vw_" + digest[:26]


def viewers_key(live_stream_id: str, node_id: str) -> str:
    return f"viewers:{live_stream_id}:{node_id}"


@dataclass(frozen=True, slots=True)
class PlaybackObject:
    """What a playback id plays: ("live_stream" | "asset" | "room", id)."""

    type: str
    id: str


class ViewTracker:
    def __init__(
        self,
        store: Store,
        *,
        node_id: str,
        outbox: Outbox | None = None,
        metrics: Registry | None = None,
        idle_s: float = IDLE_S,
        flush_s: float = FLUSH_S,
        max_views: int = MAX_VIEWS,
        read_cmcd: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.outbox = outbox or Outbox(store)
        self.node_id = node_id
        self.idle_s = idle_s
        self.flush_s = flush_s
        self.refresh_s = 6 * flush_s
        self.max_views = max_views
        self.read_cmcd = read_cmcd
        self.clock = clock
        self.parts: dict[str, ViewPart] = {}
        self._dirty: set[str] = set()
        self._by_client: dict[tuple[str, str, str], str] = {}
        """(playback id, address, user agent) → the view its plain requests count for."""
        self._client_of: dict[str, tuple[str, str, str]] = {}
        self._by_session: dict[tuple[str, str], str] = {}
        """(playback id, CMCD sid) → view id (no hash per request)."""
        self._session_of: dict[str, tuple[str, str]] = {}
        self._touched: set[str] = set()
        """Views only requests changed since their last write: written every
        `refresh_s` (watch time, CMCD figures), not every flush."""
        self._written: dict[str, float] = {}
        self._superseded: list[str] = []
        """Stored unmeasured views a beacon's view took over: deleted at the next flush."""
        self._retired: OrderedDict[str, None] = OrderedDict()
        """Views this node ended: later events for them are ignored (their record
        is final; a new part would overwrite this node's account)."""
        self._objects: OrderedDict[str, PlaybackObject | None] = OrderedDict()
        self._stream_counts: dict[str, int] = {}
        """Live stream → viewers on this node at the last flush (0 once written)."""
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        metrics = metrics or Registry()
        self._dropped = metrics.counter(
            "onair_views_dropped_total", "Views not tracked: the node holds max_views already"
        )
        self._started = metrics.counter(
            "onair_views_total", "Views started on this node", ["measured"]
        )
        self._startup = metrics.histogram(
            "onair_view_startup_seconds",
            "Startup time of views (start to first frame)",
            buckets=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
        )
        self._rebuffer = metrics.histogram(
            "onair_view_rebuffer_ratio",
            "Ended views: time stalled over watch time",
            buckets=(0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5),
        )
        metrics.gauge(
            "onair_viewers", "Viewers this node is serving now", callback=self.active_count
        )

    # -- what the node hears -----------------------------------------------------------
    def on_playback(
        self, path: str, query: str, remote: str, headers: Mapping[str, str], status: int
    ) -> None:
        """An answered request for a ``/play/`` URL (raw query; header names in
        lower case): a view's request when it was answered with media."""
        if status not in _COUNTED or RELAY_FIELD in headers or not path.startswith("/play/"):
            return
        rest = path[6:]
        pid, slash, name = rest.partition("/")
        if not slash:
            if not pid.endswith(".m3u8"):
                return
            pid = pid[:-5]
        elif name == "download.mp4":
            return
        user_agent = headers.get("user-agent", "")
        raw = cmcd_query_raw(query) if self.read_cmcd and "CMCD=" in query else None
        has_headers = self.read_cmcd and (
            "cmcd-session" in headers
            or "cmcd-object" in headers
            or ("cmcd-request" in headers or "cmcd-status" in headers)
        )
        if raw is None and not has_headers:
            self.on_request(pid, remote, user_agent, None)
            return
        # A player's CMCD is read in full on a view's first CMCD_READ_FIRST
        # requests, then once per CMCD_SAMPLE_S, and whenever it may flag a stall
        # (bs); in between only its session id is looked for (a few str.find):
        # what keeps CMCD within 5 % of an answer.
        sid = session_id(raw, headers.get("cmcd-session"))
        if sid is not None:
            now = self.clock()
            view_id = self._by_session.get((pid, sid))
            part = self.parts.get(view_id) if view_id is not None else None
            if (
                part is not None
                and now < part.cmcd_due
                and part.requests >= CMCD_READ_FIRST
                and (raw is None or "bs" not in raw)
                and "cmcd-status" not in headers
            ):
                part.request(now, None)
                self._touched.add(part.id)
                return
        cmcd = view_cmcd(
            decode_query_value(raw) if raw is not None else None,
            headers if has_headers else None,
        )
        self.on_request(pid, remote, user_agent, cmcd)

    def on_request(self, playback_id: str, remote: str, user_agent: str, cmcd: Cmcd | None) -> None:
        """A playback request answered (edge or aiohttp). Cheap: a few dict lookups."""
        now = self.clock()
        if cmcd is not None and cmcd.sid:
            session = (playback_id, cmcd.sid)
            view_id = self._by_session.get(session)
            if view_id is None:
                view_id = view_id_for(playback_id, cmcd.sid)
            part = self._part(view_id, playback_id, now, True)
            if part is not None:
                if cmcd.br is not None or cmcd.ltc is not None:
                    # a sample taken (a playlist request carries no bitrate: the
                    # next request is read too)
                    part.cmcd_due = now + CMCD_SAMPLE_S
                if view_id not in self._session_of:
                    self._by_session[session] = view_id
                    self._session_of[view_id] = session
        else:
            client = (playback_id, remote, user_agent)
            view_id = self._by_client.get(client)
            part = self.parts.get(view_id) if view_id is not None else None
            if part is None or part.ended_at is not None:
                if view_id is not None:
                    self._forget_client(view_id)
                part = self._part("vw_" + secrets.token_hex(13), playback_id, now, False)
                if part is not None:
                    self._by_client[client] = part.id
                    self._client_of[part.id] = client
        if part is not None:
            part.request(now, cmcd)
            self._touched.add(part.id)

    def on_beacon(self, playback_id: str, remote: str, user_agent: str, beacon: Beacon) -> None:
        now = self.clock()
        view_id = view_id_for(playback_id, beacon.session_id)
        part = self._part(view_id, playback_id, now, True)
        if part is None:
            return
        client = (playback_id, remote, user_agent)
        previous = self._by_client.get(client)
        if previous != view_id:
            if previous is not None:
                self._absorb(part, previous)
            self._by_client[client] = view_id
            self._client_of[view_id] = client
        part.beacon(now, beacon)
        self._dirty.add(view_id)
        if part.ended_at is not None:
            self._wake.set()  # the view is over: store it now

    def _part(self, view_id: str, playback_id: str, now: float, measured: bool) -> ViewPart | None:
        part = self.parts.get(view_id)
        if part is not None:
            return part
        if view_id in self._retired:
            return None
        if len(self.parts) >= self.max_views:
            self._dropped.inc()
            return None
        part = ViewPart(view_id, playback_id, self.node_id, now, now, measured=measured)
        self.parts[view_id] = part
        self._dirty.add(view_id)  # a new view is listed at the next flush
        self._started.inc(measured=str(measured).lower())
        return part

    def _absorb(self, part: ViewPart, other_id: str) -> None:
        """An unmeasured view of the same player becomes part of `part`."""
        other = self.parts.get(other_id)
        if other is None or other.measured:
            return
        part.first_seen = min(part.first_seen, other.first_seen)
        part.requests += other.requests
        self._drop(other_id)
        self._superseded.append(other_id)

    def _forget_client(self, view_id: str) -> None:
        client = self._client_of.pop(view_id, None)
        if client is not None and self._by_client.get(client) == view_id:
            del self._by_client[client]

    def _drop(self, view_id: str) -> None:
        self.parts.pop(view_id, None)
        self._dirty.discard(view_id)
        self._touched.discard(view_id)
        self._written.pop(view_id, None)
        self._forget_client(view_id)
        session = self._session_of.pop(view_id, None)
        if session is not None:
            self._by_session.pop(session, None)

    # -- now ---------------------------------------------------------------------------
    def active_count(self) -> float:
        return float(sum(1 for p in self.parts.values() if p.ended_at is None))

    def _active_by_playback_id(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for part in self.parts.values():
            if part.ended_at is None:
                counts[part.playback_id] = counts.get(part.playback_id, 0) + 1
        return counts

    # -- to the store ------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="views")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # what the node saw ends with it: the views it served end where they stood
        for part in self.parts.values():
            part.idle_cut()
            self._dirty.add(part.id)
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("storing views failed; retrying at the next flush")

    async def flush(self) -> None:
        """End the views idle past `idle_s`, store every changed one, and this
        node's viewer counts per live stream."""
        now = self.clock()
        for part in self.parts.values():
            if part.ended_at is None and now - part.last_seen > self.idle_s:
                part.idle_cut()
                self._dirty.add(part.id)

        due = {v for v in self._touched if now - self._written.get(v, 0.0) >= self.refresh_s}
        self._touched -= due
        dirty = [self.parts[v] for v in self._dirty | due if v in self.parts]
        self._dirty.clear()
        for part in dirty:
            self._written[part.id] = now
        superseded, self._superseded = self._superseded, []
        await self._store_parts(dirty, superseded)
        for part in dirty:
            if part.ended_at is not None:
                self._end(part)
        await self._store_counts()

    def _end(self, part: ViewPart) -> None:
        self._drop(part.id)
        self._retired[part.id] = None
        while len(self._retired) > _RETIRED_MAX:
            self._retired.popitem(last=False)
        summary = summarize([part.to_dict()])
        if summary["startup_time_ms"] is not None:
            self._startup.observe(summary["startup_time_ms"] / 1000)
        if summary["watch_time_ms"] > 0 and summary["first_frame_at"] is not None:
            self._rebuffer.observe(summary["rebuffer_ms"] / summary["watch_time_ms"])

    async def _store_parts(self, parts: list[ViewPart], superseded: list[str]) -> None:
        if not parts and not superseded:
            return
        objects = await self._objects_of({p.playback_id for p in parts})
        records = await self.store.get_many(COLLECTION, [p.id for p in parts]) if parts else []
        ops: list[Op] = [Delete(COLLECTION, v) for v in superseded]
        for part, rec in zip(parts, records, strict=True):
            ops.append(self._put(part, rec, objects.get(part.playback_id)))
        try:
            await self.store.commit(ops)
            return
        except Conflict:
            pass  # another node wrote one of them meanwhile: one at a time, re-read
        for part in parts:
            obj = objects.get(part.playback_id)

            async def attempt(
                part: ViewPart = part, obj: PlaybackObject | None = obj
            ) -> Change[None]:
                rec = await self.store.get(COLLECTION, part.id)
                return Change(None, [self._put(part, rec, obj)])

            try:
                await self.outbox.compare_and_set(attempt, what=f"view {part.id}")
            except Contended:
                log.warning(
                    "view %s keeps changing; this node's part waits for its next write", part.id
                )
        if superseded:
            await self.store.commit([Delete(COLLECTION, v) for v in superseded])

    def _put(self, part: ViewPart, rec: Record | None, obj: PlaybackObject | None) -> Put:
        parts = dict(rec.data.get("parts", {})) if rec is not None else {}
        parts[self.node_id] = part.to_dict()
        data = summarize(parts.values())
        data["parts"] = parts
        tags = {"playback_id": part.playback_id, "node": data["node"]}
        if data.get("player"):
            tags["player"] = data["player"]
        if obj is not None:
            data[_TAG_FOR[obj.type]] = obj.id
            tags[_TAG_FOR[obj.type]] = obj.id
        return Put(
            COLLECTION,
            part.id,
            data,
            expect_version=rec.version if rec is not None else 0,
            tags=tags,
        )

    async def _objects_of(self, playback_ids: Iterable[str]) -> dict[str, PlaybackObject | None]:
        out: dict[str, PlaybackObject | None] = {}
        missing = []
        for pid in playback_ids:
            if pid in self._objects:
                out[pid] = self._objects[pid]
            else:
                missing.append(pid)
        if missing:
            for pid, rec in zip(
                missing, await self.store.get_many(PLAYBACK_IDS, missing), strict=True
            ):
                obj = None
                if rec is not None and rec.data.get("object_type") in _TAG_FOR:
                    obj = PlaybackObject(rec.data["object_type"], rec.data.get("object_id", ""))
                out[pid] = self._objects[pid] = obj
                while len(self._objects) > _OBJECTS_MAX:
                    self._objects.popitem(last=False)
        return out

    async def _store_counts(self) -> None:
        by_pid = self._active_by_playback_id()
        objects = await self._objects_of(by_pid)
        counts: dict[str, int] = {}
        for pid, n in by_pid.items():
            obj = objects.get(pid)
            if obj is not None and obj.type in ("live_stream", "room"):
                counts[obj.id] = counts.get(obj.id, 0) + n
        ttl = max(3 * self.flush_s, 10.0)
        for stream_id in set(counts) | set(self._stream_counts):
            n = counts.get(stream_id, 0)
            if n:
                await self.store.kv_set(viewers_key(stream_id, self.node_id), str(n), ttl_s=ttl)
            elif self._stream_counts.get(stream_id):
                await self.store.kv_delete(viewers_key(stream_id, self.node_id))
        self._stream_counts = counts


async def concurrent_viewers(store: Store, live_stream_id: str) -> int:
    """Viewers of a live stream now, over every node alive (as of their last flush)."""
    nodes = await alive(store)
    values = await asyncio.gather(*(store.kv_get(viewers_key(live_stream_id, n.id)) for n in nodes))
    total = 0
    for value in values:
        with contextlib.suppress(TypeError, ValueError):
            total += int(value)  # type: ignore[arg-type]
    return total
