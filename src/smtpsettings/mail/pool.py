"""Open SMTP connections kept for reuse, at most a few per key.

Opening a session costs DNS, TCP, often TLS and AUTH (and with XOAUTH2 a token): several round trips
per message if every message opened its own. The pool keeps a key's connections open between messages,
bounds how many a key may have at once (mail servers limit connections per client, and one portal must
not take all of a worker's sockets), and closes connections that sat idle, that have carried
``max_messages`` (some servers cap messages per session) or that are no longer usable.

The key is the caller's: the outbox passes ``(portal_id, fingerprint_of_settings)``, so saving new
settings opens new connections while the old ones finish their messages and then expire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field

from smtpsettings.mail.connection import SmtpConnection
from smtpsettings.mail.oauth2 import TokenCache
from smtpsettings.mail.policy import MailPolicy
from smtpsettings.mail.target import SmtpTarget

__all__ = ["ConnectionPool"]


@dataclass
class _Idle:
    connection: SmtpConnection
    expiry: asyncio.TimerHandle


@dataclass
class _Entry:
    """One key's share of the pool."""

    slots: asyncio.Semaphore
    idle: list[_Idle] = field(default_factory=list)
    users: int = 0  # tasks holding or waiting for a slot: the entry goes when none are left and none idle


class ConnectionPool:
    """SMTP connections by key: at most ``per_key`` at once, idle ones reused, then closed.

    For one event loop (a worker's). ``close()`` ends it; connections still in use are closed when
    their holders give them back.
    """

    def __init__(
        self,
        policy: MailPolicy,
        tokens: TokenCache,
        *,
        per_key: int = 2,
        idle_seconds: float = 30.0,
        max_messages: int = 1000,
    ) -> None:
        if per_key < 1 or max_messages < 1 or idle_seconds <= 0:
            raise ValueError("per_key and max_messages must be at least 1, idle_seconds above 0")
        self._policy = policy
        self._tokens = tokens
        self._per_key = per_key
        self._idle_seconds = idle_seconds
        self._max_messages = max_messages
        self._entries: dict[Hashable, _Entry] = {}
        self._quitting: set[asyncio.Task[None]] = set()
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self, key: Hashable, target: SmtpTarget) -> AsyncIterator[SmtpConnection]:
        """An open connection for ``key``, exclusively the caller's until the block ends.

        Waits while ``key`` already has ``per_key`` connections in use. An idle connection of ``key`` is
        reused (``target`` is then not looked at: equal keys must mean equal targets); otherwise one is
        opened to ``target``. Afterwards it goes back to the idle list if still usable and under
        ``max_messages``, else it is closed.

        Raises:
            MailError: opening failed (the slot is freed).
            RuntimeError: the pool is closed.
        """
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(asyncio.Semaphore(self._per_key))
        entry.users += 1
        try:
            async with entry.slots:
                connection = self._take_idle(entry)
                if connection is None:
                    connection = SmtpConnection(target, self._policy, tokens=self._tokens)
                    await connection.open()
                try:
                    yield connection
                finally:
                    self._give_back(key, entry, connection)
        finally:
            entry.users -= 1
            self._forget_if_unused(key, entry)

    def _take_idle(self, entry: _Entry) -> SmtpConnection | None:
        # Most recently used first: the others then reach their idle time and close, so a key keeps only
        # as many connections as its traffic needs.
        while entry.idle:
            idle = entry.idle.pop()
            idle.expiry.cancel()
            if idle.connection.usable:
                return idle.connection
            idle.connection.close()  # the server hung up while it waited
        return None

    def _give_back(self, key: Hashable, entry: _Entry, connection: SmtpConnection) -> None:
        if not connection.usable:
            connection.close()
        elif self._closed or connection.messages_sent >= self._max_messages:
            self._quit_later(connection)
        else:
            loop = asyncio.get_running_loop()
            expiry = loop.call_later(self._idle_seconds, self._expire, key, entry, connection)
            entry.idle.append(_Idle(connection, expiry))

    def _expire(self, key: Hashable, entry: _Entry, connection: SmtpConnection) -> None:
        for index, idle in enumerate(entry.idle):
            if idle.connection is connection:
                del entry.idle[index]
                self._quit_later(connection)
                break
        self._forget_if_unused(key, entry)

    def _forget_if_unused(self, key: Hashable, entry: _Entry) -> None:
        # Keys change with every settings save: an entry must not outlive its connections.
        if entry.users == 0 and not entry.idle and self._entries.get(key) is entry:
            del self._entries[key]

    def _quit_later(self, connection: SmtpConnection) -> None:
        """QUIT without making the giver wait for the server's goodbye."""
        task = asyncio.get_running_loop().create_task(connection.quit())
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    async def close(self) -> None:
        """QUIT every idle connection and refuse new requests; connections in use close when given back."""
        self._closed = True
        for entry in list(self._entries.values()):
            while entry.idle:
                idle = entry.idle.pop()
                idle.expiry.cancel()
                self._quit_later(idle.connection)
        self._entries = {key: entry for key, entry in self._entries.items() if entry.users}
        while self._quitting:
            await asyncio.gather(*self._quitting, return_exceptions=True)
