"""Exceptions raised by :mod:`smtpsettings.mail`.

Every failure of :func:`smtpsettings.mail.send_message` is reported as one of
these, so callers (the test-mail job, later notification senders) need a single
``except MailError`` and can still tell the causes apart::

    MailError                 base; carries .step, .code, .details, .transcript
    ├── ConfigurationRefused  our own policy refused: denied network, plaintext AUTH
    ├── ConnectError          DNS, TCP connect, greeting refused, connection dropped
    ├── TLSError              STARTTLS missing/refused, handshake or certificate failure
    ├── AuthenticationError   AUTH rejected or no usable mechanism
    ├── OAuth2TokenError      the token endpoint refused or answered nonsense
    ├── SendError             MAIL FROM / RCPT TO / DATA rejected
    └── MailTimeout           a connect, command or total deadline expired

``str(error)`` is one sentence an administrator can act on. It never contains
the password or AUTH payloads: messages are built from server replies and our
own wording only, and pass through the same redaction as the transcript.
Library exceptions are chained (``raise ... from exc``) for logs, not shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smtpsettings.mail.report import Detail

__all__ = [
    "AuthenticationError",
    "ConfigurationRefused",
    "ConnectError",
    "MailError",
    "MailTimeout",
    "OAuth2TokenError",
    "SendError",
    "TLSError",
]


class MailError(Exception):
    """Base class: sending failed at ``step``.

    Attributes:
        step: Name of the step that failed (one of the ``STEP_*`` constants).
        code: The SMTP reply code when the failure was a server reply (a refused MAIL, RCPT, DATA or AUTH,
            a 421, a refused greeting), else ``None``: what tells a temporary refusal (4xx) from a
            permanent one (5xx).
        details: Diagnostics collected up to and including the failure, the
            same shape as :attr:`SendReport.details`.
        transcript: Redacted SMTP dialogue up to the failure.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str = "",
        code: int | None = None,
        details: list[Detail] | None = None,
        transcript: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.code = code
        self.details: list[Detail] = list(details or [])
        self.transcript: list[str] = list(transcript or [])

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for API responses and job records."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "step": self.step,
            "code": self.code,
            "details": [d.to_dict() for d in self.details],
            "transcript": list(self.transcript),
        }


class ConfigurationRefused(MailError):
    """Our policy forbids this send (denied network, plaintext credentials)."""


class ConnectError(MailError):
    """The host could not be resolved, reached, or dropped the connection."""


class TLSError(MailError):
    """TLS could not be established or the certificate was not trusted."""


class AuthenticationError(MailError):
    """The server rejected our credentials or offers no usable mechanism."""


class SendError(MailError):
    """The server rejected the sender, a recipient or the message content."""


class MailTimeout(MailError):
    """A connect, per-command or total deadline expired."""


class OAuth2TokenError(MailError):
    """The OAuth 2.0 token endpoint refused to issue a token or gave an unusable answer.

    Attributes:
        error: The endpoint's ``error`` code (``invalid_client``, ``invalid_grant``), ``""`` if none.
        error_description: Its ``error_description`` (``AADSTS7000215: ...``), ``""`` if none.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str = "",
        error_description: str = "",
        step: str = "",
        code: int | None = None,
        details: list[Detail] | None = None,
        transcript: list[str] | None = None,
    ) -> None:
        super().__init__(message, step=step, code=code, details=details, transcript=transcript)
        self.error = error
        self.error_description = error_description

    def to_dict(self) -> dict[str, object]:
        """:meth:`MailError.to_dict` plus the endpoint's error code and description."""
        return {**super().to_dict(), "oauth2_error": self.error, "oauth2_error_description": self.error_description}
