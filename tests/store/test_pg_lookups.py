"""PostgreSQL: the request path's lookups on their own small pool (``Database.fetch_one``).

Real clusters throughout: connections are counted in ``pg_stat_activity``, backends killed with
``pg_terminate_backend``, and a server that stops answering is made by stopping its processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from pgcluster import PgCluster
from smtpsettings.store.database import Database, Prepared, StoreUnavailable

# The backend's pid tells which connection served a lookup; pg_sleep holds it as long as asked.
PID = Prepared(
    sa.select(sa.func.pg_backend_pid()).select_from(sa.func.pg_sleep(sa.bindparam("s", type_=sa.Float)))
)
DIVIDE = Prepared(sa.select(sa.literal_column("1") / sa.bindparam("d", type_=sa.Integer)))


@pytest.fixture
def url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database()


Handles = Callable[..., Database]


@pytest.fixture
async def handles() -> AsyncIterator[Handles]:
    """Makes Database handles, disposed of at the end."""
    made: list[Database] = []

    def make(url: str, **options: Any) -> Database:
        made.append(Database(url, **options))
        return made[-1]

    yield make
    for db in made:
        await db.dispose_async()


def backends(url: str) -> set[int]:
    """The pids of the other sessions connected to ``url``'s database."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return {pid for (pid,) in rows}


async def eventually(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def pid(db: Database, hold: float = 0) -> int:
    row = await db.fetch_one(PID, s=hold)
    assert row is not None
    return int(row[0])


async def test_lookups_reuse_one_connection_and_a_failing_statement_keeps_it(
    url: str, handles: Handles
) -> None:
    db = handles(url, pool_size=4)

    pids = {await pid(db) for _ in range(50)}

    assert len(pids) == 1
    assert backends(url) == pids
    # An error of the statement itself is the caller's to see (not a 503); the connection stays usable.
    with pytest.raises(psycopg.errors.DivisionByZero):
        await db.fetch_one(DIVIDE, d=0)
    assert {await pid(db)} == pids
    await db.dispose_async()
    await eventually(lambda: not backends(url))


async def test_more_lookups_than_connections_wait_their_turn(url: str, handles: Handles) -> None:
    db = handles(url, pool_size=2, timeout=5)

    served = await asyncio.gather(*(pid(db, hold=0.1) for _ in range(10)))

    assert len(set(served)) == 2  # never more connections than pool_size, opening included
    assert backends(url) == set(served)


async def test_waiting_longer_than_the_timeout_for_a_connection_gives_store_unavailable(
    url: str, pg_cluster: PgCluster, handles: Handles
) -> None:
    db = handles(url, pool_size=1, timeout=0.5)
    await pid(db)
    with pg_cluster.frozen():
        holder = asyncio.create_task(pid(db))  # holds the one connection; nothing answers it
        await asyncio.sleep(0.05)
        with pytest.raises(StoreUnavailable, match="No database connection became available"):
            await pid(db)
        with pytest.raises(StoreUnavailable, match="did not answer in time"):
            await holder
    # Its connection was closed and its place freed: the next lookup opens a new one.
    assert await pid(db) > 0


async def test_a_server_that_stops_answering_gives_store_unavailable_within_twice_the_timeout(
    url: str, pg_cluster: PgCluster, handles: Handles
) -> None:
    db = handles(url, timeout=0.5)
    before = await pid(db)
    with pg_cluster.frozen():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="did not answer in time"):
            await pid(db)
        elapsed = time.monotonic() - started
    # 2 × 0.5 s plus a watchdog tick; psycopg's own cancellation used to add up to 10 s more.
    assert elapsed < 3, f"the 503 took {elapsed:.1f} s"
    assert await pid(db) != before  # the connection given up on is not reused


async def test_backends_killed_while_idle_are_noticed_before_a_lookup_picks_them(
    url: str, handles: Handles
) -> None:
    db = handles(url, pool_size=3, timeout=2)
    await asyncio.gather(*(pid(db, hold=0.2) for _ in range(3)))  # three connections, idle now
    killed = backends(url)
    assert len(killed) == 3
    with psycopg.connect(url, autocommit=True) as admin:
        for victim in killed:
            admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
    await eventually(lambda: not backends(url) & killed)
    for _ in range(5):  # none of them fails on a dead connection
        assert await pid(db) not in killed


async def test_a_backend_killed_mid_lookup_gives_store_unavailable_and_the_next_lookups_succeed(
    url: str, handles: Handles
) -> None:
    db = handles(url, pool_size=1, timeout=5)
    lookup = asyncio.create_task(pid(db, hold=3))
    await eventually(lambda: len(backends(url)) == 1)
    (victim,) = backends(url)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim,))

    with pytest.raises(StoreUnavailable, match="unavailable"):
        await lookup
    for _ in range(3):
        assert await pid(db) != victim


async def test_a_cancelled_lookup_closes_its_connection_and_frees_its_place(
    url: str, handles: Handles
) -> None:
    db = handles(url, pool_size=1, timeout=5)
    first = await pid(db)
    lookup = asyncio.create_task(pid(db, hold=2))
    await asyncio.sleep(0.2)

    lookup.cancel()  # the client went away mid-statement
    with pytest.raises(asyncio.CancelledError):
        await lookup

    # Not put back half-read: the next lookup gets a new connection, in the one place there is.
    after = await pid(db)
    assert after != first
    await eventually(lambda: backends(url) == {after})


async def test_a_lookup_cancelled_while_the_server_does_not_answer_ends_at_once(
    url: str, pg_cluster: PgCluster, handles: Handles
) -> None:
    # A timeout far beyond the bound below: neither the pool's watchdog nor the statement timeout can be
    # what ends the lookup, only its cancellation.
    db = handles(url, pool_size=1, timeout=60)
    before = await pid(db)
    with pg_cluster.frozen():  # resumed on the way out, whatever happens inside
        lookup = asyncio.create_task(pid(db))
        await asyncio.sleep(0.1)
        lookup.cancel()
        # psycopg's own cancellation asks the server and waits 5 s for an answer that cannot come: the
        # cancelled lookup must end while the server is still stopped, well before that (it takes
        # milliseconds; the margin is for a loaded machine).
        done, _ = await asyncio.wait({lookup}, timeout=4)
        assert done, "the cancelled lookup waited for the stopped server"
        assert lookup.cancelled()
    # Its connection was closed, not reused half-read: the next lookup opens a new one.
    assert await pid(db) != before


def others() -> set[asyncio.Task[Any]]:
    """The event loop's tasks besides the test's own: a pooled connection's, or a lookup left running."""
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_no_task_outlives_its_connection(url: str, handles: Handles) -> None:
    db = handles(url, pool_size=2, timeout=5)
    await asyncio.gather(*(pid(db, hold=0.1) for _ in range(4)))
    assert len(others()) <= len(backends(url)) == 2  # at most one task per connection

    lookup = asyncio.create_task(pid(db, hold=2))
    await asyncio.sleep(0.2)
    lookup.cancel()  # its connection is closed: its task ends with it
    with pytest.raises(asyncio.CancelledError):
        await lookup
    await eventually(lambda: len(others()) <= 1)

    killed = asyncio.create_task(pid(db, hold=3))
    await asyncio.sleep(0.2)
    victims = backends(url)
    with psycopg.connect(url, autocommit=True) as admin:
        for victim in victims:
            admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
    with pytest.raises(StoreUnavailable):
        await killed
    await eventually(lambda: not others())  # broken: closed, with the idle ones, and their tasks ended

    assert await pid(db) > 0
    await db.dispose_async()
    await eventually(lambda: not others())


def test_each_event_loop_gets_its_own_connections_and_the_last_ones_are_closed(url: str) -> None:
    db = Database(url)
    first = asyncio.run(pid(db))
    second = asyncio.run(pid(db))  # a pool belongs to one loop: a new loop, a new connection

    assert first != second
    asyncio.run(eventually(lambda: first not in backends(url)))  # closed when the second replaced it
    asyncio.run(db.dispose_async())
    asyncio.run(eventually(lambda: second not in backends(url)))
