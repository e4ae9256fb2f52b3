"""The fleet database under processes, on SQLite and on a real PostgreSQL: two processes ingesting
at once, a process killed with SIGKILL mid-load, and a backup restored into a fresh database."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from fleet import migrate
from fleet.db import database_url
from fleet.models import Attestation, Device, Event, table
from fleet.store import FleetStore, State
from tests.factory import NOW
from tests.fleet_fixtures import ROOT, Clock, Fleet, fresh_url, make_store, tamper_script, write_envelopes
from tests.pgserver import PgServer

pytest_plugins = ["tests.fleet_fixtures"]

SERVICE_NOW = NOW + timedelta(hours=1)
DEVICES = ("drone-001", "drone-002", "drone-003")
WAIT_S = 120


def load(fleet: Fleet, n: int) -> list[bytes]:
    """``n`` attestations round-robin over the devices, a second apart; every fifth is a tampered airframe."""
    out = []
    for i in range(n):
        device, t = DEVICES[i % len(DEVICES)], NOW - timedelta(minutes=30) + timedelta(seconds=i)
        out.append(tamper_script(fleet, device, t) if i % 5 == 4 else fleet.attestation(device, time=t))
    return out


@pytest.fixture
def fleet3(tmp_path: Path) -> Fleet:
    f = Fleet(tmp_path / "trust")
    for d in DEVICES:
        f.enroll(d)
    return f


def start_worker(url: str, fleet: Fleet, envelopes: Path, ack: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.fleet_fixtures", "ingest", url, str(fleet.trust_dir),
                             SERVICE_NOW.isoformat(), str(envelopes), str(ack)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def acks(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def assert_consistent(store: FleetStore) -> None:
    """Every airframe's state is what its stored attestations say, and every failure has its event."""
    a, d, e = table(Attestation), table(Device), table(Event)
    with store.engine.connect() as conn:
        rows = conn.execute(select(a.c.id, a.c.device_id, a.c.attested_at, a.c.passed)).all()
        devices = {r.device_id: r for r in conn.execute(select(d))}
        failure_events = conn.execute(select(e.c.attestation_id).where(e.c.kind == "failure")).scalars().all()
    assert sorted(failure_events) == sorted(r.id for r in rows if not r.passed)
    for device_id, dev in devices.items():
        mine = [r for r in rows if r.device_id == device_id]
        newest = max(mine, key=lambda r: r.attested_at)
        assert dev.current_attestation_id == newest.id and dev.last_attempt_at == newest.attested_at
        passes = [r.attested_at for r in mine if r.passed]
        assert dev.last_success_at == (max(passes) if passes else None)
        assert dev.verdict_state == ("passing" if newest.passed else "drifted" if passes else "never-passed") \
            or (not newest.passed and dev.verdict_state == "failing")


def test_two_processes_ingesting_the_same_load_store_each_attestation_once(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest, fleet3: Fleet) -> None:
    url = fresh_url(backend, tmp_path, request)
    envelopes = load(fleet3, 60)
    write_envelopes(tmp_path / "load", envelopes)
    workers = [start_worker(url, fleet3, tmp_path / "load", tmp_path / f"ack{i}") for i in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=WAIT_S)
        assert w.returncode == 0, err.decode()[-3000:]
    first, second = acks(tmp_path / "ack0"), acks(tmp_path / "ack1")
    assert len(first) == len(second) == 60
    stored_by = {}
    for ack in first + second:
        if not ack["duplicate"]:
            assert ack["id"] not in stored_by, "stored twice"
            stored_by[ack["id"]] = ack
    assert len(stored_by) == 60
    store = make_store(url, fleet3.trust_dir, Clock(SERVICE_NOW))
    try:
        assert_consistent(store)
        assert store.overview().total == len(DEVICES)
    finally:
        store.engine.dispose()


def test_sigkill_during_a_load_loses_no_acknowledged_ingest(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest, fleet3: Fleet) -> None:
    url = fresh_url(backend, tmp_path, request)
    envelopes = load(fleet3, 300)
    write_envelopes(tmp_path / "load", envelopes)
    ack_path = tmp_path / "ack"
    worker = start_worker(url, fleet3, tmp_path / "load", ack_path)
    deadline = time.monotonic() + WAIT_S
    while len(acks(ack_path)) < 40 and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    acknowledged = acks(ack_path)
    assert 40 <= len(acknowledged) < 300, "the worker finished before it could be killed mid-load"
    store = make_store(url, fleet3.trust_dir, Clock(SERVICE_NOW))
    try:
        for ack in acknowledged:
            assert store.raw_envelope(str(ack["id"])) is not None, f"acknowledged ingest {ack['id']} lost"
        assert_consistent(store)
        for env in envelopes:  # the restarted service takes the rest: nothing half-done blocks it
            store.ingest(env, source="agent", actor="restart")
        assert_consistent(store)
        assert sum(len(store.history(d, limit=1000)) for d in DEVICES) == 300
    finally:
        store.engine.dispose()


def snapshot(store: FleetStore) -> dict[str, object]:
    """Everything a reader sees, for comparing a database with its restored copy."""
    out: dict[str, object] = {"overview": store.overview(), "audit": store.audit_log()}
    for d in DEVICES:
        out[d] = store.device(d)
        history = store.history(d)
        out[f"{d}/history"] = history
        out[f"{d}/raw"] = [store.raw_envelope(h.id) for h in history]
    return out


def populate(store: FleetStore, fleet: Fleet) -> None:
    for env in load(fleet, 30):
        store.ingest(env, source="agent", actor="ci")
    store.revoke("drone-003", actor="alice", reason="crashed")
    store.ingest(fleet.attestation("drone-003", time=NOW), source="agent", actor="ci")


def _restore(backend: str, url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        restored = tmp_path / "restored.db"
        src = sqlite3.connect(url.removeprefix("sqlite:///"))
        dst = sqlite3.connect(restored)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        return database_url(str(restored))
    pg: PgServer = request.getfixturevalue("pg_server")
    dump = tmp_path / "fleet.sql"
    pg_url = url.replace("postgresql+psycopg://", "postgresql://")
    subprocess.run([pg.client("pg_dump"), "--no-owner", "-f", str(dump), pg_url], check=True, timeout=60,
                   capture_output=True)
    target = pg.create_database(f"restored_{os.getpid()}_{int(time.time() * 1000)}")
    subprocess.run([pg.client("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), target], check=True,
                   timeout=60, capture_output=True)
    return database_url(target)


def test_backup_restored_into_a_fresh_database_reads_the_same(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest, fleet3: Fleet) -> None:
    url = fresh_url(backend, tmp_path, request)
    clock = Clock(SERVICE_NOW)
    store = make_store(url, fleet3.trust_dir, clock)
    restored = None
    try:
        populate(store, fleet3)
        restored = make_store(_restore(backend, url, tmp_path, request), fleet3.trust_dir, clock)
        assert migrate.current(restored.engine) == migrate.head()
        assert snapshot(restored) == snapshot(store)
        restored.verify_audit_chain()
        view = restored.device("drone-003")
        assert view is not None and view.state is State.REVOKED
        # the restored database is live: it takes new attestations
        r = restored.ingest(fleet3.attestation("drone-001", time=NOW + timedelta(seconds=1)), source="agent",
                            actor="ci")
        assert r.passed and not r.duplicate
    finally:
        store.engine.dispose()
        if restored is not None:
            restored.engine.dispose()


def test_pg_harness_removes_its_directory_even_on_error(request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("pg_server")  # skips with the reason where PostgreSQL is missing
    kept: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"), PgServer(fsync=False) as pg:
        assert pg.dir is not None
        kept.append(pg.dir)
        raise RuntimeError("boom")
    assert not kept[0].exists()



@pytest.mark.slow
def test_fleet_ingest_benchmark_runs_and_prints_its_table() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.bench_fleet_ingest", "--count", "40", "--threads", "2",
                          "--devices", "5", "--seconds", "0.05"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    for row in ("raw verify_attestation, 1 process (baseline)", "raw verify_attestation, 2 processes",
                "ingest, SQLite, 1 worker", "ingest, SQLite, 2 workers"):
        assert row in out, out
