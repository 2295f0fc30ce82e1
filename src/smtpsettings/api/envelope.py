"""DocSpace's response envelopes: every JSON answer, success or error, is wrapped the same way."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response

from smtpsettings.api.headers import header

__all__ = ("content_type", "error_response", "success_body", "success_response")

_encoder = msgspec.json.Encoder()


def _count(payload: Any) -> int:
    if payload is None:
        return 0
    if isinstance(payload, list | tuple):
        return len(payload)
    return 1


def _href(request: Request) -> str:
    """The full request URL, as DocSpace echoes it in ``links`` (built from the scope: cheaper than request.url)."""
    scope = request.scope
    query = scope.get("query_string", b"")
    host = header(request, b"host") or "localhost"
    return f"{scope.get('scheme', 'http')}://{host}{scope['path']}" + (f"?{query.decode('latin-1')}" if query else "")


def _media_type(request: Request) -> str:
    media = request.scope.get("state", {}).get("media_type", "application/json")
    # Litestar adds the charset to text/* types itself.
    return media if media.startswith("text/") else media + "; charset=utf-8"


def _wrapped(request: Request, payload: Any, *, status: int, status_code: int, total: int | None = None) -> dict[str, Any]:
    """DocSpace's success envelope (CommonApiResponse); DocSpace wraps a validation 400 in it as well."""
    # DocSpace leaves "response" out when there is nothing to answer (e.g. no test status yet).
    body: dict[str, Any] = {"count": 0} if payload is None else {"response": payload, "count": _count(payload)}
    if total is not None:  # a page of a longer list: how many there are in all
        body["total"] = total
    body["links"] = [{"href": _href(request), "action": request.scope["method"]}]
    body["status"] = status
    body["statusCode"] = status_code
    return body


def success_body(request: Request, payload: Any, *, status_code: int = 200, total: int | None = None) -> bytes:
    """The success envelope around ``payload``, encoded."""
    return _encoder.encode(_wrapped(request, payload, status=0, status_code=status_code, total=total))


def content_type(request: Request) -> bytes:
    """The Content-Type header an envelope goes out with, as Litestar writes it for :func:`success_response`."""
    return (request.scope.get("state", {}).get("media_type", "application/json") + "; charset=utf-8").encode("latin-1")


def success_response(
    request: Request,
    payload: Any,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    total: int | None = None,
) -> Response[bytes]:
    return Response(
        content=success_body(request, payload, status_code=status_code, total=total),
        status_code=status_code,
        media_type=_media_type(request),
        headers=headers,
    )


def error_response(
    request: Request,
    status_code: int,
    message: str,
    *,
    error_type: str = "Error",
    response: Any = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    """The error envelope. ``stack`` is always null: a stack trace never leaves the server.

    With a ``response`` (the ValidationProblemDetails of a validation 400) the answer is DocSpace's shape for
    it, the success envelope with ``status`` 1 (``response``, ``count``, ``links``), and ``error`` beside it,
    so that clients reading either DocSpace shape find what they look for.
    """
    body: dict[str, Any] = {} if response is None else _wrapped(request, response, status=1, status_code=status_code)
    body |= {
        "error": {"message": message, "type": error_type, "stack": None, "hresult": 0},
        "status": 1,
        "statusCode": status_code,
    }
    return Response(
        content=_encoder.encode(body),
        status_code=status_code,
        media_type=_media_type(request),
        headers=headers,
    )
