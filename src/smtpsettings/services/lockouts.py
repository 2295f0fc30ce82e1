"""The operator's view of failed-sign-in counters: which run, which lock something out, and lifting them.

A lockout ends by itself when its window does; this is for the time in between, e.g. after fixing the
application that kept offering a stale key, or for an administrator locked out by someone else's guesses.
"""

from __future__ import annotations

from typing import NamedTuple

from smtpsettings.config import Settings
from smtpsettings.domain.accounts import normalize_email, normalize_hostname
from smtpsettings.domain.lockouts import KINDS, Kind, bucket, parse_bucket
from smtpsettings.store import accounts, ratelimit
from smtpsettings.store.database import Database

__all__ = ("Lockout", "LockoutService")


class Lockout(NamedTuple):
    """One counter of failed sign-ins in its current window. ``subject`` is never a secret."""

    kind: Kind
    subject: str
    failures: int
    seconds_left: int
    locked: bool


class LockoutService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        s = settings
        self._window = s.login_failure_window_seconds
        self._limits: dict[Kind, int] = {
            "http-account": s.login_max_failures_per_account,
            "http-address": s.login_max_failures_per_address,
            # A wrong Bearer key is counted like a wrong password for an account (see AuthService).
            "http-key": s.login_max_failures_per_account,
            "smtp-address": s.submission_max_failures_per_address,
            "smtp-key": s.submission_max_failures_per_key,
        }

    def current(self) -> list[Lockout]:
        """Every running counter, HTTP first, each kind sorted by its bucket name."""
        return [lockout for _, lockout in self._running()]

    def clear(
        self, *, address: str | None = None, key_id: str | None = None, account: tuple[str, str] | None = None
    ) -> list[Lockout]:
        """Drop the counters named (all running ones when none is named); returns what was dropped.

        Args:
            address: a client address: its HTTP and SMTP counters (an IPv6 address: its /64's).
            key_id: an API key's id (``key_…``): its HTTP and SMTP counters.
            account: ``(portal host name, email)``: the account's HTTP sign-in counter.
        """
        wanted: set[str] | None = None
        if address is not None or key_id is not None or account is not None:
            wanted = set()
            if address is not None:
                wanted |= {bucket("http-address", address), bucket("smtp-address", address)}
            if key_id is not None:
                wanted |= {bucket("http-key", key_id), bucket("smtp-key", key_id)}
            if account is not None:
                wanted.add(self._account_bucket(*account))
        running = [(name, lockout) for name, lockout in self._running() if wanted is None or name in wanted]
        if running:
            names = [name for name, _ in running]
            self._db.write_sync(lambda c: ratelimit.reset(c, *names))
        return [lockout for _, lockout in running]

    def _account_bucket(self, hostname: str, email: str) -> str:
        name = normalize_hostname(hostname) or ""
        portal = self._db.read_sync(lambda c: accounts.get_portal_by_hostname(c, name))
        portal_id = portal.id if portal is not None else -1  # no such portal: nothing to clear
        return bucket("http-account", f"{portal_id}:{normalize_email(email)}")

    def _running(self) -> list[tuple[str, Lockout]]:
        def load(conn):  # type: ignore[no-untyped-def]
            hosts = {p.id: p.hostname for p in accounts.list_portals(conn)}
            return hosts, [row for prefix in KINDS.values() for row in ratelimit.current(conn, prefix, self._window)]

        hosts, rows = self._db.read_sync(load)
        running = []
        for name, failures, left in rows:
            parsed = parse_bucket(name)
            if parsed is None:
                continue
            kind, subject = parsed
            if kind == "http-account":
                portal_id, _, email = subject.partition(":")
                subject = f"{hosts.get(int(portal_id), '?')}/{email}" if portal_id.isdigit() else subject
            locked = failures >= self._limits[kind]
            running.append((name, Lockout(kind, subject, failures, max(int(left) + 1, 1), locked)))
        return running
