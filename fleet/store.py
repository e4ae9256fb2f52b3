"""The fleet's storage: every attestation verified, stored and folded into its airframe's state.

Rules the store enforces:

* **Verify, then store.** An attestation is verified by the core (:mod:`fleet.intake`) before
  anything is written; what is written is the raw envelope (content-addressed: its id is the
  SHA-256 of the bytes), the verdict with every reason, and the airframe's new state, all in one
  transaction with any events it causes (:mod:`fleet.webhooks` delivers them later). A process
  killed at any point leaves either all of it or none of it.
* **Idempotent.** The same bytes again are a duplicate: nothing changes. Two processes ingesting
  the same bytes at once race on the primary key; the loser reports a duplicate.
* **Only verified signers move state.** An attestation that no enrolled key verifiably signed
  (a foreign airframe, bytes altered in transit) is stored with ``device_id`` None and changes no
  airframe: otherwise anyone could turn any airframe red by sending junk in its name.
* **Newest by attestation time wins.** Agents push queued evidence late, so an attestation made
  before the airframe's newest one is stored in its history but does not replace its current
  verdict; a late pass can still raise "last success".
* **Revocation is sticky.** A revoked airframe's attestations are stored and fail with
  ``device-revoked``.

Scale-out: several service processes (on one host or many) can share one PostgreSQL database.
Everything that matters is in it: ingest is idempotent by primary key, an airframe's row is locked
(``SELECT ... FOR UPDATE``) while its state is folded, a nonce is consumed by a conditional UPDATE,
and webhook dispatchers claim events with ``SKIP LOCKED``. Each process keeps only a cache of the
trust directory (re-checked every second), so every host must be given the same trust directory.
SQLite serialises writers with its one write lock: several processes on one host work, but for
load, use PostgreSQL.

Current state, as :class:`State`: ``revoked`` if revoked; else ``stale`` if the newest attestation
(by its signed time) is older than ``stale_after``; else what the newest attestation says:
``passing``, ``never-passed`` (it fails and none ever passed), ``drifted`` (it fails and measures
something differently from the last pass), or ``failing``.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from attest import dsse, timeutil
from attest.enrollment import DeviceRecord
from attest.errors import FlightSealError, FormatError
from attest.evidence import Predicate, parse_statement
from attest.models import Measurement
from attest.quote import observed_clock
from attest.verify import VerificationResult
from fleet import audit, drift, nonces
from fleet.config import FleetConfig
from fleet.db import WRITE, insert_ignore, is_postgres
from fleet.intake import (
    DeviceMemory,
    FleetCode,
    FleetReason,
    TrustCache,
    TrustSnapshot,
    TrustUnavailableError,
    claimed_signer,
    clock_from_json,
    clock_json,
    reasons_from_json,
    reasons_json,
    verify,
)
from fleet.models import Attestation, Device, Event, table
from fleet.models import Nonce as NonceRow
from fleet.revocation import Revocation, verify_revocation

A = table(Attestation)
D = table(Device)
E = table(Event)
N = table(NonceRow)
STALE_LIST_MAX = 200
SOURCE_MAX, ACTOR_MAX = 64, 128  # the columns' sizes (fleet.models)

# Statements built once: ingest runs them thousands of times a second, and building a statement
# costs about as much as the round trip that runs it.
_PREFETCH = select(
    select(A.c.id).where(A.c.id == bindparam("att")).scalar_subquery().label("dup"),
    select(D.c.manifest_high).where(D.c.device_id == bindparam("dev")).scalar_subquery().label("manifest_high"),
    select(D.c.manifest_high_sha256).where(D.c.device_id == bindparam("dev")).scalar_subquery().label("high_sha"),
    select(D.c.tpm_clock).where(D.c.device_id == bindparam("dev")).scalar_subquery().label("tpm_clock"),
)
_DEVICE_AND_NONCE = (select(D.c.device_id, D.c.verdict_state, D.c.last_attempt_at, D.c.last_success_at,
                            D.c.consecutive_failures, D.c.last_pass_attestation_id, D.c.drift, D.c.manifest_high,
                            D.c.revoked_at, D.c.revoked_by, D.c.revoked_reason,
                            N.c.expires_at.label("nonce_expires_at"), N.c.used_at.label("nonce_used_at"))
                     .select_from(D.outerjoin(N, and_(N.c.device_id == D.c.device_id,
                                                      N.c.value_hex == bindparam("nonce"))))
                     .where(D.c.device_id == bindparam("dev")))
_DEVICE_AND_NONCE_LOCKED = _DEVICE_AND_NONCE.with_for_update(of=D)
_INSERT_ATTESTATION = insert(A)
_INSERT_EVENT = insert(E)
_UPDATE_DEVICE = update(D).where(D.c.device_id == bindparam("b_device_id"))


class EnvelopeTooLargeError(FlightSealError):
    """An attestation bigger than the core's envelope bound: refused before anything is stored."""


class UnknownDeviceError(FlightSealError):
    """A device id that is neither enrolled in the trust directory nor known to the service."""


class State(enum.StrEnum):
    PASSING = "passing"
    FAILING = "failing"
    DRIFTED = "drifted"
    STALE = "stale"
    REVOKED = "revoked"
    NEVER_PASSED = "never-passed"


def _check_len(field: str, value: str, bound: int) -> None:
    if len(value) > bound:
        raise FormatError("fleet request", f"is {len(value)} characters, at most {bound} are kept", field)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IngestResult:
    attestation_id: str
    device_id: str | None
    passed: bool
    reasons: list[FleetReason]
    duplicate: bool
    answered_nonce: bool
    attested_at: datetime | None = None


@dataclass(frozen=True)
class DeviceSummary:
    device_id: str
    airframe: str
    state: State
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    consecutive_failures: int


@dataclass(frozen=True)
class Overview:
    counts: dict[State, int]  # every state, zero included
    stale: list[DeviceSummary]  # oldest first, at most STALE_LIST_MAX
    total: int
    enrolled_unseen: int  # enrolled in the trust directory, never attested here


@dataclass(frozen=True)
class AttestationRow:
    id: str
    device_id: str | None
    received_at: datetime
    attested_at: datetime | None
    passed: bool
    reasons: list[FleetReason]
    answered_nonce: bool
    manifest_version: int | None
    source: str
    actor: str


@dataclass(frozen=True)
class Part:
    """A part the manifest approves for this airframe, with its origin (ISO 3166 country)."""

    name: str
    vendor: str
    model: str
    origin: str
    selector: str


@dataclass(frozen=True)
class DeviceView:
    device_id: str
    airframe: str
    state: State
    last_attempt_at: datetime | None  # the newest attestation's signed time
    last_received_at: datetime | None
    last_success_at: datetime | None
    consecutive_failures: int
    passed: bool | None  # the current verdict; None: no verified attestation yet
    reasons: list[FleetReason]
    drift: list[drift.Change]
    since_last_attestation: timedelta | None
    manifest_version: int | None  # the manifest the current attestation was appraised against
    trust_manifest_version: int | None  # the manifest in the trust directory now
    parts: list[Part]
    measurements: list[Measurement]  # of the current attestation
    current_attestation_id: str | None
    revoked: bool
    revoked_at: datetime | None
    revoked_by: str | None
    revoked_reason: str | None


def _state_expr(cutoff: datetime) -> Any:
    return case((D.c.revoked_at.is_not(None), State.REVOKED.value),
                (D.c.last_attempt_at < cutoff, State.STALE.value), else_=D.c.verdict_state)


def _summary(row: Any) -> DeviceSummary:
    return DeviceSummary(row.device_id, row.airframe, State(row.state), row.last_attempt_at, row.last_success_at,
                         row.consecutive_failures)


def _att_row(r: Any) -> AttestationRow:
    return AttestationRow(r.id, r.device_id, r.received_at, r.attested_at, r.passed, reasons_from_json(r.reasons),
                          r.answered_nonce, r.manifest_version, r.source, r.actor)


def _event(conn: Connection, kind: str, device_id: str | None, attestation_id: str | None, now: datetime,
           body: Mapping[str, Any]) -> None:
    payload = {"kind": kind, "device_id": device_id, "attestation_id": attestation_id,
               "at": timeutil.format(now), **body}
    conn.execute(_INSERT_EVENT, {"kind": kind, "device_id": device_id, "attestation_id": attestation_id,
                                 "payload": json.dumps(payload, sort_keys=True), "created_at": now, "attempts": 0,
                                 "next_attempt_at": now})


def _measurements(raw: bytes | None) -> list[Measurement]:
    """The measurements of a stored attestation (verified when it was ingested), or none if it has none."""
    if raw is None:
        return []
    try:
        return list(parse_statement(dsse.Envelope.from_bytes(raw, "stored attestation")).measurements)
    except FlightSealError:
        return []


class FleetStore:
    """Verification and storage for the fleet; one per process, shared by its threads."""

    def __init__(self, engine: Engine, trust_dir: Path, *, clock: Callable[[], datetime] = utc_now,
                 stale_after: timedelta | None = None, config: FleetConfig | None = None) -> None:
        """``stale_after`` overrides ``config.stale_after`` (7 days by default)."""
        self.engine = engine
        config = config or FleetConfig()
        self.config = config if stale_after is None else replace(config, stale_after=stale_after)
        self.stale_after = self.config.stale_after
        self.trust = TrustCache(trust_dir, self.config.trust_recheck_s)
        self._clock = clock

    # ---- writes -------------------------------------------------------------------------------

    def _write(self) -> Any:
        return self.engine.connect().execution_options(**WRITE)

    def issue_nonce(self, device_id: str) -> nonces.Nonce:
        """A single-use challenge for an enrolled device."""
        if device_id not in self.trust.get().by_id:
            raise UnknownDeviceError(f"device {device_id!r} is not enrolled in {self.trust.path}/devices; "
                                     "no nonce issued")
        with self._write() as conn, conn.begin():
            return nonces.issue(conn, device_id, self._clock(), self.config)

    def ingest(self, envelope: bytes, *, source: str, actor: str) -> IngestResult:
        """Verify and store one attestation (see the module's rules).

        Raises only when nothing can be decided: :class:`EnvelopeTooLargeError` (unusable input) or
        :class:`fleet.intake.TrustUnavailableError` (the trust directory is unreadable: a server-side
        fault, nothing is stored). A bad attestation is not an error: it is a failed result, stored.
        """
        _check_len("source", source, SOURCE_MAX)
        _check_len("actor", actor, ACTOR_MAX)
        if len(envelope) > self.config.max_envelope_bytes:
            raise EnvelopeTooLargeError(f"attestation is {len(envelope)} bytes, more than the "
                                        f"{self.config.max_envelope_bytes} bytes allowed")
        att_id = hashlib.sha256(envelope).hexdigest()
        snap = self.trust.get()
        claimed = claimed_signer(envelope, snap)
        try:
            with self.engine.connect() as conn:
                if is_postgres(conn):
                    with conn.begin():  # one transaction from the duplicate check to the commit
                        return self._check_and_record(conn, att_id, envelope, snap, claimed, source, actor)
                return self._check_and_record(conn, att_id, envelope, snap, claimed, source, actor)
        except IntegrityError:
            stored = self._stored_result(att_id)
            if stored is None:
                raise
            return stored

    def _check_and_record(self, conn: Connection, att_id: str, envelope: bytes, snap: TrustSnapshot,
                          claimed: DeviceRecord | None, source: str, actor: str) -> IngestResult:
        """Duplicate check and device memory (one round trip), verification, then the write.

        PostgreSQL: all in the caller's transaction; the plain reads take no locks, so holding it
        open while verifying costs nothing. SQLite: the read ends before verifying and the write
        begins IMMEDIATE, so the database's single write lock is held only for the write itself.
        """
        duplicate, memory = self._prefetch(conn, att_id, claimed.device_id if claimed else None)
        if duplicate:
            stored = self._stored_result(att_id, conn)
            if stored is not None:
                return stored
        now = self._clock()
        result = verify(envelope, snap, memory, now, self.config)
        if is_postgres(conn):
            return self._record(conn, att_id, envelope, result, now, source, actor)
        conn.rollback()
        with conn.execution_options(**WRITE).begin():
            return self._record(conn, att_id, envelope, result, now, source, actor)

    def _prefetch(self, conn: Connection, att_id: str, device_id: str | None) -> tuple[bool, DeviceMemory | None]:
        """In one round trip: is this attestation stored already, and what the claimed device's row remembers."""
        r = conn.execute(_PREFETCH, {"att": att_id, "dev": device_id or ""}).one()
        memory = None if r.manifest_high is None else \
            DeviceMemory(r.manifest_high, r.high_sha, clock_from_json(r.tpm_clock))
        return r.dup is not None, memory

    def _stored_result(self, att_id: str, conn: Connection | None = None) -> IngestResult | None:
        q = select(A.c.device_id, A.c.passed, A.c.reasons, A.c.answered_nonce, A.c.attested_at).where(A.c.id == att_id)
        if conn is not None:
            r = conn.execute(q).first()
        else:
            with self.engine.connect() as own:
                r = own.execute(q).first()
        if r is None:
            return None
        return IngestResult(att_id, r.device_id, r.passed, reasons_from_json(r.reasons), True, r.answered_nonce,
                            r.attested_at)

    def _lock_device(self, conn: Connection, device_id: str, airframe: str, nonce: bytes = b"") -> Any:
        """The device's row, locked until commit (PostgreSQL; SQLite holds the write lock already),
        created if new, with the issued nonce ``nonce`` of that device joined in (or nulls)."""
        q = _DEVICE_AND_NONCE_LOCKED if is_postgres(conn) else _DEVICE_AND_NONCE
        params = {"dev": device_id, "nonce": nonce.hex()}
        row = conn.execute(q, params).first()
        if row is None:
            insert_ignore(conn, D, {"device_id": device_id, "airframe": airframe})
            row = conn.execute(q, params).one()
        return row

    def _record(self, conn: Connection, att_id: str, envelope: bytes, result: VerificationResult, now: datetime,
                source: str, actor: str) -> IngestResult:
        reasons = [FleetReason.from_core(r) for r in result.reasons]
        p, device, answered, row = result.predicate, result.device, False, None
        if device is not None:
            row = self._lock_device(conn, device.device_id, device.airframe, p.nonce if p is not None else b"")
            if p is not None:
                outcome = nonces.consume(conn, p.nonce, now, att_id, row.nonce_expires_at, row.nonce_used_at)
                answered = outcome is nonces.NonceOutcome.ANSWERED
                if outcome is nonces.NonceOutcome.REPLAYED:
                    reasons.append(FleetReason(FleetCode.NONCE_REPLAYED, "answers a nonce this service issued that "
                                               "another attestation already answered (replayed?)", "nonce"))
            if row.revoked_at is not None:
                reasons.append(FleetReason(FleetCode.DEVICE_REVOKED, f"device {device.device_id} was revoked at "
                                           f"{timeutil.format(row.revoked_at)} by {row.revoked_by}: "
                                           f"{row.revoked_reason}", "device"))
        passed = result.passed and not reasons
        conn.execute(_INSERT_ATTESTATION, {
            "id": att_id, "device_id": device.device_id if device else None, "received_at": now,
            "attested_at": p.time if p else None, "passed": passed, "reasons": reasons_json(reasons),
            "answered_nonce": answered, "manifest_version": p.manifest.version if p and p.manifest else None,
            "source": source, "actor": actor, "envelope": envelope})
        if row is not None:
            self._fold(conn, row, att_id, p, passed, reasons, now)
        if not passed:
            _event(conn, "failure", device.device_id if device else None, att_id, now,
                   {"reasons": [r.to_json() for r in reasons]})
        return IngestResult(att_id, device.device_id if device else None, passed, reasons, False, answered,
                            p.time if p else None)

    def _fold(self, conn: Connection, row: Any, att_id: str, p: Predicate | None, passed: bool,
              reasons: list[FleetReason], now: datetime) -> None:
        """Fold one verified attestation into its airframe's row (newest by attestation time wins)."""
        t = p.time if p is not None else now
        values: dict[str, Any] = {"last_received_at": now}
        if passed and p is not None:
            if row.last_success_at is None or t >= row.last_success_at:
                values.update(last_success_at=t, last_pass_attestation_id=att_id)
            ref = p.manifest
            if ref is not None and ref.version > row.manifest_high:
                values.update(manifest_high=ref.version, manifest_high_sha256=ref.sha256)
            if p.quote is not None:
                values["tpm_clock"] = clock_json(observed_clock(p.quote))
        if row.last_attempt_at is None or t >= row.last_attempt_at:
            values.update(last_attempt_at=t, current_attestation_id=att_id, current_reasons=reasons_json(reasons),
                          manifest_version=p.manifest.version if p and p.manifest else None, stale_notified_at=None)
            if passed:
                values.update(verdict_state=State.PASSING.value, consecutive_failures=0, drift="[]")
            else:
                changes = self._drift(conn, row.last_pass_attestation_id, p)
                text = drift.dumps(changes)
                state = State.NEVER_PASSED if row.last_pass_attestation_id is None \
                    else State.DRIFTED if changes else State.FAILING
                values.update(verdict_state=state.value, consecutive_failures=row.consecutive_failures + 1, drift=text)
                if changes and text != row.drift:
                    _event(conn, "drift", row.device_id, att_id, now, {"changes": [c.to_json() for c in changes]})
        elif passed and row.verdict_state == State.NEVER_PASSED.value:
            values["verdict_state"] = State.FAILING.value  # a late pass: it did pass once, before the failure
        conn.execute(_UPDATE_DEVICE, {"b_device_id": row.device_id, **values})

    def _drift(self, conn: Connection, last_pass_id: str | None, p: Predicate | None) -> list[drift.Change]:
        if last_pass_id is None or p is None:
            return []
        raw = conn.execute(select(A.c.envelope).where(A.c.id == last_pass_id)).scalar_one_or_none()
        if raw is None:
            return []
        before = parse_statement(dsse.Envelope.from_bytes(raw, f"stored attestation {last_pass_id}"))
        changes, _total = drift.diff(before.measurements, p.measurements, self.config.max_drift_changes)
        return changes

    def revoke(self, device_id: str, *, actor: str, reason: str) -> None:
        """An operator revokes an airframe: audited; its later attestations fail."""
        _check_len("actor", actor, ACTOR_MAX)
        known = device_id in self.trust.get().by_id
        with self._write() as conn, conn.begin():
            if not known and conn.execute(select(D.c.device_id).where(D.c.device_id == device_id)).first() is None:
                raise UnknownDeviceError(f"device {device_id!r} is neither enrolled nor known here; nothing revoked")
            self._revoke(conn, device_id, actor, reason, {"reason": reason, "by": "operator"})

    def revoke_signed(self, envelope: bytes, *, actor: str) -> Revocation:
        """A revocation signed by the root's enrolment role (threshold); refused below it.
        Recorded as revoked by ``signed:<actor>``; the audit record names the signing keys."""
        _check_len("actor", actor, ACTOR_MAX)
        snap = self.trust.get()
        now = self._clock()
        revocation, signers = verify_revocation(envelope, snap.state, now, self.config.max_clock_skew)
        with self._write() as conn, conn.begin():
            self._revoke(conn, revocation.device_id, f"signed:{actor}"[:ACTOR_MAX], revocation.reason,
                         {"reason": revocation.reason, "by": "signed", "signed_at": timeutil.format(revocation.time),
                          "signers": sorted(signers), "envelope_sha256": hashlib.sha256(envelope).hexdigest(),
                          "uploaded_by": actor})
        return revocation

    def _revoke(self, conn: Connection, device_id: str, by: str, reason: str, detail: dict[str, Any]) -> None:
        now = self._clock()
        record = self.trust.get().by_id.get(device_id)
        row = self._lock_device(conn, device_id, record.airframe if record else "")
        already = row.revoked_at is not None
        if not already:
            conn.execute(update(D).where(D.c.device_id == device_id)
                         .values(revoked_at=now, revoked_by=by, revoked_reason=reason))
            _event(conn, "revocation", device_id, None, now, {"reason": reason, "revoked_by": by})
        audit.append(conn, at=now, actor=by, action="revoke", subject=device_id,
                     detail={**detail, "already_revoked": already})

    def record_action(self, actor: str, action: str, subject: str, detail: Mapping[str, Any] | None = None) -> None:
        """Append an operator action (log-in, token created, user added…) to the audit trail."""
        with self._write() as conn, conn.begin():
            audit.append(conn, at=self._clock(), actor=actor, action=action, subject=subject, detail=detail)

    def staleness_scan(self, now: datetime | None = None) -> int:
        """Emit one ``stale`` event per airframe that went stale since its last attestation; return how many."""
        now = now or self._clock()
        cutoff = now - self.stale_after
        with self._write() as conn, conn.begin():
            q = select(D.c.device_id, D.c.last_attempt_at).where(
                D.c.last_attempt_at < cutoff, D.c.stale_notified_at.is_(None), D.c.revoked_at.is_(None))
            if is_postgres(conn):
                q = q.with_for_update(skip_locked=True)
            rows = conn.execute(q).all()
            for r in rows:
                conn.execute(update(D).where(D.c.device_id == r.device_id).values(stale_notified_at=now))
                _event(conn, "stale", r.device_id, None, now, {"last_attempt_at": timeutil.format(r.last_attempt_at)})
        return len(rows)

    # ---- reads --------------------------------------------------------------------------------

    def _snapshot_for_reading(self) -> TrustSnapshot | None:
        """The trust snapshot for display; pages still show the fleet when the trust dir is broken."""
        try:
            return self.trust.get()
        except TrustUnavailableError:
            return None

    def overview(self) -> Overview:
        now = self._clock()
        state = _state_expr(now - self.stale_after).label("state")
        with self.engine.connect() as conn:
            grouped = conn.execute(select(state, func.count()).group_by(state)).all()
            stale = conn.execute(select(D.c.device_id, D.c.airframe, state, D.c.last_attempt_at, D.c.last_success_at,
                                        D.c.consecutive_failures)
                                 .where(D.c.revoked_at.is_(None), D.c.last_attempt_at < now - self.stale_after)
                                 .order_by(D.c.last_attempt_at, D.c.device_id).limit(STALE_LIST_MAX)).all()
            snap = self._snapshot_for_reading()
            enrolled = set(snap.by_id) if snap is not None else set()
            seen = set(conn.execute(select(D.c.device_id)).scalars()) if enrolled else set()
        counts = {s: 0 for s in State}
        for name, n in grouped:
            counts[State(name)] = int(n)
        unseen = len(enrolled - seen)
        return Overview(counts, [_summary(r) for r in stale], sum(counts.values()), unseen)

    def device(self, device_id: str) -> DeviceView | None:
        now = self._clock()
        with self.engine.connect() as conn:
            row = conn.execute(select(D, _state_expr(now - self.stale_after).label("state"))
                               .where(D.c.device_id == device_id)).first()
            if row is None:
                return None
            raw = conn.execute(select(A.c.envelope).where(A.c.id == row.current_attestation_id)).scalar_one_or_none() \
                if row.current_attestation_id else None
        measurements = _measurements(raw)
        snap = self._snapshot_for_reading()
        manifest = snap.manifest if snap is not None else None
        parts = [Part(c.name, c.vendor, c.model, c.origin, c.selector) for c in manifest.components] \
            if manifest is not None and manifest.airframe.covers(row.airframe, device_id) else []
        return DeviceView(
            row.device_id, row.airframe, State(row.state), row.last_attempt_at, row.last_received_at,
            row.last_success_at, row.consecutive_failures,
            None if row.current_attestation_id is None else row.verdict_state == State.PASSING.value,
            reasons_from_json(row.current_reasons), drift.loads(row.drift),
            now - row.last_attempt_at if row.last_attempt_at else None, row.manifest_version,
            manifest.version if manifest is not None else None, parts,
            measurements, row.current_attestation_id, row.revoked_at is not None, row.revoked_at, row.revoked_by,
            row.revoked_reason)

    def history(self, device_id: str, *, limit: int = 100, before: str | None = None) -> list[AttestationRow]:
        """Newest first (by arrival); ``before`` is the id of the last row of the previous page."""
        limit = max(1, min(limit, self.config.history_page_max))
        cols = [c for c in A.c if c.name != "envelope"]
        q = select(*cols).where(A.c.device_id == device_id)
        with self.engine.connect() as conn:
            if before is not None:
                anchor = conn.execute(select(A.c.received_at).where(A.c.id == before,
                                                                    A.c.device_id == device_id)).first()
                if anchor is None:
                    return []
                q = q.where(or_(A.c.received_at < anchor.received_at,
                                (A.c.received_at == anchor.received_at) & (A.c.id < before)))
            rows = conn.execute(q.order_by(A.c.received_at.desc(), A.c.id.desc()).limit(limit)).all()
        return [_att_row(r) for r in rows]

    def unattributed(self, *, limit: int = 100) -> list[AttestationRow]:
        """Newest attestations no enrolled key verifiably signed (foreign airframes, bytes altered
        in transit): they belong to no airframe's history, yet an officer should see them."""
        limit = max(1, min(limit, self.config.history_page_max))
        cols = [c for c in A.c if c.name != "envelope"]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols).where(A.c.device_id.is_(None))
                                .order_by(A.c.received_at.desc(), A.c.id.desc()).limit(limit)).all()
        return [_att_row(r) for r in rows]

    def attestation(self, attestation_id: str) -> AttestationRow | None:
        cols = [c for c in A.c if c.name != "envelope"]
        with self.engine.connect() as conn:
            r = conn.execute(select(*cols).where(A.c.id == attestation_id)).first()
        return _att_row(r) if r is not None else None

    def search(self, query: str, limit: int = 50) -> list[DeviceSummary]:
        """Airframes whose device id or airframe model contains the words of ``query``;
        a word ``state:<name>`` (``state:stale``, ``state:drifted``…) filters by state."""
        limit = max(1, min(limit, self.config.search_max))
        now = self._clock()
        state = _state_expr(now - self.stale_after).label("state")
        q = select(D.c.device_id, D.c.airframe, state, D.c.last_attempt_at, D.c.last_success_at,
                   D.c.consecutive_failures)
        for word in query.split()[:8]:
            if word.startswith("state:"):
                q = q.where(state == word.removeprefix("state:"))
                continue
            pattern = "%" + word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            q = q.where(or_(func.lower(D.c.device_id).like(pattern, escape="\\"),
                            func.lower(D.c.airframe).like(pattern, escape="\\")))
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(D.c.device_id).limit(limit)).all()
        return [_summary(r) for r in rows]

    def ping(self) -> bool:
        """Whether the database answers (for a health check)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError:
            return False
        return True

    def raw_envelope(self, attestation_id: str) -> bytes | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(A.c.envelope).where(A.c.id == attestation_id)).scalar_one_or_none()
        return bytes(value) if value is not None else None

    def audit_log(self, *, limit: int = 100, before_seq: int | None = None) -> list[audit.AuditEntry]:
        with self.engine.connect() as conn:
            return audit.entries(conn, limit=limit, before_seq=before_seq)

    def verify_audit_chain(self) -> None:
        """Raises :class:`fleet.audit.AuditChainError` naming the first altered or missing record."""
        with self.engine.connect() as conn:
            audit.verify_chain(conn)
