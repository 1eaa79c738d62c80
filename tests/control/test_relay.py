"""Live LL-HLS from any node: node B answers the playback URLs of a stream node
A ingests by relaying them from A — the same bytes, blocking requests held on
B, one upstream request per URL however many viewers wait (two media nodes on
one Redis, each with its own connections)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control.http.app import NODE
from control.live import origin_key
from control.node import Media
from control.relay import LiveRelay
from control.settings import load_settings
from control.store.redis import RedisStore
from ingest.hub import Publication
from tests.control.test_edge import Service, served_by_edge, service

pytestmark = pytest.mark.redis

HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s"')


@pytest.fixture
async def nodes(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[Service, Service]]:
    async with two_nodes(tmp_path, redis_url) as pair:
        yield pair


@contextlib.asynccontextmanager
async def two_nodes(
    tmp_path: Path, redis_url: str, **more: Any
) -> AsyncIterator[tuple[Service, Service]]:
    prefix = f"relay{uuid.uuid4().hex[:8]}:"
    stores = [RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)]
    for store in stores:
        await store.open()
    try:
        settings = [
            load_settings(
                {},
                data_dir=str(tmp_path / name),
                rtmp_port=0,
                srt_port=0,
                host="127.0.0.1",
                node_id=name,
                redis_url=redis_url,
                **more,
            )
            for name in ("node-a", "node-b")
        ]
        async with service(settings[0], stores[0]) as a:
            # B says where it is only after it listens: set its URL from its port
            async with service(settings[1], stores[1]) as b:
                yield a, b
    finally:
        for store in stores:
            await store.close()


def relay_of(svc: Service) -> LiveRelay:
    media = svc.app[NODE].media
    assert media is not None
    return media.relay


async def point_registry_at(a: Service) -> None:
    """The registry records a node's configured URL; the test nodes listen on
    ports chosen at start, so A's record is pointed at the port it got."""
    registry = a.app[NODE].registry
    registry.url = registry.public_url = a.base
    await registry.beat()


async def test_another_node_relays_a_live_stream_with_one_upstream_request_per_url(
    nodes: tuple[Service, Service],
) -> None:
    a, b = nodes
    await point_registry_at(a)
    stream_id, pid = await a.live()
    store = a.app[NODE].store
    for _ in range(100):
        if await store.kv_get(origin_key(stream_id)) == "node-a":
            break
        await asyncio.sleep(0.05)
    assert await store.kv_get(origin_key(stream_id)) == "node-a"
    assert b.app[NODE].media is not None and b.app[NODE].media.hls.get(stream_id) is None

    status, _, body = await b.get(f"/play/{pid}.m3u8")
    assert status == 200 and f"{pid}/media.m3u8".encode() in body
    status, _, body = await b.get(f"/play/{pid}/media.m3u8")
    assert status == 200 and b"#EXT-X-PART" in body
    hint = HINT.search(body.decode())
    assert hint is not None
    msn, part = hint.groups()
    path = f"/play/{pid}/media.m3u8?_HLS_msn={msn}&_HLS_part={part}"

    # twenty viewers on B wait for the next part: one request goes to A, and
    # B's playback edge holds them and writes the answer (not aiohttp)
    answers = await asyncio.gather(*(b.get(path) for _ in range(20)))
    assert {status for status, _, _ in answers} == {200}
    assert len({body for _, _, body in answers}) == 1
    assert relay_of(b).upstream_requests[path] == 1
    assert f"{msn}.{part}.m4s".encode() in answers[0][2]
    assert all(served_by_edge(headers) for _, headers, _ in answers)
    request_ids = {v for _, h, _ in answers for k, v in h.items() if k.lower() == "x-request-id"}
    assert len(request_ids) == 20
    assert answers[0][1]["Content-Type"] == "application/vnd.apple.mpegurl"

    # the part: the same bytes A serves, fetched from A once
    part_path = f"/play/{pid}/{msn}.{part}.m4s"
    from_b = await asyncio.gather(*(b.get(part_path) for _ in range(10)))
    status, _headers, from_a = await a.get(part_path)
    assert status == 200 and {body for _, _, body in from_b} == {from_a}
    assert relay_of(b).upstream_requests[part_path] == 1
    assert "immutable" in from_b[0][1]["Cache-Control"]
    assert all(served_by_edge(headers) for _, headers, _ in from_b)


async def test_the_origin_never_relays_an_edge_s_request_further(
    nodes: tuple[Service, Service],
) -> None:
    """A node asked by an edge for a stream it does not hold answers 404 (the
    edge then looks the origin up again), however the store points."""
    from realtime.hls.edge import RELAY_HEADER

    a, b = nodes
    await point_registry_at(a)
    _stream_id, pid = await a.live()
    status, _, _ = await b.get(f"/play/{pid}/media.m3u8")
    assert status == 200
    status, _, _ = await b.get(f"/play/{pid}/media.m3u8", headers={RELAY_HEADER: "node-c"})
    assert status == 404


async def test_a_stream_live_nowhere_is_not_relayed(nodes: tuple[Service, Service]) -> None:
    a, b = nodes
    ls = await a.api("POST", "/v1/live-streams", {"record": False})
    pid = ls["playback_ids"][0]["id"]
    status, _, _ = await b.get(f"/play/{pid}/media.m3u8")
    assert status == 404
    assert relay_of(b).upstream_requests == {}


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.webrtc._media import make_h264_aac_file

    return str(make_h264_aac_file(str(tmp_path_factory.mktemp("media") / "src.mp4")))


@pytest.mark.e2e
async def test_whep_on_another_node_is_sent_to_the_origin_and_plays(
    nodes: tuple[Service, Service], h264_file: str
) -> None:
    import contextlib

    import av

    from ingest.webrtc.config import WebRtcConfig
    from tests.support.webrtc_client import delete_session, whep_play
    from tests.webrtc._media import feed_file

    a, b = nodes
    await point_registry_at(a)
    ls = await a.api("POST", "/v1/live-streams", {"record": False})
    pid = ls["playback_ids"][0]["id"]
    media_a, media_b = a.app[NODE].media, b.app[NODE].media
    assert media_a is not None and media_b is not None
    feeder = asyncio.ensure_future(feed_file(media_a.hub, ls["id"], h264_file))
    try:
        await asyncio.sleep(1.5)
        pc, location = await whep_play(f"{b.base}/v1/whep/{pid}", WebRtcConfig.loopback())
        try:
            assert location.startswith(a.base)  # the session is where the media is
            video = next(t.receiver.track for t in pc.getTransceivers() if t.kind == "video")
            frames = [await asyncio.wait_for(video.recv(), 15) for _ in range(10)]
            assert all(isinstance(f, av.VideoFrame) for f in frames)
            assert len(media_a.webrtc.whep.sessions) == 1 and not media_b.webrtc.whep.sessions
        finally:
            assert await delete_session(location) == 200
            await pc.close()
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder


async def test_a_node_taking_a_stream_over_continues_its_playlist(
    nodes: tuple[Service, Service],
) -> None:
    import time

    from tests.realtime.media import feed_realtime, synthetic_tracks, synthetic_units

    a, b = nodes
    ls = await a.api("POST", "/v1/live-streams", {"record": False})
    media_a, media_b = a.app[NODE].media, b.app[NODE].media
    assert media_a is not None and media_b is not None

    async def publish(media: Media, seconds: float) -> tuple[Publication, asyncio.Task[None]]:
        await media.lifecycle.authorize_publish(
            ls["stream_key"], protocol="test", remote="127.0.0.1"
        )
        pub = media.hub.publish(ls["id"], synthetic_tracks(), source="test")
        units = synthetic_units(seconds, wallclock0=time.time())
        return pub, asyncio.create_task(feed_realtime(pub, units))

    pub_a, feeding = await publish(media_a, 3.5)
    await feeding
    live_a = media_a.hls.get(ls["id"])
    assert live_a is not None
    pub_a.close("disconnected")  # the encoder lost A
    await asyncio.sleep(0.5)  # A flushes its last segment and saves its position
    last_a = live_a.last_complete_msn
    assert last_a >= 2

    pub_b, feeding = await publish(media_b, 3.5)
    await feeding
    live_b = media_b.hls.get(ls["id"])
    assert live_b is not None and live_b.has_media
    text = live_b.media_playlist()
    assert live_b.first_msn == last_a + 1, text  # no going back to 0
    assert f"#EXT-X-MEDIA-SEQUENCE:{last_a + 1}\n" in text
    assert text.index("#EXT-X-DISCONTINUITY\n") < text.index("#EXTINF")
    pub_b.close("disconnected")


@pytest.mark.s3
async def test_a_node_taking_a_recorded_stream_over_serves_the_earlier_segments(
    tmp_path: Path, redis_url: str
) -> None:
    """A player still holding the old origin's playlist fetches its segments from
    the node that took the stream over: read back from the recording (S3)."""
    import time

    from tests.realtime.media import feed_realtime, synthetic_tracks, synthetic_units
    from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

    with S3Server() as s3:
        async with two_nodes(
            tmp_path,
            redis_url,
            s3_endpoint=s3.endpoint_url,
            s3_bucket=f"relay-{uuid.uuid4().hex[:8]}",
            s3_region=REGION,
            s3_access_key=ACCESS_KEY,
            s3_secret_key=SECRET_KEY,
            s3_create_bucket=True,
        ) as (a, b):
            ls = await a.api("POST", "/v1/live-streams", {"record": True})
            pid = ls["playback_ids"][0]["id"]
            media_a, media_b = a.app[NODE].media, b.app[NODE].media
            assert media_a is not None and media_b is not None

            async def publish(media: Media) -> Publication:
                await media.lifecycle.authorize_publish(
                    ls["stream_key"], protocol="test", remote="127.0.0.1"
                )
                pub = media.hub.publish(ls["id"], synthetic_tracks(), source="test")
                await feed_realtime(pub, synthetic_units(3.5, wallclock0=time.time()))
                return pub

            pub_a = await publish(media_a)
            live_a = media_a.hls.get(ls["id"])
            assert live_a is not None
            pub_a.close("disconnected")  # the encoder lost A
            await asyncio.sleep(1.0)  # A stores its last segment and position
            old = {
                msn: (await a.get(f"/play/{pid}/{msn}.m4s"))[2]
                for msn in range(live_a.first_msn, live_a.last_complete_msn + 1)
            }
            assert len(old) >= 2

            pub_b = await publish(media_b)
            live_b = media_b.hls.get(ls["id"])
            assert live_b is not None and live_b.first_msn == max(old) + 1
            for msn, data in old.items():
                status, _, body = await b.get(f"/play/{pid}/{msn}.m4s")
                assert status == 200 and body == data, msn
            assert f"#EXT-X-MEDIA-SEQUENCE:{max(old) + 1}\n" in live_b.media_playlist()
            status, _, _ = await b.get(f"/play/{pid}/{max(old) + 100}.m4s")
            assert status == 404
            pub_b.close("disconnected")


async def test_a_grant_revoked_on_another_node_stops_edge_playback_at_once(
    nodes: tuple[Service, Service],
) -> None:
    """Node B serves a live stream through its edge (the grant cached for
    EDGE_CACHE_S); the stream is deleted through node A: B stops at once."""
    import time

    from control.playback import EDGE_CACHE_S

    a, b = nodes
    stream_id, pid = await b.live()
    status, headers, _ = await b.get(f"/play/{pid}/media.m3u8")
    assert status == 200 and served_by_edge(headers)  # the grant is cached now
    await a.api("DELETE", f"/v1/live-streams/{stream_id}")
    t0 = time.monotonic()
    while True:
        status, _, _ = await b.get(f"/play/{pid}/media.m3u8")
        if status == 404 or time.monotonic() - t0 > EDGE_CACHE_S:
            break
        await asyncio.sleep(0.02)
    assert status == 404 and time.monotonic() - t0 < 0.5
