"""The dispatcher: claims due messages from the outbox and sends them through their portal's settings.

One runs per instance: of the worker processes sharing a data directory, the one holding the lock file
``outbox.lock`` dispatches; the others try for the lock every few seconds and take over if its holder
dies. Instances sharing a PostgreSQL database claim with ``FOR UPDATE SKIP LOCKED``, so they never take
the same message; a claim is a lease that a heartbeat extends, and a message whose lease ran out is simply
due again. A dead dispatcher's leases are not waited out: on SQLite the one that takes the lock ends them
all (no other can be at work on that file), on PostgreSQL the peers end those of a dispatcher whose
heartbeat count stood still for ``outbox_peer_timeout_seconds``. Delivery is therefore at least once: a
message sent just before its instance died is sent again, with the same Message-ID.

A portal's messages go out over pooled connections, at most ``outbox_connections_per_portal`` at once,
and at most ``outbox_messages_per_minute`` a minute across all instances (a shared counter); messages
over the limit go back untried, due when the minute ends.

Portals share the dispatcher fairly: a claim takes at most a portal's lanes plus a small prefetch
(counting what it holds already), round robin over the portals with due mail, so one portal's backlog
or stuck server never takes the capacity the others need. A portal's messages are claimed a few at a time,
and a lane that holds a connection sends them in a row, then asks the next claim for more of its portal's
before it gives the connection back: a thousand portals on one mail server open about one connection each,
not one per message. A portal whose server fails a cohort of connections in a row is unavailable for a
growing back-off (:mod:`smtpsettings.domain.destinations`): its waiting messages are deferred in one
statement, and only one probe at a time tries it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import os
import random
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import msgspec
import structlog
from sqlalchemy.engine import Connection

from smtpsettings import metrics
from smtpsettings.config import Settings
from smtpsettings.domain.destinations import Destination, Destinations, is_connection_failure
from smtpsettings.domain.outbox import (
    LONGEST_RETRY,
    Outcome,
    Settlement,
    classify,
    delivery_outcomes,
    gave_up,
)
from smtpsettings.domain.peers import PeerWatch
from smtpsettings.mail import (
    STEP_DELIVER,
    Delivery,
    MailError,
    SendError,
    SmtpConnection,
    SmtpTarget,
    TokenCache,
)
from smtpsettings.mail.pool import ConnectionPool
from smtpsettings.services.mailtest import mail_policy, smtp_target
from smtpsettings.services.smtp import SmtpSettingsService
from smtpsettings.store import dispatchers, outbox, ratelimit
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
_CANCELLED_LANES_WAIT = 1.0  # at a stop past its grace: time for cancelled lanes and the recorder to write
_PREFETCH = 8  # claimed beyond a portal's lanes, so its lanes find the next message without a claim between
_IN_A_ROW = 5  # a portal's messages claimed together, and sent over one connection before others waiting for its host
_MORE_WAIT = 0.5  # longest a lane holds its connection for the claim of its portal's next messages
_RECORD_WAIT = 0.02  # longest an outcome waits for a claim to be written with, before it is written on its own


_Outcome = tuple[Callable[[Connection], bool], Callable[[], None] | None]
"""A message's transition to write, and what to do once it changed the message (count it, log it)."""


@dataclass
class _Route:
    """A lane's portal, its settings as last read (at ``read_at``, loop time), and the message being sent."""

    portal_id: int
    target: SmtpTarget | None = None
    key: tuple[int, str] = (0, "")  # replaced by the first read
    read_at: float = -_SETTINGS_FRESH
    current: Claim | None = None
    drained: bool = False  # a claim for more of the portal's messages found no more behind them


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
        self._pool = ConnectionPool(
            mail_policy(settings), tokens,
            per_key=settings.outbox_connections_per_portal, per_host=settings.outbox_connections_per_host,
            on_open=lambda: metrics.record_connection_opened(len(tokens)),
        )
        # A send can take the open, the message and the bookkeeping; the heartbeat renews well before.
        self._lease = timedelta(seconds=2 * settings.smtp_job_timeout) + _LEASE_MARGIN
        self._capacity = 2 * settings.outbox_batch_size
        self._share = settings.outbox_connections_per_portal + _PREFETCH
        self._destinations = Destinations(
            cohort=settings.outbox_connections_per_portal,
            first=timedelta(seconds=settings.outbox_first_retry_seconds),
            longest=max(LONGEST_RETRY, timedelta(seconds=settings.outbox_first_retry_seconds)),
        )
        self._horizon = timedelta(seconds=settings.outbox_retry_horizon_seconds)
        self._side_writes: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._lanes: dict[int, deque[Claim]] = {}
        self._lane_tasks: dict[int, set[asyncio.Task[None]]] = {}
        # Portals whose lane holds a connection and has sent its queue: the next claim asks for more of theirs,
        # and resolves the future with whether the portal may have more still.
        self._hungry: dict[int, asyncio.Future[bool]] = {}
        # Signals that due work may have appeared (acceptances, released leases, a destination back): a count,
        # so that a claim can be told apart from what came after it.
        self._news = 0
        # Portals whose due messages the last claim of theirs took every one of, with the news count before
        # it: while nothing has happened since, asking a claim for more of theirs would find nothing.
        self._exhausted: dict[int, int] = {}
        self._in_flight = 0
        self._outcomes: list[_Outcome] = []
        self._outcomes_wake = False  # one of the queued outcomes puts a message back in the queue
        self._capacity_bound = False  # the last claim took fewer than a batch for want of room: freed room is news
        self._recorder: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._beating: asyncio.Task[None] | None = None
        self._lock: IO[bytes] | None = None
        self._stopping = False
        self._rng = random.Random()
        self.active = False
        """Whether this process holds the lock and dispatches (for tests and the log)."""

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """A message was accepted in this process: look for due work now rather than at the next poll."""
        self._notice()

    def _notice(self) -> None:
        """Something may have made messages due: claim soon, and let no lane take the last claim for complete."""
        self._news += 1
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give sends in flight ``grace`` seconds, then cancel them and release their claims.

        Claims not yet started go back at once. The pool closes, and the lock goes, only once every lane has
        ended: a lane never meets a closed pool, and no other worker takes over while a send may still be on
        the wire. ``grace`` bounds all the waiting here together (the last write, leaving, has the database's
        own timeout): each wait taking it in full made a stop on a slow database take three times as long.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace

        def left() -> float:
            return max(deadline - loop.time(), 0.0)

        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fed(self._hungry, {})
        for queue in self._lanes.values():
            for claim in queue:
                self._finish(claim, lambda c, i=claim.id: outbox.release(c, i, self._owner, utcnow()))
        self._lanes.clear()  # each lane ends after the message it is sending
        lanes = [t for tasks in self._lane_tasks.values() for t in tasks]
        if lanes:
            _, pending = await asyncio.wait(lanes, timeout=left())
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=max(left(), _CANCELLED_LANES_WAIT))
        if self._recorder is not None:
            await asyncio.wait([self._recorder], timeout=max(left(), _CANCELLED_LANES_WAIT))
            self._recorder.cancel()  # the database is away: the leases bring what it holds back
        if self._beating is not None:
            self._beating.cancel()
        if self.active:

            def leave(conn: Connection) -> None:
                outbox.release_owner(conn, self._owner)
                if not self._db.is_sqlite:
                    dispatchers.leave(conn, self._owner)

            with contextlib.suppress(StoreUnavailable):
                await self._db.write_off_loop(leave)
        await self._pool.close()
        if self._lock is not None:
            self._lock.close()

    async def _run(self) -> None:
        while not self._take_lock():
            await asyncio.sleep(_LOCK_RETRY_SECONDS)
        self.active = True
        log.info("outbox_dispatcher_started", owner=self._owner)
        if self._db.is_sqlite:
            # The lock is the database's: whoever held it before is gone, and so are its sends.
            await self._take_over(None)
        self._beating = asyncio.get_running_loop().create_task(self._heartbeat())
        await self._dispatch()

    def _take_lock(self) -> bool:
        """Try for the instance's lock file; held until :meth:`stop` ends, and by the kernel until the process does."""
        if self._lock is None:
            self._lock = open(self._lock_path, "ab")  # noqa: SIM115 - held for the dispatcher's life
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    async def _heartbeat(self) -> None:
        """Keep this dispatcher's leases current and, on PostgreSQL, its heartbeat, watching the peers'."""
        loop = asyncio.get_running_loop()
        extend_every = self._lease.total_seconds() / 3
        next_extend = loop.time() + extend_every
        peer_timeout = self._settings.outbox_peer_timeout_seconds
        watch = None if self._db.is_sqlite else PeerWatch(peer_timeout)
        while True:
            if watch is not None:
                await self._beat(watch)
            if loop.time() >= next_extend:
                next_extend = loop.time() + extend_every
                if self._in_flight:
                    try:
                        await self._db.write_off_loop(lambda c: outbox.extend_leases(c, self._owner, self._lease))
                    except StoreUnavailable as exc:
                        log.warning("outbox_heartbeat_failed", error=str(exc))
            await asyncio.sleep(extend_every if watch is None else min(extend_every, peer_timeout / 3))

    async def _beat(self, watch: PeerWatch) -> None:
        """Count a heartbeat; take over the claims of peers whose count stood still for the peer timeout."""
        try:
            beats = await self._db.write_off_loop(lambda c: dispatchers.beat(c, self._owner))
        except StoreUnavailable as exc:
            watch.forget()
            log.warning("outbox_heartbeat_failed", error=str(exc))
            return
        silent = watch.observe(beats, asyncio.get_running_loop().time())
        if silent:
            await self._take_over(silent)

    async def _take_over(self, silent: dict[str, int] | None) -> None:
        """End the leases of dead dispatchers now, ``silent`` peers or (None) every one, so their messages go out."""

        def expire(conn: Connection) -> tuple[list[str] | None, int]:
            owners = None if silent is None else dispatchers.remove_silent(conn, silent)
            return owners, outbox.expire_leases(conn, owners)

        try:
            owners, released = await self._db.write_off_loop(expire)
        except StoreUnavailable as exc:  # their leases still run out
            log.warning("outbox_take_over_failed", error=str(exc))
            return
        if owners:
            log.warning("outbox_peers_silent", peers=owners, released=released)
        elif released:
            log.info("outbox_leases_released", released=released)
        self._notice()

    # -- claiming -----------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        next_retention = loop.time()
        batch = self._settings.outbox_batch_size
        metrics.set_destinations_unavailable(0)  # whatever a dispatcher before this one left
        while not self._stopping:
            if loop.time() >= next_retention:
                next_retention = loop.time() + _RETENTION_EVERY
                await self._purge()
            room = self._capacity - self._in_flight
            self._capacity_bound = room < batch
            more = False
            if room > 0 or self._hungry:
                busy = self._busy()
                limit = max(0, min(room, batch))
                # A portal with a connection open is asked for even when the capacity is taken: its share bounds it.
                hungry, self._hungry = self._hungry, {}
                wanted = {p: self._share - busy.get(p, 0) for p in hungry}
                got: dict[int, int] = {}
                news = self._news
                # The outcomes queued meanwhile go in the claim's transaction: one commit where there were two.
                outcomes, outcomes_wake = self._take_outcomes()

                def work(conn: Connection) -> tuple[list[bool], tuple[int, list[Claim]]]:
                    return _write_outcomes(conn, outcomes), self._claim(conn, limit, busy, wanted, got)  # noqa: B023

                write = asyncio.ensure_future(self._db.write_off_loop(work))
                try:
                    try:
                        written, (claimed, claims) = await asyncio.shield(write)
                    except asyncio.CancelledError:
                        # Stopping: the transaction may commit all the same, and its outcomes must not be lost.
                        await asyncio.wait([write])
                        if write.cancelled() or write.exception() is not None:
                            self._requeue(outcomes, outcomes_wake)
                        else:
                            self._recorded(outcomes, write.result()[0], outcomes_wake)
                            for claim in write.result()[1][1]:
                                self._assign(claim)  # released by stop() with the others queued
                        raise
                    except BaseException:
                        self._requeue(outcomes, outcomes_wake)
                        raise
                except StoreUnavailable as exc:
                    log.warning("outbox_claim_failed", error=str(exc))
                else:
                    self._recorded(outcomes, written, outcomes_wake)
                    for claim in claims:
                        self._assign(claim)
                    # More may be due at once: the claim was full, or the backlog of a portal it brought to its
                    # share may have filled the walk; the next walk leaves that portal out.
                    now_busy = self._busy()
                    capped = claimed == limit or any(now_busy[c.portal_id] >= self._share for c in claims)
                    more = limit > 0 and capped
                    self._note_exhausted(news, wanted, got, claims if limit > 0 and not capped else [])
                finally:
                    self._fed(hungry, {p: got.get(p, 0) >= n > 0 for p, n in wanted.items()})
            if more or self._hungry:  # lanes that asked for more during the claim
                continue
            # Back-offs also end without an event: the gauge is read again while idle.
            metrics.set_destinations_unavailable(self._destinations.unavailable(utcnow()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL_SECONDS):
                    await self._wake.wait()
                # Every accepted message wakes the dispatcher: a moment's pause claims a burst in one
                # statement (one commit) instead of one each.
                await asyncio.sleep(_GATHER_SECONDS)

    def _note_exhausted(self, news: int, wanted: dict[int, int], got: dict[int, int], walked: list[Claim]) -> None:
        """Remember the portals a claim took every due message of (those it took fewer of than it asked for).

        ``walked``: the claim's messages when its walk was not capped (fewer than its limit, no portal brought
        to its share): then every portal in it had all its due messages taken, since a walk that stops at its
        row bound has taken its limit. The claim's own messages are in the lanes, not in the database.
        """
        for portal_id, n in wanted.items():
            if got.get(portal_id, 0) < n and portal_id in self._lane_tasks:
                self._exhausted[portal_id] = news
            else:
                self._exhausted.pop(portal_id, None)
        for claim in walked:
            self._exhausted[claim.portal_id] = news  # it has a lane: _assign started one

    def _busy(self) -> dict[int, int]:
        """Messages each portal has here, waiting in its lanes or being sent: what its share counts."""
        return {p: len(self._lanes.get(p, ())) + len(self._lane_tasks.get(p, ())) for p in self._lane_tasks}

    def _claim(
        self, conn: Connection, limit: int, busy: dict[int, int], wanted: dict[int, int], got: dict[int, int]
    ) -> tuple[int, list[Claim]]:
        """Lease due messages and count them against their portals' rates, in one transaction.

        First up to ``wanted`` more of the portals whose lanes hold a connection (``got`` says how many
        each got), then up to ``limit`` by the walk; returns how many the walk took, and the claims.
        Messages over a portal's rate go back untried, due when its window ends.
        """
        claims = outbox.claim_more(conn, self._owner, self._lease, wanted) if wanted else []
        busy = dict(busy)
        for claim in claims:
            got[claim.portal_id] = got.get(claim.portal_id, 0) + 1
            busy[claim.portal_id] = busy.get(claim.portal_id, 0) + 1
        walked = []
        if limit > 0:
            walked = outbox.claim_due(
                conn, self._owner, self._lease, limit, per_portal=self._share, busy=busy, together=_IN_A_ROW
            )
        claims += walked
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
        return len(walked), allowed

    def _assign(self, claim: Claim) -> None:
        self._in_flight += 1
        queue = self._lanes.get(claim.portal_id)
        if queue is None:
            queue = self._lanes[claim.portal_id] = deque()
        queue.append(claim)
        lanes = self._lane_tasks.setdefault(claim.portal_id, set())
        if not lanes:  # more come from the lane once it sends (_widen)
            lanes.add(asyncio.get_running_loop().create_task(self._lane(claim.portal_id)))

    # -- sending ------------------------------------------------------------------------------------

    async def _lane(self, portal_id: int) -> None:
        """Send a portal's claimed messages one after another, over one pooled connection held between them.

        A portal has at most ``outbox_connections_per_portal`` lanes, sharing its queue: one to start with,
        and another only while its next hop has a free slot (:meth:`_widen`). A lane leaves the moment it
        finds the queue empty, with no await in between, so a message assigned meanwhile always finds a
        lane (or starts one). The settings are read again at most every second, so a save applies to the
        next messages.
        """
        route = _Route(portal_id)
        try:
            while claim := self._next_claim(portal_id):
                route.current = claim
                try:
                    await self._refresh(route)
                    await self._deliver(route)
                except asyncio.CancelledError:
                    if route.current is not None:
                        self._finish(route.current, lambda c, i=route.current.id: outbox.release(c, i, self._owner, utcnow()))
                    raise
                except Exception:  # never lose the lane to one message: its lease brings it back
                    log.exception("outbox_send_crashed", message_id=route.current.id if route.current else None)
                    if route.current is not None:
                        self._in_flight -= 1
                route.current = None
        finally:
            lanes = self._lane_tasks[portal_id]
            lanes.discard(asyncio.current_task())  # type: ignore[arg-type]
            if not lanes:
                del self._lane_tasks[portal_id]
                self._exhausted.pop(portal_id, None)  # the claim that brings the portal's next lane says again

    @staticmethod
    def _fed(hungry: dict[int, asyncio.Future[bool]], full: dict[int, bool]) -> None:
        """Wake the lanes waiting for a claim of their portals' messages: whether each may have more."""
        for portal_id, waiter in hungry.items():
            if not waiter.done():
                waiter.set_result(full.get(portal_id, False))

    async def _claim_more(self, portal_id: int) -> bool:
        """Ask the next claim for more of the portal's messages; whether it may have more still after those."""
        waiter = self._hungry.get(portal_id)
        if waiter is None:
            waiter = self._hungry[portal_id] = asyncio.get_running_loop().create_future()
        self._wake.set()
        try:
            async with asyncio.timeout(_MORE_WAIT):
                return await asyncio.shield(waiter)
        except TimeoutError:
            return False

    def _next_claim(self, portal_id: int) -> Claim | None:
        """The portal's next queued message, if any; the queue goes with its last one."""
        queue = self._lanes.get(portal_id)
        if not queue:
            return None
        claim = queue.popleft()
        if not queue:
            del self._lanes[portal_id]
        return claim

    def _widen(self, portal_id: int, target: SmtpTarget) -> None:
        """Another lane for the portal, if more of its messages wait and its next hop has a slot to spare.

        Where other portals wait for that host, a second connection of this one would only take a slot
        from them (and cost an opening) while its first lane sends the same messages in a row.
        """
        lanes = self._lane_tasks.get(portal_id)
        if (
            lanes is not None
            and self._lanes.get(portal_id)
            and len(lanes) < self._settings.outbox_connections_per_portal
            and not self._pool.contended(target)
        ):
            lanes.add(asyncio.get_running_loop().create_task(self._lane(portal_id)))

    async def _refresh(self, route: _Route) -> None:
        """Read the route's settings again if the last read is a second old (a save applies that soon)."""
        loop = asyncio.get_running_loop()
        if loop.time() - route.read_at >= _SETTINGS_FRESH:
            route.target, route.key = await self._target(route.portal_id)
            route.read_at = loop.time()

    async def _target(self, portal_id: int) -> tuple[SmtpTarget | None, tuple[int, str]]:
        metrics.record_settings_read()
        settings, credentials = await self._smtp.get_for_sending_by_id(portal_id)
        if not settings.host:
            return None, (portal_id, "")
        # The key changes with any setting or secret, so a save takes new connections.
        fingerprint = hashlib.sha256(
            msgspec.json.encode(settings) + msgspec.json.encode([credentials.password, credentials.oauth2])
        ).hexdigest()
        return smtp_target(settings, credentials), (portal_id, fingerprint)

    async def _deliver(self, route: _Route) -> None:
        """Send ``route.current``, then the portal's next queued messages over the same connection.

        The connection (and its slot at the next hop) is held from one message to the next, and given
        back when the queue is empty, when the settings changed, or after :data:`_IN_A_ROW` messages while
        other portals wait for that host (the pool then gives the slot to one of them if it has to).
        ``route.current`` is the message being sent, None once its outcome is queued.
        """
        claim, target, key = route.current, route.target, route.key
        assert claim is not None
        if target is None:
            self._failed_attempt(claim, MailError("The portal has no SMTP settings to send with."))
            route.current = None
            return
        destination = (claim.portal_id, target.host, target.port)
        unavailable_until = self._destinations.admit(destination, utcnow())
        if unavailable_until is not None:
            self._wait_for(claim, destination, unavailable_until)
            route.current = None
            return
        loop = asyncio.get_running_loop()
        deadline = 2 * self._settings.smtp_job_timeout
        route.drained = False
        in_a_row = 0
        yielded = False
        try:
            # The deadline is each message's own: time spent waiting for one of the next hop's connection
            # slots (other portals' mail going out) is not the destination failing, and must not mark it dead.
            async with asyncio.timeout(None) as attempt:
                async with self._pool.connection(key, target) as connection:
                    while claim is not None:
                        attempt.reschedule(loop.time() + deadline)
                        delivery = await connection.send(claim.sender, claim.recipients, claim.content, smtputf8=claim.smtputf8)
                        attempt.reschedule(None)
                        self._reachable(destination)
                        self._delivered(claim, delivery)
                        route.current = None
                        in_a_row += 1
                        if in_a_row >= _IN_A_ROW and self._pool.contended(target):
                            yielded = True
                            break
                        claim = route.current = await self._next_in_row(route, key, connection)
        except MailError as exc:
            if route.current is not None:
                self._failed_attempt(route.current, exc, destination)
                route.current = None
        except TimeoutError:
            if route.current is not None:
                error = MailError("No result within the deadline; the attempt was stopped.")
                self._failed_attempt(route.current, error, destination)
                route.current = None
        if yielded:
            # The pool makes room for the waiters at the loop's next turn: without this pause the lane's next
            # message would take its idle connection back before they could be given its slot.
            await asyncio.sleep(0)

    async def _next_in_row(self, route: _Route, key: tuple[int, str], connection: SmtpConnection) -> Claim | None:
        """The portal's next message to send over ``connection``, or None to give the connection back.

        With the queue empty, the lane asks the next claim for more of its portal's messages (once per
        connection after the claim found no more), holding the connection meanwhile: a claim's round trip
        costs less than opening another. It does not ask when the claim that brought the portal's last
        messages took every one that was due and nothing was accepted or released since: that claim would
        be a transaction per message for nothing, the common case of mail arriving a message at a time.
        The idle connection stays in the pool for the next one.
        """
        if not self._pool.reusable(connection):
            return None
        if not self._lanes.get(route.portal_id):
            if self._stopping or route.drained or self._exhausted.get(route.portal_id) == self._news:
                return None  # the last claim of the portal's messages took all there were, and nothing came since
            route.drained = not await self._claim_more(route.portal_id)
            if not self._lanes.get(route.portal_id):
                return None
        await self._refresh(route)
        if route.key != key or route.target is None:
            return None  # a save: the next message takes a connection with the new settings
        claim = self._next_claim(route.portal_id)
        if claim is not None:
            self._widen(route.portal_id, route.target)
        return claim

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

        self._finish(claim, write, recorded, wake=retry is not None)

    def _classify(self, claim: Claim, error: MailError) -> Outcome:
        return classify(
            error,
            attempts=claim.attempts,
            accepted_at=claim.queued_at,
            now=utcnow(),
            horizon=self._horizon,
            rng=self._rng,
            first_retry=timedelta(seconds=self._settings.outbox_first_retry_seconds),
        )

    def _failed_attempt(self, claim: Claim, error: MailError, destination: Destination | None = None) -> None:
        metrics.record_reply(error.code)
        now = utcnow()
        outcome = self._classify(claim, error)
        if destination is not None:
            if not is_connection_failure(error, while_sending=error.step == STEP_DELIVER):
                self._reachable(destination)
            elif (until := self._destinations.failed(destination, now, error)) is not None:
                self._unavailable(destination, until)
                if outcome.next_attempt_at is not None and until > outcome.next_attempt_at:
                    # This one waits with the others, or fails with them when its horizon ends first.
                    if until > claim.queued_at + self._horizon:
                        outcome = Outcome("failed", None, gave_up(self._horizon, error.message))
                    else:
                        outcome = msgspec.structs.replace(outcome, next_attempt_at=until)
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

    # -- unavailable destinations -------------------------------------------------------------------

    def _wait_for(self, claim: Claim, destination: Destination, until: datetime) -> None:
        """The claim's destination is unavailable: deferred (or failed past its horizon) untried."""
        reason = self._destinations.reason(destination, until)
        self._finish(
            claim,
            lambda c: outbox.defer_untried(
                c, claim.id, self._owner, until, reason, give_up_before=until - self._horizon,
                failed_reason=gave_up(self._horizon, reason),
            ),
        )

    def _unavailable(self, destination: Destination, until: datetime) -> None:
        """The destination just became unavailable (again): its portal's waiting messages wait until ``until``."""
        portal_id, host, port = destination
        reason = self._destinations.reason(destination, until)
        log.warning("outbox_destination_unavailable", portal_id=portal_id, host=host, port=port, until=until.isoformat())
        metrics.set_destinations_unavailable(self._destinations.unavailable(utcnow()))

        def defer(conn: Connection) -> int:
            return outbox.defer_portal(
                conn, portal_id, until, reason, give_up_before=until - self._horizon, failed_reason=gave_up(self._horizon, reason)
            )

        self._write_aside(defer, "outbox_destination_deferred", portal_id)

    def _reachable(self, destination: Destination) -> None:
        """The server answered: if it was unavailable, what waited for it is due now."""
        until = self._destinations.reachable(destination)
        if until is None:
            return
        portal_id, host, port = destination
        log.info("outbox_destination_available", portal_id=portal_id, host=host, port=port)
        metrics.set_destinations_unavailable(self._destinations.unavailable(utcnow()))
        self._write_aside(lambda c: outbox.resume_portal(c, portal_id, until), "outbox_destination_resumed", portal_id)

    def _write_aside(self, write: Callable[[Connection], int], event: str, portal_id: int) -> None:
        """One statement beside the outcome batches (it holds no claim); logged with the rows it moved."""

        async def run() -> None:
            try:
                count = await self._db.write_off_loop(write)
            except StoreUnavailable as exc:  # the messages then come due and are deferred one by one
                log.warning("outbox_destination_write_failed", portal_id=portal_id, error=str(exc))
                return
            log.info(event, portal_id=portal_id, count=count)
            self._notice()

        task = asyncio.get_running_loop().create_task(run())
        self._side_writes.add(task)
        task.add_done_callback(self._side_writes.discard)

    # -- recording ----------------------------------------------------------------------------------

    def _finish(
        self, claim: Claim, transition: Callable[[Connection], bool], recorded: Callable[[], None] | None = None,
        *, wake: bool = True,
    ) -> None:
        """Queue the attempt's outcome for the next batch write; the lane goes on to its next message.

        One transaction (one sync to disk) records every outcome that arrived meanwhile: per message, it
        would cost more than the SMTP exchange. Once written, the dispatcher looks for due work again if
        the room freed is what it lacked, or (``wake``) the outcome may make a message due again: a message
        sent for good brings nothing new, and a claim after each one was one more transaction per message.
        """
        self._outcomes.append((transition, recorded))
        self._outcomes_wake = self._outcomes_wake or wake
        self._record_soon()

    def _record_soon(self) -> None:
        """Make sure a recorder is running to write the queued outcomes."""
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.get_running_loop().create_task(self._record_outcomes())

    def _take_outcomes(self) -> tuple[list[_Outcome], bool]:
        """The queued outcomes, to be written now, and whether one of them asks for a claim after it."""
        batch, self._outcomes = self._outcomes, []
        wake, self._outcomes_wake = self._outcomes_wake, False
        return batch, wake

    def _put_back(self, batch: list[_Outcome], wake: bool) -> None:
        """Outcomes whose write failed go back first in the queue."""
        self._outcomes = batch + self._outcomes
        self._outcomes_wake = self._outcomes_wake or wake

    def _requeue(self, batch: list[_Outcome], wake: bool) -> None:
        """Outcomes whose write (a claim's transaction) failed go back, for the recorder to write."""
        if batch:
            self._put_back(batch, wake)
            self._record_soon()

    def _recorded(self, batch: list[_Outcome], results: list[bool], wake: bool) -> None:
        """Outcomes are written: count and log those that changed their message, and free their room."""
        if not batch:
            return
        for (_, recorded), ok in zip(batch, results, strict=True):
            if ok and recorded is not None:
                recorded()
        self._in_flight -= len(batch)
        if wake:
            self._notice()
        elif self._capacity_bound:
            self._wake.set()

    async def _record_outcomes(self) -> None:
        """Write queued outcomes in batches until none are left; retried while the database is away.

        They wait a moment first: a claim starting meanwhile (the next message accepted, a lane asking for
        more) takes them into its own transaction. A transition whose guard no longer holds (the lease ran
        out and another instance took the message) changes nothing: then the outcome is that instance's to
        write. The send itself is never retried for a failed write; the lease brings the message back, to
        be sent at least once.
        """
        delays = iter((0.1, 0.5, 1, 2, 5, 10, 20))
        if not self._stopping:
            await asyncio.sleep(_RECORD_WAIT)
        while self._outcomes:
            batch, wake = self._take_outcomes()
            try:
                results = await self._db.write_off_loop(functools.partial(_write_outcomes, batch=batch))
            except StoreUnavailable as exc:
                delay = next(delays, None)
                log.warning("outbox_record_failed", error=str(exc), retry_in=delay)
                if delay is None:  # give up: the leases bring these messages back
                    self._in_flight -= len(batch)
                    self._notice()
                    continue
                self._put_back(batch, wake)
                await asyncio.sleep(delay)
                continue
            self._recorded(batch, results, wake)

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


def _write_outcomes(conn: Connection, batch: list[_Outcome]) -> list[bool]:
    """Apply each queued transition; whether each changed its message."""
    return [bool(transition(conn)) for transition, _ in batch]


def _code(reply: str) -> int | None:
    head = reply[:3]
    return int(head) if head.isdigit() else None


def _reply_of(error: MailError) -> str | None:
    """The server's reply within the error's sentence ("Recipient rejected: 550 5.1.1 ..." → "550 5.1.1 ...")."""
    if error.code is None:
        return None
    start = error.message.find(f"{error.code} ")
    return error.message[start:] if start >= 0 else str(error.code)
