"""The CMAF segmenter, driven by synthetic MediaUnits: where parts and segments are cut,
which parts are independent, how generations (reconnects) continue the timeline,
and how promptly parts come out."""

from __future__ import annotations

import asyncio
import struct

import pytest

from ingest.hub import Hub, MediaUnit, PublicationEnded, PublicationStarted, TrackKind
from realtime.cmaf.boxes import iter_boxes
from realtime.segmenter import LATENCY_MODES, Segmenter, _StallWatch
from realtime.segments import FIRST_MSN, InitSegment, Part
from tests.realtime.media import Collect, synthetic_tracks, synthetic_units


def run(
    units: list[MediaUnit],
    *,
    part: float = 0.2,
    segment: float = 1.0,
    end: bool = True,
    tracks: tuple = (),
    out: Collect | None = None,
    seg: Segmenter | None = None,
    generation: int = 1,
) -> tuple[Segmenter, Collect]:
    out = out or Collect()
    seg = seg or Segmenter(None, out, part_target_s=part, segment_target_s=segment)
    seg.feed(PublicationStarted(generation, tracks or synthetic_tracks(), "test", 0.0))
    for u in units:
        seg.feed(u)
    if end:
        seg.feed(PublicationEnded(generation, "done"))
    return seg, out


def tfdts(part: Part) -> dict[int, int]:
    """track_id -> baseMediaDecodeTime of a part's moof."""
    out: dict[int, int] = {}
    (moof,) = [(s, e) for t, s, e in iter_boxes(part.data) if t == b"moof"]
    for t, s, e in iter_boxes(part.data, *moof):
        if t != b"traf":
            continue
        track_id = tdt = 0
        for t2, s2, _ in iter_boxes(part.data, s, e):
            if t2 == b"tfhd":
                track_id = struct.unpack_from(">I", part.data, s2 + 4)[0]
            elif t2 == b"tfdt":
                tdt = struct.unpack_from(">Q", part.data, s2 + 4)[0]
        out[track_id] = tdt
    return out


def test_low_latency_parts_of_200ms_and_segments_at_each_1s_keyframe() -> None:
    _, out = run(synthetic_units(5.0))
    assert len(out.inits) == 1 and out.inits[0].codecs == "avc1.64001f,mp4a.40.2"
    assert [s.msn for s in out.segments] == [1, 2, 3, 4, 5]
    for s in out.segments[:-1]:
        assert s.duration == pytest.approx(1.0, abs=0.002)
        assert len(s.parts) == 5
        assert [p.independent for p in s.parts] == [True, False, False, False, False]
        assert all(p.duration == pytest.approx(0.2, abs=0.005) for p in s.parts)
        assert s.data == b"".join(p.data for p in s.parts)
        assert [p.index for p in s.parts] == list(range(5)) and {p.msn for p in s.parts} == {s.msn}
        assert not s.discontinuity and s.generation == 1 and s.init is out.inits[0]
    assert out.segments[1].program_date_time == pytest.approx(1_700_000_001.0)
    assert out.segments[2].start_pts == pytest.approx(2.0, abs=0.002)
    # every part went to the sink before its segment
    kinds = [k for k, _ in out.events]
    assert kinds[0] == "init" and kinds.count("part") == len(out.parts)
    assert kinds.index("segment") > kinds.index("part")


@pytest.mark.parametrize("fps", [30.0, 29.97, 25.0, 50.0, 60.0])
def test_no_part_lasts_longer_than_the_part_target(fps: float) -> None:
    """RFC 8216bis: a part MUST NOT exceed the Part Target Duration. With ms
    timestamps, a 30 fps part of six frames used to last 0.20037 s."""
    from realtime.hls.live import LiveHls

    live = LiveHls("s")
    _, out = run(synthetic_units(6.0, fps=fps), out=Collect())
    assert max(p.duration for p in out.parts) <= 0.2
    for p in out.parts:
        live.on_part(p)
    assert "#EXT-X-PART-INF:PART-TARGET=0.2\n" in live.media_playlist()


def test_standard_mode_one_second_parts_and_segments_at_the_first_keyframe_after_4s() -> None:
    part, segment = LATENCY_MODES["standard"]
    _, out = run(synthetic_units(13.0, gop_s=2.0), part=part, segment=segment)
    durations = [round(s.duration, 2) for s in out.segments]
    assert durations[:2] == [4.0, 4.0]
    assert all(len(s.parts) == 4 for s in out.segments[:2])
    assert [p.independent for p in out.segments[0].parts] == [True, False, True, False]


def test_a_long_gop_makes_segments_as_long_as_the_gop() -> None:
    _, out = run(synthetic_units(6.0, gop_s=2.0))
    assert [round(s.duration, 2) for s in out.segments[:2]] == [2.0, 2.0]
    assert sum(p.independent for p in out.segments[0].parts) == 1


def test_media_before_the_first_keyframe_is_dropped() -> None:
    units = [u for u in synthetic_units(3.0) if not (u.kind is TrackKind.VIDEO and u.dts == 0)]
    _, out = run(units)
    assert out.segments[0].parts[0].independent
    assert out.segments[0].program_date_time == pytest.approx(1_700_000_001.0)
    assert tfdts(out.parts[0])[1] == 0


def test_a_part_is_emitted_when_its_last_frame_arrives_not_one_frame_later() -> None:
    out = Collect()
    seg = Segmenter(None, out, part_target_s=0.2, segment_target_s=1.0)
    seg.feed(PublicationStarted(1, synthetic_tracks(audio=False), "test", 0.0))
    units = synthetic_units(1.0, audio=False)
    for i, u in enumerate(units[:6]):
        seg.feed(u)
        assert len(out.parts) == (1 if i == 5 else 0), i
    assert out.parts[0].duration == pytest.approx(0.2, abs=0.002)


def test_new_generation_continues_msn_with_a_discontinuity_and_a_monotonic_timeline() -> None:
    seg, out = run(synthetic_units(2.5))
    assert [s.msn for s in out.segments] == [1, 2, 3]
    assert out.segments[-1].duration == pytest.approx(0.5, abs=0.05)  # flushed short segment
    last: dict[int, int] = {}
    for p in out.parts:
        last.update(tfdts(p))
    # the publisher reconnects: its timestamps start again from a random value
    run(
        synthetic_units(2.0, start_ms=987_654, wallclock0=1_700_000_100.0),
        out=out,
        seg=seg,
        generation=2,
    )
    assert len(out.inits) == 1, "same tracks: no new init segment"
    after = out.segments[3]
    assert after.msn == 4 and after.discontinuity and after.generation == 2
    assert after.init is out.inits[0]
    assert not out.segments[4].discontinuity
    assert after.program_date_time == pytest.approx(1_700_000_100.0)
    assert after.start_pts == pytest.approx(
        out.segments[2].start_pts + out.segments[2].duration, abs=0.05
    )
    gen2_parts = [p for p in out.parts if p.msn >= 4]
    assert tfdts(gen2_parts[0])[1] >= 90_000 * 2.5 - 3000
    first: dict[int, int] = {}
    for p in reversed(gen2_parts):
        first.update(tfdts(p))
    assert first[1] > last[1] and first[2] > last[2]


def test_changed_tracks_get_a_new_init_segment() -> None:
    seg, out = run(synthetic_units(1.5))
    run(synthetic_units(1.5), out=out, seg=seg, generation=2, tracks=synthetic_tracks(audio=False))
    assert [i.generation for i in out.inits] == [1, 2]
    assert out.inits[1].codecs == "avc1.64001f"
    assert isinstance(out.inits[1], InitSegment)
    first2 = next(s for s in out.segments if s.generation == 2)
    assert first2.init is out.inits[1] and first2.discontinuity


def test_audio_keeps_flowing_in_parts_when_video_stops() -> None:
    units = [u for u in synthetic_units(4.0) if u.kind is TrackKind.AUDIO or u.dts < 1500]
    _, out = run(units, end=False)
    late = [p for p in out.parts if p.msn >= 1]
    assert len(late) >= 10, "audio after the video stopped still comes out in parts"
    assert all(p.duration <= 0.25 for p in late)


def test_audio_only_streams_have_independent_parts() -> None:
    _, out = run(synthetic_units(3.0, video=False), tracks=synthetic_tracks(video=False))
    assert out.inits[0].codecs == "mp4a.40.2"
    assert out.parts and all(p.independent for p in out.parts)
    assert out.segments[0].duration == pytest.approx(1.0, abs=0.03)


def test_unsupported_tracks_are_skipped_and_nothing_breaks() -> None:
    from ingest.hub import TrackInfo

    hevc = (TrackInfo(TrackKind.VIDEO, "hevc", 1000, b""),)
    _, out = run(synthetic_units(1.0), tracks=hevc)
    assert out.inits == [] and out.parts == []


async def test_run_reads_the_hub_flushes_stalls_and_ends_the_sink() -> None:
    hub = Hub()
    stream = hub.stream("s")
    out = Collect()
    pub = hub.publish("s", synthetic_tracks(), source="test")
    reader = stream.subscribe("hls", 512)
    seg = Segmenter(reader, out, part_target_s=0.2, segment_target_s=1.0, stall_flush_s=0.1)
    task = asyncio.create_task(seg.run())
    units = synthetic_units(0.5)
    for u in units[:4]:  # less than a part, then the publisher stalls
        pub.write(u)
    await asyncio.sleep(0.3)
    assert len(out.parts) == 1, "a stalled publisher's partial part is flushed"
    pub.close("gone")
    await asyncio.sleep(0.05)
    reader.close()
    await asyncio.wait_for(task, 2)
    assert out.ended == 1


async def test_a_stall_does_not_cut_a_short_dependent_part() -> None:
    """RFC 8216bis 4.4.4.9: only an independent part (or one of 85 % of the part
    target) may come out short; a stall after two frames of a dependent part
    holds them until the publisher goes on, or its publication ends."""
    hub = Hub()
    stream = hub.stream("s")
    out = Collect()
    pub = hub.publish("s", synthetic_tracks(audio=False), source="test")
    reader = stream.subscribe("hls", 512)
    seg = Segmenter(reader, out, part_target_s=0.2, segment_target_s=1.0, stall_flush_s=0.1)
    task = asyncio.create_task(seg.run())
    units = synthetic_units(1.0, audio=False)
    for u in units[:8]:  # a whole first part (6 frames), then 2 frames of the next
        pub.write(u)
    await asyncio.sleep(0.35)
    assert [p.independent for p in out.parts] == [True], "the short dependent part waits"
    for u in units[8:12]:  # the publisher goes on: the part fills up and comes out whole
        pub.write(u)
    await asyncio.sleep(0.05)
    assert len(out.parts) == 2 and out.parts[1].duration >= 0.85 * 0.2
    pub.close("gone")
    await asyncio.sleep(0.05)
    reader.close()
    await asyncio.wait_for(task, 2)


async def test_the_stall_check_wakes_only_when_a_part_could_be_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A healthy stream keeps pushing its stall deadline away: the shared check
    then wakes about once per `stall_flush_s`, not every tick; a stream that
    stalls among healthy ones is still flushed on time, and so is one whose
    `stall_flush_s` is shorter than the deadline already armed."""
    ticks = 0
    real_tick = _StallWatch._tick

    def counting_tick(self: _StallWatch) -> None:
        nonlocal ticks
        ticks += 1
        real_tick(self)

    monkeypatch.setattr(_StallWatch, "_tick", counting_tick)
    hub = Hub()
    healthy_pub = hub.publish("healthy", synthetic_tracks(), source="test")

    def segmenter(name: str, out: Collect, part: float, stall: float) -> Segmenter:
        reader = hub.stream(name).subscribe("hls", 512)
        return Segmenter(
            reader, out, part_target_s=part, segment_target_s=5 * part, stall_flush_s=stall
        )

    healthy = segmenter("healthy", Collect(), 1.0, 1.0)
    stalling_pub = hub.publish("stalling", synthetic_tracks(), source="test")
    part_times: list[float] = []

    class Timed(Collect):
        def on_part(self, part: Part) -> None:
            part_times.append(asyncio.get_running_loop().time())
            super().on_part(part)

    stalling_out = Timed()
    stalling = segmenter("stalling", stalling_out, 0.2, 0.15)
    tasks = [asyncio.create_task(healthy.run())]
    await asyncio.sleep(0)  # the healthy one arms the shared timer ~1 s out
    tasks.append(asyncio.create_task(stalling.run()))
    units = synthetic_units(1.2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    stalled_at = 0.0
    for i, u in enumerate(units):
        healthy_pub.write(u)
        if i < 4:
            stalling_pub.write(u)
            stalled_at = loop.time()
        await asyncio.sleep(0.01)
    elapsed = loop.time() - start
    assert len(stalling_out.parts) == 1, "the stalled stream's part was flushed"
    flushed_after = part_times[0] - stalled_at
    assert flushed_after < 0.15 + 0.1, flushed_after
    assert ticks <= elapsed / 0.15 + 3, (ticks, elapsed)
    for seg, pub in ((healthy, healthy_pub), (stalling, stalling_pub)):
        pub.close("done")
        seg.reader.close()  # type: ignore[union-attr]
    await asyncio.wait_for(asyncio.gather(*tasks), 2)


async def test_run_feeds_inline_and_a_failing_sink_ends_only_the_segmenter() -> None:
    class Failing(Collect):
        def on_part(self, part: Part) -> None:
            raise RuntimeError("sink broke")

    hub = Hub()
    stream = hub.stream("s")
    out = Failing()
    pub = hub.publish("s", synthetic_tracks(), source="test")
    reader = stream.subscribe("hls", 512)
    seg = Segmenter(reader, out, part_target_s=0.2, segment_target_s=1.0)
    task = asyncio.create_task(seg.run())
    await asyncio.sleep(0)  # run() drained the queue and consumes inline now
    for u in synthetic_units(1.0):
        pub.write(u)  # the publisher never sees the sink's error
    with pytest.raises(RuntimeError, match="sink broke"):
        await asyncio.wait_for(task, 2)
    assert out.ended == 1


def test_a_continued_playlist_goes_on_from_where_another_server_left_it() -> None:
    """A failover: the new server's playlist starts at the next media sequence
    number with a discontinuity, its discontinuity sequence going on."""
    from realtime.hls.live import LiveHls
    from realtime.segments import Continuation

    live = LiveHls("s", resume=Continuation(next_msn=42, discontinuity_sequence=3))
    seg = Segmenter(None, live, part_target_s=0.2, segment_target_s=1.0, start_msn=42)
    run(synthetic_units(3.5), seg=seg, out=live, end=False)  # type: ignore[arg-type]
    text = live.media_playlist()
    assert "#EXT-X-MEDIA-SEQUENCE:42\n" in text
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:3\n" in text
    first_segment = text.index("#EXTINF")
    assert text.index("#EXT-X-DISCONTINUITY\n") < first_segment  # before msn 42
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert live.first_msn == 42 and live.last_complete_msn >= 44


def test_a_continued_playlist_serves_the_earlier_server_s_segments_unlisted() -> None:
    """Segments before the continuation (read back from the recording) are served
    by URI and never listed; later ones are refused; they go once this server's
    own segments fill the window."""
    from realtime.hls import responder
    from realtime.hls.live import LiveHls
    from realtime.hls.responder import Reply
    from realtime.segments import Continuation

    live = LiveHls("s", window_s=8.0, resume=Continuation(next_msn=42, discontinuity_sequence=3))
    live.keep_earlier(40, b"forty")
    live.keep_earlier(41, b"forty-one")
    live.keep_earlier(42, b"ours, not theirs")
    seg = Segmenter(None, live, part_target_s=0.2, segment_target_s=1.0, start_msn=42)
    run(synthetic_units(2.5), seg=seg, out=live, end=False)  # type: ignore[arg-type]
    reply = responder.child(live, "41.m4s", {}, "")
    assert isinstance(reply, Reply) and reply.status == 200 and reply.body == b"forty-one"
    assert live.segment_bytes(42) != b"ours, not theirs"
    assert "#EXT-X-MEDIA-SEQUENCE:42\n" in live.media_playlist()
    assert "41.m4s" not in live.media_playlist()

    later = synthetic_units(12.0, start_ms=2500)
    run(later, seg=seg, out=live, end=False)  # type: ignore[arg-type]
    assert live.segment_bytes(41) is None  # the window is this server's own now
    reply = responder.child(live, "41.m4s", {}, "")
    assert isinstance(reply, Reply) and reply.status == 404


def test_a_fresh_playlist_starts_at_one_without_a_discontinuity() -> None:
    """At 1, not 0: hls.js makes no blocking reload while the last complete
    segment's number is 0 (see FIRST_MSN)."""
    from realtime.hls.live import LiveHls

    live = LiveHls("s")
    seg = Segmenter(None, live, part_target_s=0.2, segment_target_s=1.0)
    run(synthetic_units(2.5), seg=seg, out=live, end=False)  # type: ignore[arg-type]
    text = live.media_playlist()
    assert FIRST_MSN == 1
    assert "#EXT-X-MEDIA-SEQUENCE:1\n" in text and "#EXT-X-DISCONTINUITY\n" not in text
    assert '#EXT-X-PART:DURATION=0.20000,URI="1.0.m4s",INDEPENDENT=YES' in text
