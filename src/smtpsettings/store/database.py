"""The database handle: engines, transactions, failures, and migrations, for SQLite and PostgreSQL.

Repository functions are plain SQLAlchemy Core functions of a sync ``Connection``; :class:`Database` runs
each in one transaction. How depends on the backend:

- SQLite runs them right on the caller's thread. A one-row query takes microseconds, far less than a hop
  to a thread pool, and writes take SQLite's write lock up front (``BEGIN IMMEDIATE``) so concurrent
  writers queue instead of failing half-way.
  Acceptances and background writes instead go to the process's group-commit thread
  (:meth:`Database.write_grouped`): many callers' functions, one transaction, one sync, none of it on the
  event loop.
- PostgreSQL runs them on a pooled psycopg connection in a worker thread, so the event loop never blocks
  on the network. One hop to the thread per transaction costs less than SQLAlchemy's asyncio layer,
  which pays a greenlet switch and an event-loop round per statement. Acceptances go to the
  group-commit thread here too: one transaction and one commit for all that arrived together.

The request path's lookups are single statements (:meth:`Database.fetch_one`) and skip all of that: on
SQLite they run on the thread's sqlite3 connection, on PostgreSQL as prepared statements on a pool of
asyncio psycopg connections of their own, in autocommit (:mod:`smtpsettings.store.pglookups`, imported
with the first lookup: psycopg is never loaded for SQLite).

Connection failures, timeouts and an exhausted pool all become :class:`StoreUnavailable` (HTTP 503):
the caller gets a clear answer within the configured timeout instead of a hang or a 500.

Every SQLite connection (the engine's, each thread's, the checkpointer's) runs with ``PRAGMA synchronous``
FULL unless the operator relaxes it to NORMAL: in WAL mode NORMAL does not sync the log at commit, so a
save already acknowledged to the client can vanish with a power failure. Each also carries
``PRAGMA journal_size_limit``: SQLite reuses the write-ahead log from its start once everything in it has
been copied, but never shrinks the file by itself, so one burst of writes would leave it at its peak size
for as long as the server runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from smtpsettings.store.groupcommit import BatchFailed, GroupCommitter

if TYPE_CHECKING:
    from smtpsettings.store.pglookups import LookupPool

__all__ = ("WAL_SIZE_LIMIT", "Database", "Prepared", "StoreUnavailable", "insert_for", "utc", "utcnow")

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number works, as long as every instance uses the same one.
_MIGRATION_LOCK_ID = 0x5E77_1265
_REVISION = re.compile(r"^revision(?:: str)? = [\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:: [^=]+)? = [\"']([^\"']+)[\"']", re.MULTILINE)
_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}
# The size the write-ahead log file is cut back to when the log starts over: room for the usual traffic
# between checkpoints, so that starting over does not mean growing the file again at once.
WAL_SIZE_LIMIT = 4 * 1024 * 1024


class StoreUnavailable(Exception):
    """The database cannot be reached, is too slow or too busy; the request may be retried.

    The message is what a client may read. ``reason`` is the driver's or server's own account (password
    authentication failed, database does not exist, connection refused …), for the operator only: it
    names users and hosts, so it goes to the command line and the start-up error, never into a response.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def insert_for(conn: Connection | str, table: sa.Table) -> Any:
    """An INSERT that knows ``ON CONFLICT`` in the connection's (or named) dialect; both of ours have it."""
    name = conn if isinstance(conn, str) else conn.dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)


class Database:
    """The engines plus the transaction discipline every repository call goes through.

    Args:
        url: SQLAlchemy URL: ``sqlite:///PATH`` or ``postgresql://USER:PASSWORD@HOST/DB``.
        timeout: Seconds any one database operation may take, connecting and waiting for a pooled
            connection included, before it fails with :class:`StoreUnavailable`.
        pool_size: PostgreSQL connections per process.
        sqlite_synchronous: SQLite's ``PRAGMA synchronous`` on every connection: ``full`` (each commit
            durable once acknowledged) or ``normal`` (the last commits may be lost on power failure).
    """

    def __init__(self, url: str, *, timeout: float = 5.0, pool_size: int = 10, sqlite_synchronous: str = "full") -> None:
        parsed = sa.make_url(url)
        backend = parsed.get_backend_name()
        if sqlite_synchronous not in _SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {sqlite_synchronous!r}")
        self.timeout = timeout
        self.sqlite_synchronous = _SYNCHRONOUS[sqlite_synchronous]
        self._checkpointer: _Checkpointer | None = None
        self._lookup_pool: LookupPool | None = None
        self._committer: GroupCommitter | None = None
        if backend == "sqlite":
            self.is_sqlite = True
            self.engine: Engine = sa.create_engine(parsed, connect_args={"timeout": timeout})
            self._local = threading.local()
            synchronous = self.sqlite_synchronous
            event.listen(self.engine, "connect", lambda dbapi_conn, _record: _sqlite_on_connect(dbapi_conn, synchronous))
            event.listen(self.engine, "begin", _sqlite_on_begin)
        elif backend in ("postgresql", "postgres"):
            self.is_sqlite = False
            if parsed.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
                raise ValueError(f"use postgresql:// URLs (the psycopg driver is built in), not {parsed.drivername}://")
            parsed = parsed.set(drivername="postgresql+psycopg")
            seconds = max(1, int(timeout))
            connect_args = {
                "connect_timeout": seconds,
                "options": f"-c statement_timeout={int(timeout * 1000)} -c lock_timeout={int(timeout * 1000)}",
                # A server that stops answering mid-statement (no reset, no reply) is given up on after
                # about the timeout plus two probes, rather than after the kernel's two hours.
                "keepalives": 1,
                "keepalives_idle": seconds,
                "keepalives_interval": 1,
                "keepalives_count": 2,
                "tcp_user_timeout": (seconds + 2) * 1000,
            }
            # No overflow: when the pool is exhausted, requests wait pool_timeout and then get a 503,
            # rather than opening connections until PostgreSQL refuses them all. No pre-ping either: it
            # costs a round trip per request, and a connection found dead invalidates the whole pool, so
            # after a database restart one request gets a 503 and the next ones fresh connections.
            self.engine = sa.create_engine(
                parsed, pool_size=pool_size, max_overflow=0, pool_timeout=timeout, connect_args=connect_args
            )
            self._pool_size = pool_size
            self._connect_args = connect_args
        else:
            raise ValueError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://…")
        self.url = parsed

    # -- running repository functions -------------------------------------------------------------

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        return self._run_sync(fn, write=False)

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction: all of it commits, or none of it does."""
        return self._run_sync(fn, write=True)

    def _run_sync(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        with _translate_failures():
            if not self.is_sqlite:
                conn = self.engine.connect()
                with conn, conn.begin():
                    return fn(conn)
            conn = self._thread_connection()
            try:
                return self._sqlite_write(conn, fn) if write else self._sqlite_read(conn, fn)
            except (sa.exc.DBAPIError, sqlite3.Error):
                self._drop_thread_connection()
                raise

    def _sqlite_read(self, conn: Connection, fn: Callable[[Connection], T]) -> T:
        # Reads open no transaction of their own: each SELECT is atomic in SQLite, and the hot ones
        # (Prepared) then cost no BEGIN/COMMIT. A Core statement autobegins (a deferred BEGIN); end it here.
        try:
            return fn(conn)
        finally:
            if conn.in_transaction():
                conn.commit()

    def _sqlite_write(self, conn: Connection, fn: Callable[[Connection], T]) -> T:
        # The transaction is driven on the driver connection: SQLAlchemy's begin/commit bookkeeping costs
        # ten times what SQLite takes to run them. BEGIN IMMEDIATE takes the write lock up front, so
        # concurrent writers queue (up to the timeout) instead of failing half-way. A Core statement in
        # ``fn`` makes SQLAlchemy autobegin too; _sqlite_on_begin then sees the transaction is open.
        raw: sqlite3.Connection = self._local.raw
        raw.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            if conn.in_transaction():
                conn.rollback()
            elif raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        if conn.in_transaction():
            conn.commit()
        else:
            raw.execute("COMMIT")
        return result

    def _thread_connection(self) -> Connection:
        """SQLite: this thread's long-lived connection. Checking one out of the pool costs more than the
        query, and calls on one thread never overlap (the event loop runs them whole)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = self.engine.connect()
            self._local.raw = conn.connection.driver_connection
            if self._checkpointer is not None:
                self._local.raw.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        return conn

    def _drop_thread_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.invalidate()
        self._local.conn = self._local.raw = None

    async def fetch_one(self, statement: Prepared, **params: Any) -> tuple[Any, ...] | None:
        """One row of a single-statement read, as a tuple in the statement's column order, or None.

        The request path's lookups are one SELECT each, atomic by themselves: they need no transaction
        function around them, and on SQLite they go straight to the driver (a few µs instead of the tens
        that SQLAlchemy's result machinery costs for a one-row answer).
        """
        if not self.is_sqlite:
            return await self._fetch_one_pg(statement, params)
        raw: sqlite3.Connection | None = getattr(self._local, "raw", None)
        if raw is None:
            with _translate_failures():
                self._thread_connection()
            raw = self._local.raw
        compiled = statement.compiled(self.engine.dialect)
        try:
            row = raw.execute(compiled.sql, compiled.bind(params)).fetchone()
        except sqlite3.Error:
            self._drop_thread_connection()
            with _translate_failures():
                raise
        return None if row is None else compiled.convert(row)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        if self.is_sqlite:
            return self.read_sync(fn)
        return await self._in_thread(self.read_sync, fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction: all of it commits, or none of it does."""
        if self.is_sqlite:
            return self.write_sync(fn)
        return await self._in_thread(self.write_sync, fn)

    async def write_off_loop(self, fn: Callable[[Connection], T]) -> T:
        """As :meth:`write`, but never on the event loop; on SQLite grouped (:meth:`write_grouped`).

        For background work (the outbox dispatcher): its transactions claim and record messages by the
        hundred and each ends with a sync to disk, which on the event loop would hold up every request
        meanwhile. On a thread only requests that write wait, for SQLite's write lock.
        """
        if self.is_sqlite:
            return await self.write_grouped(fn)
        return await self._in_thread(self.write_sync, fn)

    async def write_grouped(self, fn: Callable[[Connection], T], size: int = 0) -> T:
        """Run ``fn`` in a write transaction shared with the other writes queued meanwhile; return its
        result once that transaction is durable.

        Both backends: on the process's group-commit thread (:mod:`smtpsettings.store.groupcommit`): one
        ``COMMIT`` (on SQLite one sync) for everything that arrived together, none of it on the event
        loop. ``fn`` is still all or nothing: what it raises undoes its own writes only. ``size`` is about
        how many bytes it writes (a message's body), to keep batches bounded.
        """
        if self._committer is None:
            self._committer = GroupCommitter(self, _turn_path(self.url.database) if self.is_sqlite else None)
        committer = self._committer
        future = committer.submit(fn, size)
        # The deadline is a timer rather than asyncio.timeout around asyncio.shield: both cost more than the
        # write's own work on the loop. A caller cancelled meanwhile cancels only its future: the writer
        # still runs the function (as it did behind the shield), and nobody reads the outcome.
        deadline = asyncio.get_running_loop().call_later(self.timeout * 2, _give_up, committer, future)
        try:
            with _translate_failures():
                return await future
        except BatchFailed as exc:
            cause = exc.__cause__
            if isinstance(cause, sa.exc.OperationalError | sqlite3.OperationalError | sa.exc.InterfaceError):
                with _translate_failures():
                    raise cause from None
            raise StoreUnavailable("The database could not save this; try again.", reason(str(exc))) from cause
        finally:
            deadline.cancel()

    def writer_connection(self) -> Connection:
        """The calling thread's SQLite connection, for the group-commit thread."""
        with _translate_failures():
            return self._thread_connection()

    def drop_thread_connection(self) -> None:
        """Forget the calling thread's SQLite connection after a driver error; the next call opens one."""
        self._drop_thread_connection()

    def close_thread_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = self._local.raw = None

    async def _in_thread(self, run: Callable[[Callable[[Connection], T]], T], fn: Callable[[Connection], T]) -> T:
        # The pool, statement, lock and keepalive timeouts bound each wait inside; this bounds the whole,
        # for a server that stops answering without dropping the connection. The caller then gets a 503
        # while the thread finishes (or fails) on its own, as an interrupted client would see it.
        with _translate_failures():
            async with asyncio.timeout(self.timeout * 2):
                return await anyio.to_thread.run_sync(run, fn, abandon_on_cancel=True)

    def start_background_checkpoints(self, interval: float = 1.0) -> None:
        """SQLite: copy the write-ahead log into the database file on a thread of its own.

        By default the commit that fills the log past 1 000 pages runs the checkpoint itself, fsync
        included: a pause of many milliseconds for whichever request commits then, on the event loop,
        so every request queued behind it waits too. A server turns that off for its event-loop
        connection and checkpoints here every ``interval`` seconds instead (PASSIVE: never waits for
        readers or writers). Once a tick finds the log idle (everything copied and nothing written since
        the tick before) and the file above :data:`WAL_SIZE_LIMIT`, it truncates the file to nothing. No-op
        on PostgreSQL; idempotent.
        """
        if not self.is_sqlite or self._checkpointer is not None or not self.url.database:
            return
        self._checkpointer = _Checkpointer(self.url.database, interval, self.timeout, self.sqlite_synchronous)
        self._drop_thread_connection()  # the next one is opened with automatic checkpoints off

    def stop_background_checkpoints(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None

    async def _fetch_one_pg(self, statement: Prepared, params: dict[str, Any]) -> tuple[Any, ...] | None:
        compiled = statement.compiled(self.engine.dialect)
        lookups = self._lookup_pool
        if lookups is None or lookups.loop is not asyncio.get_running_loop():
            lookups = self._lookups()
        with _translate_failures():  # the pool bounds the lookup to twice the timeout
            return await lookups.fetch_one(compiled.sql, compiled.bind(params))

    def _lookups(self) -> LookupPool:
        """The lookup pool of the running event loop (its connections belong to that loop).

        Tests run one loop after another on the same handle: a pool left by a finished loop is closed
        when the next loop's first lookup replaces it.
        """
        from smtpsettings.store.pglookups import LookupPool  # psycopg is loaded for PostgreSQL only

        if self._lookup_pool is not None:
            self._lookup_pool.discard()
        self._lookup_pool = LookupPool(
            self.url.set(drivername="postgresql").render_as_string(hide_password=False),
            {"autocommit": True, **self._connect_args},
            size=self._pool_size,
            timeout=self.timeout,
        )
        return self._lookup_pool

    # -- schema -----------------------------------------------------------------------------------

    def describe(self) -> str:
        """Which database this is, for an operator: kind, host, port, name and user; never the password."""
        if self.is_sqlite:
            return f"SQLite database {self.url.database or ':memory:'}"
        where = f"{self.url.host}:{self.url.port or 5432}" if self.url.host else "the local socket"
        return f"PostgreSQL database {self.url.database!r} on {where} as user {self.url.username!r}"

    def has_schema(self) -> bool:
        """Whether the database exists and holds a schema of ours, without creating anything.

        Raises:
            StoreUnavailable: it cannot be reached; the message names it and the server's reason.
        """
        if self.is_sqlite:
            path = self.url.database
            # Connecting would create the file: look first.
            if not path or not Path(path).is_file():
                return False
        with self._explained(), _translate_failures(), self.engine.connect() as conn:
            return sa.inspect(conn).has_table("alembic_version")

    @contextmanager
    def _explained(self) -> Iterator[None]:
        """A failure to reach the database, reworded for the operator: which database, and why not."""
        try:
            yield
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"cannot use the {self.describe()}: {exc.reason or exc}", exc.reason) from exc

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision``, the newest by default (safe when several instances start at once).

        Raises:
            StoreUnavailable: the database cannot be reached (named, with the server's reason), or it is a
                SQLite file in a directory that does not exist (which is never created here: a misspelt
                path would otherwise become an empty database).
        """
        if self.is_sqlite and self.url.database and not Path(self.url.database).parent.is_dir():
            directory = Path(self.url.database).parent
            raise StoreUnavailable(f"cannot use the {self.describe()}: the directory {directory} does not exist")
        if revision == "head" and self._at_head():
            return  # the usual case for a CLI command: importing Alembic alone costs more than the command

        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._explained(), _translate_failures(), self.engine.connect() as conn:
            if not self.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            try:
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
            finally:
                if not self.is_sqlite:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                    conn.commit()
        if self.is_sqlite and self.url.database:
            # The file holds password hashes and ciphertexts: readable by the service's user only.
            for suffix in ("", "-wal", "-shm"):
                path = Path(self.url.database + suffix)
                if path.exists():
                    path.chmod(0o600)

    def _at_head(self) -> bool:
        """Whether the stored schema revision is the newest one, read cheaply from the migration files.

        A file holding the revision that no other file names as its ``down_revision`` is the head; anything
        unusual (several heads, no table yet, an unreadable database) answers False and Alembic decides.
        """
        revisions: set[str] = set()
        parents: set[str] = set()
        for path in (MIGRATIONS / "versions").glob("*.py"):
            text = path.read_text()
            revisions.update(_REVISION.findall(text))
            parents.update(_DOWN_REVISION.findall(text))
        heads = revisions - parents
        if len(heads) != 1 or (self.is_sqlite and not Path(self.url.database or "").is_file()):
            return False
        try:
            with self.engine.connect() as conn:
                stored = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        except sa.exc.DBAPIError:
            return False
        return stored == list(heads)

    def backup_to(self, destination: Path) -> None:
        """SQLite: a consistent copy of the whole database in the new file ``destination`` (0600), taken online.

        SQLite's backup API copies every page under one read transaction: the copy is the database as of one
        moment, while the servers keep reading and writing (in WAL mode a reader holds no writer up). Copying
        the file instead can catch a write half-done, and leaves the write-ahead log behind.
        """
        if not self.is_sqlite or not self.url.database:
            raise ValueError(f"the {self.describe()} is not a SQLite file: back it up with the server's own tools")
        os.close(os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with _translate_failures():
            source = sqlite3.connect(self.url.database, timeout=self.timeout)
            try:
                target = sqlite3.connect(destination)
                try:
                    source.backup(target)
                finally:
                    target.close()
            finally:
                source.close()

    def dispose(self) -> None:
        if self._committer is not None:
            self._committer.stop()  # what is queued is written first
            self._committer = None
        self.stop_background_checkpoints()
        if self._lookup_pool is not None:
            self._lookup_pool.discard()
            self._lookup_pool = None
        conn = getattr(getattr(self, "_local", None), "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = self._local.raw = None
        self.engine.dispose()

    async def dispose_async(self) -> None:
        self.dispose()  # closing a lookup connection needs no round trip: it only closes the socket


def _give_up(committer: GroupCommitter, future: asyncio.Future[Any]) -> None:
    """A grouped write's deadline: fail it with TimeoutError if the writer has not started it (nothing is
    written then, and "try again" is the truth); once started, its outcome is moments away and only it may
    be answered."""
    if not future.done() and committer.withdraw(future):
        future.set_exception(TimeoutError())


class _Checkpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection, periodically.

    sqlite3 releases the GIL while SQLite works, so the event loop keeps serving during the copy and
    its fsync. A failed checkpoint is logged and retried at the next tick; the log only grows meanwhile.

    While writes keep coming the log cannot start over: each copy ends with new frames already behind it,
    so a burst grows the file (by tens of KiB per outbox message). ``journal_size_limit`` cuts it back
    when a writer finds the log fully copied; when no writer comes, an idle tick truncates it here. That
    TRUNCATE takes the write lock and needs no reader to be using the log, but this connection waits for
    no lock (busy timeout 0): if anyone is busy it gives up at once and the next idle tick tries again,
    so a request never waits behind it for more than the truncation itself.
    """

    def __init__(self, path: str, interval: float, timeout: float, synchronous: str) -> None:
        self._path = path
        self._interval = interval
        self._timeout = timeout
        self._synchronous = synchronous
        self.connection: sqlite3.Connection | None = None
        """The thread's connection once opened (tests read its settings)."""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import structlog

        log = structlog.get_logger("smtpsettings.store")
        conn: sqlite3.Connection | None = None
        last: tuple[int, int, int] | None = None
        while not self._stopped.wait(self._interval):
            try:
                if conn is None:
                    conn = sqlite3.connect(
                        self._path, timeout=0, isolation_level=None, check_same_thread=False
                    )
                    # The checkpoint's own syncs follow this setting as well: keep it the operator's.
                    conn.execute(f"PRAGMA synchronous={self._synchronous}")
                    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                    self.connection = conn
                # (busy, frames in the log, frames copied): the same full count twice running means idle.
                result = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                idle = result == last and result[0] == 0 and result[1] == result[2]
                last = result
                if idle and _size(self._path + "-wal") > WAL_SIZE_LIMIT:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("sqlite_checkpoint_failed", error=str(exc))
                if conn is not None:
                    conn.close()
                conn = self.connection = None
                last = None
        if conn is not None:
            self.connection = None
            conn.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._timeout + self._interval)


@contextmanager
def _translate_failures() -> Iterator[None]:
    """Turn the ways a database can be unavailable into StoreUnavailable; let real errors through."""
    try:
        yield
    except sa.exc.TimeoutError as exc:
        raise StoreUnavailable("The database is overloaded (no free connection); try again.") from exc
    except TimeoutError as exc:
        raise StoreUnavailable("The database did not answer in time; try again.") from exc
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        text = str(exc.orig or exc)
        if "locked" in text or "busy" in text:
            raise StoreUnavailable("The database is busy; try again.") from exc
        if "statement timeout" in text or "lock timeout" in text:
            raise StoreUnavailable("The database did not answer in time; try again.") from exc
        raise StoreUnavailable(UNAVAILABLE, reason(text)) from exc
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise StoreUnavailable("The database is busy; try again.") from exc
        raise StoreUnavailable(UNAVAILABLE, reason(text)) from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(UNAVAILABLE, reason(str(exc.orig or exc))) from exc
        raise
    except ConnectionError as exc:
        raise StoreUnavailable(UNAVAILABLE, reason(str(exc))) from exc
    except Exception as exc:
        translated = _psycopg_failure(exc)
        if translated is None:
            raise
        raise translated from exc


def _psycopg_failure(exc: Exception) -> StoreUnavailable | None:
    """psycopg's own errors (a :class:`Prepared` statement runs on the driver, unwrapped), when they mean
    "unavailable". Looked up only if psycopg is loaded: without it, none of its errors can exist."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return None
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
        return StoreUnavailable("The database did not answer in time; try again.")
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailable(UNAVAILABLE, reason(str(exc)))
    return None


UNAVAILABLE = "The database is unavailable; try again shortly."
# libpq's wrapping around the server's own words: 'connection failed: connection to server at "h", port 1 failed: FATAL:  …'
_LIBPQ_PREFIX = re.compile(r'^(connection failed: )?(connection to server (at|on) .*? failed: )?(FATAL: +)?')


def reason(text: str) -> str:
    """The server's or driver's reason, on one line: 'password authentication failed for user "u"',
    'database "x" does not exist', 'Connection refused', "failed to resolve host …"."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _LIBPQ_PREFIX.sub("", first.strip()).strip()


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, synchronous: str) -> None:
    # Hand transaction control to SQLAlchemy's "begin" event below instead of pysqlite's guesses.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA synchronous={synchronous}")  # one of _SYNCHRONOUS's values, never user text
    cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cursor.close()


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:  # no log yet, or SQLite removed it when the last connection closed
        return 0


def _sqlite_on_begin(conn: Connection) -> None:
    raw = conn.connection.driver_connection
    if not raw.in_transaction:  # type: ignore[union-attr]  # a write transaction may have begun it already
        raw.execute("BEGIN")  # type: ignore[union-attr]


class Prepared:
    """A Core statement compiled once per dialect, for the statements every request runs.

    SQLAlchemy spends far more time building cache keys, coercing values and setting up results for a
    one-row statement than SQLite spends running it. The statement is still written in Core (so it stays
    portable, with ``bindparam`` placeholders); this runs its compiled SQL through the connection's driver,
    applying the column types' conversions both ways. It runs inside whatever transaction ``conn`` is in.
    """

    __slots__ = ("_compiled", "_factory")

    def __init__(self, statement: Any) -> None:
        self._factory: Callable[[str], Any] = lambda _dialect: statement
        self._compiled: dict[str, _Compiled] = {}

    @classmethod
    def per_dialect(cls, factory: Callable[[str], Any]) -> Prepared:
        """For statements written differently per dialect (``ON CONFLICT`` comes from dialect modules)."""
        prepared = cls(None)
        prepared._factory = factory
        return prepared

    def execute(self, conn: Connection, **params: Any) -> int:
        """Run a DML statement; returns the number of rows it touched."""
        compiled = self._compile(conn)
        cursor = conn.connection.driver_connection.execute(compiled.sql, compiled.bind(params))  # type: ignore[union-attr]
        count = cursor.rowcount
        cursor.close()
        return count

    def row(self, conn: Connection, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row as a plain tuple in column order (see :meth:`Database.fetch_one`), or None."""
        compiled = self._compile(conn)
        cursor = conn.connection.driver_connection.execute(compiled.sql, compiled.bind(params))  # type: ignore[union-attr]
        raw = cursor.fetchone()
        cursor.close()
        return None if raw is None else compiled.convert(raw)

    def compiled(self, dialect: sa.engine.Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = _Compiled(self._factory(dialect.name), dialect)
        return compiled

    def _compile(self, conn: Connection) -> _Compiled:
        return self.compiled(conn.dialect)


_SQLITE_DATETIME_FORMAT = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


def _bind_processor(type_: Any, dialect: sa.engine.Dialect) -> Callable[[Any], Any] | None:
    """SQLAlchemy's bind processor for ``type_``; for SQLite datetimes an equivalent one at a third of the cost.

    Every signed-in request binds "now" (a session's expiry is compared with it). SQLAlchemy formats it
    field by field through a dict; ``isoformat`` writes the very same text (its first 26 characters: no
    offset) in C. Anything but a ``datetime`` still goes through SQLAlchemy's.
    """
    processor = type_._cached_bind_processor(dialect)
    impl = type_.dialect_impl(dialect)
    if processor is None or not isinstance(impl, sqlite.DATETIME) or impl._storage_format != _SQLITE_DATETIME_FORMAT:
        return processor

    def sqlite_datetime(value: Any) -> Any:
        if type(value) is datetime:
            return value.isoformat(" ", "microseconds")[:26]
        return processor(value)

    return sqlite_datetime


class _Compiled:
    __slots__ = ("binds", "conversions", "defaults", "order", "positions", "sql")

    def __init__(self, statement: Any, dialect: sa.engine.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positions = tuple(compiled.positiontup or ()) if compiled.positional else None
        self.defaults = {name: value for name, value in compiled.params.items() if value is not None}  # LIMIT 1 …
        binds = {name: _bind_processor(bind.type, dialect) for name, bind in compiled.binds.items()}
        self.binds = {name: p for name, p in binds.items() if p is not None}
        self.order = tuple((name, binds.get(name)) for name in self.positions) if self.positions is not None else None
        # SQLite's driver knows no booleans or datetimes, so SQLAlchemy's result conversions are applied here,
        # to the columns that need one; psycopg converts types itself.
        columns = list(getattr(statement, "selected_columns", ()) or getattr(statement, "_returning", ()) or ())
        processors = [column.type._cached_result_processor(dialect, None) for column in columns] if dialect.name == "sqlite" else []
        self.conversions = tuple((i, p) for i, p in enumerate(processors) if p is not None)

    def bind(self, params: dict[str, Any]) -> Any:
        merged = {**self.defaults, **params} if self.defaults else params
        if self.order is not None:
            return [p(merged[name]) if p else merged[name] for name, p in self.order]
        binds = self.binds
        return {name: (p(value) if (p := binds.get(name)) else value) for name, value in merged.items()}

    def convert(self, raw: Any) -> tuple[Any, ...]:
        if not self.conversions:
            return tuple(raw)
        values = list(raw)
        for i, p in self.conversions:
            values[i] = p(values[i])
        return tuple(values)


def _turn_path(database: str | None) -> str | None:
    """The file beside an SQLite database whose lock its group-commit writers take turns on (none in memory)."""
    return f"{database}-writer" if database and database != ":memory:" else None
