"""What the submission port does with each command: AUTH by API key, the sender rule, and DATA into the outbox.

aiosmtpd runs the protocol; these hooks make the decisions through the same services the HTTP API uses,
and every refusal is one sentence from :func:`smtpsettings.submission.replies.reply_for`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import ssl
from typing import Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session, TLSSetupException

from smtpsettings.domain.accounts import Portal, Principal
from smtpsettings.domain.errors import BadArgument
from smtpsettings.domain.outbox import MAX_RECIPIENTS, check_address
from smtpsettings.domain.smtp import SmtpSettings
from smtpsettings.domain.submission import Trace
from smtpsettings.services.auth import AuthService
from smtpsettings.services.outbox import OutboxService
from smtpsettings.submission.replies import reply_for

__all__ = ("SubmissionHandler", "SubmissionSession", "handshake_failure")

log = structlog.get_logger("smtpsettings.submission")

_BAD_SYNTAX = "501 5.5.2 The credentials are not valid base64 of the expected form."
_OTHER_IDENTITY = "535 5.7.8 Signing in on behalf of another identity is not supported: leave the authorization identity empty."
_NEEDS_SMTPUTF8 = "553 5.6.7 The address is not ASCII: the MAIL command must carry the SMTPUTF8 parameter."


class SubmissionSession:
    """Who signed in on a connection (aiosmtpd keeps it as the session's ``auth_data``)."""

    __slots__ = ("client_address", "portal", "principal", "settings")

    def __init__(self, portal: Portal, principal: Principal, client_address: str) -> None:
        self.portal, self.principal = portal, principal
        self.client_address = client_address
        """The peer's IP address as the trace field writes it, read once for the connection."""
        self.settings: SmtpSettings | None = None
        """The portal's settings as the current transaction's MAIL read them; its DATA uses the same."""

    def __repr__(self) -> str:  # aiosmtpd may log it; it holds nothing secret, but say little
        return f"SubmissionSession(portal={self.portal.hostname!r})"


class SubmissionHandler:
    def __init__(self, auth: AuthService, outbox: OutboxService, *, max_recipients: int = MAX_RECIPIENTS) -> None:
        self._auth = auth
        self._outbox = outbox
        self._max_recipients = max_recipients

    # -- AUTH: user name = the portal's host, password = an API key of that portal ------------------

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802 - aiosmtpd's name
        blob = await _initial_or_challenge(server, args, "")
        if blob is MISSING:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            return AuthResult(success=False, handled=False, message=_BAD_SYNTAX)
        authzid, user, password = parts
        if authzid and authzid != user:  # RFC 4616: acting as someone else; a key signs in as its portal only
            return AuthResult(success=False, handled=False, message=_OTHER_IDENTITY)
        return await self._sign_in(server, user, password)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        user = await _initial_or_challenge(server, args, "Username:")
        if user is MISSING:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._sign_in(server, user, password)

    async def _sign_in(self, server: SMTP, user: bytes, password: bytes) -> AuthResult:
        assert server.session is not None
        peer = _peer_address(server.session)
        try:
            hostname, key = user.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False, message=_BAD_SYNTAX)
        try:
            portal, principal = await self._auth.authenticate_api_key(hostname, key, peer)
        except Exception as exc:  # every refusal is an SMTP reply; never a dropped connection
            # Not the user name given: a client that swapped the fields would have put its key there.
            log.info("submission_auth_refused", client=peer, reason=type(exc).__name__)
            return AuthResult(success=False, handled=False, message=reply_for(exc))
        log.info("submission_signed_in", client=peer, portal=portal.hostname, api_key_id=principal.api_key_id)
        return AuthResult(success=True, auth_data=SubmissionSession(portal, principal, peer))

    # -- the envelope ---------------------------------------------------------------------------------

    async def handle_MAIL(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        signed_in: SubmissionSession = session.auth_data
        if not address.isascii() and "SMTPUTF8" not in mail_options:  # RFC 6531 section 3.4
            return _NEEDS_SMTPUTF8
        signed_in.settings = None
        try:  # the settings as they are now (a connection may outlive a save); a full queue before the message
            settings = await self._outbox.check_sender(signed_in.portal, signed_in.principal, address)
            await self._outbox.check_room(signed_in.portal, _declared_size(mail_options))
        except Exception as exc:
            reply = reply_for(exc)
            # One line per refusal: how often a client MTA comes back is what tells a loop from a retry.
            log.info("submission_mail_refused", portal=signed_in.portal.hostname, reply=reply[:9])
            return reply
        # One reading per transaction: DATA follows a MAIL accepted with these (aiosmtpd refuses it otherwise).
        signed_in.settings = settings
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return f"452 4.5.3 Too many recipients: at most {self._max_recipients} per message."
        if not address.isascii() and not envelope.smtp_utf8:
            return _NEEDS_SMTPUTF8
        problem, normalized = check_address(address)
        if problem is not None:
            return "553 5.1.3 " + " ".join(f"The recipient address is not valid: {problem}.".split())
        if normalized.lower() not in (r.lower() for r in envelope.rcpt_tos):  # each recipient gets it once
            envelope.rcpt_tos.append(normalized)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        signed_in: SubmissionSession = session.auth_data
        content = envelope.original_content or b""
        assert signed_in.settings is not None  # set by the transaction's accepted MAIL
        try:
            record = await self._outbox.submit_raw(
                signed_in.portal,
                signed_in.principal,
                settings=signed_in.settings,
                recipients=list(envelope.rcpt_tos),
                content=content,
                smtputf8=bool(envelope.smtp_utf8),
                trace=_trace(server, session, signed_in.client_address, bool(envelope.smtp_utf8)),
            )
        except Exception as exc:
            if not isinstance(exc, BadArgument):
                log.warning("submission_not_accepted", portal=signed_in.portal.hostname, error=type(exc).__name__)
            return reply_for(exc)
        # Committed: the 250 is the application's proof that the message will be sent.
        log.info("submission_accepted", portal=signed_in.portal.hostname, message_id=record.id)
        return f"250 2.0.0 Queued as {record.id}"

    async def handle_exception(self, error: Exception) -> str:
        """What aiosmtpd itself failed at (a STARTTLS handshake, a broken connection): one log line.

        Without this hook aiosmtpd logs a traceback and tells the client the exception's text.
        """
        # aiosmtpd does not say which connection it was; the reason is what an operator can act on.
        if isinstance(error, TLSSetupException):
            log.info("submission_tls_handshake_failed", reason=handshake_failure(error.__cause__ or error))
        elif isinstance(error, ConnectionError):
            log.info("submission_connection_lost", reason=type(error).__name__)
        else:
            log.warning("submission_session_error", error=type(error).__name__)
        return reply_for(error)


def handshake_failure(exc: BaseException) -> str:
    """A short reason for the log: the TLS library's own, or what happened to the connection."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return type(exc).__name__


def _trace(server: SMTP, session: Session, client_address: str, smtputf8: bool) -> Trace:
    """What the Received field says of this connection (RFC 3848's and RFC 6531's protocol names)."""
    secure = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
    return Trace(
        by=server.hostname,
        client_name=session.host_name or "",
        client_address=client_address,
        protocol=("UTF8SMTP" if smtputf8 else "ESMTP") + ("S" if secure else "") + "A",
    )


async def _initial_or_challenge(server: SMTP, args: list[str], prompt: str) -> Any:
    """The mechanism's first response: given with AUTH (``AUTH PLAIN <b64>``), or asked for with 334."""
    if len(args) == 1:
        return await server.challenge_auth(prompt)
    if args[1] == "=":  # RFC 4954: an empty initial response
        return b""
    try:
        return base64.b64decode(args[1], validate=True)
    except binascii.Error:
        await server.push(_BAD_SYNTAX)
        return MISSING


def _declared_size(mail_options: list[str]) -> int:
    """The ``SIZE=`` the client declared at MAIL (RFC 1870), else 1: a message has at least a byte."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isascii() and value.isdigit():
            return max(1, int(value))
    return 1


def _peer_address(session: Session) -> str:
    peer = session.peer
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return str(host)
