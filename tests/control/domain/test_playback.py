"""Playback policy without HTTP: what a playback id plays, and signed playback
refusing every token but a valid one for this id and audience."""

from __future__ import annotations

import pytest

from control.domain.assets import AssetService
from control.domain.errors import Forbidden, NotFoundError
from control.domain.live_streams import LiveStreamService
from control.domain.playback import PlaybackPolicy
from control.domain.signing_keys import SigningKeys
from control.outbox import Outbox
from control.settings import Settings
from control.store.base import Store
from vod.tokens import sign_playback_token


async def test_a_public_id_plays_its_asset_or_its_stream(
    store: Store, outbox: Outbox, settings: Settings
) -> None:
    asset = await AssetService(store, outbox).create(source="upload")
    ls = await LiveStreamService(store, settings, outbox).create()
    policy = PlaybackPolicy(store)
    target = await policy.resolve(asset["playback_ids"][0]["id"], "", "v")
    assert target.asset is not None and target.asset.id == asset["id"]
    assert target.live_stream is None and target.policy == "public"
    target = await policy.resolve(ls["playback_ids"][0]["id"], "", "v")
    assert target.live_stream is not None and target.live_stream.id == ls["id"]
    assert await policy.live_stream_id(ls["playback_ids"][0]["id"], None) == ls["id"]
    with pytest.raises(NotFoundError):  # an asset does not play live
        await policy.live_stream_id(asset["playback_ids"][0]["id"], None)


@pytest.mark.parametrize("playback_id", ["nope", "../etc", "x" * 65, ""])
async def test_unknown_and_malformed_ids_are_not_found(store: Store, playback_id: str) -> None:
    with pytest.raises(NotFoundError):
        await PlaybackPolicy(store).resolve(playback_id, "", "v")


async def test_signed_playback_takes_only_a_valid_token_for_this_id_and_audience(
    store: Store, outbox: Outbox
) -> None:
    asset = await AssetService(store, outbox).create(source="upload", policy="signed")
    other = await AssetService(store, outbox).create(source="upload", policy="signed")
    pid, other_pid = asset["playback_ids"][0]["id"], other["playback_ids"][0]["id"]
    key, private = await SigningKeys(outbox).create()
    policy = PlaybackPolicy(store, max_token_ttl_s=3600)

    target = await policy.resolve(pid, sign_playback_token(private, key.id, pid, "v"), "v")
    assert target.asset is not None and target.policy == "signed" and target.expires > 0
    refused = [
        "",
        "not-a-jwt",
        sign_playback_token(private, key.id, other_pid, "v"),  # another id
        sign_playback_token(private, key.id, pid, "t"),  # another audience
        sign_playback_token(private, "sigk_unknown", pid, "v"),  # an unknown key
        sign_playback_token(private, key.id, pid, "v", ttl_s=7200),  # over the cap
    ]
    for token in refused:
        with pytest.raises(Forbidden):
            await policy.resolve(pid, token, "v")
    await SigningKeys(outbox).delete(key.id)  # a deleted key signs nothing any more
    with pytest.raises(Forbidden):
        await policy.resolve(pid, sign_playback_token(private, key.id, pid, "v"), "v")
