"""When a portal's settings last changed, as the submission port reads it from the audit log, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from smtpsettings.store import accounts, smtp
from smtpsettings.store.database import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def test_the_last_change_is_the_newest_save_or_reset_of_that_portal_only(db: Database) -> None:
    one, two = (db.write_sync(lambda c, h=h: accounts.create_portal(c, h, is_default=False)).id for h in ("a.test", "b.test"))
    assert db.read_sync(lambda c: smtp.last_change(c, one)) is None  # never saved

    def audit(portal_id: int, action: str) -> None:
        db.write_sync(
            lambda c: smtp.add_audit_entry(
                c, portal_id, user_id=None, user_email="admin@a.test", action=action, changed=[], client_address="127.0.0.1"
            )
        )

    before = datetime.now(UTC) - timedelta(seconds=1)
    audit(one, "save")
    saved = db.read_sync(lambda c: smtp.last_change(c, one))
    assert saved is not None and saved.tzinfo is not None and before < saved <= datetime.now(UTC)
    audit(one, "reset")
    reset = db.read_sync(lambda c: smtp.last_change(c, one))
    assert reset is not None and reset >= saved
    audit(one, "other")  # not a change of the settings
    assert db.read_sync(lambda c: smtp.last_change(c, one)) == reset
    assert db.read_sync(lambda c: smtp.last_change(c, two)) is None
