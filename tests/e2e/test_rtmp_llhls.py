"""Issue 3, RTMP in → LL-HLS out, against the real `onair serve` with Debian's
ffmpeg: the playlists parse and carry the LL-HLS tags, init and parts decode,
blocking reloads answer promptly, delta updates work, a plain HLS client plays,
bad publishers are refused without disturbing another stream, and a reconnect
inside the window keeps one playlist (with a discontinuity) while the webhooks
arrive in order."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import m3u8
import pytest

from tests.e2e._media import (
    Publisher,
    ffmpeg_decode,
    ffprobe,
    media_sequence,
    next_part,
    stop_popen,
    tag_attrs,
    tags,
)
from tests.e2e._service import Api, ServiceProcess, http_get, rtmp_url
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@dataclass
class Main:
    svc: ServiceProcess
    stream: dict[str, Any]
    publisher: subprocess.Popen[bytes]

    @property
    def pid(self) -> str:
        return str(self.stream["playback_ids"][0]["id"])

    @property
    def media_url(self) -> str:
        return f"{self.svc.url}/play/{self.pid}/media.m3u8"


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Main]:
    """One service and one long broadcast that the tests of this module watch."""
    base = tmp_path_factory.mktemp("rtmp_llhls")
    svc = ServiceProcess(base / "data", {"ONAIR_WEBHOOK_BACKOFF_BASE_S": "0.3"})
    svc.start(60)
    pub: subprocess.Popen[bytes] | None = None
    try:
        stream = asyncio.run(Api(svc).live_stream(reconnect_window_s=2))
        pub = Publisher.popen(rtmp_url(svc, stream["stream_key"]), 70, log=base / "main.log")
        yield Main(svc, stream, pub)
    finally:
        if pub is not None:
            stop_popen(pub)
        if svc.proc is not None:
            svc.stop(15)


async def live_playlist(m: Main, min_segments: int = 1, within: float = 30.0) -> str:
    """The main stream's media playlist once it lists ``min_segments`` full segments."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(m.media_url) as r:
                text = await r.text()
                if r.status == 200:
                    msn, _ = next_part(text)
                    if msn - media_sequence(text) >= min_segments or (
                        msn >= min_segments and tags(text, "#EXT-X-MEDIA-SEQUENCE")
                    ):
                        return text
            assert time.monotonic() < deadline, f"no playlist with {min_segments} segments"
            await asyncio.sleep(0.2)


async def test_playlists_parse_and_carry_the_ll_hls_tags(main: Main, tmp_path: Path) -> None:
    await live_playlist(main, 2)
    url = f"{main.svc.url}/play/{main.pid}.m3u8"
    status, body, headers = await http_get(url)
    assert status == 200
    assert headers.get("Access-Control-Allow-Origin") == "*"
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    mv = m3u8.loads(body.decode(), uri=url)
    assert mv.is_variant and len(mv.playlists) == 1
    info = mv.playlists[0].stream_info
    assert info.bandwidth and info.bandwidth > 0
    assert info.resolution == (640, 360)
    assert info.codecs and "avc1." in info.codecs and "mp4a.40.2" in info.codecs
    media_url = mv.playlists[0].absolute_uri

    status, body, headers = await http_get(media_url)
    assert status == 200 and headers.get("Access-Control-Allow-Origin") == "*"
    text = body.decode()
    pl = m3u8.loads(text, uri=media_url)
    assert pl.segment_map and pl.segment_map[0].uri
    assert pl.part_inf is not None and 0.1 <= pl.part_inf.part_target <= 0.5
    sc = pl.server_control
    assert sc is not None and sc.can_block_reload == "YES"
    assert sc.part_hold_back is not None and sc.part_hold_back >= 2 * pl.part_inf.part_target
    assert sc.can_skip_until is not None and sc.can_skip_until > 0
    assert pl.preload_hint is not None and pl.preload_hint.hint_type == "PART"
    assert tags(text, "#EXT-X-PROGRAM-DATE-TIME")
    assert pl.segments and pl.segments[0].current_program_date_time is not None
    parts = [p for s in pl.segments for p in s.parts]
    assert parts, text
    # every segment starts on a keyframe: its first part is INDEPENDENT=YES
    full = [s for s in pl.segments if s.uri and s.parts]
    assert full and all(s.parts[0].independent == "YES" for s in full)
    assert all(float(p.duration) <= pl.part_inf.part_target * 1.5 for p in parts)

    # init + a part, and init + a whole segment, decode with ffprobe
    init_status, init, _ = await http_get(pl.segment_map[0].absolute_uri)
    assert init_status == 200 and init[4:8] == b"ftyp"
    part = full[-1].parts[0]
    st, part_bytes, part_headers = await http_get(part.absolute_uri)
    assert st == 200 and b"moof" in part_bytes[:64]
    assert "immutable" in part_headers.get("Cache-Control", "")
    st, seg_bytes, _ = await http_get(full[-1].absolute_uri)
    assert st == 200
    (tmp_path / "part.mp4").write_bytes(init + part_bytes)
    (tmp_path / "seg.mp4").write_bytes(init + seg_bytes)
    for name in ("part.mp4", "seg.mp4"):
        probe = await ffprobe(tmp_path / name, "-count_frames")
        kinds = {s["codec_type"]: s for s in probe["streams"]}
        assert kinds["video"]["codec_name"] == "h264", probe
        assert kinds["audio"]["codec_name"] == "aac", probe
        assert int(kinds["video"]["nb_read_frames"]) >= 1
    probe = await ffprobe(tmp_path / "seg.mp4", "-count_frames")
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert 25 <= int(video["nb_read_frames"]) <= 70  # a GOP of 30 frames, ±


async def test_a_blocking_request_answers_within_300ms_of_the_part(main: Main) -> None:
    await live_playlist(main, 1)
    delays: list[float] = []
    async with aiohttp.ClientSession() as poller, aiohttp.ClientSession() as blocker:
        for _ in range(4):
            async with poller.get(main.media_url) as r:
                want = next_part(await r.text())
            appeared: list[float] = []

            async def watch(want: tuple[int, int] = want, appeared: list[float] = appeared) -> None:
                while True:
                    async with poller.get(main.media_url) as r:
                        text = await r.text()
                    if next_part(text) > want:
                        appeared.append(time.monotonic())
                        return
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch())
            msn, part = want
            t0 = time.monotonic()
            async with blocker.get(
                main.media_url, params={"_HLS_msn": msn, "_HLS_part": part}
            ) as r:
                assert r.status == 200
                text = await r.text()
            answered = time.monotonic()
            assert next_part(text) > want, (want, text[-400:])
            await asyncio.wait_for(watcher, 5)
            assert answered - t0 <= 1.5  # it blocked for a part, not for seconds
            delays.append(answered - appeared[0])
    print(f"blocking reload delays after the part appeared: {delays}")
    assert max(delays) <= 0.3, delays


async def test_the_preload_hint_blocks_until_its_part_exists(main: Main, tmp_path: Path) -> None:
    text = await live_playlist(main, 1)
    pl = m3u8.loads(text, uri=main.media_url)
    assert pl.preload_hint is not None
    hinted = pl.preload_hint.absolute_uri
    t0 = time.monotonic()
    status, part, _ = await http_get(hinted)
    waited = time.monotonic() - t0
    assert status == 200 and b"moof" in part[:64], (status, part[:200])
    assert waited <= 1.5, waited  # about one part (200 ms), not a timeout
    init_url = pl.segment_map[0].absolute_uri
    _, init, _ = await http_get(init_url)
    (tmp_path / "hinted.mp4").write_bytes(init + part)
    await ffprobe(tmp_path / "hinted.mp4")
    # the part it waited for is the one the next playlist lists under that name, or,
    # when a keyframe closed the segment first, the next segment's first part (the
    # hinted URI answers with it); either way the bytes are the listed part's
    name = hinted.rsplit("/", 1)[1]
    msn = int(name.split(".")[0])
    after = (await live_playlist(main, 1)).splitlines()
    parts = {
        ln.split('URI="', 1)[1].split('"', 1)[0] for ln in after if ln.startswith("#EXT-X-PART:")
    }
    listed = name if name in parts else f"{msn + 1}.0.m4s"
    assert listed in parts, (name, sorted(parts))
    _, again, _ = await http_get(hinted.rsplit("/", 1)[0] + "/" + listed)
    assert again == part, f"{name} answered other bytes than {listed}"


async def test_a_request_far_beyond_the_live_edge_is_400(main: Main) -> None:
    text = await live_playlist(main, 1)
    msn, _ = next_part(text)
    t0 = time.monotonic()
    status, body, _ = await http_get(f"{main.media_url}?_HLS_msn={msn + 20}&_HLS_part=0")
    assert status == 400, body
    assert time.monotonic() - t0 < 1.0  # refused at once, not after a wait
    status, body, _ = await http_get(f"{main.media_url}?_HLS_msn={msn + 20}")
    assert status == 400, body


async def test_skip_gives_a_delta_update(main: Main) -> None:
    text = await live_playlist(main, 1)
    sc = tag_attrs(tags(text, "#EXT-X-SERVER-CONTROL")[0])
    skip_until = float(sc["CAN-SKIP-UNTIL"])
    # wait until the playlist holds more than CAN-SKIP-UNTIL seconds of segments
    deadline = time.monotonic() + 30
    while True:
        text = await live_playlist(main, 1)
        listed = sum(float(ln.split(":")[1].rstrip(",")) for ln in tags(text, "#EXTINF"))
        if listed > skip_until + 2:
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.5)
    status, body, _ = await http_get(f"{main.media_url}?_HLS_skip=YES")
    assert status == 200
    delta = body.decode()
    (skip,) = tags(delta, "#EXT-X-SKIP")
    skipped = int(tag_attrs(skip)["SKIPPED-SEGMENTS"])
    assert skipped >= 1
    assert media_sequence(delta) == media_sequence(text)
    assert next_part(delta) >= next_part(text)
    pl = m3u8.loads(delta)
    assert pl.skip is not None and pl.skip.skipped_segments == skipped


async def test_a_plain_hls_client_plays_the_same_playlist(main: Main) -> None:
    await live_playlist(main, 2)
    err = await ffmpeg_decode(f"{main.svc.url}/play/{main.pid}.m3u8", "-t", "3", within=40)
    assert "Invalid data" not in err


async def _garbage_publisher(port: int) -> bool:
    """A valid C0/C1, then after S0/S1/S2 a C2 and random bytes; True if the server hung up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        c1 = bytes(8) + os.urandom(1528)
        writer.write(b"\x03" + c1)
        await writer.drain()
        s0s1s2 = await asyncio.wait_for(reader.readexactly(1 + 1536 + 1536), 10)
        assert s0s1s2[0] == 3
        writer.write(s0s1s2[1 : 1 + 1536])  # C2 echoes S1
        for _ in range(16):
            writer.write(os.urandom(4096))
            try:
                await writer.drain()
            except ConnectionError:
                return True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except ConnectionError:
                return True
            if not data:
                return True
        return False
    finally:
        writer.close()
        with_suppress = asyncio.gather(writer.wait_closed(), return_exceptions=True)
        await with_suppress


async def test_bad_publishers_are_refused_while_another_stream_plays(
    main: Main, tmp_path: Path
) -> None:
    api = Api(main.svc)
    before = next_part(await live_playlist(main, 1))
    disabled = await api.live_stream()
    await api.ok("POST", f"/v1/live-streams/{disabled['id']}/disable")

    wrong = await Publisher.start(rtmp_url(main.svc, "sk_not_a_key"), 5, log=tmp_path / "w.log")
    off = await Publisher.start(
        rtmp_url(main.svc, disabled["stream_key"]), 5, log=tmp_path / "d.log"
    )
    hung_up = await _garbage_publisher(main.svc.rtmp_port)
    try:
        assert await wrong.wait(within=15) != 0
        assert await off.wait(within=15) != 0
    finally:
        await wrong.stop()
        await off.stop()
    assert hung_up, "the server kept a connection that sent garbage"

    after_stream = await api.ok("GET", f"/v1/live-streams/{disabled['id']}")
    assert after_stream["status"] == "disabled" and after_stream["active_asset_id"] is None
    assert main.publisher.poll() is None, "the main publisher was disturbed"
    # the other stream kept advancing (the refusals can take less than one part)
    deadline = time.monotonic() + 5
    while (after := next_part(await live_playlist(main, 1))) <= before:
        assert time.monotonic() < deadline, (before, after)
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    assert next_part(await live_playlist(main, 1)) > after


async def test_reconnect_inside_the_window_keeps_one_playlist(main: Main, tmp_path: Path) -> None:
    svc = main.svc
    api = Api(svc)
    window = 3.0
    async with WebhookReceiver() as rx:
        endpoint = await api.ok("POST", "/v1/webhook-endpoints", {"url": rx.url("/hooks")})
        rx.set("/hooks", secret=endpoint["secret"])
        ls = await api.live_stream(reconnect_window_s=window)
        pid = ls["playback_ids"][0]["id"]
        url = rtmp_url(svc, ls["stream_key"])
        seen: list[tuple[float, int, str]] = []
        stop = asyncio.Event()

        async def viewer() -> None:
            async with aiohttp.ClientSession() as s:
                while not stop.is_set():
                    async with s.get(f"{svc.url}/play/{pid}/media.m3u8") as r:
                        seen.append((time.monotonic(), r.status, await r.text()))
                    await asyncio.sleep(0.1)

        first = await Publisher.start(url, 4, log=tmp_path / "ff1.log")
        live = await api.wait_stream_status(ls["id"], "active", within=20)
        await live_ready(svc, pid)
        watching = asyncio.create_task(viewer())
        try:
            assert await first.wait() == 0
            await asyncio.sleep(1.0)
            second = await Publisher.start(url, 4, log=tmp_path / "ff2.log")
            assert await second.wait() == 0
            ended = time.monotonic()
            await api.wait_stream_status(ls["id"], "idle", within=window + 10)
            idle_after = time.monotonic() - ended
        finally:
            stop.set()
            await watching

        assert window - 0.5 <= idle_after <= window + 3.0, idle_after
        statuses = [s for _, s, _ in seen]
        assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
        with_disc = [t for _, _, t in seen if tags(t, "#EXT-X-DISCONTINUITY")]
        assert with_disc, "no playlist showed the reconnect as a discontinuity"
        assert all(len(tags(t, "#EXT-X-DISCONTINUITY")) == 1 for t in with_disc)
        sequences = [media_sequence(t) for _, _, t in seen]
        assert sequences == sorted(sequences), "the media sequence went backwards"
        edges = [next_part(t)[0] for _, _, t in seen]
        assert edges == sorted(edges), "the live edge went backwards"
        # the reconnect continues the numbering: segments after the break follow on
        last = with_disc[-1].splitlines()
        disc_at = last.index("#EXT-X-DISCONTINUITY")
        before_uris = [ln for ln in last[:disc_at] if ln and not ln.startswith("#")]
        after_uris = [ln for ln in last[disc_at:] if ln and not ln.startswith("#")]
        assert before_uris and after_uris

        asset_id = live["active_asset_id"]
        await api.wait_asset(asset_id, within=20)
        mine = await _wait_hooks(rx, {ls["id"], asset_id}, "asset.ready")
        assert all(r.verified for r in rx.at("/hooks"))
        life = [p["type"] for p in mine if p["data"].get("id") == ls["id"]]
        life = [t for t in life if t != "live_stream.created"]
        assert life == [
            "live_stream.connected",
            "live_stream.active",
            "live_stream.disconnected",
            "live_stream.connected",
            "live_stream.disconnected",
            "live_stream.idle",
        ], life
        ends = [p["type"] for p in mine if p["data"].get("id") == asset_id]
        assert ends[-2:] == ["asset.live_stream_completed", "asset.ready"], ends
        seqs = [p["sequence"] for p in mine if p["data"].get("id") == ls["id"]]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def live_ready(svc: ServiceProcess, pid: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        status, _, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
        if status == 200:
            return
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)


async def _wait_hooks(rx: WebhookReceiver, ids: set[str], last_type: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        mine = [r.json for r in rx.at("/hooks") if r.json["data"].get("id") in ids]
        mine.sort(key=lambda p: (p["created_at"], p["sequence"]))
        if any(p["type"] == last_type for p in mine):
            # de-duplicate retries (at-least-once) by event id
            unique: dict[str, dict[str, Any]] = {}
            for p in mine:
                unique.setdefault(p["id"], p)
            return list(unique.values())
        assert time.monotonic() < deadline, [p["type"] for p in mine]
        await asyncio.sleep(0.1)
