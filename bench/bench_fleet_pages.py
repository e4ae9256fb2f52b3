"""Benchmark: p95 latency of the fleet overview and of an airframe page at fleet scale.

The database is seeded with ``--devices`` airframes × ``--per-device`` attestations (10,000 × 100 by
default) by bulk inserts straight into the tables: **seeding skips verification** (that is what the
ingest benchmark measures); each airframe's newest attestation carries a real signed envelope, so the
airframe page parses real measurements, the older ones a placeholder body. The mix of states is 90 %
passing, 4 % failing, 3 % drifted, 2 % stale, 1 % revoked.

Then the real service runs in its own process (``flightseal fleet serve``, one worker) and this
process, logged in as a viewer through the log-in form, requests each page ``--requests`` times over
HTTP (httpx, one connection) and reports p50/p95/p99 as a markdown table with the target.

Target: overview p95 < 200 ms at 10,000 airframes (issue 14). The airframe page has no target; it is
reported beside it.
Run: .venv/bin/python -m bench.bench_fleet_pages [--devices 10000] [--per-device 100] [--requests 200] [--pg]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, insert

from fleet.auth import Auth
from fleet.db import database_url, make_engine
from fleet.migrate import upgrade
from fleet.models import Attestation, Device, table
from tests.fleet_kit import make_fleet

TARGET_OVERVIEW_P95_MS = 200.0
BATCH = 5000
PASSWORD = "benchmark password"
REASONS = {
    "failing": [{"code": "param-pinned", "component": "fc.params", "detail": "ARMING_CHECK is 0, pinned to 1"}],
    "drifted": [{"code": "script-mismatch", "component": "fc.script:scripts/flightseal.lua",
                 "detail": "script scripts/flightseal.lua differs from the approved one"}],
}
DRIFT = json.dumps([{"component": "fc.script:scripts/flightseal.lua", "field": "sha256", "old": "e4ea2a1d" * 8,
                     "new": "2ccefe90" * 8}])


def _state_of(i: int) -> str:
    r = i % 100
    return "passing" if r < 90 else "failing" if r < 94 else "drifted" if r < 97 else "stale" if r < 99 else "revoked"


def _device_row(i: int, now: datetime, per_device: int, newest_id: str) -> dict[str, Any]:
    state = _state_of(i)
    last = now - (timedelta(days=10) if state == "stale" else timedelta(minutes=i % 600))
    red = state in ("failing", "drifted")
    return {
        "device_id": f"FS-{i:05d}", "airframe": "FS-Quad-1" if i % 3 else "FS-Hexa-2",
        "verdict_state": state if red else "passing", "last_attempt_at": last, "last_received_at": last,
        "last_success_at": last - timedelta(hours=1) if red else last, "consecutive_failures": 1 if red else 0,
        "current_attestation_id": newest_id, "current_reasons": json.dumps(REASONS.get(state, [])),
        "last_pass_attestation_id": newest_id, "drift": DRIFT if state == "drifted" else "[]",
        "manifest_version": 3, "manifest_high": 3,
        "revoked_at": now - timedelta(days=1) if state == "revoked" else None,
        "revoked_by": "bench" if state == "revoked" else None,
        "revoked_reason": "seeded revocation" if state == "revoked" else None,
    }


def _attestations(i: int, now: datetime, per_device: int, real: bytes) -> Iterator[dict[str, Any]]:
    device = f"FS-{i:05d}"
    for n in range(per_device):
        newest = n == per_device - 1
        body = real if newest else b"{}"
        ident = hashlib.sha256(real + device.encode()).hexdigest() if newest \
            else hashlib.sha256(f"{device}:{n}".encode()).hexdigest()
        at = now - timedelta(hours=per_device - n, minutes=i % 600)
        yield {"id": ident, "device_id": device, "received_at": at, "attested_at": at, "passed": True,
               "reasons": "[]", "answered_nonce": n % 2 == 0, "manifest_version": 3, "source": "bench",
               "actor": "seed", "envelope": body}


def seed(engine: Engine, devices: int, per_device: int, real: bytes) -> float:
    """Bulk insert (no verification); returns seconds taken."""
    started, now = time.monotonic(), datetime.now(UTC)
    att, dev = table(Attestation), table(Device)
    rows: list[dict[str, Any]] = []
    with engine.begin() as conn:
        conn.execute(insert(dev), [_device_row(i, now, per_device, hashlib.sha256(real + f"FS-{i:05d}".encode())
                                                .hexdigest()) for i in range(devices)])
    for i in range(devices):
        rows.extend(_attestations(i, now, per_device, real))
        if len(rows) >= BATCH or i == devices - 1:
            with engine.begin() as conn:
                conn.execute(insert(att), rows)
            rows = []
        if i and i % 1000 == 0:
            print(f"  seeded {i} airframes ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return time.monotonic() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(db: str, trust: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "fleet", "serve", "--db", db, "--trust", str(trust),
                             "--port", str(port), "--allow-software-keys"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fleet serve did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def login(client: httpx.Client) -> None:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, "no CSRF field on the log-in page"
    r = client.post("/login", data={"csrf": csrf[1], "name": "viewer", "password": PASSWORD, "next": "/"})
    assert r.status_code == 303, r.text


def timed(client: httpx.Client, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        t = time.perf_counter()
        r = client.get(path)
        out.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path} answered {r.status_code}")
    return out


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


def run(args: argparse.Namespace, tmp: Path, db: str) -> None:
    fleet = make_fleet(tmp, 1)
    real = fleet.attestation("drone-001")
    url = database_url(db)
    upgrade(url)
    engine = make_engine(url)
    seconds = seed(engine, args.devices, args.per_device, real)
    Auth(engine).add_user("viewer", "viewer", PASSWORD)
    engine.dispose()
    with serve(db, fleet.trust) as base, httpx.Client(base_url=base, timeout=60) as client:
        login(client)
        timed(client, ["/"] * 5 + ["/devices/FS-00001"] * 5)  # warm-up: caches, connections, templates
        rng = random.Random(14)
        overview = timed(client, ["/"] * args.requests)
        device = timed(client, [f"/devices/FS-{rng.randrange(args.devices):05d}" for _ in range(args.requests)])
    kind = "PostgreSQL" if args.pg else "SQLite"
    print(f"\nFleet pages, {args.devices:,} airframes × {args.per_device} attestations on {kind} "
          f"(seeded by bulk insert in {seconds:.0f} s, verification skipped); {args.requests} requests each, "
          "one uvicorn worker, one client connection\n")
    print("| page | p50 ms | p95 ms | p99 ms | target | status |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    p95 = pct(overview, 95)
    status = "met" if p95 < TARGET_OVERVIEW_P95_MS else "not met"
    print(f"| overview `/` | {pct(overview, 50):.1f} | {p95:.1f} | {pct(overview, 99):.1f} | "
          f"p95 < {TARGET_OVERVIEW_P95_MS:.0f} ms | {status} |")
    print(f"| airframe `/devices/{{id}}` | {pct(device, 50):.1f} | {pct(device, 95):.1f} | {pct(device, 99):.1f} "
          "| — | — |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--per-device", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--pg", action="store_true", help="PostgreSQL (tests/pgserver.py) instead of SQLite")
    args = parser.parse_args()
    if args.devices < 1 or args.per_device < 1 or args.requests < 2:
        parser.error("--devices and --per-device must be at least 1, --requests at least 2")
    with tempfile.TemporaryDirectory(prefix="flightseal-bench-pages-") as tmp:
        if args.pg:
            from tests.pgserver import PgServer, unavailable_reason

            reason = unavailable_reason()
            if reason:
                sys.exit(f"bench_fleet_pages: --pg: {reason}")
            server: Any = PgServer(fsync=False)
        else:
            server = nullcontext()
        with server as pg:
            db = pg.create_database("fleet_pages") if args.pg else str(Path(tmp) / "fleet.db")
            run(args, Path(tmp), db)


if __name__ == "__main__":
    main()
