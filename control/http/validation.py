"""The API error type and a small typed request-validation helper.

`ApiError` is what handlers raise; the error middleware renders it as
``{"error": {"type", "message", "param"?}}``. `Obj`/`F` describe a JSON object
once and give both validation (unknown fields rejected, types and ranges
checked, `param` naming the offending field) and its JSON Schema for the
OpenAPI document.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """An error answer: HTTP status, machine type, human message, optional param."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.param is not None:
            err["param"] = self.param
        return {"error": err}


def not_found(what: str, id: str) -> ApiError:
    return ApiError(404, "not_found", f"No such {what}: {id}")


_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class F:
    """One field. `type` is one of str, int, float, bool, list, dict."""

    type: type
    required: bool = False
    default: Any = _MISSING
    nullable: bool = False
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    items: F | None = None
    max_items: int | None = None
    unique_items: bool = False
    description: str | None = None
    format: str | None = None

    def json_schema(self) -> dict[str, Any]:
        names = {
            str: "string",
            int: "integer",
            float: "number",
            bool: "boolean",
            list: "array",
            dict: "object",
        }
        t = names[self.type]
        s: dict[str, Any] = {"type": [t, "null"] if self.nullable else t}
        if self.enum is not None:
            s["enum"] = list(self.enum) + ([None] if self.nullable else [])
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        if self.min_length is not None:
            s["minLength"] = self.min_length
        if self.max_length is not None:
            s["maxLength"] = self.max_length
        if self.pattern is not None:
            s["pattern"] = self.pattern
        if self.items is not None:
            s["items"] = self.items.json_schema()
        if self.max_items is not None:
            s["maxItems"] = self.max_items
        if self.unique_items:
            s["uniqueItems"] = True
        if self.format is not None:
            s["format"] = self.format
        if self.description:
            s["description"] = self.description
        if self.default is not _MISSING:
            s["default"] = self.default
        return s

    def check(self, value: Any, param: str) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise ApiError(422, "validation_error", f"{param} may not be null", param)
        t = self.type
        ok: bool
        if t is bool:
            ok = isinstance(value, bool)
        elif t is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok and isinstance(value, float) and value.is_integer():
                value, ok = int(value), True
        elif t is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if ok and not math.isfinite(float(value)):
                ok = False
        else:
            ok = isinstance(value, t)
        if not ok:
            names = {
                str: "a string",
                int: "an integer",
                float: "a number",
                bool: "a boolean",
                list: "an array",
                dict: "an object",
            }
            raise ApiError(422, "validation_error", f"{param} must be {names[t]}", param)
        if self.enum is not None and value not in self.enum:
            choices = ", ".join(repr(e) for e in self.enum)
            raise ApiError(422, "validation_error", f"{param} must be one of {choices}", param)
        if self.minimum is not None and value < self.minimum:
            raise ApiError(422, "validation_error", f"{param} must be ≥ {self.minimum:g}", param)
        if self.maximum is not None and value > self.maximum:
            raise ApiError(422, "validation_error", f"{param} must be ≤ {self.maximum:g}", param)
        if isinstance(value, str | list):
            if self.min_length is not None and len(value) < self.min_length:
                raise ApiError(422, "validation_error", f"{param} is too short", param)
            if self.max_length is not None and len(value) > self.max_length:
                raise ApiError(422, "validation_error", f"{param} is too long", param)
        if (
            isinstance(value, str)
            and self.pattern is not None
            and not re.fullmatch(self.pattern, value)
        ):
            raise ApiError(422, "validation_error", f"{param} has an invalid format", param)
        if isinstance(value, list):
            if self.max_items is not None and len(value) > self.max_items:
                raise ApiError(422, "validation_error", f"{param} has too many items", param)
            if self.items is not None:
                value = [self.items.check(v, f"{param}[{i}]") for i, v in enumerate(value)]
            if self.unique_items and len({json.dumps(v, sort_keys=True) for v in value}) != len(
                value
            ):
                raise ApiError(422, "validation_error", f"{param} has duplicate items", param)
        return value


@dataclass(frozen=True, slots=True)
class Obj:
    """A JSON object with known fields; anything else is rejected."""

    fields: Mapping[str, F]
    description: str | None = None
    extra: Sequence[str] = field(default=())

    def json_schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: f.json_schema() for k, f in self.fields.items()},
        }
        required = [k for k, f in self.fields.items() if f.required]
        if required:
            s["required"] = required
        if self.description:
            s["description"] = self.description
        return s

    def validate(self, body: Any, *, partial: bool = False) -> dict[str, Any]:
        """Checked values; defaults filled in unless `partial` (PATCH)."""
        if not isinstance(body, dict):
            raise ApiError(422, "validation_error", "The request body must be a JSON object")
        for key in body:
            if key not in self.fields:
                raise ApiError(422, "validation_error", f"Unknown field: {key}", str(key))
        out: dict[str, Any] = {}
        for key, spec in self.fields.items():
            if key in body:
                out[key] = spec.check(body[key], key)
            elif spec.required and not partial:
                raise ApiError(422, "validation_error", f"Missing required field: {key}", key)
            elif spec.default is not _MISSING and not partial:
                out[key] = spec.default
        return out


def _is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(
    request: web.Request, schema: Obj | None = None, *, partial: bool = False
) -> dict[str, Any]:
    """Parse the request body strictly. An empty body counts as `{}`."""
    raw = await request.read()
    if not raw.strip():
        body: Any = {}
    else:
        if not _is_json_type(request.content_type):
            raise ApiError(
                415,
                "unsupported_media_type",
                f"Content-Type must be application/json, not {request.content_type or 'missing'}",
            )
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
    if schema is None:
        if body != {}:
            if not isinstance(body, dict):
                raise ApiError(422, "validation_error", "The request body must be a JSON object")
            key = next(iter(body))
            raise ApiError(422, "validation_error", f"Unknown field: {key}", str(key))
        return {}
    return schema.validate(body, partial=partial)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# ------------------------------------------------------------------ query params


def query_int(request: web.Request, name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer", name) from None
    if not minimum <= value <= maximum:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be between {minimum} and {maximum}", name
        )
    return value


def query_str(request: web.Request, name: str, *, max_length: int = 255) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw or len(raw) > max_length:
        raise ApiError(400, "invalid_parameter", f"{name} is empty or too long", name)
    return raw


def reject_unknown_query(request: web.Request, allowed: Sequence[str]) -> None:
    for key in request.query:
        if key not in allowed:
            raise ApiError(400, "invalid_parameter", f"Unknown query parameter: {key}", key)
