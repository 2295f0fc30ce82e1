"""The one table where errors become SMTP replies, as ``api/errors.py`` is for HTTP."""

from __future__ import annotations

from smtpsettings.crypto import DecryptionError
from smtpsettings.domain.errors import (
    AccessDenied,
    BadArgument,
    DomainError,
    MailLoop,
    NotAuthenticated,
    NotConfigured,
    NotFound,
    QueueFull,
    SenderInFlux,
    TooLarge,
    TooManyRequests,
)
from smtpsettings.store.database import StoreUnavailable

__all__ = ("reply_for",)

# Checked in order: the first class the error is an instance of gives the reply's code and enhanced status.
_REPLIES: list[tuple[type[Exception], str]] = [
    (QueueFull, "452 4.3.1"),  # RFC 3463's "mail system full": temporary, the client retries later
    (TooManyRequests, "454 4.7.0"),
    (NotAuthenticated, "535 5.7.8"),
    (AccessDenied, "535 5.7.8"),
    (TooLarge, "552 5.3.4"),
    (NotFound, "550 5.1.1"),
    (MailLoop, "554 5.4.6"),
    # Configuration caught in the middle of a change: temporary, so a relaying MTA keeps the mail (RFC 3463).
    (NotConfigured, "451 4.3.5"),
    (SenderInFlux, "451 4.7.1"),
    (BadArgument, "550 5.7.1"),
    (StoreUnavailable, "451 4.3.0"),
    (DecryptionError, "451 4.3.0"),
]


def reply_for(error: Exception) -> str:
    """One reply line for ``error``: its code, enhanced status and one sentence (no line breaks)."""
    prefix = next((p for cls, p in _REPLIES if isinstance(error, cls)), "451 4.3.0")
    if isinstance(error, TooManyRequests):
        text = f"{error.message} Retry in {error.retry_after} s."
    elif isinstance(error, DomainError | StoreUnavailable):
        text = error.message if isinstance(error, DomainError) else str(error)
    else:
        text = "The message could not be accepted because of an internal error; try again later."
    return f"{prefix} " + " ".join(text.split())
