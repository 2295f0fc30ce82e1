"""The ids of the encryption keys the database's secrets use, so an instance lacking one refuses to start

Revision ID: 0009
Revises: 0008

The keys themselves stay in each instance's key ring (DATA_DIR/keys.json), never in the database; only their
ids are recorded here. The ids of the secrets already stored are read from their ciphertexts
(``v1.<key id>.<payload>``), so an upgraded database knows them from the start.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_SECRET_COLUMNS = (
    "password_ciphertext",
    "oauth2_client_secret_ciphertext",
    "oauth2_certificate_ciphertext",
    "oauth2_service_account_key_ciphertext",
)


def upgrade() -> None:
    keys = op.create_table(
        "encryption_keys",
        sa.Column("key_id", sa.String(length=64), primary_key=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    columns = ", ".join(_SECRET_COLUMNS)
    used = {
        value.split(".", 2)[1]
        for row in op.get_bind().execute(sa.text(f"SELECT {columns} FROM smtp_settings"))
        for value in row
        if value and value.count(".") >= 2
    }
    now = datetime.now(UTC)
    op.bulk_insert(keys, [{"key_id": key_id, "recorded_at": now} for key_id in sorted(used)])


def downgrade() -> None:
    op.drop_table("encryption_keys")
