"""The SRT streamid: the stream key, plain or in the Access Control syntax."""

from __future__ import annotations

import pytest

from ingest.srt import libsrt as srt
from ingest.srt.streamid import StreamId, StreamIdError, parse_streamid


def test_a_plain_streamid_is_the_stream_key() -> None:
    assert parse_streamid("sk_abc") == StreamId("sk_abc")


def test_the_access_control_form_names_the_key_in_r() -> None:
    assert parse_streamid("#!::r=sk_abc,m=publish") == StreamId("sk_abc", "publish")
    assert parse_streamid("#!::u=obs,r=sk_abc,s=1,h=tv.example") == StreamId("sk_abc", user="obs")
    assert parse_streamid("#!::r=sk_abc,t=stream,myapp=1").key == "sk_abc"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", srt.REJX_BAD_REQUEST),
        ("#!::m=publish", srt.REJX_BAD_REQUEST),
        ("#!::r=sk_abc,m=request", srt.REJX_BAD_MODE),
        ("#!::r=sk_abc,t=file", srt.REJX_NOTSUP_MEDIA),
        ("#!::r=sk_abc,x=1", srt.REJX_KEY_NOTSUP),
        ("#!::r=sk_abc,broken", srt.REJX_BAD_REQUEST),
        ("k" * 513, srt.REJX_BAD_REQUEST),
    ],
)
def test_what_cannot_be_read_is_refused_with_a_reason(raw: str, reason: int) -> None:
    with pytest.raises(StreamIdError) as err:
        parse_streamid(raw)
    assert err.value.reason == reason
