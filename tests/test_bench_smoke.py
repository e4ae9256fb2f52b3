"""The verification benchmark still runs and prints every row (its numbers are not asserted:
speed targets live in bench/, not in timed tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_verify_runs_and_prints_its_table() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.bench_verify", "--seconds", "0.05"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for row in ("raw ECDSA P-256 verify (baseline)", "full verification, 50 measurements", "stdlib floor",
                "compiled floor", "appraisal of 50 parsed measurements", "bound: compiled floor + appraisal",
                "ratio full / raw = "):
        assert row in out, out
