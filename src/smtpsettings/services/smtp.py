"""Reading, saving and resetting a portal's SMTP settings: validation rules, encryption and audit together.

Every save and reset runs in one database transaction with its audit row, so a failed request leaves
both the settings and the log as they were.
"""

from __future__ import annotations

from smtpsettings.config import DefaultSmtp
from smtpsettings.crypto import KeyRing
from smtpsettings.domain.accounts import Portal, User
from smtpsettings.domain.smtp import (
    PasswordAction,
    SmtpSettings,
    SmtpSettingsInput,
    changed_fields,
    decide_password,
)
from smtpsettings.store import smtp as smtp_store
from smtpsettings.store.database import Database
from smtpsettings.store.smtp import AuditEntry, StoredSmtpSettings

__all__ = ("SmtpSettingsService", "password_purpose")


def password_purpose(portal_id: int) -> str:
    """Associated data of a portal's SMTP password: its ciphertext decrypts for this portal only."""
    return f"smtp-password:portal:{portal_id}"


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

    async def get(self, portal: Portal) -> SmtpSettings:
        stored = await smtp_store.find_settings(self._db, portal.id)
        return stored.settings if stored else self._default

    async def get_with_password(self, portal: Portal) -> tuple[SmtpSettings, str]:
        """The effective settings and their plaintext password, for sending mail only."""
        stored = await smtp_store.find_settings(self._db, portal.id)
        if stored is None:
            return self._default, self._default_password
        return stored.settings, self._decrypt(portal, stored)

    async def with_password(self, portal: Portal, candidate: SmtpSettingsInput) -> tuple[SmtpSettings, str]:
        """Unsaved settings and the password to use with them, by the same rule as a save.

        Raises:
            BadArgument: "Empty password." when the stored one may not be used for this target.
        """
        stored = await smtp_store.find_settings(self._db, portal.id)
        action = decide_password(candidate, stored.settings if stored else None, bool(stored and stored.password_ciphertext))
        if action is PasswordAction.KEEP and stored is not None:
            return candidate.settings, self._decrypt(portal, stored)
        return candidate.settings, candidate.password

    async def save(self, portal: Portal, user: User, new: SmtpSettingsInput, client_address: str) -> SmtpSettings:
        def save_in_transaction(conn):  # type: ignore[no-untyped-def]
            stored = smtp_store.get_settings(conn, portal.id, for_update=True)
            action = decide_password(new, stored.settings if stored else None, bool(stored and stored.password_ciphertext))
            old_password = self._decrypt(portal, stored) if stored else None
            if action is PasswordAction.SET:
                ciphertext = self._keyring.encrypt(new.password, password_purpose(portal.id))
                password_changed = new.password != old_password
            elif action is PasswordAction.KEEP:
                ciphertext = stored.password_ciphertext if stored else None
                password_changed = False
            else:
                ciphertext = None
                password_changed = bool(old_password)
            smtp_store.put_settings(conn, portal.id, new.settings, ciphertext)
            before = stored.settings if stored else self._default
            changed = changed_fields(before, new.settings, password_changed=password_changed)
            if stored is None:
                changed = changed or ["isDefaultSettings"]
            smtp_store.add_audit_entry(
                conn, portal.id, user_id=user.id, user_email=user.email, action="save", changed=changed, client_address=client_address
            )

        await self._db.write(save_in_transaction)
        return new.settings

    async def reset(self, portal: Portal, user: User, client_address: str) -> SmtpSettings:
        def reset_in_transaction(conn):  # type: ignore[no-untyped-def]
            stored = smtp_store.get_settings(conn, portal.id, for_update=True)
            if stored is None:
                changed: list[str] = []
            else:
                had_password = bool(stored.password_ciphertext)
                changed = changed_fields(stored.settings, self._default, password_changed=had_password) + ["isDefaultSettings"]
                smtp_store.delete_settings(conn, portal.id)
            smtp_store.add_audit_entry(
                conn, portal.id, user_id=user.id, user_email=user.email, action="reset", changed=changed, client_address=client_address
            )

        await self._db.write(reset_in_transaction)
        return self._default

    async def audit(self, portal: Portal, limit: int = 100) -> list[AuditEntry]:
        return await self._db.read(lambda c: smtp_store.list_audit(c, portal.id, limit))

    def _decrypt(self, portal: Portal, stored: StoredSmtpSettings) -> str:
        if not stored.password_ciphertext:
            return ""
        return self._keyring.decrypt(stored.password_ciphertext, password_purpose(portal.id))
