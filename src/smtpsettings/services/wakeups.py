"""Wake-ups across processes: a worker that accepted a message tells the delivery process at once.

Under ``smtpsettings serve`` the dispatcher runs in a process of its own (``smtpsettings deliver``), so the
in-process event an accepted message sets cannot reach it. The delivery process binds a Unix datagram socket
in the data directory (0700, so only the service's user can write to it) and every accepted message sends it
one byte. Sending never blocks and never fails the acceptance: a datagram lost to a full buffer, a restart
or a missing listener only means the dispatcher finds the message at its next poll, a second later at most.

A Unix socket's address is limited to 107 bytes, which a deep data directory can exceed; then the address
goes through ``/proc/self/fd`` and a descriptor of the directory (Linux resolves it like any path).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = ("WakeListener", "Waker")

_ADDRESS_MAX = 107  # sun_path holds 108 bytes, the last one a NUL


class _Address:
    """The socket's address, short enough to bind and send to, and the directory descriptor that keeps it so."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dir_fd: int | None = None
        self.value = str(path)
        if len(os.fsencode(self.value)) > _ADDRESS_MAX:
            self._dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
            self.value = f"/proc/self/fd/{self._dir_fd}/{path.name}"

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


class Waker:
    """The accepting side: :meth:`wake` after a message is committed (from any thread)."""

    def __init__(self, path: Path) -> None:
        self._address = _Address(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def wake(self) -> None:
        # No listener (it is restarting, or waits for the outbox lock), a full buffer: the poll finds the message.
        with contextlib.suppress(OSError):
            self._sock.sendto(b"!", self._address.value)

    def close(self) -> None:
        self._sock.close()
        self._address.close()


class WakeListener:
    """The delivering side: calls ``on_wake`` on the event loop once per batch of datagrams that arrived."""

    def __init__(self, path: Path, on_wake: Callable[[], None]) -> None:
        self._address = _Address(path)
        self._on_wake = on_wake
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Bind (replacing the socket file a killed predecessor left) and listen on the running loop.

        Raises:
            OSError: another process listens there (a second delivery process on the data directory).
        """
        if self._address.path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                try:
                    probe.connect(self._address.value)
                except OSError:  # nobody bound to it: left by a process that died
                    os.unlink(self._address.path)
                else:
                    raise OSError(f"{self._address.path} is in use by another delivery process")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self._address.value)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)

    def _drain(self) -> None:
        assert self._sock is not None
        while True:
            try:
                self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                break
        self._on_wake()

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._address.path)  # only ever bound by this listener (see open)
        self._address.close()
