"""OAuth 2.0 (XOAUTH2) settings and their encrypted secrets beside a portal's SMTP settings

Revision ID: 0004
Revises: 0003

Every column is nullable and added without a default, so existing rows (and SQLite, which adds a nullable
column without rebuilding the table) need nothing more: a NULL provider is password or NTLM, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("oauth2_provider", sa.String(length=16)),
    ("oauth2_tenant_id", sa.String(length=255)),
    ("oauth2_client_id", sa.String(length=255)),
    ("oauth2_token_url", sa.String(length=2048)),
    ("oauth2_scope", sa.String(length=1024)),
    ("oauth2_client_secret_ciphertext", sa.Text()),
    ("oauth2_certificate_ciphertext", sa.Text()),
    ("oauth2_service_account_key_ciphertext", sa.Text()),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("smtp_settings", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): no table rebuild. OAuth 2.0 settings are lost; such a
    # portal is left with authentication on and no password, so its next save must give one.
    for name, _ in reversed(_COLUMNS):
        op.drop_column("smtp_settings", name)
