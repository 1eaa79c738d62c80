"""SrtServer end to end with real callers on loopback: Debian's ffmpeg and
srt-live-transmit publish MPEG-TS over libsrt; the hub gets the media; a bad
caller is refused at the handshake, before any media, without touching others."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.hub import Hub, MediaUnit, PublicationEnded, PublicationStarted, TrackKind
from ingest.ports import PublishDenied, PublishGrant
from ingest.srt import libsrt
from ingest.srt.server import SrtLimits, SrtServer
from tests.e2e._media import poll

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian ffmpeg is not installed"),
    pytest.mark.skipif(not libsrt.available(), reason="libsrt is not installed"),
]

KEYS = {"sk_a": "ls_a", "sk_b": "ls_b"}
PASSPHRASE = "correct-horse-battery"


class FakeAuthority:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        self.calls.append((stream_key, protocol))
        if stream_key == "sk_disabled":
            raise PublishDenied("disabled", "live stream is disabled")
        if stream_key not in KEYS:
            raise PublishDenied("bad_key", "unknown stream key")
        return PublishGrant(KEYS[stream_key])


async def serve(**limits: Any) -> tuple[SrtServer, Hub, FakeAuthority]:
    hub, auth = Hub(), FakeAuthority()
    server = SrtServer(hub, auth, host="127.0.0.1", port=0, limits=SrtLimits(**limits))
    await server.start()
    return server, hub, auth


@pytest.fixture
async def srt() -> AsyncIterator[tuple[SrtServer, Hub, FakeAuthority]]:
    server, hub, auth = await serve()
    yield server, hub, auth
    await server.close()


@pytest.fixture
async def procs() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for p in started:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # shells: the whole pipeline
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()


async def ffmpeg(
    procs: list[asyncio.subprocess.Process], url: str, *, seconds: float = 3.0
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-g", "30", "-c:a", "aac", "-f", "mpegts", url,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    procs.append(proc)
    return proc


def server_attr(server: SrtServer, name: str) -> Callable[[], Awaitable[Any]]:
    async def read() -> Any:
        return getattr(server, name)

    return read


async def collect(hub: Hub, stream_id: str, *, video: int, limit: float = 15.0) -> list[Any]:
    """The stream's items until `video` video units have come."""
    reader = hub.stream(stream_id).subscribe("test", 10_000)
    items: list[Any] = []
    seen = 0
    async with asyncio.timeout(limit):
        while seen < video:
            item = await reader.get()
            items.append(item)
            seen += isinstance(item, MediaUnit) and item.kind is TrackKind.VIDEO
    reader.close()
    return items


async def test_an_ffmpeg_publisher_reaches_the_hub(srt: Any, procs: Any) -> None:
    server, hub, auth = srt
    collecting = asyncio.create_task(collect(hub, "ls_a", video=45))
    await ffmpeg(procs, f"srt://127.0.0.1:{server.port}?streamid=sk_a")
    items = await collecting
    started = items[0]
    assert isinstance(started, PublicationStarted) and started.source == "srt"
    video, audio = started.tracks
    assert (video.codec, video.width, video.height) == ("h264", 640, 360)
    assert (audio.codec, audio.sample_rate) == ("aac", 48000)
    units = [i for i in items if isinstance(i, MediaUnit)]
    first_video = next(u for u in units if u.kind is TrackKind.VIDEO)
    assert first_video.keyframe
    frames = [u for u in units if u.kind is TrackKind.VIDEO]
    step = (frames[-1].dts - frames[0].dts) / (len(frames) - 1)
    assert abs(step - 3000) < 30  # 30 fps in 90 kHz
    assert any(u.kind is TrackKind.AUDIO for u in units)
    assert auth.calls == [("sk_a", "srt")]
    assert server.publishes == 1


async def test_the_access_control_streamid_names_the_key(srt: Any, procs: Any) -> None:
    server, hub, _ = srt
    collecting = asyncio.create_task(collect(hub, "ls_b", video=10))
    await ffmpeg(procs, f"srt://127.0.0.1:{server.port}?streamid=#!::r=sk_b,m=publish")
    assert isinstance((await collecting)[0], PublicationStarted)


@pytest.mark.parametrize(
    ("streamid", "counter", "asked"),
    [
        ("sk_wrong", "rejected_bad_key", True),
        ("sk_disabled", "rejected_disabled", True),
        ("#!::r=sk_a,m=request", "rejected_other", False),
    ],
)
async def test_a_refused_caller_is_turned_away_at_the_handshake(
    srt: Any, procs: Any, streamid: str, counter: str, asked: bool
) -> None:
    server, hub, auth = srt
    proc = await ffmpeg(procs, f"srt://127.0.0.1:{server.port}?streamid={streamid}")
    async with asyncio.timeout(10):
        _, err = await proc.communicate()
    assert proc.returncode != 0
    assert b"rror" in err  # ffmpeg: "Connection to srt://... failed: Input/output error"
    assert getattr(server, counter) == 1
    assert bool(auth.calls) is asked
    assert server.publishes == 0 and not server.connections
    assert all(s.publication is None for s in hub.streams)


async def test_a_passphrase_is_required_when_set(procs: Any) -> None:
    server, hub, _ = await serve(passphrase=PASSPHRASE)
    try:
        url = f"srt://127.0.0.1:{server.port}?streamid=sk_a"
        plain = await ffmpeg(procs, url)
        async with asyncio.timeout(10):
            await plain.communicate()
        assert plain.returncode != 0 and server.publishes == 0
        collecting = asyncio.create_task(collect(hub, "ls_a", video=10))
        await ffmpeg(procs, url + "&passphrase=" + PASSPHRASE)
        assert isinstance((await collecting)[0], PublicationStarted)
    finally:
        await server.close()


async def test_garbage_is_refused_and_the_other_publisher_keeps_going(
    srt: Any, procs: Any, tmp_path: Path
) -> None:
    server, hub, _ = srt
    reader = hub.stream("ls_a").subscribe("test", 10_000)
    good = await ffmpeg(procs, f"srt://127.0.0.1:{server.port}?streamid=sk_a", seconds=6)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(188 * 7 * 400))
    # srt-live-transmit reads stdin only from a pipe
    bad = await asyncio.create_subprocess_shell(
        f"cat {garbage} | srt-live-transmit -q file://con "
        f"'srt://127.0.0.1:{server.port}?streamid=sk_b'",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    procs.append(bad)
    await poll(server_attr(server, "refused_media"), bool, within=15, what="refused media")
    assert hub.get("ls_b") is None or hub.get("ls_b").publication is None  # type: ignore[union-attr]
    async with asyncio.timeout(15):
        await good.wait()
    items = []
    while (item := reader.get_nowait()) is not None:
        items.append(item)
    frames = [i for i in items if isinstance(i, MediaUnit) and i.kind is TrackKind.VIDEO]
    assert len(frames) > 120  # most of six seconds at 30 fps...
    assert {b.dts - a.dts for a, b in itertools.pairwise(frames)} == {3000}  # no gap
    assert good.returncode == 0


async def test_srt_live_transmit_relays_a_ts_file(srt: Any, procs: Any, tmp_path: Path) -> None:
    server, hub, _ = srt
    ts = tmp_path / "a.ts"
    await asyncio.to_thread(
        subprocess.run,
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc=size=320x240:rate=25", "-t", "4", "-c:v", "libx264", "-g", "25",
         "-f", "mpegts", str(ts)],
        check=True,
    )  # fmt: skip
    collecting = asyncio.create_task(collect(hub, "ls_a", video=50))
    # srt-live-transmit sends as fast as it reads: pace it with a pipe from ffmpeg -re
    pacer = await asyncio.create_subprocess_shell(
        f"ffmpeg -hide_banner -loglevel error -re -i {ts} -c copy -f mpegts - | "
        f"srt-live-transmit -q file://con 'srt://127.0.0.1:{server.port}?streamid=sk_a'",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    procs.append(pacer)
    items = await collecting
    video = items[0].tracks[0]
    assert (video.width, video.height) == (320, 240)


async def test_a_kick_drops_the_publisher(srt: Any, procs: Any) -> None:
    server, hub, _ = srt
    collecting = asyncio.create_task(collect(hub, "ls_a", video=5))
    proc = await ffmpeg(procs, f"srt://127.0.0.1:{server.port}?streamid=sk_a", seconds=30)
    await collecting
    ended = hub.stream("ls_a").subscribe("ended", 10_000)
    assert hub.kick("ls_a", "completed")
    await poll(server_attr(server, "connections"), lambda c: not c, within=10, what="no connection")
    async with asyncio.timeout(10):
        while not isinstance(await ended.get(), PublicationEnded):
            pass
    async with asyncio.timeout(15):
        await proc.wait()  # ffmpeg notices its peer went away
    assert proc.returncode != 0
