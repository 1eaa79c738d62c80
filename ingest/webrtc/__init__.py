"""WebRTC building blocks shared by WHIP ingest, WHEP playback and rooms:
networking config (ICE servers, host candidates, port range), pass-through
decoding for forwarding encoded frames, H.264 helpers, SDP checks, HTTP helpers
and Opus/AAC/H.264 transcoders. (The aiortc WHIP/WHEP and room clients the tests
and benches drive the service with live in `tests/support/`.)

They live in `ingest` (the lowest layer) so that WHIP can use them and
`realtime` (WHEP, rooms) can import them without an arrow pointing back."""
