"""Hashing of user passwords (argon2id), of DocSpace's client-side password hash, and of bearer secrets (SHA-256).

Sign-in passwords are low-entropy, so they get a slow, salted hash. Session tokens and API keys are
256-bit random values: a fast hash is enough to make a stolen database useless, and lets us look a
token up by its hash in one indexed query.

DocSpace's own sign-in page never sends the password: it sends ``passwordHash``, PBKDF2 of the password
under hash settings the portal publishes (``GET /api/2.0/settings``). That hash is a password equivalent,
so it is kept like the password: only as an argon2id verifier of its own, next to the password's.
"""

from __future__ import annotations

import functools
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = (
    "CLIENT_HASH_ITERATIONS",
    "CLIENT_HASH_SIZE",
    "SignInSecret",
    "api_key_id_of",
    "client_password_hash",
    "hash_password",
    "hash_secret",
    "new_api_key",
    "new_client_hash_salt",
    "new_token",
    "password_verifiers",
    "verify_password",
)

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so a miss costs as much time as a wrong password.

    Made on first use, not at import: hashing takes a quarter of a second, which every CLI command paid.
    """
    return _hasher.hash(secrets.token_urlsafe(16))

# DocSpace's defaults (core:password:size, core.password.iterations), which its sign-in page is used to.
# Changing either makes every stored client-hash verifier useless: those users would need a password
# sign-in, or a new password, before a passwordHash sign-in works again.
CLIENT_HASH_SIZE = 256
"""Bits of PBKDF2 output."""
CLIENT_HASH_ITERATIONS = 100_000


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_client_hash_salt() -> str:
    """A portal's salt for the client hash: random per portal, so a hash captured on one portal is useless on
    another (DocSpace derives one per installation). 64 hex digits, the form DocSpace publishes."""
    return secrets.token_hex(32)


def client_password_hash(password: str, salt: str) -> str:
    """The ``passwordHash`` DocSpace's sign-in page computes from the published settings.

    PBKDF2-HMAC-SHA256 over the UTF-8 password, with the salt *string's* UTF-8 bytes as salt, in lowercase
    hex: what DocSpace's ``createPasswordHash`` and its server's ``PasswordHasher.GetClientPassword`` make.
    """
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), CLIENT_HASH_ITERATIONS, CLIENT_HASH_SIZE // 8).hex()


def password_verifiers(password: str, salt: str) -> tuple[str, str]:
    """What is stored when a password is set: argon2id of the password, and argon2id of its client hash.

    Slow on purpose (two argon2 hashes and a PBKDF2): call it outside any transaction.
    """
    return hash_password(password), hash_password(client_password_hash(password, salt))


class SignInSecret:
    """What a sign-in presents: the password itself, or the client hash of it (``passwordHash``).

    A plain class rather than a struct so that its repr hides the value: a password equivalent must
    not reach a log line or a traceback.
    """

    __slots__ = ("is_client_hash", "value")

    def __init__(self, value: str, *, is_client_hash: bool = False) -> None:
        self.value = value
        self.is_client_hash = is_client_hash

    def __repr__(self) -> str:
        return f"SignInSecret({'passwordHash' if self.is_client_hash else 'password'}=***)"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """A fresh API key and its public id: ``(key_id, "sk-<id>.<secret>")``.

    The key starts with its own public id, so a wrong key for a known id can be counted against that key
    (a noisy application locks itself out, not its whole host); the secret part alone carries 256 bits.
    """
    public = secrets.token_hex(6)
    return "key_" + public, f"sk-{public}.{secrets.token_urlsafe(32)}"


def api_key_id_of(key: str) -> str | None:
    """The public id a key names in its prefix, or None (not a key, or one from before keys had one).

    Says nothing about whether the key is valid: only the hash of the whole key proves that.
    """
    if not key.startswith("sk-"):
        return None
    public, dot, _ = key[3:].partition(".")
    if not dot or len(public) != 12 or any(c not in "0123456789abcdef" for c in public):
        return None
    return "key_" + public
