"""The dispatchers at work on the database and their heartbeats, so a dead one's claims are taken over at once

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_dispatchers",
        sa.Column("owner", sa.String(length=64), primary_key=True),
        sa.Column("beats", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outbox_dispatchers")
