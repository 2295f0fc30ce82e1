"""Open SMTP connections kept for reuse: at most a few per key, and a learned number per next hop.

Opening a session costs DNS, TCP, often TLS and AUTH (and with XOAUTH2 a token): several round trips
per message if every message opened its own. The pool keeps a key's connections open between messages,
bounds how many a key may have at once (mail servers limit connections per client, and one portal must
not take all of a worker's sockets), and closes connections that sat idle, that have carried
``max_messages`` (some servers cap messages per session) or that are no longer usable.

The key is the caller's: the outbox passes ``(portal_id, fingerprint_of_settings)``, so saving new
settings opens new connections while the old ones finish their messages and then expire.

Keys that name the same host and port share that next hop's connections (:mod:`smtpsettings.mail.nexthop`):
the server counts connections, not portals. A key that has no idle connection asks the next hop for a slot;
when the next hop is at its limit, idle connections of other keys there are closed to make room (those of
keys nobody is using first, the longest idle first), and the waiting keys get the freed slots in turn. A
connection cannot serve another key: it is authenticated with its portal's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field

from smtpsettings.mail.connection import SmtpConnection
from smtpsettings.mail.errors import MailError
from smtpsettings.mail.nexthop import NextHop, is_congestion
from smtpsettings.mail.oauth2 import TokenCache
from smtpsettings.mail.policy import MailPolicy
from smtpsettings.mail.target import SmtpTarget

__all__ = ["ConnectionPool"]

_REFUSED_WAITS = 3  # times one request waits again after a full server's refusal before the refusal is its own

_HopName = tuple[str, int]


@dataclass
class _Hop:
    """One next hop's share of the pool: its slots, and its idle connections oldest first (to close for room)."""

    name: _HopName
    slots: NextHop
    idle: dict[SmtpConnection, _Idle] = field(default_factory=dict)
    entries: int = 0  # keys using it: the hop (and what its window learned) goes with the last one
    room_pending: bool = False
    forget: asyncio.TimerHandle | None = None  # set while unused: what the window learned outlives a brief lull


@dataclass
class _Idle:
    key: Hashable
    entry: _Entry
    connection: SmtpConnection
    expiry: asyncio.TimerHandle


@dataclass
class _Entry:
    """One key's share of the pool."""

    slots: asyncio.Semaphore
    hop: _Hop
    idle: list[_Idle] = field(default_factory=list)
    users: int = 0  # tasks holding or waiting for a slot: the entry goes when none are left and none idle


class ConnectionPool:
    """SMTP connections by key: at most ``per_key`` at once per key, at most a learned window (up to
    ``per_host``) at once per host and port, idle ones reused, then closed.

    For one event loop (a worker's): the limits hold for this pool, not across processes or instances.
    ``close()`` ends it; connections still in use are closed when their holders give them back.
    """

    def __init__(
        self,
        policy: MailPolicy,
        tokens: TokenCache,
        *,
        per_key: int = 2,
        per_host: int = 20,
        idle_seconds: float = 30.0,
        max_messages: int = 1000,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        """``on_open`` is called for each connection opened (not for one reused): the caller's count of them."""
        if per_key < 1 or per_host < 1 or max_messages < 1 or idle_seconds <= 0:
            raise ValueError("per_key, per_host and max_messages must be at least 1, idle_seconds above 0")
        self._policy = policy
        self._tokens = tokens
        self._per_key = per_key
        self._per_host = per_host
        self._idle_seconds = idle_seconds
        self._max_messages = max_messages
        self._on_open = on_open
        self._entries: dict[Hashable, _Entry] = {}
        self._hops: dict[_HopName, _Hop] = {}
        self._quitting: set[asyncio.Task[None]] = set()
        self._closed = False

    def window(self, host: str, port: int) -> float | None:
        """The connections the next hop ``host``:``port`` may have open now; ``None`` if the pool has none there."""
        hop = self._hops.get((host.lower(), port))
        return None if hop is None else hop.slots.window

    def contended(self, target: SmtpTarget) -> bool:
        """Whether requests wait for a slot at ``target``'s next hop: a connection held there holds them up."""
        hop = self._hops.get((target.host.lower(), target.port))
        return hop is not None and hop.slots.waiting > 0

    def reusable(self, connection: SmtpConnection) -> bool:
        """Whether ``connection`` may carry another message before it is given back (it would be kept idle)."""
        return not self._closed and connection.usable and connection.messages_sent < self._max_messages

    @contextlib.asynccontextmanager
    async def connection(self, key: Hashable, target: SmtpTarget) -> AsyncIterator[SmtpConnection]:
        """An open connection for ``key``, exclusively the caller's until the block ends.

        Waits while ``key`` already has ``per_key`` connections in use, then, unless ``key`` has an idle
        connection, for a slot at ``target``'s host and port. An idle connection of ``key`` is reused
        (``target`` is then not looked at: equal keys must mean equal targets); otherwise one is opened to
        ``target``. Afterwards it goes back to the idle list if still usable and under ``max_messages``,
        else it is closed.

        Raises:
            MailError: opening failed (the slots are freed).
            RuntimeError: the pool is closed.
        """
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._new_entry(target)
        entry.users += 1
        try:
            async with entry.slots:
                connection = self._take_idle(entry)
                if connection is None:
                    connection = await self._open(key, entry, target)
                try:
                    yield connection
                finally:
                    self._give_back(key, entry, connection)
        finally:
            entry.users -= 1
            self._forget_if_unused(key, entry)

    def _new_entry(self, target: SmtpTarget) -> _Entry:
        name = (target.host.lower(), target.port)
        hop = self._hops.get(name)
        if hop is None:
            hop = self._hops[name] = _Hop(name, NextHop(self._per_host))
        hop.entries += 1
        if hop.forget is not None:
            hop.forget.cancel()
            hop.forget = None
        return _Entry(asyncio.Semaphore(self._per_key), hop)

    async def _open(self, key: Hashable, entry: _Entry, target: SmtpTarget) -> SmtpConnection:
        """Take a slot at the next hop, then open a connection in it, telling the next hop how that went.

        A refusal while this pool has other connections open there, from a server that let a connection in
        a moment ago, means the server is up but full: the window is lowered and the request waits for a
        slot again (a few times), rather than failing a message for what the window should have prevented.
        Otherwise the refusal is the caller's: a server that never answers, or refuses everyone, must fail
        its attempts so that the caller can stop trying it, not keep them going round here.
        """
        slots = entry.hop.slots
        loop = asyncio.get_running_loop()
        waits_left = _REFUSED_WAITS
        while True:
            if not slots.try_take():
                handed = await self._wait_turn(key, entry)
                if handed is not None:
                    if handed.usable:
                        return handed
                    handed.close()  # its slot is ours: a fresh connection takes it
            try:
                connection = SmtpConnection(target, self._policy, tokens=self._tokens)
                await connection.open()
            except MailError as exc:
                congested = is_congestion(exc)
                if congested:
                    slots.refused()
                slots.give_back()
                recently_up = slots.last_opened is not None and loop.time() - slots.last_opened < self._idle_seconds
                if congested and slots.open > 0 and recently_up and waits_left > 0:
                    waits_left -= 1
                    continue
                raise
            except BaseException:
                slots.give_back()
                raise
            slots.opened()
            if self._on_open is not None:
                self._on_open()
            return connection

    async def _wait_turn(self, key: Hashable, entry: _Entry) -> SmtpConnection | None:
        """Queue for a slot at ``entry``'s next hop; a connection of ``key`` may be handed over instead."""
        slots = entry.hop.slots
        self._make_room_soon(entry.hop)
        turn = slots.queue(key)
        try:
            return await turn
        except BaseException:
            handed = slots.leave(key, turn)
            if handed is not None:
                self._give_back(key, entry, handed)
            raise

    def _take_idle(self, entry: _Entry) -> SmtpConnection | None:
        # Most recently used first: the others then reach their idle time and close, so a key keeps only
        # as many connections as its traffic needs.
        while entry.idle:
            idle = entry.idle.pop()
            idle.expiry.cancel()
            del entry.hop.idle[idle.connection]
            if idle.connection.usable:
                return idle.connection
            idle.connection.close()  # the server hung up while it waited
            entry.hop.slots.give_back()
        return None

    def _give_back(self, key: Hashable, entry: _Entry, connection: SmtpConnection) -> None:
        hop = entry.hop
        if not connection.usable:
            connection.close()
            hop.slots.give_back()
        elif not self.reusable(connection):
            self._quit_later(hop, connection)
        elif not hop.slots.hand_over(key, connection):  # when the next turn is this key's, its waiter takes it
            loop = asyncio.get_running_loop()
            expiry = loop.call_later(self._idle_seconds, self._expire, key, entry, connection)
            idle = _Idle(key, entry, connection, expiry)
            entry.idle.append(idle)
            hop.idle[connection] = idle
            if hop.slots.waiting:
                self._make_room_soon(hop)

    def _expire(self, key: Hashable, entry: _Entry, connection: SmtpConnection) -> None:
        idle = entry.hop.idle.get(connection)
        if idle is not None:
            self._drop_idle(idle)
        self._forget_if_unused(key, entry)

    def _drop_idle(self, idle: _Idle) -> None:
        idle.expiry.cancel()
        idle.entry.idle.remove(idle)
        del idle.entry.hop.idle[idle.connection]
        self._quit_later(idle.entry.hop, idle.connection)

    def _make_room_soon(self, hop: _Hop) -> None:
        # Not at once: a key that just gave back its connection usually takes it again for its next message
        # before the loop turns, and closing it under that key would cost a reconnection for nothing.
        if not hop.room_pending:
            hop.room_pending = True
            asyncio.get_running_loop().call_soon(self._make_room, hop)

    def _make_room(self, hop: _Hop) -> None:
        """Close idle connections at ``hop`` for the keys waiting there, while the window is too small."""
        hop.room_pending = False
        while hop.slots.shortfall() > 0 and hop.idle:
            unused = (idle for idle in hop.idle.values() if idle.entry.users == 0)
            victim = next(unused, None) or next(iter(hop.idle.values()))
            self._drop_idle(victim)
            self._forget_if_unused(victim.key, victim.entry)

    def _forget_if_unused(self, key: Hashable, entry: _Entry) -> None:
        # Keys change with every settings save: an entry must not outlive its connections.
        if entry.users == 0 and not entry.idle and self._entries.get(key) is entry:
            del self._entries[key]
            entry.hop.entries -= 1
            self._forget_hop_if_unused(entry.hop)

    def _forget_hop_if_unused(self, hop: _Hop) -> None:
        """Forget an unused next hop after ``idle_seconds``: a refusal is remembered by the next attempt."""
        if hop.entries == 0 and hop.slots.idle and hop.forget is None and self._hops.get(hop.name) is hop:
            if self._closed:
                del self._hops[hop.name]
            else:
                hop.forget = asyncio.get_running_loop().call_later(self._idle_seconds, self._forget_hop, hop)

    def _forget_hop(self, hop: _Hop) -> None:
        hop.forget = None
        if hop.entries == 0 and hop.slots.idle and self._hops.get(hop.name) is hop:
            del self._hops[hop.name]

    def _quit_later(self, hop: _Hop, connection: SmtpConnection) -> None:
        """QUIT without making the giver wait for the server's goodbye; the slot is free once it is gone."""
        hop.slots.closing += 1
        task = asyncio.get_running_loop().create_task(connection.quit())
        self._quitting.add(task)

        def gone(task: asyncio.Task[None]) -> None:
            self._quitting.discard(task)
            hop.slots.closing -= 1
            hop.slots.give_back()
            self._forget_hop_if_unused(hop)

        task.add_done_callback(gone)

    async def close(self) -> None:
        """QUIT every idle connection and refuse new requests; connections in use close when given back."""
        self._closed = True
        for hop in list(self._hops.values()):
            if hop.forget is not None:
                hop.forget.cancel()
                hop.forget = None
                self._forget_hop_if_unused(hop)
        for key, entry in list(self._entries.items()):
            while entry.idle:
                self._drop_idle(entry.idle[-1])
            self._forget_if_unused(key, entry)
        while self._quitting:
            await asyncio.gather(*self._quitting, return_exceptions=True)
