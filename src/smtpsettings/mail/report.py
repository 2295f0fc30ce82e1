"""Diagnostics shown to an administrator after a send (successful or not).

Kept as plain frozen dataclasses so they serialise with ``msgspec``, ``json``
(via :meth:`Detail.to_dict`) or ``dataclasses.asdict`` without custom hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Delivery", "Detail", "DetailLevel", "Refusal", "SendReport"]

DetailLevel = Literal["info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Detail:
    """One diagnostic line.

    Attributes:
        step: Step it belongs to (``STEP_CONNECT`` ...).
        message: Human-readable, already redacted text.
        elapsed_ms: Duration of the operation it describes, when timed.
        level: ``"warning"`` for things that worked but deserve attention
            (certificate about to expire), ``"error"`` for the failure itself.
    """

    step: str
    message: str
    elapsed_ms: float | None = None
    level: DetailLevel = "info"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready mapping."""
        return {
            "step": self.step,
            "message": self.message,
            "elapsed_ms": self.elapsed_ms,
            "level": self.level,
        }


@dataclass(frozen=True, slots=True)
class SendReport:
    """Result of a successful :func:`send_message`.

    Attributes:
        details: Ordered diagnostics (addresses, timings, TLS, replies).
        transcript: Redacted SMTP dialogue, ``"C: ..."`` / ``"S: ..."`` lines.
    """

    details: list[Detail] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    def to_list(self) -> list[dict[str, object]]:
        """Details as a JSON-ready list (the shape the settings UI shows)."""
        return [d.to_dict() for d in self.details]

    def to_dict(self) -> dict[str, object]:
        """Details and transcript as one JSON-ready mapping."""
        return {"details": self.to_list(), "transcript": list(self.transcript)}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A recipient the server would not take at RCPT.

    Attributes:
        address: The recipient, as sent.
        code: The reply code; ``None`` when the address could not be sent at all (refused on our side).
        reply: The server's reply (``"550 5.1.1 No such user"``) or our reason.
    """

    address: str
    code: int | None
    reply: str

    @property
    def permanent(self) -> bool:
        """A 5xx (or no reply at all): asking again would get the same answer."""
        return self.code is None or self.code >= 500


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one message's transaction achieved, recipient by recipient.

    Attributes:
        reply: The server's reply to DATA (``"250 2.0.0 Ok: queued as 4Xyz"``); ``None`` when no recipient
            was accepted, so no DATA was sent.
        accepted: The recipients the message was delivered to.
        refusals: The others, each with the reply to its RCPT, in the order they were sent.
    """

    reply: str | None
    accepted: tuple[str, ...]
    refusals: tuple[Refusal, ...] = ()
