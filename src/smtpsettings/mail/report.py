"""Diagnostics shown to an administrator after a send (successful or not).

Kept as plain frozen dataclasses so they serialise with ``msgspec``, ``json``
(via :meth:`Detail.to_dict`) or ``dataclasses.asdict`` without custom hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Detail", "DetailLevel", "SendReport"]

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
