"""Ingest health across the cluster: the node a publisher is on measures what it
sends (`ingest.health.IngestHealth`, fed by the hub) and, every heartbeat of the
broadcast, stores the figures under `health_key` (read by
``GET /v1/live-streams/{id}/health`` on any node) and reconciles the stream's
`warnings` with what the measurement says, emitting ``live_stream.warning``
when one appears (not again while it stays, nor when it goes)."""

from __future__ import annotations

import json
import time
from typing import Any

from control.domain.live_streams import LiveStreamService
from control.store.base import Store
from ingest.hub import Publication

HEALTH_TTL_S = 10.0
"""A stored measurement outlives a few missed heartbeats, not a dead node."""


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
