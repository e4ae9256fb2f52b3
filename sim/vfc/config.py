"""What a virtual FC is: its identity, links, timings, files and the parts on its bus.

Defaults reproduce the recorded ArduCopter 4.7.0-dev SITL (see /work/shared/sitl-captures),
except that boot is fast for tests. The SITL system id (a hash of the capture host's machine id)
is replaced by a fixed made-up one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# made up, so that no capture host's identity travels with the project
VFC_SYSTEM_ID = "f1e5ea1f1e5ea1f1e5ea1f1e5ea1f1e5"


@dataclass(frozen=True)
class FirmwareInfo:
    """What AUTOPILOT_VERSION and the banner say."""

    flight_sw_version: int = 0x04070000  # 4.7.0, type 0 (dev)
    git_hash: str = "2598e9d4"
    capabilities: int = 0xFBEF
    board_id: int = 0  # sent as board_version = board_id << 16, as ArduPilot does
    vendor_id: int = 0
    product_id: int = 0
    uid: int = 0
    system_id: str = VFC_SYSTEM_ID  # SITL: uid2 = its first 17 characters, then a zero byte
    uid2: bytes | None = None  # a board's raw MCU UID; None derives it from system_id as SITL does
    os_sw_version: int = 0
    os_git_hash: str = ""
    vehicle: str = "ArduCopter"
    version_text: str = "V4.7.0-dev"
    frame: str = "QUAD/PLUS"

    @property
    def uid2_bytes(self) -> bytes:
        raw = self.uid2 if self.uid2 is not None else self.system_id.encode()[:17]
        return raw[:18].ljust(18, b"\0")

    @property
    def banner(self) -> tuple[str, ...]:
        return (f"{self.vehicle} {self.version_text} ({self.git_hash})", self.system_id, f"Frame: {self.frame}")


@dataclass(frozen=True)
class BusComponent:
    """Another MAVLink component heard through the FC (a camera, a gimbal, a radio)."""

    sysid: int
    compid: int
    mav_type: int
    autopilot: int = 8  # MAV_AUTOPILOT_INVALID
    version: FirmwareInfo | None = None  # answers REQUEST_MESSAGE(AUTOPILOT_VERSION) when set
    heartbeat: bool = True  # False: only RADIO_STATUS (a SiK radio) is heard


@dataclass(frozen=True)
class DroneCanNode:
    """A node on the FC's first DroneCAN bus: NodeStatus at 1 Hz, answers GetNodeInfo (sim/vfc/can.py)."""

    node_id: int
    name: str
    hw_unique_id: bytes = bytes(16)
    hw_version: tuple[int, int] = (1, 0)
    sw_version: tuple[int, int] = (1, 0)
    vcs_commit: int | None = 0
    image_crc: int | None = None
    health: int = 0
    answers: bool = True  # False: a node that broadcasts NodeStatus but never answers GetNodeInfo
    canfd: bool = False  # answers in CAN FD frames (the FC forwards them as CANFD_FRAME)


@dataclass
class VfcConfig:
    channels: int = 2  # channel 0 behaves as SERIAL0 (accepts unsigned when signing), 1 is SERIAL1
    ports: tuple[int, ...] = ()  # per channel; missing or 0 picks a free loopback port
    sysid: int = 1
    compid: int = 1
    boot_delay: float = 0.05  # SITL: first HEARTBEAT ~0.87 s after launch; nothing at all before it
    standby_delay: float = 0.2  # first HEARTBEAT → STANDBY, "ArduPilot Ready" (SITL: ~2 s)
    heartbeat_period: float = 1.0
    prearm_period: float = 30.0  # ArduPilot PREARM_DISPLAY_PERIOD, tested with ">" in a 1 Hz task
    prearm_check_period: float = 1.0
    reboot_delay: float = 0.2  # ACK → connection closed (AP_Vehicle::reboot's 200 ms)
    restart_gap: float = 0.05  # ports closed while the process re-executes
    timesync_period: float = 10.0
    stat_runtime_period: float = 30.0
    param_burst: int = 100  # PARAM_VALUEs per 10 ms loop while streaming a list
    ftp_link_bps: int | None = None  # pace FTP bursts as ArduPilot does on a link of this many bytes/s
    ftp_enabled: bool = True  # False: FTP requests are ignored (an FC with FTP disabled)
    ftp_drop_every: int = 0  # a lossy link: drop every Nth burst data packet (0: none)
    silent: bool = False  # True: accepts connections, never sends a byte
    scripting: bool = True  # SCR_ENABLE=1
    params: dict[str, float] = field(default_factory=dict)
    root: Path | None = None  # SITL working directory (FTP "/"); a temp dir when None
    scripts: dict[str, bytes] = field(default_factory=dict)  # written to root/scripts at start
    gate_key: bytes | None = None  # as `gate install` leaves it: root/flightseal_gate.key, SCR_VM_I_COUNT raised
    flash_image: bytes | None = None  # board mode: serve @SYS/flash.bin
    romfs: dict[str, bytes] = field(default_factory=lambda: {"locations.txt": b"CMAC=-35.363261,149.165230,584,353\n"})
    firmware: FirmwareInfo = field(default_factory=FirmwareInfo)
    components: tuple[BusComponent, ...] = ()
    dronecan_nodes: tuple[DroneCanNode, ...] = ()
    signing_key: bytes | None = None  # as if SETUP_SIGNING had stored it
    max_send_wait: float = 2.0  # a client that does not read for this long is dropped
