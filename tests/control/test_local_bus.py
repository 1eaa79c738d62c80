"""The event bus between the processes of one machine (Unix datagrams): what
one raises reaches the others at once and not itself, across real processes;
a process that died leaves nothing behind that slows the others; the socket
directory must be this user's and private."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from control.eventbus import EVENTS, KICK, EventBus
from control.local_bus import UnixBus, bus_dir
from tests.control.bus_spec import Heard, the_others_hear_at_once


async def test_the_others_hear_at_once_and_the_sender_does_not(tmp_path: Path) -> None:
    directory = bus_dir(tmp_path / "onair.db")
    a = EventBus("a", UnixBus(directory, "a"))
    b = EventBus("b", UnixBus(directory, "b"))
    await the_others_hear_at_once(a, b, within_s=0.05)
    assert not directory.exists(), "the last process to leave removes the directory"


def test_databases_have_directories_of_their_own(tmp_path: Path) -> None:
    assert bus_dir(tmp_path / "a" / "onair.db") != bus_dir(tmp_path / "b" / "onair.db")
    assert bus_dir(tmp_path / "a" / "onair.db") == bus_dir(tmp_path / "a" / "." / "onair.db")
    assert len(str(bus_dir(tmp_path / ("x" * 200) / "onair.db")) + "/0123456789abcdef.sock") < 100


ROOT = Path(__file__).resolve().parents[2]
LISTENER = textwrap.dedent(
    """
    import asyncio, sys
    from control.eventbus import EVENTS, EventBus
    from control.local_bus import UnixBus
    from pathlib import Path

    async def main():
        bus = EventBus("child", UnixBus(Path(sys.argv[1]), "child"))
        heard = asyncio.Event()
        bus.on(EVENTS, heard.set)
        await bus.start()
        print("ready", flush=True)
        await asyncio.wait_for(heard.wait(), 10)
        bus.publish(EVENTS)
        await asyncio.sleep(0.2)
        await bus.stop()
        print("heard", flush=True)

    asyncio.run(main())
    """
)


async def test_across_processes(tmp_path: Path) -> None:
    directory = bus_dir(tmp_path / "onair.db")
    parent = EventBus("parent", UnixBus(directory, "parent"))
    heard = Heard()
    parent.on(EVENTS, heard)
    await parent.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LISTENER,
        str(directory),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 20) == b"ready\n"
        parent.publish(EVENTS)
        await heard.next(5)  # the child heard the parent, and answered
        assert await asyncio.wait_for(child.stdout.readline(), 5) == b"heard\n"
        assert await child.wait() == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await parent.stop()


async def test_a_dead_process_socket_is_removed_by_the_next_publish(tmp_path: Path) -> None:
    directory = bus_dir(tmp_path / "onair.db")
    alive = UnixBus(directory, "alive")
    subscription = await alive.subscribe("bus")
    dead = directory / "0000000000000000.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(dead))  # bound, then closed: what a SIGKILL leaves
    sender = UnixBus(directory, "sender")
    await sender.publish("bus", "sender events")
    assert not dead.exists()
    got = await asyncio.wait_for(anext(aiter(subscription)), 2)
    assert got == "sender events"
    await subscription.aclose()
    sender.close()


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    directory = bus_dir(tmp_path / "onair.db")
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)
    try:
        with pytest.raises(PermissionError):
            asyncio.run(UnixBus(directory, "a").subscribe("bus"))
    finally:
        directory.rmdir()


async def test_a_topic_with_an_argument_reaches_its_handler(tmp_path: Path) -> None:
    directory = bus_dir(tmp_path / "onair.db")
    a = EventBus("a", UnixBus(directory, "a"))
    b = EventBus("b", UnixBus(directory, "b"))
    got: list[str] = []
    heard = asyncio.Event()
    b.on_argument(KICK, lambda argument: (got.append(argument), heard.set()))
    plain = Heard()
    b.on(EVENTS, plain)
    await a.start()
    await b.start()
    try:
        a.publish(f"{KICK}:ls_1:disabled")
        await asyncio.wait_for(heard.wait(), 2)
        assert got == ["ls_1:disabled"] and plain.at == []
    finally:
        await a.stop()
        await b.stop()
