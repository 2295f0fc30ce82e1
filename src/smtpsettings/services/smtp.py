"""Reading, saving and resetting a portal's SMTP settings: validation rules, encryption and audit together.

Every save and reset runs in one database transaction with its audit row, so a failed request leaves
both the settings and the log as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from smtpsettings.config import DefaultSmtp
from smtpsettings.crypto import KeyRing
from smtpsettings.domain.accounts import Portal, User
from smtpsettings.domain.smtp import (
    SECRET_NAMES,
    OAuth2Secrets,
    SecretAction,
    SmtpSettings,
    SmtpSettingsInput,
    changed_fields,
    decide_password,
    decide_secrets,
)
from smtpsettings.store import keys as keys_store
from smtpsettings.store import smtp as smtp_store
from smtpsettings.store.database import Database
from smtpsettings.store.smtp import AuditEntry, StoredSmtpSettings

__all__ = ("MailCredentials", "SettingsView", "SmtpSettingsService", "password_purpose", "secret_purpose")


def password_purpose(portal_id: int) -> str:
    """Associated data of a portal's SMTP password: its ciphertext decrypts for this portal only."""
    return f"smtp-password:portal:{portal_id}"


def secret_purpose(name: str, portal_id: int) -> str:
    """Associated data of a portal's stored secret (``password`` or an OAuth 2.0 one): this secret of this portal only.

    A purpose per secret keeps a ciphertext copied from one column to another (the client secret into
    the certificate's) from decrypting there.
    """
    if name == "password":
        return password_purpose(portal_id)
    return f"smtp-oauth2-{name.replace('_', '-')}:portal:{portal_id}"


class SettingsView(msgspec.Struct, frozen=True):
    """What an answer shows: the settings, and the names of the OAuth 2.0 secrets stored (never the secrets).

    A Struct rather than a frozen dataclass: every GET makes one, and a frozen dataclass's ``__init__``
    costs several times as much.
    """

    settings: SmtpSettings
    secrets_stored: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MailCredentials:
    """The plaintext secrets to sign in with, for sending mail only; in no ``repr``."""

    password: str = field(default="", repr=False)
    oauth2: OAuth2Secrets = field(default_factory=OAuth2Secrets)


class SmtpSettingsService:
    def __init__(self, db: Database, keyring: KeyRing, default: DefaultSmtp) -> None:
        self._db = db
        self._keyring = keyring
        self._default = SmtpSettings(
            host=default.host,
            port=default.port,
            sender_address=default.sender_address,
            sender_display_name=default.sender_display_name,
            credentials_user_name=default.username if default.enable_auth else "",
            enable_ssl=default.enable_ssl,
            enable_auth=default.enable_auth,
            use_ntlm=default.use_ntlm if default.enable_auth else False,
            is_default=True,
        )
        self._default_password = default.password if default.enable_auth else ""
        # Key ids this process has seen recorded in the database (store/keys.py): a save records a key
        # it encrypts with only the first time, so saves pay for the record once per key and process.
        self._recorded_keys: set[str] = set()

    alongside = smtp_store.SETTINGS_ALONGSIDE
    """The portal's stored settings as a request reads them with its caller (one statement); :meth:`view` shows them."""

    async def get(self, portal: Portal) -> SettingsView:
        return self.view(await smtp_store.find_settings(self._db, portal.id))

    def view(self, stored: StoredSmtpSettings | None) -> SettingsView:
        """What a read answers for a portal's stored settings (the defaults when it has none)."""
        return _view(stored) if stored else SettingsView(self._default)

    async def get_for_sending(self, portal: Portal) -> tuple[SmtpSettings, MailCredentials]:
        """The effective settings and their plaintext secrets, for sending mail only."""
        return await self.get_for_sending_by_id(portal.id)

    async def get_for_sending_by_id(self, portal_id: int) -> tuple[SmtpSettings, MailCredentials]:
        """As :meth:`get_for_sending`, for the outbox, which knows its messages' portals by id only."""
        stored = await smtp_store.find_settings(self._db, portal_id)
        if stored is None:
            return self._default, MailCredentials(password=self._default_password)
        oauth2 = OAuth2Secrets(
            **{name: self._decrypt(portal_id, name, stored.secret_ciphertexts.get(name)) for name in SECRET_NAMES}
        )
        return stored.settings, MailCredentials(self._decrypt(portal_id, "password", stored.password_ciphertext), oauth2)

    async def candidate_for_sending(
        self, portal: Portal, candidate: SmtpSettingsInput
    ) -> tuple[SmtpSettings, MailCredentials]:
        """Unsaved settings and the secrets to use with them, by the same rules as a save.

        Raises:
            BadArgument: "Empty password." when the stored one may not be used for this target.
            ValidationFailed: likewise for an OAuth 2.0 secret, keyed by its field.
        """
        stored = await smtp_store.find_settings(self._db, portal.id)
        before = stored.settings if stored else None
        password = candidate.password
        if decide_password(candidate, before, bool(stored and stored.password_ciphertext)) is SecretAction.KEEP and stored:
            password = self._decrypt(portal.id, "password", stored.password_ciphertext)
        oauth2: dict[str, str] = {}
        for name, action in decide_secrets(candidate, before, stored.secret_ciphertexts if stored else ()).items():
            if action is SecretAction.SET:
                oauth2[name] = getattr(candidate.secrets, name)
            elif action is SecretAction.KEEP and stored:
                oauth2[name] = self._decrypt(portal.id, name, stored.secret_ciphertexts.get(name))
        return candidate.settings, MailCredentials(password, OAuth2Secrets(**oauth2))

    async def save(self, portal: Portal, user: User, new: SmtpSettingsInput, client_address: str) -> SettingsView:
        def save_in_transaction(conn):  # type: ignore[no-untyped-def]
            stored = smtp_store.get_settings(conn, portal.id, for_update=True)
            before = stored.settings if stored else None
            action = decide_password(new, before, bool(stored and stored.password_ciphertext))
            secret_actions = decide_secrets(new, before, stored.secret_ciphertexts if stored else ())
            old_password = self._decrypt(portal.id, "password", stored.password_ciphertext) if stored else None
            if action is SecretAction.SET:
                ciphertext = self._keyring.encrypt(new.password, password_purpose(portal.id))
                password_changed = new.password != old_password
            elif action is SecretAction.KEEP:
                ciphertext = stored.password_ciphertext if stored else None
                password_changed = False
            else:
                ciphertext = None
                password_changed = bool(old_password)
            secrets: dict[str, str] = {}
            secrets_changed: list[str] = []
            for name, secret_action in secret_actions.items():
                old = stored.secret_ciphertexts.get(name) if stored else None
                if secret_action is SecretAction.SET:
                    plaintext = getattr(new.secrets, name)
                    secrets[name] = self._keyring.encrypt(plaintext, secret_purpose(name, portal.id))
                    if plaintext != self._decrypt(portal.id, name, old):
                        secrets_changed.append(name)
                elif secret_action is SecretAction.KEEP and old:
                    secrets[name] = old
                elif old:
                    secrets_changed.append(name)
            written = {self._keyring.key_id_of(c) for c in (ciphertext, *secrets.values()) if c} - self._recorded_keys
            # A ring given a new key by hand (not by `keys rotate`) is recorded at its first use, so an
            # instance lacking that key refuses to start rather than fail on these secrets.
            keys_store.record(conn, written)
            smtp_store.put_settings(conn, portal.id, new.settings, ciphertext, secrets)
            changed = changed_fields(
                before or self._default, new.settings, password_changed=password_changed, secrets_changed=secrets_changed
            )
            if stored is None:
                changed = changed or ["isDefaultSettings"]
            smtp_store.add_audit_entry(
                conn, portal.id, user_id=user.id, user_email=user.email, action="save", changed=changed, client_address=client_address
            )
            return frozenset(secrets), written

        stored_now, recorded = await self._db.write(save_in_transaction)
        self._recorded_keys |= recorded  # once committed
        return SettingsView(new.settings, stored_now)

    async def reset(self, portal: Portal, user: User, client_address: str) -> SettingsView:
        def reset_in_transaction(conn):  # type: ignore[no-untyped-def]
            stored = smtp_store.get_settings(conn, portal.id, for_update=True)
            if stored is None:
                changed: list[str] = []
            else:
                had_password = bool(stored.password_ciphertext)
                changed = changed_fields(
                    stored.settings, self._default, password_changed=had_password, secrets_changed=stored.secret_ciphertexts
                ) + ["isDefaultSettings"]
                smtp_store.delete_settings(conn, portal.id)
            smtp_store.add_audit_entry(
                conn, portal.id, user_id=user.id, user_email=user.email, action="reset", changed=changed, client_address=client_address
            )

        await self._db.write(reset_in_transaction)
        return SettingsView(self._default)

    async def audit(self, portal: Portal, limit: int = 100) -> list[AuditEntry]:
        return await self._db.read(lambda c: smtp_store.list_audit(c, portal.id, limit))

    def _decrypt(self, portal_id: int, name: str, ciphertext: str | None) -> str:
        if not ciphertext:
            return ""
        return self._keyring.decrypt(ciphertext, secret_purpose(name, portal_id))


def _view(stored: StoredSmtpSettings) -> SettingsView:
    return SettingsView(stored.settings, frozenset(stored.secret_ciphertexts))
