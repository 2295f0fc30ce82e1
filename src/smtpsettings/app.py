"""The ASGI application: routes, the request-log wrapper and the services each worker holds."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import HttpMethod, Litestar, MediaType, Request, Response, Router, get, route
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from smtpsettings import web
from smtpsettings.api import authentication, docs, mailtest, messages, smtp
from smtpsettings.api.context import forwarded_client, forwarded_scheme
from smtpsettings.api.errors import exception_handlers
from smtpsettings.api.fastpath import FastPath, Payload
from smtpsettings.api.health import metrics_endpoint, ready
from smtpsettings.api.negotiation import NotAcceptable, response_media_type
from smtpsettings.api.settings import portal_settings
from smtpsettings.config import Settings, load_settings
from smtpsettings.domain.errors import RequestBodyTimeout
from smtpsettings.logs import configure_logging, log_request
from smtpsettings.wiring import Services

__all__ = ("create_app",)

_DRAIN_LIMIT = 16 * 1024 * 1024


def create_app(settings: Settings | None = None) -> ASGIApp:
    """Build the application; with no settings given they are read from the environment (granian's factory)."""
    settings = settings or load_settings()
    configure_logging(settings.log_format, settings.log_level)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    services = Services(settings)
    services.db.migrate()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await services.start()
        # Everything built so far (framework, routes, SQLAlchemy metadata) lives as long as the process.
        # Freezing it keeps the collector's full passes from walking it again and again: those passes
        # are what a request unlucky enough to trigger one otherwise waits for.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await services.close()

    # Content negotiation (406) applies to the JSON API, not to the HTML pages beside it.
    json_api = Router(
        path="/",
        route_handlers=_with_allow_answers([
            authentication.sign_in,
            authentication.is_signed_in,
            authentication.sign_out,
            portal_settings,
            smtp.get_smtp_settings,
            smtp.save_smtp_settings,
            smtp.reset_smtp_settings,
            smtp.smtp_settings_history,
            mailtest.start_test,
            mailtest.start_test_of_unsaved,
            mailtest.test_status,
            *messages.route_handlers(settings.outbox_max_message_bytes),
        ]),
        before_request=_refuse_unacceptable,
    )
    app = Litestar(
        route_handlers=[json_api, live, ready, metrics_endpoint, *docs.route_handlers, *web.route_handlers],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        lifespan=[lifespan],
        openapi_config=None,
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    app.state.services = services
    return RequestLog(
        app,
        settings.max_body_bytes,
        settings.http_header_timeout,
        {messages.PATH: settings.outbox_max_message_bytes},
        http=FastPath(app, HOT_ROUTES),
        trusted_proxies=services.trusted_proxies,
    )


HOT_ROUTES: dict[tuple[str, str], Payload | None] = {
    (smtp.PATH, "GET"): smtp.smtp_settings,
    (smtp.PATH, "POST"): smtp.saved_smtp_settings,
    ("/api/2.0/health/live", "GET"): None,
    (messages.PATH, "POST"): None,
}
"""What clients call over and over: served by api.fastpath without Litestar's router, by the code their
handlers run (the payload they wrap in the success envelope, or the handler itself). ``POST /messages`` is
one message each: Litestar's routing and response layers were a larger share of it than its own work."""


@get("/api/2.0/health/live", include_in_schema=False)
async def live() -> Response[bytes]:
    """Liveness for load balancers: the process answers; touches nothing else (also the benchmarks' ceiling)."""
    return Response(_LIVE, media_type="application/json")


_LIVE = b'{"response":"ok","count":1,"status":0,"statusCode":200}'


def _with_allow_answers(handlers: list[HTTPRouteHandler]) -> list[HTTPRouteHandler]:
    """``handlers`` preceded by an OPTIONS handler for each of their paths, whose ``Allow`` names every method.

    Litestar 2 makes a path's automatic OPTIONS answer when the path's first handler is registered and never
    updates it (litestar-org/litestar#4169), so ``OPTIONS /smtpsettings/smtp`` said ``GET, OPTIONS`` only.
    A path with its own OPTIONS handler gets no automatic one; these come first so that none is made.
    """
    methods: dict[str, set[str]] = defaultdict(lambda: {"OPTIONS"})
    for handler in handlers:
        for path in handler.paths:
            methods[path] |= handler.http_methods
    return [*(_options(path, ", ".join(sorted(allowed))) for path, allowed in methods.items()), *handlers]


def _options(path: str, allow: str) -> HTTPRouteHandler:
    def answer() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow}, media_type=MediaType.TEXT)

    return route(path, http_method=HttpMethod.OPTIONS, include_in_schema=False, sync_to_thread=False)(answer)


async def _refuse_unacceptable(request: Request) -> None:
    if request.scope["state"].get("not_acceptable"):
        raise NotAcceptable()


class RequestLog:
    """Outermost ASGI layer: content negotiation, hardening headers and one log line per request.

    It wraps the whole router so that 404s and 405s are negotiated and logged like everything else.
    """

    def __init__(
        self,
        app: Litestar,
        max_body_bytes: int,
        body_timeout: float,
        body_limits: dict[str, int] | None = None,
        http: ASGIApp | None = None,
        trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
    ) -> None:
        self.app = app
        self.http = http or app
        """What serves HTTP requests: ``app``, or the fast path in front of it."""
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.body_limits = body_limits or {}
        """Paths whose bodies may be larger than ``max_body_bytes`` (a message to send), and their limit."""
        self.trusted_proxies = trusted_proxies
        """Peers whose X-Forwarded-Proto / Forwarded proto= set the request's scheme (links, the cookie's Secure)
        and whose X-Forwarded-For names the client in the access log."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})  # type: ignore[typeddict-item]
        # One pass over the headers for what this layer needs (the first Accept, Content-Length, proxy headers).
        accept = length = x_forwarded_proto = forwarded = x_forwarded_for = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"accept":
                if accept is None:
                    accept = value
            elif name == b"x-forwarded-proto":
                x_forwarded_proto = value
            elif name == b"forwarded":
                forwarded = value
            elif name == b"x-forwarded-for":
                if x_forwarded_for is None:  # the one api.context.client_address reads too
                    x_forwarded_for = value
            elif name == b"content-length":
                if length is None:
                    length = value
                if value != b"0":
                    has_body = True
            elif name == b"transfer-encoding":
                has_body = True
        peer = (scope.get("client") or ("-",))[0]
        if x_forwarded_proto is not None or forwarded is not None:
            # Behind a TLS-terminating proxy: links and the sign-in cookie follow what the client used.
            scheme = forwarded_scheme(peer, x_forwarded_proto, forwarded, self.trusted_proxies)
            if scheme is not None:
                scope["scheme"] = scheme
        try:
            state["media_type"] = response_media_type(None if accept is None else accept.decode("latin-1"))
        except NotAcceptable:
            state["media_type"] = "application/json"
            state["not_acceptable"] = True
        if has_body:
            receive = _with_deadline(receive, self.body_timeout)
            if length is not None and length.isdigit() and int(length) > self.body_limits.get(scope["path"], self.max_body_bytes):
                receive = await _drained(receive)
        request_id = state["request_id"] = _request_id()  # also the traceId of a validation 400
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"x-request-id", request_id.encode()), *_HARDENING_HEADERS],
                }
            await send(message)

        try:
            await self.http(scope, receive, send_wrapper)
        finally:
            portal = state.get("portal")  # set by api.context once the Host is resolved
            hops = None if x_forwarded_for is None else x_forwarded_for.decode("latin-1")
            client = forwarded_client(peer, hops, self.trusted_proxies)  # as sign-in limits and the audit see it
            log_request(
                request_id,
                scope["method"],
                scope["path"],
                status,
                round((time.perf_counter() - started) * 1000, 2),
                client,
                portal.hostname if portal else None,
                state.get("user_id"),
            )


_HARDENING_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))


async def _drained(receive: Receive) -> Receive:
    """Read and drop a body announced as too large, before the 413 goes out; then an empty body.

    Answering while the client is still sending makes many clients see a reset connection instead of
    the 413; a bounded drain lets them read the answer. Beyond the bound we stop reading and the answer
    may be lost, which is fine for a client sending that much.
    """
    drained = 0
    while drained <= _DRAIN_LIMIT:
        try:
            message = await receive()
        except RequestBodyTimeout:
            break
        drained += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            break

    async def empty() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    return empty


def _request_id() -> str:
    """16 hex digits, as ``uuid.uuid4().hex[:16]`` has always made them (random, the 13th digit the version 4).

    From the process's pseudo-random generator (seeded from the OS, and again in each forked worker): a
    request id names a log line, it guards nothing. ``os.urandom`` would be a system call on every request
    (one that also lets go of the interpreter lock), at four times the cost.
    """
    return "%016x" % (_random_bits(64) & 0xFFFF_FFFF_FFFF_0FFF | 0x4000)


_random_bits = random.getrandbits


def _with_deadline(receive: Receive, seconds: float) -> Receive:
    """``receive`` that gives up once the body has taken ``seconds`` since its first read.

    The HTTP server's header timeout ends at the request head; without this bound a client that announces a
    body and then sends it a byte at a time, or never, holds its connection (and a worker's slot) for good.
    """
    deadline: float | None = None

    async def bounded() -> Any:
        nonlocal deadline
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + seconds
        try:
            async with asyncio.timeout_at(deadline):
                return await receive()
        except TimeoutError:
            raise RequestBodyTimeout(seconds) from None

    return bounded
