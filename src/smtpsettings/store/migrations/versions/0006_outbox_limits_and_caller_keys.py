"""Idempotency keys belong to their caller; an index that counts a portal's unsent mail

Revision ID: 0006
Revises: 0005

A key was unique per portal, so a second API key using the same key got the first one's message. It is now
unique per caller: ``idempotency_caller`` is "key:<api key id>" or "user:<user id>". Existing keyed rows get
theirs from the columns they already have.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_UNSENT = "status IN ('queued', 'deferred', 'sending')"
_UNIQUE = "uq_outbox_messages_idempotency"


def upgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch:
        batch.add_column(sa.Column("idempotency_caller", sa.String(length=40), nullable=True))
        batch.drop_constraint(_UNIQUE, type_="unique")
    op.execute(
        "UPDATE outbox_messages SET idempotency_caller = CASE"
        " WHEN api_key_id IS NOT NULL THEN 'key:' || api_key_id"
        " WHEN user_id IS NOT NULL THEN 'user:' || CAST(user_id AS VARCHAR(20))"
        " ELSE 'portal' END"
        " WHERE idempotency_key IS NOT NULL"
    )
    with op.batch_alter_table("outbox_messages") as batch:
        batch.create_unique_constraint(_UNIQUE, ["portal_id", "idempotency_caller", "idempotency_key"])
    # Only unsent rows, so counting a portal's backlog reads that backlog from the index and nothing more.
    op.create_index(
        "ix_outbox_messages_unsent",
        "outbox_messages",
        ["portal_id", "status", "size"],
        sqlite_where=sa.text(_UNSENT),
        postgresql_where=sa.text(_UNSENT),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_messages_unsent", table_name="outbox_messages")
    # Two callers may hold the same key; per portal only the oldest message keeps it.
    op.execute(
        "UPDATE outbox_messages SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM outbox_messages AS earlier WHERE earlier.portal_id = outbox_messages.portal_id"
        " AND earlier.idempotency_key = outbox_messages.idempotency_key"
        " AND (earlier.created_at, earlier.id) < (outbox_messages.created_at, outbox_messages.id))"
    )
    with op.batch_alter_table("outbox_messages") as batch:
        batch.drop_constraint(_UNIQUE, type_="unique")
        batch.drop_column("idempotency_caller")
    with op.batch_alter_table("outbox_messages") as batch:
        batch.create_unique_constraint(_UNIQUE, ["portal_id", "idempotency_key"])
