"""The composition root: the services one worker process holds, built once from the settings, started and
stopped in order.

It sits at the top, beside the application that uses it, because it wires every layer together, the SMTP
submission port (a front door, like the HTTP API) included: nothing below imports it at run time.
"""

from __future__ import annotations

import ipaddress

from smtpsettings.config import Settings
from smtpsettings.crypto import KeyRing
from smtpsettings.mail import TokenCache
from smtpsettings.services.auth import AuthService
from smtpsettings.services.dispatcher import Dispatcher
from smtpsettings.services.mailtest import TestMailService
from smtpsettings.services.outbox import OutboxService
from smtpsettings.services.smtp import SmtpSettingsService
from smtpsettings.store.database import Database
from smtpsettings.submission.server import SubmissionServer

__all__ = ("Services",)


class Services:
    """Everything a request, the dispatcher or the CLI may use, built once per worker from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(
            settings.resolved_database_url,
            timeout=settings.database_timeout,
            pool_size=settings.database_pool_size,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        self.keyring = KeyRing(settings.key_file)
        self.auth = AuthService(self.db, settings)
        self.smtp = SmtpSettingsService(self.db, self.keyring, settings.default_smtp)
        self.tokens = TokenCache()  # OAuth 2.0 access tokens to mail servers, shared by this worker's senders
        self.mailtest = TestMailService(self.db, self.smtp, settings, self.tokens)
        self.dispatcher = Dispatcher(self.db, self.smtp, settings, self.tokens, lock_path=settings.data_dir / "outbox.lock")
        self.outbox = OutboxService(self.db, self.smtp, settings, on_enqueued=self.dispatcher.wake)
        self.submission = SubmissionServer(settings, self.auth, self.outbox)
        self.trusted_proxies = tuple(ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies)

    async def start(self) -> None:
        """Start the background work and the submission port (on the running event loop)."""
        self.db.start_background_checkpoints()
        self.dispatcher.start()
        await self.submission.start()

    async def close(self) -> None:
        """Stop in the reverse order: the front door, the senders, then the database they write to."""
        await self.submission.stop()
        await self.dispatcher.stop()
        await self.mailtest.shutdown()
        await self.db.dispose_async()
