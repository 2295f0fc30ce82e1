"""Group commit on a real SQLite file: grouped, isolated per caller, all-or-nothing per batch, durable first."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.store.database import Database, StoreUnavailable

SCHEMA = (
    "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
    "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)",
    # Checked at COMMIT only: a row breaking it makes the group's commit itself fail.
    "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)",
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "group.sqlite"


@pytest.fixture
def db(path: Path) -> Iterator[Database]:
    handle = Database(f"sqlite:///{path}", timeout=5)
    handle.write_sync(lambda c: [c.execute(sa.text(s)) for s in SCHEMA])
    yield handle
    handle.dispose()


def names(path: Path) -> list[str]:
    """What another connection sees committed."""
    with sqlite3.connect(path) as other:
        return sorted(row[0] for row in other.execute("SELECT name FROM item"))


def insert(name: str) -> Any:
    def fn(conn: Connection) -> str:
        conn.execute(sa.text("INSERT INTO item (name) VALUES (:n)"), {"n": name})
        return name

    return fn


class Blocker:
    """A transaction function that holds the writer until released, so that what follows queues behind it."""

    def __init__(self) -> None:
        self.running, self.release = threading.Event(), threading.Event()

    def __call__(self, conn: Connection) -> None:
        self.running.set()
        self.release.wait(5)

    async def started(self, db: Database) -> asyncio.Future[None]:
        future = asyncio.ensure_future(db.write_grouped(self))
        while not self.running.is_set():
            await asyncio.sleep(0.001)
        return future


def batches(db: Database) -> int:
    assert db._committer is not None
    return db._committer.batches


async def test_writes_that_arrive_together_commit_in_one_transaction(db: Database, path: Path) -> None:
    blocker = Blocker()
    head = await blocker.started(db)
    rest = [asyncio.ensure_future(db.write_grouped(insert(f"m{i:03}"))) for i in range(100)]
    await asyncio.sleep(0.01)
    blocker.release.set()
    await head
    assert await asyncio.gather(*rest) == [f"m{i:03}" for i in range(100)]
    assert batches(db) == 2
    assert len(names(path)) == 100


async def test_the_event_loop_runs_while_a_batch_is_written(db: Database) -> None:
    release = threading.Event()

    def slow(conn: Connection) -> str:
        release.wait(5)
        return insert("slow")(conn)

    write = asyncio.ensure_future(db.write_grouped(slow))
    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0.001)
        ticks += 1
    assert not write.done() and ticks == 20
    release.set()
    assert await write == "slow"


async def test_a_failing_function_fails_only_its_caller_and_undoes_only_its_writes(db: Database, path: Path) -> None:
    await db.write_grouped(insert("taken"))
    blocker = Blocker()

    def half_then_conflict(conn: Connection) -> None:
        insert("half")(conn)
        insert("taken")(conn)  # the unique name: IntegrityError after a row of its own was written

    def refuses(conn: Connection) -> None:
        insert("refused")(conn)
        raise ValueError("over the limit")

    head = await blocker.started(db)
    futures = [
        asyncio.ensure_future(db.write_grouped(fn))
        for fn in (insert("a"), half_then_conflict, insert("b"), refuses, insert("c"))
    ]
    await asyncio.sleep(0.01)
    blocker.release.set()
    await head
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == "a" and results[2] == "b" and results[4] == "c"
    assert isinstance(results[1], sa.exc.IntegrityError)
    assert isinstance(results[3], ValueError) and str(results[3]) == "over the limit"
    assert batches(db) == 3
    assert names(path) == ["a", "b", "c", "taken"]


async def test_a_failed_commit_fails_every_caller_of_the_batch_and_writes_nothing(db: Database, path: Path) -> None:
    blocker = Blocker()

    def orphan(conn: Connection) -> None:
        conn.execute(sa.text("INSERT INTO child (parent_id) VALUES (42)"))  # no parent 42: the COMMIT fails

    head = await blocker.started(db)
    futures = [asyncio.ensure_future(db.write_grouped(fn)) for fn in (insert("x"), orphan, insert("y"))]
    await asyncio.sleep(0.01)
    blocker.release.set()
    await head
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert "try again" in str(results[0])
    assert names(path) == []
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM child").fetchone() == (0,)
    # The writer goes on: the next batch commits.
    assert await db.write_grouped(insert("after")) == "after"
    assert names(path) == ["after"]


async def test_a_caller_hears_back_only_once_its_write_is_visible_to_other_connections(db: Database, path: Path) -> None:
    seen: list[list[str]] = []

    def check(future: asyncio.Future[Any]) -> None:
        seen.append(names(path))  # the instant the future resolves, before the caller even runs

    await db.write_grouped(insert("first"))
    committer = db._committer
    assert committer is not None
    # The committer's own futures: their callbacks run the moment the writer resolves them.
    for i in range(20):
        inner = committer.submit(insert(f"e{i:02}"))
        inner.add_done_callback(check)
        name = await inner
        assert name in seen[-1]
    assert len(seen) == 20


async def test_dispose_writes_what_is_queued_first(path: Path) -> None:
    db = Database(f"sqlite:///{path}", timeout=5)
    db.write_sync(lambda c: [c.execute(sa.text(s)) for s in SCHEMA])
    futures = [asyncio.ensure_future(db.write_grouped(insert(f"q{i}"))) for i in range(30)]
    await asyncio.sleep(0)  # submitted
    db.dispose()
    assert len(await asyncio.gather(*futures)) == 30
    assert len(names(path)) == 30


async def test_handles_on_one_file_take_turns_and_lose_nothing(db: Database, path: Path) -> None:
    other = Database(f"sqlite:///{path}", timeout=5)  # as a second worker process would open it
    try:
        writes = [
            asyncio.ensure_future(handle.write_grouped(insert(f"{tag}{i:03}")))
            for i in range(200)
            for tag, handle in (("a", db), ("b", other))
        ]
        assert len(await asyncio.gather(*writes)) == 400
    finally:
        other.dispose()
    assert len(names(path)) == 400
    turn = path.with_name(path.name + "-writer")
    assert turn.exists() and turn.stat().st_mode & 0o777 == 0o600


async def test_a_write_not_started_by_its_deadline_is_withdrawn_and_never_happens(path: Path) -> None:
    import fcntl
    import os

    db = Database(f"sqlite:///{path}", timeout=0.2)
    db.write_sync(lambda c: [c.execute(sa.text(s)) for s in SCHEMA])
    await db.write_grouped(insert("before"))
    # Another process's writer holds the turn: this one cannot begin its batch.
    turn = os.open(str(path) + "-writer", os.O_RDWR)
    fcntl.flock(turn, fcntl.LOCK_EX)
    try:
        with pytest.raises(StoreUnavailable):
            await db.write_grouped(insert("late"))
    finally:
        fcntl.flock(turn, fcntl.LOCK_UN)
        os.close(turn)
    try:
        # The writer gets its turn now: the withdrawn write must not happen behind the caller's back
        # (the caller answered "not saved", and its client will send it again).
        assert await db.write_grouped(insert("after")) == "after"
        assert names(path) == ["after", "before"]
    finally:
        db.dispose()


async def test_a_write_started_before_its_deadline_is_answered_by_its_outcome(path: Path) -> None:
    db = Database(f"sqlite:///{path}", timeout=0.2)
    db.write_sync(lambda c: [c.execute(sa.text(s)) for s in SCHEMA])

    def slow(conn: Connection) -> str:
        threading.Event().wait(1.0)  # past the 0.4 s deadline, but already running
        return insert("slow")(conn)

    try:
        assert await db.write_grouped(slow) == "slow"
        assert names(path) == ["slow"]
    finally:
        db.dispose()
