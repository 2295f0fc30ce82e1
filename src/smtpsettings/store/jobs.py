"""Test-mail jobs: one row per portal, so any instance can report a job and only one runs per portal."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.store.database import Database, Prepared, insert_for, utc, utcnow
from smtpsettings.store.tables import test_jobs

__all__ = ("JobRecord", "claim_job", "find_job", "finish_job", "get_job", "update_progress")


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    portal_id: int
    completed: bool
    percents: int
    status: str
    error: str
    details: list[dict[str, object]]
    transcript: list[str]
    started_at: datetime
    deadline_at: datetime
    recipient: str = ""
    """Where the test mail goes; "" for a job started before the recipient was recorded."""


_BY_PORTAL = test_jobs.c.portal_id == sa.bindparam("portal_id")
_LIVE_JOB = sa.and_(_BY_PORTAL, test_jobs.c.id == sa.bindparam("job_id"), test_jobs.c.completed.is_(False))
# Every column but the "transcript" and "recipient" fields': both diagnostics lists and the recipient are kept in
# one JSON column, "details".
_JOB_COLUMNS = [test_jobs.c[name] for name in JobRecord.__struct_fields__ if name not in ("transcript", "recipient")]
_GET = Prepared(sa.select(*_JOB_COLUMNS).where(_BY_PORTAL))
_GET_FOR_UPDATE = Prepared(sa.select(*_JOB_COLUMNS).where(_BY_PORTAL).with_for_update())
_diagnostics = msgspec.json.Decoder(dict[str, Any])


def _record(row: tuple[Any, ...] | None) -> JobRecord | None:
    if row is None or not row[0]:  # id "" marks the placeholder claim_job locks
        return None
    job_id, portal_id, completed, percents, status, error, details, started_at, deadline_at = row
    diagnostics = _diagnostics.decode(details) if details and details != "{}" else {}
    return JobRecord(
        id=job_id,
        portal_id=portal_id,
        completed=completed,
        percents=percents,
        status=status,
        error=error,
        details=diagnostics.get("details", []),
        transcript=diagnostics.get("transcript", []),
        started_at=utc(started_at),
        deadline_at=utc(deadline_at),
        recipient=diagnostics.get("recipient", ""),
    )
_PLACEHOLDER = Prepared.per_dialect(
    lambda dialect: insert_for(dialect, test_jobs)
    .values({c.name: sa.bindparam(c.name) for c in test_jobs.columns})
    .on_conflict_do_nothing(index_elements=[test_jobs.c.portal_id])
)
_START = Prepared(
    test_jobs.update()
    .where(_BY_PORTAL)
    .values({c.name: sa.bindparam(f"new_{c.name}") for c in test_jobs.columns if c.name != "portal_id"})
)
_PROGRESS = Prepared(
    test_jobs.update().where(_LIVE_JOB).values(percents=sa.bindparam("new_percents"), status=sa.bindparam("new_status"))
)
_FINISH = Prepared(
    test_jobs.update()
    .where(_LIVE_JOB)
    .values(
        completed=True,
        error=sa.bindparam("new_error"),
        details=sa.bindparam("new_details"),
        finished_at=sa.bindparam("new_finished_at"),
        percents=sa.func.coalesce(sa.bindparam("new_percents", type_=sa.Integer), test_jobs.c.percents),
        status=sa.func.coalesce(sa.bindparam("new_status", type_=sa.String), test_jobs.c.status),
    )
)


def get_job(conn: Connection, portal_id: int, *, for_update: bool = False) -> JobRecord | None:
    return _record((_GET_FOR_UPDATE if for_update else _GET).row(conn, {"portal_id": portal_id}))


async def find_job(db: Database, portal_id: int) -> JobRecord | None:
    """The portal's job, read outside any transaction (what every status poll asks)."""
    return _record(await db.fetch_one(_GET, portal_id=portal_id))


def _details(recipient: str, details: list[dict[str, object]], transcript: list[str]) -> str:
    return json.dumps({"recipient": recipient, "details": details, "transcript": transcript})


def claim_job(
    conn: Connection,
    portal_id: int,
    *,
    job_id: str,
    user_id: int,
    recipient: str,
    status: str,
    percents: int,
    deadline_at: datetime,
) -> tuple[JobRecord, bool]:
    """Start a job unless one is live for the portal; returns the live job and whether it is the new one.

    Must run in a write transaction. The portal's job row is locked first (created if missing), so two
    instances asked at once serialise here and only one of them starts a job.
    """
    now = utcnow()
    _PLACEHOLDER.execute(
        conn,
        portal_id=portal_id,
        id="",
        user_id=None,
        completed=True,
        percents=0,
        status="",
        error="",
        details="{}",
        started_at=now,
        deadline_at=now,
        finished_at=None,
    )
    current = get_job(conn, portal_id, for_update=True)
    if current is not None and not current.completed and current.deadline_at > now:
        return current, False
    values = {
        "id": job_id,
        "user_id": user_id,
        "completed": False,
        "percents": percents,
        "status": status,
        "error": "",
        "details": _details(recipient, [], []),
        "started_at": now,
        "deadline_at": deadline_at,
        "finished_at": None,
    }
    _START.execute(conn, portal_id=portal_id, **{f"new_{k}": v for k, v in values.items()})
    return JobRecord(
        id=job_id,
        portal_id=portal_id,
        completed=False,
        percents=percents,
        status=status,
        error="",
        details=[],
        transcript=[],
        started_at=now,
        deadline_at=deadline_at,
        recipient=recipient,
    ), True


def update_progress(conn: Connection, portal_id: int, job_id: str, *, percents: int, status: str) -> None:
    _PROGRESS.execute(conn, portal_id=portal_id, job_id=job_id, new_percents=percents, new_status=status)


def finish_job(
    conn: Connection,
    portal_id: int,
    job_id: str,
    *,
    error: str,
    recipient: str,
    details: list[dict[str, object]],
    transcript: list[str],
    percents: int | None = None,
    status: str | None = None,
) -> None:
    """Mark a job done (``error`` empty on success). A job already finished, or replaced, is left alone."""
    _FINISH.execute(
        conn,
        portal_id=portal_id,
        job_id=job_id,
        new_error=error,
        new_details=_details(recipient, details, transcript),
        new_finished_at=utcnow(),
        new_percents=percents,
        new_status=status,
    )
