"""Sign-in with DocSpace's passwordHash: a client-hash salt per portal, a client-hash verifier per user

Revision ID: 0003
Revises: 0002

Every existing portal gets a random salt of its own here. Existing users get no verifier: it can only be
derived from the password, so it is added at their next password sign-in (or when a password is set).

The salt column is added NOT NULL with a constant default and then filled, because SQLite cannot make a
column NOT NULL afterwards without rebuilding the table, and rebuilding ``portals`` (dropping the old one)
would cascade-delete every row that references it. PostgreSQL drops the default again; on SQLite it
stays, unused: every portal is inserted with a salt of its own.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_portals = sa.table("portals", sa.column("id", sa.Integer), sa.column("password_hash_salt", sa.String))


def upgrade() -> None:
    op.add_column("portals", sa.Column("password_hash_salt", sa.String(length=64), nullable=False, server_default=""))
    conn = op.get_bind()
    for (portal_id,) in conn.execute(sa.select(_portals.c.id)).all():
        # As smtpsettings.domain.passwords.new_client_hash_salt makes them (kept here as it is today).
        conn.execute(_portals.update().where(_portals.c.id == portal_id).values(password_hash_salt=secrets.token_hex(32)))
    if conn.dialect.name != "sqlite":
        op.alter_column("portals", "password_hash_salt", server_default=None)
    op.add_column("users", sa.Column("client_hash_verifier", sa.String(length=255), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): no table rebuild, so nothing cascades.
    op.drop_column("users", "client_hash_verifier")
    op.drop_column("portals", "password_hash_salt")
