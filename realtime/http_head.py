"""Sans-IO HTTP/1.1 request heads and response heads, for the playback edge.

Owns only the plain case: a request line and header fields terminated by an
empty line, with no body. It is a classifier, not the authority on HTTP: any
head it does not understand raises `NotSimple`, and the caller hands the bytes
to aiohttp, whose parser then answers (400, 431, ...) as it always does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate

MAX_HEAD_BYTES = 8192
"""Longer heads are not simple (aiohttp answers them; browsers send ~1 KiB)."""

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    503: "Service Unavailable",
}


class NotSimple(Exception):
    """The head is malformed, too large, or asks for more than this module handles."""


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    """"1.1" or "1.0"."""
    headers: dict[str, str]
    """Field names lowercased; the first occurrence of a repeated field wins."""
    size: int
    """Bytes of the head, including the empty line."""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query_string(self) -> str:
        return self.target.partition("?")[2]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "1.0":
            return "keep-alive" in connection
        return "close" not in connection


def parse_request_head(buf: bytes | bytearray) -> RequestHead | None:
    """The head at the start of `buf`; None while it is incomplete.

    Raises NotSimple for anything but a well-formed, body-less HTTP/1.0 or 1.1
    request within MAX_HEAD_BYTES."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        if len(buf) > MAX_HEAD_BYTES:
            raise NotSimple("head too large")
        return None
    try:
        text = bytes(buf[:end]).decode("ascii")
    except UnicodeDecodeError:
        raise NotSimple("non-ASCII head") from None
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf or "\x00" in text:
        raise NotSimple("bare CR or LF, or NUL")
    lines = text.split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3:
        raise NotSimple("bad request line")
    method, target, proto = request_line
    if proto not in ("HTTP/1.1", "HTTP/1.0") or not target.startswith("/"):
        raise NotSimple("bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        # no empty names, no whitespace before the colon, no obsolete line folding
        if not sep or not name or name[0] in " \t" or name[-1] in " \t":
            raise NotSimple("bad header field")
        headers.setdefault(name.lower(), value.strip(" \t"))
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise NotSimple("request has a body")
    if "expect" in headers or "upgrade" in headers:
        raise NotSimple("expect/upgrade")
    return RequestHead(method, target, proto[5:], headers, end + 4)


class _DateCache:
    """The Date header value, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True)
        return self._value


_date = _DateCache()


def header_lines(headers: list[tuple[str, str]]) -> str:
    """Header fields rendered once, for `response_head` (answers repeat them)."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


def response_head(status: int, fields: str, content_length: int, *, keep_alive: bool) -> bytes:
    """An HTTP/1.1 response head: status line, Date, `fields` (from `header_lines`),
    Content-Length, and Connection: close unless kept alive."""
    close = "" if keep_alive else "Connection: close\r\n"
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nDate: {_date.get()}\r\n"
        f"{fields}Content-Length: {content_length}\r\n{close}\r\n"
    ).encode("latin-1")
