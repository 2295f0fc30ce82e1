"""OAuth 2.0 settings and secrets in the store, and migration 0004 that adds them, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from smtpsettings.domain.smtp import OAuth2Settings, SmtpSettings
from smtpsettings.store import accounts, smtp
from smtpsettings.store.database import MIGRATIONS, Database

PASSWORD_SETTINGS = SmtpSettings(
    host="smtp.example.com",
    port=587,
    sender_address="docspace@example.com",
    sender_display_name="DocSpace",
    credentials_user_name="mailer@example.com",
    enable_ssl=True,
    enable_auth=True,
    use_ntlm=False,
)
OAUTH2 = OAuth2Settings(provider="microsoft", tenant_id="contoso.onmicrosoft.com", client_id="app-1", scope="x.y")
OAUTH2_SETTINGS = SmtpSettings(**{**{f: getattr(PASSWORD_SETTINGS, f) for f in PASSWORD_SETTINGS.__struct_fields__}, "oauth2": OAUTH2})


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def new_portal(db: Database, hostname: str = "a.example.com") -> int:
    return db.write_sync(lambda c: accounts.create_portal(c, hostname, is_default=False)).id


def test_oauth2_settings_and_their_secrets_are_stored_and_read_back(db: Database) -> None:
    portal_id = new_portal(db)
    db.write_sync(lambda c: smtp.put_settings(c, portal_id, OAUTH2_SETTINGS, None, {"certificate": "v1.k.cert"}))
    stored = db.read_sync(lambda c: smtp.get_settings(c, portal_id))
    assert stored == smtp.StoredSmtpSettings(OAUTH2_SETTINGS, None, {"certificate": "v1.k.cert"})
    assert stored.settings.auth_method == "oauth2"


async def test_the_request_path_lookup_reads_them_too(db: Database) -> None:
    portal_id = new_portal(db)
    db.write_sync(lambda c: smtp.put_settings(c, portal_id, OAUTH2_SETTINGS, None, {"client_secret": "v1.k.s"}))
    stored = await smtp.find_settings(db, portal_id)
    assert stored is not None and stored.settings.oauth2 == OAUTH2 and stored.secret_ciphertexts == {"client_secret": "v1.k.s"}
    await db.dispose_async()


def test_saving_password_settings_clears_every_oauth2_column(db: Database) -> None:
    portal_id = new_portal(db)
    db.write_sync(lambda c: smtp.put_settings(c, portal_id, OAUTH2_SETTINGS, None, {"client_secret": "v1.k.s"}))
    db.write_sync(lambda c: smtp.put_settings(c, portal_id, PASSWORD_SETTINGS, "v1.k.pw", {"client_secret": "v1.k.s"}))
    row = db.read_sync(lambda c: c.execute(sa.text("SELECT * FROM smtp_settings")).mappings().one())
    assert all(row[name] is None for name in row.keys() if name.startswith("oauth2_"))
    assert db.read_sync(lambda c: smtp.get_settings(c, portal_id)) == smtp.StoredSmtpSettings(PASSWORD_SETTINGS, "v1.k.pw")


def test_every_secret_is_listed_for_rotation_and_swapped_only_if_unchanged(db: Database) -> None:
    first, second = new_portal(db, "a.example.com"), new_portal(db, "b.example.com")
    db.write_sync(lambda c: smtp.put_settings(c, first, PASSWORD_SETTINGS, "v1.k.pw", None))
    db.write_sync(lambda c: smtp.put_settings(c, second, OAUTH2_SETTINGS, None, {"client_secret": "v1.k.s"}))
    assert sorted(db.read_sync(smtp.all_ciphertexts)) == [(first, "password", "v1.k.pw"), (second, "client_secret", "v1.k.s")]
    assert not db.write_sync(lambda c: smtp.set_ciphertext(c, second, "client_secret", "v1.k.other", "v1.n.s"))
    assert db.write_sync(lambda c: smtp.set_ciphertext(c, second, "client_secret", "v1.k.s", "v1.n.s"))
    assert db.read_sync(lambda c: smtp.get_settings(c, second)).secret_ciphertexts == {"client_secret": "v1.n.s"}  # type: ignore[union-attr]


# --- migration 0004 ------------------------------------------------------------------------------------

# smtp_settings as revision 0003 has it: today's table object has columns that did not exist then.
_ROW_0003 = {
    "host": "smtp.example.com",
    "port": 587,
    "sender_address": "docspace@example.com",
    "sender_display_name": "DocSpace",
    "credentials_user_name": "mailer",
    "password_ciphertext": "v1.k.pw",
    "enable_ssl": True,
    "enable_auth": True,
    "use_ntlm": True,
}
_settings_0003 = sa.table("smtp_settings", *(sa.column(name) for name in ("portal_id", *_ROW_0003, "updated_at")))


def _columns(db: Database) -> set[str]:
    return db.read_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("smtp_settings")})


def test_migration_0004_keeps_existing_settings_as_password_or_ntlm_and_goes_back(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    db = Database(database_url)
    try:
        db.migrate("0003")
        portal_id = new_portal(db)
        row = {**_ROW_0003, "portal_id": portal_id, "updated_at": datetime.now(UTC)}
        db.write_sync(lambda c: c.execute(_settings_0003.insert().values(**row)))

        db.migrate("0004")
        stored = db.read_sync(lambda c: smtp.get_settings(c, portal_id))
        assert stored is not None and stored.password_ciphertext == "v1.k.pw" and stored.secret_ciphertexts == {}
        assert stored.settings.auth_method == "ntlm" and stored.settings.oauth2 is None
        assert {c for c in _columns(db) if c.startswith("oauth2_")} == {
            "oauth2_provider",
            "oauth2_tenant_id",
            "oauth2_client_id",
            "oauth2_token_url",
            "oauth2_scope",
            "oauth2_client_secret_ciphertext",
            "oauth2_certificate_ciphertext",
            "oauth2_service_account_key_ciphertext",
        }

        db.write_sync(lambda c: smtp.put_settings(c, portal_id, OAUTH2_SETTINGS, None, {"client_secret": "v1.k.s"}))
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with db.engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0003")
            conn.commit()
        assert not any(c.startswith("oauth2_") for c in _columns(db))
        kept = db.read_sync(lambda c: c.execute(sa.text("SELECT portal_id, host, enable_auth FROM smtp_settings")).all())
        assert [tuple(r) for r in kept] == [(portal_id, "smtp.example.com", True)]
    finally:
        db.dispose()
