"""The fleet store on SQLite and on a real PostgreSQL: what each kind of attestation does to an
airframe's state, with real signed attestations verified by the core (nothing mocked)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, text

from attest.errors import FormatError, ThresholdError
from fleet import nonces
from fleet.audit import AuditChainError
from fleet.db import make_engine
from fleet.group_commit import GroupCommit, Pending
from fleet.intake import DeviceMemory, verify
from fleet.models import Event, table
from fleet.store import (
    EnvelopeTooLargeError,
    FleetStore,
    IngestResult,
    State,
    UnknownDeviceError,
    _Job,
    _Read,
)
from hardware.software import SoftwareSigner
from tests.factory import NOW
from tests.fleet_fixtures import Clock, Fleet, fresh_url, make_store, resign, signed_revocation_bytes, tamper_script
from tests.pgserver import PgServer

pytest_plugins = ["tests.fleet_fixtures"]


def events(store: FleetStore, kind: str) -> list[dict[str, object]]:
    t = table(Event)
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.c.payload).where(t.c.kind == kind).order_by(t.c.id)).scalars().all()
    return [json.loads(r) for r in rows]


def codes(reasons: list) -> list[str]:  # type: ignore[type-arg]
    return [r.code for r in reasons]


def test_good_attestation_passes_and_the_airframe_shows_its_state(store: FleetStore, fleet: Fleet) -> None:
    att = fleet.attestation("drone-001")
    r = store.ingest(att, source="agent", actor="ci")
    assert r.passed and not r.reasons and r.device_id == "drone-001" and not r.duplicate and not r.answered_nonce
    view = store.device("drone-001")
    assert view is not None and view.state is State.PASSING and view.passed is True
    assert view.last_success_at == NOW and view.consecutive_failures == 0 and view.manifest_version == 3
    assert ("gimbal camera", "Acme Optics", "JP") in [(p.name, p.vendor, p.origin) for p in view.parts]
    assert {m.component for m in view.measurements} >= {"fc.firmware", "fc.script:scripts/flightseal.lua"}
    assert view.since_last_attestation == timedelta(minutes=1)
    assert store.raw_envelope(r.attestation_id) == att
    assert [h.id for h in store.history("drone-001")] == [r.attestation_id]
    assert store.overview().counts[State.PASSING] == 1


def test_same_bytes_twice_is_a_duplicate_and_changes_nothing(store: FleetStore, fleet: Fleet) -> None:
    att = tamper_script(fleet, "drone-001", NOW)
    first = store.ingest(att, source="agent", actor="ci")
    again = store.ingest(att, source="agent", actor="ci")
    assert again.duplicate and again.attestation_id == first.attestation_id and not again.passed
    assert codes(again.reasons) == codes(first.reasons)
    view = store.device("drone-001")
    assert view is not None and view.consecutive_failures == 1
    assert len(store.history("drone-001")) == 1 and len(events(store, "failure")) == 1


def test_issued_nonce_is_answered_once_and_a_second_use_is_a_replay(store: FleetStore, fleet: Fleet,
                                                                     clock: Clock) -> None:
    nonce = store.issue_nonce("drone-001")
    assert nonce.expires_at == clock.now + timedelta(minutes=10) and len(nonce.value) == 32
    first = store.ingest(fleet.attestation("drone-001", nonce=nonce.value), source="agent", actor="ci")
    assert first.passed and first.answered_nonce
    replay = store.ingest(fleet.attestation("drone-001", nonce=nonce.value, time=NOW + timedelta(seconds=1)),
                          source="agent", actor="ci")
    assert not replay.passed and codes(replay.reasons) == ["nonce-replayed"] and not replay.answered_nonce
    self_nonced = store.ingest(fleet.attestation("drone-001", nonce=b"\x07" * 32, time=NOW + timedelta(seconds=2)),
                               source="agent", actor="ci")
    assert self_nonced.passed and not self_nonced.answered_nonce


def test_nonce_for_a_device_not_enrolled_is_refused(store: FleetStore) -> None:
    with pytest.raises(UnknownDeviceError, match="drone-404"):
        store.issue_nonce("drone-404")


def test_bytes_altered_in_transit_fail_and_move_no_airframe(store: FleetStore, fleet: Fleet, clock: Clock) -> None:
    store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
    doc = json.loads(fleet.attestation("drone-001", time=NOW + timedelta(seconds=5)))
    payload = base64.b64decode(doc["payload"])
    i = payload.index(b'"sha256":"') + len(b'"sha256":"')  # one byte of a measured digest
    payload = payload[:i] + (b"0" if payload[i:i + 1] != b"0" else b"1") + payload[i + 1:]
    doc["payload"] = base64.b64encode(payload).decode()
    r = store.ingest(json.dumps(doc).encode(), source="agent", actor="ci")
    assert not r.passed and codes(r.reasons) == ["envelope-signature"] and r.device_id is None
    view = store.device("drone-001")
    assert view is not None and view.state is State.PASSING and view.consecutive_failures == 0
    assert [e["attestation_id"] for e in events(store, "failure")] == [r.attestation_id]


def test_tampered_airframe_turns_drifted_naming_component_old_and_new(store: FleetStore, fleet: Fleet) -> None:
    good = store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
    bad = store.ingest(tamper_script(fleet, "drone-001", NOW + timedelta(seconds=30)), source="agent", actor="ci")
    assert good.passed and not bad.passed and "script-mismatch" in codes(bad.reasons)
    view = store.device("drone-001")
    assert view is not None and view.state is State.DRIFTED and view.passed is False
    assert view.consecutive_failures == 1 and view.last_success_at == NOW
    script = [c for c in view.drift if c.component == "fc.script:scripts/flightseal.lua"]
    assert len(script) == 1 and script[0].field == "sha256" and script[0].old != script[0].new
    assert script[0].old is not None and script[0].new is not None
    assert "script-mismatch" in codes(view.reasons)
    [drift_event] = events(store, "drift")
    assert drift_event["device_id"] == "drone-001" and drift_event["changes"][0]["old"] == script[0].old  # type: ignore[index]
    assert [e["attestation_id"] for e in events(store, "failure")] == [bad.attestation_id]


def test_airframe_that_never_passed_is_listed_as_such(store: FleetStore, fleet: Fleet) -> None:
    store.ingest(tamper_script(fleet, "drone-001", NOW), source="agent", actor="ci")
    view = store.device("drone-001")
    assert view is not None and view.state is State.NEVER_PASSED and view.drift == []
    assert store.overview().counts[State.NEVER_PASSED] == 1


def test_evidence_older_than_max_age_fails_as_stale(store: FleetStore, fleet: Fleet, clock: Clock) -> None:
    clock.advance(timedelta(days=29))  # the manifest (30 days) is still valid; the attestation is not
    old = store.ingest(fleet.attestation("drone-001", time=NOW - timedelta(days=2)), source="agent", actor="ci")
    assert not old.passed and codes(old.reasons) == ["attestation-stale"]
    queued = store.ingest(fleet.attestation("drone-001", time=NOW + timedelta(days=28)), source="agent", actor="ci")
    assert queued.passed, queued.reasons  # a day old: queued evidence pushed late is fine


def test_late_older_attestation_is_history_and_does_not_replace_the_current_verdict(store: FleetStore,
                                                                                     fleet: Fleet) -> None:
    newer = store.ingest(fleet.attestation("drone-001", time=NOW), source="agent", actor="ci")
    older = store.ingest(tamper_script(fleet, "drone-001", NOW - timedelta(hours=3)), source="agent", actor="ci")
    assert newer.passed and not older.passed
    view = store.device("drone-001")
    assert view is not None and view.state is State.PASSING and view.current_attestation_id == newer.attestation_id
    assert view.last_attempt_at == NOW and view.consecutive_failures == 0
    assert {h.id for h in store.history("drone-001")} == {newer.attestation_id, older.attestation_id}


def test_airframe_not_heard_from_for_stale_after_is_stale_and_notified_once_per_episode(
        store: FleetStore, fleet: Fleet, clock: Clock) -> None:
    store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
    clock.advance(timedelta(days=7, minutes=1))
    overview = store.overview()
    assert overview.counts[State.STALE] == 1 and [s.device_id for s in overview.stale] == ["drone-001"]
    assert store.search("state:stale")[0].device_id == "drone-001"
    assert store.staleness_scan() == 1 and store.staleness_scan() == 0
    store.ingest(fleet.attestation("drone-001", time=clock.now), source="agent", actor="ci")
    assert store.staleness_scan() == 0
    clock.advance(timedelta(days=8))
    assert store.staleness_scan() == 1 and len(events(store, "stale")) == 2


def test_operator_revocation_is_audited_and_later_attestations_fail(store: FleetStore, fleet: Fleet) -> None:
    store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
    store.revoke("drone-001", actor="alice", reason="lost at sea")
    r = store.ingest(fleet.attestation("drone-001", time=NOW + timedelta(seconds=1)), source="agent", actor="ci")
    assert not r.passed and codes(r.reasons) == ["device-revoked"] and "lost at sea" in r.reasons[0].detail
    view = store.device("drone-001")
    assert view is not None and view.revoked and view.state is State.REVOKED and view.revoked_by == "alice"
    assert len(store.history("drone-001")) == 2
    [entry] = store.audit_log()
    assert (entry.actor, entry.action, entry.subject, entry.detail["reason"]) == ("alice", "revoke", "drone-001",
                                                                                   "lost at sea")
    assert [e["device_id"] for e in events(store, "revocation")] == ["drone-001"]
    store.verify_audit_chain()
    with pytest.raises(UnknownDeviceError):
        store.revoke("drone-typo", actor="alice", reason="x")


def test_signed_revocation_needs_the_enrolment_threshold(store: FleetStore, fleet: Fleet) -> None:
    with pytest.raises(ThresholdError, match="revocation"):
        store.revoke_signed(signed_revocation_bytes(fleet, "drone-001", "key leaked", signers=1), actor="bob")
    view = store.device("drone-001")
    assert view is None or not view.revoked
    revocation = store.revoke_signed(signed_revocation_bytes(fleet, "drone-001", "key leaked", signers=2),
                                     actor="bob")
    assert revocation.device_id == "drone-001"
    view = store.device("drone-001")
    assert view is not None and view.revoked and view.revoked_reason == "key leaked" and view.revoked_by == "signed:bob"
    r = store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
    assert codes(r.reasons) == ["device-revoked"]
    [entry] = store.audit_log()
    assert entry.detail["by"] == "signed" and len(entry.detail["signers"]) == 2  # type: ignore[arg-type]


def test_foreign_airframe_fails_with_the_core_reason_and_its_envelope_is_kept(store: FleetStore,
                                                                              fleet: Fleet) -> None:
    att = fleet.attestation("drone-999", key=SoftwareSigner.generate())
    r = store.ingest(att, source="upload", actor="ci")
    assert not r.passed and codes(r.reasons) == ["device-unknown"] and r.device_id is None
    assert store.raw_envelope(r.attestation_id) == att and store.device("drone-999") is None
    assert [a.id for a in store.unattributed()] == [r.attestation_id]
    with pytest.raises(EnvelopeTooLargeError):
        store.ingest(b" " * (store.config.max_envelope_bytes + 1), source="upload", actor="ci")


def test_a_different_envelope_of_the_same_statement_answers_no_issued_nonce_twice(store: FleetStore,
                                                                                    fleet: Fleet) -> None:
    nonce = store.issue_nonce("drone-001")
    att = fleet.attestation("drone-001", nonce=nonce.value)
    assert store.ingest(att, source="agent", actor="ci").answered_nonce
    again = store.ingest(resign(att, fleet.keys["drone-001"]), source="agent", actor="ci")
    assert not again.duplicate and codes(again.reasons) == ["nonce-replayed"]


def test_search_and_history_paging(store: FleetStore, fleet: Fleet) -> None:
    fleet.enroll("drone-002")
    store.trust = type(store.trust)(fleet.trust_dir, 0.0)
    ids = [store.ingest(fleet.attestation("drone-002", time=NOW + timedelta(seconds=i)), source="agent",
                        actor="ci").attestation_id for i in range(5)]
    store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
    assert [d.device_id for d in store.search("drone")] == ["drone-001", "drone-002"]
    assert [d.device_id for d in store.search("002 state:passing")] == ["drone-002"]
    assert store.search("state:drifted") == [] and store.search("100%_") == []
    page1 = store.history("drone-002", limit=3)
    page2 = store.history("drone-002", limit=3, before=page1[-1].id)
    assert len(page1) == 3 and len(page2) == 2 and {r.id for r in page1 + page2} == set(ids)


def test_the_service_never_writes_to_the_trust_directory(store: FleetStore, fleet: Fleet) -> None:
    before = sorted(p.name for p in fleet.trust_dir.rglob("*"))
    store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
    store.revoke("drone-001", actor="alice", reason="test")
    assert sorted(p.name for p in fleet.trust_dir.rglob("*")) == before
    assert store.trust.loads == 1  # parsed once, reused


def test_audit_trail_refuses_updates_and_names_an_altered_record(store: FleetStore, backend: str) -> None:
    store.record_action("alice", "user.add", "bob", {"role": "viewer"})
    store.record_action("alice", "token.create", "ci", {"role": "agent"})
    store.verify_audit_chain()
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1"))
    with store.engine.begin() as conn:  # someone with the database's owner rights removes the guard
        conn.execute(text("DROP TRIGGER audit_log_no_update" + (" ON audit_log" if backend == "postgresql" else "")))
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1"))
    with pytest.raises(AuditChainError, match=r"audit record 1 .*altered"):
        store.verify_audit_chain()


def test_every_enrolled_but_unseen_airframe_is_counted(store: FleetStore, fleet: Fleet) -> None:
    assert store.overview().enrolled_unseen == 1
    store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
    overview = store.overview()
    assert overview.enrolled_unseen == 0 and overview.total == 1


def test_trust_dir_changes_are_picked_up(store: FleetStore, fleet: Fleet) -> None:
    store.trust = type(store.trust)(fleet.trust_dir, 0.0)
    fleet.keys["drone-003"] = SoftwareSigner.generate()  # a key, not yet enrolled
    assert store.ingest(fleet.attestation("drone-003"), source="agent", actor="ci").device_id is None
    fleet.enroll("drone-003")
    r = store.ingest(fleet.attestation("drone-003", time=NOW + timedelta(seconds=1)), source="agent", actor="ci")
    assert r.passed and r.device_id == "drone-003"


def test_losing_the_insert_race_to_another_process_reports_a_duplicate(store: FleetStore, fleet: Fleet,
                                                                       clock: Clock) -> None:
    """The window the process tests hit by chance, forced: the duplicate check ran before the
    other process committed, so the insert meets the primary key and the ingest reports a duplicate."""

    class Racing(FleetStore):
        def _prefetch(self, conn: Connection, att_id: str, device_id: str | None) -> tuple[bool, DeviceMemory | None]:
            _duplicate, memory = super()._prefetch(conn, att_id, device_id)
            return False, memory  # checked just before the other process committed

    att = tamper_script(fleet, "drone-001", NOW)
    first = store.ingest(att, source="agent", actor="ci")
    loser = Racing(store.engine, fleet.trust_dir, clock=clock, config=store.config).ingest(att, source="agent",
                                                                                         actor="ci")
    assert loser.duplicate and loser.attestation_id == first.attestation_id and not loser.passed
    view = store.device("drone-001")
    assert view is not None and view.consecutive_failures == 1 and len(events(store, "failure")) == 1


def test_manifest_rollback_is_refused_from_the_high_water_kept_in_the_database(store: FleetStore, fleet: Fleet) -> None:
    store.trust = type(store.trust)(fleet.trust_dir, 0.0)
    assert store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci").passed  # manifest v3
    fleet.install_manifest(2)  # an older manifest put back into the trust directory
    r = store.ingest(fleet.attestation("drone-001", time=NOW + timedelta(seconds=1)), source="agent", actor="ci")
    assert not r.passed and codes(r.reasons) == ["manifest-rollback"]
    assert not (fleet.trust_dir / "state.json").exists()


def test_an_issued_nonce_answered_after_it_expired_counts_as_the_agents_own(store: FleetStore, fleet: Fleet,
                                                                              clock: Clock) -> None:
    nonce = store.issue_nonce("drone-001")
    clock.advance(timedelta(minutes=11))
    r = store.ingest(fleet.attestation("drone-001", nonce=nonce.value), source="agent", actor="ci")
    assert r.passed and not r.answered_nonce


def test_open_nonces_per_device_are_bounded(store: FleetStore) -> None:
    for _ in range(store.config.max_open_nonces + 5):
        store.issue_nonce("drone-001")
    with store.engine.connect() as conn:
        assert nonces.open_count(conn, "drone-001") == store.config.max_open_nonces


def test_names_longer_than_their_columns_are_refused_before_anything_is_written(store: FleetStore,
                                                                                fleet: Fleet) -> None:
    with pytest.raises(FormatError, match="actor"):
        store.ingest(fleet.attestation("drone-001"), source="agent", actor="x" * 129)
    with pytest.raises(FormatError, match="subject"):
        store.record_action("alice", "user.add", "y" * 257)
    assert store.history("drone-001") == [] and store.audit_log() == []


# ---- group commit (PostgreSQL's ingest path) ------------------------------------------------------


class _Item(Pending[int]):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n


def test_group_commit_returns_each_caller_only_after_its_own_batch_committed() -> None:
    committed: set[int] = set()
    lock = threading.Lock()

    def run(batch: list[_Item]) -> None:
        time.sleep(0.02)  # the transaction: callers arriving meanwhile queue for the next batch
        with lock:
            committed.update(i.n for i in batch)
        for i in batch:
            i.resolve(i.n * 10)

    group: GroupCommit[_Item] = GroupCommit(run)
    seen: dict[int, bool] = {}

    def caller(n: int) -> None:
        item = _Item(n)
        group.submit(item)
        with lock:
            seen[n] = n in committed and item.get() == n * 10

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert seen == {n: True for n in range(24)}
    assert group.items == 24 and group.batches < 24  # concurrent callers shared transactions


def test_group_commit_a_failing_member_fails_only_itself_and_a_crashing_batch_hangs_nobody() -> None:
    def run(batch: list[_Item]) -> None:
        if any(i.n == 13 for i in batch) and len(batch) == 1:
            raise RuntimeError("writer crashed")  # a bug: its batch fails, the next leader goes on
        for i in batch:
            if i.n == 7:
                i.fail(ValueError("member 7 refused"))
            else:
                i.resolve(i.n)

    group: GroupCommit[_Item] = GroupCommit(run, max_batch=4)
    outcomes: dict[int, object] = {}

    def caller(n: int) -> None:
        item = _Item(n)
        group.submit(item)
        try:
            outcomes[n] = item.get()
        except (ValueError, RuntimeError) as exc:
            outcomes[n] = type(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert outcomes[7] is ValueError
    assert all(outcomes[n] == n for n in range(16) if n not in (7, 13)) and outcomes[13] in (13, RuntimeError)
    alone = _Item(13)
    group.submit(alone)
    with pytest.raises(RuntimeError, match="writer crashed"):  # alone, 13 is its own batch
        alone.get()
    item = _Item(3)
    group.submit(item)
    assert item.get() == 3


def _jobs(store: FleetStore, envelopes: list[bytes]) -> list[_Job]:
    snap, now = store.trust.get(), store._clock()
    return [_Job(hashlib.sha256(e).hexdigest(), e, verify(e, snap, None, now, store.config), now, "agent", "ci")
            for e in envelopes]


def _dump(store: FleetStore) -> dict[str, list[tuple[object, ...]]]:
    with store.engine.connect() as conn:
        return {
            "devices": [tuple(r) for r in conn.execute(text("SELECT * FROM devices ORDER BY device_id"))],
            "attestations": [tuple(r) for r in conn.execute(text("SELECT * FROM attestations ORDER BY id"))],
            "events": [tuple(r) for r in conn.execute(text(
                "SELECT kind, device_id, attestation_id, payload FROM events ORDER BY id"))],
            "nonces": [tuple(r) for r in conn.execute(text("SELECT * FROM nonces ORDER BY value_hex"))]}


def test_a_batch_in_one_transaction_writes_what_one_transaction_per_ingest_writes(
        pg_server: PgServer, fleet: Fleet, clock: Clock, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    fleet.enroll("drone-002")
    batched = make_store(fresh_url("postgresql", tmp_path, request), fleet.trust_dir, clock)
    # the reference: SQLAlchemy, one transaction per ingest, no group commit
    one_by_one = FleetStore(make_engine(fresh_url("postgresql", tmp_path, request)), fleet.trust_dir, clock=clock,
                            config=batched.config, group_commit=False)
    assert one_by_one._group is None and batched._group is not None
    try:
        nonce = one_by_one.issue_nonce("drone-001")
        with one_by_one.engine.connect() as a, batched.engine.begin() as b:  # the same issued nonce in both
            for row in a.execute(text("SELECT * FROM nonces")).mappings():
                b.execute(text("INSERT INTO nonces VALUES (:value_hex, :device_id, :issued_at, :expires_at, "
                               ":used_at, :used_by)"), dict(row))
        altered = json.loads(fleet.attestation("drone-001", time=NOW + timedelta(seconds=50)))
        altered["signatures"][0]["sig"] = base64.b64encode(b"\x00" * 64).decode()
        envelopes = [
            fleet.attestation("drone-001", nonce=nonce.value),  # passes, answers the nonce
            tamper_script(fleet, "drone-001", NOW + timedelta(seconds=30)),  # drifts from the pass just before
            fleet.attestation("drone-001", nonce=nonce.value, time=NOW + timedelta(seconds=40)),  # a replay
            fleet.attestation("drone-002", time=NOW),  # a new airframe
            fleet.attestation("drone-002", time=NOW - timedelta(seconds=10)),  # late: history only
            json.dumps(altered).encode(),  # no enrolled key signed it: moves nothing
            fleet.attestation("drone-001", time=NOW + timedelta(seconds=60)),  # passes again
        ]
        sequential = [one_by_one.ingest(e, source="agent", actor="ci") for e in envelopes]
        jobs = _jobs(batched, envelopes)
        batched._write_batch(jobs)
        assert [j.get() for j in jobs] == sequential
        assert [(r.passed, codes(r.reasons), r.answered_nonce) for r in sequential[:3]] == \
            [(True, [], True), (False, ["script-mismatch"], False), (False, ["nonce-replayed"], False)]
        assert _dump(batched) == _dump(one_by_one)
    finally:
        one_by_one.engine.dispose()
        batched.engine.dispose()


def test_a_batch_member_that_lost_the_insert_race_is_a_duplicate_and_the_others_commit(
        pg_server: PgServer, fleet: Fleet, clock: Clock, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store = make_store(fresh_url("postgresql", tmp_path, request), fleet.trust_dir, clock)
    try:
        envelopes = [fleet.attestation("drone-001", time=NOW + timedelta(seconds=i)) for i in range(3)]
        jobs = _jobs(store, envelopes)  # all checked "not stored" ...
        first = store.ingest(envelopes[1], source="agent", actor="other-process")  # ... then one was stored
        store._write_batch(jobs)
        results = [j.get() for j in jobs]
        assert [r.duplicate for r in results] == [False, True, False] and all(r.passed for r in results)
        assert results[1] == first.__class__(**{**first.__dict__, "duplicate": True})
        assert len(store.history("drone-001")) == 3
        view = store.device("drone-001")
        assert view is not None and view.current_attestation_id == results[2].attestation_id
    finally:
        store.engine.dispose()


def test_concurrent_ingests_share_transactions_and_each_is_stored(
        pg_server: PgServer, fleet: Fleet, clock: Clock, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    for d in range(4):
        fleet.enroll(f"drone-{d:03d}")
    store = make_store(fresh_url("postgresql", tmp_path, request), fleet.trust_dir, clock)
    try:
        envelopes = [fleet.attestation(f"drone-{i % 4:03d}", time=NOW - timedelta(seconds=i)) for i in range(48)]
        results: list[IngestResult] = []

        def caller(part: list[bytes]) -> None:
            for e in part:
                results.append(store.ingest(e, source="agent", actor="ci"))

        threads = [threading.Thread(target=caller, args=(envelopes[i::12],)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(results) == 48 and all(r.passed and not r.duplicate for r in results)
        assert store._group is not None and store._group.items == 48
        assert sum(len(store.history(f"drone-{d:03d}")) for d in range(4)) == 48
        for d in range(4):  # the newest by attestation time is in force, whatever order the batches ran in
            view = store.device(f"drone-{d:03d}")
            assert view is not None and view.last_attempt_at == NOW - timedelta(seconds=d)
    finally:
        store.engine.dispose()


def test_concurrent_reads_share_one_statement_and_each_gets_its_own_answer(
        pg_server: PgServer, fleet: Fleet, clock: Clock, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store = make_store(fresh_url("postgresql", tmp_path, request), fleet.trust_dir, clock)
    try:
        stored = store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
        reads = [_Read("0" * 64, "drone-001"), _Read(stored.attestation_id, "drone-001"), _Read("1" * 64, None),
                 _Read("2" * 64, "drone-404")]
        store._read_batch(reads)
        (new_dup, memory), (dup, _), (foreign_dup, foreign_memory), (_, unknown_memory) = [r.get() for r in reads]
        assert not new_dup and dup and not foreign_dup and foreign_memory is None and unknown_memory is None
        assert memory is not None and memory.manifest_high == 3
    finally:
        store.engine.dispose()
