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

Throughput on PostgreSQL (issue 14's 1,000 attestations/s on two cores): an ingest reads once
(duplicate check and the device's memory: a prepared statement in autocommit, no transaction
held while verifying, shared by the reads concurrent in the process), verifies in the caller's
thread, then joins the process's group commit
(:class:`GroupCommit`): the ingests concurrent in one process are written in one transaction,
pipelined (:meth:`FleetStore._write_batch_pg`: two round trips per batch, one WAL flush), and each
caller returns only after the transaction holding its own rows committed (fsync on,
``synchronous_commit`` on). A member the server refuses (a lost insert race) rolls its batch
back, and every member is retried alone, so it fails only itself. The batch is folded in memory
in arrival order, so it writes exactly what one transaction per ingest would (tested). SQLite, or
``group_commit=False``, keeps one SQLAlchemy transaction per ingest.

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
import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import PoolProxiedConnection

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
from fleet.group_commit import GroupCommit, Pending
from fleet.intake import (
    DeviceMemory,
    FleetCode,
    FleetReason,
    TrustCache,
    TrustSnapshot,
    TrustUnavailableError,
    clock_from_json,
    clock_json,
    named_devices,
    reasons_from_json,
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
_PREFETCH_PG = ("SELECT (SELECT a.id FROM attestations a WHERE a.id = %(att)s), d.manifest_high, "
                "d.manifest_high_sha256, d.tpm_clock FROM (SELECT 1) AS one "
                "LEFT JOIN devices d ON d.device_id = %(dev)s")
_PREFETCH_MANY_PG = ("SELECT u.i, (SELECT a.id FROM attestations a WHERE a.id = u.att), d.manifest_high, "
                     "d.manifest_high_sha256, d.tpm_clock "
                     "FROM unnest(%(atts)s::text[], %(devs)s::text[]) WITH ORDINALITY AS u(att, dev, i) "
                     "LEFT JOIN devices d ON d.device_id = u.dev")
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
# the devices of a batch and the issued nonces its attestations carry, in one round trip
_DEVICE_KEYS = ("device_id", "verdict_state", "last_attempt_at", "last_success_at", "consecutive_failures",
                "last_pass_attestation_id", "drift", "manifest_high", "revoked_at", "revoked_by", "revoked_reason")
_DEVICES_AND_NONCES = (select(*(D.c[k] for k in _DEVICE_KEYS), N.c.value_hex.label("nonce_hex"),
                              N.c.expires_at.label("nonce_expires_at"), N.c.used_at.label("nonce_used_at"))
                       .select_from(D.outerjoin(N, and_(N.c.device_id == D.c.device_id,
                                                        N.c.value_hex.in_(bindparam("nonces", expanding=True)))))
                       .where(D.c.device_id.in_(bindparam("devs", expanding=True)))
                       .order_by(D.c.device_id))
_DEVICES_AND_NONCES_LOCKED = _DEVICES_AND_NONCES.with_for_update(of=D)
# the same, as psycopg SQL for the pipelined batch write (see FleetStore._write_batch_pg)
_LOCK_PG = ("SELECT " + ", ".join(f"d.{k}" for k in _DEVICE_KEYS) + ", n.value_hex, n.expires_at, n.used_at "
            "FROM devices d LEFT JOIN nonces n ON n.device_id = d.device_id AND n.value_hex = ANY(%(nonces)s) "
            "WHERE d.device_id = ANY(%(devs)s) ORDER BY d.device_id FOR UPDATE OF d")
# a new airframe's row with the model's (client-side) defaults, as insert_ignore(D, ...) writes it
_DEVICE_DEFAULTS = {c.name: c.default.arg for c in D.c  # type: ignore[attr-defined]
                    if c.default is not None and c.default.is_scalar and c.name not in ("device_id", "airframe")}
_NEW_DEVICE_PG = (f"INSERT INTO devices (device_id, airframe, {', '.join(_DEVICE_DEFAULTS)}) "
                  f"VALUES (%(d)s, %(a)s, {', '.join(f'%({c})s' for c in _DEVICE_DEFAULTS)}) ON CONFLICT DO NOTHING")
_ATT_COLUMNS = ("id", "device_id", "received_at", "attested_at", "passed", "reasons", "answered_nonce",
                "manifest_version", "source", "actor", "envelope")
_INSERT_ATTESTATION_PG = (f"INSERT INTO attestations ({', '.join(_ATT_COLUMNS)}) "
                          f"VALUES ({', '.join(f'%({c})s' for c in _ATT_COLUMNS)})")
_EVENT_COLUMNS = ("kind", "device_id", "attestation_id", "payload", "created_at", "attempts", "next_attempt_at")
_INSERT_EVENT_PG = (f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) "
                    f"VALUES ({', '.join(f'%({c})s' for c in _EVENT_COLUMNS)})")
_DEVICE_COLUMNS = frozenset(c.name for c in D.c)


def _utc(value: Any) -> Any:
    """A timestamp read by psycopg directly as UtcDateTime returns it (aware, UTC); others as they are."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


@functools.lru_cache(maxsize=64)
def _update_device_pg(columns: tuple[str, ...]) -> str:
    assert _DEVICE_COLUMNS.issuperset(columns)  # names from _fold, never from input
    return f"UPDATE devices SET {', '.join(f'{c} = %({c})s' for c in columns)} WHERE device_id = %(b_device_id)s"




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


def _event_row(kind: str, device_id: str | None, attestation_id: str | None, now: datetime,
               body: Mapping[str, Any]) -> dict[str, Any]:
    payload = {"kind": kind, "device_id": device_id, "attestation_id": attestation_id,
               "at": timeutil.format(now), **body}
    return {"kind": kind, "device_id": device_id, "attestation_id": attestation_id,
            "payload": json.dumps(payload, sort_keys=True), "created_at": now, "attempts": 0, "next_attempt_at": now}


def _event(conn: Connection, kind: str, device_id: str | None, attestation_id: str | None, now: datetime,
           body: Mapping[str, Any]) -> None:
    conn.execute(_INSERT_EVENT, _event_row(kind, device_id, attestation_id, now, body))


class _NotCommitted(Exception):
    """The server refused a statement of a batch: its transaction rolled back, nothing committed."""


@dataclass
class _Plan:
    """What a batch writes (:meth:`FleetStore._plan`)."""

    att_rows: list[dict[str, Any]] = field(default_factory=list)
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)  # device id -> columns to set
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    results: list[IngestResult] = field(default_factory=list)

    def device_updates(self) -> list[list[dict[str, Any]]]:
        """The devices' updates as executemany parameter lists, one per set of columns."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for device_id, values in self.updates.items():
            by_columns.setdefault(tuple(sorted(values)), []).append({"b_device_id": device_id, **values})
        return list(by_columns.values())


class _Read(Pending[tuple[bool, "DeviceMemory | None"]]):
    """An ingest's read before verifying: is it stored already, and the claimed device's memory."""

    def __init__(self, att_id: str, device_id: str | None) -> None:
        super().__init__()
        self.att_id, self.device_id = att_id, device_id


class _Job(Pending[IngestResult]):
    """A verified attestation waiting for its write."""

    def __init__(self, att_id: str, envelope: bytes, result: VerificationResult, now: datetime, source: str,
                 actor: str) -> None:
        super().__init__()
        self.att_id, self.envelope, self.result, self.now, self.source, self.actor = \
            att_id, envelope, result, now, source, actor


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
                 stale_after: timedelta | None = None, config: FleetConfig | None = None,
                 group_commit: bool | None = None) -> None:
        """``stale_after`` overrides ``config.stale_after`` (7 days by default). ``group_commit``
        (default: on for PostgreSQL, off for SQLite, whose single writer gains nothing from it)
        writes concurrent ingests of this process in shared transactions (:class:`GroupCommit`)."""
        self.engine = engine
        config = config or FleetConfig()
        self.config = config if stale_after is None else replace(config, stale_after=stale_after)
        self.stale_after = self.config.stale_after
        self.trust = TrustCache(trust_dir, self.config.trust_recheck_s)
        self._clock = clock
        if group_commit is None:
            group_commit = is_postgres(engine)
        self._group: GroupCommit[_Job] | None = GroupCommit(self._write_batch) if group_commit else None
        self._reads: GroupCommit[_Read] | None = GroupCommit(self._read_batch) if group_commit else None

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
        """Verify and store one attestation (see the module's rules); returns once it is committed.

        Raises only when nothing can be decided: :class:`EnvelopeTooLargeError` (unusable input) or
        :class:`fleet.intake.TrustUnavailableError` (the trust directory is unreadable: a server-side
        fault, nothing is stored). A bad attestation is not an error: it is a failed result, stored.

        PostgreSQL: one read (duplicate check and the device's memory, no transaction held), the
        verification in the caller's thread, then the write through the store's group commit
        (:class:`GroupCommit`): concurrent ingests of this process share one transaction and one
        WAL flush, and each caller returns only after the transaction holding its rows committed.
        """
        _check_len("source", source, SOURCE_MAX)
        _check_len("actor", actor, ACTOR_MAX)
        if len(envelope) > self.config.max_envelope_bytes:
            raise EnvelopeTooLargeError(f"attestation is {len(envelope)} bytes, more than the "
                                        f"{self.config.max_envelope_bytes} bytes allowed")
        att_id = hashlib.sha256(envelope).hexdigest()
        snap = self.trust.get()
        named = named_devices(envelope, snap)  # the envelope's JSON is read once for both uses
        claimed = named[0].device_id if named else None
        try:
            if self._group is not None:
                return self._ingest_grouped(att_id, envelope, snap, named, claimed, source, actor)
            with self.engine.connect() as conn:
                return self._check_and_record(conn, att_id, envelope, snap, named, claimed, source, actor)
        except IntegrityError:
            stored = self._stored_result(att_id)
            if stored is None:
                raise
            return stored

    def _ingest_grouped(self, att_id: str, envelope: bytes, snap: TrustSnapshot, named: list[DeviceRecord],
                        claimed: str | None, source: str, actor: str) -> IngestResult:
        read = _Read(att_id, claimed)
        assert self._reads is not None
        self._reads.submit(read)  # concurrent callers' reads share one statement, as their writes do
        duplicate, memory = read.get()
        if duplicate:
            stored = self._stored_result(att_id)
            if stored is not None:
                return stored
        now = self._clock()
        job = _Job(att_id, envelope, verify(envelope, snap, memory, now, self.config, named), now, source, actor)
        assert self._group is not None
        self._group.submit(job)
        return job.get()

    def _check_and_record(self, conn: Connection, att_id: str, envelope: bytes, snap: TrustSnapshot,
                          named: list[DeviceRecord], claimed: str | None, source: str,
                          actor: str) -> IngestResult:
        """SQLite, or PostgreSQL without group commit: the duplicate check and device memory (one
        round trip), verification, then the write, one transaction per ingest.

        PostgreSQL: all in one transaction; the plain reads take no locks, so holding it open while
        verifying costs nothing. SQLite: the read ends before verifying and the write begins
        IMMEDIATE, so the database's single write lock is held only for the write itself.
        """
        pg = is_postgres(conn)
        if pg:
            conn.begin()
        duplicate, memory = self._prefetch(conn, att_id, claimed)
        if duplicate:
            stored = self._stored_result(att_id, conn)
            if stored is not None:
                conn.rollback()
                return stored
        now = self._clock()
        job = _Job(att_id, envelope, verify(envelope, snap, memory, now, self.config, named), now, source, actor)
        if pg:
            result = self._record_many(conn, [job])[0]
            conn.commit()
            return result
        conn.rollback()
        with conn.execution_options(**WRITE).begin():
            return self._record_many(conn, [job])[0]

    def _write_batch(self, jobs: list[_Job]) -> None:
        """The group commit's writer: the batch in one transaction (:meth:`_write_batch_pg`). If the
        server refused a statement of it (a lost insert race, say), nothing of it is committed and
        each member is retried in a transaction of its own, so a failing member fails only itself.
        If the outcome is unknown (the connection died, the COMMIT may or may not have happened),
        every member is told it failed: none is acknowledged."""
        try:
            results = self._write_batch_pg(jobs)
        except _NotCommitted:
            pass
        except Exception as exc:
            for job in jobs:
                job.fail(exc)
            return
        else:
            for job, result in zip(jobs, results, strict=True):
                job.resolve(result)
            return
        for job in jobs:
            try:
                with self.engine.connect() as conn, conn.begin():
                    result = self._record_many(conn, [job])[0]
            except IntegrityError as exc:  # another process stored the same bytes first: a duplicate
                stored = self._stored_result(job.att_id)
                job.resolve(stored) if stored is not None else job.fail(exc)
            except Exception as exc:
                job.fail(exc)
            else:
                job.resolve(result)

    def _read_batch(self, reads: list[_Read]) -> None:
        """The reads before verifying, for concurrent ingests at once: one statement in autocommit
        on the psycopg connection (no BEGIN/ROLLBACK, no SQLAlchemy execution machinery)."""
        try:
            raw = self.engine.raw_connection()
            try:
                driver: Any = raw.driver_connection
                driver.autocommit = True
                try:
                    if len(reads) == 1:
                        found = [self._prefetch(raw, reads[0].att_id, reads[0].device_id)]
                    else:
                        found = self._prefetch_many(driver, reads)
                finally:
                    driver.autocommit = False
            finally:
                raw.close()
        except Exception as exc:
            for r in reads:
                r.fail(exc)
            return
        for r, value in zip(reads, found, strict=True):
            r.resolve(value)

    @staticmethod
    def _prefetch_many(driver: Any, reads: list[_Read]) -> list[tuple[bool, DeviceMemory | None]]:
        rows = driver.execute(_PREFETCH_MANY_PG, {"atts": [r.att_id for r in reads],
                                                  "devs": [r.device_id or "" for r in reads]},
                              prepare=True).fetchall()
        out: list[tuple[bool, DeviceMemory | None]] = [(False, None)] * len(reads)
        for i, dup, high, high_sha, clock in rows:
            memory = None if high is None else DeviceMemory(high, high_sha, clock_from_json(clock))
            out[i - 1] = (dup is not None, memory)
        return out

    def _prefetch(self, conn: Connection | PoolProxiedConnection, att_id: str,
                  device_id: str | None) -> tuple[bool, DeviceMemory | None]:
        """In one round trip: is this attestation stored already, and what the claimed device's row
        remembers. ``conn``: a SQLAlchemy connection, or (PostgreSQL's hot path) a pooled psycopg
        connection in autocommit, on which the one SELECT goes out as a prepared statement."""
        if isinstance(conn, Connection):
            r = conn.execute(_PREFETCH, {"att": att_id, "dev": device_id or ""}).one()
            dup, high, high_sha, clock = r.dup, r.manifest_high, r.high_sha, r.tpm_clock
        else:
            driver: Any = conn.driver_connection
            row = driver.execute(_PREFETCH_PG, {"att": att_id, "dev": device_id or ""},
                                                 prepare=True).fetchone()
            dup, high, high_sha, clock = row
        memory = None if high is None else DeviceMemory(high, high_sha, clock_from_json(clock))
        return dup is not None, memory

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

    def _lock_devices(self, conn: Connection, airframes: Mapping[str, str], nonce_hexes: list[str]
                      ) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], tuple[Any, Any]]]:
        """The devices' rows, locked until commit in device-id order (PostgreSQL; so two batches
        cannot deadlock on them), created if new, and the issued nonces among ``nonce_hexes``
        that belong to them: ``(device_id, nonce_hex) -> (expires_at, used_at)``."""
        q = _DEVICES_AND_NONCES_LOCKED if is_postgres(conn) else _DEVICES_AND_NONCES
        params = {"devs": sorted(airframes), "nonces": sorted(set(nonce_hexes))}
        rows = conn.execute(q, params).all()
        missing = airframes.keys() - {r.device_id for r in rows}
        if missing:
            for device_id in sorted(missing):
                insert_ignore(conn, D, {"device_id": device_id, "airframe": airframes[device_id]})
            rows = conn.execute(q, params).all()
        devices: dict[str, dict[str, Any]] = {}
        issued: dict[tuple[str, str], tuple[Any, Any]] = {}
        for r in rows:
            m = r._mapping
            if r.device_id not in devices:
                devices[r.device_id] = {k: m[k] for k in _DEVICE_KEYS}
            if r.nonce_hex is not None:
                issued[(r.device_id, r.nonce_hex)] = (r.nonce_expires_at, r.nonce_used_at)
        return devices, issued

    def _record_many(self, conn: Connection, jobs: list[_Job]) -> list[IngestResult]:
        """Write verified attestations, in order, inside the caller's transaction (SQLAlchemy; the
        PostgreSQL hot path is :meth:`_write_batch_pg`): see :meth:`_plan` for what is written."""
        airframes = {j.result.device.device_id: j.result.device.airframe for j in jobs if j.result.device is not None}
        devices: dict[str, dict[str, Any]] = {}
        issued: dict[tuple[str, str], tuple[Any, Any]] = {}
        if airframes:
            devices, issued = self._lock_devices(conn, airframes, [j.result.predicate.nonce.hex() for j in jobs
                                                                   if j.result.predicate is not None])
        outcomes: list[nonces.NonceOutcome | None] = []
        for job in jobs:
            p, device = job.result.predicate, job.result.device
            if device is None or p is None:
                outcomes.append(None)
                continue
            key = (device.device_id, p.nonce.hex())
            expires_at, used_at = issued.get(key, (None, None))
            outcome = nonces.consume(conn, p.nonce, job.now, job.att_id, expires_at, used_at)
            if outcome is nonces.NonceOutcome.ANSWERED:
                issued[key] = (expires_at, job.now)  # a later member of the batch answering it is a replay
            outcomes.append(outcome)

        def read_envelope(att_id: str) -> bytes | None:
            raw = conn.execute(select(A.c.envelope).where(A.c.id == att_id)).scalar_one_or_none()
            return bytes(raw) if raw is not None else None

        plan = self._plan(jobs, devices, outcomes, read_envelope)
        conn.execute(_INSERT_ATTESTATION, plan.att_rows)
        for params in plan.device_updates():
            conn.execute(_UPDATE_DEVICE, params)
        if plan.event_rows:
            conn.execute(_INSERT_EVENT, plan.event_rows)
        return plan.results

    def _write_batch_pg(self, jobs: list[_Job]) -> list[IngestResult]:
        """PostgreSQL's hot path for one batch, on the psycopg connection in pipeline mode, so the
        leader waits for the server (and for the GIL after each wait) twice per batch, not once
        per statement: (1) BEGIN and the devices locked, with their issued nonces; (2) the nonces
        consumed, the attestation rows, the devices' new state, the events and the COMMIT.
        A third round trip only if the batch answers issued nonces, or a drift needs the last
        pass's envelope. Writes exactly what :meth:`_record_many` writes.

        Raises :class:`_NotCommitted` if the server refused a statement (nothing of the batch is
        committed); any other exception leaves the outcome unknown."""
        raw = self.engine.raw_connection()
        drv: Any = raw.driver_connection
        try:
            try:
                with drv.pipeline():
                    cur = drv.cursor()
                    result = self._write_batch_pg_on(cur, jobs)
                    drv.commit()
            except psycopg.Error as exc:
                broken = drv.broken or drv.closed
                if broken:
                    raw.invalidate()
                else:
                    drv.rollback()
                if exc.sqlstate is not None and not broken:
                    raise _NotCommitted(str(exc)) from exc
                raise
            except BaseException:
                raw.invalidate()  # the connection's state is unknown: the pool must not hand it out
                raise
            return result
        finally:
            raw.close()

    def _write_batch_pg_on(self, cur: Any, jobs: list[_Job]) -> list[IngestResult]:
        airframes = {j.result.device.device_id: j.result.device.airframe for j in jobs if j.result.device is not None}
        nonce_hexes = sorted({j.result.predicate.nonce.hex() for j in jobs if j.result.predicate is not None})
        devices: dict[str, dict[str, Any]] = {}
        issued: dict[tuple[str, str], tuple[Any, Any]] = {}
        if airframes:
            params = {"devs": sorted(airframes), "nonces": nonce_hexes}
            rows = cur.execute(_LOCK_PG, params, prepare=True).fetchall()
            missing = airframes.keys() - {r[0] for r in rows}
            if missing:
                cur.executemany(_NEW_DEVICE_PG, [{"d": d, "a": airframes[d], **_DEVICE_DEFAULTS}
                                                 for d in sorted(missing)])
                rows = cur.execute(_LOCK_PG, params, prepare=True).fetchall()
            n = len(_DEVICE_KEYS)
            for r in rows:
                if r[0] not in devices:
                    devices[r[0]] = {k: _utc(v) for k, v in zip(_DEVICE_KEYS, r[:n], strict=True)}
                if r[n] is not None:
                    issued[(r[0], r[n])] = (_utc(r[n + 1]), _utc(r[n + 2]))
        outcomes: list[nonces.NonceOutcome | None] = []
        live: list[int] = []  # jobs whose nonce is live: consumed below unless another transaction did first
        for i, job in enumerate(jobs):
            p, device = job.result.predicate, job.result.device
            if device is None or p is None:
                outcomes.append(None)
                continue
            key = (device.device_id, p.nonce.hex())
            expires_at, used_at = issued.get(key, (None, None))
            outcome = nonces.decide(expires_at, used_at, job.now)
            if outcome is None:
                issued[key] = (expires_at, job.now)  # a later member of the batch answering it is a replay
                live.append(i)
                outcome = nonces.NonceOutcome.ANSWERED
            outcomes.append(outcome)
        if live:
            done = {r[0] for r in cur.execute(nonces.CONSUME_MANY_PG, {
                "vals": [jobs[i].result.predicate.nonce.hex() for i in live],  # type: ignore[union-attr]
                "ats": [jobs[i].now for i in live], "atts": [jobs[i].att_id for i in live]}).fetchall()}
            for i in live:
                if jobs[i].result.predicate.nonce.hex() not in done:  # type: ignore[union-attr]
                    outcomes[i] = nonces.NonceOutcome.REPLAYED

        def read_envelope(att_id: str) -> bytes | None:
            row = cur.execute("SELECT envelope FROM attestations WHERE id = %s", (att_id,)).fetchone()
            return bytes(row[0]) if row is not None else None

        plan = self._plan(jobs, devices, outcomes, read_envelope)
        cur.executemany(_INSERT_ATTESTATION_PG, plan.att_rows)
        for params_list in plan.device_updates():
            columns = [k for k in params_list[0] if k != "b_device_id"]
            cur.executemany(_update_device_pg(tuple(columns)), params_list)
        if plan.event_rows:
            cur.executemany(_INSERT_EVENT_PG, plan.event_rows)
        return plan.results

    def _plan(self, jobs: list[_Job], devices: dict[str, dict[str, Any]],
              outcomes: list[nonces.NonceOutcome | None], read_envelope: Callable[[str], bytes | None]) -> _Plan:
        """The rows a batch writes, folded in order: the attestation rows, each airframe's new
        state (one UPDATE per airframe: the batch is folded in memory, one attestation after the
        other, exactly as separate transactions would fold them) and the events. ``devices``: the
        locked rows (updated in place); ``outcomes``: each job's nonce outcome, decided already."""
        plan = _Plan()
        fresh: dict[str, Predicate] = {}  # passing predicates of this batch (their rows are not inserted yet)
        for job, outcome in zip(jobs, outcomes, strict=True):
            att_id, now, result = job.att_id, job.now, job.result
            reasons = [FleetReason.from_core(r) for r in result.reasons]
            p, device, row = result.predicate, result.device, None
            answered = outcome is nonces.NonceOutcome.ANSWERED
            if outcome is nonces.NonceOutcome.REPLAYED:
                reasons.append(FleetReason(FleetCode.NONCE_REPLAYED, "answers a nonce this service issued "
                                           "that another attestation already answered (replayed?)", "nonce"))
            if device is not None:
                row = devices[device.device_id]
                if row["revoked_at"] is not None:
                    reasons.append(FleetReason(FleetCode.DEVICE_REVOKED, f"device {device.device_id} was revoked at "
                                               f"{timeutil.format(row['revoked_at'])} by {row['revoked_by']}: "
                                               f"{row['revoked_reason']}", "device"))
            passed = result.passed and not reasons
            reasons_doc = [r.to_json() for r in reasons]
            reasons_text = json.dumps(reasons_doc)
            device_id = device.device_id if device else None
            plan.att_rows.append({
                "id": att_id, "device_id": device_id, "received_at": now,
                "attested_at": p.time if p else None, "passed": passed, "reasons": reasons_text,
                "answered_nonce": answered, "manifest_version": p.manifest.version if p and p.manifest else None,
                "source": job.source, "actor": job.actor, "envelope": job.envelope})
            if row is not None and device_id is not None:
                values = self._fold(row, att_id, p, passed, reasons_text, now, fresh, read_envelope, plan.event_rows)
                row.update(values)  # the next member of the batch for this airframe folds onto this
                plan.updates.setdefault(device_id, {}).update(values)
            if not passed:
                plan.event_rows.append(_event_row("failure", device_id, att_id, now, {"reasons": reasons_doc}))
            elif p is not None:
                fresh[att_id] = p
            plan.results.append(IngestResult(att_id, device_id, passed, reasons, False, answered,
                                             p.time if p else None))
        return plan

    def _fold(self, row: Mapping[str, Any], att_id: str, p: Predicate | None, passed: bool, reasons_text: str,
              now: datetime, fresh: Mapping[str, Predicate], read_envelope: Callable[[str], bytes | None],
              event_rows: list[dict[str, Any]]) -> dict[str, Any]:
        """One verified attestation folded into its airframe's row (newest by attestation time
        wins): the columns to set, and any drift event appended to ``event_rows``."""
        t = p.time if p is not None else now
        values: dict[str, Any] = {"last_received_at": now}
        if passed and p is not None:
            if row["last_success_at"] is None or t >= row["last_success_at"]:
                values.update(last_success_at=t, last_pass_attestation_id=att_id)
            ref = p.manifest
            if ref is not None and ref.version > row["manifest_high"]:
                values.update(manifest_high=ref.version, manifest_high_sha256=ref.sha256)
            if p.quote is not None:
                values["tpm_clock"] = clock_json(observed_clock(p.quote))
        if row["last_attempt_at"] is None or t >= row["last_attempt_at"]:
            values.update(last_attempt_at=t, current_attestation_id=att_id, current_reasons=reasons_text,
                          manifest_version=p.manifest.version if p and p.manifest else None, stale_notified_at=None)
            if passed:
                values.update(verdict_state=State.PASSING.value, consecutive_failures=0, drift="[]")
            else:
                changes = self._drift(row["last_pass_attestation_id"], p, fresh, read_envelope)
                text = drift.dumps(changes)
                state = State.NEVER_PASSED if row["last_pass_attestation_id"] is None \
                    else State.DRIFTED if changes else State.FAILING
                values.update(verdict_state=state.value, consecutive_failures=row["consecutive_failures"] + 1,
                              drift=text)
                if changes and text != row["drift"]:
                    event_rows.append(_event_row("drift", row["device_id"], att_id, now,
                                                 {"changes": [c.to_json() for c in changes]}))
        elif passed and row["verdict_state"] == State.NEVER_PASSED.value:
            values["verdict_state"] = State.FAILING.value  # a late pass: it did pass once, before the failure
        return values

    def _drift(self, last_pass_id: str | None, p: Predicate | None, fresh: Mapping[str, Predicate],
               read_envelope: Callable[[str], bytes | None]) -> list[drift.Change]:
        if last_pass_id is None or p is None:
            return []
        if last_pass_id in fresh:  # passed earlier in this batch: its predicate is at hand
            before_ms = fresh[last_pass_id].measurements
        else:
            raw = read_envelope(last_pass_id)
            if raw is None:
                return []
            before = parse_statement(dsse.Envelope.from_bytes(raw, f"stored attestation {last_pass_id}"))
            before_ms = before.measurements
        changes, _total = drift.diff(before_ms, p.measurements, self.config.max_drift_changes)
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
