"""Admission to the outbox: each portal's unsent mail held to the queue limits without a count per message.

Counting a portal's unsent mail reads its whole backlog from an index: at 10,000 unsent messages that
measured 1 to 5 ms on SQLite, inside the write transaction that holds the write lock, and over 10 ms on
PostgreSQL. So a worker keeps the count it last read for each portal and adds each message as it writes it
(in the acceptance transaction: the next message of the same group commit is checked with it in); it counts
again, in the acceptance transaction, when that count is older than a second, or older than 50 ms and the
message would bring the portal within a tenth of a limit. Mail sent meanwhile only makes the kept count too
high, and a refusal is never based on a count older than a second. What other workers or instances accepted
since the count is what a limit can be passed by: near a limit, 50 ms of their acceptances, besides (on
PostgreSQL) this worker's own still in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from sqlalchemy.engine import Connection

from smtpsettings.domain.queue import Backlog, QueueLimits
from smtpsettings.store import outbox
from smtpsettings.store.database import Database

__all__ = ("Admission",)

REFRESH_SECONDS = 1.0
NEAR_REFRESH_SECONDS = 0.05
_NEAR = 0.9
"""Past this share of a limit the count is read again after NEAR_REFRESH_SECONDS, so that workers sharing a
portal stop close to the limit, while one portal at its limit costs a count per 50 ms, not per message."""


class _Counted(NamedTuple):
    backlog: Backlog
    at: float


class Admission:
    """One worker's admission to the outbox, with the count it keeps per portal."""

    def __init__(self, db: Database, limits: QueueLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._limits = limits
        self._clock = clock
        self._counted: dict[int, _Counted] = {}

    def check(self, conn: Connection, portal_id: int, size: int) -> None:
        """In the acceptance transaction: refuse a message of ``size`` bytes that does not fit.

        Raises:
            QueueFull: the portal's unsent mail is at a queue limit, or this message would pass one.
        """
        counted = self._counted.get(portal_id)
        if counted is not None and (age := self._clock() - counted.at) < REFRESH_SECONDS:
            self._limits.admit(counted.backlog, size)  # refused on a count under a second old
            if age < NEAR_REFRESH_SECONDS or not self._near(counted.backlog, size):
                return
        self._limits.admit(self._count(portal_id, outbox.backlog(conn, portal_id)), size)

    async def check_room(self, portal_id: int, size: int) -> None:
        """Before a message arrives (SMTP MAIL): refuse when one of ``size`` bytes would not fit now.

        Raises:
            QueueFull: as :meth:`check`.
        """
        counted = self._counted.get(portal_id)
        if counted is not None and self._clock() - counted.at < REFRESH_SECONDS:
            backlog = counted.backlog
        else:
            backlog = self._count(portal_id, await self._db.read(lambda c: outbox.backlog(c, portal_id)))
        self._limits.admit(backlog, size)

    def accepted(self, portal_id: int, size: int) -> None:
        """In the acceptance transaction, once the message is written: it is part of the portal's backlog.

        Runs on the group-commit thread while the event loop may read or forget the same portal's count:
        a lost update only makes one count inexact until it is read again, within a second.
        """
        counted = self._counted.get(portal_id)
        if counted is not None:
            backlog = Backlog(messages=counted.backlog.messages + 1, bytes=counted.backlog.bytes + size)
            self._counted[portal_id] = _Counted(backlog, counted.at)

    def forget(self, portal_id: int) -> None:
        """The portal's backlog changed in a way not counted here (a cancel, a retry): count it next time."""
        self._counted.pop(portal_id, None)

    def _count(self, portal_id: int, backlog: Backlog) -> Backlog:
        self._counted[portal_id] = _Counted(backlog, self._clock())
        return backlog

    def _near(self, backlog: Backlog, size: int) -> bool:
        limits = self._limits
        return backlog.messages + 1 > limits.messages * _NEAR or backlog.bytes + size > limits.bytes * _NEAR
