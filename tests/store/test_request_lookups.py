"""The request path's single-statement lookups and the write-transaction discipline, on both backends."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from sqlalchemy.dialects import sqlite

from smtpsettings.domain.accounts import Role
from smtpsettings.domain.passwords import hash_secret
from smtpsettings.domain.smtp import SmtpSettings
from smtpsettings.store import accounts, smtp
from smtpsettings.store.database import Database, StoreUnavailable, _bind_processor, utcnow
from smtpsettings.store.tables import portals, sessions

SETTINGS = SmtpSettings(
    host="smtp.example.com",
    port=587,
    sender_address="docspace@example.com",
    sender_display_name="DocSpace",
    credentials_user_name="mailer",
    enable_ssl=True,
    enable_auth=True,
    use_ntlm=False,
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    await database.dispose_async()


def make_user(db: Database, hostname: str, role: Role = Role.ADMIN) -> accounts.User:
    def create(conn):  # type: ignore[no-untyped-def]
        portal = accounts.create_portal(conn, hostname, is_default=False)
        return accounts.create_user(conn, portal.id, email=f"admin@{hostname}", display_name="Ada", role=role, password_hash="x")

    return db.write_sync(create)


def open_session(db: Database, user: accounts.User, token: str, lifetime: timedelta = timedelta(hours=1)) -> None:
    db.write_sync(lambda c: accounts.create_session(c, user, hash_secret(token), utcnow() + lifetime))


async def test_a_live_session_finds_its_portal_and_user(db: Database) -> None:
    user = make_user(db, "a.example.com", Role.OWNER)
    open_session(db, user, "token-a")

    found = await accounts.principal_by_session(db, "a.example.com", hash_secret("token-a"))

    assert found is not None
    portal, found_user = found.portal, found.user
    assert (portal.id, portal.hostname, portal.is_default) == (user.portal_id, "a.example.com", False)
    assert found_user == user
    assert found_user.role is Role.OWNER


async def test_a_token_finds_nobody_on_another_portal_or_when_expired(db: Database) -> None:
    a = make_user(db, "a.example.com")
    make_user(db, "b.example.com")
    open_session(db, a, "token-a")
    open_session(db, a, "expired", lifetime=timedelta(seconds=-1))

    assert (await accounts.principal_by_session(db, "b.example.com", hash_secret("token-a"))) is None
    assert (await accounts.principal_by_session(db, "a.example.com", hash_secret("expired"))) is None
    assert (await accounts.principal_by_session(db, "a.example.com", hash_secret("unknown"))) is None
    assert (await accounts.principal_by_session(db, "nowhere.example.com", hash_secret("token-a"))) is None


async def test_an_api_key_is_found_until_revoked(db: Database) -> None:
    user = make_user(db, "a.example.com")
    db.write_sync(lambda c: accounts.create_api_key(c, user, "key1", hash_secret("sk-secret")))

    found = await accounts.principal_by_api_key(db, "a.example.com", hash_secret("sk-secret"))
    assert found is not None and found.user == user

    db.write_sync(lambda c: accounts.revoke_api_key(c, "key1"))
    assert (await accounts.principal_by_api_key(db, "a.example.com", hash_secret("sk-secret"))) is None


def test_a_key_id_is_live_on_its_own_portal_until_revoked(db: Database) -> None:
    user = make_user(db, "a.example.com")
    make_user(db, "b.example.com")
    db.write_sync(lambda c: accounts.create_api_key(c, user, "key_live", hash_secret("sk-live")))

    def live(host: str, key_id: str) -> bool:
        return db.read_sync(lambda c: accounts.is_live_api_key(c, host, key_id))

    assert (live("a.example.com", "key_live"), live("b.example.com", "key_live"), live("a.example.com", "key_x")) == (
        True,
        False,
        False,
    )
    db.write_sync(lambda c: accounts.revoke_api_key(c, "key_live"))
    assert live("a.example.com", "key_live") is False


async def test_stored_settings_read_back_with_their_types(db: Database) -> None:
    user = make_user(db, "a.example.com")
    assert (await smtp.find_settings(db, user.portal_id)) is None

    db.write_sync(lambda c: smtp.put_settings(c, user.portal_id, SETTINGS, "v1.k.cipher"))

    stored = await smtp.find_settings(db, user.portal_id)
    assert stored is not None
    assert stored.settings == SETTINGS
    assert stored.settings.enable_ssl is True and stored.settings.use_ntlm is False
    assert stored.password_ciphertext == "v1.k.cipher"
    assert db.read_sync(lambda c: smtp.get_settings(c, user.portal_id)) == stored


async def test_a_failing_write_leaves_nothing_behind(db: Database) -> None:
    user = make_user(db, "a.example.com")

    def save_then_fail(conn):  # type: ignore[no-untyped-def]
        smtp.put_settings(conn, user.portal_id, SETTINGS, None)  # through the driver
        conn.execute(portals.update().where(portals.c.id == user.portal_id).values(hostname="renamed.example.com"))  # Core
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        db.write_sync(save_then_fail)

    assert (await smtp.find_settings(db, user.portal_id)) is None
    assert db.read_sync(lambda c: accounts.get_portal_by_hostname(c, "a.example.com")) is not None
    # and the handle is usable afterwards, for writes and reads alike
    db.write_sync(lambda c: smtp.put_settings(c, user.portal_id, SETTINGS, None))
    assert (await smtp.find_settings(db, user.portal_id)) is not None


def test_core_statements_and_savepoints_work_inside_a_write(db: Database) -> None:
    def create_two(conn):  # type: ignore[no-untyped-def]
        accounts.create_portal(conn, "one.example.com", is_default=False)
        with pytest.raises(accounts.DuplicateError):
            accounts.create_portal(conn, "one.example.com", is_default=False)  # rolled back to its savepoint
        accounts.create_portal(conn, "two.example.com", is_default=False)

    db.write_sync(create_two)

    names = [p.hostname for p in db.read_sync(accounts.list_portals)]
    assert names == ["one.example.com", "two.example.com"]


async def test_a_locked_sqlite_database_gives_store_unavailable_and_recovers(tmp_path: Path) -> None:
    path = f"{tmp_path}/locked.db"
    db = Database(f"sqlite:///{path}", timeout=0.2)
    db.migrate()
    user = make_user(db, "a.example.com")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="busy"):
            db.write_sync(lambda c: smtp.put_settings(c, user.portal_id, SETTINGS, None))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    db.write_sync(lambda c: smtp.put_settings(c, user.portal_id, SETTINGS, None))
    assert (await smtp.find_settings(db, user.portal_id)) is not None
    db.dispose()


def test_background_checkpoints_keep_the_write_ahead_log_from_growing(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    user = make_user(db, "a.example.com")
    db.start_background_checkpoints(interval=0.02)
    big = SmtpSettings(**{**msgspec.structs.asdict(SETTINGS), "sender_display_name": "x" * 200})
    try:
        assert db.read_sync(lambda c: c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()) == 0
        written = 0
        for _ in range(60):  # each save rewrites a page or more: MBs of log without checkpoints
            for _ in range(100):
                db.write_sync(lambda c: smtp.put_settings(c, user.portal_id, big, "c" * 2000))
            written += 100 * 4096
            time.sleep(0.03)
        wal = path.with_name(path.name + "-wal").stat().st_size
        assert wal < written / 4, (wal, written)
    finally:
        db.dispose()
    assert not any(t.name == "sqlite-checkpoint" for t in threading.enumerate())


async def test_an_unreachable_postgresql_gives_store_unavailable_within_the_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    db = Database(f"postgresql://nobody@127.0.0.1:{port}/none", timeout=1)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable):
            await smtp.find_settings(db, 1)
    finally:
        await db.dispose_async()
    assert time.monotonic() - started < 5


async def test_settings_ride_along_with_the_caller_in_one_statement(db: Database) -> None:
    """``SETTINGS_ALONGSIDE``: the caller's lookup also brings the portal's own settings, or None without any."""
    a = make_user(db, "a.example.com")
    b = make_user(db, "b.example.com")
    open_session(db, a, "token-a")
    db.write_sync(lambda c: accounts.create_api_key(c, a, "key-a", hash_secret("sk-a")))
    db.write_sync(lambda c: smtp.put_settings(c, b.portal_id, SETTINGS, "v1.k.b"))  # another portal's row only

    found = await accounts.principal_by_session(db, "a.example.com", hash_secret("token-a"), smtp.SETTINGS_ALONGSIDE)
    assert found is not None and found.user == a and found.alongside is None
    assert await smtp.SETTINGS_ALONGSIDE.of_portal(db, a.portal_id) is None

    db.write_sync(lambda c: smtp.put_settings(c, a.portal_id, SETTINGS, "v1.k.a", {}))
    for found in (
        await accounts.principal_by_session(db, "a.example.com", hash_secret("token-a"), smtp.SETTINGS_ALONGSIDE),
        await accounts.principal_by_api_key(db, "a.example.com", hash_secret("sk-a"), smtp.SETTINGS_ALONGSIDE),
    ):
        assert found is not None and found.user == a
        assert found.alongside == await smtp.find_settings(db, a.portal_id)
        assert found.alongside.password_ciphertext == "v1.k.a"
    key = await accounts.principal_by_api_key(db, "a.example.com", hash_secret("sk-a"), smtp.SETTINGS_ALONGSIDE)
    assert key is not None and (key.api_key_id, key.scope) == ("key-a", None)
    assert (await smtp.SETTINGS_ALONGSIDE.of_portal(db, b.portal_id)).password_ciphertext == "v1.k.b"  # type: ignore[union-attr]
    # Nothing is found for a bad credential, with or without a rider.
    assert await accounts.principal_by_session(db, "b.example.com", hash_secret("token-a"), smtp.SETTINGS_ALONGSIDE) is None


@pytest.mark.parametrize(
    "value",
    [
        datetime.now(UTC),
        datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: still six digits
        datetime(999, 12, 31, 23, 59, 59, 999_999),  # a three-digit year, naive
        datetime(2026, 6, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=5))),  # another offset: its fields, as SQLAlchemy
        date(2026, 1, 2),  # not a datetime: SQLAlchemy's own processor
        None,
    ],
)
def test_sqlite_datetimes_are_bound_as_sqlalchemy_writes_them(value: object) -> None:
    """The request path's faster datetime binding writes the text SQLAlchemy stores and compares against."""
    dialect = sqlite.dialect()
    column_type = sessions.c.expires_at.type
    assert _bind_processor(column_type, dialect)(value) == column_type._cached_bind_processor(dialect)(value)  # type: ignore[misc]
