"""The RFC 8216bis checker the live conformance test relies on catches what it
claims to: each rule broken on purpose is reported, a conformant playlist is not."""

from __future__ import annotations

import pytest

from tests.support.hls_rules import check_media, check_multivariant, check_reload

GOOD = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6,PART-HOLD-BACK=0.6
#EXT-X-PART-INF:PART-TARGET=0.2
#EXT-X-MEDIA-SEQUENCE:3
#EXT-X-MAP:URI="init-1.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-12-07T17:15:20.553Z
#EXTINF:1.00000,
3.m4s
#EXTINF:1.00000,
4.m4s
#EXTINF:1.00000,
5.m4s
#EXT-X-PART:DURATION=0.20000,URI="6.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.20000,URI="6.1.m4s"
#EXT-X-PART:DURATION=0.20000,URI="6.2.m4s"
#EXT-X-PART:DURATION=0.20000,URI="6.3.m4s"
#EXT-X-PART:DURATION=0.10000,URI="6.4.m4s"
#EXTINF:0.90000,
6.m4s
#EXT-X-PART:DURATION=0.20000,URI="7.0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="7.1.m4s"
"""


def test_a_conformant_playlist_passes() -> None:
    assert check_media(GOOD) == []


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (('DURATION=0.20000,URI="6.1', 'DURATION=0.20400,URI="6.1'), "> PART-TARGET"),
        (('DURATION=0.20000,URI="6.2', 'DURATION=0.15000,URI="6.2'), "< 85 %"),
        (("PART-HOLD-BACK=0.6", "PART-HOLD-BACK=0.3"), "2 x PART-TARGET"),
        (("CAN-SKIP-UNTIL=6", "CAN-SKIP-UNTIL=5"), "6 x target"),
        (("#EXTINF:1.00000,\n5", "#EXTINF:1.60000,\n5"), "> target"),
        (("#EXT-X-PART-INF:PART-TARGET=0.2\n", ""), "without EXT-X-PART-INF"),
        (('#EXT-X-MAP:URI="init-1.mp4"\n', ""), "before any EXT-X-MAP"),
        (("#EXT-X-TARGETDURATION:1", "#EXT-X-TARGETDURATION:1.5"), "decimal integer"),
        (("2026-12-07T17:15", "yesterday at 17:15"), "ISO 8601"),
        (("#EXTINF:0.90000,", "#EXTINF:0.95000,"), "parts add up"),
        (
            ("#EXT-X-PRELOAD-HINT", '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="x"\n#EXT-X-PRELOAD-HINT'),
            "one PRELOAD-HINT",
        ),
    ],
)
def test_each_broken_rule_is_reported(change: tuple[str, str], rule: str) -> None:
    old, new = change
    assert old in GOOD
    violations = check_media(GOOD.replace(old, new, 1))
    assert any(rule in v for v in violations), violations


def test_a_short_last_part_or_independent_part_is_allowed() -> None:
    # 6.4 (0.1 s) is its segment's last part; a short independent part is fine too
    assert check_media(GOOD.replace('0.20000,URI="7.0', '0.05000,URI="7.0')) == []


def test_a_live_playlist_that_dropped_segments_keeps_three_target_durations() -> None:
    short = GOOD.replace("#EXTINF:1.00000,\n3.m4s\n#EXTINF:1.00000,\n4.m4s\n", "")
    assert any("3 x target" in v for v in check_media(short))
    # ...but a new playlist (its media sequence still the server's first) may be short
    assert not any("3 x target" in v for v in check_media(short, first_msn=3))


def test_a_reload_may_only_append_and_drop_from_the_front() -> None:
    later = GOOD.replace("#EXT-X-MEDIA-SEQUENCE:3", "#EXT-X-MEDIA-SEQUENCE:4").replace(
        "#EXTINF:1.00000,\n3.m4s\n", ""
    )
    assert check_reload(GOOD, later) == []
    renamed = GOOD.replace("5.m4s", "5b.m4s")
    assert any("segment 5 was 5.m4s" in v for v in check_reload(GOOD, renamed))
    retargeted = GOOD.replace("TARGETDURATION:1", "TARGETDURATION:2")
    assert any("TARGETDURATION changed" in v for v in check_reload(GOOD, retargeted))


def test_multivariant_rules() -> None:
    good = '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS="avc1.64001f,mp4a.40.2"\nm.m3u8\n'
    assert check_multivariant(good) == []
    assert any("BANDWIDTH" in v for v in check_multivariant(good.replace("BANDWIDTH=800000,", "")))
    assert any("URI" in v for v in check_multivariant(good.replace("m.m3u8\n", "")))
