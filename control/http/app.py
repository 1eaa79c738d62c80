"""`make_http_app(node)`: the aiohttp application in front of one node.

The application holds one key, `NODE`; handlers reach the node's services
through `node_of(request)` (and `media_of(request)` for the media half). The
node starts with the application (a cleanup context) and its graceful stop
begins on aiohttp's shutdown, while requests may still finish.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from types import ModuleType

from aiohttp import web

from control.http import openapi
from control.http.middleware import (
    gate_middleware,
    on_response_prepare,
    request_middleware,
    sibling_middleware,
)
from control.http.node_key import NODE, media_of, node_of
from control.node import Node

__all__ = ["NODE", "make_http_app", "media_of", "node_of"]


def make_http_app(node: Node, *, modules: Iterable[ModuleType] | None = None) -> web.Application:
    """The application for `node`. `modules`: the API route modules (each with
    `add_routes(app)` and `OPENAPI`); by default `routes.api_modules(node)`."""
    from control.http import routes

    app = web.Application(
        middlewares=[sibling_middleware, request_middleware, gate_middleware],
        client_max_size=node.settings.body_limit_bytes,
        handler_args={"max_field_size": 16384},
    )
    app[NODE] = node
    app.on_response_prepare.append(on_response_prepare)
    app.on_shutdown.append(_begin_shutdown)
    app.cleanup_ctx.append(_run_node)
    mounted = list(routes.api_modules(node) if modules is None else modules)
    for module in mounted:
        module.add_routes(app)
    openapi.add_routes(app, mounted)
    if node.media is not None:
        routes.add_media_routes(app, node.media)
    return app


async def _run_node(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    await node.start()
    try:
        yield
    finally:
        await node.stop()


async def _begin_shutdown(app: web.Application) -> None:
    """Stop accepting long-lived work: end SSE streams and rooms' signaling
    sockets so in-flight requests finish."""
    await app[NODE].begin_shutdown()
