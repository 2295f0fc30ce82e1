"""The domain's errors. The API turns each into one DocSpace error envelope (see ``api/errors.py``).

::

    DomainError
    ├── BadArgument           a rule refused the input ("Empty smtp host.")
    │   ├── ValidationFailed  per-field type/length/range errors, keyed by PascalCase property name
    │   ├── MailLoop          a submitted message has come back to this service, or passed too many servers
    │   ├── NotConfigured     the portal has no SMTP settings to send with (SMTP: temporary, 451 4.3.5)
    │   └── SenderInFlux      a sender refused while the portal's settings just changed (SMTP: temporary, 451 4.7.1)
    ├── NotAuthenticated      no or bad credentials
    ├── AccessDenied          signed in, but the role may not do this
    ├── NotFound              no such portal or resource
    ├── Conflict              the resource's current state forbids it (a test mail is already being sent)
    ├── TooLarge              the content is larger than a configured limit
    ├── RequestBodyTimeout    the client announced a body and did not send it in time
    └── TooManyRequests       a rate limit; carries the seconds until a retry can succeed
        └── QueueFull         the portal's unsent mail is at its limit: nothing is accepted until some is sent
"""

from __future__ import annotations

__all__ = (
    "AccessDenied",
    "BadArgument",
    "Conflict",
    "DomainError",
    "MailLoop",
    "NotAuthenticated",
    "NotConfigured",
    "NotFound",
    "QueueFull",
    "RequestBodyTimeout",
    "SenderInFlux",
    "TooLarge",
    "TooManyRequests",
    "ValidationFailed",
)


class DomainError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadArgument(DomainError):
    pass


class ValidationFailed(BadArgument):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        first = next(iter(errors.values()))[0] if errors else "One or more validation errors occurred."
        super().__init__(first)
        self.errors = errors


class MailLoop(BadArgument):
    """Refused for good (SMTP 554 5.4.6): sending it again would only go round the same loop."""


class NotConfigured(BadArgument):
    """The portal cannot send yet. Over HTTP a 400 like any refused request; over SMTP temporary (451 4.3.5):
    an MTA relaying through the submission port keeps the mail until an admin saves the settings."""


class SenderInFlux(BadArgument):
    """A sender refused within the grace period after the portal's settings changed (SMTP 451 4.7.1).

    The client's own configuration may not have caught up yet (an MTA rewriting to the old sender): a
    temporary answer keeps its mail queued instead of bouncing it.
    """


class NotAuthenticated(DomainError):
    pass


class AccessDenied(DomainError):
    def __init__(self, message: str = "Access denied") -> None:
        super().__init__(message)


class NotFound(DomainError):
    pass


class Conflict(DomainError):
    pass


class TooLarge(DomainError):
    pass


class RequestBodyTimeout(DomainError):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request body did not arrive within {seconds:g} seconds.")


class TooManyRequests(DomainError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class QueueFull(TooManyRequests):
    pass
