"""The database handle: one engine, transactions, and migrations.

Repository functions are plain SQLAlchemy Core functions of a ``Connection``. :class:`Database` runs them
in a transaction. On SQLite it runs them right on the caller's thread: a one-row query takes microseconds,
far less than a hop to a thread pool, and writes take SQLite's write lock up front (``BEGIN IMMEDIATE``)
so that concurrent writers queue instead of failing half-way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

__all__ = ("Database", "StoreUnavailable", "utc", "utcnow")

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"


class StoreUnavailable(Exception):
    """The database cannot be reached or is too busy; the request may be retried."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Database:
    """An engine plus the transaction discipline every repository call goes through."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if not self.is_sqlite:
            raise ValueError(f"unsupported database {self.url.get_backend_name()!r}; use sqlite:///PATH")
        if self.url.database:
            Path(self.url.database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.engine: Engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})
        event.listen(self.engine, "connect", _sqlite_on_connect)
        event.listen(self.engine, "begin", _sqlite_on_begin)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self.engine.connect() as conn:
                with conn.begin():
                    return fn(conn)
        except sa.exc.OperationalError as exc:
            raise StoreUnavailable(_describe(exc)) from exc

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction: all of it commits, or none of it does."""
        try:
            with self.engine.connect().execution_options(sqlite_immediate=True) as conn:
                with conn.begin():
                    return fn(conn)
        except sa.exc.OperationalError as exc:
            raise StoreUnavailable(_describe(exc)) from exc

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return self.read_sync(fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return self.write_sync(fn)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
        if self.is_sqlite and self.url.database:
            # The file holds password hashes and ciphertexts: readable by the service's user only.
            for suffix in ("", "-wal", "-shm"):
                path = Path(self.url.database + suffix)
                if path.exists():
                    path.chmod(0o600)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Hand transaction control to SQLAlchemy's "begin" event below instead of pysqlite's guesses.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_immediate") else "BEGIN")


def _describe(exc: sa.exc.OperationalError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    if "locked" in text or "busy" in text:
        return "The database is busy; try again."
    return "The database is unavailable."
