"""Fixed-window counters in the database, so every server instance sees the same count."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.store.database import insert_for
from smtpsettings.store.tables import rate_counters

__all__ = ("count", "hit", "prune", "reset")


def _current(conn: Connection, bucket: str, window: float, now: float) -> tuple[int, float]:
    row = conn.execute(
        sa.select(rate_counters.c.count, rate_counters.c.window_start).where(rate_counters.c.bucket == bucket)
    ).first()
    if row is None or now - row.window_start >= window:
        return 0, now
    return row.count, row.window_start


def count(conn: Connection, bucket: str, window: float) -> tuple[int, float]:
    """Hits in the current window and the seconds until it ends."""
    now = time.time()
    hits, start = _current(conn, bucket, window, now)
    return hits, start + window - now


def hit(conn: Connection, bucket: str, window: float) -> tuple[int, float]:
    """Count one more hit; returns the new count and the seconds until the window ends.

    One atomic upsert, so concurrent hits from several instances are all counted.
    """
    now = time.time()
    expired = rate_counters.c.window_start <= now - window
    stmt = insert_for(conn, rate_counters).values(bucket=bucket, window_start=now, count=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[rate_counters.c.bucket],
        set_={
            "count": sa.case((expired, 1), else_=rate_counters.c.count + 1),
            "window_start": sa.case((expired, now), else_=rate_counters.c.window_start),
        },
    ).returning(rate_counters.c.count, rate_counters.c.window_start)
    row = conn.execute(stmt).one()
    return row.count, row.window_start + window - now


def reset(conn: Connection, bucket: str) -> None:
    conn.execute(rate_counters.delete().where(rate_counters.c.bucket == bucket))


def prune(conn: Connection, older_than: float) -> None:
    """Drop counters whose window started more than ``older_than`` seconds ago (they count nothing now)."""
    conn.execute(rate_counters.delete().where(rate_counters.c.window_start < time.time() - older_than))
