"""The signaling schema: strict parsing, clear error codes, stable JSON."""

from __future__ import annotations

import json

import pytest

from realtime.rooms import signaling as sig

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"join"}', sig.Join()),
        ('{"type":"join","auto_subscribe":false}', sig.Join(auto_subscribe=False)),
        (
            '{"type":"publish","tracks":[{"mid":"0","kind":"audio","source":"microphone"}]}',
            sig.Publish((sig.TrackSpec("0", "audio", "microphone"),)),
        ),
        ('{"type":"unpublish","track_ids":["TR_1"]}', sig.Unpublish(("TR_1",))),
        ('{"type":"subscribe","track_ids":["TR_1","TR_2"]}', sig.Subscribe(("TR_1", "TR_2"))),
        ('{"type":"unsubscribe","track_ids":["TR_1"]}', sig.Unsubscribe(("TR_1",))),
        ('{"type":"mute","track_id":"TR_1","muted":true}', sig.Mute("TR_1", True)),
        ('{"type":"leave"}', sig.Leave()),
        (json.dumps({"type": "offer", "pc": "publish", "sdp": SDP}), sig.Offer("publish", SDP)),
        (
            json.dumps({"type": "answer", "pc": "subscribe", "sdp": SDP}),
            sig.Answer("subscribe", SDP),
        ),
    ],
)
def test_valid_client_messages_parse(text: str, expected: sig.ClientMessage) -> None:
    assert sig.parse_client(text) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "bad_message"),
        ("not json", "bad_message"),
        ("[1,2]", "bad_message"),
        ('{"no":"type"}', "bad_message"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"type":"join","auto_subscribe":"yes"}', "bad_message"),
        ('{"type":"join","extra":1}', "bad_message"),
        ('{"type":"publish","tracks":[]}', "bad_message"),
        ('{"type":"publish","tracks":[{"mid":"0","kind":"smell"}]}', "bad_message"),
        (
            '{"type":"publish","tracks":[{"mid":"0","kind":"audio"},{"mid":"0","kind":"video"}]}',
            "bad_message",
        ),
        ('{"type":"publish","tracks":[{"mid":"0","kind":"audio","source":"tv"}]}', "bad_message"),
        ('{"type":"mute","track_id":"TR_1"}', "bad_message"),
        ('{"type":"subscribe","track_ids":"TR_1"}', "bad_message"),
        ('{"type":"subscribe","track_ids":[1]}', "bad_message"),
        ('{"type":"offer","pc":"subscribe","sdp":"v=0"}', "bad_message"),
        ('{"type":"offer","pc":"publish","sdp":"hello"}', "bad_message"),
        ('{"type":"answer","pc":"publish","sdp":"v=0"}', "bad_message"),
        ('{"type":"offer","pc":"publish"}', "bad_message"),
        (b"\xff\xfe", "bad_message"),
        ("{" * 100000, "message_too_large"),
        ('{"type":"mute","track_id":"' + "x" * 200 + '","muted":true}', "bad_message"),
    ],
)
def test_malformed_messages_raise_one_error_type(text: str | bytes, code: str) -> None:
    with pytest.raises(sig.SignalingError) as e:
        sig.parse_client(text)
    assert e.value.code == code and e.value.message


def test_server_messages_serialise_to_the_documented_shape() -> None:
    joined = sig.Joined(
        "bob", "RM_1", (sig.ParticipantDesc("alice", (sig.TrackDesc("TR_1", "video", "camera"),)),)
    )
    assert json.loads(sig.to_json(joined)) == {
        "type": "joined",
        "identity": "bob",
        "room_id": "RM_1",
        "can_publish": True,
        "can_subscribe": True,
        "participants": [
            {
                "identity": "alice",
                "tracks": [
                    {"track_id": "TR_1", "kind": "video", "source": "camera", "muted": False}
                ],
            }
        ],
    }
    offer = sig.Offer("subscribe", SDP, (sig.MidMapping("0", "TR_1", "alice", "video"),))
    assert json.loads(sig.to_json(offer))["tracks"] == [
        {"mid": "0", "track_id": "TR_1", "identity": "alice", "kind": "video"}
    ]
    assert json.loads(sig.to_json(sig.Error("forbidden", "no"))) == {
        "type": "error",
        "code": "forbidden",
        "message": "no",
    }
    assert json.loads(sig.to_json(sig.ParticipantLeft("a", "left")))["type"] == "participant_left"
