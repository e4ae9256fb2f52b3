"""Benchmark: agent start → first verdict acknowledged by the gate (cold and warm), re-attestation
after a parameter change, and the agent's peak RSS, against the virtual FC (and SITL when
FLIGHTSEAL_SITL_BINARY is set: pass --sitl).

The baseline, measured in the same run, is a bare Python process that imports pymavlink, connects
to the same FC port and waits for its heartbeat: the floor any agent pays. Every figure is also
printed as a ratio to it.

Targets: ≤ 3 s cold / ≤ 1 s warm to verdict (FC boot excluded), ≤ 1 s re-attestation, ≤ 80 MB RSS.
Run: .venv/bin/python -m bench.bench_agent [--runs 3] [--sitl]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hardware.software import SoftwareSigner, write_private_key
from sim.scenarios.rig import GATE_KEY, Rig, gate_scripts

BASELINE = """
import os, sys, time
os.environ["MAVLINK20"] = "1"
from pymavlink import mavutil
c = mavutil.mavlink_connection(sys.argv[1], source_system=1, source_component=191)
c.wait_heartbeat(timeout=15)
"""


class AgentProcess:
    """`flightseal agent run` as a child process; lines of its log with arrival times."""

    def __init__(self, config: Path) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "agent", "run", "--config", str(config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line))

    def wait_for(self, text: str, after: float, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                at, line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if text in line and at >= after:
                return at
        raise TimeoutError(f"agent never logged {text!r}")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return kb / 1024

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()


@contextlib.contextmanager
def fc(sitl: bool) -> Iterator[tuple[str, str, object]]:
    if sitl:
        from sim.launchers.sitl import Sitl, SitlConfig, free_instance

        with Sitl(SitlConfig(instance=free_instance(), scripting=True, scripts=gate_scripts(), gate_key=GATE_KEY)) as s:
            yield "SITL", s.url, s
    else:
        from sim.vfc.config import VfcConfig
        from sim.vfc.lua_host import LuaScriptingAuthority
        from sim.vfc.server import VirtualFC

        image = bytes(range(256)) * 4096
        with VirtualFC(VfcConfig(scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=image),
                       authority=LuaScriptingAuthority()) as v:
            yield "virtual FC", v.url(1), v


def set_param(target: object, url: str, name: str, value: float) -> None:
    """Change a parameter as a GCS would: the vFC directly, SITL over its SERIAL0 port."""
    if hasattr(target, "set_param"):
        target.set_param(name, value)
        return
    from sim.scenarios.rig import Gcs

    port = target.port(0)
    gcs = Gcs(f"tcp:127.0.0.1:{port}")
    try:
        gcs.set_param(name, value)
    finally:
        gcs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sitl", action="store_true", help="use SITL from FLIGHTSEAL_SITL_BINARY")
    args = parser.parse_args()
    os.environ.setdefault("MAVLINK20", "1")
    work = Path(tempfile.mkdtemp(prefix="flightseal-bench-"))
    rows: list[tuple[str, list[float], float | None]] = []
    try:
        with fc(args.sitl) as (label, url, target):
            key = work / "device.pem"
            signer = SoftwareSigner.generate()
            write_private_key(key, signer)
            rig = Rig(work, url, url, signer, gate_key=GATE_KEY)
            rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
            base = []
            for _ in range(args.runs):
                t0 = time.monotonic()
                subprocess.run([sys.executable, "-c", BASELINE, url], check=True, timeout=30)
                base.append(time.monotonic() - t0)
            cold, warm, warm_daemon, reattest, rss = [], [], [], [], []
            for _ in range(args.runs):
                state = work / "state"
                shutil.rmtree(state, ignore_errors=True)  # cold: no image cache, no saved state
                for bucket in (cold, warm):
                    agent = AgentProcess(rig.write_config_file(f"file:{key}", state))
                    try:
                        first_line = agent.wait_for("→ measure", agent.started)
                        done = agent.wait_for("deliver → watch", agent.started)
                        bucket.append(done - agent.started)
                        if bucket is warm:
                            warm_daemon.append(done - first_line)
                            t0 = time.monotonic()
                            set_param(target, url, "FS_THR_ENABLE", 0 if len(reattest) % 2 == 0 else 1)
                            reattest.append(agent.wait_for("deliver → watch", t0) - t0)
                        rss.append(agent.peak_rss_mb())
                    finally:
                        agent.stop()
            b = statistics.median(base)
            rows = [("baseline: python + pymavlink, connect, heartbeat", base, None),
                    ("agent start → first verdict acked, cold", cold, 3.0),
                    ("agent start → first verdict acked, warm", warm, 1.0),
                    ("  of which after the link is up (measure→ack)", warm_daemon, None),
                    ("re-attestation after a parameter change", reattest, 1.0)]
            print(f"\nFC: {label}; {args.runs} runs each; times in seconds")
            print(f"{'what':<52} {'median':>8} {'max':>8} {'× baseline':>11} {'target':>8}")
            for name, values, target_s in rows:
                med = statistics.median(values)
                verdict = "" if target_s is None else ("ok" if med <= target_s else "MISSED")
                tgt = "" if target_s is None else f"≤{target_s:g}"
                print(f"{name:<52} {med:>8.3f} {max(values):>8.3f} {med / b:>11.2f} {tgt:>8} {verdict}")
            peak = max(rss)
            print(f"{'agent peak RSS (MB)':<52} {peak:>8.1f} {'':>8} {'':>11} {'≤80':>8} "
                  f"{'ok' if peak <= 80 else 'MISSED'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
