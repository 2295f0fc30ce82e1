"""``/api/2.0/smtpsettings/smtp/test`` and ``/test/status``: send a test mail and follow its progress."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from smtpsettings.api.context import read_json, services, settings_manager
from smtpsettings.api.envelope import success_response
from smtpsettings.domain.errors import ValidationFailed
from smtpsettings.domain.outbox import check_address
from smtpsettings.domain.smtp import parse_settings
from smtpsettings.store.jobs import JobRecord

__all__ = ("start_test", "start_test_of_unsaved", "test_status")

PATH = "/api/2.0/smtpsettings/smtp/test"


def status_dto(job: JobRecord) -> dict[str, Any]:
    """DocSpace's fields first; ``details``, ``transcript``, ``startedAt`` and ``recipient`` are ours, extra fields
    old clients ignore."""
    return {
        "id": job.id,
        "completed": job.completed,
        "percents": job.percents,
        "status": job.status,
        "error": job.error,
        "details": job.details,
        "transcript": job.transcript,
        "startedAt": job.started_at,
        "recipient": job.recipient,
    }


def recipient(request: Request) -> str | None:
    """``?to=ADDRESS`` (ours): where the test mail goes instead of the caller's own address.

    Checked by the outbox's address rules (international domains included); absent or empty, the
    caller's address is used, as in DocSpace.

    Raises:
        ValidationFailed: ``to`` is not one valid address (400 naming the field).
    """
    given = request.query_params.getall("to", [])
    if len(given) > 1:  # silently taking one of them would send the test somewhere the caller may not expect
        raise ValidationFailed({"to": ["Give one recipient for the test mail, not several."]})
    raw = given[0].strip() if given else ""
    if not raw:
        return None
    problem, address = check_address(raw)
    if problem:
        raise ValidationFailed({"to": [f"The test mail's recipient is not a valid email address: {problem}."]})
    return address


@get(PATH)
async def start_test(request: Request) -> Response[bytes]:
    portal, user = await settings_manager(request)
    to = recipient(request)
    return success_response(request, status_dto(await services(request).mailtest.start(portal, user, recipient=to)))


@post(PATH, status_code=200)
async def start_test_of_unsaved(request: Request) -> Response[bytes]:
    portal, user = await settings_manager(request)
    to = recipient(request)
    candidate = parse_settings(await read_json(request))
    # A running test is not joined here: its outcome would be taken for that of these settings (409).
    job = await services(request).mailtest.start(portal, user, candidate, join_running=False, recipient=to)
    return success_response(request, status_dto(job))


@get(PATH + "/status")
async def test_status(request: Request) -> Response[bytes]:
    portal, _ = await settings_manager(request)
    job = await services(request).mailtest.status(portal)
    return success_response(request, status_dto(job) if job else None)
