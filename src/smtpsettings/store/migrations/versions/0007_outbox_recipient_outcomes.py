"""Each outbox message's outcome per recipient, so that a refused recipient fails only itself

Revision ID: 0007
Revises: 0006

``recipient_outcomes`` is nullable and added without a default (SQLite adds it without rebuilding the
table): a message from before it has none, and the API shows its recipients by the message's status.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("recipient_outcomes", sa.Text, nullable=True))


def downgrade() -> None:
    # A message delivered in part reads as failed afterwards: the older code knows no other end for it.
    op.execute("UPDATE outbox_messages SET status = 'failed' WHERE status = 'partial'")
    op.drop_column("outbox_messages", "recipient_outcomes")
