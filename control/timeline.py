"""A live stream's timeline: its events on one time axis with who caused them.

Every event about a live stream (``live_stream.*``) also becomes a timeline
entry (`TIMELINE` records tagged with the stream's id), written in the same
transaction as the event (`Outbox.stampers`), so the two never part. An event
committed while an API request runs carries that request's API key (`ACTOR`,
set by the gate middleware): `PATCH`, `disable`, `reset-stream-key`... appear
with the operator's key id and name; what the media pipeline commits (a
publisher connecting) has none. ``GET /v1/live-streams/{id}/timeline`` reads
them with the viewer and ingest series (`control.analytics.series`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from control.store.base import EventDraft, Op, Put, Store

TIMELINE = "timeline"
ACTOR: ContextVar[dict[str, Any] | None] = ContextVar("onair_actor", default=None)
"""The API key of the request in progress: {"api_key_id", "name"}."""
_PREFIX = "live_stream."
_DATA_FIELDS = ("warnings", "reason", "status", "ingest")
"""What of an event's data a timeline entry keeps (the whole stream view would
repeat itself on every entry)."""
MAX_ENTRIES = 2000


def timeline_ops(events: Sequence[EventDraft]) -> list[Op]:
    """The timeline entries of `events` (those about live streams)."""
    actor = ACTOR.get()
    now = time.time()
    ops: list[Op] = []
    for event in events:
        if not event.type.startswith(_PREFIX):
            continue
        data = {k: event.data[k] for k in _DATA_FIELDS if k in event.data}
        ops.append(
            Put(
                TIMELINE,
                "tl_" + uuid.uuid4().hex,
                {
                    "at": now,
                    "type": event.type,
                    "live_stream_id": event.resource_id,
                    "actor": actor,
                    "data": data,
                },
                tags={"live_stream_id": event.resource_id},
            )
        )
    return ops


async def read_timeline(
    store: Store, live_stream_id: str, start: float, end: float
) -> list[dict[str, Any]]:
    """The stream's entries in [start, end), oldest first (at most MAX_ENTRIES,
    the newest)."""
    out: list[dict[str, Any]] = []
    after: str | None = None
    while len(out) < MAX_ENTRIES:
        page = await store.list(
            TIMELINE, limit=100, starting_after=after, where=("live_stream_id", live_stream_id)
        )
        for rec in page.data:
            at = float(rec.data["at"])
            if start <= at < end:
                out.append(rec.data)
        # newest first: a page older than the range ends the walk
        if not page.has_more or not page.data or float(page.data[-1].data["at"]) < start:
            break
        after = page.data[-1].id
    out.sort(key=lambda e: float(e["at"]))
    return out
