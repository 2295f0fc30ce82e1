"""The test-mail job: start one per portal, run it in this process, report it from any process.

The job's state lives in the database, written at every step, so any instance behind a load balancer can
answer ``/smtp/test/status``. A job carries a deadline: if the instance running it dies, the job is
reported failed once the deadline passes instead of "running" for ever.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import uuid
from datetime import UTC, datetime, timedelta

import structlog

from smtpsettings.config import Settings
from smtpsettings.domain.accounts import Portal, User
from smtpsettings.domain.errors import BadArgument, Conflict, TooManyRequests
from smtpsettings.domain.mailtest import COMPLETED, PERCENTS, STEP_CREATE_MESSAGE, STEP_SETUP_TENANT
from smtpsettings.domain.smtp import SmtpSettings, SmtpSettingsInput
from smtpsettings.mail import (
    MailError,
    MailPolicy,
    OAuth2Grant,
    SmtpTarget,
    TokenCache,
    build_test_message,
    default_scope,
    default_token_url,
    send_message,
)
from smtpsettings.services.smtp import MailCredentials, SmtpSettingsService
from smtpsettings.store import jobs, ratelimit
from smtpsettings.store.database import Database, StoreUnavailable, utcnow
from smtpsettings.store.jobs import JobRecord

__all__ = ("TestMailService", "mail_policy", "smtp_target")

log = structlog.get_logger("smtpsettings.mailtest")

# Beyond the mail deadline, time for the job's own bookkeeping before another instance calls it dead.
_DEADLINE_MARGIN = timedelta(seconds=5)
# A running job's step reaches the database at most this often (a page polls once a second); the final
# state is always written at once.
PROGRESS_INTERVAL = 0.1


def mail_policy(settings: Settings) -> MailPolicy:
    return MailPolicy(
        connect_timeout=settings.smtp_connect_timeout,
        command_timeout=settings.smtp_command_timeout,
        total_timeout=settings.smtp_job_timeout,
        ca_file=settings.smtp_ca_file or None,
        allow_plaintext_auth=settings.smtp_allow_plaintext_auth,
        helo_name=settings.smtp_helo_name or None,
        deny_networks=tuple(ipaddress.ip_network(n, strict=False) for n in settings.smtp_deny_networks),
    )


def smtp_target(settings: SmtpSettings, credentials: MailCredentials) -> SmtpTarget:
    """Where and how to send: the settings with their secrets, and the provider's defaults filled in."""
    grant = None
    oauth2 = settings.oauth2
    if oauth2 is not None:
        grant = OAuth2Grant(
            provider=oauth2.provider,
            token_url=oauth2.token_url or default_token_url(oauth2.provider, oauth2.tenant_id),
            scope=oauth2.scope or default_scope(oauth2.provider),
            client_id=oauth2.client_id,
            tenant_id=oauth2.tenant_id,
            # Google's service account acts as the mailbox (domain-wide delegation).
            subject=settings.credentials_user_name if oauth2.provider == "google" else "",
            client_secret=credentials.oauth2.client_secret,
            certificate=credentials.oauth2.certificate,
            service_account_key=credentials.oauth2.service_account_key,
        )
    return SmtpTarget(
        host=settings.host,
        port=settings.port,
        enable_ssl=settings.enable_ssl,
        enable_auth=settings.enable_auth,
        username=settings.credentials_user_name,
        password=credentials.password,
        use_ntlm=settings.use_ntlm,
        oauth2=grant,
    )


class TestMailService:
    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(
        self, db: Database, smtp: SmtpSettingsService, settings: Settings, tokens: TokenCache | None = None
    ) -> None:
        self._db = db
        self._smtp = smtp
        self._settings = settings
        # One per worker: several tests in a row ask the token endpoint once.
        self._tokens = tokens or TokenCache()
        self._policy = mail_policy(settings)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(
        self,
        portal: Portal,
        user: User,
        candidate: SmtpSettingsInput | None = None,
        *,
        join_running: bool = True,
        recipient: str | None = None,
    ) -> JobRecord:
        """Start a test of the stored settings (or of ``candidate``, unsaved) unless one is running.

        The mail goes to ``recipient`` (an address already checked) or else to the user's own address.

        While the portal's job runs, ``join_running`` returns that job (DocSpace's GET does so); without
        it the call is refused, for a caller who asked for particular settings to be tested and would
        otherwise take another test's outcome for theirs. Which job runs is decided by the claim in the
        database, so this holds across instances.

        Raises:
            TooManyRequests: the user's test limit is used up.
            BadArgument: there are no settings to test, or the candidate's password rule fails.
            Conflict: a job is running and ``join_running`` is false.
        """
        settings, credentials = await self._target_settings(portal, candidate)
        if not settings.host or not settings.sender_address:
            raise BadArgument("There are no SMTP settings to test: save the settings first.")
        job_id = uuid.uuid4().hex
        deadline = utcnow() + timedelta(seconds=self._settings.smtp_job_timeout) + _DEADLINE_MARGIN
        limit, window = self._settings.smtp_test_limit, self._settings.smtp_test_window_seconds
        to = recipient or user.email

        def count_and_claim(conn):  # type: ignore[no-untyped-def]
            calls, wait = ratelimit.hit(conn, f"smtptest:user:{user.id}", window)
            if calls > limit:
                return None, wait
            job, is_new = jobs.claim_job(
                conn,
                portal.id,
                job_id=job_id,
                user_id=user.id,
                recipient=to,
                status=STEP_SETUP_TENANT,
                percents=PERCENTS[STEP_SETUP_TENANT],
                deadline_at=deadline,
            )
            if not is_new and not join_running:
                # Raised inside the transaction, so the refused call does not count against the limit.
                raise Conflict(
                    "A test mail is already being sent for this portal; try again when it has finished"
                    f" (at the latest {_utc_seconds(job.deadline_at)})."
                )
            return (job, is_new), 0

        claimed, wait = await self._db.write(count_and_claim)
        if claimed is None:
            raise TooManyRequests(f"Too many test messages: at most {limit} in {_duration(window)}. Try again later.", int(wait) + 1)
        job, is_new = claimed
        if is_new:
            task = asyncio.get_running_loop().create_task(self._run(portal, to, job.id, settings, credentials))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return job

    async def status(self, portal: Portal) -> JobRecord | None:
        job = await jobs.find_job(self._db, portal.id)
        if job is not None and not job.completed and job.deadline_at <= utcnow():
            seconds = int((job.deadline_at - job.started_at).total_seconds())
            error = f"The test did not finish within {seconds} s: the server running it stopped or lost the database."
            kept = job
            await self._db.write(
                lambda c: jobs.finish_job(
                    c, portal.id, kept.id, error=error, recipient=kept.recipient, details=kept.details, transcript=kept.transcript
                )
            )
            job = await jobs.find_job(self._db, portal.id)
        return job

    async def shutdown(self) -> None:
        """Cancel running jobs; each records that it was interrupted."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _target_settings(
        self, portal: Portal, candidate: SmtpSettingsInput | None
    ) -> tuple[SmtpSettings, MailCredentials]:
        if candidate is None:
            return await self._smtp.get_for_sending(portal)
        return await self._smtp.candidate_for_sending(portal, candidate)

    async def _run(
        self, portal: Portal, recipient: str, job_id: str, settings: SmtpSettings, credentials: MailCredentials
    ) -> None:
        steps = StepWriter(self._db, portal.id, job_id)

        async def finish(error: str, details: list[dict[str, object]], transcript: list[str], done: bool = False) -> None:
            steps.close()
            step = COMPLETED if done else steps.current
            await self._db.write(
                lambda c: jobs.finish_job(
                    c,
                    portal.id,
                    job_id,
                    error=error,
                    recipient=recipient,
                    details=details,
                    transcript=transcript,
                    percents=PERCENTS[step],
                    status=step,
                )
            )

        target = smtp_target(settings, credentials)
        try:
            # The setup steps take no time here: tenant and user are already loaded.
            await steps.reached(STEP_CREATE_MESSAGE)
            try:
                message = build_test_message(
                    sender_address=settings.sender_address, sender_display_name=settings.sender_display_name, recipient=recipient
                )
            except ValueError as exc:
                await finish(f"Cannot build the test message: {exc}", [], [])
                return
            # The mail library enforces the same deadline; this one also covers our own bookkeeping.
            async with asyncio.timeout(self._settings.smtp_job_timeout + 1):
                report = await send_message(target, message, self._policy, on_step=steps.reached, tokens=self._tokens)
            await finish("", report.to_list(), list(report.transcript), done=True)
            log.info("test_mail_sent", portal=portal.hostname, job_id=job_id)
        except MailError as exc:
            log.info("test_mail_failed", portal=portal.hostname, job_id=job_id, step=exc.step, error=str(exc))
            await finish(str(exc), [d.to_dict() for d in exc.details], list(exc.transcript))
        except TimeoutError:
            await finish(f"No result within {self._settings.smtp_job_timeout:g} s; the test was stopped.", [], [])
        except asyncio.CancelledError:
            await finish("The test was interrupted because the server is shutting down.", [], [])
            raise
        except Exception:
            log.exception("test_mail_crashed", portal=portal.hostname, job_id=job_id)
            await finish("The test failed because of an internal error; the server log has the details.", [], [])


def _utc_seconds(moment: datetime) -> str:
    """ISO 8601 in UTC to the second, rounded up: a retry at the time shown is never too early."""
    return datetime.fromtimestamp(math.ceil(moment.timestamp()), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StepWriter:
    """A running job's current step, written through to the database at most every PROGRESS_INTERVAL.

    A test against a nearby server passes its steps within milliseconds: writing each would cost more
    than the mail. A step reached too soon after the last write is written by a timer at the end of the
    interval (the newest step then), so a job stuck at a step shows it within the interval everywhere.
    The final state is written by the job's finish, which closes this first.
    """

    def __init__(self, db: Database, portal_id: int, job_id: str) -> None:
        self._db = db
        self._portal_id = portal_id
        self._job_id = job_id
        self._loop = asyncio.get_running_loop()
        self._written_at = self._loop.time()  # the claim wrote the first step
        self._timer: asyncio.TimerHandle | None = None
        self._later: asyncio.Task[None] | None = None
        self.current = STEP_SETUP_TENANT

    async def reached(self, step: str) -> None:
        self.current = step
        if self._timer is not None:
            return  # the scheduled write will carry this step
        wait = self._written_at + PROGRESS_INTERVAL - self._loop.time()
        if wait <= 0:
            await self._write()
        else:
            self._timer = self._loop.call_later(wait, self._write_later)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write_later(self) -> None:
        self._timer = None
        self._later = self._loop.create_task(self._write_logged())

    async def _write_logged(self) -> None:
        try:
            await self._write()
        except StoreUnavailable as exc:  # the finish writes the final state anyway
            log.warning("test_progress_not_saved", job_id=self._job_id, error=str(exc))

    async def _write(self) -> None:
        self._written_at = self._loop.time()
        step, portal_id, job_id = self.current, self._portal_id, self._job_id
        await self._db.write(lambda c: jobs.update_progress(c, portal_id, job_id, percents=PERCENTS[step], status=step))


def _duration(seconds: int) -> str:
    """``900`` → "15 minutes", ``30`` → "30 seconds": the window as an admin reads it."""
    if seconds % 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = seconds // 60
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
