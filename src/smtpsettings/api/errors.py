"""The one place where errors become HTTP: each maps to a DocSpace error envelope, never a stack trace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

from smtpsettings.api.envelope import error_response
from smtpsettings.api.negotiation import NotAcceptable, UnsupportedMediaType
from smtpsettings.crypto import DecryptionError
from smtpsettings.domain.errors import (
    AccessDenied,
    BadArgument,
    Conflict,
    RequestBodyTimeout,
    DomainError,
    TooLarge,
    NotAuthenticated,
    NotFound,
    TooManyRequests,
    ValidationFailed,
)
from smtpsettings.store.database import StoreUnavailable

__all__ = ("VALIDATION_TYPE", "error_answer", "exception_handlers")

log = structlog.get_logger("smtpsettings.api")

_STATUS: list[tuple[type[Exception], int, str]] = [
    (ValidationFailed, 400, "ArgumentException"),
    (BadArgument, 400, "ArgumentException"),
    (NotAuthenticated, 401, "AuthenticationException"),
    (AccessDenied, 403, "SecurityException"),
    (NotFound, 404, "ItemNotFoundException"),
    (Conflict, 409, "ConflictException"),
    (TooLarge, 413, "PayloadTooLargeException"),
    (RequestBodyTimeout, 408, "RequestTimeoutException"),
    (TooManyRequests, 429, "TooManyRequestsException"),
    (NotAcceptable, 406, "NotAcceptableException"),
    (UnsupportedMediaType, 415, "UnsupportedMediaTypeException"),
]

VALIDATION_TYPE = "https://tools.ietf.org/html/rfc9110#section-15.5.1"
_VALIDATION_TITLE = "One or more validation errors occurred."

_HTTP_MESSAGES = {
    404: "The requested resource was not found.",
    405: "The method is not allowed for this resource.",
    413: "The request body is too large.",
}


def _domain_error(request: Request, exc: DomainError) -> Response[bytes]:
    status, error_type = next(((st, et) for cls, st, et in _STATUS if isinstance(exc, cls)), (400, "Error"))
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
    if isinstance(exc, RequestBodyTimeout):
        headers = {"Connection": "close"}  # the rest of the body may still come: don't read it as a request
    response = _problem_details(request, exc) if isinstance(exc, ValidationFailed) else None
    return error_response(request, status, exc.message, error_type=error_type, response=response, headers=headers)


def _problem_details(request: Request, exc: ValidationFailed) -> dict[str, Any]:
    """ASP.NET's ValidationProblemDetails as DocSpace answers them (its nulls left out).

    The trace id is the request id the request log writes and sends in X-Request-Id, so that an answer can
    be found in the log.
    """
    details: dict[str, Any] = {"type": VALIDATION_TYPE, "title": _VALIDATION_TITLE, "status": 400, "errors": exc.errors}
    request_id = request.scope["state"].get("request_id")
    if request_id:
        details["traceId"] = request_id
    return details


def _http_error(request: Request, exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        return _unexpected(request, exc)
    message = _HTTP_MESSAGES.get(status) or (exc.detail if isinstance(exc.detail, str) else "Bad request")
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return error_response(request, status, message, error_type="HttpException", headers=headers or None)


def _unavailable(request: Request, exc: StoreUnavailable) -> Response[bytes]:
    log.warning("store_unavailable", reason=str(exc))
    return error_response(request, 503, str(exc), error_type="ServiceUnavailable", headers={"Retry-After": "5"})


def _undecryptable(request: Request, exc: DecryptionError) -> Response[bytes]:
    # The key ring does not match the database: an operator problem, said plainly to the operator.
    log.error("secret_undecryptable", reason=str(exc))
    return error_response(
        request, 500, "A stored secret cannot be decrypted with this server's key ring; see the server log.", error_type="Error"
    )


def _unexpected(request: Request, exc: Exception) -> Response[bytes]:
    log.exception("unhandled_error", exc_type=type(exc).__name__)
    return error_response(request, 500, "Internal server error.", error_type="Error")


exception_handlers: dict[type[Exception], Callable[[Request, Any], Response[bytes]]] = {
    DomainError: _domain_error,
    HTTPException: _http_error,
    StoreUnavailable: _unavailable,
    DecryptionError: _undecryptable,
    Exception: _unexpected,
}


def error_answer(request: Request, exc: Exception) -> Response[bytes]:
    """The answer the handlers above give to ``exc``, for code that runs outside Litestar (api/fastpath.py).

    The handler of the nearest class in the exception's MRO, which is how Litestar picks among them (its
    preference for status-code keys does not arise: none are registered).
    """
    for cls in type(exc).__mro__:
        handler = exception_handlers.get(cls)
        if handler is not None:
            return handler(request, exc)
    return _unexpected(request, exc)  # not reached: Exception itself is mapped
