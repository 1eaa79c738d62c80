"""A Redis failover in the middle of a broadcast, against the real `onair serve`
on Redis Sentinel (a master, a replica, three Sentinels): the master is
SIGKILLed while ffmpeg publishes; the service answers again once the replica
is elected, the broadcast goes on and becomes one ready asset with its MP4,
and every event in the log reaches the webhook receiver — nothing the store
acknowledged is lost, because a write counts only once the replica holds it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.e2e._media import Publisher
from tests.e2e._service import Api, rtmp_url, start_service, stop_service
from tests.support.redis_server import redis_sentinel_set, redis_server_binary
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(300)]


async def test_a_redis_failover_mid_broadcast_loses_nothing(tmp_path: Path) -> None:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    with redis_sentinel_set() as redis:
        async with WebhookReceiver() as rx:
            svc = await start_service(
                tmp_path,
                {
                    "ONAIR_REDIS_SENTINELS": redis.sentinels,
                    "ONAIR_REDIS_SENTINEL_MASTER": redis.MASTER,
                },
            )
            try:
                api = Api(svc)
                endpoint = await api.ok("POST", "/v1/webhook-endpoints", {"url": rx.url("/hooks")})
                rx.set("/hooks", secret=endpoint["secret"])
                ls = await api.live_stream(reconnect_window_s=30)
                pub = await Publisher.start(
                    rtmp_url(svc, ls["stream_key"]), 60, log=tmp_path / "ff.log"
                )
                live = await api.wait_stream_status(ls["id"], "active", within=30)
                asset_id = live["active_asset_id"]
                await asyncio.sleep(4)

                await asyncio.to_thread(redis.kill_master)
                deadline = time.monotonic() + 30
                while True:  # 503 while the Sentinels elect the replica
                    status, _ = await api.call("GET", f"/v1/live-streams/{ls['id']}")
                    if status == 200 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert status == 200, "the service did not come back after the failover"
                assert redis.current_master_port() == redis.replica_port
                await asyncio.sleep(4)  # the broadcast goes on on the new master
                assert pub.running

                await api.ok("POST", f"/v1/live-streams/{ls['id']}/complete")
                await pub.stop()
                asset = await api.wait_asset(asset_id, within=90)
                assert asset["duration_s"] >= 8, asset
                await api.wait_asset(asset_id, "ready", within=90, field="mp4_status")

                events = await api.events()
                mine = [e for e in events if e["resource_id"] in (ls["id"], asset_id)]
                types = {e["type"] for e in mine}
                assert {
                    "live_stream.connected",
                    "live_stream.active",
                    "asset.created",
                    "asset.ready",
                    "asset.live_stream_completed",
                } <= types
                for resource in (ls["id"], asset_id):  # no hole in any resource's sequence
                    seqs = [e["sequence"] for e in events if e["resource_id"] == resource]
                    assert seqs == list(range(1, len(seqs) + 1)), (resource, seqs)
                wanted = {e["id"] for e in events}
                deadline = time.monotonic() + 60
                while True:
                    delivered = {r.json["id"] for r in rx.at("/hooks") if r.verified}
                    if wanted <= delivered or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert wanted <= delivered, sorted(wanted - delivered)
            finally:
                await stop_service(svc)
