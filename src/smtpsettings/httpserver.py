"""The HTTP server around the app: its one listening socket, connection limits and granian's settings.

Two things granian does by default are wrong for a service on an open port. On Linux it binds one
``SO_REUSEPORT`` socket per worker, so a second ``smtpsettings serve`` on a taken port starts and the kernel
splits connections between the two servers (and their databases). And its connection cap per worker
(``backpressure``, the listen backlog over the workers: 1024) is held by connections that never send a
request, which hyper-util's HTTP/1-or-2 detection waits for without a timer. Here the socket is bound once,
without ``SO_REUSEPORT``, and shared by the workers; the server speaks HTTP/1.1 only, so hyper's header read
timer runs from the connect (and, on a kept-alive connection, from the end of each answer); and the cap is
a setting, kept within the open-file limit.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import resource
import socket
import sys
from collections.abc import Callable

from granian._granian import SocketHolder
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server import MPServer

from smtpsettings.config import Settings

__all__ = ("ListenError", "bind_listener", "connection_budget", "create_server", "listen")

BACKLOG = 1024
"""Connections the kernel queues for accept: bursts beyond the cap wait here (capped by net.core.somaxconn)."""
FILES_RESERVED = 256
"""Open files a worker needs besides its connections: database, key ring, logs, pipes, the event loops."""


class ListenError(RuntimeError):
    """The address cannot be listened on; the message names it."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that no other socket can share; :func:`listen` opens it.

    Without ``SO_REUSEPORT`` the kernel refuses the bind while anything else listens there, whether another
    ``smtpsettings serve`` or any other program. ``SO_REUSEADDR`` only lets a restart bind while the previous
    run's closed connections linger in TIME_WAIT. Binding comes first so a taken port stops the start before
    anything is set up; listening comes last so that a port that accepts connections has a migrated database.

    Raises:
        ListenError: the host does not resolve, the port is taken, or the bind is refused.
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        # A name such as ``localhost``: listen on the first address it resolves to, as granian would.
        try:
            family, *_, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        except (socket.gaierror, UnicodeError):
            raise ListenError(f"cannot listen on {host!r}: the name does not resolve to an address") from None
        host = str(sockaddr[0])
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _listen_error(exc, host, port) from None
    sock.set_inheritable(True)  # the workers serve this very socket
    return sock


def listen(sock: socket.socket) -> None:
    """Start accepting on a socket from :func:`bind_listener`.

    Raises:
        ListenError: another server began listening on the port since the bind (both had bound before either
            listened, which ``SO_REUSEADDR`` allows).
    """
    host, port = sock.getsockname()[:2]
    try:
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise _listen_error(exc, host, port) from None


def _listen_error(exc: OSError, host: str, port: int) -> ListenError:
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ListenError(f"{shown} is already in use")
    return ListenError(f"cannot listen on {shown}: {exc.strerror}")


def connection_budget(settings: Settings) -> tuple[int, str | None]:
    """Connections each worker may hold, after raising the open-file limit as far as they need.

    Every connection is a file descriptor. A worker that runs out of them cannot open its database and
    granian retries the failed accept in a busy loop, so the cap is lowered to fit the limit instead; the
    second value then says so, for the operator.
    """
    per_worker = math.ceil(settings.http_max_connections / settings.workers)
    needed = per_worker + FILES_RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))  # inherited by the workers
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return per_worker, None
    fitted = max(1, soft - FILES_RESERVED)
    return fitted, (
        f"the open-file limit ({soft}) allows {fitted} connections per worker, not {per_worker} "
        "(SMTPSETTINGS_HTTP_MAX_CONNECTIONS); raise it with `ulimit -n` or systemd's LimitNOFILE="
    )


class _SharedSocketServer(MPServer):
    """granian serving a socket bound beforehand, shared by every worker.

    granian takes this path itself where it cannot give each worker a socket of its own (``_shd``/``_sso``:
    a holder of the file descriptor for the Rust side, the socket object the workers inherit). The names are
    granian's internals, pinned with its version in pyproject.toml; tests/test_serve.py fails if they change.
    """

    def __init__(self, listener: socket.socket, on_interrupt: Callable[[], None], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._listener = listener
        self._on_interrupt = on_interrupt

    def signal_handler_interrupt(self, *args: object, **kwargs: object) -> None:
        # SIGTERM/SIGINT, often sent to the whole process group: say so at once, before the workers stop.
        self._on_interrupt()
        super().signal_handler_interrupt(*args, **kwargs)

    def _init_shared_socket(self) -> None:
        fd = self._listener.fileno()
        linux_like = sys.platform.startswith(("linux", "freebsd"))
        self._ssp = None
        self._shd = SocketHolder(fd, False, self.backlog) if linux_like else SocketHolder(fd, False)  # type: ignore[call-arg]
        self._sfd = fd
        self._sso = self._listener


WORKERS_KILL_TIMEOUT = 20
"""Seconds a worker may take to stop (its half-sent requests, then the services' own bounded stops)."""


def create_server(
    settings: Settings, listener: socket.socket, per_worker: int, on_interrupt: Callable[[], None] = lambda: None
) -> MPServer:
    """The granian server of ``smtpsettings serve``, ready for ``.serve()``; ``on_interrupt`` runs when it is told to stop."""
    return _SharedSocketServer(
        listener,
        on_interrupt,
        target="smtpsettings.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.host,
        port=settings.port,
        workers=settings.workers,
        # HTTP/1.1 only: with HTTP/2 detection on, a connection that sends nothing is never timed out.
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=round(settings.http_header_timeout * 1000)),
        backlog=BACKLOG,
        backpressure=per_worker,
        log_enabled=False,
        # Granian waits for a stuck worker forever by default; the whole stop must fit a service manager's
        # stop timeout (systemd's default is 90 s, our unit sets 30 s).
        workers_kill_timeout=WORKERS_KILL_TIMEOUT,
    )
