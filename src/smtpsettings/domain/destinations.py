"""The dead-destination rule: when a portal's mail server stops answering, stop trying it message by message.

A destination is one portal's mail server (portal, host, port): a tenant's settings can only ever mark its
own destination unavailable, never another portal's use of the same server. After a cohort of consecutive
connection-level failures (refused, reset, timed out, TLS, 421, AUTH or token refused), it is unavailable
for a back-off that doubles with every failed probe, up to a cap; meanwhile its mail is deferred without an
attempt. When the back-off ends, one attempt (the probe) is let through at a time; its outcome decides.
Any answer from the server beyond the connection (sent, or a refused recipient) makes it available again.

State only, no I/O: the dispatcher keeps one :class:`Destinations` in memory and writes what it decides to
the messages. A restart forgets it, which costs one more cohort of attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from smtpsettings.mail.errors import (
    AuthenticationError,
    ConnectError,
    MailError,
    MailTimeout,
    OAuth2TokenError,
    TLSError,
)

__all__ = ("Destination", "Destinations", "is_connection_failure")

Destination = tuple[int, str, int]
"""``(portal_id, host, port)``."""

_SERVICE_CLOSING = 421
_CONNECTION_FAILURES = (ConnectError, TLSError, AuthenticationError, OAuth2TokenError, MailTimeout)


def is_connection_failure(error: MailError, *, while_sending: bool) -> bool:
    """Whether ``error`` says the destination is unusable, not that one message was refused.

    Everything that fails before a message's first command counts (``while_sending`` False), and a 421
    whenever it comes: the server is closing the channel. A refused sender, recipient or message, a
    timeout in the middle of a large message, or our own policy (a denied network) does not.
    """
    if error.code == _SERVICE_CLOSING:
        return True
    return not while_sending and (isinstance(error, _CONNECTION_FAILURES) or type(error) is MailError)


@dataclass
class _State:
    failures: int = 0  # consecutive connection-level failures
    backoff: timedelta = timedelta(0)  # zero while available
    until: datetime | None = None  # unavailable until then; while probing, the probe's own deadline
    probing: bool = False
    last_error: str = ""
    seen: datetime | None = None  # the last failure, for forgetting destinations no longer used


class Destinations:
    """Each destination's run of failures and back-off, for one dispatcher.

    ``cohort``: consecutive connection-level failures that make a destination unavailable (the dispatcher
    passes its connections per portal: one cohort of attempts in parallel). ``first`` and ``longest``
    bound the back-off, which doubles after each failed probe.
    """

    def __init__(self, *, cohort: int, first: timedelta, longest: timedelta) -> None:
        if cohort < 1 or first <= timedelta(0) or longest < first:
            raise ValueError("cohort must be at least 1 and 0 < first <= longest")
        self._cohort = cohort
        self._first = first
        self._longest = longest
        self._states: dict[Destination, _State] = {}

    def admit(self, destination: Destination, now: datetime) -> datetime | None:
        """None when an attempt may go ahead now (available, or this is the probe); else until when to defer.

        A probe whose outcome never came (its task was cancelled) gives way to the next one after its
        own deadline, so a destination is never stuck.
        """
        state = self._states.get(destination)
        if state is None or state.until is None:
            return None
        if now < state.until:
            return state.until
        state.probing = True
        # While the probe runs, the others wait as long as a failed probe would make them.
        state.until = now + self._next_backoff(state)
        return None

    def failed(self, destination: Destination, now: datetime, error: MailError) -> datetime | None:
        """A connection-level failure; when it makes the destination unavailable (again), until when.

        Failures of attempts that started before the destination went down say nothing new: None.
        """
        state = self._states.setdefault(destination, _State())
        state.seen = now
        state.last_error = error.message
        if state.probing:
            state.probing = False
            state.failures += 1
            state.backoff = self._next_backoff(state)
        elif state.until is not None:
            return None
        else:
            state.failures += 1
            if state.failures < self._cohort:
                return None
            state.backoff = self._first
        state.until = now + state.backoff
        return state.until

    def reachable(self, destination: Destination) -> datetime | None:
        """The server answered beyond the connection: available again.

        Returns the end of the back-off when it had been unavailable (what was deferred waits until then
        at the latest), else None.
        """
        state = self._states.pop(destination, None)
        return None if state is None else state.until

    def reason(self, destination: Destination, until: datetime) -> str:
        """The ``lastError`` of the messages deferred because ``destination`` is unavailable."""
        state = self._states.get(destination) or _State()
        _, host, port = destination
        last = f" The last error: {state.last_error}" if state.last_error else ""
        return (
            f"The mail server {host}:{port} is unavailable: {state.failures} connection attempts in a row"
            f" failed, so its messages wait without an attempt until {until:%Y-%m-%d %H:%M:%S} UTC, when one"
            f" message tests it again.{last}"
        )

    def unavailable(self, now: datetime) -> int:
        """How many destinations are in back-off (the gauge); forgets those long out of use."""
        stale = now - 2 * self._longest
        for destination in [d for d, s in self._states.items() if s.seen is not None and s.seen < stale]:
            del self._states[destination]
        return sum(1 for s in self._states.values() if s.until is not None)

    def _next_backoff(self, state: _State) -> timedelta:
        return min(state.backoff * 2, self._longest)
