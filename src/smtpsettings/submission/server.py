"""The submission port's sockets and the aiosmtpd servers every worker runs on them.

``smtpsettings serve`` binds the ports once, before granian starts its workers, exactly as it binds the
HTTP port (no ``SO_REUSEPORT``: a taken port stops the start), and names the inherited descriptors in an
environment variable; each worker then serves the same sockets on its own event loop, beside its HTTP
server, so the kernel spreads connections over the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import socket
import ssl
import warnings

import structlog
from aiosmtpd.smtp import SMTP

from smtpsettings.config import Settings
from smtpsettings.httpserver import ListenError, bind_listener
from smtpsettings.services.auth import AuthService
from smtpsettings.services.outbox import OutboxService
from smtpsettings.submission.handler import SubmissionHandler, handshake_failure

__all__ = ("INHERITED_ENV", "SubmissionServer", "bind_submission", "export", "inherited", "tls_context")

INHERITED_ENV = "_SMTPSETTINGS_SUBMISSION_SOCKETS"
"""``FD:MODE,…`` with MODE ``starttls`` or ``tls``; set by ``serve`` for its workers (not a setting)."""

_HANDSHAKE_TIMEOUT = 30.0
"""Seconds a client of the implicit-TLS port has to finish the TLS handshake (less if the idle timeout is)."""

log = structlog.get_logger("smtpsettings.submission")

Listener = tuple[socket.socket, bool]
"""A listening socket and whether it speaks TLS from the first byte (RFC 8314)."""


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server-side TLS context of the submission ports, or None without a certificate.

    Raises:
        ListenError: only one of certificate and key is set, or they cannot be loaded.
    """
    cert, key = settings.submission_tls_cert, settings.submission_tls_key
    if not cert and not key:
        return None
    if not cert or not key:
        raise ListenError("the submission port needs both SMTPSETTINGS_SUBMISSION_TLS_CERT and SMTPSETTINGS_SUBMISSION_TLS_KEY")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ListenError(f"cannot load the submission port's certificate {cert} and key {key}: {exc}") from None
    return context


def bind_submission(settings: Settings) -> list[Listener]:
    """Bind the configured submission ports (none when both are 0).

    Raises:
        ListenError: a port is taken, or the TLS settings do not fit together.
    """
    context = tls_context(settings)
    if settings.submission_tls_port and context is None:
        raise ListenError("SMTPSETTINGS_SUBMISSION_TLS_PORT needs a certificate: set SMTPSETTINGS_SUBMISSION_TLS_CERT and _KEY")
    host = settings.submission_host or settings.host
    listeners: list[Listener] = []
    try:
        for port, implicit in ((settings.submission_port, False), (settings.submission_tls_port, True)):
            if port:
                listeners.append((bind_listener(host, port), implicit))
    except ListenError:
        for sock, _ in listeners:
            sock.close()
        raise
    for sock, _ in listeners:
        sock.listen(128)
    return listeners


def export(listeners: list[Listener]) -> None:
    """Name the sockets for the workers, which inherit them."""
    if listeners:
        os.environ[INHERITED_ENV] = ",".join(f"{sock.fileno()}:{'tls' if tls else 'starttls'}" for sock, tls in listeners)


def inherited() -> list[Listener]:
    """The sockets ``serve`` bound for this worker (none outside ``serve``)."""
    listeners: list[Listener] = []
    for item in filter(None, os.environ.get(INHERITED_ENV, "").split(",")):
        fd, _, mode = item.partition(":")
        listeners.append((socket.socket(fileno=os.dup(int(fd))), mode == "tls"))
    return listeners


class _SubmissionSMTP(SMTP):
    """aiosmtpd's protocol with our rule for AUTH before TLS, decided per client when it connects.

    AUTH needs TLS (STARTTLS, or the implicit-TLS port) unless the client is in the trusted networks,
    loopback by default: the same rule the mail client applies to itself.

    On the implicit-TLS port the connection arrives as plain TCP and the handshake is done here
    (``loop.start_tls``), not by the server: asyncio never tells the application protocol of a handshake
    that failed, so a slot taken for it would never be given back. Here every way a handshake ends is seen.
    """

    def __init__(
        self,
        *args: object,
        implicit_tls: ssl.SSLContext | None,
        handshake_timeout: float,
        trusted: tuple[ipaddress._BaseNetwork, ...],
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._implicit_tls = implicit_tls
        self._handshake_timeout = handshake_timeout
        self._trusted = trusted
        self._tracked: set[_SubmissionSMTP] | None = None
        self._raw: asyncio.BaseTransport | None = None
        self._handshake: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference
        self._lost = False
        self.refused = False
        """Set by the server when this connection is one too many: it is answered 421 and closed (on the
        implicit-TLS port closed at once, before any handshake)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None and self.transport is None
        if first and self.refused:
            if self._implicit_tls is None:  # on the TLS port the client expects a handshake, not a reply
                transport.write(b"421 4.7.0 Too many connections; try again later\r\n")  # type: ignore[attr-defined]
            transport.close()
            return
        if first and self._implicit_tls is not None and self._raw is None:
            self._raw = transport
            transport.pause_reading()  # type: ignore[attr-defined] # nothing is read until start_tls has the socket
            self._handshake = asyncio.get_running_loop().create_task(self._start_tls(transport, self._implicit_tls))
            return
        super().connection_made(transport)
        if first:
            peer = transport.get_extra_info("peername")
            self._auth_require_tls = not (self._implicit_tls or _in(peer[0] if peer else "", self._trusted))

    async def _start_tls(self, raw: asyncio.BaseTransport, context: ssl.SSLContext) -> None:
        peer = raw.get_extra_info("peername")
        secured: asyncio.BaseTransport | None = None
        reason = "closed during the handshake"
        try:
            secured = await asyncio.get_running_loop().start_tls(
                raw,  # type: ignore[arg-type]
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except Exception as exc:  # whatever ended it, the slot must be given back
            reason = handshake_failure(exc)
        finally:
            if secured is None:
                raw.close()
                self._release()
        if secured is None:
            # A load balancer's TCP check, a port scan or a client that does not speak TLS: one line.
            log.info("submission_tls_handshake_failed", client=peer[0] if peer else None, reason=reason)
        elif not self._lost:
            self.connection_made(secured)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        if self.session is None:
            # Lost right after the handshake, before ``_start_tls`` resumed to start the session.
            self._lost = True
        else:
            super().connection_lost(error)
        self._release()

    def close(self) -> None:
        """Close the connection, whatever stage it has reached (during a handshake only the socket exists)."""
        transport = self.transport or self._raw
        if transport is not None:
            transport.close()

    def _release(self) -> None:
        if self._tracked is not None:
            self._tracked.discard(self)


def _in(address: str, networks: tuple[ipaddress._BaseNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


class SubmissionServer:
    """The aiosmtpd servers of one worker, on the inherited (or given) sockets."""

    def __init__(self, settings: Settings, auth: AuthService, outbox: OutboxService) -> None:
        self._settings = settings
        self._handler = SubmissionHandler(auth, outbox)
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in settings.submission_plaintext_auth_networks)
        self._servers: list[asyncio.Server] = []
        self._connections: set[_SubmissionSMTP] = set()
        self._max_connections = math.ceil(settings.submission_max_connections / settings.workers)
        self._context: ssl.SSLContext | None = None
        self._hostname = settings.smtp_helo_name or socket.gethostname()

    async def start(self, listeners: list[Listener] | None = None) -> None:
        listeners = inherited() if listeners is None else listeners
        if not listeners:
            return
        # aiosmtpd logs every command line at debug level, AUTH lines (and so API keys) included, and a
        # client's every aborted AUTH as a warning in a format of its own; our handler logs what matters.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        # It also sets the session's deprecated login_data itself after every AUTH, warning each time.
        warnings.filterwarnings("ignore", message="Session.login_data is deprecated", category=DeprecationWarning)
        self._context = tls_context(self._settings)
        loop = asyncio.get_running_loop()
        for sock, implicit in listeners:
            server = await loop.create_server(lambda implicit=implicit: self._protocol(implicit), sock=sock)  # type: ignore[misc]
            self._servers.append(server)

    def _protocol(self, implicit_tls: bool) -> _SubmissionSMTP:
        protocol = _SubmissionSMTP(
            self._handler,
            implicit_tls=self._context if implicit_tls else None,
            handshake_timeout=min(self._settings.submission_idle_timeout, _HANDSHAKE_TIMEOUT),
            trusted=self._trusted,
            hostname=self._hostname,
            ident="smtpsettings submission",
            tls_context=None if implicit_tls else self._context,
            data_size_limit=self._settings.outbox_max_message_bytes,
            enable_SMTPUTF8=True,
            auth_required=True,
            auth_require_tls=True,
            timeout=self._settings.submission_idle_timeout,
            loop=asyncio.get_running_loop(),
        )
        # Each connection holds a file descriptor the worker's HTTP side needs too: past the cap, new ones
        # are turned away at once rather than left to exhaust the process's files.
        if len(self._connections) >= self._max_connections:
            protocol.refused = True
            return protocol
        protocol._tracked = self._connections
        self._connections.add(protocol)
        return protocol

    async def stop(self) -> None:
        """Stop accepting, and close the connections still open (a message not yet answered is not accepted)."""
        for server in self._servers:
            server.close()
        for protocol in list(self._connections):
            protocol.close()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers.clear()
