"""SQLite durability: every connection the server opens syncs each commit (synchronous=FULL) unless relaxed.

``PRAGMA synchronous`` is a property of a connection, not of the file, so each way the code opens one is
checked: the engine's pool (migrations), each thread's long-lived connection (reads, write transactions and
the request path's lookups) and the background checkpointer's own connection. SQLite reports FULL as 2 and
NORMAL as 1.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from smtpsettings.wiring import Delivery, Services
from smtpsettings.cli import Context
from smtpsettings.config import load_settings
from smtpsettings.store.database import Database, Prepared

FULL, NORMAL = 2, 1
PRAGMA = "PRAGMA synchronous"
_PRAGMA_LOOKUP = Prepared(sa.text(PRAGMA))


def _level(conn: sa.Connection) -> int:
    return int(conn.exec_driver_sql(PRAGMA).scalar_one())


def _thread_level(db: Database) -> int:
    """The level of the connection a new thread gets (each thread has its own)."""
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(db.read_sync(_level)))
    thread.start()
    thread.join(30)
    return seen[0]


def checkpointer_connection(db: Database) -> sqlite3.Connection:
    """Starts the background checkpoints; the connection of their thread, once opened."""
    db.start_background_checkpoints(interval=0.01)
    checkpointer = db._checkpointer
    assert checkpointer is not None
    deadline = time.monotonic() + 10
    while checkpointer.connection is None:
        assert time.monotonic() < deadline, "the checkpointer did not open its connection"
        time.sleep(0.01)
    return checkpointer.connection


def _checkpointer_level(db: Database) -> int:
    return int(checkpointer_connection(db).execute(PRAGMA).fetchone()[0])


async def _levels(db: Database) -> dict[str, int]:
    db.migrate()
    with db.engine.connect() as pooled:
        engine_level = _level(pooled)
    lookup = await db.fetch_one(_PRAGMA_LOOKUP)
    assert lookup is not None
    levels = {
        "engine": engine_level,
        "read": db.read_sync(_level),
        "write": db.write_sync(_level),
        "lookup": int(lookup[0]),
        "other thread": _thread_level(db),
        "checkpointer": _checkpointer_level(db),
    }
    # Starting the checkpointer reopens the thread's connection (without automatic checkpoints).
    levels["read after checkpointer"] = db.read_sync(_level)
    return levels


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, FULL), ({"sqlite_synchronous": "full"}, FULL), ({"sqlite_synchronous": "normal"}, NORMAL)],
    ids=["default", "full", "normal"],
)
async def test_every_sqlite_connection_uses_the_chosen_level(tmp_path: Path, kwargs: dict[str, str], expected: int) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}", **kwargs)
    try:
        levels = await _levels(db)
    finally:
        await db.dispose_async()
    assert levels == dict.fromkeys(levels, expected)


def test_an_unknown_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        Database(f"sqlite:///{tmp_path / 'db.sqlite'}", sqlite_synchronous="off")


@pytest.mark.parametrize(("env", "expected"), [({}, FULL), ({"SMTPSETTINGS_SQLITE_SYNCHRONOUS": "normal"}, NORMAL)])
async def test_the_server_workers_database_follows_the_setting(tmp_path: Path, env: dict[str, str], expected: int) -> None:
    """The database a server worker builds from its settings (wiring.Services), default and relaxed."""
    tmp_path.joinpath("data").mkdir(mode=0o700)
    services = Services(load_settings({"SMTPSETTINGS_DATA_DIR": str(tmp_path / "data"), **env}))
    try:
        levels = await _levels(services.db)
    finally:
        await services.close()
    assert levels == dict.fromkeys(levels, expected)


@pytest.mark.parametrize("env", [{}, {"SMTPSETTINGS_SQLITE_SYNCHRONOUS": "full"}], ids=["default", "full"])
async def test_the_delivery_process_commits_without_a_sync_while_the_workers_keep_theirs(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Its claims and outcomes are made durable by the next acceptance's sync; acceptances keep FULL."""
    tmp_path.joinpath("data").mkdir(mode=0o700)
    settings = load_settings({"SMTPSETTINGS_DATA_DIR": str(tmp_path / "data"), **env})
    services, delivery = Services(settings), Delivery(settings)
    try:
        workers, delivering = await _levels(services.db), await _levels(delivery.db)
    finally:
        await services.close()
        await delivery.db.dispose_async()
    assert workers == dict.fromkeys(workers, FULL)
    assert delivering == dict.fromkeys(delivering, NORMAL)


@pytest.mark.parametrize(("value", "expected"), [(None, FULL), ("normal", NORMAL)])
def test_the_command_lines_database_follows_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int
) -> None:
    for name in [n for n in os.environ if n.startswith("SMTPSETTINGS_")]:  # CI's own switches among them
        monkeypatch.delenv(name)
    monkeypatch.setenv("SMTPSETTINGS_DATA_DIR", str(tmp_path / "data"))
    if value is not None:
        monkeypatch.setenv("SMTPSETTINGS_SQLITE_SYNCHRONOUS", value)
    db = Context(None).open_db(create=True)  # as `migrate` and `serve` open it
    try:
        assert db.read_sync(_level) == expected
    finally:
        db.dispose()
