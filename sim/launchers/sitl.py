"""Launch ArduCopter SITL (from ``FLIGHTSEAL_SITL_BINARY``) for tests and the demo.

Facts this launcher is built on (recorded from ArduCopter 4.7.0-dev SITL):

* ``--serial0 tcp:0`` starts without waiting for a client (the default ``tcp:0:wait`` blocks);
  SERIAL1, the companion's port, is ``tcp:2``: TCP 5762 + 10·I for instance I;
* SITL binds its TCP ports on 0.0.0.0 and has no loopback option: we connect only to
  127.0.0.1, and nothing here should run on a machine exposed to an untrusted network;
* SITL exits when its parent process exits, so the launching process must stay alive;
* a reboot re-executes the same process (same PID): TCP clients must reconnect;
* Lua needs ``SCR_ENABLE 1`` at boot (written into our defaults file) and scripts in
  ``scripts/`` of the working directory.

SITL needs a vehicle defaults file. ArduPilot's ``copter.parm`` is not part of this project:
it is taken from ``FLIGHTSEAL_SITL_DEFAULTS``, else from the source tree the binary was built in
(``<tree>/Tools/autotest/default_params/copter.parm``), else a minimal defaults file of our own
is used (frame, calibrated accelerometers and compasses, RC ranges).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.gate.key import FC_KEY_NAME, GATE_VM_I_COUNT
from attest.errors import FlightSealError
from sim.launchers.process import Launched, stop_group

ENV_BINARY = "FLIGHTSEAL_SITL_BINARY"
ENV_DEFAULTS = "FLIGHTSEAL_SITL_DEFAULTS"
CMAC_HOME = "-35.363261,149.165230,584,353"
BASE_PORT = 5760

# Our own minimal defaults, used only when ArduPilot's copter.parm cannot be found.
MINIMAL_DEFAULTS: dict[str, float] = {
    "FRAME_CLASS": 1, "FRAME_TYPE": 0,
    **{f"INS_ACC{n}OFFS_{a}": 0.001 for n in ("", "2") for a in "XYZ"},
    **{f"INS_ACC{n}SCAL_{a}": 1.001 for n in ("", "2") for a in "XYZ"},
    **{f"COMPASS_OFS{n}_{a}": v for n in ("", "2", "3") for a, v in zip("XYZ", (5, 13, -18), strict=True)},
    **{f"RC{i}_{k}": v for i in range(1, 9) for k, v in (("MIN", 1000), ("MAX", 2000), ("TRIM", 1500))},
    "BATT_MONITOR": 4, "FS_THR_ENABLE": 1, "SIM_BARO_RND": 0,
}


class SitlError(FlightSealError):
    """SITL could not be found, started or reached."""


def binary_from_env() -> Path | None:
    value = os.environ.get(ENV_BINARY, "")
    return Path(value) if value else None


def find_defaults(binary: Path) -> Path | None:
    """ArduPilot's copter.parm: from the environment, or from the tree the binary was built in."""
    env = os.environ.get(ENV_DEFAULTS, "")
    if env:
        path = Path(env)
        if not path.is_file():
            raise SitlError(f"{ENV_DEFAULTS}={env} is not a file")
        return path
    for parent in binary.resolve().parents:
        # an ArduPilot tree, or the layout ../shared/tools/build-sitl.sh leaves (bin/arducopter beside copter.parm)
        for candidate in (parent / "Tools" / "autotest" / "default_params" / "copter.parm", parent / "copter.parm"):
            if candidate.is_file():
                return candidate
    return None


def serial_port(instance: int, serial: int) -> int:
    """TCP port of SERIALn for instance I with SITL's defaults (SERIAL0 tcp:0, SERIAL1 tcp:2, SERIAL2 tcp:3)."""
    offsets = {0: 0, 1: 2, 2: 3}
    return BASE_PORT + 10 * instance + offsets[serial]


def free_instance(first: int = 10, last: int = 60) -> int:
    """An instance number whose SERIAL0..2 ports nobody listens on (other tests may run SITL too)."""
    for instance in range(first, last):
        if not any(_port_open(serial_port(instance, n)) for n in (0, 1, 2)):
            return instance
    raise SitlError(f"no free SITL instance between {first} and {last}")


@dataclass
class SitlConfig:
    binary: Path | None = None  # default: $FLIGHTSEAL_SITL_BINARY
    instance: int = 0
    model: str = "quad"
    speedup: int = 1
    home: str = CMAC_HOME
    params: Mapping[str, float] = field(default_factory=dict)  # extra defaults (SCR_ENABLE 1, ...)
    scripting: bool = False  # adds SCR_ENABLE 1
    scripts: Mapping[str, bytes] = field(default_factory=dict)  # put into scripts/ before start
    gate_key: bytes | None = None  # as `gate install` leaves it: flightseal_gate.key, SCR_VM_I_COUNT raised
    workdir: Path | None = None  # default: a new temp directory
    start_timeout: float = 30.0
    stop_timeout: float = 5.0


class Sitl(Launched):
    """One SITL process in its own working directory. ``url`` is SERIAL1, the companion's port."""

    def __init__(self, config: SitlConfig | None = None) -> None:
        self.config = config or SitlConfig()
        binary = self.config.binary or binary_from_env()
        if binary is None:
            raise SitlError(f"no SITL binary: set {ENV_BINARY} to an ArduCopter SITL build (build/sitl/bin/arducopter)")
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise SitlError(f"{binary} is not an executable file ({ENV_BINARY})")
        self.binary = binary
        self._own_workdir = self.config.workdir is None
        self.workdir = self.config.workdir or Path(tempfile.mkdtemp(prefix=f"flightseal-sitl{self.config.instance}-"))
        self.log_path = self.workdir / "sitl.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.keep = False

    # ---- ports
    @property
    def instance(self) -> int:
        return self.config.instance

    def port(self, serial: int = 1) -> int:
        return serial_port(self.config.instance, serial)

    @property
    def url(self) -> str:
        return f"tcp:127.0.0.1:{self.port(1)}"

    @property
    def scripts_dir(self) -> Path:
        return self.workdir / "scripts"

    # ---- lifecycle
    def command(self) -> list[str]:
        defaults = [str(p) for p in (find_defaults(self.binary), self._write_own_defaults()) if p is not None]
        return [str(self.binary), "--model", self.config.model, "--speedup", str(self.config.speedup),
                "--defaults", ",".join(defaults), "-I", str(self.config.instance),
                "--serial0", "tcp:0", "--serial1", "tcp:2", "--serial2", "tcp:3", "--home", self.config.home]

    def _write_own_defaults(self) -> Path:
        params: dict[str, float] = {}
        if find_defaults(self.binary) is None:
            params.update(MINIMAL_DEFAULTS)
        if self.config.scripting:
            params["SCR_ENABLE"] = 1
        if self.config.gate_key is not None:
            params["SCR_VM_I_COUNT"] = GATE_VM_I_COUNT
        params.update(self.config.params)
        path = self.workdir / "flightseal.parm"
        path.write_text("".join(f"{k} {v:g}\n" for k, v in params.items()))
        return path

    def start(self) -> Sitl:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config.scripts:
            self.scripts_dir.mkdir(exist_ok=True)
            for name, data in self.config.scripts.items():
                (self.scripts_dir / name).write_bytes(data)
        if self.config.gate_key is not None:
            (self.workdir / FC_KEY_NAME).write_bytes(self.config.gate_key)
        for serial in (0, 1):
            if _port_open(self.port(serial)):
                raise SitlError(f"TCP port {self.port(serial)} is already in use: another SITL instance "
                                f"{self.config.instance} is running; pick another instance number")
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.config.start_timeout
        while not _port_open(self.port(1)):
            if self.proc.poll() is not None:
                self.keep = True
                raise SitlError(f"SITL exited with code {self.proc.returncode} before listening; see {self.log_path}")
            if time.monotonic() > deadline:
                self.keep = True
                self.stop()
                raise SitlError(f"SITL did not listen on port {self.port(1)} within "
                                f"{self.config.start_timeout:.0f} s; see {self.log_path}")
            time.sleep(0.05)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop SITL; remove its directory unless :attr:`keep` is set (then its log stays for a post-mortem)."""
        stop_group(self.proc, self.config.stop_timeout)
        self.proc = None
        if self.keep:
            print(f"SITL working directory and log kept in {self.workdir}", file=sys.stderr)
        elif self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _port_open(port: int) -> bool:
    """True when something listens on the TCP port.

    Read from /proc/net/tcp rather than by connecting: SITL serves one client per port, and a
    probe connection would take that slot.
    """
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False
