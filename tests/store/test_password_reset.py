"""Setting a user's password: the new hashes are stored, exactly that user's sessions and lockout end, and a
sign-in that overlaps it opens no session afterwards; on both backends."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from smtpsettings.config import Settings
from smtpsettings.domain.accounts import Portal, Role, User
from smtpsettings.domain.errors import BadArgument, NotAuthenticated, NotFound, TooManyRequests
from smtpsettings.domain.passwords import SignInSecret, client_password_hash, hash_secret, verify_password
from smtpsettings.services.accounts import AccountsService
from smtpsettings.services.auth import AuthService
from smtpsettings.store import accounts, tables
from smtpsettings.store.database import Database, utcnow

HOST = "reset.example.com"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    # On the test's own loop: the PostgreSQL lookup pool's tasks live there, and left open they keep the
    # loop's teardown waiting for good.
    await database.dispose_async()


def make_users(db: Database) -> tuple[User, User]:
    def create(conn):  # type: ignore[no-untyped-def]
        portal = accounts.create_portal(conn, HOST, is_default=False)
        return tuple(
            accounts.create_user(conn, portal.id, email=f"{name}@{HOST}", display_name=name, role=Role.ADMIN, password_hash="old")
            for name in ("ann", "bob")
        )

    return db.write_sync(create)  # type: ignore[no-any-return]


def open_sessions(db: Database, user: User, *tokens: str) -> None:
    def create(conn):  # type: ignore[no-untyped-def]
        for token in tokens:
            accounts.create_session(conn, user, hash_secret(token), utcnow() + timedelta(hours=1))

    db.write_sync(create)


async def signed_in(db: Database, token: str) -> bool:
    return await accounts.principal_by_session(db, HOST, hash_secret(token)) is not None


async def test_deleting_a_users_sessions_ends_theirs_only(db: Database) -> None:
    ann, bob = make_users(db)
    open_sessions(db, ann, "ann-1", "ann-2")
    open_sessions(db, bob, "bob-1")
    assert db.write_sync(lambda c: accounts.delete_sessions_of_user(c, ann.id)) == 2
    assert not await signed_in(db, "ann-1")
    assert not await signed_in(db, "ann-2")
    assert await signed_in(db, "bob-1")


def test_set_password_hash_changes_that_users_hash_only(db: Database) -> None:
    ann, bob = make_users(db)
    db.write_sync(lambda c: accounts.set_password_hash(c, ann.id, "new"))
    assert db.read_sync(lambda c: accounts.password_hash_of(c, ann.id)) == "new"
    assert db.read_sync(lambda c: accounts.password_hash_of(c, bob.id)) == "old"


async def test_the_service_hashes_the_new_password_and_signs_the_user_out(db: Database) -> None:
    ann, bob = make_users(db)
    open_sessions(db, ann, "ann-1")
    open_sessions(db, bob, "bob-1")
    assert AccountsService(db).set_password(HOST, "ANN@reset.example.com", "a-New-Secret-9") == 1
    stored = db.read_sync(lambda c: accounts.password_hash_of(c, ann.id))
    assert stored is not None and verify_password(stored, "a-New-Secret-9")
    assert not await signed_in(db, "ann-1")
    assert await signed_in(db, "bob-1")


@pytest.mark.parametrize(
    ("email", "password", "error"),
    [("ann@reset.example.com", "short", BadArgument), ("nobody@reset.example.com", "a-New-Secret-9", NotFound)],
)
async def test_a_refused_reset_changes_nothing(db: Database, email: str, password: str, error: type[Exception]) -> None:
    ann, _ = make_users(db)
    open_sessions(db, ann, "ann-1")
    with pytest.raises(error):
        AccountsService(db).set_password(HOST, email, password)
    assert db.read_sync(lambda c: accounts.password_hash_of(c, ann.id)) == "old"
    assert await signed_in(db, "ann-1")


# -- the client-hash verifier, the lockout and sign-ins overlapping a reset --------------------------

PASSWORD = "the-Old-Secret-1"
NEW_PASSWORD = "a-New-Secret-9"


def make_real_users(db: Database) -> tuple[User, User]:
    """Ann and Bob with the password PASSWORD, made as `user create` makes them."""
    service = AccountsService(db)
    service.create_portal(HOST, is_default=False)
    return tuple(  # type: ignore[return-value]
        service.create_user(HOST, email=f"{name}@{HOST}", password=PASSWORD, role=Role.ADMIN) for name in ("ann", "bob")
    )


def auth_service(db: Database) -> AuthService:
    return AuthService(db, Settings(login_max_failures_per_account=3))


def test_setting_a_password_stores_argon2_of_it_and_of_its_client_hash_only(db: Database) -> None:
    ann, _ = make_real_users(db)
    AccountsService(db).set_password(HOST, ann.email, NEW_PASSWORD)
    salt = db.read_sync(lambda c: accounts.password_hash_salt_of(c, ann.portal_id))
    password_hash, client_verifier = db.read_sync(lambda c: accounts.password_verifiers_of(c, ann.id))
    assert salt is not None and password_hash is not None and client_verifier is not None
    client_hash = client_password_hash(NEW_PASSWORD, salt)
    assert verify_password(password_hash, NEW_PASSWORD)
    assert verify_password(client_verifier, client_hash)
    assert not verify_password(client_verifier, client_password_hash(PASSWORD, salt))  # the old one's is gone
    # Nothing at rest is the client hash itself, or the password.
    assert client_verifier.startswith("$argon2id$") and client_hash not in client_verifier


async def test_setting_a_password_ends_the_accounts_lockout_and_no_other(db: Database) -> None:
    ann, bob = make_real_users(db)
    auth = auth_service(db)
    for user in (ann, bob):
        for _ in range(3):
            with pytest.raises(NotAuthenticated):
                await auth.sign_in(portal_of(db), user.email, SignInSecret("wrong guess"), "192.0.2.1")
    with pytest.raises(TooManyRequests):
        await auth.sign_in(portal_of(db), ann.email, SignInSecret(PASSWORD), "192.0.2.2")

    AccountsService(db).set_password(HOST, ann.email, NEW_PASSWORD)

    token, _ = await auth.sign_in(portal_of(db), ann.email, SignInSecret(NEW_PASSWORD), "192.0.2.2")
    assert await signed_in(db, token)
    with pytest.raises(TooManyRequests):  # Bob's lockout is his own
        await auth.sign_in(portal_of(db), bob.email, SignInSecret(PASSWORD), "192.0.2.2")


async def test_a_sign_in_verified_before_a_reset_opens_no_session_after_it(db: Database) -> None:
    ann, _ = make_real_users(db)
    auth = auth_service(db)
    for secret in (SignInSecret(PASSWORD), SignInSecret(client_hash_of(db, PASSWORD), is_client_hash=True)):
        AccountsService(db).set_password(HOST, ann.email, PASSWORD)
        verified = await auth.verify(portal_of(db), ann.email, secret, "192.0.2.1")
        # The operator resets the password while the sign-in is between its check and its session.
        AccountsService(db).set_password(HOST, ann.email, NEW_PASSWORD)
        with pytest.raises(NotAuthenticated):
            await auth.open_session(verified)
        assert sessions_of(db, ann) == 0


async def test_a_verified_sign_in_opens_its_session_when_nothing_changed(db: Database) -> None:
    ann, _ = make_real_users(db)
    auth = auth_service(db)
    verified = await auth.verify(portal_of(db), ann.email, SignInSecret(client_hash_of(db, PASSWORD), is_client_hash=True), "x")
    token, _ = await auth.open_session(verified)
    assert await signed_in(db, token)


def test_a_session_insert_waits_for_a_running_reset_and_then_inserts_nothing(db: Database) -> None:
    """The check-and-insert against a reset still in its transaction: it must see the reset's outcome.

    Without the share lock, PostgreSQL would check the old hash in its snapshot, insert, and commit a
    session that the reset's DELETE (already run) never saw.
    """
    ann, _ = make_real_users(db)
    old_hash, _ = db.read_sync(lambda c: accounts.password_verifiers_of(c, ann.id))
    assert old_hash is not None
    reset_done, release = threading.Event(), threading.Event()

    def reset(conn):  # type: ignore[no-untyped-def]
        accounts.set_password_hash(conn, ann.id, "new-hash")
        accounts.delete_sessions_of_user(conn, ann.id)
        reset_done.set()
        assert release.wait(30)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        resetting = pool.submit(db.write_sync, reset)
        assert reset_done.wait(30)
        opening = pool.submit(
            db.write_sync,
            lambda c: accounts.create_session_if_verified(
                c, ann, hash_secret("raced"), utcnow() + timedelta(hours=1), column="password_hash", verified=old_hash
            ),
        )
        wait_until_blocked(db)
        release.set()
        resetting.result(30)
        assert opening.result(30) is False
    assert sessions_of(db, ann) == 0


def wait_until_blocked(db: Database) -> None:
    """Until the second transaction waits for the first (PostgreSQL shows it; SQLite's busy wait does not)."""
    if db.is_sqlite:
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 30
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
    while time.monotonic() < deadline:
        if db.read_sync(lambda c: c.execute(query).scalar()):
            return
        time.sleep(0.02)
    raise AssertionError("the session insert never waited for the reset's lock")


def portal_of(db: Database) -> Portal:
    portal = db.read_sync(lambda c: accounts.get_portal_by_hostname(c, HOST))
    assert portal is not None
    return portal


def client_hash_of(db: Database, password: str) -> str:
    salt = db.read_sync(lambda c: accounts.password_hash_salt_of(c, portal_of(db).id))
    assert salt is not None
    return client_password_hash(password, salt)


def sessions_of(db: Database, user: User) -> int:
    return int(db.read_sync(lambda c: c.execute(sa.select(sa.func.count()).where(tables.sessions.c.user_id == user.id)).scalar()))
