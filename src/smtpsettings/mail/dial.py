"""Resolving and connecting to an admin-given host under the operator's deny list.

Both the SMTP connection and the OAuth 2.0 token request go to hosts an admin typed, so both dial through
here: the name is resolved once, every address is checked against ``deny_networks`` (embedded IPv4 spellings
included) *before* any packet is sent, and the caller connects to a checked address rather than to the
name, so a second lookup cannot swap in another address. The functions raise :class:`MailError`
subclasses without a step; the caller's session fills in the step and redacts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

import idna

from smtpsettings.mail.errors import ConfigurationRefused, ConnectError, MailError, MailTimeout
from smtpsettings.mail.policy import MailPolicy, denied_match
from smtpsettings.mail.report import DetailLevel

__all__ = ["Candidate", "Note", "elapsed_ms", "open_socket", "os_reason", "resolve", "seconds", "wire_name"]


class Note(Protocol):
    """Records one diagnostic line (a session's ``detail``)."""

    def __call__(
        self, message: str, elapsed_ms: float | None = None, level: DetailLevel = "info"
    ) -> None: ...


@dataclass(frozen=True)
class Candidate:
    """One allowed address to connect to, as ``socket.socket``/``sock_connect`` want it."""

    family: int
    type: int
    proto: int
    sockaddr: tuple[Any, ...]

    @property
    def address(self) -> str:
        return str(self.sockaddr[0])


def seconds(value: float) -> str:
    """A deadline as shown to admins: ``10`` rather than ``10.0``."""
    return f"{value:g}"


def elapsed_ms(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` value), rounded for display."""
    return round((time.perf_counter() - start) * 1000, 1)


def os_reason(exc: OSError) -> str:
    """A socket error as a lower-case phrase for a sentence."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return reason[:1].lower() + reason[1:]


def wire_name(host: str) -> str:
    """The form of ``host`` for the resolver and for TLS (SNI and the certificate check).

    IP literals lose their brackets. International names become IDNA 2008 A-labels: left to Python, the
    resolver and the ssl module would encode them by IDNA 2003, which maps some names (``faß.de``) to a
    different host, and certificates name A-labels anyway.

    Raises:
        idna.IDNAError: ``host`` is not a valid international name.
    """
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        return bare
    if host.isascii():
        return host
    return idna.encode(host, uts46=True).decode("ascii")


async def resolve(host: str, port: int, policy: MailPolicy, note: Note) -> tuple[str, list[Candidate]]:
    """Resolve ``host`` and keep the addresses the deny list allows.

    Returns:
        The wire name (see :func:`wire_name`) and the allowed addresses, in resolver order.

    Raises:
        ConnectError: bad port, invalid name, or nothing resolved.
        MailTimeout: the resolver took longer than ``connect_timeout``.
        ConfigurationRefused: every address is in a denied network.
    """
    if not 0 < port < 65536:
        raise ConnectError(f"Invalid port {port} for host {host}")
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    try:
        name = wire_name(host)
    except idna.IDNAError as exc:
        raise ConnectError(f"Could not resolve host {host}: not a valid international name ({exc})") from exc
    shown = host if name in (host, host.strip("[]")) else f"{host} ({name})"
    try:
        literal = ipaddress.ip_address(name)
    except ValueError:
        literal = None
    try:
        if literal is not None:
            # An IP literal needs no resolver: skip getaddrinfo's trip through a worker thread.
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            sockaddr = (str(literal), port, 0, 0) if literal.version == 6 else (str(literal), port)
            infos: list[tuple[Any, ...]] = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
        else:
            async with asyncio.timeout(policy.connect_timeout):
                infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except TimeoutError as exc:
        raise MailTimeout(
            f"Could not resolve host {shown} within {seconds(policy.connect_timeout)} s"
        ) from exc
    except (socket.gaierror, UnicodeError) as exc:
        raise ConnectError(f"Could not resolve host {shown}") from exc
    unique: dict[str, Candidate] = {}
    for family, type_, proto, _, sockaddr in infos:
        unique.setdefault(sockaddr[0], Candidate(family, type_, proto, tuple(sockaddr)))
    if not unique:
        raise ConnectError(f"Could not resolve host {shown}")
    note(f"Resolved {shown} to {', '.join(unique)}", elapsed_ms(start))

    allowed: list[Candidate] = []
    refused: list[str] = []
    for address, candidate in unique.items():
        match = denied_match(address, policy)
        if match is None:
            allowed.append(candidate)
            continue
        network, reached = match
        if str(reached) == address:
            why = f"address is in a denied network ({network})"
        else:  # NAT64, 6to4, Teredo, IPv4-mapped or -compatible spelling of an IPv4 address
            why = f"it embeds the IPv4 address {reached}, which is in a denied network ({network})"
        refused.append(f"Refusing to connect to {address}: {why}")
    for text in refused:
        note(text, level="warning" if allowed else "info")
    if not allowed:
        raise ConfigurationRefused(refused[0])
    return name, allowed


async def open_socket(
    candidates: list[Candidate], policy: MailPolicy, note: Note, *, step: str
) -> tuple[socket.socket, Candidate]:
    """Connect to the first candidate that answers within ``connect_timeout``, trying each in turn.

    Raises:
        MailTimeout, ConnectError: the last candidate's failure (``step`` names where, for the message).
    """
    loop = asyncio.get_running_loop()
    timeout = policy.connect_timeout
    failure: MailError | None = None
    cause: BaseException | None = None
    for candidate in candidates:
        where = f"{candidate.sockaddr[0]}:{candidate.sockaddr[1]}"
        sock = socket.socket(candidate.family, candidate.type, candidate.proto)
        sock.setblocking(False)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, candidate.sockaddr)
        except TimeoutError as exc:
            sock.close()
            note(f"No TCP answer from {where} within {seconds(timeout)} s", elapsed_ms(start), "warning")
            failure = MailTimeout(f"No answer from {where} within {seconds(timeout)} s at step {step}")
            cause = exc
            continue
        except OSError as exc:
            sock.close()
            reason = os_reason(exc)
            note(f"TCP connect to {where} failed: {reason}", elapsed_ms(start), "warning")
            failure = ConnectError(f"Could not connect to {where}: {reason}")
            cause = exc
            continue
        except BaseException:  # cancelled (total timeout): don't leak the socket
            sock.close()
            raise
        note(f"Connected to {where} (TCP)", elapsed_ms(start))
        return sock, candidate
    assert failure is not None
    raise failure from cause
