"""A virtual PX4 flight controller for CI, behaving as PX4 v1.16.0 SITL was recorded to.

Every behaviour here was seen on a real PX4 SITL first (``tests/data/px4-sitl/``, recorded by
``python -m sim.scenarios.px4_record``; its README says what each capture shows). Start it as a
context manager and point the agent at :attr:`VirtualPx4.url`, like at PX4 SITL's onboard link::

    with VirtualPx4(Px4VfcConfig(params={"COM_ARM_AUTH_REQ": 1})) as px4:
        link = mavutil.mavlink_connection(px4.url)      # udpin:127.0.0.1:<port>

What it does, as the recordings show PX4 doing it:

* two UDP links, like ``px4-rc.mavlink``'s onboard and GCS links: the vehicle sends from a port
  of its own to 127.0.0.1:<remote>, and adopts the first localhost peer that talks to it as the
  link's partner (``MavlinkReceiver``); the onboard link's remote is :attr:`url`'s port, the GCS
  link is reached at :attr:`gcs_url` (``udpout:``); HEARTBEATs of other peers are forwarded
  between the links;
* HEARTBEAT at 1 Hz on both links: type 2 (quadrotor), autopilot 12 (PX4), base_mode 29,
  custom_mode 0x03040000 (AUTO/LOITER, "Hold"), system_status 0 (UNINIT) for the first
  ``standby_delay`` seconds, then 3 (STANDBY); armed: base_mode 157, system_status 4;
* STATUSTEXT only on the GCS link (none was ever seen on the onboard link), 50-byte chunks with a
  shared ``id``;
* AUTOPILOT_VERSION as recorded (REQUEST_MESSAGE: the message, then the ACK; the legacy
  REQUEST_AUTOPILOT_CAPABILITIES likewise);
* the PARAM protocol with PX4's names, order, types (INT32 and REAL32 only) and the bytewise
  encoding of INT32 values in ``param_value``; ``_HASH_CHECK`` (UINT32, index 65535) after the
  list; a PARAM_SET whose type differs from the parameter's, or an unknown name, gets no answer;
  a change is announced on both links;
* MAVLink FTP over a PX4-like tree in a temp directory (``/`` is PX4's working directory: ``etc/``
  with the SIH airframe 10040 and rcS as recorded, ``parameters.bson`` holding the parameters that
  differ from their defaults, ``dataman``, ``log/``, ``eeprom/``); one session; ``S`` entries for
  ``.``, ``..`` and symlinks; CalcFileCRC32 is PX4's ``crc32part`` (initial 0, no final XOR); no
  ArduPilot ``@SYS``/``@PARAM`` files (FileNotFound); BurstReadFile streams 239-byte chunks and
  ends with a NAK EOF;
* arming (MAV_CMD_COMPONENT_ARM_DISARM) with PX4's arm authorization exactly as
  ``src/modules/commander/Arming/ArmAuthorization/ArmAuthorization.cpp``: on an arming request
  with ``COM_ARM_AUTH_REQ`` set, COMMAND_LONG 3001 goes to ``(COM_ARM_AUTH_ID, 0)`` on both links
  (confirmation 0, all params 0, retried with confirmation 1..3 as recorded until an ACK from that
  system id); an ACK counts only if addressed to ``(sysid, compid or 0)``, for command 3001, and
  stamped on a **4 ms clock strictly later** than the request (the request leaves just after a step
  begins, ``request_phase``, so an answer sent within ~3.8 ms is ignored every time; on SITL the
  phase varied and sub-millisecond answers were sometimes taken); **the sender of the ACK is not
  checked** (recorded: a forged ACCEPTED from system 77 on the GCS link armed SITL); ACCEPTED arms
  and is valid for ``result_param2`` seconds (re-arming inside the window asks nobody),
  IN_PROGRESS keeps waiting, TEMPORARILY_REJECTED and DENIED (with the reason texts of
  ``progress``) refuse, silence refuses after ``COM_ARM_AUTH_TO`` with "Arm auth: No response";
  the arm command's ACK is ACCEPTED or TEMPORARILY_REJECTED plus
  "Arming denied: Resolve system health failures first"; as PX4's health report runs the checks a
  second time when its result changed and 2 s passed since the last report, a refused attempt may
  make a second request round, as SITL did.

Hooks for tests: :meth:`VirtualPx4.set_param` / :meth:`get_param`, :meth:`armed`,
:meth:`write_file` / :meth:`read_file` (the served tree), :meth:`reboot`, :meth:`set_check_rounds`
(pin the number of check runs to a recording's), and the ``texts``, ``auth_requests``, ``arm_acks``
logs.

What it does not do: fly, estimate, log, run missions or modes, MAVLink signing, the many other
PX4 commands (answered UNSUPPORTED), other pre-arm checks (they always pass), ``../`` path escapes
that PX4's FTP allows (here they are FileNotFound), and the exact ``_HASH_CHECK`` value.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymavlink.dialects.v20 import common as mavlink

DATA_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "px4-sitl"

MAV_TYPE_QUADROTOR = mavlink.MAV_TYPE_QUADROTOR
MAV_AUTOPILOT_PX4 = mavlink.MAV_AUTOPILOT_PX4
BASE_MODE_DISARMED = 29  # recorded: CUSTOM_MODE_ENABLED | AUTO | GUIDED | STABILIZE
SAFETY_ARMED = mavlink.MAV_MODE_FLAG_SAFETY_ARMED
CUSTOM_MODE_HOLD = 0x03040000  # main mode 4 (AUTO), sub mode 3 (LOITER)
MAV_STATE_UNINIT, MAV_STATE_STANDBY, MAV_STATE_ACTIVE = 0, 3, 4
CMD_ARM_AUTH = mavlink.MAV_CMD_ARM_AUTHORIZATION_REQUEST  # 3001
CMD_ARM_DISARM = mavlink.MAV_CMD_COMPONENT_ARM_DISARM
CMD_REQUEST_MESSAGE = mavlink.MAV_CMD_REQUEST_MESSAGE
CMD_REQUEST_CAPS = mavlink.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES
CMD_REQUEST_PROTOCOL = mavlink.MAV_CMD_REQUEST_PROTOCOL_VERSION
RESULT_ACCEPTED, RESULT_TEMP_REJECTED = mavlink.MAV_RESULT_ACCEPTED, mavlink.MAV_RESULT_TEMPORARILY_REJECTED
RESULT_DENIED, RESULT_UNSUPPORTED = mavlink.MAV_RESULT_DENIED, mavlink.MAV_RESULT_UNSUPPORTED
RESULT_FAILED, RESULT_IN_PROGRESS = mavlink.MAV_RESULT_FAILED, mavlink.MAV_RESULT_IN_PROGRESS
PARAM_INT32, PARAM_REAL32, PARAM_UINT32 = 6, 9, 5
SEVERITY_CRITICAL, SEVERITY_INFO = 2, 6
HEALTH_FAILURE_TEXT = "Arming denied: Resolve system health failures first\t"
# vehicle_command_ack_s::ARM_AUTH_DENIED_REASON_* (= MAV_ARM_AUTH_DENIED_REASON), carried in ``progress``
DENIED_TEXTS: dict[int, str | None] = {
    1: None,  # NONE: "Authorizer will send reason to ground station"
    2: "Arm auth: Denied, waypoint {p2} have a invalid value",
    3: "Arm auth: Denied by timeout in authorizer",
    4: "Arm auth: Denied because airspace is in use",
    5: "Arm auth: Denied because of bad weather",
}
LOOP_PERIOD = 0.001


FORWARD_DROP_EVERY = 3  # forwarded TUNNELs: one in three lost (SITL lost more; see _forward)


@dataclass(frozen=True)
class Px4Param:
    name: str
    type: int  # MAV_PARAM_TYPE: 6 INT32 or 9 REAL32
    value: float | int

    def wire(self) -> float:
        """``param_value`` on the wire: an INT32's four bytes reinterpreted as a float (bytewise)."""
        if self.type == PARAM_REAL32:
            return float(self.value)
        return float(struct.unpack("<f", struct.pack("<i", int(self.value)))[0])


def int_from_wire(value: float) -> int:
    return int(struct.unpack("<i", struct.pack("<f", value))[0])


def px4_crc32(data: bytes, crc: int = 0) -> int:
    """PX4's ``crc32part``: the CRC-32 table walk from ``crc`` without zlib's pre- and post-inversion."""
    return zlib.crc32(data, crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


@dataclass
class Px4VfcConfig:
    sysid: int = 1  # rcS: MAV_SYS_ID = instance + 1
    compid: int = 1
    params: Mapping[str, float] = field(default_factory=dict)  # set at boot, like PX4_PARAM_<NAME>
    files: Mapping[str, bytes] = field(default_factory=dict)  # extra or replaced files under the FTP root
    data_dir: Path = DATA_DIR  # the recordings the vehicle is built from
    standby_delay: float = 3.0  # recorded: system_status 0 -> 3 about 3.0 s after the first heartbeat
    heartbeat_period: float = 1.0
    step: float = 0.004  # SITL's lockstep: SIH at 250 Hz; hrt_absolute_time moves in 4 ms steps
    request_phase: float = 0.05  # where in its 4 ms step the auth request leaves, as a fraction of the step:
    # near 0 an answer must come a whole step later; SITL's phase varied (recorded: answers after 0.1 ms
    # were accepted once in three, after 1.6-2.8 ms sometimes, after 3.7 ms or more always)
    retry_first: float = 1.02  # recorded: first re-send of the 3001 request about 1.02 s after it
    retry_period: float = 0.515  # then every ~0.515 s, with confirmation 1, 2, 3
    retries: int = 3
    report_interval: float = 2.0  # HealthAndArmingChecks Report: _min_reporting_interval
    param_burst: int = 5  # PARAM_VALUEs per 10 ms (recorded: 904 in 2.0 s)
    ports: tuple[int, int] = (0, 0)  # (onboard remote, GCS local); 0 picks a free port
    # where the GCS link sends until a peer talks to it (SITL: 127.0.0.1:14550 for every instance); 0 picks
    # a free port, so a ground tool can listen there (``gcs_listen_url``) and stay PX4's partner across runs
    gcs_remote: int = 0


class _Link:
    """One PX4 MAVLink UDP instance: bound on a port of its own, sending to its partner."""

    def __init__(self, name: str, local_port: int, remote_port: int | None, sysid: int, compid: int) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", local_port))
        self.sock.setblocking(False)
        self.local_port = int(self.sock.getsockname()[1])
        self.remote: tuple[str, int] | None = ("127.0.0.1", remote_port) if remote_port else None
        self.partner_known = False
        self.rx = mavlink.MAVLink(None, sysid, compid)
        self.rx.robust_parsing = True
        self.tx = mavlink.MAVLink(None, sysid, compid)
        self.param_queue: deque[int] = deque()
        self.hash_pending = False
        self.seen: set[tuple[int, int]] = set()  # MavlinkReceiver::component_was_seen: who spoke on this link
        self.forwarded = 0  # TUNNELs forwarded out of this link (every FORWARD_DROP_EVERY-th is lost)

    def was_seen(self, system: int, component: int) -> bool:
        if system == 0:
            return True
        return any(s == system and (component == 0 or c == component) for s, c in self.seen)

    def send(self, msg: Any, src: tuple[int, int] | None = None) -> None:
        if self.remote is None:
            return
        tx = self.tx
        if src is not None:
            tx = mavlink.MAVLink(None, src[0], src[1])
        frame = bytes(msg.pack(tx))
        if src is None:
            self.tx.seq = (self.tx.seq + 1) % 256
        with contextlib.suppress(OSError):
            self.sock.sendto(frame, self.remote)

    def send_frame(self, frame: bytes) -> None:
        if self.remote is not None:
            with contextlib.suppress(OSError):
                self.sock.sendto(frame, self.remote)


@dataclass
class _AuthRequest:
    """One COMMAND_LONG 3001 in MavlinkCommandSender's list: re-sent until acked by its target."""

    sent_at: float
    confirmation: int = 0
    acked: bool = False


class VirtualPx4:
    """Start with ``with VirtualPx4(Px4VfcConfig(...)) as px4:``; the agent connects to ``px4.url``."""

    def __init__(self, config: Px4VfcConfig | None = None) -> None:
        self.config = config or Px4VfcConfig()
        self.sysid, self.compid = self.config.sysid, self.config.compid
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sel = selectors.DefaultSelector()
        recorded = json.loads((self.config.data_dir / "param-list.json").read_text())
        self._defaults = self._load_defaults(recorded)
        self._order = list(self._defaults)
        self._values: dict[str, Px4Param] = dict(self._defaults)
        boot = json.loads((self.config.data_dir / "boot.json").read_text())
        self._version = boot["summary"]["autopilot_version"]
        self._baseline_saved = self._load_baseline_saved(recorded)
        # SITL's working directory holds ``etc`` as a symlink to the build's etc/ (listed as "S" over FTP)
        self._base = Path(tempfile.mkdtemp(prefix="flightseal-vpx4-"))
        self.root = self._base / "rootfs"
        self._etc = self._base / "etc"
        self._links: list[_Link] = []
        self._onboard_port = 0
        self._gcs_remote = 0
        # vehicle state (guarded by _lock)
        self.boot_time = 0.0
        self._armed = False
        self._text_id = 0
        self._next_heartbeat = 0.0
        self._auth_state = "IDLE"  # IDLE, WAITING, WAITING_WITH_ACK, APPROVED
        self._auth_req_time = 0.0
        self._auth_timeout = 0.0
        self._acks: deque[tuple[float, Any]] = deque(maxlen=4)  # vehicle_command_ack: ORB_QUEUE_LENGTH 4
        self._requests: list[_AuthRequest] = []
        self._request_due: float | None = None
        self._down_until: float | None = None
        self._forced_rounds: int | None = None
        self.boots = 1
        self._arming: dict[str, Any] | None = None  # the arm command being decided
        self._commander_queue: deque[tuple[_Link, Any]] = deque()
        self._last_report = 0.0
        self._reported_failure = False
        self._last_result_failed = False
        self._unreported = False
        self._ftp_fd: Any = None
        self._ftp_size = 0
        self._ftp_last_reply: tuple[int, bytes, _Link] | None = None
        self._bursts: list[dict[str, Any]] = []
        # test observability
        self.texts: deque[tuple[int, str]] = deque(maxlen=4096)
        self.auth_requests: deque[tuple[float, str, int]] = deque(maxlen=1024)  # (t, link, confirmation)
        self.arm_acks: deque[int] = deque(maxlen=1024)

    # ---- data from the recordings
    def _load_defaults(self, recorded: dict[str, Any]) -> dict[str, Px4Param]:
        """The recorded list, with the recorder's boot presets put back to the build's defaults."""
        presets = recorded.get("presets", {})
        out: dict[str, Px4Param] = {}
        for entry in recorded["params"]:
            value = entry["value"]
            if entry["name"] in presets and entry.get("meta_default") is not None:
                value = entry["meta_default"]
            value = int(value) if entry["type"] == PARAM_INT32 else float(value)
            out[entry["name"]] = Px4Param(entry["name"], entry["type"], value)
        return out

    def _load_baseline_saved(self, recorded: dict[str, Any]) -> set[str]:
        """Names PX4 saved into parameters.bson at first boot (rcS's calibration ids, SYS_AUTOSTART ...)."""
        ftp = json.loads((self.config.data_dir / "ftp.json").read_text())
        entries = ftp["summary"]["files"]["parameters.bson"]["bson"]["entries"]
        presets = set(recorded.get("presets", {}))
        return {name for name in entries if name not in presets and name != "COM_ARM_AUTH_TO"}

    # ---- lifecycle
    def start(self) -> VirtualPx4:
        self._build_tree()
        onboard_remote = self._onboard_port = self.config.ports[0] or _free_udp_port()
        self._gcs_remote = self.config.gcs_remote or _free_udp_port()
        self._links = [
            _Link("onboard", 0, onboard_remote, self.sysid, self.compid),
            _Link("gcs", self.config.ports[1], self._gcs_remote, self.sysid, self.compid),
        ]
        for link in self._links:
            self._sel.register(link.sock, selectors.EVENT_READ, link)
        with self._lock:
            for name, value in self.config.params.items():
                self._set(name, value, announce=False)
            self.boot_time = time.monotonic()
            self._next_heartbeat = self.boot_time
            self._last_report = self.boot_time - self.config.report_interval
            self._write_bson()
        self._thread = threading.Thread(target=self._run, name="virtual-px4", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._ftp_close()
            for link in self._links:
                with contextlib.suppress(Exception):
                    self._sel.unregister(link.sock)
                link.sock.close()
        with contextlib.suppress(Exception):
            self._sel.close()
        shutil.rmtree(self._base, ignore_errors=True)

    def __enter__(self) -> VirtualPx4:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- public helpers for tests
    @property
    def url(self) -> str:
        """The agent's link: it listens where PX4's onboard link sends (like 14540 for SITL instance 0)."""
        return f"udpin:127.0.0.1:{self._onboard_port}"

    onboard_url = url

    @property
    def gcs_port(self) -> int:
        return self._links[1].local_port

    @property
    def gcs_url(self) -> str:
        return f"udpout:127.0.0.1:{self.gcs_port}"

    @property
    def gcs_listen_url(self) -> str:
        """Where a ground station listens for the GCS link before it has a partner (SITL's 14550)."""
        return f"udpin:127.0.0.1:{self._gcs_remote}"

    def reboot(self, gap: float = 1.0) -> None:
        """Restart as PX4 SITL does in its own directory: ``gap`` seconds of silence (what arrives is lost),
        then a fresh boot (disarmed, no approval, UNINIT for ``standby_delay``) with the parameters and
        files kept; the links forget their partners, as a new PX4 process would."""
        with self._lock:
            self._down_until = time.monotonic() + gap
            self.boots += 1
            self._armed = False
            self._auth_state = "IDLE"
            self._acks.clear()
            self._requests = []
            self._request_due = None
            self._arming = None
            self._commander_queue.clear()
            self._ftp_close()
            self._ftp_last_reply = None
            for link in self._links:
                link.param_queue.clear()
                link.hash_pending = False
                link.partner_known = False
                if link.name == "gcs":
                    link.remote = None

    def set_check_rounds(self, rounds: int | None) -> None:
        """How many times a refused arming request runs the checks: None models PX4's health report (a
        second run when the result changed and 2 s passed since the last report, so it depends on the
        timing of earlier attempts); 1 or 2 fixes it, to replay a recording whose rounds are known."""
        with self._lock:
            self._forced_rounds = rounds

    def armed(self) -> bool:
        with self._lock:
            return self._armed

    def set_param(self, name: str, value: float) -> None:
        """Change a parameter as if a GCS had (announced on both links, saved to parameters.bson).

        Raises:
            KeyError: PX4 has no such (used) parameter.
        """
        with self._lock:
            if name not in self._values:
                raise KeyError(f"no PX4 parameter {name}")
            self._set(name, value, announce=True)

    def get_param(self, name: str) -> int | float | None:
        with self._lock:
            p = self._values.get(name)
            return None if p is None else p.value

    def param_names(self) -> list[str]:
        return list(self._order)

    def file_path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def write_file(self, path: str, data: bytes) -> None:
        """Replace (or add) a file the vehicle serves over FTP, e.g. to tamper with the airframe."""
        target = self.file_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def read_file(self, path: str) -> bytes:
        return self.file_path(path).read_bytes()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate():
                    return True
            time.sleep(0.005)
        with self._lock:
            return predicate()

    # ---- the FTP tree
    def _build_tree(self) -> None:
        self._etc.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "etc").symlink_to(self._etc, target_is_directory=True)
        ftp_files = self.config.data_dir / "ftp-files"
        recorded = {"etc/init.d-posix/airframes/10040_sihsim_quadx": "etc_init.d-posix_airframes_10040_sihsim_quadx",
                    "etc/init.d-posix/rcS": "etc_init.d-posix_rcS",
                    "etc/init.d/rc.mc_defaults": "etc_init.d_rc.mc_defaults"}
        for path, name in recorded.items():
            self.write_file(path, (ftp_files / name).read_bytes())
        for d in ("log", "eeprom", "etc/extras"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        with (self.root / "dataman").open("wb") as f:
            f.truncate(1208528)  # recorded size, sparse
        for path, data in self.config.files.items():
            self.write_file(path, data)

    def _write_bson(self) -> None:
        """parameters.bson as PX4 writes it: the saved parameters, by name, INT32 as int32, floats as double."""
        names = sorted(n for n in self._values
                       if n in self._baseline_saved or self._values[n].value != self._defaults[n].value)
        body = b""
        for n in names:
            p = self._values[n]
            if p.type == PARAM_INT32:
                body += b"\x10" + n.encode() + b"\0" + struct.pack("<i", int(p.value))
            else:
                body += b"\x01" + n.encode() + b"\0" + struct.pack("<d", float(p.value))
        doc = struct.pack("<i", len(body) + 5) + body + b"\0"
        for name in ("parameters.bson", "parameters_backup.bson"):
            (self.root / name).write_bytes(doc)

    # ---- main loop
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._sel.select(timeout=LOOP_PERIOD)
            except (OSError, ValueError):
                events = []
            with self._lock:
                now = time.monotonic()
                if self._down_until is not None:
                    self._while_down(events, now)
                    continue
                for key, _ in events:
                    self._receive(key.data, now)
                self._timers(now)

    def _while_down(self, events: list[tuple[selectors.SelectorKey, int]], now: float) -> None:
        """Rebooting: nothing is answered or sent; at the end the vehicle boots again."""
        for key, _ in events:
            with contextlib.suppress(OSError):
                while key.data.sock.recvfrom(65536):
                    pass
        if self._down_until is not None and now >= self._down_until:
            self._down_until = None
            self.boot_time = now
            self._next_heartbeat = now
            self._last_report = now - self.config.report_interval
            self._last_result_failed = False
            self._unreported = False

    def hrt(self, now: float) -> float:
        """hrt_absolute_time() under SITL's lockstep: seconds since boot, in whole 4 ms steps."""
        step = self.config.step
        return math.floor((now - self.boot_time) / step) * step

    def _receive(self, link: _Link, now: float) -> None:
        for _ in range(64):
            try:
                data, addr = link.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if addr[0] != "127.0.0.1":
                continue
            if not link.partner_known:  # MavlinkReceiver: the first localhost sender becomes the partner
                link.remote = addr
                link.partner_known = True
            for msg in link.rx.parse_buffer(data) or []:
                if msg.get_type() != "BAD_DATA":
                    link.seen.add((msg.get_srcSystem(), msg.get_srcComponent()))
                    self._handle(link, msg, now)

    def _timers(self, now: float) -> None:
        if now >= self._next_heartbeat:
            self._next_heartbeat += self.config.heartbeat_period
            hb = self._heartbeat(now)
            for link in self._links:
                link.send(hb)
        for link in self._links:
            for _ in range(min(self.config.param_burst, len(link.param_queue))):
                self._send_param(link, link.param_queue.popleft())
            if link.hash_pending and not link.param_queue:
                link.hash_pending = False
                link.send(mavlink.MAVLink_param_value_message(b"_HASH_CHECK", self._hash_check(), PARAM_UINT32,
                                                              len(self._order), 65535))
        self._ftp_bursts()
        self._auth_request_out(now)
        self._auth_retries(now)
        self._commander(now)

    def _heartbeat(self, now: float) -> Any:
        status = MAV_STATE_UNINIT if now - self.boot_time < self.config.standby_delay else MAV_STATE_STANDBY
        base = BASE_MODE_DISARMED
        if self._armed:
            base |= SAFETY_ARMED
            status = MAV_STATE_ACTIVE
        return mavlink.MAVLink_heartbeat_message(MAV_TYPE_QUADROTOR, MAV_AUTOPILOT_PX4, base, CUSTOM_MODE_HOLD,
                                                 status, 3)

    def _text(self, severity: int, text: str) -> None:
        """STATUSTEXT on the GCS link only, in 50-byte chunks sharing an ``id`` when longer (recorded)."""
        self.texts.append((severity, text))
        raw = text.encode()
        chunks = [raw[i:i + 50] for i in range(0, max(len(raw), 1), 50)]
        self._text_id = self._text_id % 0xFFFF + 1
        ident = self._text_id if len(chunks) > 1 else 0
        for seq, chunk in enumerate(chunks):
            self._links[1].send(mavlink.MAVLink_statustext_message(severity, chunk, ident, seq))

    # ---- messages in
    def _handle(self, link: _Link, msg: Any, now: float) -> None:
        mtype = msg.get_type()
        target_sys = getattr(msg, "target_system", None)
        target_comp = getattr(msg, "target_component", 0)
        if (target_sys, target_comp) != (self.sysid, self.compid):  # Mavlink::forward_message keeps only its own
            self._forward(link, msg)
        if mtype in ("COMMAND_LONG", "COMMAND_INT"):
            broadcast_ok = msg.command in (CMD_REQUEST_CAPS, CMD_REQUEST_PROTOCOL) and target_sys == 0
            if broadcast_ok or (target_sys == self.sysid and target_comp in (self.compid, 0)):
                self._command(link, msg, now)
            return
        if target_sys != self.sysid or target_comp not in (self.compid, 0):
            return
        if mtype == "COMMAND_ACK":
            self._on_command_ack(link, msg, now)
        elif mtype == "PARAM_REQUEST_LIST":
            link.param_queue.extend(range(len(self._order)))
            link.hash_pending = True
        elif mtype == "PARAM_REQUEST_READ":
            self._param_read(link, msg)
        elif mtype == "PARAM_SET":
            self._param_set(msg)
        elif mtype == "FILE_TRANSFER_PROTOCOL":
            self._ftp(link, msg)

    def _forward(self, src: _Link, msg: Any) -> None:
        """``-f`` forwarding (``Mavlink::forward_message``): what is not for PX4 itself (system *and*
        component) goes out on the other links where its target was heard before. Recorded
        (``forwarding.json``): PX4 SITL lost 30-75 % of forwarded TUNNELs, in bursts and one by one;
        every FORWARD_DROP_EVERY-th forwarded TUNNEL is lost here, so the challenge's resends are used."""
        frame = bytes(msg.get_msgbuf())
        target = (int(getattr(msg, "target_system", 0)), int(getattr(msg, "target_component", 0)))
        for link in self._links:
            if link is src or not link.was_seen(*target):
                continue
            if msg.get_type() == "TUNNEL":
                link.forwarded += 1
                if link.forwarded % FORWARD_DROP_EVERY == 0:
                    continue
            link.send_frame(frame)

    def _ack(self, link: _Link, msg: Any, result: int) -> None:
        link.send(mavlink.MAVLink_command_ack_message(msg.command, result, 0, 0, msg.get_srcSystem(),
                                                      msg.get_srcComponent()))

    def _command(self, link: _Link, msg: Any, now: float) -> None:
        cmd = msg.command
        if (cmd == CMD_REQUEST_MESSAGE and int(msg.param1) == mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION) \
                or cmd == CMD_REQUEST_CAPS:
            link.send(self._autopilot_version())  # recorded: the message first, then the ACK
            self._ack(link, msg, RESULT_ACCEPTED)
        elif cmd == CMD_REQUEST_MESSAGE and int(msg.param1) == mavlink.MAVLINK_MSG_ID_HEARTBEAT:
            link.send(self._heartbeat(now))
            self._ack(link, msg, RESULT_ACCEPTED)
        elif cmd == CMD_REQUEST_MESSAGE:
            self._ack(link, msg, RESULT_DENIED)
        elif cmd == CMD_REQUEST_PROTOCOL:
            self._ack(link, msg, RESULT_ACCEPTED)
            link.send(mavlink.MAVLink_protocol_version_message(200, 100, 200, [0] * 8, [0] * 8))
        elif cmd == CMD_ARM_DISARM:
            self._commander_queue.append((link, msg))  # the commander thread, blocked while it waits
        else:
            self._ack(link, msg, RESULT_UNSUPPORTED)

    def _autopilot_version(self) -> Any:
        v = self._version
        return mavlink.MAVLink_autopilot_version_message(
            v["capabilities"], v["flight_sw_version"], v["middleware_sw_version"], v["os_sw_version"],
            v["board_version"], v["flight_custom_version"], v["middleware_custom_version"], v["os_custom_version"],
            v["vendor_id"], v["product_id"], v["uid"], v["uid2"])

    # ---- the commander: arming and arm authorization
    def _commander(self, now: float) -> None:
        if self._arming is not None:
            self._auth_wait(now)
            return
        self._auth_update(now)
        self._periodic_report(now)
        if self._commander_queue:
            link, msg = self._commander_queue.popleft()
            self._arm_disarm(link, msg, now)

    def _arm_disarm(self, link: _Link, msg: Any, now: float) -> None:
        if int(msg.param1) == 0:
            was = self._armed
            self._armed = False
            self._ack(link, msg, RESULT_ACCEPTED)
            if was:
                self._text(SEVERITY_INFO, "Disarmed by external command\t")
            return
        if self._armed:
            self._ack(link, msg, RESULT_ACCEPTED)
            return
        self._arming = {"link": link, "msg": msg, "round": 1}
        if not self._param_int("COM_ARM_AUTH_REQ"):
            self._arming_decided(now, True)
            return
        self._auth_check_start(now)

    def _auth_check_start(self, now: float) -> None:
        """``arm_auth_check``: per COM_ARM_AUTH_MET, decide at once or start a request and wait."""
        method = self._param_int("COM_ARM_AUTH_MET")
        if self._auth_state == "APPROVED":
            self._auth_check_done(now, True)
            return
        if self._auth_state != "IDLE":  # still waiting (two-arm method): TEMPORARILY_REJECTED, refused
            self._auth_check_done(now, False)
            return
        self._auth_request(now)
        if method == 1:  # two-arm: ask and refuse now; a later arm finds APPROVED
            self._text(6, "Arm auth: Requesting authorization...")
            self._auth_check_done(now, False)
            return
        assert self._arming is not None
        self._arming["waiting"] = True

    def _auth_request(self, now: float) -> None:
        """``arm_auth_request_msg_send``: COMMAND_LONG 3001 to (COM_ARM_AUTH_ID, 0) on every link."""
        step = self.config.step
        hrt = self.hrt(now)
        # the request is published at the start of the next step and leaves ``request_phase`` into it
        stamp = hrt + step
        self._auth_req_time = stamp
        self._auth_timeout = stamp + float(self._values["COM_ARM_AUTH_TO"].value)
        self._auth_state = "WAITING"
        self._request_due = self.boot_time + stamp + self.config.request_phase * step

    def _auth_request_out(self, now: float) -> None:
        if self._request_due is not None and now >= self._request_due:
            self._request_due = None
            self._requests.append(_AuthRequest(sent_at=now))
            self._send_auth_request(0)

    def _send_auth_request(self, confirmation: int) -> None:
        msg = mavlink.MAVLink_command_long_message(self._param_int("COM_ARM_AUTH_ID"), 0, CMD_ARM_AUTH,
                                                   confirmation, 0, 0, 0, 0, 0, 0, 0)
        t = time.monotonic() - self.boot_time
        for link in self._links:
            self.auth_requests.append((t, link.name, confirmation))
            link.send(msg)
        if self._param_int("COM_ARM_AUTH_ID") == self.sysid and confirmation == 0:
            # recorded (README, "on PX4's own system id"): the commander acks the request addressed to its own
            # system as UNSUPPORTED, to nobody; the arm authorization never takes it (target 0)
            unsupported = mavlink.MAVLink_command_ack_message(CMD_ARM_AUTH, mavlink.MAV_RESULT_UNSUPPORTED, 0, 0, 0, 0)
            for link in self._links:
                link.send(unsupported)

    def _auth_retries(self, now: float) -> None:
        """MavlinkCommandSender's re-sends as recorded: ~1.02 s, then every ~0.515 s, confirmation 1..3.

        Recorded but not explained by the source we read: once the vehicle armed, no re-send came after
        the first, so the model stops there too.
        """
        keep: list[_AuthRequest] = []
        for req in self._requests:
            if req.acked:
                continue
            due = req.sent_at + self.config.retry_first + self.config.retry_period * req.confirmation
            if now >= due:
                if req.confirmation >= self.config.retries or (self._armed and req.confirmation >= 1):
                    continue
                req.confirmation += 1
                self._send_auth_request(req.confirmation)
            keep.append(req)
        self._requests = keep

    def _on_command_ack(self, link: _Link, msg: Any, now: float) -> None:
        """``handle_message_command_ack``: target checked (done by the caller), sender NOT checked."""
        if msg.command == CMD_ARM_AUTH:
            # MavlinkCommandSender: an ack from the request's target system stops one item's re-sends
            authorizer = self._param_int("COM_ARM_AUTH_ID")
            if msg.get_srcSystem() == authorizer:
                for req in self._requests:
                    if not req.acked:
                        req.acked = True
                        break
        self._acks.append((self.hrt(now), msg))

    def _auth_update(self, now: float, waiting_loop: bool = False) -> None:
        """``arm_auth_update``: expire an approval; while waiting, take the next ack that qualifies."""
        hrt = self.hrt(now)
        if self._auth_state == "APPROVED":
            if hrt > self._auth_timeout:
                self._auth_state = "IDLE"
            return
        if self._auth_state not in ("WAITING", "WAITING_WITH_ACK"):
            self._acks.clear()
            return
        while self._acks:
            stamp, ack = self._acks.popleft()
            if ack.command != CMD_ARM_AUTH or ack.target_system != self.sysid or not stamp > self._auth_req_time:
                continue
            if ack.result == RESULT_IN_PROGRESS:
                self._auth_state = "WAITING_WITH_ACK"
                continue
            if ack.result == RESULT_ACCEPTED:
                self._text(SEVERITY_INFO, f"Arm auth: Authorized for the next {int(ack.result_param2)} seconds")
                self._auth_state = "APPROVED"
                self._auth_timeout = stamp + int(ack.result_param2)
                return
            if ack.result == RESULT_TEMP_REJECTED:
                self._text(SEVERITY_CRITICAL, "Arm auth: Temporarily rejected")
                self._auth_state = "IDLE"
                return
            reason = DENIED_TEXTS.get(int(ack.progress), "Arm auth: Denied")
            if reason is not None:
                self._text(SEVERITY_CRITICAL, reason.format(p2=int(ack.result_param2)))
            self._auth_state = "IDLE"
            return
        if hrt > self._auth_timeout and not waiting_loop:
            self._text(SEVERITY_CRITICAL, "Arm auth: No response")
            self._auth_state = "IDLE"

    def _auth_wait(self, now: float) -> None:
        """The busy wait of ``_auth_method_arm_req_check`` (the commander does nothing else meanwhile)."""
        assert self._arming is not None
        if not self._arming.get("waiting"):
            return
        hrt = self.hrt(now)
        if hrt < self._auth_timeout:
            self._auth_update(now, waiting_loop=True)
            if self._auth_state in ("WAITING", "WAITING_WITH_ACK"):
                return
        elif self._auth_state in ("WAITING", "WAITING_WITH_ACK"):
            self._auth_state = "IDLE"
            self._text(SEVERITY_CRITICAL, "Arm auth: No response")
        self._arming["waiting"] = False
        self._auth_check_done(now, self._auth_state == "APPROVED")

    def _auth_check_done(self, now: float, ok: bool) -> None:
        """One run of the arming checks ended; PX4's Report may run them once more (see the docstring)."""
        assert self._arming is not None
        changed = (not ok) != self._last_result_failed
        self._last_result_failed = not ok
        if self._report(now, changed) and not ok and self._arming["round"] == 1:
            self._arming["round"] = 2
            self._auth_check_start(now)
            return
        self._arming_decided(now, ok)

    def _report(self, now: float, changed: bool) -> bool:
        """``Report::report``: at most every 2 s, and only when the results differ from the last report."""
        has_difference = self._unreported or changed
        if self._forced_rounds is not None:
            return self._forced_rounds == 2
        if now < self._last_report + self.config.report_interval:
            if has_difference:
                self._unreported = True
            return False
        if not has_difference:
            return False
        self._last_report = now
        self._unreported = False
        return True

    def _periodic_report(self, now: float) -> None:
        """The commander's periodic checks (not an arming request: arm auth is not run, so they pass)."""
        changed = self._last_result_failed
        self._last_result_failed = False
        self._report(now, changed)

    def _arming_decided(self, now: float, ok: bool) -> None:
        assert self._arming is not None
        link, msg = self._arming["link"], self._arming["msg"]
        self._arming = None
        if ok:
            self._armed = True
            self.arm_acks.append(RESULT_ACCEPTED)
            self._ack(link, msg, RESULT_ACCEPTED)
            self._text(SEVERITY_INFO, "Armed by external command\t")
            hb = self._heartbeat(now)
            for lk in self._links:
                lk.send(hb)
        else:
            self.arm_acks.append(RESULT_TEMP_REJECTED)
            self._ack(link, msg, RESULT_TEMP_REJECTED)
            self._text(SEVERITY_CRITICAL, HEALTH_FAILURE_TEXT)

    # ---- parameters
    def _param_int(self, name: str) -> int:
        return int(self._values[name].value)

    def _set(self, name: str, value: float, announce: bool) -> None:
        p = self._values.get(name)
        if p is None:
            raise KeyError(f"no PX4 parameter {name}")
        new = Px4Param(name, p.type, int(value) if p.type == PARAM_INT32 else float(struct.unpack(
            "<f", struct.pack("<f", float(value)))[0]))
        self._values[name] = new
        if self.root.exists():
            self._write_bson()
        if announce:
            for link in self._links:
                self._send_param(link, self._order.index(name))

    def _send_param(self, link: _Link, index: int) -> None:
        p = self._values[self._order[index]]
        link.send(mavlink.MAVLink_param_value_message(p.name.encode(), p.wire(), p.type, len(self._order), index))

    def _param_read(self, link: _Link, msg: Any) -> None:
        if msg.param_index >= 0:
            if msg.param_index < len(self._order):
                self._send_param(link, msg.param_index)
            return
        name = msg.param_id
        if name in self._values:
            self._send_param(link, self._order.index(name))

    def _param_set(self, msg: Any) -> None:
        """PARAM_SET: the type must be the parameter's (else no answer, as recorded); INT32 is bytewise."""
        p = self._values.get(msg.param_id)
        if p is None or msg.param_type != p.type:
            return
        value = int_from_wire(msg.param_value) if p.type == PARAM_INT32 else msg.param_value
        self._set(p.name, value, announce=True)

    def _hash_check(self) -> float:
        """``param_hash_check``'s algorithm (CRC over names and values); PX4 leaves out volatile parameters,
        which we cannot tell, so the value is not a real vehicle's."""
        crc = 0
        for name in self._order:
            p = self._values[name]
            crc = px4_crc32(name.encode(), crc)
            crc = px4_crc32(struct.pack("<f", p.wire()), crc)
        return float(struct.unpack("<f", struct.pack("<I", crc))[0])

    # ---- MAVLink FTP (mavlink_ftp.cpp)
    def _ftp(self, link: _Link, msg: Any) -> None:
        payload = bytes(msg.payload)
        seq, session, opcode, size, _req, _burst, offset = struct.unpack("<HBBBBBxI", payload[:12])
        data = payload[12:12 + min(size, 239)]
        last = self._ftp_last_reply
        if last is not None and last[0] == (seq + 1) & 0xFFFF:  # a resent request: resend the last reply
            last[2].send(mavlink.MAVLink_file_transfer_protocol_message(0, msg.get_srcSystem(),
                                                                         msg.get_srcComponent(), list(last[1])))
            return
        self._ftp_last_reply = None
        out = b""
        err: tuple[int, int] | None = None
        reply_session = session
        if size > 239:
            err = (3, 0)
        elif opcode == 0:
            pass
        elif opcode == 1:  # TerminateSession
            if session != 0 or self._ftp_fd is None:
                err = (4, 0)
            else:
                self._ftp_close()
        elif opcode == 2:  # ResetSessions
            self._ftp_close()
        elif opcode == 3:
            out, err = self._ftp_list(_cstr(data), offset)
        elif opcode in (4, 6, 11):
            out, err = self._ftp_open(_cstr(data), opcode)
            reply_session = 0
        elif opcode == 5:
            out, err = self._ftp_read(session, offset)
        elif opcode == 7:
            err = self._ftp_write(session, offset, data)
        elif opcode == 14:
            out, err = self._ftp_crc(_cstr(data))
        elif opcode == 15:
            if (session != 0 and self._ftp_fd is None) or self._ftp_fd is None:
                err = (4, 0)
            else:
                self._bursts = [{"link": link, "seq": (seq + 1) & 0xFFFF, "offset": offset,
                                 "to": (msg.get_srcSystem(), msg.get_srcComponent()), "sent": 0}]
                return
        elif opcode in (8, 9, 10, 12, 13):
            err = self._ftp_path_op(opcode, data, offset)
        else:
            err = (7, 0)
        if err is None:
            reply = struct.pack("<HBBBBBxI", (seq + 1) & 0xFFFF, reply_session, 128, len(out), opcode, 0, offset) + out
        else:
            body = bytes([err[0]]) + (bytes([err[1]]) if err[0] == 2 else b"")
            reply = struct.pack("<HBBBBBxI", (seq + 1) & 0xFFFF, reply_session, 129, len(body), opcode, 0,
                                offset) + body
        payload_out = reply.ljust(251, b"\0")
        if len(reply) - 12 <= 4:
            self._ftp_last_reply = ((seq + 1) & 0xFFFF, payload_out, link)
        link.send(mavlink.MAVLink_file_transfer_protocol_message(0, msg.get_srcSystem(), msg.get_srcComponent(),
                                                                 list(payload_out)))

    def _ftp_resolve(self, path: str) -> Path | None:
        """PX4 joins "." and the path; a path that leaves the tree is refused here (PX4 would allow ``../``)."""
        full = (self.root / path.lstrip("/")).resolve() if path else self.root.resolve()
        for root in (self.root.resolve(), self._etc.resolve()):
            if full == root or root in full.parents:
                return full
        return None

    def _ftp_list(self, path: str, offset: int) -> tuple[bytes, tuple[int, int] | None]:
        where = self._ftp_resolve(path)
        if where is None or not where.is_dir():
            return b"", (10, 0)
        entries = [b"S", b"S"]  # "." and ".."
        for entry in sorted(os.scandir(where), key=lambda e: e.name):
            if entry.is_symlink():
                entries.append(b"S")
            elif entry.is_dir():
                entries.append(b"D" + entry.name.encode())
            elif entry.is_file():
                entries.append(b"F" + entry.name.encode() + b"\t" + str(entry.stat().st_size).encode())
            else:
                entries.append(b"S")
        out = b""
        for e in entries[offset:]:
            if len(out) + len(e) + 1 > 239:
                break
            out += e + b"\0"
        if not out:
            return b"", (6, 0)
        return out, None

    def _ftp_open(self, path: str, opcode: int) -> tuple[bytes, tuple[int, int] | None]:
        if self._ftp_fd is not None:
            return b"", (5, 0)
        where = self._ftp_resolve(path)
        if where is None:
            return b"", (10, 0)
        fd: Any
        try:
            if opcode == 4:
                fd = where.open("rb")
            elif opcode == 6:
                fd = where.open("w+b")
            else:
                fd = where.open("r+b") if where.exists() else where.open("w+b")
        except FileNotFoundError:
            return b"", (10, 0)
        except OSError as exc:
            return b"", (2, exc.errno or 0)
        self._ftp_fd = fd
        self._ftp_size = where.stat().st_size
        return struct.pack("<I", self._ftp_size if opcode != 6 else 0), None

    def _ftp_close(self) -> None:
        if self._ftp_fd is not None:
            with contextlib.suppress(OSError):
                self._ftp_fd.close()
        self._ftp_fd = None
        self._bursts = []

    def _ftp_read(self, session: int, offset: int) -> tuple[bytes, tuple[int, int] | None]:
        if session != 0 or self._ftp_fd is None:
            return b"", (4, 0)
        if offset >= self._ftp_size:
            return b"", (6, 0)
        self._ftp_fd.seek(offset)
        return bytes(self._ftp_fd.read(239)), None

    def _ftp_write(self, session: int, offset: int, data: bytes) -> tuple[int, int] | None:
        if session != 0 or self._ftp_fd is None:
            return (4, 0)
        try:
            self._ftp_fd.seek(offset)
            self._ftp_fd.write(data)
            self._ftp_fd.flush()
        except OSError as exc:
            return (2, exc.errno or 0)
        return None

    def _ftp_crc(self, path: str) -> tuple[bytes, tuple[int, int] | None]:
        where = self._ftp_resolve(path)
        if where is None or not where.is_file():
            return b"", (10, 0)
        crc = 0
        with where.open("rb") as f:
            while chunk := f.read(65536):
                crc = px4_crc32(chunk, crc)
        return struct.pack("<I", crc), None

    def _ftp_path_op(self, opcode: int, data: bytes, offset: int) -> tuple[int, int] | None:
        parts = data.split(b"\0")
        where = self._ftp_resolve(parts[0].decode(errors="replace"))
        if where is None:
            return (10, 0)
        try:
            if opcode == 8:
                where.unlink()
            elif opcode == 9:
                where.mkdir()
            elif opcode == 10:
                where.rmdir()
            elif opcode == 12:
                os.truncate(where, offset)
            else:
                other = self._ftp_resolve(parts[1].decode(errors="replace") if len(parts) > 1 else "")
                if other is None:
                    return (10, 0)
                where.rename(other)
        except FileNotFoundError:
            return (10, 0)
        except FileExistsError:
            return (8, 0)
        except OSError as exc:
            return (2, exc.errno or 0)
        return None

    def _ftp_bursts(self) -> None:
        """The FTP stream: 239-byte ACKs from the offset, then a NAK EOF (or burst_complete after 35000 bytes)."""
        if not self._bursts or self._ftp_fd is None:
            self._bursts = []
            return
        b = self._bursts[0]
        for _ in range(8):
            offset = b["offset"]
            if offset >= self._ftp_size:
                body = struct.pack("<HBBBBBxI", b["seq"], 0, 129, 1, 15, 0, offset) + bytes([6])
                self._bursts = []
            else:
                self._ftp_fd.seek(offset)
                chunk = bytes(self._ftp_fd.read(239))
                b["offset"] += len(chunk)
                b["sent"] += len(chunk)
                complete = 1 if b["sent"] > 35000 else 0
                body = struct.pack("<HBBBBBxI", b["seq"], 0, 128, len(chunk), 15, complete, offset) + chunk
                if complete:
                    self._bursts = []
            b["seq"] = (b["seq"] + 1) & 0xFFFF
            b["link"].send(mavlink.MAVLink_file_transfer_protocol_message(0, b["to"][0], b["to"][1],
                                                                          list(body.ljust(251, b"\0"))))
            if not self._bursts:
                return


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode(errors="replace")


def _free_udp_port() -> int:
    """A UDP port nobody holds now (bound and released; the agent binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = ["DATA_DIR", "Px4Param", "Px4VfcConfig", "VirtualPx4", "int_from_wire", "px4_crc32"]
