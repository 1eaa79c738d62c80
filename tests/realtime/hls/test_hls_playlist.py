"""LL-HLS playlists rendered from a live window parse with the `m3u8` package and carry
every RFC 8216bis tag the players rely on."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import m3u8
import pytest

from ingest.hub import PublicationEnded, PublicationStarted
from realtime.hls.live import LiveHls
from realtime.hls.playlist import (
    MediaPlaylistState,
    PartEntry,
    SegmentEntry,
    format_pdt,
    render_media_playlist,
    target_duration_for,
)
from realtime.segmenter import Segmenter
from tests.realtime.media import demux, synthetic_tracks, synthetic_units


def live_with(
    seconds: float, *, gop_s: float = 1.0, end: bool = False, mode: str = "low"
) -> LiveHls:
    live = LiveHls("s", latency_mode=mode)
    seg = Segmenter(
        None, live, part_target_s=live.part_target_s, segment_target_s=live.segment_target_s
    )
    seg.feed(PublicationStarted(1, synthetic_tracks(), "test", 0.0))
    for u in synthetic_units(seconds, gop_s=gop_s):
        seg.feed(u)
    if end:
        seg.feed(PublicationEnded(1, "done"))
        seg.close()
    return live


def test_media_playlist_carries_the_ll_hls_tags() -> None:
    live = live_with(12.5)
    text = live.media_playlist()
    pl = m3u8.loads(text)
    assert pl.version >= 9
    assert pl.target_duration == 1
    assert pl.media_sequence == 1 and pl.discontinuity_sequence == 0
    sc = pl.server_control
    assert sc.can_block_reload == "YES"
    assert sc.part_hold_back >= 3 * pl.part_inf.part_target - 1e-9
    assert sc.can_skip_until >= 6 * pl.target_duration
    assert pl.part_inf.part_target == pytest.approx(0.2)
    complete = [s for s in pl.segments if s.uri]
    assert [s.uri for s in complete] == [f"{n}.m4s" for n in range(1, 13)]
    assert all(s.duration == pytest.approx(1.0, abs=0.01) for s in complete)
    assert pl.segments[0].init_section.uri == "init-1.mp4"
    assert all(s.program_date_time is not None for s in complete)
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:") == len(pl.segments)  # the open one too
    assert pl.segments[1].program_date_time.timestamp() == pytest.approx(1_700_000_001.0, abs=0.002)
    # parts only for the segments within 3 target durations of the end (and the open one)
    with_parts = [s for s in pl.segments if s.parts]
    assert not pl.segments[0].parts
    assert sum(s.duration or 0 for s in with_parts if s.uri) + 0.4 >= 3 * pl.target_duration
    open_segment = pl.segments[-1]
    assert open_segment.uri is None and [p.uri for p in open_segment.parts] == [
        "13.0.m4s",
        "13.1.m4s",
    ]
    for s in with_parts:
        assert s.parts[0].independent == "YES"
        assert all(p.independent is None for p in s.parts[1:])
        assert all(p.duration == pytest.approx(0.2, abs=0.005) for p in s.parts)
    assert pl.preload_hint.hint_type == "PART" and pl.preload_hint.uri == "13.2.m4s"
    assert not pl.is_endlist
    assert "#EXT-X-ENDLIST" not in text


def test_every_child_uri_carries_the_suffix() -> None:
    live = live_with(5.5)
    text = live.media_playlist(suffix="?token=abc.def")
    uris = [line for line in text.splitlines() if line and not line.startswith("#")]
    uris += re.findall(r'URI="([^"]+)"', text)
    assert len(uris) > 10
    assert all(u.endswith("?token=abc.def") for u in uris)
    mv = live.multivariant_playlist("s/media.m3u8", suffix="?token=abc.def")
    assert "s/media.m3u8?token=abc.def" in mv.splitlines()


def test_ended_playlist_has_endlist_and_no_preload_hint() -> None:
    live = live_with(3.3, end=True)
    pl = m3u8.loads(live.media_playlist())
    assert pl.is_endlist and pl.preload_hint is None
    assert all(s.uri for s in pl.segments)
    assert pl.segments[-1].duration == pytest.approx(0.3, abs=0.05)


def test_discontinuity_after_a_reconnect_and_its_sequence_after_eviction() -> None:
    live = LiveHls("s", window_s=8.0)
    seg = Segmenter(None, live, part_target_s=0.2, segment_target_s=1.0)
    seg.feed(PublicationStarted(1, synthetic_tracks(), "test", 0.0))
    for u in synthetic_units(3.0):
        seg.feed(u)
    seg.feed(PublicationEnded(1, "dropped"))
    seg.feed(PublicationStarted(2, synthetic_tracks(), "test", 0.0))
    for u in synthetic_units(2.5, start_ms=50_000):
        seg.feed(u)
    pl = m3u8.loads(live.media_playlist())
    flags = [s.discontinuity for s in pl.segments]
    assert flags == [False, False, False, True, False, False]
    assert pl.segments[3].init_section.uri == "init-1.mp4"
    assert pl.media_sequence == 1 and pl.discontinuity_sequence == 0
    for u in synthetic_units(9.0, start_ms=52_500):
        seg.feed(u)
    pl = m3u8.loads(live.media_playlist())
    assert pl.media_sequence > 3 and pl.discontinuity_sequence == 1
    assert not any(s.discontinuity for s in pl.segments)


def test_delta_update_skips_old_segments_but_not_the_last_can_skip_until_seconds() -> None:
    live = live_with(20.5)
    full = m3u8.loads(live.media_playlist())
    text = live.media_playlist(skip=True)
    delta = m3u8.loads(text)
    skipped = delta.skip.skipped_segments
    assert skipped > 0
    assert delta.media_sequence == full.media_sequence
    assert len(delta.segments) + skipped == len(full.segments)
    kept = sum(s.duration or sum(p.duration for p in s.parts) for s in delta.segments)
    assert kept >= full.server_control.can_skip_until
    assert delta.segments[0].init_section is not None
    assert delta.segments[0].uri == full.segments[skipped].uri
    # hls.js wants DISCONTINUITY-SEQUENCE before EXT-X-SKIP
    assert text.index("#EXT-X-DISCONTINUITY-SEQUENCE") < text.index("#EXT-X-SKIP")


def test_target_duration_fits_long_segments() -> None:
    live = live_with(7.0, gop_s=2.0)
    pl = m3u8.loads(live.media_playlist())
    assert pl.target_duration == 2
    assert all(round(s.duration) <= pl.target_duration for s in pl.segments if s.uri)
    assert target_duration_for(1.0, [1.49]) == 1 and target_duration_for(1.0, [1.5]) == 2
    assert target_duration_for(4.0, []) == 4


def test_standard_latency_mode() -> None:
    live = live_with(14.0, gop_s=2.0, mode="standard")
    pl = m3u8.loads(live.media_playlist())
    assert pl.part_inf.part_target == pytest.approx(1.0)
    assert pl.target_duration == 4
    assert pl.server_control.part_hold_back >= 3.0


def test_window_is_bounded() -> None:
    live = live_with(70.0)
    pl = m3u8.loads(live.media_playlist())
    total = sum(s.duration for s in pl.segments if s.uri)
    assert 29.0 <= total <= 32.0
    # 69 complete ones from msn 1, and the open one
    assert pl.media_sequence + len([s for s in pl.segments if s.uri]) == 70
    assert live.get_segment(1) is None and live.get_segment(60) is not None
    # memory is one copy of the window: a segment's bytes are its parts' payloads,
    # not joined until a client asks for it whole, so every part stays fetchable
    first = live.get_segment(pl.media_sequence)
    assert first is not None and live.get_part(first.msn, 0) is first.parts[0]
    assert first._joined is None
    assert first.size == len(first.data) == sum(len(p.data) for p in first.parts)


def test_multivariant_playlist(av_flv: Path) -> None:
    d = demux(av_flv)
    live = LiveHls("s")
    seg = Segmenter(None, live, part_target_s=0.2, segment_target_s=1.0)
    seg.feed(PublicationStarted(1, d.tracks, "test", 0.0))
    for u in d.units:
        seg.feed(u)
    mv = m3u8.loads(live.multivariant_playlist("s/media.m3u8"))
    assert mv.is_variant and len(mv.playlists) == 1
    info = mv.playlists[0].stream_info
    assert info.codecs == live.current_init.codecs  # type: ignore[union-attr]
    assert re.fullmatch(r"avc1\.64[0-9a-f]{4},mp4a\.40\.2", info.codecs)
    assert info.resolution == (320, 240)
    assert info.frame_rate == pytest.approx(30.0)
    assert 20_000 < info.bandwidth < 2_000_000
    assert mv.playlists[0].uri == "s/media.m3u8"


def test_render_functions_are_pure() -> None:
    state = MediaPlaylistState(
        target_duration=1,
        part_target=0.2,
        media_sequence=7,
        discontinuity_sequence=2,
        segments=(
            SegmentEntry(7, 1.0, (), 1_700_000_000.0, False, 3),
            SegmentEntry(
                8,
                0.4,
                (PartEntry(8, 0, 0.2, True), PartEntry(8, 1, 0.2, False)),
                1_700_000_001.0,
                True,
                4,
                complete=False,
            ),
        ),
        preload_hint=(8, 2),
        ended=False,
    )
    text = render_media_playlist(state)
    assert text == render_media_playlist(state)
    pl = m3u8.loads(text)
    assert pl.media_sequence == 7 and pl.discontinuity_sequence == 2
    assert re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text) == ["init-3.mp4", "init-4.mp4"]
    assert text.index("#EXT-X-DISCONTINUITY\n") < text.index('URI="8.0.m4s"')
    assert format_pdt(1_700_000_001.25) == "2023-11-14T22:13:21.250Z"


async def test_every_preload_hint_comes_to_exist_even_when_a_keyframe_overtakes_it() -> None:
    """RFC 8216bis: a client requests the hinted part and expects it. The hint names
    the open segment's next part; when a keyframe closes that segment first, the
    hinted URI answers with the part that came instead (the next segment's first)."""
    from realtime.hls import responder
    from realtime.hls.responder import Pending, Reply

    live = LiveHls("s", latency_mode="low")
    seg = Segmenter(
        None, live, part_target_s=live.part_target_s, segment_target_s=live.segment_target_s
    )
    seg.feed(PublicationStarted(1, synthetic_tracks(), "test", 0.0))
    waiting: dict[tuple[int, int], Pending] = {}
    answered: dict[tuple[int, int], Reply] = {}
    overtaken = 0
    for u in synthetic_units(6.0, gop_s=1.0):
        seg.feed(u)
        await asyncio.sleep(0)  # futures completed by the feed run their callbacks
        for key, pending in list(waiting.items()):
            if pending.future.done():
                step = pending.resume(False)
                if isinstance(step, Reply):
                    answered[key] = step
                    del waiting[key]
                else:
                    waiting[key] = step
        hint = live.next_part()
        if hint not in waiting and hint not in answered:
            step = responder.part(live, *hint)
            if isinstance(step, Reply):
                answered[hint] = step
            else:
                waiting[hint] = step
    for (msn, index), reply in answered.items():
        assert reply.status == 200, f"hinted {msn}.{index}.m4s answered {reply.status}"
        closed = live.get_segment(msn)
        if closed is not None and index == len(closed.parts):
            overtaken += 1
            assert reply.body == live.get_part(msn + 1, 0).data  # type: ignore[union-attr]
    assert overtaken >= 3, "the feed never had a keyframe overtake a hint"
    assert len(answered) > 20
