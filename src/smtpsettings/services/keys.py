"""The key ring against the database: the start-up check, rotation, and moving a ring between instances.

Every instance encrypts with its own copy of the ring (DATA_DIR/keys.json); the database records the ids of
the keys its secrets use (store/keys.py). An instance whose ring lacks one would answer an error for every
secret under it, so it refuses to start instead, saying what to copy.

Rotation is safe while servers run: the new key is written to the ring and recorded before any secret uses
it, old keys stay in the ring (so a ciphertext written by a server that has not reloaded yet still decrypts),
and each secret is swapped only if it is still the ciphertext that was read (a concurrent save wins).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from smtpsettings.crypto import KeyRing
from smtpsettings.services.smtp import secret_purpose
from smtpsettings.store import keys as keys_store
from smtpsettings.store import smtp as smtp_store
from smtpsettings.store.database import Database

__all__ = ("MissingKeys", "open_key_ring", "rotate_keys")


class MissingKeys(RuntimeError):
    """This instance's key ring lacks keys the database's secrets use; the message says what to copy."""


_HOW_TO_COPY = (
    "run `smtpsettings keys export FILE` on an instance that has them, copy FILE here and run "
    "`smtpsettings keys import FILE` with this instance's configuration, then start again"
)


def open_key_ring(db: Database, path: Path) -> KeyRing:
    """The instance's key ring, checked against the database (and made, if the database needs none yet).

    Raises:
        MissingKeys: the ring is absent while the database's secrets use keys, or lacks some of them.
    """
    if not path.exists():
        used = db.read_sync(keys_store.recorded)
        if used:
            # A new ring would be useless here, and then in the way of the right one: make none.
            raise MissingKeys(f"there is no key ring at {path}, and the database's secrets use key(s) {', '.join(used)}: {_HOW_TO_COPY}")
    keyring = KeyRing(path)
    missing = db.write_sync(partial(keys_store.claim, ring=keyring.key_ids, primary=keyring.primary_key_id))
    if missing:
        raise MissingKeys(f"the key ring {path} lacks key(s) {', '.join(missing)} that the database's secrets use: {_HOW_TO_COPY}")
    return keyring


def rotate_keys(db: Database, keyring: KeyRing) -> tuple[str, int]:
    """Returns the new key id and the number of secrets re-encrypted."""
    new_key = keyring.add_key()
    db.write_sync(partial(keys_store.record, key_ids=[new_key]))
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
