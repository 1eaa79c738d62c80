"""The asset manifest's JSON: what a live recording rewrites every few seconds."""

from __future__ import annotations

import json

from vod.manifest import Manifest, SegmentEntry


def entry(i: int, generation: int = 1) -> SegmentEntry:
    return SegmentEntry(
        index=i,
        uri=f"seg{i:06d}-g{generation}.m4s",
        duration=1.001,
        generation=generation,
        discontinuity=i == 3,
        msn=40 + i,
        program_date_time=1.8e9 + i,
        start_pts=i * 1.001,
        size=300_000 + i,
    )


def encoded_from_scratch(m: Manifest) -> bytes:
    """What the same manifest writes when it never encoded any of its entries."""
    return Manifest(
        kind=m.kind,
        inits=m.inits,
        segments=[SegmentEntry(**vars_of(s)) for s in m.segments],
        final=m.final,
        created_at=m.created_at,
        finalized_at=m.finalized_at,
        dropped=m.dropped,
    ).to_json()


def vars_of(s: SegmentEntry) -> dict[str, object]:
    return {name: getattr(s, name) for name in SegmentEntry.__dataclass_fields__}


def test_json_round_trips() -> None:
    m = Manifest(segments=[entry(i) for i in range(5)], dropped=2)
    back = Manifest.from_json(m.to_json())
    assert back.segments == m.segments and back.dropped == 2
    doc = json.loads(m.to_json())
    assert list(doc) == [
        "version",
        "kind",
        "final",
        "created_at",
        "finalized_at",
        "dropped",
        "inits",
        "segments",
    ]
    assert doc["segments"][3] == vars_of(entry(3))


def test_saving_again_after_appends_writes_what_a_fresh_encoding_would() -> None:
    m = Manifest(segments=[entry(i) for i in range(10)])
    m.to_json()
    m.segments.append(entry(10))
    m.segments.append(entry(11))
    m.dropped = 1
    assert m.to_json() == encoded_from_scratch(m)
    assert [s["index"] for s in json.loads(m.to_json())["segments"]] == list(range(12))


def test_an_entry_replaced_or_removed_is_encoded_anew() -> None:
    m = Manifest(segments=[entry(i) for i in range(10)])
    m.to_json()
    m.segments[4] = entry(4, generation=2)
    assert json.loads(m.to_json())["segments"][4]["generation"] == 2
    assert m.to_json() == encoded_from_scratch(m)
    del m.segments[6:]
    assert m.to_json() == encoded_from_scratch(m)
    m.segments = [entry(0, generation=3)]
    assert json.loads(m.to_json())["segments"] == [vars_of(entry(0, generation=3))]
    m.segments = []
    assert json.loads(m.to_json())["segments"] == []
