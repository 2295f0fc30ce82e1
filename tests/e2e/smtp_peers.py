"""SMTP peers for the end-to-end tests: real aiosmtpd servers (and a tarpit) in background threads.

The server under test is another process, so these peers run in threads with their own event loops
(aiosmtpd's Controller) rather than in the test's loop.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from email import message_from_bytes
from email.message import Message

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from aiosmtpd.smtp import SMTP as SMTPServer


class Inbox:
    """aiosmtpd handler keeping every delivered message.

    ``refuse_rcpt`` answers every RCPT with that reply; ``rcpt_replies`` answers the RCPTs of an address
    with its replies in turn, then accepts it; ``refuse_data`` answers the first DATA commands
    with its replies in turn, then accepts. ``data_delay`` holds each accepting reply back that many seconds
    after the message is recorded, so a client killed meanwhile leaves a delivered message unacknowledged.
    ``helo_names`` is each message's EHLO name (which client sent it).
    """

    def __init__(
        self,
        refuse_rcpt: str | None = None,
        refuse_data: list[str] | None = None,
        data_delay: float = 0.0,
        rcpt_replies: dict[str, list[str]] | None = None,
    ) -> None:
        self.messages: list[Message] = []
        self.helo_names: list[str | None] = []
        self.data_delay = data_delay
        self.envelopes: list[Envelope] = []
        self.received = threading.Event()
        self.refuse_rcpt = refuse_rcpt
        self.refuse_data = list(refuse_data or [])
        self.rcpt_replies = {address: list(replies) for address, replies in (rcpt_replies or {}).items()}
        self.connections = 0

    async def handle_RCPT(self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        if self.rcpt_replies.get(address):
            return self.rcpt_replies[address].pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.refuse_data:
            return self.refuse_data.pop(0)
        self.envelopes.append(envelope)
        self.messages.append(message_from_bytes(envelope.original_content or b""))
        self.helo_names.append(session.host_name)
        self.received.set()
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        return "250 2.0.0 OK queued"


class Authenticator:
    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username.encode(), password.encode()

    def __call__(self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: object) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (self.username, self.password)
        return AuthResult(success=ok, handled=False, message=None if ok else "535 5.7.8 bad credentials")


@contextmanager
def smtp_peer(
    *,
    auth: tuple[str, str] | None = None,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    refuse_rcpt: str | None = None,
    refuse_data: list[str] | None = None,
    data_delay: float = 0.0,
    rcpt_replies: dict[str, list[str]] | None = None,
) -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox(refuse_rcpt, refuse_data, data_delay, rcpt_replies)
    kwargs: dict[str, object] = {}
    if auth:
        kwargs.update(authenticator=Authenticator(*auth), auth_require_tls=False)
    if starttls:
        kwargs.update(tls_context=starttls, require_starttls=True)
    # aiosmtpd's Controller checks readiness by connecting to its port, so it needs a real number.
    controller = Controller(
        inbox, hostname="127.0.0.1", port=closed_port(), ssl_context=implicit_tls, server_hostname="localhost", **kwargs
    )
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


class RawPeer:
    """A listener below SMTP: ``connections`` counts the connections it accepted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0


@contextmanager
def raw_peer(greeting: bytes | None = None) -> Iterator[RawPeer]:
    """Accepts connections; says ``greeting`` and hangs up (``421 ...`` at greeting), or without one never a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    peer = RawPeer(listener.getsockname()[1])
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            peer.connections += 1
            if greeting is None:
                held.append(conn)
                continue
            with suppress(OSError):
                conn.sendall(greeting)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


@contextmanager
def tarpit() -> Iterator[int]:
    """Accepts connections and never says a word."""
    with raw_peer() as peer:
        yield peer.port


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
