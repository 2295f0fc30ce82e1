"""A portal's own SMTP settings and the audit log of their changes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from smtpsettings.domain.smtp import OAuth2Settings, SmtpSettings
from smtpsettings.store.accounts import Alongside
from smtpsettings.store.database import Database, Prepared, insert_for, utc, utcnow
from smtpsettings.store.tables import audit_log, smtp_settings

__all__ = (
    "SECRET_COLUMNS",
    "SETTINGS_ALONGSIDE",
    "AuditEntry",
    "StoredSmtpSettings",
    "add_audit_entry",
    "all_ciphertexts",
    "delete_settings",
    "find_settings",
    "get_settings",
    "last_change",
    "list_audit",
    "put_settings",
    "set_ciphertext",
)

# Every encrypted secret of a portal: its name (the password, or an OAuth 2.0 secret) -> its column.
SECRET_COLUMNS = {
    "password": "password_ciphertext",
    "client_secret": "oauth2_client_secret_ciphertext",
    "certificate": "oauth2_certificate_ciphertext",
    "service_account_key": "oauth2_service_account_key_ciphertext",
}


class StoredSmtpSettings(msgspec.Struct, frozen=True):
    settings: SmtpSettings
    password_ciphertext: str | None
    secret_ciphertexts: dict[str, str] = msgspec.field(default_factory=dict)
    """The OAuth 2.0 secrets stored, by name (``client_secret``, ``certificate``, ``service_account_key``)."""


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


_OAUTH2_SECRETS = tuple(name for name in SECRET_COLUMNS if name != "password")
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
    smtp_settings.c.oauth2_provider,
    smtp_settings.c.oauth2_tenant_id,
    smtp_settings.c.oauth2_client_id,
    smtp_settings.c.oauth2_token_url,
    smtp_settings.c.oauth2_scope,
    *(smtp_settings.c[SECRET_COLUMNS[name]] for name in _OAUTH2_SECRETS),
)
_SETTINGS_FOR_UPDATE = Prepared(
    sa.select(*_STORED_COLUMNS).where(smtp_settings.c.portal_id == sa.bindparam("portal_id")).with_for_update()
)


def _stored(row: tuple[Any, ...] | None) -> StoredSmtpSettings | None:
    if row is None:
        return None
    host, port, sender_address, sender_display_name, user_name, enable_ssl, enable_auth, use_ntlm, ciphertext = row[:9]
    provider, tenant_id, client_id, token_url, scope = row[9:14]
    oauth2 = None
    if provider:
        oauth2 = OAuth2Settings(
            provider=provider, tenant_id=tenant_id or "", client_id=client_id or "", token_url=token_url or "", scope=scope or ""
        )
    settings = SmtpSettings(
        host=host,
        port=port,
        sender_address=sender_address,
        sender_display_name=sender_display_name,
        credentials_user_name=user_name,
        enable_ssl=enable_ssl,
        enable_auth=enable_auth,
        use_ntlm=use_ntlm,
        oauth2=oauth2,
    )
    secrets = {name: value for name, value in zip(_OAUTH2_SECRETS, row[14:], strict=True) if value}
    return StoredSmtpSettings(settings, ciphertext, secrets)


SETTINGS_ALONGSIDE: Alongside[StoredSmtpSettings | None] = Alongside(smtp_settings, _STORED_COLUMNS, _stored)
"""The portal's own settings: with the caller in one statement (a GET of the settings), or on their own."""


def get_settings(conn: Connection, portal_id: int, *, for_update: bool = False) -> StoredSmtpSettings | None:
    """The portal's own settings; ``for_update`` locks the row until the transaction ends (PostgreSQL)."""
    return _stored((_SETTINGS_FOR_UPDATE if for_update else SETTINGS_ALONGSIDE.by_portal).row(conn, {"portal_id": portal_id}))


async def find_settings(db: Database, portal_id: int) -> StoredSmtpSettings | None:
    """The portal's own settings, read outside any transaction (a single atomic SELECT)."""
    return await SETTINGS_ALONGSIDE.of_portal(db, portal_id)


def put_settings(
    conn: Connection,
    portal_id: int,
    settings: SmtpSettings,
    password_ciphertext: str | None,
    secret_ciphertexts: Mapping[str, str] | None = None,
) -> None:
    """Store the portal's settings whole: OAuth 2.0 columns and secrets not given are cleared."""
    oauth2 = settings.oauth2
    secrets = secret_ciphertexts or {}
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
        "oauth2_provider": oauth2.provider if oauth2 else None,
        "oauth2_tenant_id": oauth2.tenant_id if oauth2 else None,
        "oauth2_client_id": oauth2.client_id if oauth2 else None,
        "oauth2_token_url": oauth2.token_url if oauth2 else None,
        "oauth2_scope": oauth2.scope if oauth2 else None,
        **{SECRET_COLUMNS[name]: secrets.get(name) if oauth2 else None for name in _OAUTH2_SECRETS},
    }
    _UPSERT.execute(conn, portal_id=portal_id, **values)


def set_ciphertext(conn: Connection, portal_id: int, name: str, old: str, new: str) -> bool:
    """Swap one secret's ciphertext for another only if it is still ``old`` (a save may have raced a key rotation)."""
    column = smtp_settings.c[SECRET_COLUMNS[name]]
    result = conn.execute(smtp_settings.update().where(smtp_settings.c.portal_id == portal_id, column == old).values({column: new}))
    return result.rowcount == 1


def all_ciphertexts(conn: Connection) -> list[tuple[int, str, str]]:
    """Every stored secret as ``(portal id, secret name, ciphertext)``."""
    columns = [smtp_settings.c[column] for column in SECRET_COLUMNS.values()]
    rows = conn.execute(sa.select(smtp_settings.c.portal_id, *columns).where(sa.or_(*(c.is_not(None) for c in columns))))
    return [(row[0], name, value) for row in rows for name, value in zip(SECRET_COLUMNS, row[1:], strict=True) if value]


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


def last_change(conn: Connection, portal_id: int) -> datetime | None:
    """When the portal's settings were last saved or reset (from the audit log), or None if never."""
    when = conn.execute(
        sa.select(sa.func.max(audit_log.c.created_at)).where(
            audit_log.c.portal_id == portal_id, audit_log.c.action.in_(("save", "reset"))
        )
    ).scalar()
    return utc(when) if when is not None else None


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
