"""Fixed-window counters in the database, so every server instance sees the same count."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.store.tables import rate_counters

__all__ = ("count", "hit", "reset")


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
    """Count one more hit; returns the new count and the seconds until the window ends."""
    now = time.time()
    hits, start = _current(conn, bucket, window, now)
    values = {"count": hits + 1, "window_start": start}
    if conn.execute(rate_counters.update().where(rate_counters.c.bucket == bucket).values(**values)).rowcount == 0:
        conn.execute(rate_counters.insert().values(bucket=bucket, **values))
    return hits + 1, start + window - now


def reset(conn: Connection, bucket: str) -> None:
    conn.execute(rate_counters.delete().where(rate_counters.c.bucket == bucket))
