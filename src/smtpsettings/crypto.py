"""Encryption of stored secrets (the SMTP password) under a key ring kept outside the database.

The ring is a JSON file in the data directory (mode 0600). Its newest key encrypts; every key it holds
decrypts, so a rotation can add a key, re-encrypt every secret and leave older ciphertexts readable
meanwhile. A server that meets a key id it does not know reloads the file, which is how instances that
started before a rotation pick up the new key without a restart.

Ciphertext format: ``v1.<key id>.<base64url(nonce || AES-GCM ciphertext)>``. The associated data binds a
ciphertext to its purpose (for example the portal it belongs to), so a value copied into another row
does not decrypt.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ("DecryptionError", "KeyRing", "import_keys")

_VERSION = "v1"


class DecryptionError(Exception):
    """A ciphertext could not be decrypted: unknown key, tampered data, or wrong purpose."""


class KeyRing:
    """The AES-256-GCM keys in a key file; the last one is the primary (encrypting) key."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._primary = ""
        self._mtime_ns = -1
        self._load(create=True)

    @property
    def primary_key_id(self) -> str:
        self._reload_if_changed()
        return self._primary

    @property
    def key_ids(self) -> list[str]:
        self._reload_if_changed()
        return list(self._keys)

    def encrypt(self, plaintext: str, purpose: str) -> str:
        self._reload_if_changed()
        nonce = os.urandom(12)
        sealed = AESGCM(self._keys[self._primary]).encrypt(nonce, plaintext.encode(), purpose.encode())
        return f"{_VERSION}.{self._primary}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, ciphertext: str, purpose: str) -> str:
        try:
            version, key_id, payload = ciphertext.split(".", 2)
        except ValueError:
            raise DecryptionError("malformed ciphertext") from None
        if version != _VERSION:
            raise DecryptionError(f"unknown ciphertext version {version!r}")
        if key_id not in self._keys:
            self._load(create=False)
        key = self._keys.get(key_id)
        if key is None:
            raise DecryptionError(f"key {key_id} is not in the key ring {self._path}")
        try:
            raw = base64.urlsafe_b64decode(payload)
        except ValueError:
            raise DecryptionError("malformed ciphertext") from None
        if len(raw) < 12 + 16:  # nonce and tag at the least
            raise DecryptionError("malformed ciphertext")
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], purpose.encode()).decode()
        except InvalidTag:
            raise DecryptionError("ciphertext failed authentication") from None

    def key_id_of(self, ciphertext: str) -> str:
        return ciphertext.split(".", 2)[1]

    def add_key(self) -> str:
        """Append a fresh key and make it primary; returns its id. The file is replaced atomically."""
        with self._lock:
            data = self._read_file()
            data["keys"].append(key := _new_key(len(data["keys"]) + 1))
            _write_ring(self._path, data)
        self._load(create=False)
        return str(key["id"])

    def export(self, destination: Path) -> list[str]:
        """Write the whole ring to a new file ``destination`` (0600) for another instance; returns the key ids.

        The file must not exist yet: a mistyped name never overwrites another file with key material.
        """
        with self._lock:
            data = self._read_file()
        try:
            fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise RuntimeError(f"{destination} exists already: the key ring is exported to a new file only") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        return [str(k["id"]) for k in data["keys"]]

    def merge(self, incoming: list[dict[str, str]], source: Path) -> list[str]:
        """Add the keys of an exported ring (see :func:`import_keys`) that this one lacks; returns their ids.

        They are appended in the exported order, so when the exported ring's primary key is new here it
        becomes this ring's primary too. Keys already here stay; an id that is here with other key material
        is refused, since one of the two rings would then decrypt nothing under that id.
        """
        with self._lock:
            data = self._read_file()
            held = {k["id"]: k["key"] for k in data["keys"]}
            clashing = [k["id"] for k in incoming if k["id"] in held and base64.b64decode(held[k["id"]]) != base64.b64decode(k["key"])]
            if clashing:
                raise RuntimeError(f"key ring {source} holds other key material under the id(s) {', '.join(clashing)}: nothing imported")
            added = [k for k in incoming if k["id"] not in held]
            if added:
                data["keys"].extend(added)
                _write_ring(self._path, data)
        self._load(create=False)
        return [k["id"] for k in added]

    def _reload_if_changed(self) -> None:
        try:
            mtime = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self._mtime_ns:
            self._load(create=False)

    def _load(self, *, create: bool) -> None:
        with self._lock:
            if create and not self._path.exists():
                _write_ring(self._path, {"keys": [_new_key(1)]}, only_if_absent=True)
            data = self._read_file()
            if not data["keys"]:
                raise RuntimeError(f"key ring {self._path} holds no keys")
            self._keys = {k["id"]: base64.b64decode(k["key"]) for k in data["keys"]}
            self._primary = data["keys"][-1]["id"]
            self._mtime_ns = self._path.stat().st_mtime_ns

    def _read_file(self) -> dict:
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read key ring {self._path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise RuntimeError(f"key ring {self._path} is malformed")
        return data


def import_keys(path: Path, source: Path) -> list[str]:
    """Bring the keys of an exported ring file into the ring at ``path`` (made from them if absent); their ids.

    Raises:
        RuntimeError: ``source`` cannot be read or is not a ring, or clashes with the ring at ``path``.
    """
    try:
        incoming = _checked_keys(json.loads(source.read_text()), source)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read key ring {source}: {getattr(exc, 'strerror', None) or exc}") from None
    if not path.exists() and _write_ring(path, {"keys": incoming}, only_if_absent=True):
        return [k["id"] for k in incoming]
    return KeyRing(path).merge(incoming, source)


def _write_ring(path: Path, data: dict, *, only_if_absent: bool = False) -> bool:
    """Write a ring file whole, 0600, through a temporary file, so no reader ever sees half a ring.

    With ``only_if_absent`` an existing file wins (two processes starting at once: link() fails for the
    second, which then reads the first's); returns whether this call wrote the file.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        if only_if_absent:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _checked_keys(data: object, source: Path) -> list[dict[str, str]]:
    """The keys of a ring file read from elsewhere, each checked to be an id and a 256-bit key."""
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError(f"{source} is not a key ring (no list of keys)")
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("id"), str) or not isinstance(key.get("key"), str):
            raise ValueError(f"{source} holds a malformed key entry")
        try:
            material = base64.b64decode(key["key"], validate=True)
        except ValueError:
            material = b""
        if len(material) != 32:
            raise ValueError(f"key {key['id']} in {source} is not a 256-bit key")
    return keys


def _new_key(ordinal: int) -> dict[str, str]:
    return {
        "id": f"k{ordinal}-{secrets.token_hex(4)}",
        "key": base64.b64encode(AESGCM.generate_key(bit_length=256)).decode(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
