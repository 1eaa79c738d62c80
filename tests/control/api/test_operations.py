"""Health, metrics, the OpenAPI document and the docs page."""

from __future__ import annotations

import pytest

from control.store.base import StoreError
from tests.control.api.conftest import Api, MakeApi


async def test_health_reports_store_and_queues(api: Api) -> None:
    async with api.client.get("/v1/health") as r:
        assert r.status == 200
        body = await r.json()
    assert body["ready"] is True and body["checks"]["store"] == "ok"
    assert body["queues"]["webhooks"] == 0


async def test_health_is_503_when_a_check_fails(api: Api) -> None:
    async def broken() -> bool:
        return False

    api.node.state.health_checks["blobs"] = broken
    async with api.client.get("/v1/health") as r:
        assert r.status == 503
        body = await r.json()
        assert body["checks"]["blobs"] == "failing" and body["ready"] is False


async def test_metrics_count_requests_by_route_and_status(api: Api) -> None:
    await api.call("GET", "/v1/live-streams")
    await api.call("GET", "/v1/live-streams/ls_x")
    api.node.metrics.counter("onair_test_things_total", "Things").inc(3)
    async with api.client.get("/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    assert 'onair_http_requests_total{method="GET",route="/v1/live-streams",status="200"} 1' in text
    assert 'route="/v1/live-streams/{id}",status="404"' in text
    assert "onair_http_request_duration_seconds_bucket" in text
    assert "onair_test_things_total 3" in text
    assert 'onair_queue_depth{queue="webhooks"} 0' in text


async def test_openapi_document_covers_every_api_route(api: Api) -> None:
    async with api.client.get("/v1/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    documented = {
        (m.upper(), p) for p, item in doc["paths"].items() for m in item if m != "parameters"
    }
    for route in api.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or not path:
            continue
        assert (route.method, path) in documented, (route.method, path)
    from openapi_spec_validator import validate

    validate(doc)


async def test_docs_page_is_self_contained(api: Api) -> None:
    async with api.client.get("/v1/docs") as r:
        assert r.status == 200 and r.content_type == "text/html"
        html = await r.text()
    assert "openapi.json" in html
    assert 'src="http' not in html and 'href="http' not in html and "@import" not in html


async def test_a_broken_store_gives_503_not_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(*args: object, **kwargs: object) -> None:
        raise StoreError("connection refused")

    for name in ("take_token", "get", "get_by", "ping"):
        monkeypatch.setattr(api.store, name, down)
    status, body, headers = await api.call("GET", "/v1/live-streams")
    assert status == 503
    assert body["error"]["type"] == "service_unavailable" and headers["Retry-After"] == "1"
    async with api.client.get("/v1/health") as r:
        assert r.status == 503


async def test_health_answers_from_a_snapshot_at_most_a_second_old(api: Api) -> None:
    import asyncio

    calls = []

    async def counted() -> bool:
        calls.append(1)
        await asyncio.sleep(0.05)
        return True

    api.node.state.health_checks["counted"] = counted
    answers = await asyncio.gather(*(api.client.get("/v1/health") for _ in range(50)))
    assert {r.status for r in answers} == {200}
    for r in answers:
        r.release()
    assert len(calls) == 1, "fifty probes cost one round of checks"
    await asyncio.sleep(1.1)
    async with api.client.get("/v1/health") as r:
        assert r.status == 200
    assert len(calls) == 2


async def test_metrics_can_require_a_bearer_token(make_api: MakeApi) -> None:
    api = await make_api(metrics_token="s3cret-metrics")
    async with api.client.get("/metrics") as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    async with api.client.get("/metrics", headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
    async with api.client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"}) as r:
        assert r.status == 200 and "onair_http_requests_total" in await r.text()


async def test_metrics_can_move_to_a_port_of_their_own(make_api: MakeApi) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from control.http.routes.health import metrics_app

    api = await make_api(metrics_port=0)
    async with api.client.get("/metrics") as r:
        assert r.status == 404
    client = TestClient(TestServer(metrics_app(api.node), host="127.0.0.1"))
    await client.start_server()
    try:
        async with client.get("/metrics") as r:
            assert r.status == 200 and "onair_http_requests_total" in await r.text()
    finally:
        await client.close()
