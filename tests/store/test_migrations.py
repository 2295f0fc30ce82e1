"""Migrations upgrade an existing database in place, keeping its data (both backends)."""

from __future__ import annotations

import re
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import sqlalchemy as sa
from serverkit import smtpsettings_command

from smtpsettings.store import accounts, outbox
from smtpsettings.store.database import MIGRATIONS, Database
from smtpsettings.store.tables import metadata

# The tables as revision 0001 made them: today's table objects have columns that did not exist then.
_old_portals = sa.table("portals", sa.column("hostname"), sa.column("is_default"), sa.column("created_at"))
_old_users = sa.table(
    "users",
    sa.column("portal_id"),
    sa.column("email"),
    sa.column("display_name"),
    sa.column("role"),
    sa.column("password_hash"),
    sa.column("created_at"),
)


def _alembic_config() -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _head() -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(_alembic_config()).get_current_head())


def _revision(db: Database) -> str:
    return str(db.read_sync(lambda c: c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()))


def _cli_migrate(database_url: str, data_dir: Path) -> None:
    result = subprocess.run(
        [*smtpsettings_command(), "migrate"],
        env={"SMTPSETTINGS_DATABASE_URL": database_url, "SMTPSETTINGS_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _old_database(database_url: str) -> dict[str, int]:
    """A database at revision 0001 with two portals and a user; the portals' ids by hostname."""
    old = Database(database_url)
    try:
        old.migrate("0001")
        assert _revision(old) == "0001"

        def fill(conn):  # type: ignore[no-untyped-def]
            now = datetime.now(UTC)
            for hostname in ("kept.example.com", "other.example.com"):
                conn.execute(_old_portals.insert().values(hostname=hostname, is_default=hostname.startswith("kept"), created_at=now))
            ids = dict(conn.execute(sa.text("SELECT hostname, id FROM portals")).all())
            user = {"email": "a@example.com", "display_name": "a", "role": "admin", "password_hash": "h", "created_at": now}
            conn.execute(_old_users.insert().values(portal_id=ids["kept.example.com"], **user))
            return ids

        return old.write_sync(fill)  # type: ignore[no-any-return]
    finally:
        old.dispose()


def test_migrate_upgrades_an_older_schema_in_place_and_keeps_the_data(database_url: str, tmp_path: Path) -> None:
    ids = _old_database(database_url)
    _cli_migrate(database_url, tmp_path)

    new = Database(database_url)
    try:
        assert _revision(new) == _head()
        users = new.read_sync(lambda c: accounts.list_users(c, ids["kept.example.com"]))
        assert [u.email for u in users] == ["a@example.com"]
        indexes = new.read_sync(lambda c: {i["name"] for i in sa.inspect(c).get_indexes("rate_counters")})
        assert "ix_rate_counters_window_start" in indexes
        # 0003: every existing portal got a salt of its own; the user has no client-hash verifier yet
        # (it can only be derived from the password), and keeps the password hash.
        salts = [new.read_sync(lambda c, i=i: accounts.password_hash_salt_of(c, i)) for i in ids.values()]
        assert all(s is not None and re.fullmatch(r"[0-9a-f]{64}", s) for s in salts), salts
        assert len(set(salts)) == 2
        assert new.read_sync(lambda c: accounts.password_verifiers_of(c, users[0].id)) == ("h", None)
        # A portal made after the migration gets one too.
        made = new.write_sync(lambda c: accounts.create_portal(c, "new.example.com", is_default=False))
        assert new.read_sync(lambda c: accounts.password_hash_salt_of(c, made.id)) not in (None, "", *salts)
    finally:
        new.dispose()


def _downgrade(db: Database, revision: str) -> None:
    from alembic import command

    config = _alembic_config()
    with db.engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
        conn.commit()
    assert _revision(db) == revision


def test_migration_0003_goes_back_to_0002_keeping_portals_and_users(database_url: str) -> None:
    ids = _old_database(database_url)
    db = Database(database_url)
    try:
        db.migrate("0003")
        _downgrade(db, "0002")
        columns = db.read_sync(
            lambda c: {t: {col["name"] for col in sa.inspect(c).get_columns(t)} for t in ("portals", "users")}
        )
        assert "password_hash_salt" not in columns["portals"] and "client_hash_verifier" not in columns["users"]
        joined = sa.text("SELECT p.hostname, u.email FROM users u JOIN portals p ON p.id = u.portal_id")
        rows = db.read_sync(lambda c: c.execute(joined).all())
        assert [tuple(r) for r in rows] == [("kept.example.com", "a@example.com")]
        assert len(ids) == db.read_sync(lambda c: c.execute(sa.text("SELECT count(*) FROM portals")).scalar())
    finally:
        db.dispose()


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



def test_migration_0009_records_the_keys_of_the_secrets_already_stored(database_url: str) -> None:
    ids = _old_database(database_url)
    db = Database(database_url)
    try:
        db.migrate("0005")
        row = {
            "host": "smtp.example.com", "port": 587, "sender_address": "a@example.com", "sender_display_name": "",
            "credentials_user_name": "u", "enable_ssl": True, "enable_auth": True, "use_ntlm": False,
            "updated_at": datetime.now(UTC),
        }  # fmt: skip
        insert = sa.text(
            "INSERT INTO smtp_settings (portal_id, host, port, sender_address, sender_display_name, credentials_user_name,"
            " enable_ssl, enable_auth, use_ntlm, updated_at, password_ciphertext, oauth2_client_secret_ciphertext)"
            " VALUES (:portal_id, :host, :port, :sender_address, :sender_display_name, :credentials_user_name,"
            " :enable_ssl, :enable_auth, :use_ntlm, :updated_at, :password, :client_secret)"
        )
        db.write_sync(lambda c: c.execute(insert, {**row, "portal_id": ids["kept.example.com"], "password": "v1.k1-aaaa0001.AAAA", "client_secret": "v1.k3-cccc0003.AAAA"}))
        db.write_sync(lambda c: c.execute(insert, {**row, "portal_id": ids["other.example.com"], "password": "v1.k1-aaaa0001.BBBB", "client_secret": None}))
        db.migrate()
        recorded = db.read_sync(lambda c: sorted(r[0] for r in c.execute(sa.text("SELECT key_id FROM encryption_keys"))))
        assert recorded == ["k1-aaaa0001", "k3-cccc0003"]
    finally:
        db.dispose()


def test_migration_0010_leaves_users_enabled_and_keys_unused_and_goes_back(database_url: str) -> None:
    ids = _old_database(database_url)
    db = Database(database_url)
    try:
        db.migrate("0009")
        db.migrate()
        kept = db.read_sync(lambda c: accounts.list_users(c, ids["kept.example.com"]))
        assert [(u.email, u.disabled) for u in kept] == [("a@example.com", False)]
        db.write_sync(lambda c: accounts.create_api_key(c, kept[0], "key_000000000001", "h" * 64))
        assert [k["last_used_at"] for k in db.read_sync(lambda c: accounts.list_api_keys(c, ids["kept.example.com"]))] == [None]
        _downgrade(db, "0009")
        columns = db.read_sync(
            lambda c: {t: {col["name"] for col in sa.inspect(c).get_columns(t)} for t in ("users", "api_keys")}
        )
        assert "disabled" not in columns["users"] and "last_used_at" not in columns["api_keys"]
        assert db.read_sync(lambda c: c.execute(sa.text("SELECT count(*) FROM api_keys")).scalar()) == 1
    finally:
        db.dispose()


def _outbox_row(conn, portal_id: int, *, key: str, api_key_id: str | None, user_id: int | None) -> str:  # type: ignore[no-untyped-def]
    """A keyed message as revision 0005 wrote it (no caller column); its id."""
    now = datetime.now(UTC)
    message_id = uuid.uuid4().hex
    row = {
        "id": message_id, "portal_id": portal_id, "user_id": user_id, "api_key_id": api_key_id, "status": "queued",
        "sender": "s@x.test", "recipients": "[]", "content": b"x", "smtputf8": False, "to_addresses": "[]",
        "cc_addresses": "[]", "subject": "s", "message_id": "<m@x.test>", "size": 1, "idempotency_key": key,
        "attempts": 0, "created_at": now, "queued_at": now, "next_attempt_at": now,
    }
    conn.execute(sa.table("outbox_messages", *(sa.column(c) for c in row)).insert().values(row))
    return message_id


def test_migration_0006_gives_existing_keys_their_caller_and_goes_back_keeping_the_oldest(database_url: str) -> None:
    ids = _old_database(database_url)
    portal = ids["kept.example.com"]
    db = Database(database_url)
    try:
        db.migrate("0005")
        by_key = db.write_sync(lambda c: _outbox_row(c, portal, key="order-42", api_key_id="k1", user_id=1))
        by_user = db.write_sync(lambda c: _outbox_row(c, portal, key="order-43", api_key_id=None, user_id=1))
        db.migrate()
        callers = dict(db.read_sync(lambda c: c.execute(sa.text("SELECT id, idempotency_caller FROM outbox_messages")).all()))
        assert callers == {by_key: "key:k1", by_user: "user:1"}
        # Now another caller may use the same key; the first caller still gets its own message.
        other = outbox.NewMessage(
            id=uuid.uuid4().hex, portal_id=portal, user_id=1, api_key_id="k2", sender="s@x.test", recipients=("a@x.test",),
            content=b"y", smtputf8=False, to=("a@x.test",), cc=(), subject="t", message_id="<n@x.test>", idempotency_key="order-42",
        )
        record, is_new = db.write_sync(lambda c: outbox.enqueue(c, other))
        assert is_new and record.id == other.id
        repeat, is_new = db.write_sync(lambda c: outbox.enqueue(c, msgspec.structs.replace(other, id=uuid.uuid4().hex, api_key_id="k1")))
        assert not is_new and repeat.id == by_key

        _downgrade(db, "0005")
        keys = dict(db.read_sync(lambda c: c.execute(sa.text("SELECT id, idempotency_key FROM outbox_messages")).all()))
        assert keys == {by_key: "order-42", by_user: "order-43", other.id: None}
    finally:
        db.dispose()
