"""The domain's errors. The API turns each into one DocSpace error envelope (see ``api/errors.py``).

::

    DomainError
    ├── BadArgument           a rule refused the input ("Empty smtp host.")
    │   ├── ValidationFailed  per-field type/length/range errors, keyed by PascalCase property name
    │   └── MailLoop          a submitted message has come back to this service, or passed too many servers
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
    "NotFound",
    "QueueFull",
    "RequestBodyTimeout",
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
