"""Live streams without HTTP: one commit per change with its event, the stream
key unique and in no event, transitions checked, and the API's changes kick
the live publisher."""

from __future__ import annotations

import pytest

from control.domain.errors import InvalidState, NotFoundError
from control.domain.live_streams import (
    COLLECTION,
    PLAYBACK_IDS,
    Action,
    InvalidTransition,
    LiveStreamAdmin,
    LiveStreamService,
)
from control.outbox import Outbox
from control.settings import Settings
from control.store.base import Store
from tests.control.domain.conftest import events


class Kicks:
    def __init__(self) -> None:
        self.kicked: list[tuple[str, str]] = []

    def kick(self, live_stream_id: str, reason: str) -> None:
        self.kicked.append((live_stream_id, reason))


@pytest.fixture
def streams(store: Store, outbox: Outbox, settings: Settings) -> LiveStreamService:
    return LiveStreamService(store, settings, outbox)


async def test_create_commits_the_stream_its_playback_id_and_an_event_without_the_key(
    store: Store, streams: LiveStreamService
) -> None:
    view = await streams.create(name="Stage", playback_policy="signed")
    key = view["stream_key"]
    rec = await streams.by_stream_key(key)
    assert rec is not None and rec.id == view["id"] and rec.data["status"] == "idle"
    pid = view["playback_ids"][0]["id"]
    playback = await store.get(PLAYBACK_IDS, pid)
    assert playback is not None and playback.data == {
        "object_type": "live_stream",
        "object_id": view["id"],
        "policy": "signed",
    }
    (created,) = await events(store, view["id"])
    assert created.type == "live_stream.created" and key not in str(created.data)


async def test_lifecycle_actions_follow_the_state_machine(
    store: Store, streams: LiveStreamService
) -> None:
    ls = await streams.create()
    assert (await streams.apply(ls["id"], Action.CONNECT))["status"] == "idle"
    assert (await streams.apply(ls["id"], Action.ACTIVATE))["status"] == "active"
    assert (await streams.apply(ls["id"], Action.IDLE))["status"] == "idle"
    await streams.disable(ls["id"])
    with pytest.raises(InvalidTransition) as err:
        await streams.apply(ls["id"], Action.CONNECT)
    assert isinstance(err.value, InvalidState)
    assert [e.type for e in await events(store, ls["id"])] == [
        "live_stream.created",
        "live_stream.connected",
        "live_stream.active",
        "live_stream.idle",
        "live_stream.disabled",
    ]


async def test_warnings_come_with_a_new_one_and_end_with_the_broadcast_in_the_same_write(
    store: Store, streams: LiveStreamService
) -> None:
    ls = await streams.create()
    await streams.apply(ls["id"], Action.CONNECT)
    await streams.apply(ls["id"], Action.ACTIVATE)
    warned = await streams.set_warnings(ls["id"], [("no_audio", "Add audio")])
    assert [w["type"] for w in warned["warnings"]] == ["no_audio"]
    await streams.set_warnings(ls["id"], [("no_audio", "Add audio")])  # the same: no event
    ended = await streams.complete(ls["id"])
    assert ended["status"] == "idle" and ended["warnings"] == []
    types = [e.type for e in await events(store, ls["id"])]
    assert types.count("live_stream.warning") == 1 and types[-1] == "live_stream.idle"


async def test_the_api_changes_kick_the_publisher_with_their_reason(
    streams: LiveStreamService,
) -> None:
    kicks = Kicks()
    admin = LiveStreamAdmin(streams, kicks)
    ls = await streams.create()
    old_key = ls["stream_key"]
    new = await admin.reset_stream_key(ls["id"])
    assert new["stream_key"] != old_key and await streams.by_stream_key(old_key) is None
    await admin.disable(ls["id"])
    await admin.enable(ls["id"])
    await admin.delete(ls["id"])
    assert kicks.kicked == [
        (ls["id"], "stream_key_reset"),
        (ls["id"], "disabled"),
        (ls["id"], "deleted"),
    ]


async def test_delete_takes_the_playback_ids_along_and_then_it_is_not_found(
    store: Store, streams: LiveStreamService
) -> None:
    ls = await streams.create()
    pid = ls["playback_ids"][0]["id"]
    await streams.delete(ls["id"])
    assert await store.get(COLLECTION, ls["id"]) is None
    assert await store.get(PLAYBACK_IDS, pid) is None
    with pytest.raises(NotFoundError):
        await streams.update(ls["id"], {"name": "gone"})
