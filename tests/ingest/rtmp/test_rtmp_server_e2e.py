"""RtmpServer end to end with real publishers (Debian ffmpeg, GStreamer) on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import pytest

from ingest.hub import (
    Hub,
    MediaUnit,
    PublicationEnded,
    PublicationStarted,
    StreamReader,
    TrackKind,
)
from ingest.ports import PublishDenied, PublishGrant
from ingest.rtmp.handshake import HANDSHAKE_SIZE, client_hello
from ingest.rtmp.server import RtmpLimits, RtmpServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian ffmpeg is not installed"),
]

KEYS = {"key-a": "ls_a", "key-b": "ls_b"}


class FakeAuthority:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        self.calls.append((stream_key, protocol, remote))
        await asyncio.sleep(0.01)
        if stream_key == "disabled-key":
            raise PublishDenied("disabled", "live stream is disabled")
        if stream_key not in KEYS:
            raise PublishDenied("bad_key", "unknown stream key")
        return PublishGrant(KEYS[stream_key])


@pytest.fixture
async def rtmp() -> AsyncIterator[tuple[RtmpServer, Hub, FakeAuthority]]:
    hub = Hub()
    auth = FakeAuthority()
    server = RtmpServer(
        hub,
        auth,
        host="127.0.0.1",
        port=0,
        limits=RtmpLimits(handshake_timeout=3.0, idle_timeout=5.0),
    )
    await server.start()
    try:
        yield server, hub, auth
    finally:
        await server.stop()


class Publisher:
    """A real ffmpeg (or gst-launch) publisher process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr = b""

    async def wait(self, limit: float = 20.0) -> int:
        try:
            _, self.stderr = await asyncio.wait_for(self.proc.communicate(), limit)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.communicate()


@pytest.fixture
async def publishers() -> AsyncIterator[list[Publisher]]:
    procs: list[Publisher] = []
    yield procs
    for p in procs:
        await p.stop()


async def ffmpeg(
    procs: list[Publisher], port: int, key: str, *, seconds: float, video: list[str] | None = None
) -> Publisher:
    vcodec = video or ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30"]
    args = [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        *vcodec,
        "-c:a",
        "aac",
        "-f",
        "flv",
        f"rtmp://127.0.0.1:{port}/live/{key}",
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    pub = Publisher(proc)
    procs.append(pub)
    return pub


async def collect(reader: StreamReader, *, video: int, limit: float = 15.0) -> list[Any]:
    """Items until `video` video units have arrived."""
    items: list[Any] = []
    seen = 0

    async def run() -> None:
        nonlocal seen
        async for item in reader:
            items.append(item)
            if isinstance(item, MediaUnit) and item.kind is TrackKind.VIDEO:
                seen += 1
                if seen >= video:
                    return

    await asyncio.wait_for(run(), limit)
    return items


def media(items: list[Any], kind: TrackKind) -> list[MediaUnit]:
    return [i for i in items if isinstance(i, MediaUnit) and i.kind is kind]


async def test_ffmpeg_publish_reaches_a_hub_reader(rtmp: Any, publishers: list[Publisher]) -> None:
    server, hub, auth = rtmp
    reader = hub.stream("ls_a").subscribe("test", max_units=10_000)
    pub = await ffmpeg(publishers, server.port, "key-a?token=ignored", seconds=3.5)
    items = await collect(reader, video=90)
    started = items[0]
    assert isinstance(started, PublicationStarted) and started.source == "rtmp"
    video_track, audio_track = started.tracks
    assert (video_track.codec, video_track.width, video_track.height) == ("h264", 640, 360)
    assert video_track.timescale == 90000 and video_track.config[:1] == b"\x01"
    assert (audio_track.codec, audio_track.sample_rate) == ("aac", 48000)
    assert audio_track.timescale == 48000 and audio_track.channels in (1, 2)
    assert auth.calls[0][:2] == ("key-a", "rtmp")

    video = media(items, TrackKind.VIDEO)
    audio = media(items, TrackKind.AUDIO)
    assert video[0].keyframe
    assert all(b.dts > a.dts for a, b in pairwise(video))
    assert all(b.dts - a.dts == 1024 for a, b in pairwise(audio))
    assert len(audio) > 100
    keys = [u.dts for u in video if u.keyframe]
    assert len(keys) >= 3
    gaps = [(b - a) / 90000 for a, b in pairwise(keys)]
    assert all(0.9 <= g <= 1.1 for g in gaps), gaps
    # Video and audio run on the same clock (within 100 ms).
    assert abs(video[-1].dts / 90000 - audio[-1].dts / 48000) < 0.2
    assert await pub.wait() == 0
    ended = await asyncio.wait_for(reader.get(), 5)
    while not isinstance(ended, PublicationEnded):
        ended = await asyncio.wait_for(reader.get(), 5)
    assert ended.reason in ("unpublished", "disconnected")
    assert server.publishes == 1 and server.bytes_in > 100_000


async def test_wrong_key_and_disabled_stream_are_refused_while_another_stream_plays(
    rtmp: Any, publishers: list[Publisher]
) -> None:
    server, hub, _ = rtmp
    reader = hub.stream("ls_a").subscribe("test", max_units=10_000)
    await ffmpeg(publishers, server.port, "key-a", seconds=6)
    await collect(reader, video=10)

    bad = await ffmpeg(publishers, server.port, "no-such-key", seconds=2)
    disabled = await ffmpeg(publishers, server.port, "disabled-key", seconds=2)
    assert await bad.wait() != 0
    assert b"NetStream.Publish.BadName" in bad.stderr
    assert await disabled.wait() != 0
    assert b"NetStream.Publish.Rejected" in disabled.stderr
    assert (server.rejected_bad_key, server.rejected_disabled) == (1, 1)
    assert hub.get("ls_a") is not None and hub.get("ls_a").generation == 1  # type: ignore[union-attr]

    items = await collect(reader, video=30)  # the good stream keeps coming
    assert not any(isinstance(i, PublicationEnded) for i in items)


async def _raw_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(client_hello(digest=True))
    await r.readexactly(1 + 2 * HANDSHAKE_SIZE)
    w.write(os.urandom(HANDSHAKE_SIZE))  # C2
    await w.drain()
    return r, w


async def test_garbage_after_the_handshake_closes_only_that_connection(
    rtmp: Any, publishers: list[Publisher]
) -> None:
    server, hub, _ = rtmp
    reader = hub.stream("ls_a").subscribe("test", max_units=10_000)
    await ffmpeg(publishers, server.port, "key-a", seconds=5)
    await collect(reader, video=10)

    r, w = await _raw_client(server.port)
    # fmt 2 header on a chunk stream never opened, then noise.
    w.write(b"\x8a" + os.urandom(4000))
    data = await asyncio.wait_for(r.read(), 5)
    assert data == b""  # closed by the server
    w.close()
    assert server.protocol_errors == 1

    items = await collect(reader, video=30)
    assert not any(isinstance(i, PublicationEnded) for i in items)


async def test_a_second_publisher_takes_over(rtmp: Any, publishers: list[Publisher]) -> None:
    server, hub, _ = rtmp
    reader = hub.stream("ls_a").subscribe("test", max_units=10_000)
    first = await ffmpeg(publishers, server.port, "key-a", seconds=20)
    await collect(reader, video=10)
    await ffmpeg(publishers, server.port, "key-a", seconds=20)

    items: list[Any] = []
    while not (items and isinstance(items[-1], PublicationStarted)):
        items.append(await asyncio.wait_for(reader.get(), 10))
    ended = next(i for i in items if isinstance(i, PublicationEnded))
    assert (ended.generation, ended.reason) == (1, "takeover")
    assert items[-1].generation == 2
    assert await first.wait(10) != 0  # its connection was dropped
    stream = hub.get("ls_a")
    assert stream is not None and stream.generation == 2 and stream.live
    more = await collect(reader, video=10)
    assert media(more, TrackKind.VIDEO)


async def test_kick_closes_the_connection(rtmp: Any, publishers: list[Publisher]) -> None:
    server, hub, _ = rtmp
    reader = hub.stream("ls_b").subscribe("test", max_units=10_000)
    pub = await ffmpeg(publishers, server.port, "key-b", seconds=20)
    await collect(reader, video=5)
    assert hub.kick("ls_b", "key reset")
    assert await pub.wait(10) != 0
    for _ in range(50):
        if not server.connections:
            break
        await asyncio.sleep(0.05)
    assert server.connections == ()


async def test_unsupported_codec_is_refused_with_a_status(
    rtmp: Any, publishers: list[Publisher]
) -> None:
    server, _, _ = rtmp
    pub = await ffmpeg(publishers, server.port, "key-a", seconds=2, video=["-c:v", "flv1"])
    assert await pub.wait() != 0
    assert b"Sorenson H.263 is not supported" in pub.stderr
    assert server.rejected_media == 1


async def test_silent_client_is_dropped_at_the_handshake_deadline() -> None:
    hub = Hub()
    server = RtmpServer(
        hub, FakeAuthority(), host="127.0.0.1", port=0, limits=RtmpLimits(handshake_timeout=0.3)
    )
    await server.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(r.read(), 3) == b""
        w.close()
        assert server.timeouts == 1
    finally:
        await server.stop()


@pytest.mark.skipif(
    shutil.which("gst-launch-1.0") is None, reason="gst-launch-1.0 is not installed"
)
async def test_gstreamer_rtmp2sink_publish(rtmp: Any, publishers: list[Publisher]) -> None:
    for element, package in [
        ("rtmp2sink", "gstreamer1.0-plugins-bad"),
        ("flvmux", "gstreamer1.0-plugins-good"),
        ("x264enc", "gstreamer1.0-plugins-ugly"),
        ("avenc_aac", "gstreamer1.0-libav"),
    ]:
        inspect = await asyncio.create_subprocess_exec(
            "gst-inspect-1.0", element, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if await inspect.wait() != 0:
            pytest.skip(f"GStreamer element {element} is missing ({package})")
    server, hub, _ = rtmp
    reader = hub.stream("ls_a").subscribe("test", max_units=10_000)
    pipeline = (
        "videotestsrc is-live=true num-buffers=90 ! video/x-raw,format=I420,width=320,height=240,"
        "framerate=30/1 ! x264enc tune=zerolatency key-int-max=30 speed-preset=veryfast ! "
        "h264parse ! flvmux name=m streamable=true ! "
        f"rtmp2sink location=rtmp://127.0.0.1:{server.port}/live/key-a "
        "audiotestsrc is-live=true num-buffers=130 ! audioconvert ! avenc_aac ! aacparse ! m."
    )
    proc = await asyncio.create_subprocess_exec(
        "gst-launch-1.0",
        "-q",
        *pipeline.split(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    publishers.append(Publisher(proc))
    items = await collect(reader, video=60)
    started = items[0]
    assert isinstance(started, PublicationStarted)
    kinds = {t.kind: t for t in started.tracks}
    assert (kinds[TrackKind.VIDEO].width, kinds[TrackKind.VIDEO].height) == (320, 240)
    assert kinds[TrackKind.AUDIO].sample_rate == 44100
    audio = media(items, TrackKind.AUDIO)
    # flvmux stamps live audio on its output clock, jittery at start and under load:
    # whole-frame steps, with an occasional forward resync to that clock.
    steps = [b.dts - a.dts for a, b in pairwise(audio)]
    assert steps and all(s >= 1024 for s in steps), steps
    assert steps.count(1024) >= 0.9 * len(steps), steps


async def test_limits_close_the_offending_connection() -> None:
    """Over `max_connections` a peer is dropped at accept; a chunk size over the limit
    closes that connection only."""
    hub = Hub()
    server = RtmpServer(
        hub, FakeAuthority(), host="127.0.0.1", port=0, limits=RtmpLimits(max_connections=1)
    )
    await server.start()
    try:
        r1, w1 = await _raw_client(server.port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(r2.read(), 3) == b""
        assert server.connections_refused == 1
        w2.close()
        # Set Chunk Size 2**31-1 on chunk stream 2.
        w1.write(bytes.fromhex("02000000000004010000000000") + b"\x7f\xff\xff\xff")
        assert await asyncio.wait_for(r1.read(), 3) == b""
        assert server.protocol_errors == 1
        w1.close()
    finally:
        await server.stop()


async def test_one_address_holds_only_its_share_of_connections() -> None:
    from ingest.conn_limits import ConnectionLimits

    limits = ConnectionLimits(total=100)
    server = RtmpServer(
        Hub(),
        FakeAuthority(),
        host="127.0.0.1",
        port=0,
        limits=RtmpLimits(handshake_timeout=3.0, max_connections_per_client=3),
        conn_limits=limits,
    )
    await server.start()
    try:
        held = [
            await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
            for _ in range(3)
        ]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, local_addr=("127.0.0.2", 0)
        )
        assert await asyncio.wait_for(reader.read(1), 3) == b"", "the fourth is closed at once"
        writer.close()
        # another address is still let in (its handshake is answered)
        r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
        w2.write(client_hello(digest=False))
        assert len(await asyncio.wait_for(r2.readexactly(1 + HANDSHAKE_SIZE), 3)) > 0
        w2.close()
        assert server.connections_refused == 1
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        assert len(limits) == 0, "closed connections are released"
    finally:
        await server.stop()
