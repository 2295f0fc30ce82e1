"""PostgreSQL: the request path's single-statement lookups, on a small pool of asyncio psycopg connections.

Imported only when the database is PostgreSQL, so that nothing else (a SQLite server, the CLI) loads psycopg.
It uses psycopg's public interface only: the connection's own waits, and its socket (``pgconn.socket``).

A lookup the caller stops waiting for (cancelled, or overdue at the watchdog's tick) must end at once, on a
server that does not answer too. psycopg, when the task awaiting a statement is cancelled, asks the server
to cancel and waits for its answer (up to 5 s, then 5 s more): on a stopped server the caller would hang
that long. So each connection has a task of its own that runs its statements, which the callers'
cancellation never reaches, and giving up *aborts* the connection: its socket is shut down (not closed: the
descriptor stays ours, so its number cannot be reused under the reader psycopg has registered). The
statement's wait then sees the end of the stream at the loop's next turn and fails like any broken
connection, and the connection is closed, its task ends and its place is freed.

That task lives as long as its connection and takes one statement at a time from a future. A task per
statement, shielded from its caller, did the same with one event-loop turn more per lookup (five instead of
four) and a task and a shield's future created each time.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections import deque
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from smtpsettings.store.database import UNAVAILABLE, StoreUnavailable, reason

__all__ = ("LookupPool",)

_IDLE = TransactionStatus.IDLE


_Job = tuple[str, Any, "asyncio.Future[tuple[Any, ...] | None]"]  # a statement, its parameters, its result


class _Lookup:
    """A pooled connection with its cursor and its task, and the state of the lookup it is running."""

    __slots__ = ("aborted", "conn", "cursor", "deadline", "expired", "next", "poller", "serving", "task")

    def __init__(self, conn: psycopg.AsyncConnection[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.cursor = conn.cursor()
        self.poller = select.poll()
        self.poller.register(conn.pgconn.socket, select.POLLIN)
        self.next: asyncio.Future[_Job | None] = loop.create_future()
        """The connection's task waits on it for its next statement (None: the connection was closed)."""
        self.serving: asyncio.Future[tuple[Any, ...] | None] | None = None
        """The result of the statement submitted and not yet ended (None: idle)."""
        self.task: asyncio.Task[None] | None = None  # kept here: the loop holds its tasks weakly
        self.deadline = 0.0
        """The loop time by which the running lookup must be done (0: none running); the watchdog reads it."""
        self.expired = False
        """Aborted by the watchdog: the lookup fails with TimeoutError."""
        self.aborted = False
        """Aborted (expired, or its caller stopped waiting): closed when its statement ends."""

    def submit(self, sql: str, params: Any, result: asyncio.Future[tuple[Any, ...] | None]) -> None:
        """Hand a statement to the connection's task, which is waiting for one whenever the connection is free."""
        self.serving = result
        self.next.set_result((sql, params, result))

    def abort(self) -> None:
        """End the running statement's wait now: shut the socket down, without a round trip."""
        self.aborted = True
        try:
            fd = self.conn.pgconn.socket
        except psycopg.OperationalError:
            return  # already closed
        try:
            with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as dup:  # shuts the shared socket down
                dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut or broken: the statement's wait fails by itself

    def gone(self) -> bool:
        """Whether the server closed this idle connection (a restart, a terminated backend).

        An idle autocommit connection has nothing to read unless the server said goodbye; one zero-timeout
        poll of the socket, registered with this connection's own poller once, not with the event loop.
        """
        try:
            return bool(self.poller.poll(0))
        except OSError:
            return True

    def close(self) -> None:
        """Close without a round trip, and end the task. Only called when no wait of psycopg's is running."""
        self.conn.pgconn.finish()
        if not self.next.done():
            self.next.set_result(None)


class LookupPool:
    """At most ``size`` autocommit connections of one event loop, each with its cursor, for single statements.

    - A connection serves one lookup at a time and goes back only when its statement left it idle. One
      the server closed while idle is skipped and closed (:meth:`_Lookup.gone`); one that failed is closed,
      and so are the ones idle then (a server that stopped answering would hold each of them up as long);
      one whose lookup was given up on is closed alone.
    - Each connection's statements run in its own task (see the module's docstring), which ends when the
      connection is closed.
    - Waiting for a free connection is first come, first served, bounded by ``timeout``: a connection,
      or the place of a closed one, goes straight to the longest waiter.
    - Each lookup has ``2 × timeout`` in all. A statement's wait is bounded by a watchdog ticking every
      ``timeout / 8``, not a timer per lookup: the statement overdue at a tick is aborted and fails with
      TimeoutError. Waiting for a connection and connecting are rare and keep their ``asyncio.timeout``.
    """

    def __init__(self, conninfo: str, kwargs: dict[str, Any], *, size: int, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._size = size
        self._timeout = timeout
        self._limit = 2 * timeout
        self._tick = timeout / 8
        self._idle: list[_Lookup] = []  # a stack: the connection used last is used next
        self._open: set[_Lookup] = set()
        self._count = 0  # connections open, or being opened, for this pool
        self._waiters: deque[asyncio.Future[_Lookup | None]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    async def fetch_one(self, sql: str, params: Any) -> tuple[Any, ...] | None:
        """The statement's first row; an unreachable or overdue server raises StoreUnavailable."""
        try:
            return await self._fetch_one(sql, params)
        except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as exc:
            raise StoreUnavailable("The database did not answer in time; try again.") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(UNAVAILABLE, reason(str(exc))) from exc

    async def _fetch_one(self, sql: str, params: Any) -> tuple[Any, ...] | None:
        deadline = self.loop.time() + self._limit
        lookup = None
        while self._idle:
            candidate = self._idle.pop()
            if not candidate.gone():
                lookup = candidate
                break
            self._close(candidate)
            self._hand_on(None)
        if lookup is None:
            async with asyncio.timeout_at(deadline):
                lookup = await self._acquire()
        lookup.deadline = deadline
        result = self.loop.create_future()
        lookup.submit(sql, params, result)
        try:
            return await result
        except asyncio.CancelledError:
            if lookup.serving is result:
                lookup.abort()  # the caller has gone: its statement ends at the loop's next turn
            elif not result.cancelled():
                result.exception()  # answered just before: seen here, not reported as never retrieved
            raise

    async def _serve(self, lookup: _Lookup) -> None:
        """The connection's task: its statements one at a time, until the connection is closed."""
        while (job := await lookup.next) is not None:
            sql, params, result = job
            lookup.next = self.loop.create_future()
            try:
                await lookup.cursor.execute(sql, params, prepare=True)
                row = await lookup.cursor.fetchone()
            except Exception as exc:  # noqa: BLE001 - the caller's to see, as if it had run the statement itself
                lookup.deadline = 0.0
                lookup.serving = None
                if lookup.aborted:
                    self._close(lookup)
                    self._hand_on(None)
                    if lookup.expired:
                        timeout = TimeoutError()
                        timeout.__cause__ = exc
                        exc = timeout
                else:
                    self._release(lookup, failed=True)
                if not result.done():
                    result.set_exception(exc)
                continue
            lookup.deadline = 0.0
            lookup.serving = None
            if lookup.aborted:  # answered just as it was given up on: half-read is never reused
                self._close(lookup)
                self._hand_on(None)
            elif lookup.conn.pgconn.transaction_status == _IDLE and not self._waiters and not self._closed:
                self._idle.append(lookup)
            else:
                self._release(lookup, failed=False)
            if not result.done():
                result.set_result(row)

    async def _acquire(self) -> _Lookup:
        if self._closed:
            raise StoreUnavailable("The database handle is closed.")
        if self._count < self._size:
            self._count += 1
            return await self._connect()
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._timeout):
                handed = await waiter
        except TimeoutError as exc:
            self._pass_on(waiter)
            raise StoreUnavailable("No database connection became available in time; try again.") from exc
        except BaseException:
            self._pass_on(waiter)
            raise
        return handed if handed is not None else await self._connect()

    def _pass_on(self, waiter: asyncio.Future[_Lookup | None]) -> None:
        """A waiter gave up: what it was handed meanwhile (a connection or a place) goes to the next one."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self._hand_on(waiter.result())

    async def _connect(self) -> _Lookup:
        """A new connection, in a place already counted in ``_count``; the place is passed on if it fails."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
        except BaseException:
            self._hand_on(None)
            raise
        lookup = _Lookup(conn, self.loop)
        lookup.task = self.loop.create_task(self._serve(lookup))
        self._open.add(lookup)
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self._tick, self._watch)
        return lookup

    def _watch(self) -> None:
        now = self.loop.time()
        for lookup in self._open:
            if 0.0 < lookup.deadline <= now and not lookup.aborted:
                lookup.expired = True
                lookup.abort()
        # Once discarded, it keeps watching the lookups still running, and stops with the last one.
        watching = self._open or not self._closed
        self._watchdog = self.loop.call_at(now + self._tick, self._watch) if watching else None

    def _release(self, lookup: _Lookup, *, failed: bool) -> None:
        if not self._closed and lookup.conn.pgconn.transaction_status == _IDLE:
            self._hand_on(lookup)
            return
        if failed:  # broken, not cancelled: the idle ones are likely dead as well
            for other in self._idle:
                self._close(other)
            self._count -= len(self._idle)
            self._idle.clear()
        self._close(lookup)
        self._hand_on(None)

    def _close(self, lookup: _Lookup) -> None:
        lookup.close()
        self._open.discard(lookup)

    def _hand_on(self, lookup: _Lookup | None) -> None:
        """A healthy connection, or the place of a closed one (None), to the longest waiter, else kept."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(lookup)
                return
        if lookup is None:
            self._count -= 1
        elif self._closed:
            self._close(lookup)
            self._count -= 1
        else:
            self._idle.append(lookup)

    def discard(self) -> None:
        """Close the idle connections now and the busy ones when their lookup ends; fail the waiters."""
        self._closed = True
        for lookup in self._idle:
            self._close(lookup)
        self._count -= len(self._idle)
        self._idle.clear()
        if self._watchdog is not None and not self._open:
            self._watchdog.cancel()
            self._watchdog = None
        waiters, self._waiters = self._waiters, deque()
        if not self.loop.is_closed():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StoreUnavailable("The database handle is closed."))
