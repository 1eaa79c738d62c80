"""Fixtures for the API contract tests: the real app on a real Store (SQLite
file and a namespaced real Redis), driven over HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control.domain.api_keys import create_api_key
from control.http.app import make_http_app
from control.http.routes import control_modules
from control.node import Node, build_node
from control.settings import Settings, load_settings
from control.store.base import Store
from tests.support.stores import make_store


@dataclass
class RecordingLiveControl:
    kicks: list[tuple[str, str]] = field(default_factory=list)

    def kick(self, live_stream_id: str, reason: str) -> None:
        self.kicks.append((live_stream_id, reason))


@dataclass
class Api:
    client: TestClient
    app: web.Application
    node: Node
    store: Store
    settings: Settings
    admin_key: str
    live_control: RecordingLiveControl

    async def new_key(self, scope: str, name: str | None = None) -> str:
        _, key = await create_api_key(self.store, scope, name)
        return key

    def auth(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}", **extra}

    async def call(
        self, method: str, path: str, *, key: str | None = None, json: Any = None, **headers: str
    ) -> tuple[int, Any, Any]:
        """(status, parsed JSON or None, headers)."""
        kwargs: dict[str, Any] = {"headers": self.auth(key, **headers)}
        if json is not None:
            kwargs["json"] = json
        async with self.client.request(method, path, **kwargs) as r:
            text = await r.text()
            body = None
            if text and r.content_type == "application/json":
                import json as _json

                body = _json.loads(text)
            return r.status, body, r.headers


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_api(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path
) -> AsyncIterator[MakeApi]:
    """`await make_api(**settings_overrides, extra_modules=[...], store=...)`.
    Several apps may share one store (`store=api.store`) to act as nodes."""
    url = request.getfixturevalue("redis_url") if store_kind == "redis" else None
    opened: list[Store] = []
    clients: list[TestClient] = []
    counter = iter(range(1000))

    async def factory(
        *,
        extra_modules: list[ModuleType] | None = None,
        store: Store | None = None,
        **overrides: Any,
    ) -> Api:
        n = next(counter)
        if store is None:
            store = make_store(store_kind, tmp_path, url, name=f"api{n}.db")
            await store.open()
            opened.append(store)
        overrides.setdefault("data_dir", str(tmp_path / f"data{n}"))
        overrides.setdefault("public_url", "http://media.example.test:8080")
        overrides.setdefault("access_log", False)
        overrides.setdefault("node_id", f"test-node-{n}")
        # the tests' receivers listen on 127.0.0.1 (test_webhook_destinations turns it off)
        overrides.setdefault("webhook_allow_private", True)
        settings = load_settings({}, **overrides)
        live = RecordingLiveControl()
        node = build_node(settings, store=store, media=False, live_control=live)
        app = make_http_app(node, modules=[*control_modules(), *(extra_modules or [])])
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        _, admin = await create_api_key(node.store, "admin", "test admin")
        return Api(client, app, node, store, settings, admin, live)

    yield factory
    for client in reversed(clients):
        await client.close()
    for store in opened:
        await store.close()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()
