"""Ingest health across the cluster: the node a publisher is on measures what it
sends (`ingest.health.IngestHealth`, fed by the hub) and, every heartbeat of the
broadcast, stores the figures under `health_key` (read by
``GET /v1/live-streams/{id}/health`` on any node) and reconciles the stream's
`warnings` with what the measurement says, emitting ``live_stream.warning``
when one appears (not again while it stays, nor when it goes). The bitrate
also goes into a record per stream and minute (`INGEST_MINUTES`: the sum and
count of that minute's samples) for the ``ingest_bitrate`` timeseries."""

from __future__ import annotations

import json
import time
from typing import Any

from control.domain.live_streams import LiveStreamService
from control.store.base import Put, Store
from ingest.hub import Publication

HEALTH_TTL_S = 10.0
"""A stored measurement outlives a few missed heartbeats, not a dead node."""
INGEST_MINUTES = "ingest_minutes"


def health_key(live_stream_id: str) -> str:
    return f"ingest_health:{live_stream_id}"


async def report_health(
    store: Store,
    live_streams: LiveStreamService,
    live_stream_id: str,
    publication: Publication,
    node_id: str,
    written: list[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    """Store the measurement; reconcile the stream's warnings unless they are
    `written` already (what this call returned last heartbeat: no read of the
    stream per heartbeat while nothing changes). Returns the warnings now."""
    health = publication.health
    ingest = {"protocol": publication.source, "node": node_id, **health.snapshot(time.time())}
    await store.kv_set(health_key(live_stream_id), json.dumps(ingest), ttl_s=HEALTH_TTL_S)
    if ingest.get("bitrate_kbps") is not None:
        await record_minute(store, live_stream_id, float(ingest["bitrate_kbps"]), time.time())
    current = [(w.type, w.message) for w in health.warnings()]
    if current != written:
        await live_streams.set_warnings(live_stream_id, current)
    return current


async def forget_health(store: Store, live_stream_id: str) -> None:
    await store.kv_delete(health_key(live_stream_id))


async def read_health(store: Store, live_stream_id: str) -> dict[str, Any] | None:
    """The latest measurement of the stream's publisher (None: none is live)."""
    raw = await store.kv_get(health_key(live_stream_id))
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def minute_id(live_stream_id: str, minute: float) -> str:
    return f"{live_stream_id}:{int(minute)}"


async def record_minute(store: Store, live_stream_id: str, kbps: float, now: float) -> None:
    """Add one bitrate sample to the stream's minute (one node publishes a stream
    at a time: a plain read and write)."""
    minute = now - now % 60
    rid = minute_id(live_stream_id, minute)
    rec = await store.get(INGEST_MINUTES, rid)
    total, count = (rec.data["sum"], rec.data["count"]) if rec is not None else (0.0, 0)
    data = {"t": minute, "sum": total + kbps, "count": count + 1}
    await store.commit(
        [
            Put(
                INGEST_MINUTES,
                rid,
                data,
                expect_version=None,
                tags={"live_stream_id": live_stream_id},
            )
        ]
    )


async def read_minutes(
    store: Store, live_stream_id: str, start: float, end: float
) -> dict[float, tuple[float, int]]:
    """minute → (sum of bitrate samples, samples) of the stream in [start, end)."""
    minutes = [m for m in range(int(start - start % 60), int(end), 60)]
    out: dict[float, tuple[float, int]] = {}
    for i in range(0, len(minutes), 500):
        chunk = minutes[i : i + 500]
        records = await store.get_many(
            INGEST_MINUTES, [minute_id(live_stream_id, m) for m in chunk]
        )
        for minute, rec in zip(chunk, records, strict=True):
            if rec is not None:
                out[float(minute)] = (float(rec.data["sum"]), int(rec.data["count"]))
    return out
