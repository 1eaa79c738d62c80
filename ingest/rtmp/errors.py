"""The one error type of the RTMP/FLV protocol code: the peer broke the protocol.

Every parser under `ingest.rtmp` (and `ingest.flv`, `ingest.h264`, `ingest.aac`)
raises only `ProtocolError` for bad input; the driver closes that one connection.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer sent bytes we cannot or will not accept (malformed, or over a limit)."""


class UnsupportedMedia(ProtocolError):
    """Well-formed media we refuse (codec not supported yet); carries a status text
    the driver can send back to the publisher before closing."""
