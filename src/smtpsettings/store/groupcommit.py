"""Group commit: the writes that arrive together, in one transaction with one commit, off the event loop.

Each accepted message is a small write whose cost is almost all the ``fsync`` of its commit. Written one
transaction each, on the event loop, every session and every delivery stood still while one message
synced. Here callers hand in their transaction function and await a future; one writer thread per process
takes everything queued meanwhile (up to :data:`MAX_BATCH` functions or :data:`MAX_BATCH_BYTES` of declared
size), runs each in a ``SAVEPOINT`` of one ``BEGIN IMMEDIATE`` transaction, commits once, and only then
resolves the futures. So "accepted" still means "on disk" (with ``synchronous=full``), a function that
raises (a queue limit, a constraint) fails only its own caller, and a failed ``COMMIT`` fails every caller
of that batch with nothing written.

While a batch syncs the next one gathers: the busier the process, the more each sync carries.

On PostgreSQL the same batches run in one transaction on a pooled connection, each function in a
savepoint: one commit (one round trip, one WAL flush) for what would have been one per message.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from smtpsettings.store.database import Database

__all__ = ("MAX_BATCH", "MAX_BATCH_BYTES", "PG_MAX_BATCH", "PG_WRITERS", "BatchFailed", "GroupCommitter", "Withdrawn")

T = TypeVar("T")

MAX_BATCH = 256
"""Transaction functions per commit: bounds how long one batch holds SQLite's write lock."""
PG_MAX_BATCH = 64
"""PostgreSQL: functions per commit. Each runs in a subtransaction; past 64 of them in one transaction
PostgreSQL's snapshots overflow to disk lookups, for every session."""
PG_WRITERS = 4
"""PostgreSQL: writer threads per process, each with a batch (and a pooled connection) of its own."""
MAX_BATCH_BYTES = 16 * 1024 * 1024
"""Declared bytes per commit (message bodies): a batch of large messages commits sooner."""


class BatchFailed(Exception):
    """The group transaction could not be committed: nothing of it was written (the cause is chained)."""


class Withdrawn(Exception):
    """The caller withdrew the function before the writer started it: it never ran."""


class _Job:
    __slots__ = ("fn", "future", "loop", "size")

    def __init__(self, fn: Callable[[Connection], Any], size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.size = size
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


class GroupCommitter:
    """One writer thread that commits the queued transaction functions of a process in batches.

    Args:
        db: The database. On SQLite the writer uses its own thread connection, with the same pragmas; on
            PostgreSQL a pooled connection per batch.
        turn_path: SQLite: a file beside the database whose ``flock`` the writers of all processes take
            turns on.
    """

    def __init__(self, db: Database, turn_path: str | None = None) -> None:
        self._db = db
        self._turn_path = turn_path
        self._turn_fd: int | None = None
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        # SQLite has one writer at a time anyway. On PostgreSQL a batch waits for the network at each
        # statement: several overlap, each gathering what queued while it was busy.
        self.writers = 1 if db.is_sqlite else PG_WRITERS
        """Writer threads, each committing a batch at a time."""
        self.max_batch = MAX_BATCH if db.is_sqlite else PG_MAX_BATCH
        """Transaction functions per commit at most."""
        self._claims = threading.Lock()
        self._waiting: dict[asyncio.Future[Any], _Job] = {}
        """Submitted and not yet started: what :meth:`withdraw` may still take back (under ``_claims``)."""
        self._counting = threading.Lock()
        self.batches = 0
        """Commits so far (for tests and benches): fewer than the functions run when they grouped."""

    def submit(self, fn: Callable[[Connection], T], size: int = 0) -> asyncio.Future[T]:
        """Queue ``fn`` for the next group transaction (``size``: the bytes it writes, roughly).

        The future resolves with ``fn``'s result once that transaction is committed, or with what ``fn``
        raised (only ``fn``'s own writes were undone), or with the error that failed the commit (nothing
        of the batch was written). It must be awaited on the running loop that submitted it.
        """
        self._start()
        job = _Job(fn, size, asyncio.get_running_loop())
        with self._claims:
            self._waiting[job.future] = job
        self._queue.put(job)
        return job.future

    def withdraw(self, future: asyncio.Future[Any]) -> bool:
        """Take back a submitted function the writer has not started; False once it has (then its outcome
        decides, and is near: only its batch's own statements and commit are left).

        A caller that gives up waiting must know whether its write can still happen: answering "not
        saved" for a write that commits later would have the client send the same message again.
        """
        with self._claims:
            return self._waiting.pop(future, None) is not None

    def _claim(self, job: _Job) -> bool:
        """The writer's side of :meth:`withdraw`: whether ``job`` is still wanted (and now started)."""
        with self._claims:
            return self._waiting.pop(job.future, None) is not None

    def stop(self) -> None:
        """Let the writers finish what is queued, then end them; idempotent."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()

    def _start(self) -> None:
        if not self._threads:
            with self._lock:
                if not self._threads:
                    for _ in range(self.writers):
                        thread = threading.Thread(target=self._run, name="smtpsettings-group-commit", daemon=True)
                        thread.start()
                        self._threads.append(thread)

    # -- the writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        carried: _Job | None = None  # taken from the queue but over the batch's size: the next batch's first
        while True:
            first, carried = carried or self._queue.get(), None
            if first is None:
                break
            with self._turn():  # what queues while another process writes joins this batch
                batch, stopping, carried = self._gather(first)
                self._commit(batch)
            if stopping:
                break
        if self._db.is_sqlite:
            self._db.close_thread_connection()
        if self._turn_fd is not None:
            os.close(self._turn_fd)
            self._turn_fd = None

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn to write, among all processes on the database (workers, the CLI's …).

        SQLite's own lock makes a writer that finds it taken sleep and poll, for 1 to 100 ms a time: two
        workers committing in turn then spent most of their time asleep. A ``flock`` on a file beside the
        database wakes the waiting writer the moment the other is done.
        """
        if self._turn_fd is None and self._turn_path is not None:
            try:
                self._turn_fd = os.open(self._turn_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                self._turn_path = None  # a read-only directory: SQLite's own lock alone then
        if self._turn_fd is None:
            yield
            return
        fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

    def _count(self) -> None:
        with self._counting:  # several writers on PostgreSQL
            self.batches += 1

    def _gather(self, first: _Job) -> tuple[list[_Job], bool, _Job | None]:
        """``first`` and whatever else is queued, within the batch's bounds; whether to stop after; and the
        job taken that did not fit (the next batch's first)."""
        batch, size = [first], first.size
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True, None
            if size + job.size > MAX_BATCH_BYTES:
                return batch, False, job
            batch.append(job)
            size += job.size
        return batch, False, None

    def _commit(self, batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        transaction = _sqlite_transaction if self._db.is_sqlite else _pg_transaction
        try:
            with transaction(self._db) as run:
                for job in batch:
                    outcomes.append(run(job.fn) if self._claim(job) else (False, Withdrawn()))
        except BaseException as exc:  # noqa: BLE001 - every caller hears of it; nothing was written
            self._count()
            failed = BatchFailed(str(exc))
            failed.__cause__ = exc
            _settle([(job, False, failed) for job in batch])
            return
        self._count()
        _settle([(job, ok, value) for job, (ok, value) in zip(batch, outcomes, strict=True)])


_Run = Callable[[Callable[["Connection"], Any]], tuple[bool, Any]]
"""Runs one caller's function in the group transaction: ``(True, result)`` or ``(False, what it raised)``."""


@contextmanager
def _sqlite_transaction(db: Database) -> Iterator[_Run]:
    """One ``BEGIN IMMEDIATE`` transaction on the writer thread's connection, committed on the way out.

    Driven on the driver connection, as :meth:`Database.write_sync` does: SQLAlchemy's bookkeeping costs
    more than SQLite's own statements. A driver error drops the connection: the next batch opens a new one.
    """
    try:
        conn = db.writer_connection()
        raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        raw.execute("BEGIN IMMEDIATE")
        try:
            yield lambda fn: _in_savepoint(raw, conn, fn)
            if conn.in_transaction():
                conn.commit()  # SQLAlchemy began its own view of the transaction: end it there
            else:
                raw.execute("COMMIT")
        except BaseException:
            _roll_back(conn, raw)
            raise
    except (sa.exc.DBAPIError, sqlite3.Error):
        db.drop_thread_connection()
        raise


@contextmanager
def _pg_transaction(db: Database) -> Iterator[_Run]:
    """One transaction on a pooled connection, each function after a savepoint of its own.

    The savepoints are set on the driver and never released: each costs one round trip (releasing would
    be a second, and SQLAlchemy's nested transactions add their bookkeeping), and a failed function is
    rolled back to the newest one, its own. No lock to take turns on: PostgreSQL's writers run side by side.
    """
    with db.engine.connect() as conn, conn.begin():
        driver = conn.connection.driver_connection

        def run(fn: Callable[[Connection], Any]) -> tuple[bool, Any]:
            driver.execute("SAVEPOINT group_commit")  # type: ignore[union-attr]
            try:
                return True, fn(conn)
            except Exception as exc:  # noqa: BLE001 - handed to this function's caller
                # A failure here (the connection, not the function) fails the batch.
                driver.execute("ROLLBACK TO SAVEPOINT group_commit")  # type: ignore[union-attr]
                return False, exc

        yield run


def _in_savepoint(raw: sqlite3.Connection, conn: Connection, fn: Callable[[Connection], Any]) -> tuple[bool, Any]:
    """Run ``fn`` so that its failure undoes only its own writes: ``(True, result)`` or ``(False, error)``.

    A failure to roll back to the savepoint (the disk, not the function) is raised: the batch is then lost.
    """
    raw.execute("SAVEPOINT group_commit")
    try:
        result = fn(conn)
    except Exception as exc:  # noqa: BLE001 - handed to this function's caller
        raw.execute("ROLLBACK TO group_commit")
        raw.execute("RELEASE group_commit")
        return False, exc
    raw.execute("RELEASE group_commit")
    return True, result


def _roll_back(conn: Connection, raw: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction():
            conn.rollback()
        elif raw.in_transaction:
            raw.execute("ROLLBACK")
    except (sa.exc.DBAPIError, sqlite3.Error):
        pass  # the connection is dropped by the caller; SQLite rolls back what a closed one left


def _settle(outcomes: list[tuple[_Job, bool, Any]]) -> None:
    """Hand a batch's outcomes to their callers: one wake-up of each caller's loop for the whole batch.

    Waking a loop (``call_soon_threadsafe``: a write to its self-pipe, and the read on the other side) costs
    more than resolving the futures; a batch mostly has one loop. A future already done was given up by
    its caller (cancelled, or timed out): nobody reads its outcome.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, settled)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting
            pass


def _resolve(settled: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in settled:
        future = job.future
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
            # Read at once: a caller that stopped waiting (a timeout) leaves it unread, which is no error.
            future.exception()
