"""WHEP (draft-ietf-wish-whep) playback: live streams out to WebRTC viewers.

`WhepService` (session.py) owns viewer sessions; `add_whep_routes` (http.py)
mounts the HTTP endpoints.
"""

from realtime.whep.http import WhepHandlers, add_whep_routes
from realtime.whep.session import PlaybackDenied, StreamNotLive, WhepService, WhepSession

__all__ = [
    "PlaybackDenied",
    "StreamNotLive",
    "WhepHandlers",
    "WhepService",
    "WhepSession",
    "add_whep_routes",
]
