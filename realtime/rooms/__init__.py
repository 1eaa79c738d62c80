"""Rooms: two-way WebRTC sessions through a selective forwarding unit (SFU).

Modules: `tokens` (join tokens), `signaling` (WebSocket message schema),
`room` (room state and state machines), `forwarder` (encoded media fan-out),
`peer` (one publish and one subscribe RTCPeerConnection per participant),
`service` (`RoomService`), `ws` (the signaling WebSocket handler), `composite`
(the recorded/broadcast mix into the hub) and `routes` (aiohttp wiring).
"""
