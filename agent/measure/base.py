"""What every collector shares: options, the inventory they fill, and how failures are recorded.

A collector that cannot measure something does not stop the pass: it records a
``measurement-missing`` reason (for the operator) and, where silence would let an unapproved
thing pass unseen, a measurement that fails appraisal (for the verdict). Only a lost link
stops a pass, because every later collector would fail the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest import params as paramdigest
from attest.errors import FlightSealError
from attest.manifest import ParamPolicy
from attest.models import Code, Measurement, Reason

if TYPE_CHECKING:  # at run time the collectors import this module, not the other way round
    from agent.mavlink.ftp import FtpClient
    from agent.mavlink.link import Link
    from agent.measure.firmware import FirmwareIdentity
    from agent.measure.imagecache import ImageCache

Progress = Callable[[str, int, int | None], None]  # (what, bytes so far, reported size or None)

ENV_SITL_BINARY = "FLIGHTSEAL_SITL_BINARY"


class CollectError(FlightSealError):
    """One collector could not measure what it measures."""


@dataclass(frozen=True)
class MeasureOptions:
    """Bounds and choices of one measurement pass; every size and wait has a named limit."""

    param_exclusions: tuple[str, ...] = paramdigest.DEFAULT_EXCLUSIONS
    pinned_params: tuple[str, ...] = ()
    param_baseline: Mapping[str, float] | None = None  # the manifest's approved values: name what differs
    param_claims: str = "differences"  # "all": claim every parameter (an inventory for baselining)
    boot_wait: float = 20.0  # an FC still booting (parameter count still growing) is measured once it is up
    param_source: str = "auto"  # auto (param.pck, else PARAM protocol), ftp, mavlink
    param_timeout: float = 30.0
    max_param_bytes: int = 512 * 1024
    flash_read: bool = True
    max_image_bytes: int = 16 * 1024 * 1024
    max_file_image_bytes: int = 256 * 1024 * 1024
    firmware_file: Path | None = None  # companion-side image; FLIGHTSEAL_SITL_BINARY when the FC is SITL
    use_sitl_env: bool = True
    full_read_interval: float = 24 * 3600.0  # warm passes trust a matching CRC32 at most this long
    scripts_dirs: tuple[str, ...] = ("APM/scripts", "scripts")  # boards, then SITL; the first that exists
    romfs_scripts: str = "@ROMFS/scripts"
    max_scripts: int = 64
    max_script_bytes: int = 256 * 1024
    max_script_depth: int = 3
    listen_time: float = 1.2  # components: hear the bus at least this long (heartbeats are 1 Hz)
    component_reply_timeout: float = 0.5
    component_gone_s: float = 10.0  # a component not heard for this long is gone (a spoofed one-off, or unplugged)
    include_gcs: bool = False
    dronecan: bool = True  # scan the FC's DroneCAN buses through MAVLink CAN forwarding
    dronecan_node_id: int = 127  # our node id on the CAN bus while asking GetNodeInfo (must be free)
    dronecan_listen: float = 1.2  # every node sends NodeStatus at least once a second
    companion_config: Path | None = None
    progress: Progress | None = None

    def for_params(self, policy: ParamPolicy) -> MeasureOptions:
        """These options, measuring parameters as ``policy`` (the manifest's) judges them."""
        return replace(self, param_exclusions=tuple(policy.exclude), pinned_params=tuple(sorted(policy.pinned)),
                       param_baseline=policy.values or None)

    def sitl_binary(self) -> Path | None:
        value = os.environ.get(ENV_SITL_BINARY, "") if self.use_sitl_env else ""
        return Path(value) if value else None


@dataclass(frozen=True)
class DroneCanBus:
    """One scanned DroneCAN bus: the FC's own node id there, and each node heard with its uptime."""

    bus: int
    fc_node: int | None
    uptimes: dict[int, int]


@dataclass
class Inventory:
    """The result of one pass: measurements, what could not be measured, and how long each part took."""

    measurements: list[Measurement] = field(default_factory=list)
    problems: list[Reason] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    fc_params: dict[str, float] | None = None  # the FC's parameters, for collectors that need its setup
    dronecan: list[DroneCanBus] = field(default_factory=list)  # what each DroneCAN bus held (the daemon's watch)

    def missing(self, component: str, detail: str) -> None:
        self.problems.append(Reason(Code.MEASUREMENT_MISSING, detail, component))

    def to_json(self) -> list[dict[str, Any]]:
        return [m.to_json() for m in self.measurements]


def sha256_json(value: Any) -> str:
    """Digest of a canonical JSON form (sorted keys, no spaces): stable across runs and hosts."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Pass:
    """What one measurement pass hands every collector: the one collector signature is
    ``collect(p: Pass) -> list[Measurement]`` (like MAVProxy's module hooks, one shape to copy).

    ``ftp`` is None when MAVLink FTP does not answer; ``identity`` is set by the firmware-identity
    collector for the ones after it (the image cache is keyed by it)."""

    link: Link
    opts: MeasureOptions
    inv: Inventory
    ftp: FtpClient | None = None
    cache: ImageCache | None = None
    identity: FirmwareIdentity | None = None


@dataclass(frozen=True)
class Collector:
    """One row of the pass's table: ``name`` keys its timing, ``component`` is what is reported
    missing when it raises :class:`CollectError` (or an FTP error), ``collect`` does the work."""

    name: str
    component: str
    collect: Callable[[Pass], list[Measurement]]
