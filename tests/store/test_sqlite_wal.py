"""SQLite's write-ahead log is bounded: a burst may grow it, but the file is cut back once the burst is over.

The burst is written while another connection holds a read transaction open, as a long reader (an online
backup, say) would: no frame written meanwhile can be copied into the database, so the log grows by every
commit, deterministically, the way a long burst of outbox traffic grows it in a running server.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
from test_request_lookups import SETTINGS
from test_sqlite_synchronous import checkpointer_connection

from smtpsettings.store import accounts, smtp
from smtpsettings.store.database import WAL_SIZE_LIMIT, Database

MiB = 1024 * 1024


def wal_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "wal.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{db_path}")
    database.migrate()
    yield database
    database.dispose()


@contextmanager
def long_reader(path: Path) -> Iterator[None]:
    """A read transaction on a connection of its own, open for the duration."""
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM portals").fetchall()
        yield
        reader.execute("COMMIT")
    finally:
        reader.close()


@pytest.fixture
def portal_id(db: Database) -> int:
    return db.write_sync(lambda c: accounts.create_portal(c, "a.example.com", is_default=False).id)


def burst(db: Database, portal_id: int, saves: int = 120) -> str:
    """``saves`` commits of about 200 KiB each (sender names that big) through the service's Database;
    the last name saved. Each name is new throughout: SQLite writes only the pages of a value that changed."""
    for _ in range(saves):
        name = secrets.token_hex(100_000)
        settings = msgspec.structs.replace(SETTINGS, sender_display_name=name)
        db.write_sync(lambda c: smtp.put_settings(c, portal_id, settings, None))  # noqa: B023 (run at once)
    return name


def wait_for_wal_at_most(path: Path, limit: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while (size := wal_size(path)) > limit and time.monotonic() < deadline:
        time.sleep(0.02)
    return size


def stored_name(db: Database, portal_id: int) -> str:
    found = db.read_sync(lambda c: smtp.get_settings(c, portal_id))
    assert found is not None
    return found.settings.sender_display_name


def test_an_idle_log_is_truncated_after_a_burst_by_the_background_checkpoints(
    db: Database, db_path: Path, portal_id: int
) -> None:
    db.start_background_checkpoints(interval=0.05)
    with long_reader(db_path):
        last = burst(db, portal_id)
        grown = wal_size(db_path)
    assert grown > 16 * MiB, grown  # the burst really grew the log
    # No write follows: only the checkpointer can shrink the file now.
    size = wait_for_wal_at_most(db_path, 0, seconds=20)
    assert size == 0, f"the log is still {size} bytes after 20 s idle (it was {grown})"
    assert stored_name(db, portal_id) == last  # truncated after being copied, not lost
    db.stop_background_checkpoints()
    assert not any(t.name == "sqlite-checkpoint" for t in threading.enumerate())


def test_the_next_write_after_a_complete_checkpoint_cuts_the_log_back_to_the_limit(
    db: Database, db_path: Path, portal_id: int
) -> None:
    """The writers' own journal_size_limit, without the checkpointer's truncation (steady traffic)."""
    with long_reader(db_path):
        last = burst(db, portal_id)
    grown = wal_size(db_path)
    assert grown > 16 * MiB, grown
    copier = sqlite3.connect(db_path, isolation_level=None)
    try:
        busy, frames, copied = copier.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        copier.close()
    assert (busy, copied) == (0, frames)  # all copied; a PASSIVE checkpoint leaves the file as it is
    assert wal_size(db_path) == grown

    db.write_sync(lambda c: smtp.put_settings(c, portal_id, SETTINGS, None))  # the log starts over here

    assert wal_size(db_path) <= WAL_SIZE_LIMIT < 16 * MiB
    assert stored_name(db, portal_id) == SETTINGS.sender_display_name != last


def test_every_connection_carries_the_limit(db: Database) -> None:
    def limit(conn):  # type: ignore[no-untyped-def]
        return conn.exec_driver_sql("PRAGMA journal_size_limit").scalar_one()

    with db.engine.connect() as pooled:
        assert limit(pooled) == WAL_SIZE_LIMIT
    assert db.read_sync(limit) == WAL_SIZE_LIMIT
    checkpointer = checkpointer_connection(db)
    assert checkpointer.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT
    assert db.write_sync(limit) == WAL_SIZE_LIMIT  # the thread's connection, reopened for the checkpointer
