"""Debian's nginx on loopback in front of a test service, configured with the
project's own `deploy/nginx/onair-cache.conf` (its upstream, listen address and
cache directory pointed at the test's), logging each request's cache status.

    async with NginxCache(upstream_port) as cdn:
        cdn.url                       # "http://127.0.0.1:<port>"
        cdn.log()                     # [(status, cache status, request URI), ...]
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.control.api.service_process import free_port

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "onair-cache.conf"

MAIN = """daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format cache '$status $upstream_cache_status $request_uri';
    access_log {tmp}/access.log cache;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/onair-cache.conf;
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


class NginxCache:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="onair-nginx-")
        self.tmp = Path(self._tmp.name)
        self.proc: asyncio.subprocess.Process | None = None

    def _configure(self) -> Path:
        site = SITE.read_text()
        for deployed, here in (
            ("listen 80;", f"listen 127.0.0.1:{self.port};"),
            ("server 127.0.0.1:8080;", f"server 127.0.0.1:{self.upstream_port};"),
            ("/var/cache/nginx/onair", str(self.tmp / "cache")),
        ):
            assert deployed in site, f"{SITE} no longer has {deployed!r}"
            site = site.replace(deployed, here)
        (self.tmp / "onair-cache.conf").write_text(site)
        main = self.tmp / "nginx.conf"
        main.write_text(MAIN.format(tmp=self.tmp))
        return main

    async def __aenter__(self) -> NginxCache:
        binary = nginx_binary()
        assert binary is not None, "nginx is not installed"
        main = self._configure()
        check = await asyncio.create_subprocess_exec(
            binary, "-t", "-c", str(main), "-p", str(self.tmp), stderr=subprocess.PIPE
        )
        _out, err = await check.communicate()
        assert check.returncode == 0, err.decode()
        self.proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(main), "-p", str(self.tmp), stderr=subprocess.DEVNULL
        )
        for _ in range(100):
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return self
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {(self.tmp / 'error.log').read_text()}")

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self._tmp.cleanup()

    def log(self) -> list[tuple[int, str, str]]:
        rows = []
        for line in (self.tmp / "access.log").read_text().splitlines():
            status, cache, uri = line.split(" ", 2)
            rows.append((int(status), cache, uri))
        return rows
