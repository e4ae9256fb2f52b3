"""Benchmark: fleet ingest (attestations verified *and* durably stored per second) and its p99
latency, on SQLite and on PostgreSQL, with 1 and 2 worker processes, beside the raw
``verify_attestation`` rate measured in the same run (the baseline: what verification alone costs).

Run: .venv/bin/python -m bench.bench_fleet_ingest [--count 3000] [--threads 16] [--sqlite-threads 2]
Target (issue 14): >= 1,000 attestations/s sustained on PostgreSQL on a 2-core machine.

What is measured, so the numbers mean what they say:

* every ingest is one ``FleetStore.ingest`` call as the service serves a request: verify with the
  core, then the write (attestation row, airframe state, events) committed before the call returns.
  SQLite runs with ``synchronous=FULL``, PostgreSQL with ``fsync=on`` and ``synchronous_commit=on``;
* each worker process runs ``--threads`` threads, as the service's threadpool serves concurrent
  requests (Starlette's runs up to 40). On PostgreSQL the store's group commit writes the ingests
  that are concurrent in one process in one transaction (each call still returns only after its
  own rows committed); the "batch" column is the mean number of ingests per transaction;
* attestations are distinct (no duplicate short-cut), spread over ``--devices`` airframes, and
  signed before the clock starts; p99 is over every ingest of the run, queueing included.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from attest.models import Kind, Measurement, Strength
from attest.verify import VerifierPolicy, verify_attestation
from fleet import migrate
from fleet.db import database_url
from fleet.intake import TrustSnapshot
from tests.factory import NOW, measurements, sha
from tests.fleet_fixtures import Clock, Fleet, make_store
from tests.pgserver import PgServer, unavailable_reason

TARGET_PG = 1000.0
SERVICE_NOW = NOW + timedelta(hours=1)


def padded_measurements(n: int) -> list[Measurement]:
    ms = measurements()
    ms += [Measurement(f"fc.script:scripts/s{i}.lua", Kind.SCRIPT, {"sha256": sha(b"s%d" % i)}, "mavlink-ftp",
                       Strength.SELF_REPORTED, {"path": f"scripts/s{i}.lua"}) for i in range(max(0, n - len(ms)))]
    return ms


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed


def raw_verify_rate(trust_dir: Path, envelope: bytes, seconds: float) -> float:
    """The core alone on the same inputs the store uses (the trust directory's parsed snapshot)."""
    snap = TrustSnapshot.load(trust_dir)
    policy = VerifierPolicy(allow_software_keys=True, max_age=timedelta(days=30))
    nonce = b"\x01" * 32

    def once() -> None:
        r = verify_attestation(envelope, trust=snap.state, devices=snap.devices, manifest_bytes=snap.manifest_bytes,
                               nonce=nonce, now=SERVICE_NOW, policy=policy)
        assert r.passed, r.reasons

    return rate(once, seconds)


def _raw_verify_worker(trust_dir: str, envelope: bytes, seconds: float, out: Any) -> None:
    out.put(raw_verify_rate(Path(trust_dir), envelope, seconds))


def _ingest_worker(url: str, trust_dir: str, envelopes_file: str, threads: int, ready: Any, start: Any,
                   out: Any) -> None:
    envelopes: list[bytes] = pickle.loads(Path(envelopes_file).read_bytes())
    store = make_store(url, Path(trust_dir), Clock(SERVICE_NOW))
    store.trust.get()
    latencies: list[float] = []
    lock = threading.Lock()

    def run(part: list[bytes]) -> None:
        mine = []
        for env in part:
            t0 = time.perf_counter()
            r = store.ingest(env, source="bench", actor="bench")
            mine.append(time.perf_counter() - t0)
            assert r.passed and not r.duplicate, r.reasons
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run, args=(envelopes[i::threads],)) for i in range(threads)]
    ready.put(True)
    start.wait()
    t_start = time.time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    group = store._group
    batch = group.items / group.batches if group is not None and group.batches else None
    out.put((t_start, time.time(), latencies, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, batch))
    store.engine.dispose()


@dataclass
class Row:
    what: str
    per_second: float
    p99_ms: float | None = None
    rss_mib: float | None = None
    batch: float | None = None  # mean ingests per group-commit transaction


def run_ingest(url: str, trust_dir: Path, batches: list[Path], threads: int) -> Row:
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_ingest_worker, args=(url, str(trust_dir), str(b), threads, ready, start, out))
             for b in batches]
    for p in procs:
        p.start()
    for _ in procs:  # every worker has imported, connected and parsed the trust directory
        ready.get(timeout=120)
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    begin, end = min(r[0] for r in results), max(r[1] for r in results)
    latencies = sorted(x for r in results for x in r[2])
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    batches = [r[4] for r in results if r[4] is not None]
    return Row("", len(latencies) / (end - begin), p99, max(r[3] for r in results) / 1024,
               sum(batches) / len(batches) if batches else None)


def build_load(tmp: Path, args: argparse.Namespace) -> tuple[Fleet, list[list[bytes]]]:
    fleet = Fleet(tmp / "trust", allow_unlisted_scripts=True)
    devices = [f"drone-{i:05d}" for i in range(args.devices)]
    for d in devices:
        fleet.enroll(d)
    ms = padded_measurements(args.measurements)
    batches = []
    for w in range(2):
        batches.append([fleet.attestation(devices[i % len(devices)], ms=ms,
                                          time=NOW - timedelta(milliseconds=w * args.count + i))
                        for i in range(args.count)])
    return fleet, batches


def write_batches(tmp: Path, batches: list[list[bytes]], tag: str) -> list[Path]:
    paths = []
    for i, b in enumerate(batches):
        p = tmp / f"{tag}-{i}.pickle"
        p.write_bytes(pickle.dumps(b))
        paths.append(p)
    return paths


def measure(args: argparse.Namespace, tmp: Path) -> tuple[list[Row], str]:
    fleet, batches = build_load(tmp, args)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    rows = [Row("raw verify_attestation, 1 process (baseline)", raw_verify_rate(fleet.trust_dir, batches[0][0],
                                                                                 args.seconds))]
    procs = [ctx.Process(target=_raw_verify_worker, args=(str(fleet.trust_dir), batches[0][0], args.seconds, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    rows.append(Row("raw verify_attestation, 2 processes", sum(out.get(timeout=120) for _ in procs)))
    for p in procs:
        p.join(timeout=30)
    for workers in () if args.no_sqlite else (1, 2):
        url = database_url(str(tmp / f"fleet-{workers}.db"))
        migrate.upgrade(url)
        row = run_ingest(url, fleet.trust_dir, write_batches(tmp, batches[:workers], f"sq{workers}"),
                         args.sqlite_threads)
        row.what = f"ingest, SQLite, {workers} worker{'s' if workers > 1 else ''} x {args.sqlite_threads} threads"
        rows.append(row)
    note = ""
    reason = unavailable_reason()
    if args.no_pg or reason:
        note = f"PostgreSQL skipped: {reason or '--no-pg'}"
        return rows, note
    with PgServer(fsync=True) as pg:
        for workers in (1, 2):
            url = database_url(pg.create_database(f"bench{workers}"))
            migrate.upgrade(url)
            row = run_ingest(url, fleet.trust_dir, write_batches(tmp, batches[:workers], f"pg{workers}"),
                             args.threads)
            row.what = f"ingest, PostgreSQL, {workers} worker{'s' if workers > 1 else ''} x {args.threads} threads"
            rows.append(row)
    return rows, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="attestations per worker process")
    parser.add_argument("--threads", type=int, default=16, help="concurrent requests per worker process "
                        "(PostgreSQL)")
    parser.add_argument("--sqlite-threads", type=int, default=2, help="concurrent requests per worker process "
                        "(SQLite: one writer at a time, so more threads only queue on its lock)")
    parser.add_argument("--measurements", type=int, default=5, help="measurements per attestation (padded)")
    parser.add_argument("--devices", type=int, default=100, help="enrolled airframes the load is spread over")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each raw verify measurement")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    args = parser.parse_args()
    started = datetime.now()
    with tempfile.TemporaryDirectory(prefix="flightseal-bench-") as tmp:
        rows, note = measure(args, Path(tmp))
    baseline = rows[0].per_second
    print(f"fleet ingest, {args.measurements} measurements per attestation, {args.devices} airframes, "
          f"{args.count} attestations per worker, {mp.cpu_count()} CPUs, {started:%Y-%m-%d %H:%M}\n")
    print("| what | per second | p99 latency (ms) | ratio to raw verify | batch | max RSS per process (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        p99 = f"{r.p99_ms:.1f}" if r.p99_ms is not None else "-"
        rss = f"{r.rss_mib:.0f}" if r.rss_mib is not None else "-"
        batch = f"{r.batch:.1f}" if r.batch is not None else "-"
        print(f"| {r.what} | {r.per_second:.0f} | {p99} | {r.per_second / baseline:.2f} | {batch} | {rss} |")
    if note:
        print(f"\n{note}")
    pg2 = [r for r in rows if r.what.startswith("ingest, PostgreSQL, 2 workers")]
    if pg2:
        met = pg2[0].per_second >= TARGET_PG
        print(f"\ntarget >= {TARGET_PG:.0f}/s on PostgreSQL with 2 workers: {pg2[0].per_second:.0f}/s, "
              f"{'MET' if met else 'NOT MET'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
