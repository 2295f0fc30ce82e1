"""How much unsent mail one portal may have waiting: the admission rule checked at every acceptance.

Unsent means queued, deferred or sending. A portal at its limit is refused new mail (HTTP 429, SMTP 452)
until the dispatcher has sent some; what it already has is never touched. The limits are per portal, so
one portal's backlog cannot grow without bound, and it takes no other portal's room.
"""

from __future__ import annotations

import msgspec

from smtpsettings.domain.errors import QueueFull

__all__ = ("RETRY_AFTER_SECONDS", "Backlog", "QueueLimits")

RETRY_AFTER_SECONDS = 60
"""What a refused client is told to wait: about what a minute of sending at the default rate frees."""


class Backlog(msgspec.Struct, frozen=True):
    """A portal's unsent mail: how many messages, and their size in bytes as they go out."""

    messages: int
    bytes: int


class QueueLimits(msgspec.Struct, frozen=True):
    """The most unsent mail a portal may have: messages and bytes."""

    messages: int
    bytes: int

    def admit(self, backlog: Backlog, size: int) -> None:
        """Refuse a message of ``size`` bytes that would take ``backlog`` past a limit.

        An empty queue takes any message, so a byte limit set below the message size limit cannot refuse
        one forever.

        Raises:
            QueueFull: the portal already has as many messages as it may, or the bytes would pass the limit.
        """
        if backlog.messages >= self.messages:
            raise QueueFull(
                f"The portal's outbox is full: {backlog.messages} messages are waiting to be sent, "
                f"at most {self.messages} may. Try again later.",
                RETRY_AFTER_SECONDS,
            )
        if backlog.messages and backlog.bytes + size > self.bytes:
            raise QueueFull(
                f"The portal's outbox is full: {backlog.bytes} bytes are waiting to be sent, and this message's "
                f"{size} would pass the limit of {self.bytes}. Try again later.",
                RETRY_AFTER_SECONDS,
            )
