"""Issue 4, live-to-VOD with the S3 BlobStore: `onair serve` configured with
ONAIR_S3_* against a real S3 endpoint (moto's standalone server over HTTP):
the broadcast's segments land in the bucket, the asset becomes ready, its VOD
plays, the MP4 download plays with both tracks, and a thumbnail is a JPEG."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import m3u8
import pytest

from tests.e2e._media import Publisher, ffmpeg_decode, ffprobe
from tests.e2e._service import Api, ServiceProcess, http_get, rtmp_url
from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = [pytest.mark.e2e, pytest.mark.s3, pytest.mark.timeout(150)]

BUCKET = "onair-e2e"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[ServiceProcess]:
    env = {
        "ONAIR_S3_ENDPOINT": s3.endpoint_url,
        "ONAIR_S3_BUCKET": BUCKET,
        "ONAIR_S3_REGION": REGION,
        "ONAIR_S3_ACCESS_KEY": ACCESS_KEY,
        "ONAIR_S3_SECRET_KEY": SECRET_KEY,
        "ONAIR_S3_CREATE_BUCKET": "true",
    }
    s = ServiceProcess(tmp_path_factory.mktemp("s3") / "data", env)
    s.start(60)
    try:
        yield s
    finally:
        if s.proc is not None:
            s.stop(15)


def bucket_keys(s3: S3Server) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


async def test_live_to_vod_on_s3(svc: ServiceProcess, s3: S3Server, tmp_path: Path) -> None:
    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=2)
    pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 6, log=tmp_path / "ff.log")
    live = await api.wait_stream_status(ls["id"], "active", within=20)
    asset_id = live["active_asset_id"]
    assert await pub.wait() == 0
    stopped = time.monotonic()
    asset = await api.wait_asset(asset_id, within=30)
    assert time.monotonic() - stopped <= 2.0 + 2.0 + 1.0  # window + 2 s, + S3 slack
    assert abs(asset["duration_s"] - 6.0) <= 1.1, asset

    keys = bucket_keys(s3)
    mine = [k for k in keys if asset_id in k]
    assert any(k.endswith(".m4s") for k in mine), keys
    assert any(k.endswith(".mp4") for k in mine), keys
    assert not list((svc.data_dir).rglob("*.m4s")), "media went to local disk, not S3"

    pid = asset["playback_ids"][0]["id"]
    status, body, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
    assert status == 200
    pl = m3u8.loads(body.decode())
    assert pl.is_endlist and pl.segment_map
    await ffmpeg_decode(f"{svc.url}/play/{pid}.m3u8")

    status, jpeg, _ = await http_get(f"{svc.url}/thumb/{pid}.jpg?time=2")
    assert status == 200 and jpeg[:3] == b"\xff\xd8\xff"

    await api.wait_asset(asset_id, "ready", field="mp4_status", within=60)
    assert any(k.endswith("download.mp4") for k in bucket_keys(s3) if asset_id in k)
    status, mp4, _ = await http_get(f"{svc.url}/play/{pid}/download.mp4", within=30)
    assert status == 200
    (tmp_path / "d.mp4").write_bytes(mp4)
    probe = await ffprobe(tmp_path / "d.mp4")
    assert sorted(s["codec_type"] for s in probe["streams"]) == ["audio", "video"]
    assert abs(float(probe["format"]["duration"]) - 6.0) <= 1.1
