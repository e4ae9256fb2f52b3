"""Fixtures and builders for the fleet service tests, on SQLite and on a real PostgreSQL.

- ``pg_server`` (session): a :class:`tests.pgserver.PgServer`, skipped with the reason if the
  binaries are missing; ``backend`` is parametrised ``sqlite``/``postgresql``; ``db_url`` a fresh,
  migrated database of that backend per test.
- :class:`Fleet`: one manufacturer (a real 2-of-3 root), a manifest, enrolled software-key devices,
  a trust directory written the way operators lay it out, and real signed attestations.
- Run as a module, it is the ingest worker the process tests start and kill
  (``python -m tests.fleet_fixtures ingest ...``).

PYTEST_DONT_REWRITE: the test modules import the builders before pytest loads this as a plugin.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from attest import dsse
from attest.appraise import appraise
from attest.evidence import seal
from attest.manifest import Airframe, Manifest
from attest.models import Measurement
from fleet import migrate
from fleet.config import FleetConfig
from fleet.db import database_url, make_engine
from fleet.store import FleetStore
from hardware.software import SoftwareSigner
from tests.factory import NOW, World, measurements, predicate
from tests.pgserver import PgServer, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
_db_names = itertools.count(1)


class Clock:
    """The service's clock in tests: set, advanced, never the wall clock."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Fleet:
    """A manufacturer, its manifest (covering any FS-Quad-1), enrolled devices and a trust dir."""

    trust_dir: Path
    world: World = field(default_factory=World)
    keys: dict[str, SoftwareSigner] = field(default_factory=dict)
    allow_unlisted_scripts: bool = False  # the benchmark pads attestations with extra scripts
    manifest_version: int = 3

    def __post_init__(self) -> None:
        (self.trust_dir / "devices").mkdir(parents=True, exist_ok=True)
        (self.trust_dir / "root.json").write_bytes(self.world.root_bytes())
        (self.trust_dir / "manifest.json").write_bytes(self.manifest_bytes)

    def manifest(self) -> Manifest:
        return self.world.manifest(airframe=Airframe("FS-Quad-1", board_ids=(0,)),
                                   allow_unlisted_scripts=self.allow_unlisted_scripts, version=self.manifest_version)

    def install_manifest(self, version: int) -> None:
        """The operators put another manifest version into the trust directory."""
        self.manifest_version = version
        (self.trust_dir / "manifest.json").write_bytes(self.manifest_bytes)

    @property
    def manifest_bytes(self) -> bytes:
        return self.world.sign_manifest(self.manifest())

    def enroll(self, device_id: str) -> SoftwareSigner:
        key = self.keys.get(device_id) or SoftwareSigner.generate()
        self.keys[device_id] = key
        record = self.world.device(device_id, key)
        (self.trust_dir / "devices" / f"{device_id}.json").write_bytes(self.world.enrollment_bytes(record))
        return key

    def attestation(self, device_id: str, *, nonce: bytes = b"\x01" * 32, time: datetime | None = None,
                    ms: list[Measurement] | None = None, key: SoftwareSigner | None = None) -> bytes:
        """A real attestation, the device's verdict being the appraisal of ``ms`` (as an agent seals it)."""
        ms = measurements() if ms is None else ms
        pred = predicate(self.world, self.manifest_bytes, ms, appraise(ms, self.manifest()), nonce,
                         device_id=device_id, time=time or self.world.now)
        signer = key or self.keys.get(device_id) or self.enroll(device_id)
        return seal(pred, signer).to_bytes()

    def signers(self, n: int) -> list[SoftwareSigner]:
        """``n`` of the root's keys (the enrolment role is 2-of-3)."""
        return self.world.m_keys[:n]


def make_store(url: str, trust_dir: Path, clock: Clock, **config: object) -> FleetStore:
    cfg = FleetConfig(allow_software_keys=True, **config)  # type: ignore[arg-type]
    return FleetStore(make_engine(database_url(url)), trust_dir, clock=clock, stale_after=cfg.stale_after,
                      config=cfg)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with PgServer(fsync=False) as pg:  # the server is never killed here; fsync would only slow the tests
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fresh_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        url = database_url(str(tmp_path / f"fleet-{next(_db_names)}.db"))
    else:
        pg: PgServer = request.getfixturevalue("pg_server")
        url = database_url(pg.create_database(f"fleet_{os.getpid()}_{next(_db_names)}"))
    migrate.upgrade(url)
    return url


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return fresh_url(backend, tmp_path, request)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    f = Fleet(tmp_path / "trust")
    f.enroll("drone-001")
    return f


def write_envelopes(folder: Path, envelopes: list[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, env in enumerate(envelopes):
        (folder / f"{i:06d}.json").write_bytes(env)


def tamper_script(fleet: Fleet, device_id: str, time: datetime) -> bytes:
    """A validly signed attestation of an airframe whose gate script was altered."""
    return fleet.attestation(device_id, time=time, ms=measurements(gate=b"-- altered gate\n"))


def _worker(argv: list[str]) -> None:
    """Ingest every envelope in a folder; after each ingest returns, append its id to the ack file
    and fsync it: a line in that file is an ingest the caller was told succeeded."""
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("trust", type=Path)
    ap.add_argument("now")
    ap.add_argument("envelopes", type=Path)
    ap.add_argument("ack", type=Path)
    args = ap.parse_args(argv)
    store = make_store(args.url, args.trust, Clock(datetime.fromisoformat(args.now)))
    with args.ack.open("a") as ack:
        for path in sorted(args.envelopes.iterdir()):
            r = store.ingest(path.read_bytes(), source="test", actor=f"worker-{os.getpid()}")
            ack.write(json.dumps({"id": r.attestation_id, "duplicate": r.duplicate, "passed": r.passed}) + "\n")
            ack.flush()
            os.fsync(ack.fileno())


def signed_revocation_bytes(fleet: Fleet, device_id: str, reason: str, signers: int) -> bytes:
    from fleet.revocation import Revocation, sign_revocation

    return sign_revocation(Revocation(device_id, reason, fleet.world.now), fleet.signers(signers))


def resign(envelope: bytes, key: SoftwareSigner) -> bytes:
    """The same statement signed again (new signature bytes: a different envelope, same content)."""
    env = dsse.Envelope.from_bytes(envelope, "attestation")
    return dsse.sign(env.payload_type, env.payload, [key]).to_bytes()


if __name__ == "__main__":
    if sys.argv[1:2] != ["ingest"]:
        raise SystemExit("usage: python -m tests.fleet_fixtures ingest URL TRUST NOW ENVELOPES ACK")
    _worker(sys.argv[2:])


@pytest.fixture
def clock() -> Clock:
    """A settable clock a minute after the factory's NOW (shared by the store and webhook tests)."""
    return Clock(NOW + timedelta(minutes=1))


@pytest.fixture
def store(db_url: str, fleet: Fleet, clock: Clock) -> Iterator[FleetStore]:
    s = make_store(db_url, fleet.trust_dir, clock)
    yield s
    s.engine.dispose()
