"""Users that can be disabled, and when each API key was last used

Revision ID: 0010
Revises: 0009

``users.disabled`` is added NOT NULL with a server default of false, so existing users stay enabled and
SQLite needs no table rebuild (which would cascade-delete sessions and keys). ``api_keys.last_used_at``
starts empty: no key has been seen since the upgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): no table rebuild, so nothing cascades.
    op.drop_column("api_keys", "last_used_at")
    op.drop_column("users", "disabled")
