"""Hashing of user passwords (argon2id) and of bearer secrets (SHA-256).

Sign-in passwords are low-entropy, so they get a slow, salted hash. Session tokens and API keys are
256-bit random values: a fast hash is enough to make a stolen database useless, and lets us look a
token up by its hash in one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ("hash_password", "hash_secret", "new_api_key", "new_token", "verify_password")

_hasher = PasswordHasher()
# Verified against when the account does not exist, so a miss costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """A fresh API key and its public id: ``(key_id, "sk-…")``."""
    return "key_" + secrets.token_hex(6), "sk-" + secrets.token_urlsafe(32)
