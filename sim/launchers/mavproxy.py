"""A real MAVProxy process (from PyPI), as the operator's ground station or as the companion's router.

FlightSeal must work with what a real airframe has on its links, so the field tests run MAVProxy
itself, not a script that imitates it:
- as the **ground station** on the FC's GCS port (``--master`` = SERIAL0): it requests data
  streams, downloads the parameters and relays a pilot's commands from its ``--out`` port;
- as the **router** on the companion (``--master`` = the FC's companion port): it owns that port
  and shares it with the agent, a camera service or the radio bridge through UDP ``--out`` ports.

MAVProxy sends its ``--out`` traffic to ``udp:127.0.0.1:PORT``; a client there listens with
``udpin:127.0.0.1:PORT`` and MAVProxy takes its replies from that address. Loopback only: the
terrain module is left out, because it answers the FC's TERRAIN_REQUESTs by downloading tiles from
the internet.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from attest.errors import FlightSealError
from sim.launchers.service import Service

# MAVProxy 1.8.75's default modules, less "terrain" (it downloads SRTM tiles from the internet)
MODULES = ("link", "signing", "log", "wp", "rally", "fence", "ftp", "param", "relay", "tuneopt", "arm", "mode",
           "calibration", "rc", "auxopt", "misc", "cmdlong", "battery", "output", "adsb", "layout")


class MavProxyError(FlightSealError):
    """MAVProxy could not be started or stopped."""


def mavproxy_command() -> list[str] | None:
    """How to run MAVProxy from this environment (its console script), or None if it is not installed."""
    beside = Path(sys.executable).parent / "mavproxy.py"
    found = str(beside) if beside.is_file() else shutil.which("mavproxy.py")
    return None if found is None else [sys.executable, found]


class MavProxy(Service):
    """``mavproxy.py --master=MASTER --out=udp:127.0.0.1:PORT … --non-interactive`` in its own directory."""

    def __init__(self, master: str, out_ports: Sequence[int], workdir: Path, *, extra: Sequence[str] = ()) -> None:
        self.master = master
        self.out_ports = tuple(out_ports)
        self.workdir = workdir
        self.extra = tuple(extra)
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        base = mavproxy_command()
        if base is None:
            raise MavProxyError("MAVProxy is not installed (scripts/install.sh installs it from PyPI)")
        outs = [f"--out=udp:127.0.0.1:{p}" for p in self.out_ports]
        return [*base, f"--master={self.master}", *outs, "--non-interactive", "--state-basedir",
                str(self.workdir), f"--default-modules={','.join(MODULES)}", *self.extra]

    @property
    def log_path(self) -> Path:
        return self.workdir / "mavproxy.out"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(self.command(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_output(self, text: str, timeout: float) -> bool:
        """True once MAVProxy has printed ``text`` (e.g. ``Received 1368 parameters``), within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if not self.running():
                return False
            time.sleep(0.1)
        return False

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
