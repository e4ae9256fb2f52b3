"""The fleet's tables. The migrations in ``fleet/migrations/versions`` create exactly these.

Why the shape:

* ``attestations`` is keyed by the SHA-256 of the raw envelope, so ingest is idempotent by a
  primary key (two processes ingesting the same bytes: one insert wins, the other gets an
  IntegrityError and reports a duplicate). The raw bytes are kept in the row, content-addressed.
* ``devices`` holds the state per airframe, updated in the same transaction as the attestation
  row, plus what the offline verifier would keep in its trust directory (the manifest-version
  high-water and the last TPM clock): the service never writes to the operators' pinned trust.
* ``events`` is an outbox: written in the ingest transaction, delivered later by
  :mod:`fleet.webhooks`, so an event exists exactly when its cause was committed.
* ``audit_log`` is append-only and hash-chained (:mod:`fleet.audit`).
* ``users``, ``api_tokens`` and ``web_sessions`` belong to the web layer (log-in, CI tokens).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import Mapped, deferred, mapped_column

from fleet.db import Base, UtcDateTime

SHA256_HEX_LEN = 64
DEVICE_ID_LEN = 128  # attest.enrollment bounds device ids and airframes to 128 characters


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="ck_users_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("role IN ('agent', 'operator', 'admin')", name="ck_api_tokens_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    token_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class WebSession(Base):
    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Device(Base):
    """One airframe's state. ``verdict_state`` is what its newest attestation says; whether it is
    stale or revoked is decided when read (staleness depends on the time of reading)."""

    __tablename__ = "devices"
    __table_args__ = (
        CheckConstraint("verdict_state IN ('passing', 'failing', 'drifted', 'never-passed')",
                        name="ck_devices_verdict_state"),
        Index("ix_devices_last_attempt", "last_attempt_at"),
    )

    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_LEN), primary_key=True)
    airframe: Mapped[str] = mapped_column(String(DEVICE_ID_LEN), default="")
    verdict_state: Mapped[str] = mapped_column(String(16), default="never-passed")
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # newest attestation time
    last_received_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    current_attestation_id: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN), nullable=True)
    current_reasons: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of reasons
    last_pass_attestation_id: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN), nullable=True)
    drift: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of changes since the last pass
    manifest_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # of the current attestation
    manifest_high: Mapped[int] = mapped_column(Integer, default=0)  # highest manifest version passed
    manifest_high_sha256: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN), nullable=True)
    tpm_clock: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON ClockInfo of the last passing quote
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    stale_notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Attestation(Base):
    __tablename__ = "attestations"
    __table_args__ = (Index("ix_attestations_device_received", "device_id", "received_at", "id"),)

    id: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), primary_key=True)  # sha256 of the raw envelope
    device_id: Mapped[str | None] = mapped_column(String(DEVICE_ID_LEN), nullable=True)  # None: not verified
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attested_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # the predicate's time
    passed: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[str] = mapped_column(Text, default="[]")
    answered_nonce: Mapped[bool] = mapped_column(Boolean, default=False)
    manifest_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    envelope: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))


class Nonce(Base):
    __tablename__ = "nonces"

    value_hex: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_LEN), index=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    used_by: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN), nullable=True)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("kind IN ('failure', 'drift', 'revocation', 'stale')", name="ck_events_kind"),
        Index("ix_events_due", "delivered_at", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str | None] = mapped_column(String(DEVICE_ID_LEN), nullable=True)
    attestation_id: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN), nullable=True)
    payload: Mapped[str] = mapped_column(Text)  # the JSON body POSTed
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # HTTP status; None: no response
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditRecord(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    detail: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), unique=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), unique=True)


def table(model: type[Base]) -> Table:
    """The Core table of a model (typed: ``__table__`` is declared as a bare FromClause)."""
    return cast(Table, model.__table__)
