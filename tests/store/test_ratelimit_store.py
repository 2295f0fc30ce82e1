"""Unit tests of the fixed-window rate counters, on a real (migrated) SQLite file."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from smtpsettings.store import ratelimit
from smtpsettings.store.database import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def hit(db: Database, bucket: str = "b", window: float = 60) -> tuple[int, float]:
    return db.write_sync(lambda c: ratelimit.hit(c, bucket, window))


def count(db: Database, bucket: str = "b", window: float = 60) -> tuple[int, float]:
    return db.read_sync(lambda c: ratelimit.count(c, bucket, window))


def test_an_unknown_bucket_counts_zero_with_a_whole_window_left(db: Database) -> None:
    hits, remaining = count(db, "never-hit", 60)
    assert hits == 0
    assert 59 < remaining <= 60


def test_each_hit_increases_the_count(db: Database) -> None:
    assert [hit(db)[0] for _ in range(5)] == [1, 2, 3, 4, 5]


def test_count_reflects_the_hits_without_adding_one(db: Database) -> None:
    for _ in range(3):
        hit(db)
    assert count(db)[0] == 3
    assert count(db)[0] == 3


def test_a_hit_reports_the_seconds_left_in_its_window(db: Database) -> None:
    _, first_left = hit(db, window=60)
    time.sleep(0.02)
    _, second_left = hit(db, window=60)
    assert 0 < second_left < first_left <= 60
    assert 0 < count(db, window=60)[1] <= second_left


def test_buckets_are_counted_separately(db: Database) -> None:
    hit(db, "login:alice")
    hit(db, "login:alice")
    hit(db, "login:bob")
    assert count(db, "login:alice")[0] == 2
    assert count(db, "login:bob")[0] == 1
    assert count(db, "login:carol")[0] == 0


def test_reset_clears_a_bucket_and_only_that_bucket(db: Database) -> None:
    hit(db, "a")
    hit(db, "a")
    hit(db, "other")
    db.write_sync(lambda c: ratelimit.reset(c, "a"))
    assert count(db, "a")[0] == 0
    assert count(db, "other")[0] == 1
    assert hit(db, "a")[0] == 1


def test_resetting_an_unknown_bucket_is_harmless(db: Database) -> None:
    db.write_sync(lambda c: ratelimit.reset(c, "nothing-here"))
    assert count(db, "nothing-here")[0] == 0


def test_a_window_in_the_past_restarts_the_count(db: Database) -> None:
    assert hit(db, window=0.05)[0] == 1
    assert hit(db, window=0.05)[0] == 2
    time.sleep(0.1)
    assert count(db, window=0.05)[0] == 0
    hits, left = hit(db, window=0.05)
    assert hits == 1
    assert 0 < left <= 0.05


def test_the_count_is_shared_by_every_handle_on_the_same_database(database_url: str, db: Database) -> None:
    hit(db)
    other = Database(database_url)
    try:
        assert other.write_sync(lambda c: ratelimit.hit(c, "b", 60))[0] == 2
    finally:
        other.dispose()
    assert count(db)[0] == 2


def test_a_hit_rolled_back_with_its_transaction_is_not_counted(db: Database) -> None:
    class Abort(Exception):
        pass

    def hit_then_fail(conn: object) -> None:
        ratelimit.hit(conn, "b", 60)  # type: ignore[arg-type]
        raise Abort

    hit(db)
    with pytest.raises(Abort):
        db.write_sync(hit_then_fail)
    assert count(db)[0] == 1


def test_current_lists_the_running_counters_of_a_prefix_only(db: Database) -> None:
    for name in ("smtp:address:192.0.2.1", "smtp:address:192.0.2.1", "smtp:key:key_1", "smtp_address_x", "login:x"):
        hit(db, name, 60)
    rows = db.read_sync(lambda c: ratelimit.current(c, "smtp:address:", 60))
    assert [(name, hits) for name, hits, _ in rows] == [("smtp:address:192.0.2.1", 2)]
    assert 59 < rows[0][2] <= 60
    # "_" is a LIKE wildcard: the prefix is matched as written, not as a pattern.
    assert [r[0] for r in db.read_sync(lambda c: ratelimit.current(c, "smtp_", 60))] == ["smtp_address_x"]


def test_current_leaves_out_counters_whose_window_has_ended(db: Database) -> None:
    hit(db, "smtp:key:old", 0.2)
    time.sleep(0.3)
    assert db.read_sync(lambda c: ratelimit.current(c, "smtp:key:", 0.2)) == []


def test_reset_drops_the_named_counters_only(db: Database) -> None:
    for name in ("a", "b", "c"):
        hit(db, name)
    db.write_sync(lambda c: ratelimit.reset(c, "a", "c", "never-hit"))
    assert [count(db, name)[0] for name in ("a", "b", "c")] == [0, 1, 0]
