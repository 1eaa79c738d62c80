"""WebRTC building blocks shared by WHIP ingest and WHEP playback: networking
config, pass-through decoding, H.264 helpers, SDP checks, HTTP helpers,
transcoders, test/bench clients and the route wiring (`routes.py`)."""
