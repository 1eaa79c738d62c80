"""Live LL-HLS from the real `onair serve` against RFC 8216bis's MUSTs
(tests/support/hls_rules.py), in both latency modes and with keyframes every
1, 2 and 4 seconds: every playlist a player can get (plain reloads, blocking
reloads for the next part, delta updates) conforms, every reload only appends
and drops from the front, every hinted part comes to exist, and the
multivariant playlist names its variant properly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from realtime.segments import FIRST_MSN
from tests.e2e._media import Publisher, next_part
from tests.e2e._service import Api, ServiceProcess, start_service, stop_service
from tests.support.hls_rules import check_media, check_multivariant, check_reload, parse_media

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CASES = [(mode, keyint) for mode in ("low", "standard") for keyint in (1, 2, 4)]
WATCH_S = 14.0


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, await r.text()


async def watch(svc: ServiceProcess, playback_id: str, label: str) -> list[str]:
    """Every violation a player watching for WATCH_S seconds would meet."""
    base = f"{svc.url}/play/{playback_id}"
    found: list[str] = []
    async with aiohttp.ClientSession() as http:
        text = ""
        deadline = time.monotonic() + 30
        while "#EXTINF" not in text:
            assert time.monotonic() < deadline, f"{label}: no segment in 30 s"
            _, text = await get(http, f"{base}/media.m3u8")
            await asyncio.sleep(0.2)
        status, multivariant = await get(http, f"{base}.m3u8")
        if "#EXT-X-STREAM-INF" in multivariant:
            found += check_multivariant(multivariant)
        end = time.monotonic() + WATCH_S
        checked_hints = 0
        while time.monotonic() < end:
            found += check_media(text, FIRST_MSN)
            msn, part = next_part(text)
            hint = next((h for h in parse_media(text).hints if h.get("TYPE") == "PART"), None)
            if hint is not None and checked_hints < 5:
                # a hinted part must come to exist (a blocking GET answers once it does)
                async with http.get(f"{base}/{hint['URI']}") as r:
                    if r.status != 200:
                        found.append(f"4.4.5.3: hinted part {hint['URI']} answered {r.status}")
                    await r.read()
                checked_hints += 1
            status, later = await get(http, f"{base}/media.m3u8?_HLS_msn={msn}&_HLS_part={part}")
            if status != 200:
                found.append(f"blocking reload for {msn}.{part} answered {status}")
                break
            found += check_reload(text, later)
            seen = parse_media(later)
            listed = {(s.msn, i) for s in seen.segments for i in range(len(s.parts))}
            last = seen.segments[-1].msn + 1 if seen.segments else msn
            listed |= {(last, i) for i in range(len(seen.trailing_parts))}
            # "Partial Segment N of Media Segment M or later": a keyframe may
            # close segment M first, then the next segment's first part answers
            if (msn, part) not in listed and not any(m > msn for m, _ in listed):
                found.append(f"6.2.5.2: blocking reload for {msn}.{part} came back without it")
            text = later
            if "CAN-SKIP-UNTIL" in text:
                status, delta = await get(http, f"{base}/media.m3u8?_HLS_skip=YES")
                found += [f"delta update: {v}" for v in check_media(delta, FIRST_MSN)]
    return [f"{label}: {v}" for v in dict.fromkeys(found)]


@pytest.fixture
async def svc(tmp_path: Path) -> Any:
    s = await start_service(tmp_path)
    yield s
    await stop_service(s)


async def test_live_playlists_keep_every_must_of_rfc_8216bis(svc: ServiceProcess) -> None:
    api = Api(svc)
    streams = [
        await api.live_stream(record=False, latency_mode=mode, reconnect_window_s=1)
        for mode, _ in CASES
    ]
    publishers = [
        await Publisher.start(
            f"rtmp://127.0.0.1:{svc.rtmp_port}/live/{ls['stream_key']}",
            WATCH_S + 20,
            size="320x180",
            keyint_s=k,
        )
        for ls, (_, k) in zip(streams, CASES, strict=True)
    ]
    try:
        results = await asyncio.gather(
            *(
                watch(svc, ls["playback_ids"][0]["id"], f"{mode}/{k}s keyframes")
                for ls, (mode, k) in zip(streams, CASES, strict=True)
            )
        )
    finally:
        for p in publishers:
            await p.stop()
    violations = [v for r in results for v in r]
    assert not violations, "\n".join(violations)
