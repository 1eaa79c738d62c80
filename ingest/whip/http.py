"""aiohttp handlers for WHIP (RFC 9725) on top of `WhipService`.

POST   /v1/whip                 Bearer <stream key>, application/sdp offer -> 201 answer
DELETE /v1/whip/{session_id}    ends the broadcast -> 200
PATCH  /v1/whip/{session_id}    501: no trickle ICE and no ICE restart (RFC 9725 §4.3.1)
OPTIONS on both                 CORS preflight, Link rel="ice-server" (RFC 9725 §4.6)
"""

from __future__ import annotations

import logging

from aiohttp import web

from ingest.ports import PublishDenied
from ingest.webrtc.http import (
    BodyError,
    Forwarder,
    bearer_token,
    error_response,
    held_elsewhere,
    options_response,
    owns_session,
    read_sdp_body,
    sdp_created,
    too_many,
    with_cors,
)
from ingest.webrtc.limits import TooManySessions
from ingest.webrtc.sdp import SdpError, UnsupportedOffer
from ingest.whip.session import AuthorityUnavailable, WhipService

log = logging.getLogger(__name__)

WHIP_PATH = "/v1/whip"


class WhipHandlers:
    def __init__(
        self, service: WhipService, path: str = WHIP_PATH, forwarder: Forwarder | None = None
    ) -> None:
        self.service = service
        self.path = path
        self.forwarder = forwarder

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("POST", self.path, self.post)
        app.router.add_route("OPTIONS", self.path, self.options_endpoint)
        app.router.add_route("DELETE", self.path + "/{session_id}", self.delete)
        app.router.add_route("PATCH", self.path + "/{session_id}", self.patch)
        app.router.add_route("OPTIONS", self.path + "/{session_id}", self.options_session)

    async def options_endpoint(self, request: web.Request) -> web.Response:
        return options_response("POST, OPTIONS", self.service.config.link_headers())

    async def options_session(self, request: web.Request) -> web.Response:
        return options_response("DELETE, PATCH, OPTIONS")

    async def post(self, request: web.Request) -> web.Response:
        key = bearer_token(request)
        if key is None:
            return error_response(
                401,
                "unauthorized",
                "missing Authorization: Bearer <stream key>",
                {"WWW-Authenticate": "Bearer"},
            )
        try:
            offer = await read_sdp_body(request)
        except BodyError as exc:
            return exc.response
        try:
            session = await self.service.create(key, offer, request.remote or "")
        except PublishDenied as exc:
            if exc.code == "draining":
                return error_response(503, "service_unavailable", exc.message, {"Retry-After": "1"})
            if exc.code == "disabled":
                return error_response(
                    403, "forbidden", exc.message or "this live stream is disabled"
                )
            return error_response(
                401,
                "unauthorized",
                exc.message or "unknown stream key",
                {"WWW-Authenticate": "Bearer"},
            )
        except AuthorityUnavailable:
            return error_response(
                503,
                "service_unavailable",
                "cannot check stream keys right now",
                {"Retry-After": "5"},
            )
        except TooManySessions as exc:
            return too_many(exc.status, exc.message)
        except SdpError as exc:
            return error_response(400, "invalid_sdp", str(exc))
        except UnsupportedOffer as exc:
            return error_response(422, "unsupported_codecs", str(exc))
        except Exception as exc:  # aiortc refusing the offer deep inside
            log.warning("whip offer rejected: %r", exc)
            return error_response(400, "invalid_sdp", f"the SDP offer could not be applied: {exc}")
        location = f"{self.path}/{session.id}"
        return sdp_created(
            session.pc.localDescription.sdp,
            location,
            session.etag,
            self.service.config.link_headers(),
        )

    async def delete(self, request: web.Request) -> web.StreamResponse:
        session = self.service.get(request.match_info["session_id"])
        if (
            session is None
            and (forwarded := await held_elsewhere(self.forwarder, request)) is not None
        ):
            return forwarded
        if session is None:
            return error_response(404, "not_found", "no such WHIP session")
        if not owns_session(request, session.stream_key):
            return error_response(
                401,
                "unauthorized",
                "send the stream key this session was created with",
                {"WWW-Authenticate": "Bearer"},
            )
        await self.service.delete(session.id)
        return with_cors(web.Response(status=200))

    async def patch(self, request: web.Request) -> web.StreamResponse:
        session = self.service.get(request.match_info["session_id"])
        if (
            session is None
            and (forwarded := await held_elsewhere(self.forwarder, request)) is not None
        ):
            return forwarded
        if session is None:
            return error_response(404, "not_found", "no such WHIP session")
        if not owns_session(request, session.stream_key):
            return error_response(
                401, "unauthorized", "send the stream key this session was created with"
            )
        return error_response(
            501,
            "not_implemented",
            "this server supports neither trickle ICE nor ICE restarts; "
            "send all candidates in the offer",
        )


def add_whip_routes(
    app: web.Application,
    service: WhipService,
    path: str = WHIP_PATH,
    forwarder: Forwarder | None = None,
) -> WhipHandlers:
    handlers = WhipHandlers(service, path, forwarder)
    handlers.add_routes(app)
    return handlers
