"""Read coalescing in the RTMP driver: while a publication streams, the kernel is
asked (SO_RCVLOWAT) to gather about `read_coalesce` seconds of its bytes per
wake-up, at the rate of the frames between keyframes; a keyframe is never held
back; a publisher whose rate falls is not held back; 0 turns it off."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from rtmpclient import (
    ClientWriter,
    audio_config_tag,
    audio_frame_tag,
    metadata,
    publish_prologue,
    video_config_tag,
    video_frame_tag,
)

from ingest.hub import Hub, MediaUnit, StreamReader, TrackKind
from ingest.ports import PublishGrant
from ingest.rtmp.server import RtmpConnection, RtmpLimits, RtmpServer

FRAME = 5000
"""Bytes of each synthetic video frame: 30 a second is ~150 kB/s."""


class Grant:
    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        return PublishGrant("ls_1")


async def start(limits: RtmpLimits) -> tuple[RtmpServer, Hub]:
    hub = Hub()
    server = RtmpServer(hub, Grant(), host="127.0.0.1", port=0, limits=limits)
    await server.start()
    return server, hub


class Client:
    """A raw publisher that writes frames on a wall-clock schedule, like `ffmpeg -re`."""

    def __init__(self, writer: asyncio.StreamWriter, c: ClientWriter) -> None:
        self.w = writer
        self.c = c
        self.ts = 0

    @classmethod
    async def publish(cls, port: int) -> tuple[Client, asyncio.StreamReader]:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        prologue, c = publish_prologue("key")
        metadata(c)
        c.video(0, video_config_tag())
        c.audio(0, audio_config_tag())
        w.write(prologue + c.take())
        client = cls(w, c)
        # drain whatever the server answers so it never waits on us
        asyncio.get_running_loop().create_task(r.read(1 << 30))
        return client, r

    async def stream(
        self, seconds: float, *, video: bool = True, keyframe: int = FRAME, frame: int = FRAME
    ) -> None:
        """30 video frames (a keyframe of `keyframe` bytes a second, the others of
        `frame`) and ~47 audio frames a second, paced."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while loop.time() - start < seconds:
            if video:
                key = n % 30 == 0
                nal = b"\x65" + bytes((keyframe if key else frame) - 1)
                self.c.video(self.ts, video_frame_tag(key, nal=nal))
            self.c.audio(self.ts, audio_frame_tag())
            self.w.write(self.c.take())
            n += 1
            self.ts += 33
            await asyncio.sleep(max(0.0, start + n / 30 - loop.time()))

    def close(self) -> None:
        self.w.close()


def the_connection(server: RtmpServer) -> RtmpConnection:
    (conn,) = server.connections
    return conn


def lowat(conn: RtmpConnection) -> int:
    sock = conn.transport.get_extra_info("socket")  # type: ignore[union-attr]
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))


async def next_audio(reader: StreamReader, limit: float) -> float:
    """Seconds until the next audio unit reaches the hub reader."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def wait() -> None:
        async for item in reader:
            if isinstance(item, MediaUnit) and item.kind is TrackKind.AUDIO:
                return

    await asyncio.wait_for(wait(), limit)
    return loop.time() - start


@pytest.fixture
async def coalescing() -> AsyncIterator[tuple[RtmpServer, Hub]]:
    server, hub = await start(RtmpLimits(read_coalesce=0.1, coalesce_stale=0.3))
    try:
        yield server, hub
    finally:
        await server.stop()


@pytest.fixture
async def batching(
    coalescing: tuple[RtmpServer, Hub],
) -> AsyncIterator[tuple[RtmpServer, Hub, Client, RtmpConnection]]:
    """A publisher that has streamed long enough to be read in batches."""
    server, hub = coalescing
    client, _ = await Client.publish(server.port)
    try:
        await client.stream(2.0)
        conn = the_connection(server)
        assert lowat(conn) > 1
        yield server, hub, client, conn
    finally:
        client.close()


async def test_a_streaming_publisher_is_read_in_batches_of_about_read_coalesce(
    coalescing: tuple[RtmpServer, Hub], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    real = RtmpConnection.data_received

    def counting(self: RtmpConnection, data: bytes) -> None:
        nonlocal reads
        reads += 1
        real(self, data)

    monkeypatch.setattr(RtmpConnection, "data_received", counting)
    server, hub = coalescing
    reader = hub.stream("ls_1").subscribe("test", max_units=100_000)
    client, _ = await Client.publish(server.port)
    try:
        await client.stream(1.0)
        reads = 0
        await client.stream(2.0)  # 60 writes of a video and an audio frame
        conn = the_connection(server)
        rate = 30 * FRAME  # bytes a second, give or take headers and audio
        assert 0.5 * 0.1 * rate <= lowat(conn) <= 2 * 0.1 * rate
        assert conn in server._coalescing
        assert reads <= 2.0 / 0.1 * 1.5, f"{reads} reads for 60 writes"
        video = 0
        while (item := reader.get_nowait()) is not None:
            video += isinstance(item, MediaUnit) and item.kind is TrackKind.VIDEO
        assert video >= 90 - 30 * 0.2, "what was sent reached the hub, at most a batch later"
    finally:
        client.close()


async def test_a_publisher_whose_rate_falls_is_not_held_back(
    batching: tuple[RtmpServer, Hub, Client, RtmpConnection],
) -> None:
    """Video stops, a little audio goes on: the kernel would wait for a full batch
    for seconds; the shared check drops SO_RCVLOWAT to 1 within `coalesce_stale`."""
    server, hub, client, conn = batching
    reader = hub.stream("ls_1").subscribe("late", max_units=100_000)
    # audio only from now on: ~200 bytes a frame, far below the batch size
    client.c.audio(client.ts, audio_frame_tag())
    client.w.write(client.c.take())
    waited = await next_audio(reader, 3.0)
    assert waited < 2 * 0.3 + 0.2, waited
    assert lowat(conn) == 1 and conn not in server._coalescing
    # and each later small frame comes through at once
    for _ in range(3):
        client.ts += 21
        client.c.audio(client.ts, audio_frame_tag())
        client.w.write(client.c.take())
        assert await next_audio(reader, 3.0) < 0.1


async def test_read_coalesce_zero_reads_every_packet() -> None:
    server, _ = await start(RtmpLimits(read_coalesce=0))
    client, _ = await Client.publish(server.port)
    try:
        await client.stream(1.5)
        conn = the_connection(server)
        assert lowat(conn) == 1 and not server._coalescing
    finally:
        client.close()
        await server.stop()


async def test_closing_a_coalescing_connection_stops_watching_it(
    coalescing: tuple[RtmpServer, Hub],
) -> None:
    server, _ = coalescing
    client, _ = await Client.publish(server.port)
    await client.stream(1.5)
    assert server._coalescing
    client.close()
    for _ in range(50):
        if not server.connections:
            break
        await asyncio.sleep(0.05)
    assert not server.connections and not server._coalescing
    await asyncio.sleep(0.4)
    assert server._coalesce_timer is None, "the shared timer stops with nothing to watch"


async def test_no_batching_while_a_webrtc_viewer_watches(
    batching: tuple[RtmpServer, Hub, Client, RtmpConnection],
) -> None:
    _, hub, client, conn = batching
    viewer = hub.stream("ls_1").subscribe("whep", prompt=True)
    await client.stream(1.0)
    assert lowat(conn) == 1, "every frame is due to a WebRTC viewer at once"
    viewer.close()
    await client.stream(1.0)
    assert lowat(conn) > 1, "batching resumes when the viewer leaves"


async def test_the_batch_is_sized_on_the_frames_between_keyframes() -> None:
    """Keyframes of 60 kB a second and 2 kB frames: sized on the mean rate the
    batch would wait ~0.2 s for the small frames after each keyframe."""
    server, _ = await start(RtmpLimits(read_coalesce=0.1, coalesce_stale=0.3))
    client, _ = await Client.publish(server.port)
    try:
        await client.stream(3.0, keyframe=60_000, frame=2_000)
        between = 29 * 2_000  # bytes a second between keyframes (and ~10 kB of audio)
        assert (
            0.5 * 0.1 * between <= lowat(the_connection(server)) <= 1.5 * 0.1 * (between + 10_000)
        )
    finally:
        client.close()
        await server.stop()


async def test_a_keyframe_is_never_held_back_for_a_batch() -> None:
    """Its tail comes on its own, smaller than a batch, and nothing follows: it
    reaches the hub at once, not when the stale check (2 s here) gives up."""
    server, hub = await start(RtmpLimits(read_coalesce=0.1, coalesce_stale=2.0))
    client, _ = await Client.publish(server.port)
    try:
        await client.stream(2.0)
        conn = the_connection(server)
        batch = lowat(conn)
        assert batch > 1000
        reader = hub.stream("ls_1").subscribe("join", max_units=100_000)
        client.ts += 33
        client.c.video(client.ts, video_frame_tag(True, nal=b"\x65" + bytes(80_000)))
        wire = client.c.take()
        tail = batch // 2
        client.w.write(wire[:-tail])
        await asyncio.sleep(0.2)  # the server has read all but the tail
        loop = asyncio.get_running_loop()
        sent = loop.time()
        client.w.write(wire[-tail:])

        async def keyframe() -> None:
            async for item in reader:
                if isinstance(item, MediaUnit) and item.keyframe and len(item.data) > 80_000:
                    return

        await asyncio.wait_for(keyframe(), 3.0)
        assert loop.time() - sent < 1.0, "the keyframe waited for a batch"
    finally:
        client.close()
        await server.stop()
