"""The dispatchers at work on one database and their heartbeats (instances sharing PostgreSQL).

Each dispatcher counts its heartbeats in a row of its own. Another one that sees the count stand still for
long enough takes the row away and with it the dispatcher's claims (see ``outbox.expire_leases``), instead of
waiting for their leases to run out. Only counts are compared, each peer against its own earlier reading, so
the instances' clocks never meet.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.store.database import insert_for
from smtpsettings.store.tables import outbox_dispatchers as d

__all__ = ("beat", "leave", "remove_silent")


def beat(conn: Connection, owner: str) -> dict[str, int]:
    """Count one heartbeat of ``owner`` (its row made anew if a peer took it away); every other's count."""
    stmt = insert_for(conn, d).values(owner=owner, beats=1)
    conn.execute(stmt.on_conflict_do_update(index_elements=[d.c.owner], set_={"beats": d.c.beats + 1}))
    return {peer: int(beats) for peer, beats in conn.execute(sa.select(d.c.owner, d.c.beats)) if peer != owner}


def remove_silent(conn: Connection, silent: Mapping[str, int]) -> list[str]:
    """Remove the peers in ``silent`` whose count is still the one given; those removed.

    The guard keeps a peer that beat again meanwhile (it was only slow), and makes two survivors agree: the
    second finds the row gone and takes over nothing.
    """
    removed = []
    for owner, beats in silent.items():
        if conn.execute(d.delete().where(d.c.owner == owner, d.c.beats == beats)).rowcount == 1:
            removed.append(owner)
    return removed


def leave(conn: Connection, owner: str) -> None:
    """A dispatcher stopping normally: no peer is to wait for its heartbeat."""
    conn.execute(d.delete().where(d.c.owner == owner))
