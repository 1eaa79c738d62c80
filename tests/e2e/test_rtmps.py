"""RTMPS against the real `onair serve`: with ONAIR_RTMPS_PORT and a certificate
(made here), Debian's ffmpeg publishes over `rtmps://`, the stream goes live and
its LL-HLS playlist fills; live streams report `ingest.rtmps_url`; plain RTMP on
the RTMPS port, or a TLS handshake that never comes, is dropped without
touching the broadcast."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e._media import Publisher, media_sequence
from tests.e2e._service import Api, ServiceProcess, free_port, http_get
from tests.e2e._tls import self_signed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_ffmpeg_publishes_over_rtmps(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    svc = ServiceProcess(
        tmp_path / "data",
        {
            "ONAIR_RTMPS_PORT": str(port),
            "ONAIR_TLS_CERT_FILE": str(cert),
            "ONAIR_TLS_KEY_FILE": str(key),
        },
    )
    await asyncio.to_thread(svc.start, 60)
    try:
        assert f"rtmps://127.0.0.1:{port}/live" in svc.stdout_path.read_text()
        api = Api(svc)
        ls = await api.live_stream(record=False)
        assert ls["ingest"]["rtmps_url"] == f"rtmps://127.0.0.1:{port}/live"
        # plain RTMP bytes and a silent socket on the TLS port hurt nothing
        _, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"\x03" + bytes(1536))
        _, w2 = await asyncio.open_connection("127.0.0.1", port)
        pub = await Publisher.start(
            f"rtmps://127.0.0.1:{port}/live/{ls['stream_key']}", 8, log=tmp_path / "ff.log"
        )
        await api.wait_stream_status(ls["id"], "active", within=30)
        pid = ls["playback_ids"][0]["id"]
        for _ in range(100):
            status, body, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
            if status == 200 and "#EXTINF" in body.decode():
                break
            await asyncio.sleep(0.1)
        assert status == 200 and media_sequence(body.decode()) >= 0 and "#EXTINF" in body.decode()
        assert await pub.wait(within=30) == 0, (tmp_path / "ff.log").read_text()
        w1.close()
        w2.close()
    finally:
        if svc.proc is not None:
            await asyncio.to_thread(svc.stop, 15)
