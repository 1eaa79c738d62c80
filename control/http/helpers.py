"""What the route modules share: request helpers (pagination, path ids, JSON
answers) and OpenAPI fragments (references, bodies, responses, errors)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from control.http.validation import ApiError, query_int, query_str, reject_unknown_query
from control.store.base import Page

JSON = "application/json"
ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


# ------------------------------------------------------------------ request helpers


def page_params(request: web.Request, extra: Iterable[str] = ()) -> tuple[int, str | None]:
    reject_unknown_query(request, ("limit", "starting_after", *extra))
    limit = query_int(request, "limit", 25, minimum=1, maximum=100)
    after = query_str(request, "starting_after", max_length=128)
    return limit, after


def path_id(request: web.Request, name: str = "id") -> str:
    value = request.match_info[name]
    if not value or len(value) > 128:
        raise ApiError(404, "not_found", "No such resource")
    return value


def list_body(page: Page, render: Any) -> dict[str, Any]:
    return {"object": "list", "data": [render(r) for r in page.data], "has_more": page.has_more}


def json_ok(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


async def check_starting_after(store: Any, collection: str, after: str | None) -> None:
    if after is not None and await store.get(collection, after) is None:
        raise ApiError(
            400,
            "invalid_parameter",
            "starting_after does not name an existing object",
            "starting_after",
        )


# ------------------------------------------------------------------ OpenAPI helpers


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def resp(
    description: str,
    schema: dict[str, Any] | None = None,
    links: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A JSON response; `links` maps link name → operationId taking `id` from the body."""
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {JSON: {"schema": schema}}
    if links:
        out["links"] = {
            name: {"operationId": op, "parameters": {"id": "$response.body#/id"}}
            for name, op in links.items()
        }
    return out


_ERROR_TEXT = {
    400: "Bad request (invalid JSON or parameters)",
    401: "Missing or invalid API key",
    403: "The API key lacks the required scope",
    404: "Not found",
    409: "Conflict (state or idempotency key in use)",
    410: "Gone (cursor_expired: the cursor is older than the event retention)",
    413: "Request body too large",
    415: "Unsupported content type",
    422: "Validation or idempotency error",
    429: "Rate limited",
    503: "Not ready",
}


def errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


def error_components() -> dict[str, Any]:
    return {str(f"E{c}"): resp(text, ref("Error")) for c, text in _ERROR_TEXT.items()}


READ_ERRORS = (400, 401, 403, 404, 429)
WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422, 429)

PAGE_PARAMS: list[dict[str, Any]] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 25},
    },
    {
        "name": "starting_after",
        "in": "query",
        "required": False,
        "description": "An object id: return the page after it",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
]

IDEMPOTENCY_PARAM: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Replays the first result of this key (24 h, per API key)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def id_param(name: str = "id") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def list_of(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "has_more"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": ref(item)},
            "has_more": {"type": "boolean"},
        },
    }


NULLABLE_STR: dict[str, Any] = {"type": ["string", "null"]}
DATETIME: dict[str, Any] = {"type": "string", "format": "date-time"}
NULLABLE_DATETIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
