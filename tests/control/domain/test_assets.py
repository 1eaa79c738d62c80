"""Assets without HTTP: a broadcast's asset is created with the stream's link in
one commit, status moves only forward, and deleting takes the playback ids."""

from __future__ import annotations

import pytest

from control.domain.assets import COLLECTION, AssetService, InvalidAssetTransition
from control.domain.errors import InvalidState, NotFoundError
from control.domain.live_streams import COLLECTION as LIVE_STREAMS
from control.domain.live_streams import PLAYBACK_IDS, LiveStreamService
from control.outbox import Outbox
from control.settings import Settings
from control.store.base import Put, Store
from tests.control.domain.conftest import events


@pytest.fixture
def assets(store: Store, outbox: Outbox) -> AssetService:
    return AssetService(store, outbox)


async def test_a_broadcast_asset_is_linked_from_its_stream_in_the_same_commit(
    store: Store, outbox: Outbox, settings: Settings, assets: AssetService
) -> None:
    ls = await LiveStreamService(store, settings, outbox).create(playback_policy="signed")
    asset_id = await assets.create_for_live_stream(ls["id"])
    stream = await store.get(LIVE_STREAMS, ls["id"])
    assert stream is not None and stream.data["active_asset_id"] == asset_id
    asset = await assets.get(asset_id)
    assert asset is not None and asset.data["live_stream_id"] == ls["id"]
    assert asset.data["playback_ids"][0]["policy"] == "signed"  # the stream's policy
    assert await assets.create_for_live_stream(ls["id"]) == asset_id  # idempotent
    with pytest.raises(NotFoundError):
        await assets.create_for_live_stream("ls_nope")


async def test_ready_then_no_way_back_to_preparing(store: Store, assets: AssetService) -> None:
    view = await assets.create(source="upload")
    ready = await assets.mark_ready(view["id"], duration_s=12.3456, gaps=[])
    assert ready is not None and ready["status"] == "ready" and ready["duration_s"] == 12.346
    # mark_errored on a ready asset changes nothing
    again = await assets.mark_errored(view["id"], "late failure")
    assert again is not None and again["status"] == "ready"

    def back(data: dict[str, object]) -> list[str]:
        data["status"] = "preparing"
        return []

    with pytest.raises(InvalidAssetTransition) as err:
        await assets.change(view["id"], back)
    assert isinstance(err.value, InvalidState)
    types = [e.type for e in await events(store, view["id"])]
    assert types == ["asset.created", "asset.ready"]


async def test_a_change_commits_other_records_with_it_or_not_at_all(
    store: Store, assets: AssetService
) -> None:
    view = await assets.create(source="upload")
    await store.commit([Put("side", "s", {"v": 1})])

    async def also() -> list[Put]:
        side = await store.get("side", "s")
        assert side is not None
        return [Put("side", "s", {"v": side.data["v"] + 1}, expect_version=side.version)]

    await assets.mark_ready(view["id"], duration_s=1.0, gaps=[], also=also)
    side = await store.get("side", "s")
    assert side is not None and side.data == {"v": 2}


async def test_delete_takes_the_playback_ids_along(store: Store, assets: AssetService) -> None:
    view = await assets.create(source="upload")
    pid = view["playback_ids"][0]["id"]
    await assets.delete(view["id"])
    assert await store.get(COLLECTION, view["id"]) is None
    assert await store.get(PLAYBACK_IDS, pid) is None
    with pytest.raises(NotFoundError):
        await assets.delete(view["id"])
