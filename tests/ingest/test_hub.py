"""The hub: publications fan out to bounded readers; streams outlive publishers."""

from __future__ import annotations

import asyncio

import pytest

from ingest.hub import (
    Hub,
    HubObserver,
    MediaUnit,
    Publication,
    PublicationEnded,
    PublicationStarted,
    Stream,
    TrackInfo,
    TrackKind,
)

VIDEO = TrackInfo(TrackKind.VIDEO, "h264", 90000, b"\x01avcC", 640, 360)
AUDIO = TrackInfo(TrackKind.AUDIO, "aac", 48000, b"\x11\x90", sample_rate=48000, channels=2)


def video(dts: int, key: bool = False) -> MediaUnit:
    return MediaUnit(TrackKind.VIDEO, dts, dts, b"v" * 10, key)


def audio(dts: int) -> MediaUnit:
    return MediaUnit(TrackKind.AUDIO, dts, dts, b"a" * 4, True)


def drain(reader) -> list:
    out = []
    while (item := reader.get_nowait()) is not None:
        out.append(item)
    return out


async def test_reader_sees_start_media_and_end_in_order() -> None:
    hub = Hub()
    reader = hub.stream("ls_1").subscribe("test")
    pub = hub.publish("ls_1", (VIDEO, AUDIO), source="rtmp")
    pub.write(video(0, key=True))
    pub.write(audio(0))
    pub.close("disconnected")
    items = drain(reader)
    assert isinstance(items[0], PublicationStarted)
    assert items[0].tracks == (VIDEO, AUDIO) and items[0].generation == 1
    assert [type(i) for i in items[1:3]] == [MediaUnit, MediaUnit]
    assert items[3] == PublicationEnded(1, "disconnected")


async def test_subscribing_to_a_live_stream_starts_with_its_publication() -> None:
    hub = Hub()
    hub.publish("ls_1", (VIDEO,), source="rtmp")
    reader = hub.stream("ls_1").subscribe("late")
    first = reader.get_nowait()
    assert isinstance(first, PublicationStarted) and first.source == "rtmp"


async def test_from_keyframe_replays_the_current_gop() -> None:
    hub = Hub()
    pub = hub.publish("ls_1", (VIDEO, AUDIO), source="rtmp")
    pub.write(video(0, key=True))
    pub.write(video(3000))
    pub.write(video(6000, key=True))
    pub.write(audio(100))
    pub.write(video(9000))
    reader = hub.stream("ls_1").subscribe("viewer", from_keyframe=True)
    items = drain(reader)
    media = [i for i in items if isinstance(i, MediaUnit)]
    assert media[0].keyframe and media[0].dts == 6000
    assert [m.dts for m in media] == [6000, 100, 9000]


async def test_slow_reader_drops_until_next_keyframe_and_counts() -> None:
    hub = Hub()
    pub = hub.publish("ls_1", (VIDEO,), source="rtmp")
    reader = hub.stream("ls_1").subscribe("slow", max_units=4)
    drain(reader)
    for i in range(4):
        pub.write(video(i * 3000, key=(i == 0)))
    pub.write(video(12000))  # overflow, not a keyframe: everything dropped
    pub.write(video(15000))  # still waiting for a keyframe
    pub.write(video(18000, key=True))  # resumes here
    pub.write(video(21000))
    media = drain(reader)
    assert [m.dts for m in media] == [18000, 21000]
    assert reader.dropped == 6
    assert reader.pending == 0


async def test_control_items_survive_overflow() -> None:
    hub = Hub()
    pub = hub.publish("ls_1", (VIDEO,), source="rtmp")
    reader = hub.stream("ls_1").subscribe("slow", max_units=2)
    drain(reader)
    pub.write(video(0, key=True))
    pub.close("disconnected")
    pub2 = hub.publish("ls_1", (VIDEO,), source="rtmp")
    pub2.write(video(0, key=True))
    pub2.write(video(3000))
    pub2.write(video(6000))  # overflow
    items = drain(reader)
    kinds = [type(i).__name__ for i in items]
    assert "PublicationEnded" in kinds and "PublicationStarted" in kinds


async def test_audio_only_stream_resumes_on_any_unit() -> None:
    hub = Hub()
    pub = hub.publish("ls_1", (AUDIO,), source="whip")
    reader = hub.stream("ls_1").subscribe("slow", max_units=2)
    drain(reader)
    for i in range(3):
        pub.write(audio(i * 1024))
    assert [m.dts for m in drain(reader)] == [2048]


async def test_writer_never_waits_for_a_reader() -> None:
    hub = Hub()
    pub = hub.publish("ls_1", (VIDEO,), source="rtmp")
    hub.stream("ls_1").subscribe("never-read", max_units=8)
    for i in range(10_000):
        pub.write(video(i, key=(i % 30 == 0)))
    assert pub.units_written == 10_000


async def test_async_iteration_wakes_on_write_and_ends_on_close() -> None:
    hub = Hub()
    stream = hub.stream("ls_1")
    reader = stream.subscribe("it")
    got: list = []

    async def consume() -> None:
        async for item in reader:
            got.append(item)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    pub = hub.publish("ls_1", (VIDEO,), source="rtmp")
    pub.write(video(0, key=True))
    await asyncio.sleep(0.01)
    assert len(got) == 2
    reader.close()
    await asyncio.wait_for(task, 1)


async def test_takeover_closes_the_old_publication_and_starts_a_new_generation() -> None:
    hub = Hub()
    closed: list[str] = []
    old = hub.publish("ls_1", (VIDEO,), source="rtmp", on_close=closed.append)
    reader = hub.stream("ls_1").subscribe("r")
    new = hub.publish("ls_1", (VIDEO,), source="rtmp")
    assert old.closed and closed == ["takeover"]
    assert new.generation == old.generation + 1
    old.write(video(0, key=True))  # a late write from the old driver goes nowhere
    items = drain(reader)
    assert [type(i).__name__ for i in items] == [
        "PublicationStarted",
        "PublicationEnded",
        "PublicationStarted",
    ]


async def test_kick_closes_the_live_publication() -> None:
    hub = Hub()
    reasons: list[str] = []
    hub.publish("ls_1", (VIDEO,), source="rtmp", on_close=reasons.append)
    assert hub.kick("ls_1", "stream_key_reset")
    assert reasons == ["stream_key_reset"]
    assert not hub.kick("ls_1")


async def test_observer_hears_start_and_end() -> None:
    seen: list[tuple[str, str, int]] = []

    class Recorder(HubObserver):
        def publication_started(self, stream: Stream, publication: Publication) -> None:
            seen.append(("start", stream.id, publication.generation))

        def publication_ended(self, stream: Stream, publication: Publication, reason: str) -> None:
            seen.append(("end:" + reason, stream.id, publication.generation))

    hub = Hub(Recorder())
    hub.publish("ls_1", (VIDEO,), source="rtmp").close("disconnected")
    assert seen == [("start", "ls_1", 1), ("end:disconnected", "ls_1", 1)]


async def test_stream_is_forgotten_when_nobody_uses_it() -> None:
    hub = Hub()
    reader = hub.stream("ls_1").subscribe("r")
    pub = hub.publish("ls_1", (VIDEO,), source="rtmp")
    pub.close()
    assert hub.get("ls_1") is not None  # the reader still holds it
    reader.close()
    assert hub.get("ls_1") is None


async def test_gop_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Stream, "_GOP_MAX_BYTES", 100)
    hub = Hub()
    pub = hub.publish("ls_1", (VIDEO,), source="rtmp")
    pub.write(video(0, key=True))
    for i in range(1, 50):
        pub.write(video(i))
    assert sum(len(u.data) for u in hub.stream("ls_1").latest_gop()) <= 100


async def test_an_inline_consumer_gets_items_as_written_after_the_queue() -> None:
    hub = Hub()
    stream = hub.stream("s")
    pub = hub.publish("s", (VIDEO,), source="test")
    reader = stream.subscribe("inline")
    pub.write(video(0, key=True))
    got: list = []
    reader.consume_inline(got.append)
    pub.write(video(3000))  # the queue is not drained yet: it queues behind
    assert got == []
    queued = drain(reader)
    assert [type(i).__name__ for i in queued] == ["PublicationStarted", "MediaUnit", "MediaUnit"]
    pub.write(video(6000))
    assert [u.dts for u in got] == [6000] and reader.pending == 0
    reader.consume_inline(None)
    pub.write(video(9000))
    assert len(got) == 1 and [u.dts for u in drain(reader)] == [9000]


async def test_a_prompt_reader_asks_publishers_not_to_batch_while_subscribed() -> None:
    hub = Hub()
    stream = hub.stream("s")
    hls = stream.subscribe("hls")
    assert not stream.wants_prompt, "segmenters and recorders take input in batches"
    viewer = stream.subscribe("whep", prompt=True)
    assert stream.wants_prompt
    viewer.close()
    assert not stream.wants_prompt
    hls.close()
