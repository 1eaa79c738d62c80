"""Admission of WebRTC sessions (WHIP publishers, WHEP viewers): caps on how
many a service holds at once, per stream and per client address, so a flood of
offers cannot exhaust ports, threads or memory.

Each session costs UDP sockets, a DTLS handshake and a task or more; one that
never connects lives until the pre-connect timeout. `admit` is checked before
any of that is spent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ingest.addresses import client_subject
from ingest.webrtc.config import WebRtcConfig


class TooManySessions(Exception):
    """Refused by a cap: `status` 503 (the service or the stream is full) or
    429 (this client address holds its share)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CountedSession(Protocol):
    live_stream_id: str
    remote: str


def admit(
    sessions: Iterable[CountedSession],
    config: WebRtcConfig,
    *,
    live_stream_id: str | None,
    remote: str,
) -> None:
    """Raise `TooManySessions` if one more session for `live_stream_id` from
    `remote` would pass a cap (`live_stream_id` None: not known yet)."""
    total = per_stream = per_client = 0
    client = client_subject(remote)
    for s in sessions:
        total += 1
        if live_stream_id is not None and s.live_stream_id == live_stream_id:
            per_stream += 1
        if client_subject(s.remote) == client:
            per_client += 1
    if total >= config.max_sessions:
        raise TooManySessions(503, "this server holds as many WebRTC sessions as it may")
    if per_client >= config.max_sessions_per_ip:
        raise TooManySessions(429, "too many WebRTC sessions from this address")
    if per_stream >= config.max_sessions_per_stream:
        raise TooManySessions(503, "this stream holds as many WebRTC sessions as it may")
