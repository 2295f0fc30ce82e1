"""``/api/2.0/smtpsettings/messages`` (ours): the portal's outgoing mail, accepted into the outbox.

The owner and admins may do everything here; a send-only API key sends and reads what it sent.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.handlers import HTTPRouteHandler

from smtpsettings.api.context import authenticated, current_principal, read_json, services
from smtpsettings.api.envelope import success_response
from smtpsettings.api.headers import header
from smtpsettings.domain.errors import ValidationFailed
from smtpsettings.services.outbox import LIST_STATUSES, check_idempotency_key
from smtpsettings.store.outbox import MessageRecord

__all__ = ("PATH", "message_dto", "route_handlers")

PATH = "/api/2.0/smtpsettings/messages"
MAX_PAGE = 1000
DEFAULT_PAGE = 50


def message_dto(record: MessageRecord) -> dict[str, Any]:
    """The wire form of a message: never its Bcc or body (its recipients' outcomes are To's and Cc's)."""
    return {
        "id": record.id,
        "status": record.status,
        "to": record.to,
        "cc": record.cc,
        "subject": record.subject,
        "attempts": record.attempts,
        "createdAt": record.created_at,
        "nextAttemptAt": record.next_attempt_at,
        "sentAt": record.sent_at,
        "lastError": record.last_error,
        "smtpReply": record.smtp_reply,
        "messageId": record.message_id,
        "recipients": [{"address": r.address, "status": r.status, "reply": r.reply} for r in record.recipients],
    }


async def _sender(request: Request):  # type: ignore[no-untyped-def]
    portal, principal = await current_principal(request)
    services(request).auth.require_sender(principal)
    return portal, principal


def route_handlers(max_message_bytes: int) -> list[HTTPRouteHandler]:
    """The routes; ``POST`` takes bodies up to the configured message size, not the settings' limit."""
    send = post(PATH, status_code=202, request_max_body_size=max_message_bytes)(send_message)
    return [send, list_messages, get_message, cancel_message, retry_message]


async def send_message(request: Request) -> Response[bytes]:
    the = services(request)
    found = await authenticated(request, the.smtp.alongside)  # the caller and the settings: one statement
    the.auth.require_sender(found.principal)
    key = check_idempotency_key(header(request, b"idempotency-key") or None)
    body = await read_json(request)
    settings = the.smtp.view(found.alongside).settings
    record, is_new = await the.outbox.submit(found.portal, found.principal, settings, body, key)
    # A repeated key answers the first message as it is now, with 200: nothing new was accepted.
    return success_response(request, message_dto(record), status_code=202 if is_new else 200)


@get(PATH)
async def list_messages(request: Request) -> Response[bytes]:
    portal, principal = await _sender(request)
    status, count, start_index = _page(request)
    records, total = await services(request).outbox.list(portal, principal, status=status, count=count, start_index=start_index)
    return success_response(request, [message_dto(r) for r in records], total=total)


@get(PATH + "/{message_id:str}")
async def get_message(request: Request, message_id: str) -> Response[bytes]:
    portal, principal = await _sender(request)
    return success_response(request, message_dto(await services(request).outbox.get(portal, principal, message_id)))


@delete(PATH + "/{message_id:str}", status_code=200)
async def cancel_message(request: Request, message_id: str) -> Response[bytes]:
    portal, principal = await _sender(request)
    return success_response(request, message_dto(await services(request).outbox.cancel(portal, principal, message_id)))


@post(PATH + "/{message_id:str}/retry", status_code=200)
async def retry_message(request: Request, message_id: str) -> Response[bytes]:
    portal, principal = await _sender(request)
    return success_response(request, message_dto(await services(request).outbox.retry(portal, principal, message_id)))


def _page(request: Request) -> tuple[str | None, int, int]:
    """``status``, ``count`` and ``startIndex`` from the query, each checked (400 with the field named)."""
    query = request.query_params
    errors: dict[str, list[str]] = {}
    status = query.get("status") or None
    if status is not None and status not in LIST_STATUSES:
        errors["status"] = [f"The value '{status}' is not valid: use one of {', '.join(LIST_STATUSES)}."]
    count = _integer(query.get("count"), DEFAULT_PAGE, 1, MAX_PAGE, "count", errors)
    start_index = _integer(query.get("startIndex"), 0, 0, 10**9, "startIndex", errors)
    if errors:
        raise ValidationFailed(errors)
    return status, count, start_index


def _integer(raw: str | None, default: int, low: int, high: int, name: str, errors: dict[str, list[str]]) -> int:
    if raw is None or raw == "":
        return default
    text = raw.strip(" \t")
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        errors[name] = [f"The value '{raw}' is not valid: use a whole number from {low} to {high}."]
        return default
    return int(text)
