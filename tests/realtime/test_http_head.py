"""The edge's HTTP/1.1 head parser serves only plain body-less requests; anything
else is NotSimple (aiohttp answers it), and response heads are well formed."""

from __future__ import annotations

import pytest

from realtime.http_head import (
    MAX_HEAD_BYTES,
    NotSimple,
    header_lines,
    parse_request_head,
    response_head,
)

GET = b"GET /play/abc/media.m3u8?_HLS_msn=3&_HLS_part=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"


def test_a_plain_get_is_parsed_with_its_size_path_and_query() -> None:
    head = parse_request_head(GET + b"GET /next")
    assert head is not None
    assert head.method == "GET"
    assert head.path == "/play/abc/media.m3u8"
    assert head.query_string == "_HLS_msn=3&_HLS_part=1"
    assert head.headers == {"host": "x", "x-a": "1"}
    assert head.size == len(GET)
    assert head.keep_alive


def test_an_incomplete_head_waits_for_more_bytes() -> None:
    assert parse_request_head(GET[:-2]) is None
    assert parse_request_head(b"") is None


@pytest.mark.parametrize(
    ("raw", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
    ],
)
def test_keep_alive_follows_the_version_and_connection_header(raw: bytes, keep_alive: bool) -> None:
    head = parse_request_head(raw)
    assert head is not None and head.keep_alive is keep_alive


def test_the_first_of_a_repeated_field_wins() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nX-Request-Id: a\r\nx-request-id: b\r\n\r\n")
    assert head is not None and head.headers["x-request-id"] == "a"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET /  HTTP/1.1\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \x00\r\n\r\n",
        "GET /é HTTP/1.1\r\n\r\n".encode(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ],
)
def test_anything_but_a_plain_body_less_request_is_not_simple(raw: bytes) -> None:
    with pytest.raises(NotSimple):
        parse_request_head(raw)


def test_a_head_beyond_the_limit_is_not_simple_even_before_it_ends() -> None:
    with pytest.raises(NotSimple):
        parse_request_head(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES)


def test_a_response_head_carries_date_length_and_close_when_asked() -> None:
    fields = header_lines([("Content-Type", "text/plain")])
    head = response_head(200, fields, 5, keep_alive=False)
    text = head.decode()
    assert text.startswith("HTTP/1.1 200 OK\r\nDate: ")
    assert "\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" in text
    assert text.endswith("\r\n\r\n") and text.count("\r\n\r\n") == 1
    kept = response_head(503, "", 0, keep_alive=True).decode()
    assert kept.startswith("HTTP/1.1 503 Service Unavailable\r\n")
    assert "Connection" not in kept and kept.endswith("Content-Length: 0\r\n\r\n")
