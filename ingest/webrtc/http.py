"""HTTP pieces shared by the WHIP and WHEP handlers: CORS, SDP bodies, errors.

Errors use the API's JSON shape `{"error": {"type", "message"}}` and carry the
CORS headers too, so a page on another origin can read why it was refused.
"""

from __future__ import annotations

import hmac
import json
from typing import Protocol

from aiohttp import web

from ingest.webrtc.sdp import MAX_SDP_BYTES

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch",
    "Access-Control-Max-Age": "86400",
}


def with_cors(response: web.StreamResponse) -> web.StreamResponse:
    for k, v in CORS_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


def error_response(
    status: int, err_type: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps({"error": {"type": err_type, "message": message}})
    resp = web.Response(status=status, text=body, content_type="application/json", headers=headers)
    with_cors(resp)
    return resp


def options_response(methods: str, link_headers: list[str] | None = None) -> web.Response:
    resp = web.Response(status=204)
    with_cors(resp)
    resp.headers["Access-Control-Allow-Methods"] = methods
    resp.headers["Allow"] = methods
    for link in link_headers or ():
        resp.headers.add("Link", link)
    return resp


def bearer_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class BodyError(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.reason)
        self.response = response


async def read_sdp_body(request: web.Request) -> str:
    """The request body as SDP text, or `BodyError` carrying the 415/413/400 reply."""
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/sdp":
        raise BodyError(
            error_response(
                415,
                "unsupported_media_type",
                "the body must be an SDP offer (Content-Type: application/sdp)",
            )
        )
    if request.content_length is not None and request.content_length > MAX_SDP_BYTES:
        raise BodyError(
            error_response(
                413, "payload_too_large", f"SDP offers are limited to {MAX_SDP_BYTES} bytes"
            )
        )
    data = await request.content.read(MAX_SDP_BYTES + 1)
    if len(data) > MAX_SDP_BYTES:
        raise BodyError(
            error_response(
                413, "payload_too_large", f"SDP offers are limited to {MAX_SDP_BYTES} bytes"
            )
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(error_response(400, "invalid_sdp", "the SDP offer is not UTF-8")) from None


def sdp_created(answer: str, location: str, etag: str, link_headers: list[str]) -> web.Response:
    resp = web.Response(status=201, body=answer.encode(), content_type="application/sdp")
    resp.headers["Location"] = location
    resp.headers["ETag"] = etag
    for link in link_headers:
        resp.headers.add("Link", link)
    with_cors(resp)
    return resp


def owns_session(request: web.Request, credential: str | None) -> bool:
    """Whether the request presents the bearer a session was created with
    (constant time). A session created without one is owned by its URL."""
    if credential is None:
        return True
    given = bearer_token(request) or ""
    return hmac.compare_digest(given.encode(), credential.encode())


def too_many(status: int, message: str) -> web.Response:
    return error_response(
        status,
        "rate_limited" if status == 429 else "service_unavailable",
        message,
        {"Retry-After": "5" if status == 503 else "10"},
    )


class Forwarder(Protocol):
    """Other processes of this machine (the workers of one `onair serve`) may
    hold what a request names; control's `Siblings` forwards it to them, since a
    redirect to the shared public address would land on any of them again."""

    def forwarded(self, request: web.Request) -> bool:
        """The request was forwarded here by another worker (never forward it on)."""
        ...

    async def to_node(
        self, request: web.Request, base_url: str, body: bytes
    ) -> web.StreamResponse | None:
        """Forward `request` (with `body`) to the node at `base_url` when it is a
        worker of this machine; None when it is not (redirect as usual)."""
        ...

    async def to_holder(self, request: web.Request) -> web.StreamResponse | None:
        """Forward a session's request to the worker holding the session (None:
        no worker does)."""
        ...


async def held_elsewhere(
    forwarder: Forwarder | None, request: web.Request
) -> web.StreamResponse | None:
    """For a WHIP or WHEP session this worker does not hold: the answer of the
    worker that does (None: no forwarder, the request was forwarded already,
    or no worker holds it)."""
    if forwarder is None or forwarder.forwarded(request):
        return None
    return await forwarder.to_holder(request)
