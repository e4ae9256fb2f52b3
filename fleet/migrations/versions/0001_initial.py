"""The first fleet schema: attestations, per-airframe state, nonces, the event outbox, the audit
trail, and the web layer's users, API tokens and sessions.

The audit trail is append-only in the database too: a trigger refuses UPDATE and DELETE on it,
so a bug or a stray SQL session cannot rewrite history quietly (the hash chain would show it; the
trigger stops it).

Revision ID: 0001
Revises: -
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fleet.db import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_PG_TRIGGER = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
"""
_SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
)


def _auth_tables() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="ck_users_role"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("last_used_at", UtcDateTime, nullable=True),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.CheckConstraint("role IN ('agent', 'operator', 'admin')", name="ck_api_tokens_role"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])


def _device_table() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("airframe", sa.String(128), nullable=False),
        sa.Column("verdict_state", sa.String(16), nullable=False),
        sa.Column("last_attempt_at", UtcDateTime, nullable=True),
        sa.Column("last_received_at", UtcDateTime, nullable=True),
        sa.Column("last_success_at", UtcDateTime, nullable=True),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("current_attestation_id", sa.String(64), nullable=True),
        sa.Column("current_reasons", sa.Text, nullable=False),
        sa.Column("last_pass_attestation_id", sa.String(64), nullable=True),
        sa.Column("drift", sa.Text, nullable=False),
        sa.Column("manifest_version", sa.Integer, nullable=True),
        sa.Column("manifest_high", sa.Integer, nullable=False),
        sa.Column("manifest_high_sha256", sa.String(64), nullable=True),
        sa.Column("tpm_clock", sa.Text, nullable=True),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.Column("revoked_by", sa.String(128), nullable=True),
        sa.Column("revoked_reason", sa.Text, nullable=True),
        sa.Column("stale_notified_at", UtcDateTime, nullable=True),
        sa.CheckConstraint("verdict_state IN ('passing', 'failing', 'drifted', 'never-passed')",
                           name="ck_devices_verdict_state"),
    )
    op.create_index("ix_devices_last_attempt", "devices", ["last_attempt_at"])


def _attestation_tables() -> None:
    op.create_table(
        "attestations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("attested_at", UtcDateTime, nullable=True),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("answered_nonce", sa.Boolean, nullable=False),
        sa.Column("manifest_version", sa.Integer, nullable=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_attestations_device_received", "attestations", ["device_id", "received_at", "id"])
    op.create_table(
        "nonces",
        sa.Column("value_hex", sa.String(128), primary_key=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("issued_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("used_at", UtcDateTime, nullable=True),
        sa.Column("used_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_nonces_device_id", "nonces", ["device_id"])


def _event_and_audit_tables() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("attestation_id", sa.String(64), nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("delivered_at", UtcDateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.CheckConstraint("kind IN ('failure', 'drift', 'revocation', 'stale')", name="ck_events_kind"),
    )
    op.create_index("ix_events_due", "events", ["delivered_at", "next_attempt_at"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempted_at", UtcDateTime, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_delivery_attempts_event_id", "delivery_attempts", ["event_id"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_TRIGGER)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def upgrade() -> None:
    _auth_tables()
    _device_table()
    _attestation_tables()
    _event_and_audit_tables()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    for table in ("audit_log", "delivery_attempts", "events", "nonces", "attestations", "devices", "web_sessions",
                  "api_tokens", "users"):
        op.drop_table(table)
