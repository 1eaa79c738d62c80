"""Route wiring for WebRTC: WHIP (ingest) and WHEP (realtime) endpoints plus the
publish/watch pages (`routes.py`). The building blocks are in `ingest.webrtc`."""
