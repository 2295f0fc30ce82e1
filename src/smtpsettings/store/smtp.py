"""A portal's own SMTP settings and the audit log of their changes."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.domain.smtp import SmtpSettings
from smtpsettings.store.database import Database, Prepared, insert_for, utc, utcnow
from smtpsettings.store.tables import audit_log, smtp_settings

__all__ = (
    "AuditEntry",
    "StoredSmtpSettings",
    "add_audit_entry",
    "all_password_ciphertexts",
    "delete_settings",
    "find_settings",
    "get_settings",
    "list_audit",
    "put_settings",
    "set_password_ciphertext",
)


class StoredSmtpSettings(msgspec.Struct, frozen=True):
    settings: SmtpSettings
    password_ciphertext: str | None


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    user_email: str
    action: str
    changed_fields: list[str]
    client_address: str
    created_at: str


_VALUE_COLUMNS = [c.name for c in smtp_settings.columns if c.name != "portal_id"]


def _upsert(dialect: str) -> Any:
    # One statement: two first saves racing on two instances cannot both insert.
    stmt = insert_for(dialect, smtp_settings).values({c.name: sa.bindparam(c.name) for c in smtp_settings.columns})
    return stmt.on_conflict_do_update(
        index_elements=[smtp_settings.c.portal_id], set_={name: stmt.excluded[name] for name in _VALUE_COLUMNS}
    )


_UPSERT = Prepared.per_dialect(_upsert)
_AUDIT = Prepared(audit_log.insert().values({c.name: sa.bindparam(c.name) for c in audit_log.columns if c.name != "id"}))


_STORED_COLUMNS = (
    smtp_settings.c.host,
    smtp_settings.c.port,
    smtp_settings.c.sender_address,
    smtp_settings.c.sender_display_name,
    smtp_settings.c.credentials_user_name,
    smtp_settings.c.enable_ssl,
    smtp_settings.c.enable_auth,
    smtp_settings.c.use_ntlm,
    smtp_settings.c.password_ciphertext,
)
_SETTINGS = Prepared(sa.select(*_STORED_COLUMNS).where(smtp_settings.c.portal_id == sa.bindparam("portal_id")))
_SETTINGS_FOR_UPDATE = Prepared(
    sa.select(*_STORED_COLUMNS).where(smtp_settings.c.portal_id == sa.bindparam("portal_id")).with_for_update()
)


def _stored(row: tuple[Any, ...] | None) -> StoredSmtpSettings | None:
    if row is None:
        return None
    host, port, sender_address, sender_display_name, user_name, enable_ssl, enable_auth, use_ntlm, ciphertext = row
    settings = SmtpSettings(
        host=host,
        port=port,
        sender_address=sender_address,
        sender_display_name=sender_display_name,
        credentials_user_name=user_name,
        enable_ssl=enable_ssl,
        enable_auth=enable_auth,
        use_ntlm=use_ntlm,
    )
    return StoredSmtpSettings(settings, ciphertext)


def get_settings(conn: Connection, portal_id: int, *, for_update: bool = False) -> StoredSmtpSettings | None:
    """The portal's own settings; ``for_update`` locks the row until the transaction ends (PostgreSQL)."""
    return _stored((_SETTINGS_FOR_UPDATE if for_update else _SETTINGS).row(conn, {"portal_id": portal_id}))


async def find_settings(db: Database, portal_id: int) -> StoredSmtpSettings | None:
    """The portal's own settings, read outside any transaction (a single atomic SELECT)."""
    return _stored(await db.fetch_one(_SETTINGS, portal_id=portal_id))


def put_settings(conn: Connection, portal_id: int, settings: SmtpSettings, password_ciphertext: str | None) -> None:
    values = {
        "host": settings.host,
        "port": settings.port,
        "sender_address": settings.sender_address,
        "sender_display_name": settings.sender_display_name,
        "credentials_user_name": settings.credentials_user_name,
        "password_ciphertext": password_ciphertext,
        "enable_ssl": settings.enable_ssl,
        "enable_auth": settings.enable_auth,
        "use_ntlm": settings.use_ntlm,
        "updated_at": utcnow(),
    }
    _UPSERT.execute(conn, portal_id=portal_id, **values)


def set_password_ciphertext(conn: Connection, portal_id: int, old: str, new: str) -> bool:
    """Swap one ciphertext for another only if it is still ``old`` (a save may have raced a key rotation)."""
    result = conn.execute(
        smtp_settings.update()
        .where(smtp_settings.c.portal_id == portal_id, smtp_settings.c.password_ciphertext == old)
        .values(password_ciphertext=new)
    )
    return result.rowcount == 1


def all_password_ciphertexts(conn: Connection) -> list[tuple[int, str]]:
    rows = conn.execute(
        sa.select(smtp_settings.c.portal_id, smtp_settings.c.password_ciphertext).where(
            smtp_settings.c.password_ciphertext.is_not(None)
        )
    )
    return [(r.portal_id, r.password_ciphertext) for r in rows]


def delete_settings(conn: Connection, portal_id: int) -> bool:
    return conn.execute(smtp_settings.delete().where(smtp_settings.c.portal_id == portal_id)).rowcount > 0


def add_audit_entry(
    conn: Connection, portal_id: int, *, user_id: int | None, user_email: str, action: str, changed: list[str], client_address: str
) -> None:
    _AUDIT.execute(
        conn,
        portal_id=portal_id,
        user_id=user_id,
        user_email=user_email,
        action=action,
        changed_fields=json.dumps(changed),
        client_address=client_address,
        created_at=utcnow(),
    )


def list_audit(conn: Connection, portal_id: int, limit: int = 100) -> list[AuditEntry]:
    rows = conn.execute(
        audit_log.select().where(audit_log.c.portal_id == portal_id).order_by(audit_log.c.id.desc()).limit(limit)
    )
    return [
        AuditEntry(
            id=r.id,
            user_email=r.user_email,
            action=r.action,
            changed_fields=json.loads(r.changed_fields),
            client_address=r.client_address,
            created_at=utc(r.created_at).isoformat(timespec="seconds"),
        )
        for r in rows
    ]
