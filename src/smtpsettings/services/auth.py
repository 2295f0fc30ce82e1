"""Sign-in, sessions, API keys and request authentication, with brute-force limits.

Failed sign-ins are counted in the database (so every instance shares the counts), separately per
channel (see :mod:`smtpsettings.domain.lockouts`): HTTP sign-ins per account and per client address, wrong
HTTP Bearer keys per key, SMTP AUTH per client address and per API key. Once a count of sign-ins reaches its
limit, further attempts are refused (429, SMTP 454) *before* the secret is checked, so a correct guess during a
lockout reveals nothing. A disabled user's sign-in fails as a wrong password does. A sign-in proves itself
with the password or with DocSpace's client-side hash of it (``passwordHash``); failures of either count alike.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic, Literal, NamedTuple, TypeVar

import anyio.to_thread
import structlog

from smtpsettings.config import Settings
from smtpsettings.domain.accounts import Portal, Principal, User, normalize_email, normalize_hostname
from smtpsettings.domain.errors import AccessDenied, NotAuthenticated, NotFound, TooManyRequests
from smtpsettings.domain.lockouts import KINDS, bucket
from smtpsettings.domain.passwords import (
    SignInSecret,
    api_key_id_of,
    client_password_hash,
    hash_password,
    hash_secret,
    new_token,
    verify_password,
)
from smtpsettings.store import accounts, ratelimit
from smtpsettings.store.accounts import Alongside
from smtpsettings.store.database import Database, StoreUnavailable, utcnow

__all__ = ("Alongside", "AuthService", "Authenticated", "Credentials", "LockedKeys", "Verified", "login_account_bucket", "login_address_bucket")

AUTH_FAILED = "User authentication failed"
_TOO_MANY_SIGN_INS = "Too many failed sign-in attempts. Try again later."
NO_PORTAL = "No portal answers this host name."
_KEY_USE_INTERVAL = 60.0
"""Seconds between two records of an API key's last use."""
KEY_LOCKS_REFRESH = 2.0
"""Seconds a process trusts its list of locked API keys before reading it again (see :class:`LockedKeys`)."""

T = TypeVar("T")
log = structlog.get_logger("smtpsettings.auth")


class Credentials:
    """What a request presented, already split by kind; at most one is used (see :meth:`AuthService.authenticate`)."""

    __slots__ = ("authorization", "cookie")

    def __init__(self, cookie: str | None, authorization: str | None) -> None:
        self.cookie = cookie or None
        self.authorization = (authorization or "").strip() or None

    @property
    def present(self) -> bool:
        return bool(self.cookie or self.authorization)


def login_account_bucket(portal_id: int, email: str) -> str:
    """The rate-limit bucket of one account's failed HTTP sign-ins (``email`` normalised)."""
    return bucket("http-account", f"{portal_id}:{email}")


def login_address_bucket(client_address: str) -> str:
    """The rate-limit bucket of one client's failed HTTP sign-ins (an IPv6 client: its /64)."""
    return bucket("http-address", client_address)


def _refuse_while_locked(message: str, *counts: tuple[int, float, int]) -> None:
    """Raise 429 if any ``(failures, seconds left, limit)`` is used up, saying when the last one ends."""
    waits = [wait for fails, wait, limit in counts if fails >= limit]
    if waits:
        raise TooManyRequests(message, int(max(waits)) + 1)


class LockedKeys:
    """The API keys whose HTTP counter (``http-key``) is used up, as this process last read them.

    A locked key is refused over HTTP even when it is right, as on the submission port. Reading its counter on
    every Bearer request would add a database read to the hot path; instead a process reads the list of used-up
    counters (few rows, usually none) at most every :data:`KEY_LOCKS_REFRESH` seconds, and only while it is
    answering API keys. A lock set by another worker or instance, and an operator's ``lockout clear``, so take
    effect within that time; a lock this process sets takes effect at once.
    """

    def __init__(self, db: Database, window: int, limit: int, refresh: float = KEY_LOCKS_REFRESH) -> None:
        self._db = db
        self._window = window
        self._limit = limit
        self._refresh = refresh
        self._ends: dict[str, float] = {}
        """Key id → when its lock ends (``time.monotonic()``)."""
        self._read_at = -refresh

    def note(self, key_id: str, failures: int, seconds_left: float) -> None:
        """Take in a count this process just made, so its own lock needs no wait."""
        if failures >= self._limit:
            self._ends[key_id] = time.monotonic() + seconds_left

    async def seconds_left(self, key_id: str) -> float:
        """How long ``key_id`` stays locked over HTTP (0: not locked), reading the list again when it is stale."""
        now = time.monotonic()
        if now - self._read_at >= self._refresh:
            self._read_at = now  # before the read: concurrent requests meanwhile use the list they have
            prefix = KINDS["http-key"]
            try:
                rows = await self._db.read(lambda c: ratelimit.current(c, prefix, self._window))
            except StoreUnavailable as exc:
                # The request's own lookup has just answered; keep the last list rather than fail it.
                log.warning("api_key_locks_not_read", error=str(exc))
            else:
                self._ends = {name[len(prefix) :]: now + left for name, failures, left in rows if failures >= self._limit}
        end = self._ends.get(key_id)
        return max(end - time.monotonic(), 0.0) if end is not None else 0.0


class Authenticated(NamedTuple, Generic[T]):
    """A request's portal and caller, and the portal's data asked for alongside (None when not asked)."""

    portal: Portal
    principal: Principal
    alongside: T | None = None


class Verified(NamedTuple):
    """A sign-in that passed: the user, and which of their verifiers matched, as it was stored then."""

    user: User
    column: Literal["password_hash", "client_hash_verifier"]
    verifier: str


class AuthService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self._key_use_written: dict[str, datetime] = {}
        """When this process last recorded each key's use (see :meth:`_note_key_use`)."""
        self.locked_keys = LockedKeys(db, settings.login_failure_window_seconds, settings.login_max_failures_per_account)

    async def sign_in(self, portal: Portal, email: str, secret: SignInSecret, client_address: str) -> tuple[str, datetime]:
        """Check a password (or its client hash) and open a session; returns the token and its expiry.

        Raises:
            TooManyRequests: too many recent failures for this account or address.
            NotAuthenticated: wrong email or password, or the password was set anew meanwhile.
        """
        return await self.open_session(await self.verify(portal, email, secret, client_address))

    async def open_session(self, verified: Verified) -> tuple[str, datetime]:
        """A new session for a verified sign-in, unless the verifier it matched has been replaced since.

        Verifying takes argon2's tens of milliseconds outside any transaction; a password set during that
        time must still end every session, also this one. So the insert is conditional on the verifier
        being unchanged, checked in the same statement (see ``accounts.create_session_if_verified``).

        Raises:
            NotAuthenticated: the password was set anew after it was verified.
        """
        token = new_token()
        expires = utcnow() + timedelta(hours=self._settings.token_lifetime_hours)

        def open_session(conn):  # type: ignore[no-untyped-def]
            opened = accounts.create_session_if_verified(
                conn, verified.user, hash_secret(token), expires, column=verified.column, verified=verified.verifier
            )
            # Housekeeping rides on sign-ins, which are rare next to reads: nothing else grows these tables.
            accounts.delete_expired_sessions(conn)
            ratelimit.prune(conn, older_than=max(self._settings.login_failure_window_seconds, 86_400))
            return opened

        if not await self._db.write(open_session):
            raise NotAuthenticated(AUTH_FAILED)
        return token, expires

    async def check_password(self, portal: Portal, email: str, password: str, client_address: str) -> User:
        """The user whose email and password these are (Basic authentication), within the same limits."""
        return (await self.verify(portal, email, SignInSecret(password), client_address)).user

    async def verify(self, portal: Portal, email: str, secret: SignInSecret, client_address: str) -> Verified:
        """Check a sign-in's secret against the matching verifier, counting failures.

        A password is checked against the argon2 hash of the password, a client hash (``passwordHash``)
        against the argon2 hash of the client hash. A user who has no client-hash verifier yet (one from
        before it existed) gets it from the password, once that has been verified.

        Raises:
            TooManyRequests: too many recent failures for this account or address.
            NotAuthenticated: no such user, or the secret does not match.
        """
        s = self._settings
        email = normalize_email(email)
        window = s.login_failure_window_seconds
        account_bucket = login_account_bucket(portal.id, email)
        address_bucket = login_address_bucket(client_address)

        def load(conn):  # type: ignore[no-untyped-def]
            user = accounts.get_user_by_email(conn, portal.id, email)
            if user is not None and user.disabled:
                user = None  # answered, timed and counted exactly as a wrong password: nothing tells it apart
            password_hash, client_verifier = accounts.password_verifiers_of(conn, user.id) if user else (None, None)
            derive = user is not None and client_verifier is None and not secret.is_client_hash
            return (
                user,
                password_hash,
                client_verifier,
                accounts.password_hash_salt_of(conn, portal.id) if derive else None,
                ratelimit.count(conn, account_bucket, window),
                ratelimit.count(conn, address_bucket, window),
            )

        loaded = await self._db.read(load)
        user, password_hash, client_verifier, salt, (account_fails, account_wait), (address_fails, address_wait) = loaded
        _refuse_while_locked(
            _TOO_MANY_SIGN_INS,
            (account_fails, account_wait, s.login_max_failures_per_account),
            (address_fails, address_wait, s.login_max_failures_per_address),
        )
        verifier = client_verifier if secret.is_client_hash else password_hash
        # argon2 costs tens of milliseconds of CPU: keep it off the event loop. A missing user or verifier
        # is checked against a dummy hash, so it takes as long as a wrong secret.
        ok = await anyio.to_thread.run_sync(verify_password, verifier, secret.value)
        if not ok or user is None or verifier is None:

            def fail(conn):  # type: ignore[no-untyped-def]
                ratelimit.hit(conn, account_bucket, window)
                ratelimit.hit(conn, address_bucket, window)

            await self._db.write(fail)
            raise NotAuthenticated(AUTH_FAILED)
        if account_fails:
            await self._db.write(lambda c: ratelimit.reset(c, account_bucket))
        if salt is not None:
            await self._derive_client_hash_verifier(user, verifier, secret.value, salt)
        return Verified(user, "client_hash_verifier" if secret.is_client_hash else "password_hash", verifier)

    async def _derive_client_hash_verifier(self, user: User, password_hash: str, password: str, salt: str) -> None:
        """Store the client-hash verifier of a user who has none, from the password just verified with
        ``password_hash`` (not if a new password was set meanwhile)."""
        client_verifier = await anyio.to_thread.run_sync(lambda: hash_password(client_password_hash(password, salt)))
        await self._db.write(lambda c: accounts.set_client_hash_verifier(c, user.id, password_hash, client_verifier))

    async def client_hash_salt(self, portal: Portal) -> str:
        """The salt sign-in pages hash this portal's passwords with (public: it is published to them)."""
        salt = await self._db.read(lambda c: accounts.password_hash_salt_of(c, portal.id))
        if salt is None:  # the portal was deleted a moment ago
            raise NotFound(NO_PORTAL)
        return salt

    async def portal_for_host(self, hostname: str | None) -> Portal:
        """The portal answering a Host name (else the default portal).

        Raises:
            NotFound: no portal answers it and there is no default portal.
        """
        portal = await self._db.read(lambda c: accounts.find_portal_for_host(c, hostname)) if hostname else None
        if portal is None:
            raise NotFound(NO_PORTAL)
        return portal

    async def authenticate(
        self,
        hostname: str | None,
        credentials: Credentials,
        client_address: Callable[[], str],
        alongside: Alongside[T] | None = None,
    ) -> Authenticated[T]:
        """The portal of the Host and the principal behind the request's credentials, in DocSpace's order.

        The first credential present decides: a stale cookie is not silently passed over for a header.
        Tokens and API keys are looked up with the portal in one statement: this is every request's path,
        and ``alongside`` (a row of the portal's own data the request needs next) rides in that statement.
        ``client_address`` is asked only for what rate limits need (a password sign-in by Basic auth).

        Raises:
            NotFound: no portal answers the Host.
            NotAuthenticated: nothing presented, or what was presented is not valid on this portal.
        """
        kind, secret = _classify(credentials)
        if kind == "basic" or kind == "none" or hostname is None:
            portal = await self.portal_for_host(hostname)
            if kind != "basic":
                raise NotAuthenticated("Not authenticated")
            email, password = _decode_basic(secret)
            user = await self.check_password(portal, email, password, client_address())
            extra = await alongside.of_portal(self._db, portal.id) if alongside else None
            return Authenticated(portal, Principal(user=user, via="basic"), extra)
        secret_hash = hash_secret(secret)
        lookup = accounts.principal_by_api_key if kind == "apikey" else accounts.principal_by_session
        found = await lookup(self._db, hostname, secret_hash, alongside)
        if found is None:
            # The rarer cases, told apart: no portal answers the Host (404), the default portal answers it
            # (look again there), or the credential is not valid (401).
            portal = await self.portal_for_host(hostname)
            if portal.hostname != hostname:
                found = await lookup(self._db, portal.hostname, secret_hash, alongside)
            if found is None:
                if kind == "apikey":
                    await self._count_wrong_http_key(portal.hostname, secret)
                raise NotAuthenticated("Not authenticated")
        if kind == "apikey":
            if found.api_key_id is not None:
                await self._refuse_locked_key(found.api_key_id)
            await self._note_key_use(found.api_key_id)
            principal = Principal(user=found.user, via="apikey", api_key_id=found.api_key_id, scope=found.scope)
        else:
            principal = Principal(user=found.user, via="session", session_token_hash=secret_hash)
        return Authenticated(found.portal, principal, found.alongside)

    async def _refuse_locked_key(self, key_id: str) -> None:
        """429 for a right key whose HTTP counter is used up, as its wrong attempts get (see :class:`LockedKeys`)."""
        left = await self.locked_keys.seconds_left(key_id)
        if left > 0:
            raise TooManyRequests(_TOO_MANY_SIGN_INS, int(left) + 1)

    async def _count_wrong_http_key(self, hostname: str, key: str) -> None:
        """Count a wrong Bearer key against the live key of the portal its prefix names (as SMTP AUTH does).

        Once the count is used up, further attempts with that key's id are answered 429, the right key's too
        (within :data:`KEY_LOCKS_REFRESH` seconds on other workers), until the window ends or an operator
        clears it: the application that keeps getting the key wrong is stopped, and ``smtpsettings lockout
        list`` shows which key it is.

        Raises:
            TooManyRequests: this key's id has had too many wrong attempts in the window.
        """
        key_id = api_key_id_of(key)
        if key_id is None:
            return
        window = self._settings.login_failure_window_seconds
        key_bucket = bucket("http-key", key_id)

        def fail(conn):  # type: ignore[no-untyped-def]
            # Only a live key's id is counted: made-up ids would otherwise each get a counter row.
            return ratelimit.hit(conn, key_bucket, window) if accounts.is_live_api_key(conn, hostname, key_id) else None

        counted = await self._db.write(fail)
        if counted is not None:
            self.locked_keys.note(key_id, *counted)
            _refuse_while_locked(_TOO_MANY_SIGN_INS, (counted[0], counted[1], self._settings.login_max_failures_per_account + 1))

    async def _note_key_use(self, key_id: str | None) -> None:
        """Record a key's use at most once a minute per key and worker (the UPDATE is conditional too, so
        several workers or instances still write about once a minute)."""
        if key_id is None:
            return
        now = utcnow()
        last = self._key_use_written.get(key_id)
        if last is not None and (now - last).total_seconds() < _KEY_USE_INTERVAL:
            return
        if len(self._key_use_written) > 10_000:  # bounded by the number of keys in use; forget all at worst
            self._key_use_written.clear()
        self._key_use_written[key_id] = now
        try:
            await self._db.write(lambda c: accounts.touch_api_key(c, key_id, now, _KEY_USE_INTERVAL))
        except StoreUnavailable as exc:
            # A statistic: the request the key authenticated goes on; the next minute's use writes it.
            log.warning("api_key_last_use_not_recorded", api_key_id=key_id, error=str(exc))

    async def authenticate_api_key(self, hostname: str, key: str, client_address: str) -> tuple[Portal, Principal]:
        """The submission port's sign-in: a portal's host name and an API key of it with mail rights.

        Failures count toward the client address's SMTP limit and, when the key names a live key of the
        portal in its prefix, toward that key's limit, which is lower: an application retrying a stale key
        locks out that key before it uses up its host's limit. HTTP sign-ins have counters of their own.
        While a count is used up every attempt it covers is refused before the key is looked at.

        Raises:
            TooManyRequests: too many recent failures from this address, or with this key's id.
            NotAuthenticated: no such portal, or the key is not one of its unrevoked keys.
            AccessDenied: the key's user may not send the portal's mail.
        """
        s = self._settings
        window = s.login_failure_window_seconds
        address_bucket = bucket("smtp-address", client_address)
        key_id = api_key_id_of(key)
        key_bucket = bucket("smtp-key", key_id) if key_id else None

        def load(conn):  # type: ignore[no-untyped-def]
            key_count = ratelimit.count(conn, key_bucket, window) if key_bucket else (0, 0.0)
            return ratelimit.count(conn, address_bucket, window), key_count

        (address_fails, address_wait), (key_fails, key_wait) = await self._db.read(load)
        _refuse_while_locked(
            _TOO_MANY_SIGN_INS,
            (address_fails, address_wait, s.submission_max_failures_per_address),
            (key_fails, key_wait, s.submission_max_failures_per_key),
        )
        portal_host = normalize_hostname(hostname) if hostname else None
        found = None
        if portal_host and key.startswith("sk-"):
            found = await accounts.principal_by_api_key(self._db, portal_host, hash_secret(key))
        if found is None:

            def fail(conn):  # type: ignore[no-untyped-def]
                ratelimit.hit(conn, address_bucket, window)
                # Only a live key's id is counted: made-up ids would otherwise each get a counter row.
                if key_bucket and key_id and portal_host and accounts.is_live_api_key(conn, portal_host, key_id):
                    ratelimit.hit(conn, key_bucket, window)

            await self._db.write(fail)
            raise NotAuthenticated(AUTH_FAILED)
        if key_fails and key_bucket:
            await self._db.write(lambda c: ratelimit.reset(c, key_bucket))
        principal = Principal(user=found.user, via="apikey", api_key_id=found.api_key_id, scope=found.scope)
        self.require_sender(principal)
        await self._note_key_use(found.api_key_id)
        return found.portal, principal

    async def sign_out(self, principal: Principal) -> None:
        if principal.session_token_hash:
            token_hash = principal.session_token_hash
            await self._db.write(lambda c: accounts.delete_session(c, token_hash))

    @staticmethod
    def require_settings_manager(principal: Principal) -> User:
        """The owner or an admin, signed in or by an unscoped key: a send-only key manages nothing."""
        if not principal.user.role.manages_settings or principal.scope is not None:
            raise AccessDenied()
        return principal.user

    @staticmethod
    def require_sender(principal: Principal) -> User:
        """Who may send the portal's mail: the owner and admins, and their send-only keys."""
        if not principal.user.role.manages_settings:
            raise AccessDenied()
        return principal.user


def _classify(credentials: Credentials) -> tuple[str, str]:
    """``(kind, secret)`` with kind ``session``, ``apikey``, ``basic`` or ``none``."""
    if credentials.cookie:
        return "session", credentials.cookie
    header = credentials.authorization
    if not header:
        return "none", ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        return "basic", value.strip()
    if scheme.lower() == "bearer" and value:
        header = value.strip()
    return ("apikey" if header.startswith("sk-") else "session"), header


def _decode_basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise NotAuthenticated(AUTH_FAILED) from None
    email, sep, password = decoded.partition(":")
    if not sep:
        raise NotAuthenticated(AUTH_FAILED)
    return email, password
