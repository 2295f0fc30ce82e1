"""Migrations upgrade an existing database in place, keeping its data (both backends)."""

from __future__ import annotations

import subprocess

import sqlalchemy as sa
from serverkit import smtpsettings_command

from smtpsettings.domain.accounts import Role
from smtpsettings.store import accounts
from smtpsettings.store.database import Database
from smtpsettings.store.tables import metadata


def _revision(db: Database) -> str:
    return str(db.read_sync(lambda c: c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()))


def test_migrate_upgrades_an_older_schema_in_place_and_keeps_the_data(database_url: str, tmp_path: object) -> None:
    old = Database(database_url)
    old.migrate("0001")
    assert _revision(old) == "0001"
    old.write_sync(lambda c: accounts.create_portal(c, "kept.example.com", is_default=True))
    portal = old.read_sync(lambda c: accounts.get_portal_by_hostname(c, "kept.example.com"))
    assert portal is not None
    old.write_sync(
        lambda c: accounts.create_user(c, portal.id, email="a@example.com", display_name="a", role=Role.ADMIN, password_hash="h")
    )
    old.dispose()

    result = subprocess.run(
        [*smtpsettings_command(), "migrate"],
        env={"SMTPSETTINGS_DATABASE_URL": database_url, "SMTPSETTINGS_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

    new = Database(database_url)
    try:
        assert _revision(new) == "0002"
        users = new.read_sync(lambda c: accounts.list_users(c, portal.id))
        assert [u.email for u in users] == ["a@example.com"]
        indexes = new.read_sync(lambda c: {i["name"] for i in sa.inspect(c).get_indexes("rate_counters")})
        assert "ix_rate_counters_window_start" in indexes
    finally:
        new.dispose()


def test_the_migrated_schema_matches_the_tables_the_code_uses(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    db = Database(database_url)
    try:
        db.migrate()
        diff = db.read_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    finally:
        db.dispose()
    assert diff == []
