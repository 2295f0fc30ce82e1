"""SQLAlchemy Core tables. The schema itself is owned by the Alembic migrations; these objects must match."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = (
    "api_keys",
    "outbox_dispatchers",
    "outbox_messages",
    "audit_log",
    "encryption_keys",
    "metadata",
    "portals",
    "rate_counters",
    "sessions",
    "smtp_settings",
    "test_jobs",
    "users",
)

metadata = sa.MetaData()

portals = sa.Table(
    "portals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False, unique=True),
    sa.Column("is_default", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # The salt of DocSpace's client-side password hash, published to sign-in pages; random per portal.
    sa.Column("password_hash_salt", sa.String(64), nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("portal_id", sa.Integer, sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
    sa.Column("email", sa.String(255), nullable=False),
    sa.Column("display_name", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # argon2id of the client-side hash of the password (passwordHash sign-ins). NULL until derived: users
    # from before it existed get it at their next password sign-in.
    sa.Column("client_hash_verifier", sa.String(255), nullable=True),
    # A disabled user cannot sign in and its keys do not authenticate; its queued mail is still delivered.
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("portal_id", "email", name="uq_users_portal_email"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("portal_id", sa.Integer, sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("portal_id", sa.Integer, sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    # NULL: the rights of the key's user. "mail.send": send mail and read what the key sent, nothing else.
    sa.Column("scope", sa.String(32), nullable=True),
    # When the key last authenticated, written at most once a minute per key (see store.accounts.touch_api_key).
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
)

smtp_settings = sa.Table(
    "smtp_settings",
    metadata,
    sa.Column("portal_id", sa.Integer, sa.ForeignKey("portals.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("sender_address", sa.String(255), nullable=False),
    sa.Column("sender_display_name", sa.String(255), nullable=False),
    sa.Column("credentials_user_name", sa.String(255), nullable=False),
    sa.Column("password_ciphertext", sa.Text, nullable=True),
    sa.Column("enable_ssl", sa.Boolean, nullable=False),
    sa.Column("enable_auth", sa.Boolean, nullable=False),
    sa.Column("use_ntlm", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # OAuth 2.0 (XOAUTH2): NULL provider means password or NTLM. Token URL and scope "" mean the provider's
    # default. Each secret is encrypted like the password, under a purpose of its own.
    sa.Column("oauth2_provider", sa.String(16), nullable=True),
    sa.Column("oauth2_tenant_id", sa.String(255), nullable=True),
    sa.Column("oauth2_client_id", sa.String(255), nullable=True),
    sa.Column("oauth2_token_url", sa.String(2048), nullable=True),
    sa.Column("oauth2_scope", sa.String(1024), nullable=True),
    sa.Column("oauth2_client_secret_ciphertext", sa.Text, nullable=True),
    sa.Column("oauth2_certificate_ciphertext", sa.Text, nullable=True),
    sa.Column("oauth2_service_account_key_ciphertext", sa.Text, nullable=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("portal_id", sa.Integer, sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("user_email", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("changed_fields", sa.Text, nullable=False),
    sa.Column("client_address", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

rate_counters = sa.Table(
    "rate_counters",
    metadata,
    sa.Column("bucket", sa.String(255), primary_key=True),
    sa.Column("window_start", sa.Float, nullable=False, index=True),
    sa.Column("count", sa.Integer, nullable=False),
)

test_jobs = sa.Table(
    "test_jobs",
    metadata,
    sa.Column("portal_id", sa.Integer, sa.ForeignKey("portals.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("completed", sa.Boolean, nullable=False),
    sa.Column("percents", sa.Integer, nullable=False),
    sa.Column("status", sa.String(255), nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
)

outbox_messages = sa.Table(
    "outbox_messages",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("portal_id", sa.Integer, sa.ForeignKey("portals.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("api_key_id", sa.String(32), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    # The envelope still to try (Bcc included) and the message exactly as it goes out; both are emptied at
    # retention.
    sa.Column("sender", sa.String(320), nullable=False),
    sa.Column("recipients", sa.Text, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=True),
    sa.Column("smtputf8", sa.Boolean, nullable=False),
    # What the API shows: To and Cc as JSON lists (never Bcc), the subject, the fixed Message-ID.
    sa.Column("to_addresses", sa.Text, nullable=False),
    sa.Column("cc_addresses", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    # Whose key it is ("key:<api key id>" or "user:<user id>"), set with the key: keys are the caller's own.
    sa.Column("idempotency_caller", sa.String(40), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Retries are given up this long after queued_at: acceptance, or the admin's retry of a failed message.
    sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
    # Due time while queued or deferred; the lease's end while sending, so one index finds both kinds of due.
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("smtp_reply", sa.Text, nullable=True),
    # JSON list of each tried recipient's outcome (address, status, reply); ``recipients`` above is who is
    # still to try. Bcc entries are dropped once the message ends (a cancelled one's at body retention).
    sa.Column("recipient_outcomes", sa.Text, nullable=True),
    sa.UniqueConstraint("portal_id", "idempotency_caller", "idempotency_key", name="uq_outbox_messages_idempotency"),
    sa.Index(
        "ix_outbox_messages_due",
        "next_attempt_at",
        sqlite_where=sa.text("status IN ('queued', 'deferred', 'sending')"),
        postgresql_where=sa.text("status IN ('queued', 'deferred', 'sending')"),
    ),
    sa.Index("ix_outbox_messages_portal_created", "portal_id", "created_at"),
    # A portal's unsent mail, counted and summed from the index alone at every acceptance (the queue limits);
    # status is in it so that SQLite, without statistics, prefers it to portal_status_created.
    sa.Index(
        "ix_outbox_messages_unsent",
        "portal_id",
        "status",
        "size",
        sqlite_where=sa.text("status IN ('queued', 'deferred', 'sending')"),
        postgresql_where=sa.text("status IN ('queued', 'deferred', 'sending')"),
    ),
    sa.Index("ix_outbox_messages_portal_status_created", "portal_id", "status", "created_at"),
    # Not led by status: an index that is would draw the claim away from the partial one (see store/outbox.py).
    sa.Index("ix_outbox_messages_finished", "finished_at"),
)

# One row per dispatcher at work (PostgreSQL): ``beats`` counts its heartbeats. Peers compare it between their
# own reads, never with a clock of theirs, so a row that stops counting is a dead dispatcher whatever the skew.
outbox_dispatchers = sa.Table(
    "outbox_dispatchers",
    metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("beats", sa.BigInteger, nullable=False),
)

# The ids (never the keys) of the encryption keys stored secrets use or instances encrypt with (migration 0009).
encryption_keys = sa.Table(
    "encryption_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)
