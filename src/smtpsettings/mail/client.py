"""Sending one message through an admin-configured SMTP server, with diagnostics.

The TCP connection is opened here, not by aiosmtplib: we resolve the name
ourselves, refuse denied networks *before* any packet is sent, try each
allowed address in turn and time the connect. The connected socket is then
handed to :class:`aiosmtplib.SMTP`, which still verifies the certificate
against the configured host *name* (``hostname=target.host``).

Deadlines (see :class:`MailPolicy`):

* ``connect_timeout``: DNS, each TCP connect, and each TLS handshake. With
  implicit TLS, aiosmtplib uses one deadline for handshake and greeting, so the
  greeting shares it there.
* ``command_timeout``: each SMTP reply, the greeting included.
* ``total_timeout``: the whole send (``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage
from typing import TypeVar
from urllib.parse import urlsplit

import aiosmtplib
from aiosmtplib import SMTP, SMTPResponse
from aiosmtplib.auth import auth_xoauth2_encode

from smtpsettings.mail.dial import Candidate, open_socket, resolve
from smtpsettings.mail.dial import elapsed_ms as _ms
from smtpsettings.mail.dial import os_reason as _os_reason
from smtpsettings.mail.dial import seconds as _secs
from smtpsettings.mail.dial import wire_name as _wire_name  # noqa: F401 - tests import it from here
from smtpsettings.mail.errors import (
    AuthenticationError,
    ConfigurationRefused,
    ConnectError,
    MailError,
    MailTimeout,
    SendError,
    TLSError,
)
from smtpsettings.mail.message import envelope_of, flatten
from smtpsettings.mail.ntlm import authenticate_ntlm
from smtpsettings.mail.oauth2 import STEP_TOKEN, AccessToken, OAuth2Grant, TokenCache
from smtpsettings.mail.policy import MailPolicy, plaintext_auth_allowed
from smtpsettings.mail.report import Detail, DetailLevel, Refusal, SendReport
from smtpsettings.mail.target import SmtpTarget, uses_implicit_tls
from smtpsettings.mail.tls import build_tls_context, certificate_verify_message, describe_tls, find_ssl_error
from smtpsettings.mail.transcript import Redactor, Transcript, truncate

__all__ = [
    "AUTH_PREFERENCE",
    "STEP_AUTHENTICATE",
    "STEP_CONNECT",
    "STEP_SEND",
    "STEP_TOKEN",
    "STEPS",
    "StepCallback",
    "send_message",
]

STEP_CONNECT = "Connect to host"
STEP_AUTHENTICATE = "Authenticate"
STEP_SEND = "Send test message"
STEPS = (STEP_TOKEN, STEP_CONNECT, STEP_AUTHENTICATE, STEP_SEND)

AUTH_PREFERENCE = ("cram-md5", "plain", "login")
"""Best first. CRAM-MD5 never puts the password on the wire, which matters when
an operator allowed plaintext AUTH; PLAIN (one round trip) beats LOGIN. Same
order as smtplib and aiosmtplib, so behaviour matches other clients."""

_SERVICE_CLOSING = 421
"""RFC 5321 4.2.3: the server is closing the channel, whatever command it answered."""
_TRY_NEXT_MECHANISM = frozenset({504, 534})
_XOAUTH2_REFUSED = 535
"""XOAUTH2: the token was refused (Gmail and Exchange Online first send a 334 with a JSON error, then 535).
Only this, with a cached token, makes the session ask for a new token; 454 and the like are not about it."""

_XOAUTH2_HINTS = {
    "microsoft": "the app needs the SMTP.SendAsApp permission with admin consent, a service principal in "
    "Exchange Online and permission on the mailbox {user}; SMTP AUTH must be enabled for that mailbox",
    "google": "the service account's client id needs domain-wide delegation for https://mail.google.com/ "
    "and {user} must be a mailbox of the domain",
}
"""Replies meaning "not this mechanism" (not "wrong password"): only then is the
next mechanism tried, so bad credentials never cost several failed logins."""

StepCallback = Callable[[str], Awaitable[None]]
_T = TypeVar("_T")

_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
"""An ASCII dot-atom address, which aiosmtplib would put on the wire unchanged as ``<address>``: sent so
directly, it skips the parse of ``email.utils`` that every MAIL and RCPT pays otherwise, once per message
of the outbox. Anything else goes through aiosmtplib's own quoting and checks."""


async def _mail(smtp: SMTP, sender: str, options: list[str], encoding: str, timeout: float) -> SMTPResponse:
    """``smtp.mail(...)``, without the address parse where the address needs none."""
    if not _PLAIN_ADDRESS.fullmatch(sender):
        return await smtp.mail(sender, options=options, encoding=encoding, timeout=timeout)
    args = [option.encode("ascii") for option in options]
    reply = await smtp.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", *args, timeout=timeout)
    if reply.code != 250:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
    return reply


async def _rcpt(smtp: SMTP, recipient: str, encoding: str, timeout: float) -> SMTPResponse:
    """``smtp.rcpt(...)``, without the address parse where the address needs none."""
    if not _PLAIN_ADDRESS.fullmatch(recipient):
        return await smtp.rcpt(recipient, encoding=encoding, timeout=timeout)
    reply = await smtp.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">", timeout=timeout)
    if reply.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
    return reply


def _reply(response: SMTPResponse | aiosmtplib.SMTPResponseException) -> str:
    code = response.code
    message = response.message.replace("\n", " / ")
    return truncate(f"{code} {message}".strip(), 300)


class _StepCallbackFailed(Exception):
    """Wraps an exception from ``on_step`` so it is re-raised unchanged, not as a MailError."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


class _Session:
    """State of one SMTP session: the connection, current step and collected diagnostics.

    The one-shot :func:`send_message` runs a session from token to QUIT; :class:`SmtpConnection` opens one
    and sends many messages over it, giving each its own transcript and details.
    """

    def __init__(
        self,
        target: SmtpTarget,
        policy: MailPolicy,
        on_step: StepCallback | None,
        implicit_tls: bool,
        tokens: TokenCache | None = None,
    ) -> None:
        self.target = target
        self.tokens = tokens
        self.policy = policy
        self.on_step = on_step
        self.implicit_tls = implicit_tls
        self.redactor = Redactor()
        self.redactor.add_password(target.username, target.password)
        # XOAUTH2 applies only with authentication on (the settings rule); then the password is not used.
        self.grant: OAuth2Grant | None = target.oauth2 if target.enable_auth else None
        self.access_token: AccessToken | None = None
        if self.grant is not None:
            self.redactor.add(self.grant.client_secret)
        self.transcript = Transcript(self.redactor)
        self.details: list[Detail] = []
        self.step = STEP_CONNECT
        self.address = ""
        self.name = target.host  # as resolved and verified; set by resolve()
        self.smtp: SMTP | None = None
        self.sock: socket.socket | None = None
        self.in_transaction = False  # MAIL sent, no final DATA reply yet
        self._tls_context: ssl.SSLContext | None = None

    # -- diagnostics ---------------------------------------------------------

    def detail(self, message: str, elapsed_ms: float | None = None, level: DetailLevel = "info") -> None:
        self.details.append(Detail(self.step, self.redactor.scrub(message), elapsed_ms, level))

    async def enter(self, step: str) -> None:
        self.step = step
        if self.on_step is not None:
            try:
                await self.on_step(step)
            except Exception as exc:
                raise _StepCallbackFailed(exc) from exc

    def fail(self, cls: type[MailError], message: str, code: int | None = None) -> MailError:
        return cls(self.redactor.scrub(message), step=self.step, code=code)

    def finish_error(self, exc: MailError) -> MailError:
        exc.message = self.redactor.scrub(exc.message)
        exc.args = (exc.message,)
        if not exc.step:
            exc.step = self.step
        self.details.append(Detail(exc.step, exc.message, None, "error"))
        exc.details = list(self.details)
        exc.transcript = list(self.transcript.lines)
        return exc

    @property
    def endpoint(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    def tls_context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            try:
                self._tls_context = build_tls_context(self.policy.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise self.fail(
                    TLSError, f"Could not load the CA file {self.policy.ca_file}: {_os_reason(exc)}"
                ) from exc
        return self._tls_context

    # -- run -----------------------------------------------------------------

    async def run(self, message: EmailMessage) -> SendReport:
        started = time.perf_counter()
        try:
            await self.guarded(self.one_shot, message)
        finally:
            self.close()
        self.details.append(Detail(STEP_SEND, "Message sent", _ms(started)))
        return SendReport(details=list(self.details), transcript=list(self.transcript.lines))

    async def one_shot(self, message: EmailMessage) -> None:
        await self.open()
        await self.send(message)
        await self.quit()

    async def open(self) -> None:
        """Token (XOAUTH2), connect with the SSRF guard, EHLO, TLS and AUTH: ready for MAIL."""
        if self.grant is not None:
            await self.obtain_token()
        await self.connect()
        if self.target.enable_auth:
            await self.authenticate()

    async def guarded(self, work: Callable[..., Awaitable[_T]], *args: object) -> _T:
        """Run ``work`` under the total deadline; every failure leaves as a finished, redacted MailError.

        Whole operations (the one-shot send, opening a connection, one message on it) each get
        ``total_timeout``: a server that trickles replies just inside the per-command deadline must not
        hold a sender for ever.
        """
        try:
            try:
                async with asyncio.timeout(self.policy.total_timeout):
                    return await work(*args)
            except TimeoutError as exc:
                if isinstance(exc, aiosmtplib.SMTPTimeoutError):
                    raise
                raise self.fail(
                    MailTimeout,
                    f"Sending did not finish within {_secs(self.policy.total_timeout)} s "
                    f"(total timeout) at step {self.step}",
                ) from exc
        except MailError as exc:
            self.finish_error(exc)
            raise
        except _StepCallbackFailed as exc:
            raise exc.original from None
        except Exception as exc:
            raise self.finish_error(self.translate(exc)) from exc

    def translate(self, exc: Exception) -> MailError:
        """Map an exception not handled where it happened to a MailError."""
        host = self.target.host
        verify = certificate_verify_message(exc)
        if verify is not None:
            return self.fail(TLSError, f"Certificate verify failed: {verify}")
        if isinstance(exc, aiosmtplib.SMTPTimeoutError):
            return self.fail(
                MailTimeout,
                f"No answer from {host} within {_secs(self.policy.command_timeout)} s at step {self.step}",
            )
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            return self.fail(ConnectError, f"{host} closed the connection unexpectedly at step {self.step}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return self.fail(MailError, f"Unexpected reply at step {self.step}: {_reply(exc)}", exc.code)
        ssl_error = find_ssl_error(exc)
        if ssl_error is not None:
            return self.fail(TLSError, f"TLS failure with {self.endpoint}: {ssl_error.reason or ssl_error}")
        if isinstance(exc, OSError):
            return self.fail(ConnectError, f"Connection to {host} failed at step {self.step}: {_os_reason(exc)}")
        return self.fail(MailError, f"Unexpected error at step {self.step}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
        if self.sock is not None:
            self.sock.close()

    # -- step: connect -------------------------------------------------------

    async def resolve(self) -> list[Candidate]:
        self.name, allowed = await resolve(self.target.host, self.target.port, self.policy, self.detail)
        return allowed

    async def open_socket(self, candidates: list[Candidate]) -> None:
        self.sock, chosen = await open_socket(candidates, self.policy, self.detail, step=self.step)
        self.address = chosen.address

    def install_transcript(self, smtp: SMTP) -> None:
        """Record every line through the protocol's own write/read methods.

        Hooking the protocol instance (rather than SMTP methods) also captures
        STARTTLS and DATA, which aiosmtplib sends below ``execute_command``.
        """
        protocol = smtp.protocol
        assert protocol is not None
        session = self  # read .transcript at each line: a reused connection gives each message its own
        original_write = protocol.write
        original_read = protocol.read_response

        def write(data: bytes) -> None:
            session.transcript.client(data)
            original_write(data)

        async def read_response(timeout: float | None = None) -> SMTPResponse:
            try:
                response = await original_read(timeout=timeout)
            except aiosmtplib.SMTPTimeoutError:
                session.transcript.note(f"no reply within {_secs(timeout or 0)} s")
                raise
            except aiosmtplib.SMTPServerDisconnected:
                session.transcript.note("connection closed by server")
                raise
            session.transcript.server(response)
            return response

        setattr(protocol, "write", write)  # noqa: B010 - instance-level hook
        setattr(protocol, "read_response", read_response)  # noqa: B010

    def record_tls(self, smtp: SMTP, elapsed_ms: float | None) -> None:
        info = describe_tls(smtp.get_transport_info("ssl_object"))
        for index, (text, warn) in enumerate(info):
            self.detail(text, elapsed_ms if index == 0 else None, "warning" if warn else "info")

    async def ehlo(self, smtp: SMTP) -> None:
        start = time.perf_counter()
        try:
            reply = await smtp.ehlo(hostname=self.policy.helo_name)
        except aiosmtplib.SMTPHeloError as exc:
            self.detail(f"EHLO rejected: {_reply(exc)}; trying HELO", _ms(start), "warning")
            try:
                reply = await smtp.helo(hostname=self.policy.helo_name)
            except aiosmtplib.SMTPHeloError as exc2:
                raise self.fail(ConnectError, f"Server rejected HELO: {_reply(exc2)}", exc2.code) from exc2
            self.detail(f"HELO: {_reply(reply)} (no ESMTP extensions)", _ms(start))
            return
        extensions = [f"{k.upper()} {v}".strip() for k, v in smtp.esmtp_extensions.items()]
        first = reply.message.split("\n", 1)[0]
        self.detail(
            f"EHLO: {reply.code} {first}; extensions: {', '.join(extensions) or '(none)'}", _ms(start)
        )

    async def connect(self, *, announce: bool = True) -> None:
        if announce:
            await self.enter(STEP_CONNECT)
        target, policy = self.target, self.policy
        candidates = await self.resolve()
        await self.open_socket(candidates)

        tls_context = self.tls_context() if target.enable_ssl else None
        if self.implicit_tls:
            self.detail(f"Using implicit TLS (port {target.port})")
        elif target.enable_ssl:
            self.detail("STARTTLS required (SSL enabled, not port 465)")
        else:
            self.detail("Plain SMTP (SSL disabled)", level="warning")

        try:
            smtp = SMTP(
                hostname=self.name,  # with sock=, only used for SNI and certificate checks
                sock=self.sock,
                use_tls=self.implicit_tls,
                start_tls=False,
                tls_context=tls_context,
                local_hostname=policy.helo_name,
                timeout=policy.command_timeout,
            )
        except ValueError as exc:  # aiosmtplib validates the EHLO name
            raise self.fail(MailError, f"Invalid EHLO name {policy.helo_name!r} in the mail policy") from exc
        self.smtp = smtp
        self.sock = None  # owned by the transport from now on; smtp.close() closes it
        connect_deadline = policy.connect_timeout if self.implicit_tls else policy.command_timeout
        start = time.perf_counter()
        try:
            greeting = await smtp.connect(timeout=connect_deadline)
        except aiosmtplib.SMTPConnectResponseError as exc:
            self.transcript.server(SMTPResponse(exc.code, exc.message))
            raise self.fail(ConnectError, f"Server refused the connection: {_reply(exc)}", exc.code) from exc
        except aiosmtplib.SMTPConnectTimeoutError as exc:
            if self.implicit_tls and "ready message" not in str(exc):
                raise self.fail(
                    MailTimeout,
                    f"TLS handshake with {self.endpoint} did not finish within "
                    f"{_secs(connect_deadline)} s at step {self.step}",
                ) from exc
            self.transcript.note(f"no greeting within {_secs(connect_deadline)} s")
            raise self.fail(
                MailTimeout,
                f"No answer from {target.host} within {_secs(connect_deadline)} s at step {self.step}",
            ) from exc
        except aiosmtplib.SMTPConnectError as exc:
            verify = certificate_verify_message(exc)
            if verify is not None:
                raise self.fail(TLSError, f"Certificate verify failed: {verify}") from exc
            ssl_error = find_ssl_error(exc)
            if ssl_error is not None:
                raise self.fail(
                    TLSError, f"TLS handshake with {self.endpoint} failed: {ssl_error.reason or ssl_error}"
                ) from exc
            raise self.fail(
                ConnectError, f"{self.endpoint} closed the connection before sending a greeting"
            ) from exc
        elapsed = _ms(start)
        self.transcript.server(greeting)
        self.install_transcript(smtp)
        if self.implicit_tls:
            self.record_tls(smtp, elapsed)
            elapsed = None
        self.detail(f"Server greeting: {_reply(greeting)}", elapsed)
        await self.ehlo(smtp)

        if target.enable_ssl and not self.implicit_tls:
            await self.starttls(smtp)

    async def starttls(self, smtp: SMTP) -> None:
        if not smtp.supports_extension("starttls"):
            raise self.fail(TLSError, f"STARTTLS is required but {self.endpoint} does not offer it")
        start = time.perf_counter()
        try:
            reply = await smtp.starttls(
                server_hostname=self.name,
                tls_context=self.tls_context(),
                timeout=self.policy.connect_timeout,
            )
        except aiosmtplib.SMTPTimeoutError as exc:
            raise self.fail(
                MailTimeout,
                f"STARTTLS with {self.endpoint} did not finish within "
                f"{_secs(self.policy.connect_timeout)} s at step {self.step}",
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise self.fail(TLSError, f"Server refused STARTTLS: {_reply(exc)}", exc.code) from exc
        except (ssl.SSLError, aiosmtplib.SMTPServerDisconnected) as exc:
            verify = certificate_verify_message(exc)
            if verify is not None:
                raise self.fail(TLSError, f"Certificate verify failed: {verify}") from exc
            ssl_error = find_ssl_error(exc)
            reason = (ssl_error.reason or str(ssl_error)) if ssl_error else "connection closed"
            raise self.fail(TLSError, f"TLS handshake with {self.endpoint} failed: {reason}") from exc
        self.detail(f"STARTTLS: {_reply(reply)}")
        self.transcript.note("TLS established")
        self.record_tls(smtp, _ms(start))
        await self.ehlo(smtp)

    # -- step: authenticate --------------------------------------------------

    def check_plaintext(self, smtp: SMTP) -> bool:
        """Whether TLS is active; refuses credentials in plain text where the policy forbids them."""
        tls_active = smtp.get_transport_info("sslcontext") is not None
        if not plaintext_auth_allowed(self.address, tls_active=tls_active, policy=self.policy):
            raise self.fail(
                ConfigurationRefused,
                f"Refusing to send credentials over an unencrypted connection to {self.target.host}; "
                "enable SSL or set SMTPSETTINGS_SMTP_ALLOW_PLAINTEXT_AUTH=true",
            )
        return tls_active

    async def authenticate(self) -> None:
        await self.enter(STEP_AUTHENTICATE)
        smtp = self.smtp
        assert smtp is not None
        target = self.target
        tls_active = self.check_plaintext(smtp)
        if not tls_active:
            self.detail("Sending credentials without TLS (loopback or allowed by policy)", level="warning")
        offered = list(smtp.server_auth_methods)
        offered_text = " ".join(m.upper() for m in offered) or "none"
        timeout = self.policy.command_timeout
        start = time.perf_counter()

        if self.grant is not None:
            await self.authenticate_xoauth2(offered_text)
            return

        if target.use_ntlm:
            if "ntlm" not in offered:
                raise self.fail(AuthenticationError, f"Server does not offer AUTH NTLM (offered: {offered_text})")
            reply = await authenticate_ntlm(
                smtp, target.username, target.password, timeout=timeout, redactor=self.redactor
            )
            self.detail(f"Authenticated with NTLM: {_reply(reply)}", _ms(start))
            return

        if not smtp.supports_extension("auth"):
            raise self.fail(AuthenticationError, "Server does not offer AUTH (no AUTH in its EHLO reply)")
        mechanisms = [m for m in AUTH_PREFERENCE if m in offered]
        if not mechanisms:
            raise self.fail(
                AuthenticationError, f"Server has no AUTH mechanism we support (offered: {offered_text})"
            )
        for index, mechanism in enumerate(mechanisms):
            method = getattr(smtp, f"auth_{mechanism.replace('-', '')}")
            try:
                reply = await method(target.username, target.password, timeout=timeout)
            except aiosmtplib.SMTPAuthenticationError as exc:
                if exc.code in _TRY_NEXT_MECHANISM and index + 1 < len(mechanisms):
                    self.detail(f"AUTH {mechanism.upper()} not accepted: {_reply(exc)}", level="warning")
                    continue
                raise self.fail(AuthenticationError, f"Authentication failed: {_reply(exc)}", exc.code) from exc
            self.detail(f"Authenticated with {mechanism.upper()}: {_reply(reply)}", _ms(start))
            return

    # -- step: OAuth 2.0 token and XOAUTH2 ---------------------------------------

    async def obtain_token(self) -> None:
        await self.enter(STEP_TOKEN)
        assert self.grant is not None and self.tokens is not None
        self.use_token(await self.tokens.token(self.grant, self.policy, note=self.detail))

    def use_token(self, token: AccessToken) -> None:
        self.access_token = token
        self.redactor.add_bearer(self.target.username, token.value)
        if token.cached:
            assert self.grant is not None
            host = urlsplit(self.grant.token_url).hostname or self.grant.token_url
            lifetime = ""
            if token.valid_for is not None:
                lifetime = f", usable for another {_secs(round(token.valid_for))} s"
            self.detail(f"Using the cached OAuth 2.0 token from {host}{lifetime}")

    async def authenticate_xoauth2(self, offered_text: str) -> None:
        smtp = self.smtp
        assert smtp is not None and self.grant is not None and self.tokens is not None
        if "xoauth2" not in smtp.server_auth_methods:
            raise self.fail(
                AuthenticationError, f"Server does not offer AUTH XOAUTH2 (offered: {offered_text})"
            )
        start = time.perf_counter()
        reply = await self.xoauth2(smtp)
        if reply.code == _XOAUTH2_REFUSED and self.access_token is not None and self.access_token.cached:
            self.detail(
                f"The server refused the cached token: {_reply(reply)}; getting a new one", level="warning"
            )
            rejected = self.access_token.value
            fresh = await self.tokens.token(
                self.grant, self.policy, refresh=True, rejected=rejected, note=self.detail
            )
            # The same token back: a new one was refused moments ago too (the cache remembers), so no retry.
            if fresh.value != rejected:
                self.use_token(fresh)
                start = time.perf_counter()
                try:
                    if not smtp.is_connected:
                        raise aiosmtplib.SMTPServerDisconnected("closed after the refusal")
                    reply = await self.xoauth2(smtp)
                except aiosmtplib.SMTPServerDisconnected:
                    # Some servers hang up after a refused AUTH: the new token gets a new connection.
                    self.detail("The server closed the connection; connecting again", level="warning")
                    smtp = await self.reconnect()
                    start = time.perf_counter()
                    reply = await self.xoauth2(smtp)
        if reply.code != 235:
            message = f"Authentication failed: {_reply(reply)}"
            hint = _XOAUTH2_HINTS.get(self.grant.provider)
            if reply.code == _XOAUTH2_REFUSED and hint:
                user = self.target.username
                message += f" (the token was refused for {user}: {hint.format(user=user)})"
            raise self.fail(AuthenticationError, message, reply.code)
        self.detail(f"Authenticated with XOAUTH2 as {self.target.username}: {_reply(reply)}", _ms(start))

    async def reconnect(self) -> SMTP:
        self.close()
        self.smtp = None
        await self.connect(announce=False)
        assert self.smtp is not None
        self.check_plaintext(self.smtp)
        return self.smtp

    async def xoauth2(self, smtp: SMTP) -> SMTPResponse:
        """One AUTH XOAUTH2 exchange; the final reply, whatever its code."""
        assert self.access_token is not None
        timeout = self.policy.command_timeout
        payload = auth_xoauth2_encode(self.target.username, self.access_token.value)
        reply = await smtp.execute_command(b"AUTH", b"XOAUTH2", payload, timeout=timeout)
        if reply.code == 334 and not reply.message.strip():
            # An empty challenge is no error: the server did not read the initial response and asks for it.
            self.detail("The server asked for the XOAUTH2 response again; sent it as the continuation")
            reply = await smtp.execute_command(payload, timeout=timeout)
        if reply.code == 334:
            # The error comes as a base64 JSON challenge; an empty line fetches the final reply.
            self.explain_xoauth2_challenge(reply.message)
            reply = await smtp.execute_command(b"", timeout=timeout)
        return reply

    def explain_xoauth2_challenge(self, challenge: str) -> None:
        try:
            text = base64.b64decode(challenge.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return
        shown = " ".join("".join(c if c.isprintable() else " " for c in text).split())
        if shown:
            self.detail(f"Server's XOAUTH2 error: {truncate(shown, 300)}", level="warning")

    # -- step: send ----------------------------------------------------------

    async def send(self, message: EmailMessage) -> None:
        await self.enter(STEP_SEND)
        sender, recipients = envelope_of(message)
        content, utf8 = flatten(message)
        await self.transmit(sender, recipients, content, smtputf8=utf8)

    async def transmit(
        self,
        sender: str,
        recipients: Sequence[str],
        content: bytes,
        *,
        smtputf8: bool = False,
        refusals: list[Refusal] | None = None,
    ) -> SMTPResponse | None:
        """One mail transaction: MAIL, RCPT for each recipient, DATA; the server's final reply.

        A refusal raises SendError with the reply code and leaves the transaction open: a reused
        connection then sends RSET, the one-shot send simply hangs up. ``in_transaction`` says whether
        MAIL went out. SMTPUTF8 is asked for when ``smtputf8`` or an envelope address is not ASCII.

        With ``refusals`` (the outbox), a refused RCPT is appended there instead and the others still go:
        one bad address must not stop everybody's mail. DATA then goes only if a recipient was accepted;
        if none was, the answer is None and the transaction is left open. A 421 still ends it all.
        """
        smtp = self.smtp
        assert smtp is not None
        timeout = self.policy.command_timeout
        if not recipients:
            raise self.fail(SendError, "The message has no recipients")
        needs_utf8 = smtputf8 or not all(a.isascii() for a in [sender, *recipients])
        options: list[str] = []
        if needs_utf8:
            if not smtp.supports_extension("smtputf8"):
                raise self.fail(
                    SendError, "An address contains non-ASCII characters but the server does not support SMTPUTF8"
                )
            options.append("SMTPUTF8")
        encoding = "utf-8" if needs_utf8 else "ascii"

        start = time.perf_counter()
        self.in_transaction = True
        try:
            reply = await _mail(smtp, sender, options, encoding, timeout)
        except aiosmtplib.SMTPSenderRefused as exc:
            raise self.fail(SendError, f"Sender rejected: {_reply(exc)}", exc.code) from exc
        except ValueError as exc:
            raise self.fail(SendError, f"Invalid sender address {sender!r}") from exc
        self.detail(f"MAIL FROM:<{sender}>: {_reply(reply)}", _ms(start))
        for recipient in recipients:
            start = time.perf_counter()
            try:
                reply = await _rcpt(smtp, recipient, encoding, timeout)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if refusals is None or exc.code == _SERVICE_CLOSING:
                    raise self.fail(SendError, f"Recipient rejected: {_reply(exc)}", exc.code) from exc
                refusals.append(Refusal(recipient, exc.code, _reply(exc)))
                self.detail(f"RCPT TO:<{recipient}>: {_reply(exc)}", _ms(start), "warning")
                continue
            except ValueError as exc:
                if refusals is None:
                    raise self.fail(SendError, f"Invalid recipient address {recipient!r}") from exc
                refusals.append(Refusal(recipient, None, "The address cannot be sent to this server"))
                self.detail(f"Invalid recipient address {recipient!r}", _ms(start), "warning")
                continue
            self.detail(f"RCPT TO:<{recipient}>: {_reply(reply)}", _ms(start))
        if refusals is not None and len(refusals) == len(recipients):
            return None
        start = time.perf_counter()
        try:
            reply = await smtp.data(content, timeout=timeout)
        except aiosmtplib.SMTPDataError as exc:
            raise self.fail(SendError, f"Message rejected: {_reply(exc)}", exc.code) from exc
        self.in_transaction = False
        self.detail(f"Message accepted: {_reply(reply)}", _ms(start))
        return reply

    async def quit(self) -> None:
        # The message is already accepted; a failing QUIT must not turn success into an error.
        smtp = self.smtp
        if smtp is None or not smtp.is_connected:
            return
        try:
            reply = await smtp.quit(timeout=min(self.policy.command_timeout, 5.0))
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.detail(f"QUIT not acknowledged ({type(exc).__name__}); message was already accepted")
            return
        self.detail(f"QUIT: {_reply(reply)}")


async def _send(
    target: SmtpTarget,
    message: EmailMessage,
    policy: MailPolicy,
    *,
    on_step: StepCallback | None = None,
    implicit_tls: bool | None = None,
    tokens: TokenCache | None = None,
) -> SendReport:
    """:func:`send_message` with the implicit-TLS decision overridable (tests)."""
    if target.enable_auth and target.oauth2 is not None and tokens is None:
        raise ValueError("a target with oauth2 needs the worker's TokenCache (tokens=...)")
    use_implicit = uses_implicit_tls(target) if implicit_tls is None else implicit_tls
    return await _Session(target, policy, on_step, use_implicit, tokens).run(message)


async def send_message(
    target: SmtpTarget,
    message: EmailMessage,
    policy: MailPolicy,
    *,
    on_step: StepCallback | None = None,
    tokens: TokenCache | None = None,
) -> SendReport:
    """Send ``message`` through ``target`` and explain what happened.

    Envelope sender is ``Sender``/``From``; recipients are ``To``, ``Cc`` and
    ``Bcc`` (``Bcc`` is stripped from the transmitted headers).

    Args:
        target: Server and credentials.
        message: The message to send.
        policy: Operator deadlines, trust and refusals.
        on_step: Awaited with ``STEP_CONNECT``, ``STEP_AUTHENTICATE`` (only when
            ``target.enable_auth``) and ``STEP_SEND`` as each step begins, so a
            job can report progress. Its own exceptions propagate unchanged.
            With ``target.oauth2`` (and ``enable_auth``), ``STEP_TOKEN`` comes first.
        tokens: The worker's token cache; required when ``target.oauth2`` is set.

    Returns:
        Diagnostics and the redacted transcript.

    Raises:
        MailError: any failure; the subclass names the cause, ``.step``,
            ``.details`` and ``.transcript`` hold what was learnt so far.
    """
    return await _send(target, message, policy, on_step=on_step, tokens=tokens)
