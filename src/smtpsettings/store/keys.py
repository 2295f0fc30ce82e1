"""Which encryption keys the database's secrets depend on: their ids only, never the keys."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.store.database import insert_for, utcnow
from smtpsettings.store.tables import encryption_keys

__all__ = ("claim", "record", "recorded")

# Any fixed number works, as long as every instance uses the same one (the migrations use another).
_CLAIM_LOCK_ID = 0x5E77_4B45


def recorded(conn: Connection) -> list[str]:
    """Every key id recorded, oldest first."""
    rows = conn.execute(sa.select(encryption_keys.c.key_id).order_by(encryption_keys.c.recorded_at, encryption_keys.c.key_id))
    return [row[0] for row in rows]


def record(conn: Connection, key_ids: Iterable[str]) -> None:
    """Record that secrets are (or are about to be) encrypted under these keys; known ones are left alone."""
    rows = [{"key_id": key_id, "recorded_at": utcnow()} for key_id in key_ids]
    if rows:
        conn.execute(insert_for(conn, encryption_keys).values(rows).on_conflict_do_nothing(index_elements=["key_id"]))


def claim(conn: Connection, ring: Iterable[str], primary: str) -> list[str]:
    """The recorded key ids missing from ``ring``; when none is, ``primary`` is recorded.

    An instance calls this at start, before it encrypts anything. Checking and recording in one transaction,
    one instance at a time, means that of two instances starting at once with rings of their own, the second
    finds the first one's key and refuses, rather than both starting and each writing secrets the other
    cannot read. A refused instance records nothing, so it never makes the ones already running unstartable.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CLAIM_LOCK_ID})
    # (SQLite: the caller's write transaction already holds the database's one write lock.)
    held = set(ring)
    missing = [key_id for key_id in recorded(conn) if key_id not in held]
    if not missing:
        record(conn, [primary])
    return missing
