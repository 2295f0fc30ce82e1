"""The composition root: the services one worker process holds, built once from the settings, started and
stopped in order; and the delivery process's smaller set.

Where the dispatcher runs: an app built in-process (``create_app()``: the tests, an operator's own ASGI
server) dispatches in its own process, as one program. Under ``smtpsettings serve`` the workers only accept,
and one process of its own delivers (``smtpsettings deliver``, :class:`Delivery`, started by serve's
supervisor): serve marks its workers with :data:`SEPARATE_DELIVERY_ENV`, and they wake that process through
a socket in the data directory (:mod:`smtpsettings.services.wakeups`) instead of an in-process event.

It sits at the top, beside the application that uses it, because it wires every layer together, the SMTP
submission port (a front door, like the HTTP API) included: nothing below imports it at run time. What only
the accepting side uses (the submission port, sign-in, acceptance into the outbox) is imported where
:class:`Services` is built: the delivery process builds only :class:`Delivery` and, a fresh interpreter that
pays for every module again, loads neither aiosmtpd nor granian (tests/test_deliverer_imports.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path

import structlog

from smtpsettings.config import Settings
from smtpsettings.crypto import KeyRing
from smtpsettings.mail import TokenCache
from smtpsettings.services.dispatcher import Dispatcher
from smtpsettings.services.mailtest import TestMailService
from smtpsettings.services.smtp import SmtpSettingsService
from smtpsettings.services.wakeups import WakeListener, Waker
from smtpsettings.store.database import Database

__all__ = ("SEPARATE_DELIVERY_ENV", "Delivery", "Services", "wake_path")

log = structlog.get_logger("smtpsettings.outbox")

SEPARATE_DELIVERY_ENV = "_SMTPSETTINGS_SEPARATE_DELIVERY"
"""Set by ``serve`` for its children (not a setting), to its pid: a delivery process of its own sends the outbox."""


def wake_path(settings: Settings) -> Path:
    """The delivery process's wake-up socket."""
    return settings.data_dir / "outbox.wake"


def _database(settings: Settings, *, sqlite_synchronous: str | None = None) -> Database:
    return Database(
        settings.resolved_database_url,
        timeout=settings.database_timeout,
        pool_size=settings.database_pool_size,
        sqlite_synchronous=sqlite_synchronous or settings.sqlite_synchronous,
    )


def _dispatcher(db: Database, smtp: SmtpSettingsService, settings: Settings, tokens: TokenCache) -> Dispatcher:
    return Dispatcher(db, smtp, settings, tokens, lock_path=settings.data_dir / "outbox.lock")


class Services:
    """Everything a request, the dispatcher or the CLI may use, built once per worker from the settings."""

    def __init__(self, settings: Settings) -> None:
        from smtpsettings.services.auth import AuthService
        from smtpsettings.services.outbox import OutboxService
        from smtpsettings.submission.server import SubmissionServer

        self.settings = settings
        self.db = _database(settings)
        self.keyring = KeyRing(settings.key_file)
        self.auth = AuthService(self.db, settings)
        self.smtp = SmtpSettingsService(self.db, self.keyring, settings.default_smtp)
        self.tokens = TokenCache()  # OAuth 2.0 access tokens to mail servers, shared by this worker's senders
        self.mailtest = TestMailService(self.db, self.smtp, settings, self.tokens)
        self.dispatcher: Dispatcher | None = None
        self.waker: Waker | None = None
        if os.environ.get(SEPARATE_DELIVERY_ENV):
            self.waker = Waker(wake_path(settings))
            on_enqueued = self.waker.wake
        else:
            self.dispatcher = _dispatcher(self.db, self.smtp, settings, self.tokens)
            on_enqueued = self.dispatcher.wake
        self.outbox = OutboxService(self.db, self.smtp, settings, on_enqueued=on_enqueued)
        self.submission = SubmissionServer(settings, self.auth, self.outbox)
        self.trusted_proxies = tuple(ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies)

    async def start(self) -> None:
        """Start the background work and the submission port (on the running event loop)."""
        self.db.start_background_checkpoints()
        if self.dispatcher is not None:
            self.dispatcher.start()
        await self.submission.start()

    async def close(self) -> None:
        """Stop the front door, the senders and the test mails together, then the database they write to.

        Each has its own bounded stop; run one after another, their bounds would add up.
        """
        stops = [self.submission.stop(), self.mailtest.shutdown()]
        if self.dispatcher is not None:
            stops.append(self.dispatcher.stop())
        await asyncio.gather(*stops)
        if self.waker is not None:
            self.waker.close()
        await self.db.dispose_async()


class Delivery:
    """What ``smtpsettings deliver`` holds: the dispatcher and what it needs, nothing that accepts mail."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The delivery process's commits (claims, outcomes, heartbeats) do not wait for a sync of SQLite's
        # log: the next acceptance a worker commits with synchronous=full syncs the log up to its own end,
        # theirs included, since the log is written in order. A power cut can thus only undo the last
        # outcomes, and a message whose `sent` it undid is sent again, which at-least-once delivery already
        # allows (Postfix does not sync the removal of a delivered queue file either). What a worker
        # acknowledged is never touched by this.
        self.db = _database(settings, sqlite_synchronous="normal")
        self.smtp = SmtpSettingsService(self.db, KeyRing(settings.key_file), settings.default_smtp)
        self.dispatcher = _dispatcher(self.db, self.smtp, settings, TokenCache())
        self.wakeups = WakeListener(wake_path(settings), self.dispatcher.wake)

    async def start(self) -> None:
        """Listen for wake-ups first, so none sent while the dispatcher waits for its lock is missed."""
        self.db.start_background_checkpoints()
        try:
            self.wakeups.open()
        except OSError as exc:  # accepted mail then waits for the next poll, a second at most
            log.warning("outbox_wakeups_unavailable", error=str(exc))
        self.dispatcher.start()

    async def close(self, grace: float = 5.0) -> None:
        self.wakeups.close()
        await self.dispatcher.stop(grace)
        await self.db.dispose_async()
