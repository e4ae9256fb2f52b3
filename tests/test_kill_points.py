"""Killed at every write point (issue 11): state is never corrupt and never goes back.

A child process makes the agent's and the verifier's real state writes (tests/kill_child.py) and is
SIGKILLed before each file-system change in turn. After each kill, the state is read with the
project's own readers, then the writes run again to the end, as a restarted agent would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.audit import AuditLog, scan
from agent.gate.client import SequenceSource
from agent.measure.imagecache import ImageCache
from hardware.files import STALE_TEMP_S
from tests.factory import World
from tests.kill_child import STEPS, digest
from truststore.manifest_state import ManifestState
from truststore.root_store import RootStore
from truststore.trustdir import TrustDir

ROOT = Path(__file__).resolve().parent.parent


def child(state: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.kill_child", str(state), str(kill_at)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def check(state: Path) -> tuple[int, int]:
    """Everything the agent and the verifier would read at start: (manifest version, audit records)."""
    version, recorded = ManifestState(state / "manifest-state.json").load()
    assert recorded is None if version == 0 else recorded == digest(version), "version and digest disagree"
    report = scan(state / "audit.log")
    AuditLog(state / "audit.log")  # starts, setting a torn tail aside
    assert scan(state / "audit.log").torn_bytes == 0
    RootStore(state / "root.json", state).load()
    SequenceSource(state / "gate.seq")
    TrustDir(state).device_clocks()
    ImageCache(state / "image-cache")
    return version, report.records


def temps(state: Path) -> list[Path]:
    return [p for p in state.iterdir() if p.name.startswith(".")]


def test_a_kill_before_any_write_leaves_state_readable_and_a_restart_finishes(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "root.json").write_bytes(World().root_bytes())
    done = child(seed, 0)
    assert done.returncode == 0, done.stderr
    events = int(done.stdout.split()[-1])
    assert events >= 6 * STEPS, done.stdout  # a write per kind of state per step, at least
    assert check(seed) == (STEPS, STEPS)
    for kill_at in range(1, events + 1):
        state = tmp_path / f"k{kill_at}"
        shutil.copytree(seed, state, ignore=lambda _d, names: [n for n in names if n != "root.json"])
        killed = child(state, kill_at)
        assert killed.returncode == -signal.SIGKILL, f"kill point {kill_at}: {killed.returncode} {killed.stderr}"
        version, records = check(state)
        assert version <= STEPS and records <= STEPS
        assert len(temps(state)) <= 1, "one write was under way"
        for p in temps(state):  # the restart comes a while later: what the killed writer left is swept
            os.utime(p, (time.time() - 2 * STALE_TEMP_S,) * 2)
        again = child(state, 0)
        assert again.returncode == 0, f"kill point {kill_at}: the restart failed: {again.stderr[-2000:]}"
        final_version, final_records = check(state)
        assert final_version == STEPS, "the recorded version never goes back, and the restart records the last"
        assert final_records == records + STEPS, "earlier records stay valid and the chain goes on"
        assert json.loads((state / "root-state.json").read_text())["version"] == 1
        assert not temps(state), "temporary files left behind"
        shutil.rmtree(state)
