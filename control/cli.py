"""The `onair` command: `serve`, `drain` and `keys create|list|revoke` (direct
store access), and a thin HTTP client `streams create|list|show`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Coroutine, Sequence
from typing import Any

from control.settings import Settings, SettingsError, load_settings

BOOTSTRAP_LOCK = "bootstrap:admin_key"


# ------------------------------------------------------------------ serve


async def bootstrap_admin_key(store: Any, node_id: str) -> str | None:
    """Create the first admin key when none exists; returns it (shown once)."""
    from control.domain.api_keys import create_api_key, has_active_admin_key

    if await has_active_admin_key(store):
        return None
    if not await store.kv_set_if_absent(BOOTSTRAP_LOCK, node_id, ttl_s=60):
        return None
    try:
        if await has_active_admin_key(store):
            return None
        _, key = await create_api_key(store, "admin", "bootstrap admin (onair serve)")
        return key
    finally:
        await store.kv_delete(BOOTSTRAP_LOCK)


def _store_name(settings: Settings) -> str:
    if settings.redis_sentinels:
        return f"Redis {settings.redis_sentinel_master} via Sentinel {settings.redis_sentinels}"
    return settings.redis_url or os.path.abspath(settings.data_dir)


def banner(settings: Settings, admin_key: str | None) -> str:
    lines = [
        "onair is running",
        f"  Dashboard:    {settings.dashboard_url}",
        f"  API:          {settings.api_url}   (docs: {settings.api_url}/docs)",
        f"  RTMP ingest:  {settings.rtmp_url}   (stream key from POST /v1/live-streams)",
        *([f"  RTMPS ingest: {settings.rtmps_url}"] if settings.rtmps_url else []),
        *(
            [f"  SRT ingest:   {settings.srt_url}?streamid=<stream key>"]
            if settings.srt_url
            else []
        ),
        f"  WHIP ingest:  {settings.whip_url}",
        f"  Data:         {_store_name(settings)}",
        *(
            [f"  Workers:      {settings.workers} processes (ONAIR_WORKERS)"]
            if settings.workers > 1
            else []
        ),
    ]
    if admin_key:
        lines += [
            "",
            "First start: an admin API key was created. It is shown only once — store it now:",
            f"  ONAIR_API_KEY={admin_key}",
        ]
    return "\n".join(lines)


async def serve(settings: Settings) -> None:
    """One node in this process (`workers` 1, or a worker of a supervisor), or
    the supervisor of `workers` worker processes."""
    if settings.workers > 1 and settings.worker_index is None:
        await supervise(settings)
    else:
        await serve_node(settings)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _until_signalled_or(stop: asyncio.Event, other: Coroutine[Any, Any, Any]) -> None:
    """Until SIGINT/SIGTERM set `stop` or `other` finishes (a node drained, or
    every worker did)."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(other)]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()


async def supervise(settings: Settings) -> None:
    from control.logging import configure_logging
    from control.registry import alive_key
    from control.store import prepare_data_dir, store_for
    from control.supervisor import Supervisor, resolve_ports

    configure_logging(settings.log_level, json_logs=settings.log_json)
    settings = resolve_ports(settings)
    await prepare_data_dir(settings)
    store = store_for(settings)
    await store.open()  # the schema exists before any worker opens the store
    try:
        key = await bootstrap_admin_key(store, settings.node_id)

        async def forget(node_id: str) -> None:
            # the others need not wait for its alive key to lapse
            await store.kv_delete(alive_key(node_id))

        supervisor = Supervisor(settings, on_dead=forget)
        try:
            await supervisor.start()
        except RuntimeError as exc:
            supervisor.kill()
            raise OSError(f"workers: {exc}") from exc
        print(banner(settings, key), flush=True)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await _until_signalled_or(stop, supervisor.wait())
        if stop.is_set():
            print("onair: shutting down", file=sys.stderr, flush=True)
            await supervisor.stop(timeout_s=settings.shutdown_timeout_s * 3 + 30)
        else:
            print("onair: every worker drained", file=sys.stderr, flush=True)
    finally:
        await store.close()


async def serve_node(settings: Settings) -> None:
    from aiohttp import web

    from control.http.app import make_http_app
    from control.http.edge import edge_site
    from control.logging import configure_logging
    from control.node import build_node
    from control.supervisor import READY, private_listener, watch_stdin
    from ingest.conn_limits import raise_fd_limit

    configure_logging(settings.log_level, json_logs=settings.log_json)
    # before anything sizes itself on it: at 1024 descriptors HTTP, RTMP and
    # SQLite would all fail together under a few hundred idle connections
    raise_fd_limit()
    worker = settings.worker_index is not None
    private = None
    if worker:
        private, url = private_listener(settings)
        changes: dict[str, Any] = {"node_url": url}
        if settings.metrics_port is not None:
            changes["metrics_port"] = settings.metrics_port + (settings.worker_index or 0)
        settings = settings.replace(**changes)
    node = build_node(settings)
    app = make_http_app(node)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=settings.shutdown_timeout_s
    )
    await runner.setup()  # starts the node
    runners: list[web.AppRunner] = []
    try:
        key = None if worker else await bootstrap_admin_key(node.store, settings.node_id)
        site = edge_site(
            runner,
            settings.host,
            settings.http_port,
            reuse_address=True,
            reuse_port=worker or None,
            backlog=1024,
        )
        await site.start()
        if private is not None:
            await edge_site(runner, None, None, sock=private, backlog=1024).start()
        if settings.metrics_port is not None:
            from control.http.routes.health import metrics_app

            metrics_runner = web.AppRunner(metrics_app(node), access_log=None)
            await metrics_runner.setup()
            runners.append(metrics_runner)
            await web.TCPSite(
                metrics_runner, settings.host, settings.metrics_port, reuse_address=True
            ).start()
        stop = asyncio.Event()
        _stop_on_signals(stop)
        if worker:
            watch_stdin(stop.set)
            print(f"{READY} {settings.node_id}", flush=True)
        else:
            print(banner(settings, key), flush=True)
        await _until_signalled_or(stop, node.exit_requested.wait())
        why = "drained" if node.exit_requested.is_set() else "shutting down"
        print(f"onair: {settings.node_id} {why}", file=sys.stderr, flush=True)
    finally:
        for extra in runners:
            await extra.cleanup()
        await runner.cleanup()


# ------------------------------------------------------------------ keys


async def _with_store(settings: Settings, fn: Any) -> Any:
    from control.store import prepare_data_dir, store_for

    await prepare_data_dir(settings)
    store = store_for(settings)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, list | dict):
            return json.dumps(v)
        return str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in body]) for i, c in enumerate(columns)]
    out = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in body
    ]
    return "\n".join(out)


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from control.domain.api_keys import create_api_key, key_to_json, list_api_keys, revoke_api_key
    from control.outbox import Outbox

    if args.keys_cmd == "create":

        async def create(store: Any) -> tuple[dict[str, Any], str]:
            return await create_api_key(store, args.scope, args.name)

        view, key = asyncio.run(_with_store(settings, create))
        print(
            f"Created {view['scope']} API key {view['id']}"
            + (f" ({view['name']})" if view["name"] else "")
        )
        print("Store it now; it will not be shown again:")
        print(key)
        return 0
    if args.keys_cmd == "list":

        async def list_all(store: Any) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            after = None
            while True:
                page = await list_api_keys(store, limit=100, starting_after=after)
                rows += [key_to_json(r.id, r.created_at, r.data) for r in page.data]
                if not page.has_more or not page.data:
                    return rows
                after = page.data[-1].id

        rows = asyncio.run(_with_store(settings, list_all))
        print(
            table(rows, ["id", "name", "scope", "status", "prefix", "created_at", "last_used_at"])
        )
        return 0
    if args.keys_cmd == "revoke":

        async def revoke(store: Any) -> dict[str, Any] | None:
            return await revoke_api_key(Outbox(store), args.id)

        view = asyncio.run(_with_store(settings, revoke))
        if view is None:
            print(f"onair: no such API key: {args.id}", file=sys.stderr)
            return 1
        print(f"Revoked {view['id']}")
        return 0
    raise AssertionError(args.keys_cmd)


# ------------------------------------------------------------------ drain


def cmd_drain(args: argparse.Namespace, settings: Settings) -> int:
    """Ask a node to drain (no new publishers or rooms, exit once empty or at
    the timeout) and wait until it has left the registry. A machine's
    `onair serve` with workers is drained whole: `--node` names it (its
    ONAIR_NODE_ID) or, when its workers are all that is alive, nothing."""
    from control.registry import alive, request_drain
    from control.supervisor import machine_of

    async def drain(store: Any) -> int:
        nodes = {r.id for r in await alive(store)}
        name = args.node
        if name is None:
            machines = {machine_of(n) for n in nodes}
            if len(machines) != 1:
                names = ", ".join(sorted(nodes)) or "none"
                print(f"onair: say which node with --node (alive: {names})", file=sys.stderr)
                return 2
            name = next(iter(machines))
        targets = sorted(n for n in nodes if n == name or machine_of(n) == name)
        if not targets:
            print(f"onair: no such node alive: {name}", file=sys.stderr)
            return 1
        for node_id in targets:
            await request_drain(store, node_id, args.timeout)
        print(f"Draining {', '.join(targets)} (at most {args.timeout:g} s)…", flush=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout + 30
        while loop.time() < deadline:
            if not set(targets) & {r.id for r in await alive(store)}:
                print(f"{name} drained and left")
                return 0
            await asyncio.sleep(0.5)
        print(f"onair: {name} is still there after {args.timeout:g} s", file=sys.stderr)
        return 1

    result: int = asyncio.run(_with_store(settings, drain))
    return result


# ------------------------------------------------------------------ streams (HTTP client)


class ApiClientError(Exception):
    pass


def api_call(api_url: str, api_key: str, method: str, path: str, body: Any = None) -> Any:
    url = api_url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {api_key}")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            err = json.loads(raw)["error"]
            msg = f"{exc.code} {err.get('type')}: {err.get('message')}"
        except (ValueError, KeyError, TypeError):
            msg = f"{exc.code} {raw[:200]!r}"
        raise ApiClientError(msg) from None
    except urllib.error.URLError as exc:
        raise ApiClientError(f"cannot reach {url}: {exc.reason}") from None
    return json.loads(raw) if raw else None


def cmd_streams(args: argparse.Namespace, settings: Settings) -> int:
    api_url = args.api_url or os.environ.get("ONAIR_API_URL") or settings.api_url
    api_url = api_url.rstrip("/")
    if not api_url.endswith("/v1"):
        api_url += "/v1"
    api_key = args.api_key or os.environ.get("ONAIR_API_KEY")
    if not api_key:
        print("onair: set ONAIR_API_KEY or pass --api-key", file=sys.stderr)
        return 2
    try:
        if args.streams_cmd == "create":
            body: dict[str, Any] = {
                "latency_mode": args.latency_mode,
                "playback_policy": args.policy,
            }
            if args.name:
                body["name"] = args.name
            if args.no_record:
                body["record"] = False
            obj = api_call(api_url, api_key, "POST", "/live-streams", body)
            print(_show(obj))
        elif args.streams_cmd == "list":
            page = api_call(api_url, api_key, "GET", f"/live-streams?limit={args.limit}")
            rows = [
                {**s, "playback_id": (s.get("playback_ids") or [{}])[0].get("id")}
                for s in page["data"]
            ]
            print(
                table(rows, ["id", "name", "status", "latency_mode", "playback_id", "created_at"])
            )
        elif args.streams_cmd == "show":
            print(_show(api_call(api_url, api_key, "GET", f"/live-streams/{args.id}")))
    except ApiClientError as exc:
        print(f"onair: {exc}", file=sys.stderr)
        return 1
    return 0


def _show(obj: dict[str, Any]) -> str:
    ingest = obj.get("ingest") or {}
    pairs = [
        ("id", obj.get("id")),
        ("name", obj.get("name")),
        ("status", obj.get("status")),
        ("stream key", obj.get("stream_key")),
        ("RTMP server", ingest.get("rtmp_url")),
        ("WHIP URL", ingest.get("whip_url")),
        ("latency mode", obj.get("latency_mode")),
        ("reconnect window", f"{obj.get('reconnect_window_s')} s"),
        ("record", "yes" if obj.get("record") else "no"),
        (
            "playback ids",
            ", ".join(f"{p['id']} ({p['policy']})" for p in obj.get("playback_ids", [])),
        ),
        ("created", obj.get("created_at")),
    ]
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {'-' if v is None else v}" for k, v in pairs)


# ------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onair", description="Self-hosted live video service")
    p.add_argument("--config", help="path to onair.toml (default ./onair.toml if present)")
    p.add_argument("--data-dir", help="overrides ONAIR_DATA_DIR")
    p.add_argument("--redis-url", help="overrides ONAIR_REDIS_URL")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the service")
    s.add_argument("--host")
    s.add_argument("--port", type=int, dest="http_port")
    s.add_argument("--rtmp-port", type=int)
    s.add_argument("--public-url")

    d = sub.add_parser(
        "drain",
        help="a node takes no new publishers or rooms and exits once empty (direct store access)",
    )
    d.add_argument("--node", help="the node's ONAIR_NODE_ID (default: the only node alive)")
    d.add_argument("--timeout", type=float, default=300.0, help="seconds before it exits anyway")

    k = sub.add_parser("keys", help="manage API keys (direct store access)")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    kc = ksub.add_parser("create", help="create a key; prints it alone on the last line")
    kc.add_argument("--scope", choices=("admin", "write", "read"), required=True)
    kc.add_argument("--name")
    ksub.add_parser("list", help="list keys")
    kr = ksub.add_parser("revoke", help="revoke a key")
    kr.add_argument("id")

    st = sub.add_parser("streams", help="live streams over the HTTP API")
    st.add_argument("--api-url", help="default $ONAIR_API_URL or <public_url>/v1")
    st.add_argument("--api-key", help="default $ONAIR_API_KEY")
    ssub = st.add_subparsers(dest="streams_cmd", required=True)
    sc = ssub.add_parser("create")
    sc.add_argument("--name")
    sc.add_argument("--latency-mode", choices=("low", "standard"), default="low")
    sc.add_argument("--policy", choices=("public", "signed"), default="public")
    sc.add_argument("--no-record", action="store_true")
    sl = ssub.add_parser("list")
    sl.add_argument("--limit", type=int, default=25)
    ss = ssub.add_parser("show")
    ss.add_argument("id")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.redis_url:
        overrides["redis_url"] = args.redis_url
    if args.cmd == "serve":
        for name in ("host", "http_port", "rtmp_port", "public_url"):
            value = getattr(args, name, None)
            if value is not None:
                overrides[name] = value
    try:
        settings = load_settings(toml_path=args.config, **overrides)
    except (SettingsError, OSError) as exc:
        print(f"onair: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "serve":
        try:
            asyncio.run(serve(settings))
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"onair: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.cmd == "keys":
        return cmd_keys(args, settings)
    if args.cmd == "drain":
        return cmd_drain(args, settings)
    if args.cmd == "streams":
        return cmd_streams(args, settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
