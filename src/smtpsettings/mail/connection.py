"""One SMTP session that sends many messages: what the outbox delivers through.

It runs the same session as the one-shot test mail (:func:`smtpsettings.mail.send_message`): the same
token, SSRF guard, TLS, AUTH, deadlines and redaction, so what the test mail proves is what the outbox
does. The differences are the ones reuse needs:

* a refused RCPT refuses that recipient only: the message still goes to the others, and
  :meth:`SmtpConnection.send` says who got it (the test mail has one recipient, and fails with it);
* a refused MAIL or DATA, or a message no recipient was accepted for, is answered with RSET and the
  session stays usable; anything that leaves the dialogue in doubt (a timeout, a dropped connection, a
  421) closes it;
* each message gets its own transcript and details, so one message's error never shows another's
  recipients;
* :meth:`SmtpConnection.open` and each :meth:`SmtpConnection.send` are bounded by
  ``policy.total_timeout`` on their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosmtplib
from aiosmtplib import SMTPResponse

from smtpsettings.mail.client import _SERVICE_CLOSING, STEP_CONNECT, _reply, _Session
from smtpsettings.mail.errors import MailError, SendError
from smtpsettings.mail.oauth2 import TokenCache
from smtpsettings.mail.policy import MailPolicy
from smtpsettings.mail.report import Delivery, Detail, Refusal
from smtpsettings.mail.target import SmtpTarget, uses_implicit_tls
from smtpsettings.mail.transcript import Transcript

__all__ = ["STEP_DELIVER", "SmtpConnection"]

STEP_DELIVER = "Send message"
"""The step of a failure in :meth:`SmtpConnection.send` (the test mail's is "Send test message")."""


class SmtpConnection:
    """One open, authenticated SMTP session that sends many messages.

    Not safe for concurrent use: one message at a time (the pool hands a connection to one task).
    ``details`` and ``transcript`` hold the redacted diagnostics of the last ``open()`` or ``send()``;
    a raised :class:`MailError` carries the same.
    """

    def __init__(
        self,
        target: SmtpTarget,
        policy: MailPolicy,
        *,
        tokens: TokenCache | None = None,
        implicit_tls: bool | None = None,
    ) -> None:
        """``implicit_tls`` overrides the port-465 rule (tests cannot bind 465)."""
        if target.enable_auth and target.oauth2 is not None and tokens is None:
            raise ValueError("a target with oauth2 needs the worker's TokenCache (tokens=...)")
        use_implicit = uses_implicit_tls(target) if implicit_tls is None else implicit_tls
        self._session = _Session(target, policy, None, use_implicit, tokens)
        self._opened = False
        self._broken = False
        self.messages_sent = 0
        """Messages the server accepted on this connection (the pool's per-connection limit)."""

    @property
    def details(self) -> list[Detail]:
        return list(self._session.details)

    @property
    def transcript(self) -> list[str]:
        return list(self._session.transcript.lines)

    @property
    def usable(self) -> bool:
        """Open and not known to be broken: another message may be sent."""
        smtp = self._session.smtp
        return self._opened and not self._broken and smtp is not None and smtp.is_connected

    async def open(self) -> None:
        """Get a token (XOAUTH2), resolve and check the address, connect, EHLO, STARTTLS or TLS, AUTH.

        Raises:
            MailError: the subclass names the cause; the connection is closed.
            RuntimeError: already opened.
        """
        if self._opened or self._broken:
            raise RuntimeError("an SmtpConnection is opened once")
        session = self._session
        session.step = STEP_CONNECT
        try:
            await session.guarded(session.open)
        except BaseException:
            self._broken = True
            session.close()
            raise
        self._opened = True

    async def send(
        self, sender: str, recipients: Sequence[str], content: bytes, *, smtputf8: bool = False
    ) -> Delivery:
        """Send one message: MAIL FROM ``sender``, RCPT TO each of ``recipients``, DATA ``content``.

        ``content`` goes as given (see :func:`smtpsettings.mail.message.flatten`), dot-stuffed by the
        client. Each reply is awaited for ``policy.command_timeout``, the whole message for
        ``policy.total_timeout``. A recipient refused at RCPT (4xx or 5xx) is left out and the message
        goes to the others; DATA is sent only if at least one was accepted.

        Returns:
            Who got it, the others with their refusals, and the server's reply to DATA (e.g.
            ``"250 2.0.0 Ok: queued as 4Xyz"``; ``None`` when every recipient was refused).

        Raises:
            SendError: the server refused the sender or the message (which then reached nobody), or
                answered 421 to a recipient; ``.code`` is its reply code. The session was reset and
                stays usable, unless the code was 421.
            MailTimeout: a deadline expired; the connection is closed.
            ConnectError: the server dropped the connection; it is closed.
            MailError: anything else; the connection is closed.
            RuntimeError: the connection is not usable (check :attr:`usable` first).
        """
        if not self.usable:
            raise RuntimeError("the SMTP connection is not open")
        session = self._session
        # This message's own diagnostics; the redactor (and so the secrets it knows) is the session's.
        session.transcript = Transcript(session.redactor)
        session.details = []
        session.step = STEP_DELIVER
        session.in_transaction = False
        refusals: list[Refusal] = []
        try:
            reply = await session.guarded(self._transact, sender, recipients, content, smtputf8, refusals)
        except SendError:
            raise  # _transact decided whether the session survives
        except BaseException:
            self._discard()
            raise
        refused = {r.address for r in refusals}
        accepted = tuple(r for r in recipients if r not in refused)
        if reply is None:
            return Delivery(reply=None, accepted=(), refusals=tuple(refusals))
        self.messages_sent += 1
        return Delivery(reply=_reply(reply), accepted=accepted, refusals=tuple(refusals))

    async def _transact(
        self, sender: str, recipients: Sequence[str], content: bytes, smtputf8: bool, refusals: list[Refusal]
    ) -> SMTPResponse | None:
        try:
            reply = await self._session.transmit(sender, recipients, content, smtputf8=smtputf8, refusals=refusals)
        except SendError as exc:
            # Inside the deadline: RSET counts towards the message's total_timeout.
            if exc.code == _SERVICE_CLOSING or not await self._reset():
                self._discard()
            raise
        if reply is None and not await self._reset():  # every recipient refused: MAIL is still open
            self._discard()
        return reply

    async def _reset(self) -> bool:
        """RSET after a refusal, so the next message starts clean; whether the session is still usable."""
        session = self._session
        smtp = session.smtp
        if smtp is None or not smtp.is_connected:
            return False
        if not session.in_transaction:
            return True
        try:
            reply = await smtp.rset(timeout=session.policy.command_timeout)
        except (aiosmtplib.SMTPException, OSError):
            return False
        session.in_transaction = False
        session.details.append(Detail(STEP_DELIVER, f"RSET: {_reply(reply)}", None))
        return True

    def _discard(self) -> None:
        self._broken = True
        self._session.close()

    async def quit(self) -> None:
        """Say QUIT (briefly) and close; never raises."""
        if self.usable:
            try:
                await self._session.quit()
            except (MailError, aiosmtplib.SMTPException, OSError, TimeoutError):
                pass
        self.close()

    def close(self) -> None:
        """Close the socket at once; the connection is not usable afterwards."""
        self._broken = True
        self._session.close()
