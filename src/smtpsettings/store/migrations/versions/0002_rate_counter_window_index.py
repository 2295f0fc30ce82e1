"""Index rate counters by window start, for the pruning that runs with sign-ins

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rate_counters", schema=None) as batch_op:
        batch_op.create_index("ix_rate_counters_window_start", ["window_start"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rate_counters", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_counters_window_start")
