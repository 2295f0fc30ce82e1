"""Setting a user's password: the new hash is stored and exactly that user's sessions end, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from smtpsettings.domain.accounts import Role, User
from smtpsettings.domain.errors import BadArgument, NotFound
from smtpsettings.domain.passwords import hash_secret, verify_password
from smtpsettings.services.accounts import AccountsService
from smtpsettings.store import accounts
from smtpsettings.store.database import Database, utcnow

HOST = "reset.example.com"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


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
