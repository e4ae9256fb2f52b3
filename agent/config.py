"""The agent's TOML configuration: every option, its default, and a clear error for each mistake.

A sample with every option documented is ``packaging/agent.toml``; this module is the
authority on names, types and defaults, and refuses unknown keys (a typo must not silently fall
back to a default in a security product).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.mavlink.link import LinkConfig
from attest.errors import FormatError
from attest.limits import LIMITS

MAX_CONFIG_BYTES = LIMITS.max_config_bytes


@dataclass(frozen=True)
class MavlinkConfig:
    url: str = "tcp:127.0.0.1:5762"  # SERIAL1 of SITL instance 0; on a drone e.g. /dev/ttyAMA0,921600
    system_id: int = LinkConfig.system_id  # same system as the FC: a companion computer
    component_id: int = LinkConfig.component_id  # MAV_COMP_ID_ONBOARD_COMPUTER
    fc_system_id: int = 1
    fc_component_id: int = 1
    heartbeat_timeout_s: float = LinkConfig.heartbeat_timeout
    signing_key_file: str = ""  # 32-byte MAVLink2 signing key; empty = unsigned link
    allow_serial0: bool = False  # SERIAL0/USB accepts unsigned packets even with signing: refuse by default


@dataclass(frozen=True)
class DeviceConfig:
    id: str = ""
    airframe: str = ""
    key: str = ""  # key URI: tpm:…, pkcs11:…, file:… (development only)


@dataclass(frozen=True)
class TrustConfig:
    root: str = "/etc/flightseal/root.json"
    manifest: str = "/etc/flightseal/manifest.json"
    state_dir: str = "/var/lib/flightseal"  # highest manifest version seen, gate sequence


@dataclass(frozen=True)
class GateConfig:
    enabled: bool = True
    keepalive_s: float = 1.0  # the gate lapses after 3 s without a fresh pass
    key_file: str = ""  # the gate key `flightseal gate install` made; empty = <trust.state_dir>/gate.key


@dataclass(frozen=True)
class MeasureConfig:
    firmware_image: str = ""  # companion-side copy of the FC image (SITL: the binary)
    scripts_dir: str = ""  # FC scripts directory over FTP; empty = the FC's default
    flash_read: bool = True  # read @SYS/flash.bin where the FC serves it
    script_poll_s: float = 5.0  # how often the FC's scripts are checked (CRC32 over FTP) for changes
    script_hash_s: float = 60.0  # how often every script is read back and its SHA-256 checked (a CRC32 can be forged)
    dronecan: bool = True  # measure the FC's DroneCAN nodes (GetNodeInfo through MAVLink CAN forwarding)
    dronecan_node_id: int = 127  # our node id on the CAN bus while asking; must be free on the bus
    dronecan_poll_s: float = 10.0  # how often (disarmed) the DroneCAN buses are checked for new or restarted nodes
    # the companion's TCG boot event log, carried in each TPM quote (ADR 0019); a missing file means no log,
    # "" reads none
    boot_event_log: str = "/sys/kernel/security/tpm0/binary_bios_measurements"


@dataclass(frozen=True)
class AuditConfig:
    path: str = "/var/lib/flightseal/audit.log"


@dataclass(frozen=True)
class FleetConfig:
    """Where the agent pushes its attestations (issue 14). Off while ``url`` is empty."""

    url: str = ""  # the fleet service, e.g. https://fleet.example.org:8443
    token_file: str = ""  # an agent-role API token (`flightseal fleet token create NAME --role agent`)
    ca_file: str = ""  # CA bundle for the service's TLS certificate; "" = the system's CAs
    queue_dir: str = ""  # "" = <trust.state_dir>/fleet-queue
    max_queued: int = 10000  # attestations kept while offline; beyond, the oldest are dropped (logged)
    timeout_s: float = 10.0
    retry_max_s: float = 300.0  # the longest wait between tries while the service is away
    fetch_nonces: bool = True  # ask the service for a nonce ahead of each pass (its evidence is then fresh)


@dataclass(frozen=True)
class AgentConfig:
    mavlink: MavlinkConfig = field(default_factory=MavlinkConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)


MAX_SECONDS = 86400.0  # every duration option: a day at most
MAX_INT = 2**31 - 1
MAX_STRING = 4096


def _section(cls: type[Any], data: Any, name: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise FormatError(where, "must be a table", f"[{name}]")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        f = known.get(key)
        if f is None:
            raise FormatError(where, f"unknown option (known: {', '.join(sorted(known))})", f"{name}.{key}")
        default = getattr(cls(), key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
            if ok and not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
                raise FormatError(where, f"must be a number of seconds in (0, {MAX_SECONDS}]", f"{name}.{key}")
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
            if ok and not 0 <= value <= MAX_INT:
                raise FormatError(where, f"must be in 0..{MAX_INT}", f"{name}.{key}")
        else:
            ok = isinstance(value, str)
            if ok and (len(value) > MAX_STRING or any(ord(c) < 32 or c == "\ufffd" for c in value)):
                raise FormatError(where, f"must be printable text of at most {MAX_STRING} characters",
                                  f"{name}.{key}")
        if not ok:
            raise FormatError(where, f"must be {type(default).__name__}, not {type(value).__name__}", f"{name}.{key}")
        values[key] = value
    return cls(**values)


def parse(text: str, where: str = "config") -> AgentConfig:
    """Parse ``agent.toml`` text (``where`` names it in errors). Raises FormatError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(where, f"is not valid TOML ({exc})") from None
    except (ValueError, RecursionError) as exc:  # an integer over 4300 digits; arrays nested past the stack
        raise FormatError(where, f"is not valid TOML ({str(exc)[:100] or type(exc).__name__})") from None
    sections = {f.name: f for f in fields(AgentConfig)}
    values: dict[str, Any] = {}
    for name, body in data.items():
        if name not in sections:
            raise FormatError(where, f"unknown section (known: {', '.join(sorted(sections))})", f"[{name}]")
        values[name] = _section(type(getattr(AgentConfig(), name)), body, name, where)
    cfg = AgentConfig(**values)
    for key in ("id", "airframe", "key"):
        if not getattr(cfg.device, key):
            raise FormatError(where, "is required", f"device.{key}")
    if not 1 <= cfg.mavlink.system_id <= 255 or not 1 <= cfg.mavlink.component_id <= 255:
        raise FormatError(where, "system and component ids are 1..255", "mavlink")
    if not 1 <= cfg.measure.dronecan_node_id <= 127:
        raise FormatError(where, "a DroneCAN node id is 1..127", "measure.dronecan_node_id")
    if cfg.fleet.url:
        if not cfg.fleet.url.startswith(("https://", "http://")):
            raise FormatError(where, "must be an http:// or https:// URL", "fleet.url")
        if not cfg.fleet.token_file:
            raise FormatError(where, "is required with fleet.url (an agent-role API token)", "fleet.token_file")
        if not 1 <= cfg.fleet.max_queued <= 1_000_000:
            raise FormatError(where, "must be in 1..1000000", "fleet.max_queued")
    if cfg.gate.keepalive_s <= 0 or cfg.gate.keepalive_s > 2.0:
        raise FormatError(where, "must be in (0, 2] s so a pass never lapses at the gate (3 s)", "gate.keepalive_s")
    return cfg


def load(path: Path) -> AgentConfig:
    """The agent's configuration from ``agent.toml``.

    Raises:
        FormatError: unreadable, not UTF-8, not TOML, an unknown key, or a value out of range
            (the message names the key and the allowed range)."""
    from hardware.files import read_bounded

    raw = read_bounded(path, "config", MAX_CONFIG_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"config {path}", f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse(text, f"config {path}")
