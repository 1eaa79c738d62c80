"""`NODE`, the one key of the HTTP application, and the accessors handlers use."""

from __future__ import annotations

from aiohttp import web

from control.http.validation import ApiError
from control.node import Media, Node

NODE: web.AppKey[Node] = web.AppKey("onair.node", Node)


def node_of(request: web.Request) -> Node:
    return request.app[NODE]


def media_of(request: web.Request) -> Media:
    media = request.app[NODE].media
    if media is None:
        raise ApiError(503, "unavailable", "Media is not running on this server")
    return media
