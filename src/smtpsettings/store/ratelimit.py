"""Fixed-window counters in the database, so every server instance sees the same count."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.store.database import Prepared, insert_for
from smtpsettings.store.tables import rate_counters

__all__ = ("count", "current", "hit", "prune", "reset")

_CURRENT = Prepared(
    sa.select(rate_counters.c.count, rate_counters.c.window_start).where(rate_counters.c.bucket == sa.bindparam("bucket"))
)


def _hit(dialect: str) -> object:
    # The window restarts inside the statement, so concurrent hits from several instances are all counted.
    expired = rate_counters.c.window_start <= sa.bindparam("now", type_=sa.Float) - sa.bindparam("window", type_=sa.Float)
    n = sa.bindparam("n", type_=sa.Integer)
    stmt = insert_for(dialect, rate_counters).values(bucket=sa.bindparam("bucket"), window_start=sa.bindparam("now"), count=n)
    return stmt.on_conflict_do_update(
        index_elements=[rate_counters.c.bucket],
        set_={
            "count": sa.case((expired, n), else_=rate_counters.c.count + n),
            "window_start": sa.case((expired, sa.bindparam("now")), else_=rate_counters.c.window_start),
        },
    ).returning(rate_counters.c.count, rate_counters.c.window_start)


_HIT = Prepared.per_dialect(_hit)


def _current(conn: Connection, bucket: str, window: float, now: float) -> tuple[int, float]:
    row = _CURRENT.row(conn, {"bucket": bucket})
    if row is None:
        return 0, now
    hits, window_start = row
    return (0, now) if now - window_start >= window else (hits, window_start)


def count(conn: Connection, bucket: str, window: float) -> tuple[int, float]:
    """Hits in the current window and the seconds until it ends."""
    now = time.time()
    hits, start = _current(conn, bucket, window, now)
    return hits, start + window - now


def hit(conn: Connection, bucket: str, window: float, n: int = 1) -> tuple[int, float]:
    """Count ``n`` more hits; returns the new count and the seconds until the window ends.

    One atomic upsert, so concurrent hits from several instances are all counted.
    """
    now = time.time()
    row = _HIT.row(conn, {"bucket": bucket, "now": now, "window": window, "n": n})
    assert row is not None  # an upsert with RETURNING always answers one row
    hits, window_start = row
    return hits, window_start + window - now


def current(conn: Connection, prefix: str, window: float) -> list[tuple[str, int, float]]:
    """``(bucket, hits, seconds until its window ends)`` of each counter named ``prefix…`` whose window still runs."""
    now = time.time()
    rows = conn.execute(
        sa.select(rate_counters.c.bucket, rate_counters.c.count, rate_counters.c.window_start)
        .where(rate_counters.c.bucket.startswith(prefix, autoescape=True), rate_counters.c.window_start > now - window)
        .order_by(rate_counters.c.bucket)
    )
    return [(bucket, hits, start + window - now) for bucket, hits, start in rows]


def reset(conn: Connection, *buckets: str) -> None:
    """Drop the named counters (a success forgets failures; an operator lifts lockouts)."""
    conn.execute(rate_counters.delete().where(rate_counters.c.bucket.in_(buckets)))


def prune(conn: Connection, older_than: float) -> None:
    """Drop counters whose window started more than ``older_than`` seconds ago (they count nothing now)."""
    conn.execute(rate_counters.delete().where(rate_counters.c.window_start < time.time() - older_than))
