"""Writers on separate connections, as separate instances would be, racing on the same rows (both backends)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from smtpsettings.domain.accounts import Role
from smtpsettings.domain.smtp import SmtpSettings
from smtpsettings.store import accounts, jobs, ratelimit
from smtpsettings.store import smtp as smtp_store
from smtpsettings.store.database import Database, utcnow


@pytest.fixture
def handles(database_url: str) -> Iterator[list[Database]]:
    first = Database(database_url)
    first.migrate()
    dbs = [first, *(Database(database_url) for _ in range(3))]
    yield dbs
    for db in dbs:
        db.dispose()


def race(handles: list[Database], work: Callable[[Database], Any], rounds: int = 1) -> list[Any]:
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(handles))

    def run(db: Database) -> None:
        barrier.wait()
        try:
            for _ in range(rounds):
                results.append(work(db))
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(db,)) for db in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_concurrent_hits_are_all_counted(handles: list[Database]) -> None:
    race(handles, lambda db: db.write_sync(lambda c: ratelimit.hit(c, "shared", 600)), rounds=10)
    assert handles[0].read_sync(lambda c: ratelimit.count(c, "shared", 600))[0] == 40


def test_racing_first_saves_leave_one_complete_record(handles: list[Database]) -> None:
    portal = handles[0].write_sync(lambda c: accounts.create_portal(c, "race.example.com", is_default=False))

    def save(db: Database) -> None:
        name = f"writer-{id(db)}"
        settings = SmtpSettings(
            host=f"{name}.example.com",
            port=25,
            sender_address=f"{name}@example.com",
            sender_display_name=name,
            credentials_user_name="",
            enable_ssl=False,
            enable_auth=False,
            use_ntlm=False,
        )
        db.write_sync(lambda c: smtp_store.put_settings(c, portal.id, settings, None))

    race(handles, save)
    stored = handles[0].read_sync(lambda c: smtp_store.get_settings(c, portal.id))
    assert stored is not None
    name = stored.settings.sender_display_name
    assert stored.settings.host == f"{name}.example.com" and stored.settings.sender_address == f"{name}@example.com"


def test_only_one_of_racing_claims_starts_a_job(handles: list[Database]) -> None:
    def setup(conn):  # type: ignore[no-untyped-def]
        portal = accounts.create_portal(conn, "jobs.example.com", is_default=False)
        user = accounts.create_user(conn, portal.id, email="a@example.com", display_name="a", role=Role.ADMIN, password_hash="x")
        return portal, user

    portal, user = handles[0].write_sync(setup)

    def claim(db: Database) -> tuple[str, bool]:
        job, is_new = db.write_sync(
            lambda c: jobs.claim_job(
                c,
                portal.id,
                job_id=f"job-{id(db)}",
                user_id=user.id,
                recipient="a@example.com",
                status="Setup tenant",
                percents=5,
                deadline_at=utcnow() + timedelta(seconds=60),
            )
        )
        return job.id, is_new

    results = race(handles, claim)
    assert sum(is_new for _, is_new in results) == 1
    assert len({job_id for job_id, _ in results}) == 1
