"""The service's own audit trail: append-only, hash-chained, in the fleet database.

Each record carries the SHA-256 of the previous record's canonical bytes and its own, so a
record changed, removed or inserted afterwards breaks the chain at a named place
(:func:`verify_chain`). The database refuses UPDATE and DELETE on the table (a trigger, see the
first migration), and appends are serialised (SQLite: the write lock; PostgreSQL: a
transaction-scoped advisory lock) so two processes can never fork the chain; ``prev_sha256`` is
unique as a last guard.

What is recorded: every operator action (revocations, and whatever the web layer records
through :func:`append`), and every signed revocation accepted. Ingests are not: each attestation
row already names its source and actor, and chaining every ingest would serialise them all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, text

from attest.errors import FlightSealError, FormatError
from fleet.db import is_postgres
from fleet.models import AuditRecord, table

T = table(AuditRecord)
GENESIS = "0" * 64
ADVISORY_LOCK = 0x464C5341  # "FLSA": the audit chain's append lock on PostgreSQL
VERIFY_BATCH = 1000
ACTOR_MAX, ACTION_MAX, SUBJECT_MAX = 128, 64, 256  # the columns' sizes (fleet.models.AuditRecord)


class AuditChainError(FlightSealError):
    """The audit trail was altered: a record's hash, its link to the one before, or its sequence."""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    prev_sha256: str
    sha256: str


def canonical(seq: int, at: datetime, actor: str, action: str, subject: str, detail_json: str, prev: str) -> bytes:
    body = {"seq": seq, "at": at.astimezone(UTC).isoformat(), "actor": actor, "action": action,
            "subject": subject, "detail": detail_json, "prev_sha256": prev}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def append(conn: Connection, *, at: datetime, actor: str, action: str, subject: str,
           detail: Mapping[str, Any] | None = None) -> AuditEntry:
    """Append one record inside the caller's write transaction (it commits with the action).

    Raises FormatError for a field longer than its column (PostgreSQL would refuse it mid-transaction)."""
    for field, value, bound in (("actor", actor, ACTOR_MAX), ("action", action, ACTION_MAX),
                                ("subject", subject, SUBJECT_MAX)):
        if len(value) > bound:
            raise FormatError("audit record", f"is {len(value)} characters, at most {bound} are kept", field)
    if is_postgres(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})
    last = conn.execute(select(T.c.seq, T.c.sha256).order_by(T.c.seq.desc()).limit(1)).first()
    seq, prev = (1, GENESIS) if last is None else (last.seq + 1, last.sha256)
    at = at.astimezone(UTC)
    detail_json = json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical(seq, at, actor, action, subject, detail_json, prev)).hexdigest()
    conn.execute(insert(T).values(seq=seq, at=at, actor=actor, action=action, subject=subject, detail=detail_json,
                                  prev_sha256=prev, sha256=digest))
    return AuditEntry(seq, at, actor, action, subject, json.loads(detail_json), prev, digest)


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(row.seq, row.at, row.actor, row.action, row.subject, json.loads(row.detail),
                      row.prev_sha256, row.sha256)


def entries(conn: Connection, *, limit: int = 100, before_seq: int | None = None) -> list[AuditEntry]:
    """Newest first."""
    q = select(T).order_by(T.c.seq.desc()).limit(limit)
    if before_seq is not None:
        q = q.where(T.c.seq < before_seq)
    return [_entry(r) for r in conn.execute(q)]


def verify_chain(conn: Connection) -> int:
    """Check every record; return how many. Raises :class:`AuditChainError` naming the first bad one."""
    expected_seq, prev, after = 1, GENESIS, 0
    while True:
        rows = conn.execute(select(T).where(T.c.seq > after).order_by(T.c.seq).limit(VERIFY_BATCH)).all()
        if not rows:
            return expected_seq - 1
        for r in rows:
            if r.seq != expected_seq:
                raise AuditChainError(f"audit record {expected_seq} is missing (the next one is {r.seq})")
            if r.prev_sha256 != prev:
                raise AuditChainError(f"audit record {r.seq} ({r.action} {r.subject}) does not follow record "
                                      f"{r.seq - 1}: its previous-record hash differs (a record was changed or "
                                      "removed)")
            digest = hashlib.sha256(canonical(r.seq, r.at, r.actor, r.action, r.subject, r.detail,
                                              r.prev_sha256)).hexdigest()
            if digest != r.sha256:
                raise AuditChainError(f"audit record {r.seq} ({r.action} {r.subject}) was altered: its content no "
                                      "longer matches its hash")
            expected_seq, prev, after = r.seq + 1, r.sha256, r.seq
