"""Timeline entries: written with a live stream's events, carrying the API key
of the request that caused them, read back by time range."""

from __future__ import annotations

from pathlib import Path

from control.outbox import Outbox
from control.store.base import EventDraft
from control.timeline import ACTOR, TIMELINE, read_timeline, timeline_ops
from tests.support.stores import make_store


def test_only_live_stream_events_make_entries_with_the_actor_and_little_data() -> None:
    token = ACTOR.set({"api_key_id": "key_1", "name": "ops"})
    try:
        ops = timeline_ops(
            [
                EventDraft("live_stream.updated", "ls_1", {"name": "x", "status": "idle"}),
                EventDraft("asset.ready", "as_1", {}),
            ]
        )
    finally:
        ACTOR.reset(token)
    (put,) = ops
    assert put.collection == TIMELINE and put.tags == {"live_stream_id": "ls_1"}  # type: ignore[union-attr]
    data = put.data  # type: ignore[union-attr]
    assert data["actor"] == {"api_key_id": "key_1", "name": "ops"}
    assert data["type"] == "live_stream.updated" and data["data"] == {"status": "idle"}
    assert timeline_ops([EventDraft("live_stream.connected", "ls_1", {})])[0].data["actor"] is None  # type: ignore[union-attr]


async def test_entries_commit_with_their_events_and_read_back_by_range(tmp_path: Path) -> None:
    store = make_store("sqlite", tmp_path, None)
    await store.open()
    try:
        outbox = Outbox(store)
        outbox.stampers.append(timeline_ops)
        await outbox.commit([], [EventDraft("live_stream.connected", "ls_1", {})])
        await outbox.commit([], [EventDraft("live_stream.idle", "ls_1", {})])
        await outbox.commit([], [EventDraft("live_stream.idle", "ls_2", {})])
        entries = await read_timeline(store, "ls_1", 0, 2e9)
        assert [e["type"] for e in entries] == ["live_stream.connected", "live_stream.idle"]
        assert await read_timeline(store, "ls_1", 2e9, 3e9) == []
        assert len(await store.events_after(0)) == 3
    finally:
        await store.close()
