"""The dispatcher: claims due messages from the outbox and sends them through their portal's settings.

One runs per instance: of the worker processes sharing a data directory, the one holding the lock file
``outbox.lock`` dispatches; the others try for the lock every few seconds and take over if its holder
dies. Instances sharing a PostgreSQL database claim with ``FOR UPDATE SKIP LOCKED``, so they never take
the same message; a claim is a lease that a heartbeat extends, and a message whose lease ran out (its
instance died mid-send) is simply due again. Delivery is therefore at least once: a message sent just
before its instance died is sent again, with the same Message-ID.

A portal's messages go out over pooled connections, at most ``outbox_connections_per_portal`` at once,
and at most ``outbox_messages_per_minute`` a minute across all instances (a shared counter); messages
over the limit go back untried, due when the minute ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import random
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO

import msgspec
import structlog
from sqlalchemy.engine import Connection

from smtpsettings import metrics
from smtpsettings.config import Settings
from smtpsettings.domain.outbox import Outcome, Settlement, classify, delivery_outcomes
from smtpsettings.mail import Delivery, MailError, SendError, SmtpTarget, TokenCache
from smtpsettings.mail.pool import ConnectionPool
from smtpsettings.services.mailtest import mail_policy, smtp_target
from smtpsettings.services.smtp import SmtpSettingsService
from smtpsettings.store import outbox, ratelimit
from smtpsettings.store.database import Database, StoreUnavailable, utcnow
from smtpsettings.store.outbox import Claim

__all__ = ("Dispatcher",)

log = structlog.get_logger("smtpsettings.outbox")

_POLL_SECONDS = 1.0  # messages accepted by other workers or instances, and retries falling due
_GATHER_SECONDS = 0.005
_LOCK_RETRY_SECONDS = 2.0
_RETENTION_EVERY = 3600.0
_DELETE_BATCH = 500
_RATE_WINDOW = 60
_LEASE_MARGIN = timedelta(seconds=30)
_SETTINGS_FRESH = 1.0


class Dispatcher:
    """Sends the outbox's due messages from this process, while it holds the instance's dispatch lock."""

    def __init__(
        self, db: Database, smtp: SmtpSettingsService, settings: Settings, tokens: TokenCache, *, lock_path: Path
    ) -> None:
        self._db = db
        self._smtp = smtp
        self._settings = settings
        self._lock_path = lock_path
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # The test mail's deadlines: each connection's opening and each message get the job timeout.
        self._pool = ConnectionPool(mail_policy(settings), tokens, per_key=settings.outbox_connections_per_portal)
        # A send can take the open, the message and the bookkeeping; the heartbeat renews well before.
        self._lease = timedelta(seconds=2 * settings.smtp_job_timeout) + _LEASE_MARGIN
        self._capacity = 2 * settings.outbox_batch_size
        self._wake = asyncio.Event()
        self._lanes: dict[int, deque[Claim]] = {}
        self._lane_tasks: dict[int, set[asyncio.Task[None]]] = {}
        self._in_flight = 0
        self._outcomes: list[tuple[Callable[[Connection], bool], Callable[[], None] | None]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._rng = random.Random()
        self.active = False
        """Whether this process holds the lock and dispatches (for tests and the log)."""

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """A message was accepted in this process: look for due work now rather than at the next poll."""
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give sends in flight ``grace`` seconds, then cancel them and release their claims."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lanes = [t for tasks in self._lane_tasks.values() for t in tasks]
        if lanes:
            _, pending = await asyncio.wait(lanes, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        if self._recorder is not None:
            await asyncio.wait([self._recorder], timeout=grace)
        if self.active:
            with contextlib.suppress(StoreUnavailable):
                await self._db.write_off_loop(lambda c: outbox.release_owner(c, self._owner))
        await self._pool.close()

    async def _run(self) -> None:
        with self._dispatch_lock() as held:
            while not held():
                await asyncio.sleep(_LOCK_RETRY_SECONDS)
            self.active = True
            log.info("outbox_dispatcher_started", owner=self._owner)
            heartbeat = asyncio.get_running_loop().create_task(self._heartbeat())
            try:
                await self._dispatch()
            finally:
                heartbeat.cancel()

    @contextlib.contextmanager
    def _dispatch_lock(self) -> Iterator[Callable[[], bool]]:
        """``held()`` tries for the instance's lock file; the lock goes with the process, however it ends."""
        file: IO[bytes] | None = None

        def held() -> bool:
            nonlocal file
            if file is None:
                file = open(self._lock_path, "ab")  # noqa: SIM115 - held for the process's life
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        try:
            yield held
        finally:
            if file is not None:
                file.close()

    async def _heartbeat(self) -> None:
        interval = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            if self._in_flight:
                try:
                    await self._db.write_off_loop(lambda c: outbox.extend_leases(c, self._owner, self._lease))
                except StoreUnavailable as exc:
                    log.warning("outbox_heartbeat_failed", error=str(exc))

    # -- claiming -----------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        next_retention = loop.time()
        batch = self._settings.outbox_batch_size
        while not self._stopping:
            if loop.time() >= next_retention:
                next_retention = loop.time() + _RETENTION_EVERY
                await self._purge()
            room = self._capacity - self._in_flight
            claimed = 0
            if room > 0:
                try:
                    claimed, claims = await self._db.write_off_loop(lambda c: self._claim(c, min(room, batch)))
                except StoreUnavailable as exc:
                    log.warning("outbox_claim_failed", error=str(exc))
                else:
                    for claim in claims:
                        self._assign(claim)
            if claimed == batch:
                continue  # more may be due at once
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL_SECONDS):
                    await self._wake.wait()
                # Every accepted message wakes the dispatcher: a moment's pause claims a burst in one
                # statement (one commit) instead of one each.
                await asyncio.sleep(_GATHER_SECONDS)

    def _claim(self, conn: Connection, limit: int) -> tuple[int, list[Claim]]:
        """Lease due messages and count them against their portals' rates, in one transaction.

        Messages over a portal's rate go back untried, due when its window ends.
        """
        claims = outbox.claim_due(conn, self._owner, self._lease, limit)
        by_portal: dict[int, list[Claim]] = defaultdict(list)
        for claim in claims:
            by_portal[claim.portal_id].append(claim)
        allowed: list[Claim] = []
        for portal_id, group in by_portal.items():
            calls, wait = ratelimit.hit(conn, f"outbox:portal:{portal_id}", _RATE_WINDOW, len(group))
            keep = len(group) - max(0, calls - self._settings.outbox_messages_per_minute)
            allowed += group[:keep]
            if keep < len(group):
                later = utcnow() + timedelta(seconds=max(wait, 0.5))
                for claim in group[max(keep, 0) :]:
                    outbox.release(conn, claim.id, self._owner, later)
                outbox.postpone_portal(conn, portal_id, later)
        return len(claims), allowed

    def _assign(self, claim: Claim) -> None:
        self._in_flight += 1
        queue = self._lanes.get(claim.portal_id)
        if queue is None:
            queue = self._lanes[claim.portal_id] = deque()
        queue.append(claim)
        lanes = self._lane_tasks.setdefault(claim.portal_id, set())
        if len(lanes) < self._settings.outbox_connections_per_portal:
            lanes.add(asyncio.get_running_loop().create_task(self._lane(claim.portal_id)))

    # -- sending ------------------------------------------------------------------------------------

    async def _lane(self, portal_id: int) -> None:
        """Send a portal's claimed messages one after another over one pooled connection.

        A portal has at most ``outbox_connections_per_portal`` lanes, sharing its queue. A lane leaves the
        moment it finds the queue empty, with no await in between, so a message assigned meanwhile always
        finds a lane (or starts one). The settings are read again at most every second, so a save applies
        to the next messages.
        """
        loop = asyncio.get_running_loop()
        target: SmtpTarget | None = None
        key: tuple[int, str] = (portal_id, "")
        read_at = -_SETTINGS_FRESH
        try:
            while queue := self._lanes.get(portal_id):
                claim = queue.popleft()
                if not queue:
                    del self._lanes[portal_id]
                try:
                    if loop.time() - read_at >= _SETTINGS_FRESH:
                        target, key = await self._target(portal_id)
                        read_at = loop.time()
                    await self._deliver(claim, target, key)
                except asyncio.CancelledError:
                    self._finish(claim, lambda c, i=claim.id: outbox.release(c, i, self._owner, utcnow()))
                    raise
                except Exception:  # never lose the lane to one message: its lease brings it back
                    log.exception("outbox_send_crashed", message_id=claim.id)
                    self._in_flight -= 1
        finally:
            lanes = self._lane_tasks[portal_id]
            lanes.discard(asyncio.current_task())  # type: ignore[arg-type]
            if not lanes:
                del self._lane_tasks[portal_id]

    async def _target(self, portal_id: int) -> tuple[SmtpTarget | None, tuple[int, str]]:
        settings, credentials = await self._smtp.get_for_sending_by_id(portal_id)
        if not settings.host:
            return None, (portal_id, "")
        # The key changes with any setting or secret, so a save takes new connections.
        fingerprint = hashlib.sha256(
            msgspec.json.encode(settings) + msgspec.json.encode([credentials.password, credentials.oauth2])
        ).hexdigest()
        return smtp_target(settings, credentials), (portal_id, fingerprint)

    async def _deliver(self, claim: Claim, target: SmtpTarget | None, key: tuple[int, str]) -> None:
        if target is None:
            self._failed_attempt(claim, MailError("The portal has no SMTP settings to send with."))
            return
        try:
            async with asyncio.timeout(2 * self._settings.smtp_job_timeout):
                async with self._pool.connection(key, target) as connection:
                    delivery = await connection.send(claim.sender, claim.recipients, claim.content, smtputf8=claim.smtputf8)
        except MailError as exc:
            self._failed_attempt(claim, exc)
            return
        except TimeoutError:
            self._failed_attempt(claim, MailError("No result within the deadline; the attempt was stopped."))
            return
        self._delivered(claim, delivery)

    def _delivered(self, claim: Claim, delivery: Delivery) -> None:
        """Record who got the message; those refused with a 4xx wait for a retry, as a failed attempt would."""
        refusals = delivery.refusals
        metrics.record_reply(_code(delivery.reply) if delivery.reply is not None else refusals[0].code)
        later = [r for r in refusals if not r.permanent]
        retry = None
        if later:
            retry = self._classify(claim, SendError(f"Recipient deferred: {later[0].reply}", code=later[0].code))
        attempt = delivery_outcomes(delivery.accepted, refusals, delivery.reply, retry)
        if retry is not None:
            error: str | None = retry.reason
        else:
            error = next((f"Recipient rejected: {r.reply}" for r in refusals), None)
        reply = delivery.reply if delivery.reply is not None else refusals[0].reply
        latency = (utcnow() - claim.created_at).total_seconds()
        settled: list[Settlement] = []

        def write(conn: Connection) -> bool:
            result = outbox.record_attempt(
                conn, claim.id, self._owner, lambda _pending: attempt,
                next_attempt_at=retry.next_attempt_at if retry else None, error=error, reply=reply,
            )
            settled[:] = [result] if result is not None else []
            return result is not None

        def recorded() -> None:
            status = settled[0].status
            if status in ("sent", "partial"):  # once per message, when its last recipient is settled
                metrics.record_sent(latency)
            elif status == "deferred":
                metrics.record_deferred()
            elif status == "failed":
                metrics.record_failed()
            # Counts only: recipient addresses never go into the log.
            log.info(
                "outbox_sent" if delivery.accepted else "outbox_attempt_failed",
                message_id=claim.id, portal_id=claim.portal_id, attempts=claim.attempts, status=status,
                accepted=len(delivery.accepted), refused=len(refusals) - len(later), deferred=len(later),
            )

        self._finish(claim, write, recorded)

    def _classify(self, claim: Claim, error: MailError) -> Outcome:
        return classify(
            error,
            attempts=claim.attempts,
            accepted_at=claim.queued_at,
            now=utcnow(),
            horizon=timedelta(seconds=self._settings.outbox_retry_horizon_seconds),
            rng=self._rng,
            first_retry=timedelta(seconds=self._settings.outbox_first_retry_seconds),
        )

    def _failed_attempt(self, claim: Claim, error: MailError) -> None:
        metrics.record_reply(error.code)
        outcome = self._classify(claim, error)
        reply = _reply_of(error)
        log.info(
            "outbox_attempt_failed",
            message_id=claim.id,
            portal_id=claim.portal_id,
            attempts=claim.attempts,
            status=outcome.status,
            step=error.step,
            code=error.code,
        )
        if outcome.status == "failed":
            self._finish(
                claim, lambda c: outbox.mark_failed(c, claim.id, self._owner, outcome.reason, reply), metrics.record_failed
            )
            return
        next_at = outcome.next_attempt_at
        assert next_at is not None
        self._finish(
            claim,
            lambda c: outbox.mark_deferred(c, claim.id, self._owner, next_at, outcome.reason, reply),
            metrics.record_deferred,
        )

    # -- recording ----------------------------------------------------------------------------------

    def _finish(self, claim: Claim, transition: Callable[[Connection], bool], recorded: Callable[[], None] | None = None) -> None:
        """Queue the attempt's outcome for the next batch write; the lane goes on to its next message.

        One transaction (one sync to disk) records every outcome that arrived meanwhile: per message, it
        would cost more than the SMTP exchange.
        """
        self._outcomes.append((transition, recorded))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.get_running_loop().create_task(self._record_outcomes())

    async def _record_outcomes(self) -> None:
        """Write queued outcomes in batches until none are left; retried while the database is away.

        A transition whose guard no longer holds (the lease ran out and another instance took the message)
        changes nothing: then the outcome is that instance's to write. The send itself is never retried
        for a failed write; the lease brings the message back, to be sent at least once.
        """
        delays = iter((0.1, 0.5, 1, 2, 5, 10, 20))
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []

            def write(conn: Connection) -> list[bool]:
                return [bool(transition(conn)) for transition, _ in batch]

            try:
                results = await self._db.write_off_loop(write)
            except StoreUnavailable as exc:
                delay = next(delays, None)
                log.warning("outbox_record_failed", error=str(exc), retry_in=delay)
                if delay is None:  # give up: the leases bring these messages back
                    self._in_flight -= len(batch)
                    self._wake.set()
                    continue
                self._outcomes = batch + self._outcomes
                await asyncio.sleep(delay)
                continue
            for (_, recorded), ok in zip(batch, results, strict=True):
                if ok and recorded is not None:
                    recorded()
            self._in_flight -= len(batch)
            self._wake.set()

    async def _purge(self) -> None:
        now = utcnow()
        sent_before = now - timedelta(days=self._settings.outbox_sent_retention_days)
        failed_before = now - timedelta(days=self._settings.outbox_failed_retention_days)
        rows_before = now - timedelta(days=self._settings.outbox_row_retention_days)
        deleted = 0
        try:
            purged = await self._db.write_off_loop(
                lambda c: outbox.purge_bodies(c, sent_before=sent_before, failed_before=failed_before)
            )
            # In bounded batches, each its own short transaction: a backlog of old rows (the first run after
            # an upgrade) must not hold the write lock against acceptance and the sends' bookkeeping.
            while not self._stopping:
                batch = await self._db.write_off_loop(
                    lambda c: outbox.delete_finished(c, before=rows_before, limit=_DELETE_BATCH)
                )
                deleted += batch
                if batch < _DELETE_BATCH:
                    break
        except StoreUnavailable as exc:
            log.warning("outbox_purge_failed", error=str(exc))
            return
        if purged:
            log.info("outbox_bodies_purged", count=purged)
        if deleted:
            log.info("outbox_rows_deleted", count=deleted)


def _code(reply: str) -> int | None:
    head = reply[:3]
    return int(head) if head.isdigit() else None


def _reply_of(error: MailError) -> str | None:
    """The server's reply within the error's sentence ("Recipient rejected: 550 5.1.1 ..." → "550 5.1.1 ...")."""
    if error.code is None:
        return None
    start = error.message.find(f"{error.code} ")
    return error.message[start:] if start >= 0 else str(error.code)
