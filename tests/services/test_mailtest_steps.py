"""How a running test job's steps reach the database: throttled, never lost, on a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from smtpsettings.domain.accounts import Role
from smtpsettings.domain.mailtest import PERCENTS, STEP_CREATE_MESSAGE, STEP_SETUP_TENANT
from smtpsettings.mail import STEP_CONNECT, STEP_SEND
from smtpsettings.services.mailtest import PROGRESS_INTERVAL, StepWriter
from smtpsettings.store import accounts, jobs
from smtpsettings.store.database import Database, utcnow


@pytest.fixture
async def claimed(tmp_path: Path) -> AsyncIterator[tuple[Database, int]]:
    db = Database(f"sqlite:///{tmp_path}/jobs.db")
    db.migrate()

    def setup(conn):  # type: ignore[no-untyped-def]
        portal = accounts.create_portal(conn, "a.example.com", is_default=False)
        user = accounts.create_user(conn, portal.id, email="a@a.example.com", display_name="A", role=Role.ADMIN, password_hash="x")
        jobs.claim_job(
            conn, portal.id, job_id="job1", user_id=user.id, recipient="a@a.example.com", status=STEP_SETUP_TENANT, percents=5, deadline_at=utcnow() + timedelta(minutes=1)
        )
        return portal.id

    portal_id = db.write_sync(setup)
    yield db, portal_id
    await db.dispose_async()


async def stored_step(db: Database, portal_id: int) -> tuple[str, int]:
    job = await jobs.find_job(db, portal_id)
    assert job is not None
    return job.status, job.percents


async def test_steps_in_quick_succession_are_written_once_with_the_newest(claimed: tuple[Database, int]) -> None:
    db, portal_id = claimed
    steps = StepWriter(db, portal_id, "job1")

    await steps.reached(STEP_CREATE_MESSAGE)
    await steps.reached(STEP_CONNECT)
    assert await stored_step(db, portal_id) == (STEP_SETUP_TENANT, 5)  # still within the interval of the claim

    await asyncio.sleep(PROGRESS_INTERVAL * 2)
    assert await stored_step(db, portal_id) == (STEP_CONNECT, PERCENTS[STEP_CONNECT])
    steps.close()


async def test_a_step_after_a_quiet_interval_is_written_at_once(claimed: tuple[Database, int]) -> None:
    db, portal_id = claimed
    steps = StepWriter(db, portal_id, "job1")
    await asyncio.sleep(PROGRESS_INTERVAL * 1.5)

    await steps.reached(STEP_SEND)

    assert await stored_step(db, portal_id) == (STEP_SEND, PERCENTS[STEP_SEND])
    steps.close()


async def test_closing_drops_a_pending_write(claimed: tuple[Database, int]) -> None:
    db, portal_id = claimed
    steps = StepWriter(db, portal_id, "job1")
    await steps.reached(STEP_CONNECT)
    steps.close()  # the finish writes the final state itself
    await asyncio.sleep(PROGRESS_INTERVAL * 2)
    assert await stored_step(db, portal_id) == (STEP_SETUP_TENANT, 5)
    assert steps.current == STEP_CONNECT


@pytest.mark.parametrize(("seconds", "said"), [(900, "15 minutes"), (60, "1 minute"), (30, "30 seconds"), (1, "1 second"), (90, "90 seconds")])
def test_the_test_limits_window_is_said_in_words_an_admin_reads(seconds: int, said: str) -> None:
    from smtpsettings.services.mailtest import _duration

    assert _duration(seconds) == said
