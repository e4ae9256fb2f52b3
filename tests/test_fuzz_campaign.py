"""Issue 11's fuzzing campaign, at two scales: a smoke run in every CI run, and the full campaign
(100,000 hostile frames at a running agent, 100,000 generated files per parser), marked ``slow`` and
run by ``scripts/fuzz.sh``. Both print the counts table the README quotes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.fuzz_campaign import OPT_IN_KINDS, Mix, file_targets, run_file_campaign, run_frame_campaign

FULL = os.environ.get("FLIGHTSEAL_FUZZ_CAMPAIGN") == "1"
full_only = pytest.mark.skipif(not FULL, reason="the full fuzz campaign (about 10 minutes) runs with "
                               "FLIGHTSEAL_FUZZ_CAMPAIGN=1: bash scripts/fuzz.sh")


def _count(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or int(raw) <= 0:
        raise pytest.UsageError(f"{name}={raw!r}: expected a positive whole number")
    return int(raw)


def _opt_in() -> frozenset[str]:
    kinds = frozenset(k for k in os.environ.get("FLIGHTSEAL_FUZZ_OPT_IN", "").split(",") if k)
    unknown = kinds - set(OPT_IN_KINDS)
    if unknown:
        raise pytest.UsageError(f"FLIGHTSEAL_FUZZ_OPT_IN: unknown kind(s) {sorted(unknown)}; "
                                f"known: {sorted(OPT_IN_KINDS)}")
    return kinds


def _frames(tmp_path: Path, frames: int) -> None:
    report = run_frame_campaign(tmp_path / "frames", frames, mix=Mix(opt_in=_opt_in()), progress=print)
    print("\n" + report.render())
    for note in report.notes:
        print("note:", note)
    assert not report.findings, "\n\n".join(str(f) for f in report.findings)
    assert sum(report.sent.values()) >= frames
    assert report.watch.acks["accepted pass"] > 0


def _files(tmp_path: Path, files: int) -> None:
    targets = file_targets(tmp_path / "files")
    started = time.monotonic()
    report = run_file_campaign(targets, files, seed=int(os.environ.get("FLIGHTSEAL_FUZZ_SEED", "11")),
                               findings_dir=tmp_path / "findings", progress=print)
    print("\n" + report.render())
    print(f"{len(targets)} parsers x {files} files in {time.monotonic() - started:.0f} s")
    for (name, why), example in sorted(report.known.items()):
        print(f"known open [{name}]: {why} (e.g. {example})")
    assert not report.findings, "\n".join(str(f) for f in report.findings)


def test_hostile_frames_at_a_running_agent_smoke(tmp_path: Path) -> None:
    """A few thousand hostile frames both ways: no crash, traceback, hang, wedge or lapsed pass."""
    _frames(tmp_path, _count("FLIGHTSEAL_FUZZ_SMOKE_FRAMES", 3000))


def test_generated_files_at_every_parser_smoke(tmp_path: Path) -> None:
    """About 2,000 generated files per parser: each accepted or refused with FlightSealError."""
    _files(tmp_path, _count("FLIGHTSEAL_FUZZ_SMOKE_FILES", 2000))


@pytest.mark.slow
@full_only
def test_full_campaign_hostile_frames(tmp_path: Path) -> None:
    _frames(tmp_path, _count("FLIGHTSEAL_FUZZ_FRAMES", 100_000))


@pytest.mark.slow
@full_only
def test_full_campaign_generated_files(tmp_path: Path) -> None:
    _files(tmp_path, _count("FLIGHTSEAL_FUZZ_FILES", 100_000))
