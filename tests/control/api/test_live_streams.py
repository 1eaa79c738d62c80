"""Live streams over the API: creation defaults, unguessable rotatable stream
keys, lifecycle actions with one event each, kicks, and the publish authority."""

from __future__ import annotations

import re

import pytest

from control.domain.live_streams import (
    Action,
    InvalidTransition,
    LiveStreamStatus,
    transition,
)
from control.publish_authority import StoreAuthority
from ingest.ports import PublishDenied
from tests.control.api.conftest import Api


async def _events(api: Api, resource_id: str) -> list[dict]:  # type: ignore[type-arg]
    _, body, _ = await api.call("GET", "/v1/events?limit=100")
    return [e for e in body["data"] if e["resource_id"] == resource_id]


async def test_create_returns_the_contract_fields(api: Api) -> None:
    status, ls, headers = await api.call("POST", "/v1/live-streams", json={"name": "Main stage"})
    assert status == 201
    assert headers["Location"] == f"/v1/live-streams/{ls['id']}"
    assert ls["status"] == "idle"
    assert ls["latency_mode"] == "low"
    assert ls["reconnect_window_s"] == 60
    assert ls["record"] is True
    assert ls["passthrough"] is None
    assert re.fullmatch(r"sk_[A-Za-z0-9_\-]{32}", ls["stream_key"])  # 192 random bits
    assert ls["ingest"] == {
        "rtmp_url": "rtmp://media.example.test:1935/live",
        "srt_url": "srt://media.example.test:9000",
        "whip_url": "http://media.example.test:8080/v1/whip",
    }
    assert len(ls["playback_ids"]) == 1 and ls["playback_ids"][0]["policy"] == "public"
    assert ls["active_asset_id"] is None and ls["recent_asset_ids"] == []
    assert ls["created_at"].endswith("Z")
    status, again, _ = await api.call("GET", f"/v1/live-streams/{ls['id']}")
    assert status == 200 and again == ls
    events = await _events(api, ls["id"])
    assert [e["type"] for e in events] == ["live_stream.created"]
    assert events[0]["data"]["id"] == ls["id"] and events[0]["sequence"] == 1


async def test_create_with_every_option(api: Api) -> None:
    body = {
        "name": None,
        "latency_mode": "standard",
        "reconnect_window_s": 0,
        "playback_policy": "signed",
        "record": False,
        "passthrough": "customer-42",
    }
    status, ls, _ = await api.call("POST", "/v1/live-streams", json=body)
    assert status == 201
    assert ls["latency_mode"] == "standard" and ls["reconnect_window_s"] == 0
    assert ls["record"] is False and ls["passthrough"] == "customer-42"
    assert ls["playback_ids"][0]["policy"] == "signed"
    pid = ls["playback_ids"][0]["id"]
    rec = await api.store.get("playback_ids", pid)
    assert rec is not None and rec.data["object_id"] == ls["id"]


async def test_stream_keys_are_unique_and_rotatable(api: Api) -> None:
    keys = set()
    for _ in range(5):
        _, ls, _ = await api.call("POST", "/v1/live-streams", json={})
        keys.add(ls["stream_key"])
    assert len(keys) == 5
    old = ls["stream_key"]
    status, reset, _ = await api.call("POST", f"/v1/live-streams/{ls['id']}/reset-stream-key")
    assert status == 200 and reset["stream_key"] != old
    authority = StoreAuthority(api.store)
    with pytest.raises(PublishDenied) as denied:
        await authority.authorize_publish(old, protocol="rtmp", remote="127.0.0.1")
    assert denied.value.code == "bad_key"
    grant = await authority.authorize_publish(reset["stream_key"], protocol="whip", remote="x")
    assert grant.live_stream_id == ls["id"]
    assert (ls["id"], "stream_key_reset") in api.live_control.kicks


async def test_disable_enable_and_the_publish_authority(api: Api) -> None:
    _, ls, _ = await api.call("POST", "/v1/live-streams", json={})
    authority = StoreAuthority(api.store)
    status, disabled, _ = await api.call("POST", f"/v1/live-streams/{ls['id']}/disable")
    assert status == 200 and disabled["status"] == "disabled"
    assert (ls["id"], "disabled") in api.live_control.kicks
    with pytest.raises(PublishDenied) as denied:
        await authority.authorize_publish(ls["stream_key"], protocol="rtmp", remote="r")
    assert denied.value.code == "disabled"
    # disabling twice changes nothing and emits nothing
    await api.call("POST", f"/v1/live-streams/{ls['id']}/disable")
    status, complete, _ = await api.call("POST", f"/v1/live-streams/{ls['id']}/complete")
    assert status == 409 and complete["error"]["type"] == "invalid_state"
    status, enabled, _ = await api.call("POST", f"/v1/live-streams/{ls['id']}/enable")
    assert enabled["status"] == "idle"
    await authority.authorize_publish(ls["stream_key"], protocol="rtmp", remote="r")
    types = [e["type"] for e in await _events(api, ls["id"])]
    assert types == ["live_stream.created", "live_stream.disabled", "live_stream.enabled"]
    seqs = [e["sequence"] for e in await _events(api, ls["id"])]
    assert seqs == [1, 2, 3]


async def test_unknown_stream_key_is_bad_key(api: Api) -> None:
    authority = StoreAuthority(api.store)
    for key in ("sk_nope", "", "x" * 500):
        with pytest.raises(PublishDenied) as denied:
            await authority.authorize_publish(key, protocol="rtmp", remote="r")
        assert denied.value.code == "bad_key"


async def test_lifecycle_driven_by_ingest_and_complete(api: Api) -> None:
    _, ls, _ = await api.call("POST", "/v1/live-streams", json={})
    svc = api.node.live_streams
    await svc.apply(ls["id"], Action.CONNECT)
    active = await svc.apply(ls["id"], Action.ACTIVATE)
    assert active["status"] == "active"
    status, done, _ = await api.call("POST", f"/v1/live-streams/{ls['id']}/complete")
    assert status == 200 and done["status"] == "idle"
    assert (ls["id"], "completed") in api.live_control.kicks
    types = [e["type"] for e in await _events(api, ls["id"])]
    assert types == [
        "live_stream.created",
        "live_stream.connected",
        "live_stream.active",
        "live_stream.idle",
    ]


async def test_patch_updates_only_given_fields(api: Api) -> None:
    _, ls, _ = await api.call("POST", "/v1/live-streams", json={"name": "a"})
    status, new, _ = await api.call(
        "PATCH", f"/v1/live-streams/{ls['id']}", json={"reconnect_window_s": 10}
    )
    assert status == 200 and new["reconnect_window_s"] == 10 and new["name"] == "a"
    status, body, _ = await api.call(
        "PATCH", f"/v1/live-streams/{ls['id']}", json={"stream_key": "sk_mine"}
    )
    assert status == 422 and body["error"]["param"] == "stream_key"


async def test_delete_removes_and_kicks(api: Api) -> None:
    _, ls, _ = await api.call("POST", "/v1/live-streams", json={})
    status, _, _ = await api.call("DELETE", f"/v1/live-streams/{ls['id']}")
    assert status == 204
    assert (await api.call("GET", f"/v1/live-streams/{ls['id']}"))[0] == 404
    assert (await api.call("DELETE", f"/v1/live-streams/{ls['id']}"))[0] == 404
    assert await api.store.get("playback_ids", ls["playback_ids"][0]["id"]) is None
    types = [e["type"] for e in await _events(api, ls["id"])]
    assert types[-1] == "live_stream.deleted"
    assert (ls["id"], "deleted") in api.live_control.kicks


def test_transition_function_is_the_one_place_for_lifecycle_rules() -> None:
    S, A = LiveStreamStatus, Action
    assert transition(S.IDLE, A.ACTIVATE).status is S.ACTIVE
    assert transition(S.IDLE, A.ACTIVATE).event_type == "live_stream.active"
    assert transition(S.ACTIVE, A.IDLE).event_type == "live_stream.idle"
    assert transition(S.DISABLED, A.DISABLE).event_type is None
    with pytest.raises(InvalidTransition):
        transition(S.DISABLED, A.ACTIVATE)
    with pytest.raises(InvalidTransition):
        transition(S.DISABLED, A.COMPLETE)
