"""Test-mail jobs: one row per portal, so any instance can report a job and only one runs per portal."""

from __future__ import annotations

import json
from datetime import datetime

import msgspec
from sqlalchemy.engine import Connection

from smtpsettings.store.database import insert_for, utc, utcnow
from smtpsettings.store.tables import test_jobs

__all__ = ("JobRecord", "claim_job", "finish_job", "get_job", "update_progress")


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


def _record(row) -> JobRecord:  # type: ignore[no-untyped-def]
    diagnostics = json.loads(row.details or "{}")
    return JobRecord(
        id=row.id,
        portal_id=row.portal_id,
        completed=row.completed,
        percents=row.percents,
        status=row.status,
        error=row.error,
        details=diagnostics.get("details", []),
        transcript=diagnostics.get("transcript", []),
        started_at=utc(row.started_at),
        deadline_at=utc(row.deadline_at),
    )


def get_job(conn: Connection, portal_id: int, *, for_update: bool = False) -> JobRecord | None:
    query = test_jobs.select().where(test_jobs.c.portal_id == portal_id)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    return _record(row) if row and row.id else None  # id "" marks the placeholder claim_job locks


def claim_job(
    conn: Connection, portal_id: int, *, job_id: str, user_id: int, status: str, percents: int, deadline_at: datetime
) -> tuple[JobRecord, bool]:
    """Start a job unless one is live for the portal; returns the live job and whether it is the new one.

    Must run in a write transaction. The portal's job row is locked first (created if missing), so two
    instances asked at once serialise here and only one of them starts a job.
    """
    placeholder = {"id": "", "user_id": None, "completed": True, "percents": 0, "status": "", "error": "", "details": "{}"}
    conn.execute(
        insert_for(conn, test_jobs)
        .values(portal_id=portal_id, started_at=utcnow(), deadline_at=utcnow(), **placeholder)
        .on_conflict_do_nothing(index_elements=[test_jobs.c.portal_id])
    )
    current = get_job(conn, portal_id, for_update=True)
    now = utcnow()
    if current is not None and not current.completed and current.deadline_at > now:
        return current, False
    values = {
        "id": job_id,
        "user_id": user_id,
        "completed": False,
        "percents": percents,
        "status": status,
        "error": "",
        "details": "{}",
        "started_at": now,
        "deadline_at": deadline_at,
        "finished_at": None,
    }
    conn.execute(test_jobs.update().where(test_jobs.c.portal_id == portal_id).values(**values))
    job = get_job(conn, portal_id)
    assert job is not None
    return job, True


def update_progress(conn: Connection, portal_id: int, job_id: str, *, percents: int, status: str) -> None:
    conn.execute(
        test_jobs.update()
        .where(test_jobs.c.portal_id == portal_id, test_jobs.c.id == job_id, test_jobs.c.completed.is_(False))
        .values(percents=percents, status=status)
    )


def finish_job(
    conn: Connection,
    portal_id: int,
    job_id: str,
    *,
    error: str,
    details: list[dict[str, object]],
    transcript: list[str],
    percents: int | None = None,
    status: str | None = None,
) -> None:
    """Mark a job done (``error`` empty on success). A job already finished, or replaced, is left alone."""
    values: dict[str, object] = {
        "completed": True,
        "error": error,
        "details": json.dumps({"details": details, "transcript": transcript}),
        "finished_at": utcnow(),
    }
    if percents is not None:
        values["percents"] = percents
    if status is not None:
        values["status"] = status
    conn.execute(
        test_jobs.update()
        .where(test_jobs.c.portal_id == portal_id, test_jobs.c.id == job_id, test_jobs.c.completed.is_(False))
        .values(**values)
    )
