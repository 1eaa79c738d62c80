"""aiohttp handlers for WHEP (draft-ietf-wish-whep) on top of `WhepService`.

POST   /v1/whep/{playback_id}               SDP offer (+ Bearer token when signed) -> 201 answer
DELETE /v1/whep/{playback_id}/{session_id}  ends the viewer session -> 200
PATCH  /v1/whep/{playback_id}/{session_id}  501 (no trickle ICE / ICE restart)
OPTIONS on both                             CORS preflight
"""

from __future__ import annotations

import logging

from aiohttp import web

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
from realtime.whep.session import (
    PlaybackDenied,
    ResolverUnavailable,
    ServedElsewhere,
    StreamNotLive,
    WhepService,
)

log = logging.getLogger(__name__)

WHEP_PATH = "/v1/whep"


class WhepHandlers:
    def __init__(
        self, service: WhepService, path: str = WHEP_PATH, forwarder: Forwarder | None = None
    ) -> None:
        self.service = service
        self.path = path
        self.forwarder = forwarder

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("POST", self.path + "/{playback_id}", self.post)
        app.router.add_route("OPTIONS", self.path + "/{playback_id}", self.options_endpoint)
        session = self.path + "/{playback_id}/{session_id}"
        app.router.add_route("DELETE", session, self.delete)
        app.router.add_route("PATCH", session, self.patch)
        app.router.add_route("OPTIONS", session, self.options_session)

    async def options_endpoint(self, request: web.Request) -> web.Response:
        return options_response("POST, OPTIONS", self.service.config.link_headers())

    async def options_session(self, request: web.Request) -> web.Response:
        return options_response("DELETE, PATCH, OPTIONS")

    async def post(self, request: web.Request) -> web.StreamResponse:
        playback_id = request.match_info["playback_id"]
        token = bearer_token(request) or request.query.get("token")
        try:
            offer = await read_sdp_body(request)
        except BodyError as exc:
            return exc.response
        try:
            session = await self.service.create(playback_id, token, offer, request.remote or "")
        except PlaybackDenied as exc:
            kinds = {401: "unauthorized", 403: "forbidden", 404: "not_found"}
            kind = kinds.get(exc.status, "error")
            return error_response(exc.status, kind, exc.message)
        except PermissionError as exc:
            return error_response(403, "forbidden", str(exc) or "playback not allowed")
        except ServedElsewhere as exc:
            if self.forwarder is not None and not self.forwarder.forwarded(request):
                # another worker of this machine ingests it: ask it from here
                answer = await self.forwarder.to_node(request, exc.base_url, offer.encode())
                if answer is not None:
                    return answer
            # RFC 9725 §4.6: the session is made where the media is; the client
            # repeats the POST there and keeps talking to that session's URL
            # Clients drop Authorization when a redirect leaves the host: a
            # signed playback's token goes along in the query instead
            query = dict(request.query)
            if token and "token" not in query:
                query["token"] = token
            location = exc.base_url + str(request.rel_url.with_query(query))
            return error_response(
                307, "redirect", "this stream plays from another node", {"Location": location}
            )
        except (LookupError, StreamNotLive):
            return error_response(404, "not_found", "no live stream for this playback id")
        except ResolverUnavailable:
            return error_response(
                503,
                "service_unavailable",
                "cannot resolve playback right now",
                {"Retry-After": "5"},
            )
        except TooManySessions as exc:
            return too_many(exc.status, exc.message)
        except SdpError as exc:
            return error_response(400, "invalid_sdp", str(exc))
        except UnsupportedOffer as exc:
            return error_response(422, "unsupported_codecs", str(exc))
        except Exception as exc:
            log.warning("whep offer rejected: %r", exc)
            return error_response(400, "invalid_sdp", f"the SDP offer could not be applied: {exc}")
        location = f"{self.path}/{playback_id}/{session.id}"
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
        if session is None or session.playback_id != request.match_info["playback_id"]:
            return error_response(404, "not_found", "no such WHEP session")
        if not owns_session(request, session.token):
            return error_response(
                401, "unauthorized", "send the playback token this session was created with"
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
        if session is None or session.playback_id != request.match_info["playback_id"]:
            return error_response(404, "not_found", "no such WHEP session")
        if not owns_session(request, session.token):
            return error_response(
                401, "unauthorized", "send the playback token this session was created with"
            )
        return error_response(
            501, "not_implemented", "this server supports neither trickle ICE nor ICE restarts"
        )


def add_whep_routes(
    app: web.Application,
    service: WhepService,
    path: str = WHEP_PATH,
    forwarder: Forwarder | None = None,
) -> WhepHandlers:
    handlers = WhepHandlers(service, path, forwarder)
    handlers.add_routes(app)
    return handlers
