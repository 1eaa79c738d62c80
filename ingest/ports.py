"""What ingest needs from the rest of the service, as protocols.

`control` implements these and passes them in; ingest never imports control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PublishGrant:
    """Permission for one publisher to write to one live stream."""

    live_stream_id: str


class PublishDenied(Exception):
    """The stream key may not publish. `code` picks the protocol's answer:
    "bad_key" (unknown key: RTMP NetStream.Publish.BadName, WHIP 401),
    "disabled" (key of a disabled stream: RTMP NetStream.Publish.Rejected, WHIP 403),
    "draining" (this server takes no new publishers: RTMP Rejected, WHIP 503)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def mask_stream_key(key: str) -> str:
    """A stream key as logs may show it: its first four characters."""
    return key[:4] + "…" if len(key) > 4 else "…"


class PublishAuthority(Protocol):
    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        """Return a grant or raise `PublishDenied`. `protocol` is "rtmp" | "whip"."""
        ...
