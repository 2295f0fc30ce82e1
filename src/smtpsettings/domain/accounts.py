"""Portals, users and roles: who may do what, with no HTTP or SQL in sight."""

from __future__ import annotations

import enum
import ipaddress
import re

import msgspec

__all__ = (
    "API_KEY_SCOPES",
    "PLACEHOLDER_OWNER_EMAIL",
    "SCOPE_MAIL_SEND",
    "Portal",
    "Principal",
    "Role",
    "User",
    "normalize_email",
    "normalize_hostname",
    "valid_email",
)


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    USER = "user"
    GUEST = "guest"

    @property
    def manages_settings(self) -> bool:
        """Only the owner and portal admins may read or change a portal's SMTP settings (as in DocSpace)."""
        return self in (Role.OWNER, Role.ADMIN)


class Portal(msgspec.Struct, frozen=True):
    id: int
    hostname: str
    is_default: bool


class User(msgspec.Struct, frozen=True):
    id: int
    portal_id: int
    email: str
    display_name: str
    role: Role
    disabled: bool = False


SCOPE_MAIL_SEND = "mail.send"
"""An API key that sends mail and reads the messages it sent, and may do nothing else."""
API_KEY_SCOPES = (SCOPE_MAIL_SEND,)


class Principal(msgspec.Struct, frozen=True):
    """The user a request acts for, and how it proved it (``session``, ``apikey`` or ``basic``).

    An API key's ``scope`` narrows its user's rights (None: all of them).
    """

    user: User
    via: str
    session_token_hash: str | None = None
    api_key_id: str | None = None
    scope: str | None = None

    @property
    def send_only(self) -> bool:
        return self.scope == SCOPE_MAIL_SEND


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
# Deliberately plain: one @, no spaces or control characters, a dotted or single-label domain.
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def normalize_hostname(value: str) -> str | None:
    """The portal name a Host header or CLI argument denotes, or None when it is not a hostname."""
    host = value.strip().lower()
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        try:
            return f"[{ipaddress.IPv6Address(host[1:end])}]" if end > 0 else None
        except ValueError:
            return None
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    return host if _HOSTNAME.fullmatch(host) else None


PLACEHOLDER_OWNER_EMAIL = "owner@localhost"
"""The owner's email when a first start had no one to ask: sign-in works; mail servers refuse test mail to it."""


def valid_email(value: str) -> bool:
    return len(value) <= 254 and _EMAIL.fullmatch(value) is not None


def normalize_email(value: str) -> str:
    return value.strip().lower()
