"""Operator actions on portals, users and API keys (used by the CLI; the API only signs in)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from smtpsettings.domain.accounts import (
    API_KEY_SCOPES,
    SCOPE_MAIL_SEND,
    Portal,
    Role,
    User,
    normalize_email,
    normalize_hostname,
    valid_email,
)
from smtpsettings.domain.errors import BadArgument, NotFound
from smtpsettings.domain.passwords import hash_secret, new_api_key, new_client_hash_salt, password_verifiers
from smtpsettings.services.auth import login_account_bucket
from smtpsettings.store import accounts, ratelimit
from smtpsettings.store.database import Database

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ("AccountsService", "FirstStart")

MIN_PASSWORD_LENGTH = 8


class FirstStart:
    """What a first start created, to be shown once to the operator."""

    def __init__(self, portal: Portal, owner: User, password: str) -> None:
        self.portal, self.owner, self.password = portal, owner, password


class AccountsService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_portal(self, hostname: str, *, is_default: bool) -> Portal:
        host = normalize_hostname(hostname)
        if host is None or hostname.strip().lower().rstrip(".") != host:
            raise BadArgument(f"{hostname!r} is not a host name")
        try:
            return self._db.write_sync(lambda c: accounts.create_portal(c, host, is_default=is_default))
        except accounts.DuplicateError as exc:
            raise BadArgument(str(exc)) from None

    def list_portals(self) -> list[Portal]:
        return self._db.read_sync(accounts.list_portals)

    def portal(self, hostname: str) -> Portal:
        host = normalize_hostname(hostname) or hostname
        portal = self._db.read_sync(lambda c: accounts.get_portal_by_hostname(c, host))
        if portal is None:
            raise NotFound(f"no portal {hostname!r}")
        return portal

    def create_user(self, hostname: str, *, email: str, password: str, role: Role, name: str = "") -> User:
        portal = self.portal(hostname)
        email = normalize_email(email)
        if not valid_email(email):
            raise BadArgument(f"{email!r} is not an email address")
        password_hash, client_verifier = self._new_verifiers(portal, password)
        try:
            return self._db.write_sync(
                lambda c: accounts.create_user(
                    c,
                    portal.id,
                    email=email,
                    display_name=name or email.split("@")[0],
                    role=role,
                    password_hash=password_hash,
                    client_hash_verifier=client_verifier,
                )
            )
        except accounts.DuplicateError as exc:
            raise BadArgument(str(exc)) from None

    def set_password(self, hostname: str, email: str, password: str) -> int:
        """Give a user a new password and end all their sessions; the number of sessions ended.

        Ending the sessions is the point of a reset after a compromise: whoever signed in with the old
        password is signed out at once. API keys are separate credentials and stay (``revoke_api_key``).
        The account's failed sign-ins are forgotten too: an owner locked out by guessing (theirs or an
        attacker's) can sign in with the new password at once.
        """
        portal = self.portal(hostname)
        user = self._user(portal, email)
        password_hash, client_verifier = self._new_verifiers(portal, password)  # slow: outside the transaction

        def reset(conn):  # type: ignore[no-untyped-def]
            accounts.set_password_hash(conn, user.id, password_hash, client_verifier)
            ratelimit.reset(conn, login_account_bucket(portal.id, user.email))
            return accounts.delete_sessions_of_user(conn, user.id)

        return self._db.write_sync(reset)

    def list_users(self, hostname: str) -> list[User]:
        portal = self.portal(hostname)
        return self._db.read_sync(lambda c: accounts.list_users(c, portal.id))

    def create_api_key(self, hostname: str, email: str, scope: str | None = None) -> tuple[str, str]:
        """A new API key for a user: ``(key_id, key)``. Only the key's hash is stored.

        A send-only key (``mail.send``) is only useful to someone who may send the portal's mail.
        """
        portal = self.portal(hostname)
        user = self._user(portal, email)
        if scope is not None and scope not in API_KEY_SCOPES:
            raise BadArgument(f"unknown scope {scope!r}: use one of {', '.join(API_KEY_SCOPES)}")
        if scope == SCOPE_MAIL_SEND and not user.role.manages_settings:
            raise BadArgument(f"{user.email} is a {user.role.value}: only the owner and admins may send the portal's mail")
        key_id, key = new_api_key()
        self._db.write_sync(lambda c: accounts.create_api_key(c, user, key_id, hash_secret(key), scope))
        return key_id, key

    def _new_verifiers(self, portal: Portal, password: str) -> tuple[str, str]:
        """The argon2 hashes of a new password and of its client hash under the portal's salt."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise BadArgument(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
        salt = self._db.read_sync(lambda c: accounts.password_hash_salt_of(c, portal.id))
        if salt is None:
            raise NotFound(f"no portal {portal.hostname!r}")
        return password_verifiers(password, salt)

    def _user(self, portal: Portal, email: str) -> User:
        user = self._db.read_sync(lambda c: accounts.get_user_by_email(c, portal.id, normalize_email(email)))
        if user is None:
            raise NotFound(f"no user {email!r} in portal {portal.hostname}")
        return user

    def revoke_api_key(self, key_id: str) -> None:
        if not self._db.write_sync(lambda c: accounts.revoke_api_key(c, key_id)):
            raise NotFound(f"no active API key {key_id!r}")

    def first_start(self, owner_email: str) -> FirstStart | None:
        """On an empty database: a default portal ``localhost`` and its owner with a generated password."""

        def create(conn):  # type: ignore[no-untyped-def]
            if accounts.list_portals(conn):
                return None
            # The salt is chosen up front, so that the slow hashing runs before the transaction.
            portal = accounts.create_portal(conn, "localhost", is_default=True, password_hash_salt=salt)
            owner = accounts.create_user(
                conn,
                portal.id,
                email=normalize_email(owner_email),
                display_name="Owner",
                role=Role.OWNER,
                password_hash=password_hash,
                client_hash_verifier=client_verifier,
            )
            return FirstStart(portal, owner, password)

        if self._db.read_sync(accounts.list_portals):
            return None  # every start but the first: skip the slow hashing (create() checks again, atomically)
        password = secrets.token_urlsafe(12)
        salt = new_client_hash_salt()
        password_hash, client_verifier = password_verifiers(password, salt)
        return self._db.write_sync(create)

    # -- changes the operator makes from the command line ------------------------------------------------

    def list_api_keys(self, hostname: str) -> list[dict[str, object]]:
        """The portal's API keys: id, owner's email, scope, created, last used, revoked; never a secret or its hash."""
        portal = self.portal(hostname)
        return self._db.read_sync(lambda c: accounts.list_api_keys(c, portal.id))

    def set_email(self, hostname: str, email: str, new_email: str) -> User:
        """Give a user another sign-in email, checked as ``create_user`` checks one."""
        portal = self.portal(hostname)
        user = self._user(portal, email)
        new = normalize_email(new_email)
        if not valid_email(new):
            raise BadArgument(f"{new_email!r} is not an email address")
        try:
            self._db.write_sync(lambda c: accounts.set_user_email(c, user.id, new))
        except accounts.DuplicateError as exc:
            raise BadArgument(str(exc)) from None
        return user

    def set_role(self, hostname: str, email: str, role: Role) -> User:
        """Change a user's role; the portal keeps at least one owner or admin."""
        portal = self.portal(hostname)
        user = self._user(portal, email)

        def change(conn):  # type: ignore[no-untyped-def]
            accounts.set_user_role(conn, user.id, role)
            if accounts.count_managers(conn, portal.id) == 0:
                raise BadArgument(f"{user.email} is the last owner or admin of {portal.hostname}: the portal keeps one")

        self._db.write_sync(change)
        return user

    def disable_user(self, hostname: str, email: str) -> int:
        """Disable a user and end its sessions at once; the number of sessions ended.

        A disabled user's sign-in fails as a wrong password does, and its API keys stop authenticating
        (HTTP and the submission port); its messages already in the outbox are still delivered. Never the
        portal's last enabled owner: someone must be able to sign in and manage it.
        """
        portal = self.portal(hostname)
        user = self._user(portal, email)

        def disable(conn):  # type: ignore[no-untyped-def]
            accounts.set_user_disabled(conn, user.id, True)
            if user.role is Role.OWNER and accounts.count_enabled_owners(conn, portal.id) == 0:
                raise BadArgument(f"{user.email} is the last enabled owner of {portal.hostname}: the portal keeps one")
            return accounts.delete_sessions_of_user(conn, user.id)

        return self._db.write_sync(disable)

    def enable_user(self, hostname: str, email: str) -> User:
        """Let a disabled user sign in again; its API keys work again too (unless revoked)."""
        portal = self.portal(hostname)
        user = self._user(portal, email)
        self._db.write_sync(lambda c: accounts.set_user_disabled(c, user.id, False))
        return user

    def delete_user(self, hostname: str, email: str) -> User:
        """Delete a user with its sessions and API keys; never the portal's last owner or admin."""
        portal = self.portal(hostname)
        user = self._user(portal, email)

        def delete(conn):  # type: ignore[no-untyped-def]
            accounts.delete_user(conn, user.id)
            if user.role.manages_settings and accounts.count_managers(conn, portal.id) == 0:
                raise BadArgument(f"{user.email} is the last owner or admin of {portal.hostname}: the portal keeps one")

        self._db.write_sync(delete)
        return user

    def deletion_preview(self, hostname: str) -> dict[str, int]:
        """What deleting the portal would delete, rows by table name; refused at once for the only portal."""
        portal = self.portal(hostname)

        def preview(conn):  # type: ignore[no-untyped-def]
            _refuse_the_only_portal(conn, portal)
            return accounts.portal_contents(conn, portal.id)

        return self._db.read_sync(preview)

    def delete_portal(self, hostname: str) -> None:
        """Delete a portal and everything of it, in one transaction; never the last portal."""
        portal = self.portal(hostname)

        def delete(conn):  # type: ignore[no-untyped-def]
            _refuse_the_only_portal(conn, portal)
            accounts.delete_portal(conn, portal.id)

        self._db.write_sync(delete)


def _refuse_the_only_portal(conn: Connection, portal: Portal) -> None:
    if len(accounts.list_portals(conn)) == 1:
        raise BadArgument(f"{portal.hostname} is the only portal: a server without one answers nobody")
