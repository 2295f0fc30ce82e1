"""Key rotation: a new primary key, then every stored secret (passwords and OAuth 2.0 secrets) re-encrypted under it.

Safe while servers run: the new key is written to the ring before any secret uses it, old keys stay
in the ring (so a ciphertext written by a server that has not reloaded yet still decrypts), and each
secret is swapped only if it is still the ciphertext that was read (a concurrent save wins).
"""

from __future__ import annotations

from functools import partial

from smtpsettings.crypto import KeyRing
from smtpsettings.services.smtp import secret_purpose
from smtpsettings.store import smtp as smtp_store
from smtpsettings.store.database import Database

__all__ = ("rotate_keys",)


def rotate_keys(db: Database, keyring: KeyRing) -> tuple[str, int]:
    """Returns the new key id and the number of secrets re-encrypted."""
    new_key = keyring.add_key()
    done = 0
    while True:
        stale = [(p, n, c) for p, n, c in db.read_sync(smtp_store.all_ciphertexts) if keyring.key_id_of(c) != new_key]
        if not stale:
            return new_key, done
        for portal_id, name, ciphertext in stale:
            purpose = secret_purpose(name, portal_id)
            fresh = keyring.encrypt(keyring.decrypt(ciphertext, purpose), purpose)
            if db.write_sync(partial(smtp_store.set_ciphertext, portal_id=portal_id, name=name, old=ciphertext, new=fresh)):
                done += 1
