"""The error model and the door: JSON errors for everything (including
aiohttp's own 404/405/413), X-Request-Id on every response, strict JSON."""

from __future__ import annotations

import re

from tests.control.api.conftest import Api, MakeApi


def assert_error(body: object, type_: str, param: str | None = None) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}
    err = body["error"]
    assert err["type"] == type_
    assert isinstance(err["message"], str) and err["message"]
    if param is None:
        assert "param" not in err
    else:
        assert err["param"] == param


async def test_unknown_route_is_a_json_404_with_a_request_id(api: Api) -> None:
    status, body, headers = await api.call("GET", "/v1/nothing-here")
    assert status == 404
    assert_error(body, "not_found")
    assert re.fullmatch(r"req_[0-9a-f]{32}", headers["X-Request-Id"])


async def test_wrong_method_is_a_json_405_with_allow(api: Api) -> None:
    status, body, headers = await api.call("PUT", "/v1/live-streams")
    assert status == 405
    assert_error(body, "method_not_allowed")
    assert "POST" in headers["Allow"]


async def test_a_sane_incoming_request_id_is_echoed_and_a_bad_one_replaced(api: Api) -> None:
    _, _, headers = await api.call("GET", "/v1/live-streams", **{"X-Request-Id": "abc-123.x"})
    assert headers["X-Request-Id"] == "abc-123.x"
    _, _, headers = await api.call("GET", "/v1/live-streams", **{"X-Request-Id": "bad id<>"})
    assert headers["X-Request-Id"].startswith("req_")


async def test_every_kind_of_response_has_a_request_id(api: Api) -> None:
    for method, path in [("GET", "/v1/health"), ("GET", "/metrics"), ("GET", "/v1/openapi.json")]:
        async with api.client.request(method, path) as r:
            assert r.headers.get("X-Request-Id")
    async with api.client.get("/v1/live-streams") as r:  # no key: 401
        assert r.status == 401 and r.headers.get("X-Request-Id")


async def test_invalid_json_is_400(api: Api) -> None:
    async with api.client.post(
        "/v1/live-streams",
        data=b'{"name": ',
        headers=api.auth(**{"Content-Type": "application/json"}),
    ) as r:
        assert r.status == 400
        assert_error(await r.json(), "invalid_json")


async def test_nan_is_not_json(api: Api) -> None:
    async with api.client.post(
        "/v1/live-streams",
        data=b'{"reconnect_window_s": NaN}',
        headers=api.auth(**{"Content-Type": "application/json"}),
    ) as r:
        assert r.status == 400


async def test_wrong_content_type_is_415(api: Api) -> None:
    async with api.client.post(
        "/v1/live-streams", data=b"name=x", headers=api.auth(**{"Content-Type": "text/plain"})
    ) as r:
        assert r.status == 415
        assert_error(await r.json(), "unsupported_media_type")


async def test_unknown_field_is_422_naming_it(api: Api) -> None:
    status, body, _ = await api.call("POST", "/v1/live-streams", json={"nmae": "typo"})
    assert status == 422
    assert_error(body, "validation_error", "nmae")


async def test_wrong_type_and_range_are_422_with_param(api: Api) -> None:
    status, body, _ = await api.call("POST", "/v1/live-streams", json={"record": "yes"})
    assert status == 422
    assert_error(body, "validation_error", "record")
    status, body, _ = await api.call("POST", "/v1/live-streams", json={"reconnect_window_s": 1801})
    assert status == 422
    assert_error(body, "validation_error", "reconnect_window_s")
    status, body, _ = await api.call("POST", "/v1/live-streams", json={"latency_mode": "ultra"})
    assert status == 422
    assert_error(body, "validation_error", "latency_mode")


async def test_body_that_is_not_an_object_is_422(api: Api) -> None:
    status, body, _ = await api.call("POST", "/v1/live-streams", json=[1, 2])
    assert status == 422
    assert_error(body, "validation_error")


async def test_bad_query_parameter_is_400_with_param(api: Api) -> None:
    status, body, _ = await api.call("GET", "/v1/live-streams?limit=abc")
    assert status == 400
    assert_error(body, "invalid_parameter", "limit")
    status, body, _ = await api.call("GET", "/v1/live-streams?colour=red")
    assert status == 400
    assert_error(body, "invalid_parameter", "colour")


async def test_body_over_the_limit_is_413(make_api: MakeApi) -> None:
    api = await make_api(body_limit_bytes=2048)
    big = {"name": "x" * 100, "passthrough": "y" * 4000}
    status, body, headers = await api.call("POST", "/v1/live-streams", json=big)
    assert status == 413
    assert_error(body, "payload_too_large")
    assert headers["X-Request-Id"]


async def test_chunked_body_over_the_limit_is_413(make_api: MakeApi) -> None:
    api = await make_api(body_limit_bytes=2048)

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 1000

    async with api.client.post(
        "/v1/live-streams", data=chunks(), headers=api.auth(**{"Content-Type": "application/json"})
    ) as r:
        assert r.status == 413
        assert_error(await r.json(), "payload_too_large")


async def test_missing_object_is_404(api: Api) -> None:
    status, body, _ = await api.call("GET", "/v1/live-streams/ls_doesnotexist")
    assert status == 404
    assert_error(body, "not_found")
