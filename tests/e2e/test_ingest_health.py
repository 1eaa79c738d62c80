"""Ingest health against the real `onair serve` (issue 17, ingest health): a
publisher looping a clip with a known bitrate, 30 fps and a keyframe every 8 s
(`ffmpeg -re -c copy`); `GET /v1/live-streams/{id}/health` reports its bitrate,
frame rate and keyframe interval within 10 %, its codecs and no B-frames; the
stream gets the `keyframe_interval` warning (on the stream and as one
`live_stream.warning` event) saying what to change; when the broadcast ends
the warnings go and `ingest` is null."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._media import poll
from tests.e2e._service import Api, ServiceProcess, rtmp_url, start_service, stop_service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def clip(path: Path) -> tuple[Path, float]:
    """16 s of 640x360 30 fps, keyframes at 0 and 8 s (so also every 8 s when
    looped), ~800 kbit/s video and 64 kbit/s AAC; and its bitrate in kbit/s."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "16",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "240", "-keyint_min", "240",
         "-sc_threshold", "0", "-bf", "0", "-b:v", "800k", "-maxrate", "800k",
         "-bufsize", "800k", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", str(path)],
        check=True,
    )  # fmt: skip
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,bit_rate", "-of", "json",
         str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return path, sum(int(s["bit_rate"]) for s in json.loads(probe.stdout)["streams"]) / 1000


async def test_health_measures_the_publisher_and_warns_of_a_long_keyframe_interval(
    tmp_path: Path,
) -> None:
    source, kbps = await asyncio.to_thread(clip, tmp_path / "gop8.mp4")
    svc: ServiceProcess = await start_service(tmp_path)
    pub: asyncio.subprocess.Process | None = None
    try:
        api = Api(svc)
        ls = await api.live_stream(record=False, reconnect_window_s=1)
        pub = await asyncio.create_subprocess_exec(
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
            "-stream_loop", "-1", "-i", str(source), "-c", "copy", "-f", "flv",
            rtmp_url(svc, ls["stream_key"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await api.wait_stream_status(ls["id"], "active", within=20)
        path = f"/v1/live-streams/{ls['id']}/health"

        async def health() -> dict[str, Any]:
            return dict(await api.ok("GET", path))

        first = await poll(
            health,
            lambda h: bool(h["warnings"] and (h["ingest"] or {}).get("keyframe_interval_s")),
            within=40,
            what="a keyframe interval and a warning",
        )
        readings = [first["ingest"]]
        for _ in range(3):  # a few heartbeats more: the figures of the last 5 s each
            await asyncio.sleep(3.1)
            readings.append((await health())["ingest"])
        ingest = readings[-1]
        assert ingest["protocol"] == "rtmp" and ingest["node"]
        assert (ingest["video_codec"], ingest["audio_codec"]) == ("h264", "aac")
        assert (ingest["width"], ingest["height"], ingest["b_frames"]) == (640, 360, False)
        assert ingest["keyframe_interval_s"] == pytest.approx(8.0, rel=0.1)
        rate = statistics.median(r["frame_rate"] for r in readings)
        assert rate == pytest.approx(30.0, rel=0.1), readings
        bitrate = statistics.median(r["bitrate_kbps"] for r in readings)
        assert bitrate == pytest.approx(kbps, rel=0.1), (readings, kbps)

        (warning,) = first["warnings"]
        assert warning["type"] == "keyframe_interval" and "2 s" in warning["message"]
        stream = await api.ok("GET", f"/v1/live-streams/{ls['id']}")
        assert [w["type"] for w in stream["warnings"]] == ["keyframe_interval"]
        events = [e for e in await api.events({ls["id"]}) if e["type"] == "live_stream.warning"]
        assert len(events) == 1, "one event when the warning appears, not one a heartbeat"
        assert events[0]["data"]["warnings"][0]["type"] == "keyframe_interval"
        assert "stream_key" not in events[0]["data"]

        await api.ok("POST", f"/v1/live-streams/{ls['id']}/complete")
        await api.wait_stream_status(ls["id"], "idle", within=20)
        after = await health()
        assert after["ingest"] is None and after["warnings"] == []
        assert (await api.ok("GET", f"/v1/live-streams/{ls['id']}"))["warnings"] == []
        status, _ = await api.call("GET", "/v1/live-streams/ls_nope/health")
        assert status == 404
    finally:
        if pub is not None and pub.returncode is None:
            pub.kill()
            await pub.wait()
        await stop_service(svc)
