"""`onair drain` against the real `onair serve`: within a heartbeat the node
reports draining (readiness 503, `GET /v1/nodes`), refuses a new publisher
while the live one goes on, and exits by itself once that one has left — and
the CLI says so."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e._media import Publisher
from tests.e2e._service import Api, rtmp_url, start_service, stop_service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_a_drained_node_takes_no_new_publisher_and_leaves_once_empty(
    tmp_path: Path,
) -> None:
    svc = await start_service(tmp_path)
    try:
        api = Api(svc)
        live, late = await api.live_stream(), await api.live_stream()
        pub = await Publisher.start(rtmp_url(svc, live["stream_key"]), 60, log=tmp_path / "a.log")
        await api.wait_stream_status(live["id"], "active", within=30)
        drain = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "control.cli",
            "drain",
            "--timeout",
            "60",
            env=svc._env(),
            cwd=str(svc.data_dir.parent),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while True:
            status, health = await api.call("GET", "/v1/health")
            if status == 503 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert status == 503 and health["status"] == "draining"
        (node,) = (await api.ok("GET", "/v1/nodes"))["data"]
        assert node["draining"] is True and node["load"]["streams"] == 1

        refused = await Publisher.start(
            rtmp_url(svc, late["stream_key"]), 5, log=tmp_path / "b.log"
        )
        assert await refused.wait(within=30) != 0
        assert (await api.ok("GET", f"/v1/live-streams/{late['id']}"))["status"] == "idle"
        assert pub.running and svc.proc is not None and svc.proc.poll() is None

        await pub.stop()  # the last publisher leaves: the node exits by itself
        assert svc.proc is not None
        assert await asyncio.to_thread(svc.proc.wait, 60) == 0
        out, err = await asyncio.wait_for(drain.communicate(), 60)
        assert drain.returncode == 0, err.decode()
        assert b"drained and left" in out
    finally:
        await stop_service(svc)
