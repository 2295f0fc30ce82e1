"""The outbox: messages accepted for delivery through a portal's settings; send-only API keys

Revision ID: 0005
Revises: 0004

``api_keys.scope`` is nullable and added without a default: existing keys keep their user's rights.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DUE = "status IN ('queued', 'deferred', 'sending')"


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("scope", sa.String(length=32), nullable=True))
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("portal_id", sa.Integer, sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("recipients", sa.Text, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.Column("smtputf8", sa.Boolean, nullable=False),
        sa.Column("to_addresses", sa.Text, nullable=False),
        sa.Column("cc_addresses", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("smtp_reply", sa.Text, nullable=True),
        sa.UniqueConstraint("portal_id", "idempotency_key", name="uq_outbox_messages_idempotency"),
    )
    # Only due and in-flight messages are in the claim's index, so its cost does not grow with the history.
    op.create_index(
        "ix_outbox_messages_due",
        "outbox_messages",
        ["next_attempt_at"],
        sqlite_where=sa.text(_DUE),
        postgresql_where=sa.text(_DUE),
    )
    op.create_index("ix_outbox_messages_portal_created", "outbox_messages", ["portal_id", "created_at"])
    op.create_index("ix_outbox_messages_portal_status_created", "outbox_messages", ["portal_id", "status", "created_at"])
    # Retention by age. Not led by status: SQLite, without statistics, would then claim through it and sort
    # every pending row, instead of reading the partial index above in due order.
    op.create_index("ix_outbox_messages_finished", "outbox_messages", ["finished_at"])


def downgrade() -> None:
    op.drop_table("outbox_messages")
    op.drop_column("api_keys", "scope")
