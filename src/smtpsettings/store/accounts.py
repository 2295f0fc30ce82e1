"""Portals, users, sessions and API keys in the database. Functions of a Connection; no HTTP here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.domain.accounts import Portal, Role, User
from smtpsettings.domain.passwords import new_client_hash_salt
from smtpsettings.store.database import Database, Prepared, utcnow
from smtpsettings.store.tables import (
    api_keys,
    audit_log,
    outbox_messages,
    portals,
    sessions,
    smtp_settings,
    test_jobs,
    users,
)

__all__ = (
    "Alongside",
    "DuplicateError",
    "Found",
    "count_enabled_owners",
    "count_managers",
    "create_api_key",
    "create_portal",
    "create_session",
    "create_session_if_verified",
    "create_user",
    "delete_expired_sessions",
    "delete_portal",
    "delete_session",
    "delete_sessions_of_user",
    "delete_user",
    "find_portal_for_host",
    "get_portal_by_hostname",
    "get_user_by_email",
    "is_live_api_key",
    "list_api_keys",
    "list_portals",
    "list_users",
    "password_hash_of",
    "password_hash_salt_of",
    "password_verifiers_of",
    "portal_contents",
    "principal_by_api_key",
    "principal_by_session",
    "revoke_api_key",
    "set_client_hash_verifier",
    "set_password_hash",
    "set_user_disabled",
    "set_user_email",
    "set_user_role",
    "touch_api_key",
)


class DuplicateError(Exception):
    """The row would break a uniqueness rule (same hostname, same email in a portal)."""


_PORTAL_COLUMNS = (portals.c.id, portals.c.hostname, portals.c.is_default)


def _portal(row: tuple[Any, ...]) -> Portal:
    portal_id, hostname, is_default = row
    return Portal(id=portal_id, hostname=hostname, is_default=is_default)


def _user(row: Any) -> User:
    return User(
        id=row.id, portal_id=row.portal_id, email=row.email, display_name=row.display_name, role=Role(row.role), disabled=row.disabled
    )


def create_portal(conn: Connection, hostname: str, *, is_default: bool, password_hash_salt: str | None = None) -> Portal:
    """A new portal, with a new random client-hash salt unless one is given."""
    if is_default:
        conn.execute(portals.update().values(is_default=False))
    try:
        with conn.begin_nested():
            new_id = conn.execute(
                portals.insert().values(
                    hostname=hostname,
                    is_default=is_default,
                    created_at=utcnow(),
                    password_hash_salt=password_hash_salt or new_client_hash_salt(),
                )
            ).inserted_primary_key[0]
    except sa.exc.IntegrityError as exc:
        raise DuplicateError(f"a portal for {hostname} already exists") from exc
    return Portal(id=new_id, hostname=hostname, is_default=is_default)


def list_portals(conn: Connection) -> list[Portal]:
    return [_portal(r) for r in conn.execute(sa.select(*_PORTAL_COLUMNS).order_by(portals.c.id))]


def get_portal_by_hostname(conn: Connection, hostname: str) -> Portal | None:
    row = _BY_HOSTNAME.row(conn, {"hostname": hostname})
    return _portal(row) if row else None


_BY_HOSTNAME = Prepared(sa.select(*_PORTAL_COLUMNS).where(portals.c.hostname == sa.bindparam("hostname")))
_DEFAULT_PORTAL = Prepared(sa.select(*_PORTAL_COLUMNS).where(portals.c.is_default.is_(True)).limit(1))


def find_portal_for_host(conn: Connection, hostname: str) -> Portal | None:
    """The portal answering ``hostname``: its own, else the default portal, else None.

    Two indexed lookups rather than one OR query, which the planners answer with a full scan.
    """
    row = _BY_HOSTNAME.row(conn, {"hostname": hostname}) or _DEFAULT_PORTAL.row(conn, {})
    return _portal(row) if row else None


def create_user(
    conn: Connection,
    portal_id: int,
    *,
    email: str,
    display_name: str,
    role: Role,
    password_hash: str,
    client_hash_verifier: str | None = None,
) -> User:
    try:
        with conn.begin_nested():
            new_id = conn.execute(
                users.insert().values(
                    portal_id=portal_id,
                    email=email,
                    display_name=display_name,
                    role=role.value,
                    password_hash=password_hash,
                    client_hash_verifier=client_hash_verifier,
                    created_at=utcnow(),
                )
            ).inserted_primary_key[0]
    except sa.exc.IntegrityError as exc:
        raise DuplicateError(f"a user {email} already exists in this portal") from exc
    return User(id=new_id, portal_id=portal_id, email=email, display_name=display_name, role=role)


def list_users(conn: Connection, portal_id: int) -> list[User]:
    return [_user(r) for r in conn.execute(users.select().where(users.c.portal_id == portal_id).order_by(users.c.id))]


def get_user_by_email(conn: Connection, portal_id: int, email: str) -> User | None:
    row = conn.execute(users.select().where(users.c.portal_id == portal_id, users.c.email == email)).first()
    return _user(row) if row else None


def password_hash_of(conn: Connection, user_id: int) -> str | None:
    return conn.execute(sa.select(users.c.password_hash).where(users.c.id == user_id)).scalar()


def password_verifiers_of(conn: Connection, user_id: int) -> tuple[str | None, str | None]:
    """``(password_hash, client_hash_verifier)`` of a user; ``(None, None)`` when there is no such user."""
    row = conn.execute(sa.select(users.c.password_hash, users.c.client_hash_verifier).where(users.c.id == user_id)).first()
    return (row[0], row[1]) if row else (None, None)


def password_hash_salt_of(conn: Connection, portal_id: int) -> str | None:
    return conn.execute(sa.select(portals.c.password_hash_salt).where(portals.c.id == portal_id)).scalar()


def set_password_hash(conn: Connection, user_id: int, password_hash: str, client_hash_verifier: str | None = None) -> None:
    """A new password. Both verifiers are replaced together: the old password's client hash must not
    outlive it (None leaves the new one to be derived at the next password sign-in)."""
    conn.execute(
        users.update().where(users.c.id == user_id).values(password_hash=password_hash, client_hash_verifier=client_hash_verifier)
    )


def set_client_hash_verifier(conn: Connection, user_id: int, verified_password_hash: str, client_hash_verifier: str) -> bool:
    """Store the client-hash verifier of a user who has none, derived from the password just verified.

    Only while ``verified_password_hash`` is still the user's: a password set meanwhile wins, and the
    verifier of the old one is not written over it.
    """
    result = conn.execute(
        users.update()
        .where(users.c.id == user_id, users.c.password_hash == verified_password_hash, users.c.client_hash_verifier.is_(None))
        .values(client_hash_verifier=client_hash_verifier)
    )
    return result.rowcount == 1


def create_session(conn: Connection, user: User, token_hash: str, expires_at: datetime) -> None:
    conn.execute(
        sessions.insert().values(
            token_hash=token_hash, portal_id=user.portal_id, user_id=user.id, created_at=utcnow(), expires_at=expires_at
        )
    )


def create_session_if_verified(
    conn: Connection,
    user: User,
    token_hash: str,
    expires_at: datetime,
    *,
    column: Literal["password_hash", "client_hash_verifier"],
    verified: str,
) -> bool:
    """Open a session only if the verifier a sign-in checked (``users.<column>``) is still the user's
    (and the user has not been disabled meanwhile).

    The check and the insert are one statement, and on PostgreSQL it share-locks the user's row: a
    password set by a transaction still running makes it wait, then see the new hash and insert nothing;
    one set after it deletes the session it made. Either way a reset is final. False when nothing was
    inserted (the password changed since it was verified).
    """
    verifier = users.c[column]
    source = (
        sa.select(
            sa.literal(token_hash, sessions.c.token_hash.type),
            users.c.portal_id,
            users.c.id,
            sa.literal(utcnow(), sessions.c.created_at.type),
            sa.literal(expires_at, sessions.c.expires_at.type),
        )
        .where(users.c.id == user.id, verifier == verified, users.c.disabled.is_(False))
        .with_for_update(read=True)
    )
    columns = [sessions.c.token_hash, sessions.c.portal_id, sessions.c.user_id, sessions.c.created_at, sessions.c.expires_at]
    # RETURNING rather than rowcount, which SQLAlchemy 2.1 with psycopg leaves at -1 for a Core INSERT … SELECT.
    return conn.execute(sessions.insert().from_select(columns, source).returning(sessions.c.token_hash)).first() is not None


_PRINCIPAL_COLUMNS = (portals.c.id, portals.c.hostname, portals.c.is_default, users.c.id, users.c.email, users.c.display_name, users.c.role)

T = TypeVar("T")


class Alongside(Generic[T]):
    """A portal's own row of another table, read in the same statement as the caller (a LEFT JOIN on the portal).

    Nearly every request reads the caller and then one row of its portal's data (a GET of the settings reads
    them). One statement instead of two saves a driver call on SQLite and a network round trip on
    PostgreSQL, on every such request. ``parse`` gets the row's columns, or None when the portal has no row.
    """

    __slots__ = ("_statements", "by_portal", "columns", "parse", "table")

    def __init__(self, table: sa.Table, columns: tuple[Any, ...], parse: Callable[[tuple[Any, ...] | None], T]) -> None:
        self.table = table
        self.columns = columns
        self.parse = parse
        self._statements: dict[str, Prepared] = {}
        self.by_portal = Prepared(sa.select(*columns).where(table.c.portal_id == sa.bindparam("portal_id")))
        """The same columns of one portal's row on their own (``portal_id``)."""

    def joined(self, kind: str, select: sa.Select[Any]) -> Prepared:
        """``select`` (a caller lookup of ``kind``) with this table's columns added, compiled once per kind."""
        statement = self._statements.get(kind)
        if statement is None:
            table = self.table
            statement = self._statements[kind] = Prepared(
                select.outerjoin(table, table.c.portal_id == portals.c.id).add_columns(table.c.portal_id, *self.columns)
            )
        return statement

    def value(self, tail: tuple[Any, ...]) -> T:
        """The parsed row from the columns this added to a caller lookup (the joined key first)."""
        return self.parse(tail[1:] if tail[0] is not None else None)

    async def of_portal(self, db: Database, portal_id: int) -> T:
        """The same, read on its own: for callers found some other way (a password sign-in)."""
        return self.parse(await db.fetch_one(self.by_portal, portal_id=portal_id))


class Found(NamedTuple):
    """A caller found by a credential: the portal, the user, the API key's id and scope, and what was read alongside."""

    portal: Portal
    user: User
    api_key_id: str | None = None
    scope: str | None = None
    alongside: Any = None


def _principal_of_host(credential: sa.Table, *conditions: Any, extra: tuple[Any, ...] = ()) -> sa.Select[Any]:
    """Portal by hostname ⋈ a credential row of that portal ⋈ its enabled user: one indexed statement."""
    joined = portals.join(credential, credential.c.portal_id == portals.c.id).join(users, users.c.id == credential.c.user_id)
    where = (portals.c.hostname == sa.bindparam("hostname"), users.c.disabled.is_(False), *conditions)
    return sa.select(*_PRINCIPAL_COLUMNS, *extra).select_from(joined).where(*where)


_SESSION_SELECT = _principal_of_host(
    sessions,
    sessions.c.token_hash == sa.bindparam("token_hash"),
    sessions.c.expires_at > sa.bindparam("now", type_=sessions.c.expires_at.type),
)
_API_KEY_SELECT = _principal_of_host(
    api_keys,
    api_keys.c.key_hash == sa.bindparam("key_hash"),
    api_keys.c.revoked_at.is_(None),
    extra=(api_keys.c.id, api_keys.c.scope),
)
_HOST_SESSION_USER = Prepared(_SESSION_SELECT)
_HOST_API_KEY_USER = Prepared(_API_KEY_SELECT)


def _portal_and_user(row: tuple[Any, ...]) -> tuple[Portal, User]:
    portal_id, hostname, is_default, user_id, email, display_name, role = row[:7]
    portal = Portal(id=portal_id, hostname=hostname, is_default=is_default)
    return portal, User(id=user_id, portal_id=portal_id, email=email, display_name=display_name, role=Role(role))


async def principal_by_session(
    db: Database, hostname: str, token_hash: str, alongside: Alongside[Any] | None = None
) -> Found | None:
    """The portal named ``hostname`` and the user of a live session token of it, in one indexed statement.

    This is every signed-in request's lookup; ``alongside`` adds a row of the portal's own data to it. None
    covers all the rarer cases (an unknown host, which the default portal may answer; a bad or expired
    token): :func:`find_portal_for_host` tells them apart.
    """
    statement = alongside.joined("session", _SESSION_SELECT) if alongside else _HOST_SESSION_USER
    row = await db.fetch_one(statement, hostname=hostname, token_hash=token_hash, now=utcnow())
    if row is None:
        return None
    portal, user = _portal_and_user(row)
    return Found(portal, user, alongside=alongside.value(row[7:]) if alongside else None)


async def principal_by_api_key(
    db: Database, hostname: str, key_hash: str, alongside: Alongside[Any] | None = None
) -> Found | None:
    """As :func:`principal_by_session`, for an unrevoked API key; also the key's id and scope."""
    statement = alongside.joined("apikey", _API_KEY_SELECT) if alongside else _HOST_API_KEY_USER
    row = await db.fetch_one(statement, hostname=hostname, key_hash=key_hash)
    if row is None:
        return None
    portal, user = _portal_and_user(row)
    return Found(portal, user, row[7], row[8], alongside.value(row[9:]) if alongside else None)


def is_live_api_key(conn: Connection, hostname: str, key_id: str) -> bool:
    """Whether ``key_id`` names an unrevoked API key of the portal named ``hostname``."""
    joined = api_keys.join(portals, portals.c.id == api_keys.c.portal_id)
    found = conn.execute(
        sa.select(api_keys.c.id)
        .select_from(joined)
        .where(portals.c.hostname == hostname, api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
    ).first()
    return found is not None


def delete_session(conn: Connection, token_hash: str) -> None:
    conn.execute(sessions.delete().where(sessions.c.token_hash == token_hash))


def delete_sessions_of_user(conn: Connection, user_id: int) -> int:
    """End every session (token) of a user; the number ended."""
    return conn.execute(sessions.delete().where(sessions.c.user_id == user_id)).rowcount


def delete_expired_sessions(conn: Connection) -> int:
    return conn.execute(sessions.delete().where(sessions.c.expires_at <= utcnow())).rowcount


def create_api_key(conn: Connection, user: User, key_id: str, key_hash: str, scope: str | None = None) -> None:
    conn.execute(
        api_keys.insert().values(
            id=key_id, key_hash=key_hash, portal_id=user.portal_id, user_id=user.id, created_at=utcnow(), scope=scope
        )
    )


def revoke_api_key(conn: Connection, key_id: str) -> bool:
    result = conn.execute(
        api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return result.rowcount == 1


def touch_api_key(conn: Connection, key_id: str, now: datetime, every_seconds: float) -> bool:
    """Record that a key authenticated at ``now``, unless that was already recorded less than
    ``every_seconds`` ago: a busy key costs one row update per interval, not one per request."""
    stale = sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - timedelta(seconds=every_seconds))
    return conn.execute(api_keys.update().where(api_keys.c.id == key_id, stale).values(last_used_at=now)).rowcount == 1


def list_api_keys(conn: Connection, portal_id: int) -> list[dict[str, object]]:
    rows = conn.execute(
        sa.select(
            api_keys.c.id, users.c.email, api_keys.c.scope, api_keys.c.created_at, api_keys.c.last_used_at, api_keys.c.revoked_at
        )
        .join(users, users.c.id == api_keys.c.user_id)
        .where(api_keys.c.portal_id == portal_id)
        .order_by(api_keys.c.created_at)
    )
    return [dict(r._mapping) for r in rows]


# -- the operator's changes to users and portals (the command line) ---------------------------------------


def set_user_email(conn: Connection, user_id: int, email: str) -> None:
    try:
        with conn.begin_nested():
            conn.execute(users.update().where(users.c.id == user_id).values(email=email))
    except sa.exc.IntegrityError as exc:
        raise DuplicateError(f"a user {email} already exists in this portal") from exc


def set_user_role(conn: Connection, user_id: int, role: Role) -> None:
    conn.execute(users.update().where(users.c.id == user_id).values(role=role.value))


def set_user_disabled(conn: Connection, user_id: int, disabled: bool) -> None:
    conn.execute(users.update().where(users.c.id == user_id).values(disabled=disabled))


def count_enabled_owners(conn: Connection, portal_id: int) -> int:
    """How many of the portal's owners are not disabled."""
    query = (
        sa.select(sa.func.count())
        .select_from(users)
        .where(users.c.portal_id == portal_id, users.c.role == Role.OWNER.value, users.c.disabled.is_(False))
    )
    return int(conn.execute(query).scalar_one())


def count_managers(conn: Connection, portal_id: int) -> int:
    """How many of the portal's users may manage its settings (owners and admins)."""
    managing = [r.value for r in Role if r.manages_settings]
    query = sa.select(sa.func.count()).select_from(users).where(users.c.portal_id == portal_id, users.c.role.in_(managing))
    return int(conn.execute(query).scalar_one())


def delete_user(conn: Connection, user_id: int) -> None:
    """The user, its sessions and its API keys (named here too: SQLite enforces the cascade only when asked)."""
    conn.execute(sessions.delete().where(sessions.c.user_id == user_id))
    conn.execute(api_keys.delete().where(api_keys.c.user_id == user_id))
    conn.execute(users.delete().where(users.c.id == user_id))


def _portal_tables() -> tuple[sa.Table, ...]:
    # Children first, so the deletion holds without relying on cascades.
    return (sessions, api_keys, outbox_messages, audit_log, test_jobs, smtp_settings, users)


def portal_contents(conn: Connection, portal_id: int) -> dict[str, int]:
    """How many rows of each table belong to the portal, by table name."""
    return {
        t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.portal_id == portal_id)).scalar_one())
        for t in _portal_tables()
    }


def delete_portal(conn: Connection, portal_id: int) -> None:
    """The portal and everything of it: users, sessions, keys, settings, messages, audit rows."""
    for table in _portal_tables():
        conn.execute(table.delete().where(table.c.portal_id == portal_id))
    conn.execute(portals.delete().where(portals.c.id == portal_id))
