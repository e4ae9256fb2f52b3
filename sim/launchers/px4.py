"""Launch a real PX4 SITL (SIH quadrotor, headless) from ``FLIGHTSEAL_PX4_SITL`` for tests and recordings.

Facts this launcher is built on (PX4 v1.16.0, ``px4_sitl_default``, built by
``../shared/tools/build-px4-sitl.sh``, whose MAVLink UDP sockets are patched to bind 127.0.0.1 only):

* ``bin/px4 -i N -d -w ROOTFS BUILD/etc`` changes into ROOTFS, symlinks ``ROOTFS/etc`` to
  ``BUILD/etc`` and runs ``etc/init.d-posix/rcS N``. Everything PX4 writes (``parameters.bson``,
  ``dataman``, ``eeprom/``, ``log/``) lands in ROOTFS (:attr:`Px4Sitl.workdir`, in a fresh temp
  directory), so there is no shared state between runs; a restart in the same directory keeps the
  parameters (a reboot). ROOTFS is also what MAVLink FTP serves as ``/`` (PX4_ROOTFSDIR is ``.``
  on posix), which is why our own log (``px4.log``) is kept beside it, not in it.
* If ROOTFS already holds an ``etc`` directory (not a symlink), PX4 keeps it: ``private_etc``
  copies the build's ``etc/`` there, so a test may change a startup file (the airframe) of this
  instance only; the change acts at the next boot (:meth:`Px4Sitl.reboot`).
* The instance number N is global on the machine: PX4 takes ``/tmp/px4_lock-N`` (an fcntl lock)
  and the daemon socket ``/tmp/px4-sock-N``; a second ``px4 -i N`` exits with
  "PX4 server already running for instance N". Two launchers must use different instances.
* Ports (``etc/init.d-posix/px4-rc.mavlink``): the onboard/offboard link is bound on 14580+N and
  sends to 127.0.0.1:14540+N (14549 for N > 9); the GCS link is bound on 18570+N and sends to
  127.0.0.1:14550 for every instance until a peer talks to it. PX4's UDP links adopt the first
  localhost sender as their partner and reply there, so a ground station reaches instance N by
  sending to 18570+N from any port (``udpout:127.0.0.1:18570+N``).
* ``rcS`` applies ``PX4_PARAM_<NAME>=<value>`` environment variables with ``param set`` after the
  airframe defaults are reset and before the modules start, so parameters such as
  ``COM_ARM_AUTH_REQ`` are in force from the first boot; they are also saved into
  ``parameters.bson``.
* ``MAV_SYS_ID`` is set to N+1 by ``rcS``: instance 0 is system 1, instance 1 is system 2.
* SIGTERM makes PX4 shut down cleanly; it starts shell children (``rcS``, ``px4-*`` clients), so
  the process runs in a session of its own and is stopped by its process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from attest.errors import FlightSealError
from sim.launchers.process import Launched, stop_group

ENV_PX4 = "FLIGHTSEAL_PX4_SITL"
AIRFRAME_SIH_QUADX = 10040
ONBOARD_REMOTE_BASE = 14540  # where PX4 sends the onboard link (our agent listens here)
ONBOARD_LOCAL_BASE = 14580  # where PX4 listens for the onboard link
GCS_LOCAL_BASE = 18570  # where PX4 listens for the GCS link
GCS_REMOTE = 14550  # where PX4 sends the GCS link before a peer has talked to it (all instances)
BUILD_HINT = "run ../shared/tools/build-px4-sitl.sh and set FLIGHTSEAL_PX4_SITL to its build/px4_sitl_default"


class Px4SitlError(FlightSealError):
    """PX4 SITL could not be found, started or reached."""


def px4_from_env() -> Path | None:
    """The PX4 build directory named by ``FLIGHTSEAL_PX4_SITL`` (unchecked), or None when unset.

    The variable may name the build directory or its ``bin/px4``; both give the build directory.
    """
    value = os.environ.get(ENV_PX4, "")
    if not value:
        return None
    path = Path(value)
    if path.name == "px4" and path.parent.name == "bin":
        return path.parent.parent
    return path


def check_build(build: Path | None) -> tuple[Path, Path]:
    """(binary, etc directory) of a PX4 SITL build directory.

    Raises:
        Px4SitlError: the directory is unset or holds no executable ``bin/px4`` or no ``etc/``.
    """
    if build is None:
        raise Px4SitlError(f"{ENV_PX4} is not set: {BUILD_HINT}")
    binary = build / "bin" / "px4"
    etc = build / "etc"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise Px4SitlError(f"no executable PX4 binary at {binary}: {BUILD_HINT}")
    if not (etc / "init.d-posix" / "rcS").is_file():
        raise Px4SitlError(f"{etc} holds no init.d-posix/rcS (not a px4_sitl_default build?): {BUILD_HINT}")
    return binary, etc


def onboard_remote_port(instance: int) -> int:
    """UDP port PX4 instance N sends its onboard link to (px4-rc.mavlink: 14549 for N > 9)."""
    return ONBOARD_REMOTE_BASE + instance if instance <= 9 else 14549


def onboard_local_port(instance: int) -> int:
    return ONBOARD_LOCAL_BASE + instance


def gcs_local_port(instance: int) -> int:
    return GCS_LOCAL_BASE + instance


@dataclass
class Px4Config:
    build: Path | None = None  # default: $FLIGHTSEAL_PX4_SITL
    instance: int = 0
    airframe: int = AIRFRAME_SIH_QUADX
    params: Mapping[str, float] = field(default_factory=dict)  # set at boot (PX4_PARAM_<NAME>)
    workdir: Path | None = None  # PX4's working directory; default: rootfs/ in a new temp directory
    private_etc: bool = False  # copy etc/ into the working directory (editable) instead of a symlink
    start_timeout: float = 60.0
    stop_timeout: float = 10.0
    wait_heartbeat: bool = True  # block in start() until the onboard link heartbeats


class Px4Sitl(Launched):
    """One PX4 SITL process in its own working directory.

    ``onboard_url`` is for our agent (it binds the port PX4 sends the onboard link to);
    ``gcs_url`` is for a ground station (or an attacker) on the GCS link.
    """

    def __init__(self, config: Px4Config | None = None, **overrides: object) -> None:
        """Raises: Px4SitlError when the build is missing or the instance number is out of range."""
        if config is None:
            config = Px4Config(**overrides)  # type: ignore[arg-type]
        elif overrides:
            raise TypeError("give either a Px4Config or keyword overrides, not both")
        self.config = config
        if not 0 <= config.instance <= 9:
            raise Px4SitlError(f"PX4 instance {config.instance} out of range 0..9 (ports would collide)")
        self.build = (config.build or px4_from_env())
        self.binary, self.etc = check_build(self.build)
        self._own_workdir = config.workdir is None
        # PX4 runs in workdir (what MAVLink FTP serves as "/"); our log stays beside it, out of FTP's view
        if config.workdir is None:
            self._base: Path | None = Path(tempfile.mkdtemp(prefix=f"flightseal-px4-{config.instance}-"))
            self.workdir = self._base / "rootfs"
            self.log_path = self._base / "px4.log"
        else:
            self._base = None
            self.workdir = config.workdir
            self.log_path = config.workdir.parent / f"{config.workdir.name}-px4.log"
        self.rootfs = self.workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.keep = False
        self.boots = 0

    # ---- ports and names
    @property
    def instance(self) -> int:
        return self.config.instance

    @property
    def sysid(self) -> int:
        """PX4's MAVLink system id: rcS sets MAV_SYS_ID to instance + 1."""
        return int(self.config.params.get("MAV_SYS_ID", self.instance + 1))

    @property
    def onboard_port(self) -> int:
        return onboard_remote_port(self.instance)

    @property
    def onboard_url(self) -> str:
        return f"udpin:127.0.0.1:{self.onboard_port}"

    @property
    def gcs_port(self) -> int:
        """The port PX4 listens on for the GCS link (send here; PX4 answers the first localhost sender)."""
        return gcs_local_port(self.instance)

    @property
    def gcs_url(self) -> str:
        return f"udpout:127.0.0.1:{self.gcs_port}"

    @property
    def gcs_listen_url(self) -> str:
        """Where the GCS link sends until a peer talks to it: a ground station listening there stays PX4's
        partner when it is restarted on the same port (another port is never answered)."""
        return f"udpin:127.0.0.1:{GCS_REMOTE}"

    # ---- lifecycle
    def command(self) -> list[str]:
        return [str(self.binary), "-i", str(self.instance), "-d", "-w", str(self.workdir), str(self.etc)]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PX4_")}
        env.update({
            "PX4_SYS_AUTOSTART": str(self.config.airframe),
            "PX4_SIM_MODEL": "sihsim_quadx",
            "PX4_SIMULATOR": "sihsim",
        })
        for name, value in self.config.params.items():
            if not name.replace("_", "").isalnum() or not name.isupper():
                raise Px4SitlError(f"bad PX4 parameter name {name!r}")
            env[f"PX4_PARAM_{name}"] = _param_text(value)
        return env

    def start(self, *, agent_listening: bool = False) -> Px4Sitl:
        """Start PX4 and (by default) wait until the onboard link heartbeats.

        ``agent_listening``: a client already holds the onboard port (an agent staying connected across a
        reboot), so PX4 being up is seen by its own onboard socket being bound instead.

        Raises:
            Px4SitlError: a port of this instance is taken, PX4 exits, or no heartbeat in time.
        """
        if self.running():
            raise Px4SitlError("PX4 is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # the onboard port is ours to bind only when we wait for the heartbeat; a caller that does
        # not wait may already listen there (to see PX4's first heartbeat)
        ports = [onboard_local_port(self.instance), self.gcs_port]
        if self.config.wait_heartbeat and not agent_listening:
            ports.insert(0, self.onboard_port)
        busy = [port for port in ports if _udp_port_bound(port)]
        if busy:
            if self.boots == 0:
                self.stop()  # nothing ran: leave no temp directory behind (a failed __enter__ gets no __exit__)
            raise Px4SitlError(f"UDP port {busy[0]} is already in use: another PX4 instance {self.instance} "
                               f"(or a client of it) is running; pick another instance number")
        if self.config.private_etc and not (self.workdir / "etc").exists():
            shutil.copytree(self.etc, self.workdir / "etc", symlinks=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=self.environment(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            if self.boots == 0:
                self.stop()
            raise Px4SitlError(f"cannot start {self.binary}: {exc}") from exc
        finally:
            log.close()
        self.boots += 1
        if agent_listening:
            self._wait_bound(onboard_local_port(self.instance), self.config.start_timeout)
        elif self.config.wait_heartbeat:
            try:
                self.wait_heartbeat(self.config.start_timeout)
            except Px4SitlError:
                self.keep = True
                self.stop()
                raise
        return self

    def wait_heartbeat(self, timeout: float) -> None:
        """Block until a HEARTBEAT from PX4 arrives on the onboard port (bound briefly, then freed).

        Raises:
            Px4SitlError: PX4 exits or stays silent for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.onboard_port))
            sock.settimeout(0.2)
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    code = None if self.proc is None else self.proc.returncode
                    raise Px4SitlError(f"PX4 exited with code {code} before heartbeating; see {self.log_path}:\n"
                                       f"{self.log_tail(15)}")
                if time.monotonic() > deadline:
                    raise Px4SitlError(f"PX4 sent no heartbeat to 127.0.0.1:{self.onboard_port} within "
                                       f"{timeout:.0f} s; see {self.log_path}")
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    continue
                if _is_heartbeat(data):
                    return

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _kill(self) -> None:
        proc = self.proc
        stop_group(proc, self.config.stop_timeout)
        if proc is not None:
            # the rcS shell and px4-* clients live in the same process group; reap any leftovers
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None

    def reboot(self, params: Mapping[str, float] | None = None) -> Px4Sitl:
        """Stop and start PX4 in the same working directory: saved parameters survive, as on a vehicle.

        ``params`` replaces the boot-time parameters (``None`` keeps them).
        """
        self._kill()
        if params is not None:
            self.config = Px4Config(**{**self.config.__dict__, "params": dict(params)})
        return self.start(agent_listening=_udp_port_bound(self.onboard_port))

    def _wait_bound(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                self.keep = True
                raise Px4SitlError(f"PX4 exited with {self.proc.returncode} while starting; log: {self.log_path}")
            if _udp_port_bound(port):
                return
            time.sleep(0.1)
        raise Px4SitlError(f"PX4 did not open its MAVLink port {port} within {timeout:.0f} s; log: {self.log_path}")

    restart = reboot

    def stop(self) -> None:
        """Stop our PX4 (only its own process group); remove its directory unless :attr:`keep` is set."""
        self._kill()
        if self.keep:
            print(f"PX4 working directory {self.workdir} and log {self.log_path} kept", file=sys.stderr)
        elif self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)



def _param_text(value: float) -> str:
    """A value as ``param set`` reads it: integers without a decimal point (INT32 params reject '1.0')."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**31):
        return str(int(value))
    return repr(float(value))


def _is_heartbeat(data: bytes) -> bool:
    """True for a MAVLink 1 or 2 frame carrying HEARTBEAT (message id 0); no CRC check is needed for liveness."""
    if len(data) >= 10 and data[0] == 0xFD:
        return int.from_bytes(data[7:10], "little") == 0
    if len(data) >= 6 and data[0] == 0xFE:
        return data[5] == 0
    return False


def _udp_port_bound(port: int) -> bool:
    """True when some socket on this machine is bound to the UDP port (read from /proc, no probe packet)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 1 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False
