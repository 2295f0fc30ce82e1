"""``/api/2.0/health/ready`` and ``/metrics``: what load balancers and Prometheus ask, without signing in.

Readiness checks the database, liveness (in app.py) deliberately does not: a database outage should take
instances out of rotation, not get them restarted. Neither is under the JSON API's content negotiation:
probes and scrapers send whatever Accept they like.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
import structlog
from litestar import Request, Response, get
from sqlalchemy.engine import Connection

from smtpsettings import metrics
from smtpsettings.api.context import services
from smtpsettings.store import outbox as outbox_store
from smtpsettings.store.database import Database, StoreUnavailable

__all__ = ("metrics_endpoint", "ready")

log = structlog.get_logger("smtpsettings.api")

T = TypeVar("T")

_READY = b'{"response":"ok","count":1,"status":0,"statusCode":200}'
# A real table, not ``SELECT 1``: SQLite answers that without reading the database file at all.
_PROBE = sa.text("SELECT 1 FROM alembic_version")


def _probe(conn: Connection) -> None:
    conn.execute(_PROBE).all()


async def _bounded_read(db: Database, fn: Callable[[Connection], T]) -> T:
    """``db.read(fn)`` within the database timeout; every way it can fail becomes :class:`StoreUnavailable`."""
    try:
        async with asyncio.timeout(db.timeout):
            return await db.read(fn)
    except TimeoutError:
        raise StoreUnavailable("The database did not answer in time; try again.") from None
    except sa.exc.SQLAlchemyError as exc:
        # Not a connection failure StoreUnavailable already covers (a missing table, a damaged file):
        # for a probe it is just as much "not ready".
        cause = getattr(exc, "orig", None) or exc
        raise StoreUnavailable(f"The database cannot be read ({type(cause).__name__}).") from exc


@get("/api/2.0/health/ready", include_in_schema=False)
async def ready(request: Request) -> Response[bytes]:
    """200 once a statement on the database succeeds within its timeout; 503 (error envelope) otherwise."""
    await _bounded_read(services(request).db, _probe)  # StoreUnavailable: the 503 of api.errors
    return Response(_READY, media_type="application/json")


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response[bytes]:
    """Prometheus exposition; a database that cannot be read leaves out the queue gauge, never fails the scrape."""
    queue: dict[str, int] | None
    try:
        queue = await _bounded_read(services(request).db, outbox_store.count_by_status)
    except StoreUnavailable as exc:
        log.warning("metrics_queue_unavailable", reason=str(exc))
        queue = None
    body, content_type = metrics.exposition(queue, request.headers.get("accept"))
    if content_type.startswith("text/"):  # Litestar appends the charset to text types itself
        content_type = "; ".join(p for p in content_type.split("; ") if not p.startswith("charset="))
    return Response(body, media_type=content_type)
