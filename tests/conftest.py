"""Generic fixtures shared by the whole suite (keep this minimal)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.support.redis_server import redis_server, redis_server_binary

# Nodes built in-process take any free SRT port, not 9000 (tests run side by side).
os.environ.setdefault("ONAIR_SRT_PORT", "0")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a private redis-server started for this test session.

    Tests sharing it must namespace their keys (RedisStore(prefix=...)) or use
    their own database number."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    with redis_server() as url:
        yield url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite leaves nothing running: every `onair serve` it started, with its
    VOD pool (forkserver and workers), is gone when it ends. What is left is
    killed and fails the run."""
    import signal

    from tests.control.api.service_process import leftover_processes

    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller checks once every worker is done
    left = leftover_processes()
    if not left:
        return
    for line in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("processes of onair serve outlived the suite:", red=True)
        for line in left:
            reporter.write_line(f"  {line}", red=True)
