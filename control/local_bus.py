"""The event bus's transport between the processes of one machine sharing a
SQLite store (the workers of `onair serve`): Unix datagram sockets.

Each process binds one socket in a directory named after the database
(`bus_dir`), and a publish sends the message to every other socket there.
Datagrams fit a wake-up bus: a message is a few bytes; a receiver whose buffer
is full drops it (the store is the truth and every node also polls); the
socket of a process that died refuses the send, which tells the sender to
remove it. The directory is under the system's temporary directory because a
socket's path is limited to about a hundred bytes, and a data directory's path
is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096
QUEUE_MAX = 1024
"""Messages a subscription holds before it drops (a wake-up lost costs latency only)."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bus_dir(database: str | os.PathLike[str]) -> Path:
    """The directory of the sockets of every process using `database`."""
    return Path(tempfile.gettempdir()) / f"onair-bus-{_digest(os.path.realpath(database))}"


def _private_dir(path: Path) -> None:
    """Create `path` (0700) or check that the one there is ours and private: another
    user's directory could otherwise feed us wake-ups or read ours."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of this user")


class _Subscription:
    def __init__(self, bus: UnixBus, channel: str) -> None:
        self.bus = bus
        self.channel = channel
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_MAX)

    def deliver(self, message: str | None) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(message)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str]:
        while True:
            message = await self.queue.get()
            if message is None:
                return
            yield message

    async def aclose(self) -> None:
        self.bus._unsubscribe(self)


class UnixBus:
    """`control.eventbus.BusTransport` over Unix datagram sockets in `directory`."""

    def __init__(self, directory: Path, node_id: str) -> None:
        self.directory = directory
        self.name = f"{_digest(node_id)}.sock"
        self._sender: socket.socket | None = None
        self._receiver: socket.socket | None = None
        self._subscriptions: list[_Subscription] = []

    @property
    def path(self) -> Path:
        return self.directory / self.name

    async def publish(self, channel: str, message: str) -> None:
        data = f"{channel}\n{message}".encode()
        if len(data) > MAX_MESSAGE:
            raise ValueError("bus messages are wake-ups of a few bytes")
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if name == self.name or not name.endswith(".sock"):
                continue
            peer = self.directory / name
            try:
                self._sender.sendto(data, str(peer))
            except ConnectionRefusedError:
                # nobody is bound there: its process is gone
                with contextlib.suppress(FileNotFoundError):
                    peer.unlink()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOENT, errno.ENOBUFS):
                    log.debug("bus: sending to %s failed (%r)", name, exc)

    async def subscribe(self, channel: str) -> _Subscription:
        if self._receiver is None:
            self._bind()
        subscription = _Subscription(self, channel)
        self._subscriptions.append(subscription)
        return subscription

    def _bind(self) -> None:
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.setblocking(False)
        for attempt in range(3):
            _private_dir(self.directory)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a process of ours with this node id died
            try:
                receiver.bind(str(self.path))
                break
            except FileNotFoundError:
                if attempt == 2:  # the last process leaving removed the directory
                    receiver.close()
                    raise
        self._receiver = receiver
        asyncio.get_running_loop().add_reader(receiver.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._receiver is not None
        while True:
            try:
                data = self._receiver.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("bus: receiving failed (%r)", exc)
                return
            channel, sep, message = data.decode("utf-8", "replace").partition("\n")
            if not sep:
                continue
            for subscription in self._subscriptions:
                if subscription.channel == channel:
                    subscription.deliver(message)

    def _unsubscribe(self, subscription: _Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
        subscription.deliver(None)
        if not self._subscriptions:
            self.close()

    def close(self) -> None:
        """Stop receiving and remove this process's socket."""
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(receiver.fileno())
            receiver.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only when no other process has a socket there
        if self._sender is not None:
            self._sender.close()
            self._sender = None
