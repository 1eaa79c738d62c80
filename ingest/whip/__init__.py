"""WHIP (RFC 9725) ingest: WebRTC publishers into the live hub.

`WhipService` (session.py) owns sessions; `add_whip_routes` (http.py) mounts the
HTTP endpoints. See those modules for the media path.
"""

from ingest.whip.http import WhipHandlers, add_whip_routes
from ingest.whip.session import WhipService, WhipSession

__all__ = ["WhipHandlers", "WhipService", "WhipSession", "add_whip_routes"]
