"""The HTTP adapter of a node: aiohttp in front of `control.node.Node`.

`make_http_app(node)` (``control.http.app``) mounts the routes of
``control.http.routes`` and the media pages; the app holds one key, `NODE`.
Handlers validate (``validation``), call the node's services and render;
``middleware`` turns domain errors into HTTP statuses and error types through
one table, authenticates, rate-limits and replays idempotent POSTs
(``idempotency``); ``openapi`` serves the document built from the route
modules; ``edge`` serves live playback without aiohttp on the same port.
Nothing outside this package imports aiohttp's server for the control plane.
"""
