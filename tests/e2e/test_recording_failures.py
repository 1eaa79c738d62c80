"""Recording failures are visible, never silent, against the real `onair serve`:

* the local media directory (a small tmpfs mounted at ``<data>/blobs``) fills
  up mid-broadcast and is freed: the asset is `ready` with a gap whose reason
  is ``storage``, and an ``asset.warning`` event names the segments lost;
* it is still full when the broadcast ends: the asset is `errored` with a
  reason, never `ready` without its ENDLIST;
* the S3 endpoint goes away mid-broadcast (its port refuses connections; a
  TCP relay in front of moto's server is stopped) for 14 s and comes back: the
  segments made meanwhile wait in the recorder's bounded queue and are stored
  when it is back, so the broadcast becomes one ready asset with nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._media import Publisher
from tests.e2e._service import Api, ServiceProcess, free_port, rtmp_url
from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of the filesystem holding `directory`."""
    filler = directory / "filler.bin"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    # small writes may still fit in the last block: take those too
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


async def events_of(api: Api, resource_id: str, type_: str) -> list[dict[str, Any]]:
    return [e for e in await api.events({resource_id}) if e["type"] == type_]


async def broadcast(
    api: Api, svc: ServiceProcess, tmp_path: Path, seconds: float
) -> tuple[dict[str, Any], Publisher, str]:
    ls = await api.live_stream(reconnect_window_s=1)
    pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), seconds, log=tmp_path / "ff.log")
    live = await api.wait_stream_status(ls["id"], "active", within=20)
    return ls, pub, str(live["active_asset_id"])


@pytest.fixture
async def local_svc(tmp_path: Path) -> AsyncIterator[tuple[ServiceProcess, Path]]:
    data = tmp_path / "data"
    with tmpfs(data / "blobs", "24m") as blobs:
        svc = ServiceProcess(data, {"ONAIR_RECORDING_FINAL_RETRY_S": "3"})
        await asyncio.to_thread(svc.start, 60)
        try:
            yield svc, blobs
        finally:
            if svc.proc is not None:
                await asyncio.to_thread(svc.stop, 15)


async def test_a_full_disk_mid_broadcast_is_a_storage_gap_and_a_warning(
    local_svc: tuple[ServiceProcess, Path], tmp_path: Path
) -> None:
    svc, blobs = local_svc
    api = Api(svc)
    ls, pub, asset_id = await broadcast(api, svc, tmp_path, 40)
    await asyncio.sleep(4)
    filler = await asyncio.to_thread(fill, blobs)
    warned: list[dict[str, Any]] = []
    for _ in range(300):  # the first lost segment is told within its retries (~8 s)
        warned = await events_of(api, asset_id, "asset.warning")
        if warned:
            break
        await asyncio.sleep(0.1)
    assert warned, "no asset.warning while the disk was full"
    await asyncio.to_thread(filler.unlink)
    await asyncio.sleep(6)  # recording resumes
    await api.ok("POST", f"/v1/live-streams/{ls['id']}/complete")
    await pub.stop()
    asset = await api.wait_asset(asset_id, within=60)
    reasons = [g["reason"] for g in asset["gaps"]]
    assert "storage" in reasons, asset["gaps"]
    warning = warned[0]["data"]["warnings"][-1]
    assert warning["type"] in ("segments_failed", "segments_dropped")
    assert warning["segments"] and "gap" in warning["message"]
    assert asset["warnings"] and asset["duration_s"] > 4


async def test_a_disk_still_full_at_the_end_leaves_the_asset_errored(
    local_svc: tuple[ServiceProcess, Path], tmp_path: Path
) -> None:
    svc, blobs = local_svc
    api = Api(svc)
    ls, pub, asset_id = await broadcast(api, svc, tmp_path, 30)
    await asyncio.sleep(3)
    filler = await asyncio.to_thread(fill, blobs)
    try:
        await api.ok("POST", f"/v1/live-streams/{ls['id']}/complete")
        await pub.stop()
        asset = await api.wait_asset(asset_id, "errored", within=60)
    finally:
        await asyncio.to_thread(filler.unlink)
    assert asset["error"]["type"] == "storage_failed"
    assert "finalized" in asset["error"]["message"]
    assert asset["status"] != "ready"


class Relay:
    """A TCP relay to `target` on a fixed port of 127.0.0.1 that can be stopped
    (its port refuses connections, open ones are cut) and started again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for w in list(self.open):
            w.transport.abort()
        self.open.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.open |= {writer, up_w}

        async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            with contextlib.suppress(Exception):
                w.close()

        await asyncio.gather(copy(reader, up_w), copy(up_r, writer))
        self.open -= {writer, up_w}


@pytest.mark.s3
async def test_the_s3_endpoint_going_away_and_back(tmp_path: Path) -> None:
    with S3Server() as s3:
        relay = Relay(s3.port)
        await relay.start()
        env = {
            "ONAIR_S3_ENDPOINT": f"http://127.0.0.1:{relay.port}",
            "ONAIR_S3_BUCKET": "onair-outage",
            "ONAIR_S3_REGION": REGION,
            "ONAIR_S3_ACCESS_KEY": ACCESS_KEY,
            "ONAIR_S3_SECRET_KEY": SECRET_KEY,
            "ONAIR_S3_CREATE_BUCKET": "true",
        }
        svc = ServiceProcess(tmp_path / "data", env)
        await asyncio.to_thread(svc.start, 60)
        try:
            api = Api(svc)
            ls, pub, asset_id = await broadcast(api, svc, tmp_path, 45)
            await asyncio.sleep(4)
            await relay.stop()
            await asyncio.sleep(14)  # longer than one segment's retries
            await relay.start()
            await asyncio.sleep(8)
            await api.ok("POST", f"/v1/live-streams/{ls['id']}/complete")
            await pub.stop()
            asset = await api.wait_asset(asset_id, within=90)
            # 4 s before, 14 s without storage, 8 s after: all of it is in the asset
            assert asset["duration_s"] >= 24, asset
            assert asset["gaps"] == [] and asset["warnings"] == []
            assert await events_of(api, asset_id, "asset.warning") == []
        finally:
            if svc.proc is not None:
                await asyncio.to_thread(svc.stop, 15)
            await relay.stop()
