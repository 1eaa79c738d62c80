"""`MediaError`: codec data that cannot be read — an SPS, an avcC record, an
AudioSpecificConfig that is truncated, malformed or implausible. The bitstream
parsers (`ingest.h264`, `ingest.aac`) raise it; the protocol that carried the
data decides what it means (RTMP turns it into a protocol error that closes the
connection; WHIP drops the frame)."""

from __future__ import annotations


class MediaError(ValueError):
    """Malformed or implausible codec data."""
