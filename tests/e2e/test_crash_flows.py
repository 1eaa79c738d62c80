"""SIGKILL at each step of the multi-step flows leaves nothing stuck once the
node is back and the reconciler has run (against the real `onair serve`).

``ONAIR_FAULT_POINT`` arms one step (`control.faults`): the process kills itself
there. It is then started again on the same data, without the fault, with a
reconciler that treats anything unmoved for a second as stuck:

* an upload killed after its body arrived but before the asset existed is
  ``errored`` (interrupted), with no asset left ``preparing``;
* an upload or a clip killed right after its commit becomes a ready asset;
* a broadcast killed after its recording was finalised but before its asset was
  marked ready, and one killed right after, both end as a ready asset whose MP4
  downloads.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e._media import Publisher, make_file
from tests.e2e._service import Api, ServiceProcess, http_get, rtmp_url

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

RECONCILE = {"ONAIR_RECONCILE_AFTER_S": "1", "ONAIR_RECONCILE_EVERY_S": "0.5"}


async def start(svc: ServiceProcess) -> None:
    await asyncio.to_thread(svc.start, 60)


async def died(svc: ServiceProcess, within: float = 30) -> None:
    """The armed process killed itself (SIGKILL: no cleanup)."""
    assert svc.proc is not None
    code = await asyncio.to_thread(svc.proc.wait, within)
    assert code == -9, f"exit {code}, not SIGKILL"
    svc.reap(svc.proc)
    svc.proc = None


async def restart_unarmed(svc: ServiceProcess) -> Api:
    svc.extra_env.pop("ONAIR_FAULT_POINT", None)
    await start(svc)
    return Api(svc)


async def clip_source(tmp_path: Path) -> Path:
    return await make_file(
        tmp_path / "in.mp4",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100",
        "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
    )  # fmt: skip


async def put_file(url: str, path: Path) -> int | None:
    """PUT the file; None when the server died before answering."""
    body = await asyncio.to_thread(path.read_bytes)
    try:
        async with aiohttp.ClientSession() as s, s.put(url, data=body) as r:
            return r.status
    except aiohttp.ClientError:
        return None


async def wait_for(check: Any, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, "nothing changed in time"
        await asyncio.sleep(0.2)


async def nothing_preparing(api: Api) -> None:
    page = await api.ok("GET", "/v1/assets?limit=100")
    stuck = [a["id"] for a in page["data"] if a["status"] == "preparing"]
    assert not stuck, f"assets left preparing: {stuck}"


async def test_an_upload_killed_before_its_asset_is_errored_not_stuck(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "data", {**RECONCILE, "ONAIR_FAULT_POINT": "upload.received"})
    await start(svc)
    try:
        api = Api(svc)
        up = await api.ok("POST", "/v1/uploads", {})
        assert await put_file(up["url"], await clip_source(tmp_path)) is None
        await died(svc)
        api = await restart_unarmed(svc)

        async def errored() -> Any:
            got = await api.ok("GET", f"/v1/uploads/{up['id']}")
            return got if got["status"] == "errored" else None

        upload = await wait_for(errored)
        assert upload["error"]["type"] == "interrupted" and upload["error"]["message"]
        await nothing_preparing(api)
    finally:
        if svc.proc is not None:
            await asyncio.to_thread(svc.stop, 15)


@pytest.mark.parametrize("point", ["upload.committed", "clip.committed"])
async def test_a_flow_killed_after_its_commit_finishes(tmp_path: Path, point: str) -> None:
    svc = ServiceProcess(tmp_path / "data", dict(RECONCILE))
    await start(svc)
    try:
        api = Api(svc)
        src = await clip_source(tmp_path)
        if point == "clip.committed":
            up = await api.ok("POST", "/v1/uploads", {})
            assert await put_file(up["url"], src) == 200
            upload = await api.ok("GET", f"/v1/uploads/{up['id']}")
            source = await api.wait_asset(upload["asset_id"], within=60)
        # arm the step and run the flow
        await asyncio.to_thread(svc.stop, 15)
        svc.extra_env["ONAIR_FAULT_POINT"] = point
        await start(svc)
        api = Api(svc)
        if point == "upload.committed":
            up = await api.ok("POST", "/v1/uploads", {})
            assert await put_file(up["url"], src) is None
        else:
            clip = {"input": {"asset_id": source["id"], "start_s": 0, "end_s": 2}}
            with pytest.raises(aiohttp.ClientError):  # it died before answering
                await api.call("POST", "/v1/assets", clip)
        await died(svc)
        api = await restart_unarmed(svc)

        async def all_ready() -> bool:
            page = await api.ok("GET", "/v1/assets?limit=100")
            return bool(page["data"]) and all(a["status"] == "ready" for a in page["data"])

        await wait_for(all_ready)
        page = await api.ok("GET", "/v1/assets?limit=100")
        kinds = {a["source"] for a in page["data"]}
        assert ("clip" if point == "clip.committed" else "upload") in kinds
    finally:
        if svc.proc is not None:
            await asyncio.to_thread(svc.stop, 15)


@pytest.mark.parametrize("point", ["finish.finalized", "finish.committed"])
async def test_a_broadcast_killed_at_its_end_becomes_a_ready_asset(
    tmp_path: Path, point: str
) -> None:
    svc = ServiceProcess(tmp_path / "data", {**RECONCILE, "ONAIR_FAULT_POINT": point})
    await start(svc)
    try:
        api = Api(svc)
        ls = await api.live_stream(reconnect_window_s=1)
        pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 4, log=tmp_path / "ff.log")
        live = await api.wait_stream_status(ls["id"], "active", within=20)
        asset_id = live["active_asset_id"]
        await pub.wait()
        await died(svc)  # the window closed, the broadcast's end began, and the node died
        api = await restart_unarmed(svc)
        asset = await api.wait_asset(asset_id, within=90)
        assert asset["duration_s"] > 2
        pid = asset["playback_ids"][0]["id"]

        async def downloadable() -> bool:
            status, _, _ = await http_get(f"{svc.url}/play/{pid}/download.mp4")
            return status == 200

        await wait_for(downloadable, within=90)
        stream = await api.ok("GET", f"/v1/live-streams/{ls['id']}")
        assert stream["active_asset_id"] is None and asset_id in stream["recent_asset_ids"]
        await nothing_preparing(api)
    finally:
        if svc.proc is not None:
            await asyncio.to_thread(svc.stop, 15)
