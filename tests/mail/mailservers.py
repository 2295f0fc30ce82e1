"""Handlers and helpers for the real aiosmtpd servers used by the mail tests."""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import spnego
import spnego.exceptions
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

USERNAME = "mailer@example.com"
PASSWORD = "s3cr3t-Pässwörd!"  # non-ASCII on purpose: must survive encoding and redaction
NTLM_DOMAIN = "EXAMPLE"
NTLM_USER = "ntlmuser"
SERVER_NAME = "mail.test"


@dataclass
class Sink:
    """aiosmtpd handler: stores delivered envelopes, can reject MAIL/RCPT, offers extra AUTH."""

    messages: list[Envelope] = field(default_factory=list)
    reject_sender: str | None = None
    reject_recipient: str | None = None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.reject_sender is not None:
            return self.reject_sender
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.reject_recipient is not None:
            return self.reject_recipient
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 2.0.0 Message accepted for delivery"


@dataclass
class Recorder(Sink):
    """A sink that tells connections apart and can refuse, stall or drop chosen commands.

    ``peers`` lists each client connection (its address) in the order it first sent MAIL; served by
    :class:`CountingSMTP`, ``connected``/``most_connected`` count open connections, and beyond
    ``max_connections`` a connection is answered 421 and closed (``refused`` counts them).
    ``rcpt_replies`` answers RCPT for an address with a given reply; ``data_replies`` answers the
    next DATA commands (first in, first out) before normal service resumes; ``drop_on_data`` hangs up
    instead of answering DATA; ``stall_data`` makes DATA wait until the event is set.
    """

    peers: list[object] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    drop_on_data: bool = False
    stall_data: asyncio.Event | None = None
    data_delay: float = 0.0
    active: int = 0
    most_active: int = 0
    max_connections: int | None = None
    connected: int = 0
    most_connected: int = 0
    refused: int = 0

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if session.peer not in self.peers:
            self.peers.append(session.peer)
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.drop_on_data:
            assert server.transport is not None
            server.transport.abort()
            return "250 never seen"
        if self.stall_data is not None:
            await self.stall_data.wait()
        if self.data_replies:
            return self.data_replies.pop(0)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(self.data_delay)
        finally:
            self.active -= 1
        return await super().handle_DATA(server, session, envelope)


class CountingSMTP(SMTP):
    """aiosmtpd that counts its open connections on its :class:`Recorder` and refuses those beyond its limit,
    as Postfix does beyond its client connection limit (421 before the greeting, then it hangs up)."""

    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handler = self.event_handler
        if self.transport is None:  # not the second call after STARTTLS
            if handler.max_connections is not None and handler.connected >= handler.max_connections:
                self._refused = True
                handler.refused += 1
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(b"421 4.7.0 mail.test Error: too many connections\r\n")
                transport.close()
                return
            handler.connected += 1
            handler.most_connected = max(handler.most_connected, handler.connected)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self.event_handler.connected -= 1
        super().connection_lost(error)


class CramMd5Sink(Sink):
    """Adds server-side CRAM-MD5 (aiosmtpd has only PLAIN/LOGIN built in)."""

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        challenge = f"<{secrets.randbelow(10**9)}@{SERVER_NAME}>".encode()
        answer = await server.challenge_auth(challenge)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        user, _, digest = bytes(answer).partition(b" ")
        expected = hmac.new(PASSWORD.encode(), challenge, "md5").hexdigest().encode()
        ok = user == USERNAME.encode() and hmac.compare_digest(digest, expected)
        return AuthResult(success=ok, handled=False, auth_data=user)


class NtlmSink(Sink):
    """Adds server-side AUTH NTLM backed by a pyspnego acceptor (NTLM_USER_FILE)."""

    async def auth_NTLM(self, server: SMTP, args: list[str]) -> AuthResult:
        context = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
        if len(args) > 1:
            negotiate = base64.b64decode(args[1])
        else:
            answer = await server.challenge_auth(b"", encode_to_b64=False)
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            negotiate = bytes(answer)
        challenge = context.step(negotiate)
        assert challenge is not None
        answer = await server.challenge_auth(challenge)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        try:
            context.step(bytes(answer))
        except spnego.exceptions.SpnegoError:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=context.complete, handled=False, auth_data=context.client_principal)


class XFooSink(Sink):
    """Offers only a mechanism the client does not implement."""

    async def auth_XFOO(self, server: SMTP, args: list[str]) -> AuthResult:
        return AuthResult(success=False, handled=False)


def check_password(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """aiosmtpd authenticator for PLAIN/LOGIN."""
    if not isinstance(auth_data, LoginPassword):
        return AuthResult(success=False, handled=False)
    ok = auth_data.login == USERNAME.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@dataclass
class RunningServer:
    host: str
    port: int
    handler: Sink


StartServer = Callable[..., Awaitable[RunningServer]]


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            address = str(sock.getsockname()[0])
    except OSError:
        return None
    if address.startswith("127.") or address == "0.0.0.0":
        return None
    return address
