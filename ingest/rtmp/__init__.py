"""RTMP ingest: a sans-IO RTMP server protocol (handshake, chunk stream, AMF0,
commands) and its asyncio driver (`ingest.rtmp.server.RtmpServer`)."""
