"""Accepting a portal's mail for delivery, and what its sender and admins may do with it afterwards.

Acceptance means committed: the message is built (From the portal's sender, a Message-ID fixed now) and
written to the outbox before the caller hears 202 (on SQLite in a transaction shared with the acceptances
that arrived at the same moment, each in a savepoint of its own: :mod:`smtpsettings.store.groupcommit`);
the dispatcher sends it later. The
same transaction holds the portal's unsent mail to its queue limits (:mod:`smtpsettings.services.admission`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import anyio.to_thread
from sqlalchemy.engine import Connection

from smtpsettings.config import Settings
from smtpsettings.domain.accounts import Portal, Principal
from smtpsettings.domain.errors import (
    AccessDenied,
    BadArgument,
    Conflict,
    NotConfigured,
    NotFound,
    TooLarge,
    ValidationFailed,
)
from smtpsettings.domain.outbox import OutgoingMessage, parse_message
from smtpsettings.domain.queue import QueueLimits
from smtpsettings.domain.smtp import SmtpSettings
from smtpsettings.domain.submission import (
    Received,
    Trace,
    allowed_sender,
    check_envelope_sender,
    read_submitted,
)
from smtpsettings.mail.message import HeaderInjection, build_flat, new_message_id
from smtpsettings.services.admission import Admission
from smtpsettings.services.smtp import SmtpSettingsService
from smtpsettings.store import outbox
from smtpsettings.store import smtp as smtp_store
from smtpsettings.store.database import Database
from smtpsettings.store.outbox import MessageRecord, NewMessage

__all__ = ("LIST_STATUSES", "OutboxService", "check_idempotency_key")

LIST_STATUSES = outbox.STATUSES
MAX_IDEMPOTENCY_KEY = 255
# Building and flattening a message holds the event loop for about a millisecond per 100 kB of body:
# larger ones are built on a thread so that other requests are not kept waiting.
_BUILD_ON_THREAD_ABOVE = 256 * 1024


def check_idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header's value, or None when absent.

    Raises:
        BadArgument: empty, longer than 255 characters, or not printable ASCII.
    """
    if value is None:
        return None
    if not value or len(value) > MAX_IDEMPOTENCY_KEY or not all(" " < c <= "~" for c in value):
        raise BadArgument(
            f"The Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters without spaces."
        )
    return value


class OutboxService:
    def __init__(
        self, db: Database, smtp: SmtpSettingsService, settings: Settings, on_enqueued: Callable[[], None] | None = None
    ) -> None:
        self._db = db
        self._smtp = smtp
        self._max_bytes = settings.outbox_max_message_bytes
        limits = QueueLimits(messages=settings.outbox_max_queued_messages, bytes=settings.outbox_max_queued_bytes)
        self._admission = Admission(db, limits)
        self._on_enqueued = on_enqueued or (lambda: None)

    async def submit(
        self,
        portal: Portal,
        principal: Principal,
        settings: SmtpSettings,
        body: object,
        idempotency_key: str | None = None,
    ) -> tuple[MessageRecord, bool]:
        """Accept a message: checked, built and committed, or refused with nothing written.

        ``settings`` are the portal's effective settings, read by the caller (the HTTP route reads them in
        the statement that authenticates the request). Returns the message and whether it is new (False:
        the idempotency key's first message).

        Raises:
            ValidationFailed / BadArgument: a field breaks a rule.
            NotConfigured: the portal has no settings to send with (a BadArgument: 400 like the others).
            TooLarge: the built message is larger than the configured limit.
            QueueFull: the portal's unsent mail is at a queue limit (a repeated key still answers its message).
        """
        message = parse_message(body)
        _require_configured(settings)
        size = sum(len(part or "") for part in (message.text, message.html, message.subject))
        if size > self._max_bytes:
            raise TooLarge(self._too_large())
        sender = settings.sender_address
        message_id = new_message_id(sender.rpartition("@")[2])

        def build() -> tuple[bytes, bool]:
            return _flattened(message, sender, settings.sender_display_name, message_id)

        content, smtputf8 = build() if size <= _BUILD_ON_THREAD_ABOVE else await anyio.to_thread.run_sync(build)
        if len(content) > self._max_bytes:
            raise TooLarge(self._too_large())
        new = NewMessage(
            id=uuid.uuid4().hex,
            portal_id=portal.id,
            user_id=principal.user.id,
            api_key_id=principal.api_key_id,
            sender=sender,
            recipients=message.recipients,
            content=content,
            smtputf8=smtputf8,
            to=message.to,
            cc=message.cc,
            subject=message.subject,
            message_id=message_id,
            idempotency_key=idempotency_key,
        )
        record, is_new = await self._enqueue(new)
        if is_new:
            self._on_enqueued()
        return record, is_new

    async def check_room(self, portal: Portal, size: int = 1) -> None:
        """Refuse early, before a message arrives, when one of ``size`` bytes could not be accepted now.

        Raises:
            QueueFull: the portal's unsent mail is at a queue limit.
        """
        await self._admission.check_room(portal.id, size)

    async def check_sender(self, portal: Portal, principal: Principal, address: str) -> SmtpSettings:
        """Whether a message submitted over SMTP may have ``address`` as its envelope sender, read now.

        Allowed are the portal's sender and the key's user (see
        :func:`smtpsettings.domain.submission.check_envelope_sender` for when a refusal is temporary).
        Returns the portal's settings it was checked against: the transaction's :meth:`submit_raw` takes
        them, so that one SMTP transaction reads the settings once, at MAIL.

        Raises:
            NotConfigured: the portal has no SMTP settings to send with (temporary on SMTP).
            SenderInFlux: not allowed, but the portal's settings changed a moment ago (temporary).
            BadArgument: not allowed (the null sender never is).
        """
        settings = await self._sending_settings(portal)
        allowed = _senders(settings, principal)
        if allowed_sender(address, allowed):
            return settings
        # Only a refusal reads when the settings changed: the common case costs no more than before.
        changed_at = await self._db.read(lambda c: smtp_store.last_change(c, portal.id))
        check_envelope_sender(address, allowed, settings_changed_at=changed_at, now=datetime.now(UTC))
        return settings

    async def submit_raw(
        self,
        portal: Portal,
        principal: Principal,
        *,
        settings: SmtpSettings,
        recipients: list[str],
        content: bytes,
        smtputf8: bool,
        trace: Trace | None = None,
    ) -> MessageRecord:
        """Accept a message submitted over SMTP, as written, for the envelope's ``recipients``.

        It goes out from the portal's sender address (the envelope) in ``settings``, those
        :meth:`check_sender` read at the transaction's MAIL, with its own headers and a ``Received`` field
        from ``trace``; see :mod:`smtpsettings.domain.submission` for what is checked and changed.

        Raises:
            NotConfigured: the portal has no settings to send with.
            BadArgument: the From is not allowed.
            MailLoop: the message has come back to this service, or passed too many servers.
            TooLarge: larger than the configured limit.
            QueueFull: the portal's unsent mail is at a queue limit.
        """
        if len(content) > self._max_bytes:
            raise TooLarge(self._too_large())
        queue_id = uuid.uuid4().hex
        submitted = read_submitted(
            content,
            allowed_senders=_senders(settings, principal),
            new_message_id=new_message_id(settings.sender_address.rpartition("@")[2]),
            received=Received(trace, queue_id, datetime.now(UTC)) if trace else None,
        )
        new = NewMessage(
            id=queue_id,
            portal_id=portal.id,
            user_id=principal.user.id,
            api_key_id=principal.api_key_id,
            sender=settings.sender_address,
            recipients=tuple(recipients),
            content=submitted.content,
            smtputf8=smtputf8 or not all(a.isascii() for a in (settings.sender_address, *recipients)),
            to=submitted.to,
            cc=submitted.cc,
            subject=submitted.subject,
            message_id=submitted.message_id,
            idempotency_key=None,
        )
        record, _ = await self._enqueue(new)
        self._on_enqueued()
        return record

    async def get(self, portal: Portal, principal: Principal, message_id: str) -> MessageRecord:
        """A message of the portal; a send-only key sees only the messages it sent.

        Raises:
            NotFound: no such message (or not this key's).
        """
        record = await self._db.read(lambda c: outbox.find(c, portal.id, message_id))
        if record is None or (principal.send_only and record.api_key_id != principal.api_key_id):
            raise NotFound(f"There is no message {message_id!r}.")
        return record

    async def list(
        self, portal: Portal, principal: Principal, *, status: str | None, count: int, start_index: int
    ) -> tuple[list[MessageRecord], int]:
        key = principal.api_key_id if principal.send_only else None
        return await self._db.read(
            lambda c: outbox.list_messages(c, portal.id, status=status, api_key_id=key, count=count, start_index=start_index)
        )

    async def cancel(self, portal: Portal, principal: Principal, message_id: str) -> MessageRecord:
        """Cancel a queued or deferred message (409 once it is being sent or has ended)."""
        _require_manager(principal)
        if not await self._db.write(lambda c: outbox.cancel(c, portal.id, message_id)):
            record = await self.get(portal, principal, message_id)
            raise Conflict(f"The message is {record.status}: only a queued or deferred message can be cancelled.")
        self._admission.forget(portal.id)  # its room is free at once
        return await self.get(portal, principal, message_id)

    async def retry(self, portal: Portal, principal: Principal, message_id: str) -> MessageRecord:
        """Queue a failed message again, with a fresh retry horizon (409 unless it failed and still has its body)."""
        _require_manager(principal)
        if not await self._db.write(lambda c: outbox.requeue_failed(c, portal.id, message_id)):
            record = await self.get(portal, principal, message_id)
            if record.status == "failed":
                raise Conflict("The message's body was deleted after its retention period; it cannot be sent again.")
            raise Conflict(f"The message is {record.status}: only a failed message can be retried.")
        self._admission.forget(portal.id)  # never refused (the limits hold back new mail), but unsent again
        self._on_enqueued()
        return await self.get(portal, principal, message_id)

    async def _sending_settings(self, portal: Portal) -> SmtpSettings:
        """The portal's effective settings, which must name a server and a sender to accept mail for it."""
        settings = (await self._smtp.get(portal)).settings
        _require_configured(settings)
        return settings

    async def _enqueue(self, new: NewMessage) -> tuple[MessageRecord, bool]:
        # Grouped with the other acceptances (and the dispatcher's bookkeeping) of this moment: one
        # commit, one sync, off the event loop; the caller hears back once it is durable.
        def write(conn: Connection) -> tuple[MessageRecord, bool]:
            record, is_new = outbox.enqueue(conn, new, self._admit(new))
            if is_new:
                # Counted at once, not after the commit: the next message of the same group transaction
                # is checked with this one in. Should the commit fail, the count is high for under a second.
                self._admission.accepted(new.portal_id, len(new.content))
            return record, is_new

        return await self._db.write_grouped(write, len(new.content))

    def _admit(self, new: NewMessage) -> Callable[[Connection], None]:
        return lambda conn: self._admission.check(conn, new.portal_id, len(new.content))

    def _too_large(self) -> str:
        return f"The message is too large: at most {self._max_bytes} bytes are accepted."


def _senders(settings: SmtpSettings, principal: Principal) -> tuple[str, ...]:
    return tuple(a for a in (settings.sender_address, principal.user.email) if a)


def _require_configured(settings: SmtpSettings) -> None:
    if not settings.host or not settings.sender_address:
        raise NotConfigured("The portal has no SMTP settings to send with: save them first.")


def _require_manager(principal: Principal) -> None:
    if principal.send_only:
        raise AccessDenied()


def _flattened(message: OutgoingMessage, sender: str, display_name: str, message_id: str) -> tuple[bytes, bool]:
    try:
        return build_flat(
            sender_address=sender,
            sender_display_name=display_name,
            to=message.to,
            cc=message.cc,
            bcc=message.bcc,
            reply_to=message.reply_to,
            subject=message.subject,
            text=message.text,
            html=message.html,
            message_id=message_id,
        )
    except HeaderInjection as exc:
        raise ValidationFailed({"Subject": [str(exc)]}) from None
    except ValueError as exc:  # parse_message checked the same rules; a difference is reported, not a 500
        raise BadArgument(f"The message cannot be built: {exc}") from None
