"""The hot routes served without Litestar's router; every other request goes to Litestar unchanged.

GET and POST ``/api/2.0/smtpsettings/smtp``, ``POST /api/2.0/smtpsettings/messages`` and
``GET /api/2.0/health/live`` are what clients call over and over. Litestar's per-request machinery around them
(routing, its middleware stack, the handler's signature and response layers) cost more than the handler
itself; this layer calls the very same handler functions with a Litestar ``Request``, maps their errors
through the very same exception handlers (api/errors.py, looked up as Litestar does, through that module's
public function) and sends the answer the way Litestar sends it, so that both paths answer byte for byte alike
(tests/api/test_fastpath.py holds them to it). It sits inside ``RequestLog``: content negotiation, body
limits, the hardening headers and the access log line apply to it as to everything else.

Anything it is not sure about goes to Litestar: other paths and methods (HEAD, OPTIONS), a request the
negotiation refused (406 comes from the JSON API router's hook) and an ASGI ``root_path``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Litestar, Request, Response
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from smtpsettings.api.envelope import content_type, success_body
from smtpsettings.api.errors import error_answer

__all__ = ("FastPath", "Payload")

# Answers of a route handler as Litestar's own ``handle`` produces them (no handler-level headers or cookies).
_NO_HEADERS: dict[str, str] = {}


Payload = Callable[[Request[Any, Any, Any]], Awaitable[Any]]
"""What a hot JSON route answers on success, before the envelope: the route's handler does the same with it."""


class FastPath:
    """ASGI layer: the given ``(path, method)`` routes served directly, the rest by ``app``.

    A route with a :data:`Payload` is answered with the success envelope around it, built and sent without
    Litestar's ``Response`` (the same bytes ``success_response`` makes); one without runs its handler.
    """

    def __init__(self, app: Litestar, routes: Mapping[tuple[str, str], Payload | None]) -> None:
        self.app = app
        self.fallback: ASGIApp = app
        """What serves every other request: Litestar (a test puts a recorder around it)."""
        self.routes: dict[tuple[str, str], tuple[HTTPRouteHandler, Payload | None, bool]] = {}
        for (path, method), payload in routes.items():
            # The handler as registered: its owner chain carries the app's body limit and exception handlers.
            handler = app.route_handler_method_map[path][method]
            assert isinstance(handler, HTTPRouteHandler)
            self.routes[(path, method)] = (handler, payload, bool(inspect.signature(handler.fn).parameters))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get((scope["path"], scope["method"]))
            if route is not None and not scope.get("root_path") and not scope["state"].get("not_acceptable"):
                await self._serve(*route, scope, receive, send)
                return
        await self.fallback(scope, receive, send)

    async def _serve(
        self,
        handler: HTTPRouteHandler,
        payload: Payload | None,
        takes_request: bool,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        # What Litestar puts into the scope before its handlers run and that they (and Request) read.
        scope["app"] = scope["litestar_app"] = self.app  # type: ignore[typeddict-unknown-key]
        scope["route_handler"] = handler
        scope["path_params"] = {}
        request: Request[Any, Any, Any] = Request(scope, receive, send)
        body: bytes | None = None
        try:
            if payload is not None:
                body = success_body(request, await payload(request))
            else:
                response: Response[Any] = await (handler.fn(request) if takes_request else handler.fn())
        except Exception as exc:  # every error goes through the app's exception handlers
            response = error_answer(request, exc)
        if body is not None:  # sent outside the try: a client gone mid-send is not answered with an error
            headers = [(b"content-type", content_type(request)), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        start = _start_message(response)
        if start is None:
            asgi_response = response.to_asgi_response(app=None, request=request, headers=_NO_HEADERS)
            await asgi_response(scope, receive, send)
            return
        await send(start)
        await send({"type": "http.response.body", "body": response.content, "more_body": False})


def _start_message(response: Response[Any]) -> dict[str, Any] | None:
    """The ``http.response.start`` Litestar's ``ASGIResponse`` would send for ``response``, for the plain case.

    Plain: bytes content (the envelopes are encoded already), no cookies or background task, a status that
    carries a body, headers that name neither content type nor length. Anything else returns None and goes through Litestar's own conversion. Header names are
    lower-cased and the type and length appended, in the order ``ASGIResponse`` adds them.
    """
    content = response.content
    status = response.status_code or 200
    media_type = response.media_type or "application/json"
    if (
        type(content) is not bytes
        or response.cookies
        or response.background is not None
        or type(media_type) is not str
        or response.encoding != "utf-8"
        or status < 200
        or status in (204, 304)
    ):
        return None
    headers = []
    for name, value in response.headers.items():
        lower = name.lower()
        if lower in ("content-type", "content-length"):
            return None
        headers.append((lower.encode("latin-1"), value.encode("latin-1")))
    content_type = media_type + "; charset=utf-8" if media_type.startswith("text/") else media_type
    headers.append((b"content-type", content_type.encode("latin-1")))
    headers.append((b"content-length", str(len(content)).encode("latin-1")))
    return {"type": "http.response.start", "status": status, "headers": headers}
