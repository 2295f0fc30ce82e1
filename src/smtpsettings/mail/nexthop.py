"""How many connections one next hop (host and port) may have open, shared by every key that uses it.

A thousand portals whose settings name the same smarthost (or smtp.office365.com) are a thousand keys of
the pool but one server, and that server counts connections, not portals: Postfix's smtpd answers 421 beyond
its client limit (50 by default). So the pool asks a :class:`NextHop` for a slot before opening a connection
and gives it back when the connection is closed.

The limit is a window that starts low and learns, as Postfix's scheduler does: each connection that opens
raises it by 1/window (a window's worth of successes raises it by one), each connection refused, reset,
timed out or answered 4xx before the session began lowers it by one, between 1 and the configured maximum.
Lowering by one per refusal brings an overshoot of *k* connections back in about *k* refusals, without
collapsing to 1 on a burst of them.

Waiting requests are served round robin by key: a key with many waiting messages gets one slot in turn with
every other waiting key, never all the slots while another waits. When the key whose turn it is has a
connection going idle, that connection is handed over instead of a slot: the same turn, without closing
one connection and opening another.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING

from smtpsettings.mail.client import STEP_CONNECT
from smtpsettings.mail.errors import ConnectError, MailError, MailTimeout

if TYPE_CHECKING:
    from smtpsettings.mail.connection import SmtpConnection

__all__ = ["INITIAL_WINDOW", "NextHop", "is_congestion"]

Turn = asyncio.Future["SmtpConnection | None"]
"""A waiter's place: resolved with ``None`` (a slot of its own) or a connection of its key handed over."""

INITIAL_WINDOW = 5
"""Connections a next hop starts with before any feedback (Postfix's initial destination concurrency)."""

_FLOOR = 1.0


def is_congestion(error: MailError) -> bool:
    """Whether a failed ``open()`` says the server had no room for another connection.

    A refused, reset or timed-out connection and a 4xx greeting (``421 Too many connections``) count; a 5xx
    greeting, TLS, AUTH and our own policy's refusals say nothing about how many connections the server takes.
    """
    if not isinstance(error, ConnectError | MailTimeout) or error.step != STEP_CONNECT:
        return False
    return error.code is None or 400 <= error.code < 500


class NextHop:
    """Connection slots of one next hop: a learned window, and the keys waiting for a slot.

    ``open`` counts every connection that holds a slot: opening, in use, idle or saying QUIT (the server
    still counts it until it is gone). Not thread-safe: one event loop.
    """

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError("a next hop's maximum must be at least 1")
        self.maximum = maximum
        self.window = float(min(INITIAL_WINDOW, maximum))
        self.open = 0
        self.last_opened: float | None = None
        """When a connection last opened here (loop time): proof that the server is up."""
        self.closing = 0
        """Slots held by connections saying QUIT: already promised to waiters."""
        # Insertion order is the round robin: the key served goes to the end if it still waits.
        self._waiting: dict[Hashable, deque[Turn]] = {}
        self.waiting = 0
        """Places in the queues (a waiter cancelled a moment ago may still hold one)."""

    @property
    def limit(self) -> int:
        return int(self.window)

    @property
    def idle(self) -> bool:
        """Nothing open and nobody waiting: what it learned may be forgotten."""
        return self.open == 0 and not self._waiting

    def shortfall(self) -> int:
        """Slots the waiters need beyond those the window and the closing connections will give them."""
        return self.open - self.closing + self.waiting - self.limit

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody is ahead."""
        if self._waiting or self.open >= self.limit:
            return False
        self.open += 1
        return True

    def queue(self, key: Hashable) -> Turn:
        """A place in ``key``'s queue; await it, and :meth:`leave` it if the wait ends otherwise."""
        turn: Turn = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(turn)
        self.waiting += 1
        return turn

    def leave(self, key: Hashable, turn: Turn) -> SmtpConnection | None:
        """Give up a place; a connection already handed over to it is returned, to be given back by the caller."""
        if not turn.done() or turn.cancelled():
            self._forget(key, turn)
            return None
        handed = turn.result()
        if handed is None:
            self.give_back()  # a slot came just as the waiter gave up
        return handed

    def next_key(self) -> Hashable | None:
        """The key whose turn is next, if any waits."""
        return next(iter(self._waiting), None)

    def hand_over(self, key: Hashable, connection: SmtpConnection) -> bool:
        """Give ``connection`` (with the slot it holds) to ``key``'s next waiter if it is ``key``'s turn."""
        while self.next_key() == key:
            turn = self._pop_turn(key)
            if not turn.done():  # not a waiter cancelled a moment ago
                turn.set_result(connection)
                return True
        return False

    def give_back(self) -> None:
        """A connection holding a slot is gone."""
        self.open -= 1
        self._serve()

    def opened(self) -> None:
        """Positive feedback: a connection opened, the server had room for it."""
        self.last_opened = asyncio.get_running_loop().time()
        self.window = min(float(self.maximum), self.window + 1 / self.window)
        self._serve()

    def refused(self) -> None:
        """Negative feedback: the server refused a connection (see :func:`is_congestion`)."""
        self.window = max(_FLOOR, self.window - 1)

    def _serve(self) -> None:
        while self._waiting and self.open < self.limit:
            turn = self._pop_turn(next(iter(self._waiting)))
            if not turn.done():
                self.open += 1
                turn.set_result(None)

    def _pop_turn(self, key: Hashable) -> Turn:
        queue = self._waiting.pop(key)
        turn = queue.popleft()
        self.waiting -= 1
        if queue:
            self._waiting[key] = queue  # to the back of the round
        return turn

    def _forget(self, key: Hashable, turn: Turn) -> None:
        queue = self._waiting.get(key)
        if queue is None or turn not in queue:
            return  # already passed over by _serve
        queue.remove(turn)
        self.waiting -= 1
        if not queue:
            del self._waiting[key]
