"""VOD/DVR playlists and gaps come from the manifest alone; finalising is flat in length."""

from __future__ import annotations

import time

import m3u8

from vod.blobstore import BlobStore
from vod.manifest import InitEntry, Manifest, SegmentEntry, save_manifest
from vod.playlist import gaps, render_media_playlist, render_multivariant_playlist
from vod.recorder import finalize_recording


def manifest_of(durations: list[tuple[int, float, float]], final: bool = False) -> Manifest:
    """(generation, duration, program_date_time) per segment."""
    m = Manifest(final=final)
    for gen in sorted({g for g, _, _ in durations}):
        m.inits.append(InitEntry(gen, f"init-g{gen}.mp4", "avc1.64001f,mp4a.40.2", 1280, 720, 1))
    prev = None
    for i, (gen, dur, pdt) in enumerate(durations):
        m.segments.append(
            SegmentEntry(
                i,
                f"seg{i:06d}-g{gen}.m4s",
                dur,
                gen,
                discontinuity=prev is not None and prev != gen,
                msn=i,
                program_date_time=pdt,
            )
        )
        prev = gen
    return m


def test_target_duration_rounds_the_longest_segment() -> None:
    assert manifest_of([(0, 2.0, 0), (0, 2.49, 2)]).target_duration == 2
    assert manifest_of([(0, 2.0, 0), (0, 2.5, 2)]).target_duration == 3


def test_gaps_are_wall_clock_holes_at_discontinuities() -> None:
    m = manifest_of([(0, 2, 100), (0, 2, 102), (1, 2, 110), (1, 2, 112), (2, 2, 114)])
    assert gaps(m) == [
        {"at_s": 4.0, "duration_s": 6.0, "reason": "reconnect"},
        {"at_s": 8.0, "duration_s": 0.0, "reason": "reconnect"},
    ]
    assert m.summary()["gaps"] == gaps(m)


def test_program_date_time_marks_the_start_and_each_discontinuity() -> None:
    text = render_media_playlist(manifest_of([(0, 2, 100), (0, 2, 102), (1, 2, 110)]))
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:") == 2
    assert "#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:01:40.000Z" in text
    parsed = m3u8.loads(text)
    assert parsed.segments[2].discontinuity and parsed.segments[2].init_section.uri == "init-g1.mp4"


def test_uri_prefix_and_token_suffix_reach_every_uri() -> None:
    text = render_media_playlist(
        manifest_of([(0, 2, 1), (1, 2, 9)], final=True), uri_prefix="pb1/", suffix="?token=T"
    )
    uris = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert uris == ["pb1/seg000000-g0.m4s?token=T", "pb1/seg000001-g1.m4s?token=T"]
    assert text.count('URI="pb1/init-g') == 2 and text.count("?token=T") == 4


def test_an_empty_live_asset_renders_a_valid_waiting_playlist() -> None:
    parsed = m3u8.loads(render_media_playlist(Manifest()))
    assert parsed.segments == [] and not parsed.is_endlist


def test_multivariant_names_codecs_and_resolution() -> None:
    text = render_multivariant_playlist(manifest_of([(0, 2, 1)]), "pb1.m3u8", suffix="?token=T")
    assert 'CODECS="avc1.64001f,mp4a.40.2"' in text and "RESOLUTION=1280x720" in text
    assert text.rstrip().endswith("pb1.m3u8?token=T")


async def test_finalising_a_60_minute_recording_takes_well_under_2_s(blobs: BlobStore) -> None:
    long = manifest_of([(0, 1.0, 1000 + i) for i in range(3600)])
    await save_manifest(blobs, "assets/long", long)
    await blobs.put("assets/long/init-g0.mp4", b"init")
    t0 = time.perf_counter()
    m = await finalize_recording(blobs, "assets/long")
    elapsed = time.perf_counter() - t0
    assert m.final and len(m.segments) == 3600
    assert elapsed < 2.0
    text = render_media_playlist(m)
    assert text.rstrip().endswith("#EXT-X-ENDLIST") and text.count("#EXTINF") == 3600


def test_media_keys_accept_only_asset_media_names() -> None:
    import pytest

    from vod.blobstore import BlobNotFound
    from vod.manifest import content_type_for, media_key

    assert media_key("assets/a1", "seg000003-g1.m4s") == "assets/a1/seg000003-g1.m4s"
    assert media_key("assets/a1", "init-g0.mp4") == "assets/a1/init-g0.mp4"
    for bad in ["manifest.json", "../a2/init-g0.mp4", "download.mp4", "seg1.m4s", "x/init-g0.mp4"]:
        with pytest.raises(BlobNotFound):
            media_key("assets/a1", bad)
    assert content_type_for("seg000000-g0.m4s") == "video/iso.segment"
    assert content_type_for("init-g0.mp4") == "video/mp4"
