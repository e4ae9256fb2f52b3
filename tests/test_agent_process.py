"""The agent as a real process: killed with SIGKILL, the gate lapses to blocked by itself."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hardware.software import SoftwareSigner, write_private_key
from sim.scenarios.rig import GATE_KEY, Gcs, Rig, gate_scripts
from sim.vfc.config import VfcConfig
from sim.vfc.lua_host import LuaScriptingAuthority
from sim.vfc.server import VirtualFC

IMAGE = b"process test image " * 1000


def arm_until(g: Gcs, accepted: bool, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        r = g.arm()
        last = str(r)
        if r.accepted:
            g.disarm()
        if r.accepted == accepted:
            return last
        time.sleep(0.3)
    raise AssertionError(f"arming never became {'accepted' if accepted else 'refused'}: last {last}")


@contextlib.contextmanager
def agent_process(tmp_path: Path, **popen: Any) -> Iterator[tuple[VirtualFC, subprocess.Popen[Any]]]:
    """A virtual FC with the gate, an approved manifest, and `flightseal agent run` as a child process."""
    key = tmp_path / "device.pem"
    signer = SoftwareSigner.generate()
    write_private_key(key, signer)
    with VirtualFC(VfcConfig(scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=IMAGE),
                   authority=LuaScriptingAuthority()) as fc:
        rig = Rig(tmp_path, fc.url(1), fc.url(0), signer, gate_key=GATE_KEY)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        cmd = [sys.executable, "-m", "agent", "agent", "run", "--config", str(rig.write_config_file(f"file:{key}"))]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)
        try:
            yield fc, proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_killed_agent_process_lets_the_gate_lapse(tmp_path: Path) -> None:
    with agent_process(tmp_path) as (fc, proc):
        g = Gcs(fc.url(0))
        try:
            arm_until(g, True, 20)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5)
            killed_at = time.monotonic()
            refused = arm_until(g, False, 6)
            assert "FlightSeal" in refused
            assert time.monotonic() - killed_at < 4.5, "the pass must lapse within the gate's lapse time"
        finally:
            g.close()


def test_agent_process_stops_cleanly_on_sigterm_and_logs_transitions(tmp_path: Path) -> None:
    with agent_process(tmp_path, text=True) as (fc, proc):
        g = Gcs(fc.url(0))
        try:
            arm_until(g, True, 20)
        finally:
            g.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    for line in ("connect → measure", "appraise → seal", "deliver → watch", "verdict PASS", "→ stopped"):
        assert line in out, out


def test_agent_refuses_a_serial0_url_unless_allowed(tmp_path: Path) -> None:
    key = tmp_path / "device.pem"
    write_private_key(key, SoftwareSigner.generate())
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[mavlink]\nurl = "tcp:127.0.0.1:5760"\n[device]\nid = "d"\nairframe = "a"\nkey = "file:{key}"\n')
    r = subprocess.run([sys.executable, "-m", "agent", "agent", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2
    assert "SERIAL0" in r.stderr and "Traceback" not in r.stderr
