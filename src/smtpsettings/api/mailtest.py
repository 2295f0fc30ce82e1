"""``/api/2.0/smtpsettings/smtp/test`` and ``/test/status``: send a test mail and follow its progress."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from smtpsettings.api.context import read_json, services, settings_manager
from smtpsettings.api.envelope import success_response
from smtpsettings.domain.smtp import parse_settings
from smtpsettings.store.jobs import JobRecord

__all__ = ("start_test", "start_test_of_unsaved", "test_status")

PATH = "/api/2.0/smtpsettings/smtp/test"


def status_dto(job: JobRecord) -> dict[str, Any]:
    """DocSpace's fields first; ``details`` and ``transcript`` are ours, extra fields old clients ignore."""
    return {
        "id": job.id,
        "completed": job.completed,
        "percents": job.percents,
        "status": job.status,
        "error": job.error,
        "details": job.details,
        "transcript": job.transcript,
    }


@get(PATH)
async def start_test(request: Request) -> Response[bytes]:
    portal, user = await settings_manager(request)
    return success_response(request, status_dto(await services(request).mailtest.start(portal, user)))


@post(PATH, status_code=200)
async def start_test_of_unsaved(request: Request) -> Response[bytes]:
    portal, user = await settings_manager(request)
    candidate = parse_settings(await read_json(request))
    # A running test is not joined here: its outcome would be taken for that of these settings (409).
    job = await services(request).mailtest.start(portal, user, candidate, join_running=False)
    return success_response(request, status_dto(job))


@get(PATH + "/status")
async def test_status(request: Request) -> Response[bytes]:
    portal, _ = await settings_manager(request)
    job = await services(request).mailtest.status(portal)
    return success_response(request, status_dto(job) if job else None)
