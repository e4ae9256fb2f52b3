"""A whole airframe on one machine, for the demo and the end-to-end tests.

Manufacturer keys (2-of-3) and a signed root; a device key (TPM on swtpm, or a software key);
a flight controller (the virtual FC running the real Lua gate, or ArduPilot SITL with the gate in
its scripts directory); an agent configuration; a manifest made by measuring the FC and signing
what was measured; and a ground station link that tries to arm.

The FC's companion port (SERIAL1, channel 1) is the agent's; the GCS uses SERIAL0 (channel 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, AuditConfig, DeviceConfig, GateConfig, MavlinkConfig, MeasureConfig, TrustConfig
from agent.daemon import Daemon
from agent.gate.client import gate_script
from agent.gate.install import protect_scripts
from agent.gate.key import ensure_gate_key
from agent.mavlink.link import Link, LinkConfig
from agent.mavlink.paramwire import decode_bytewise, encode_bytewise
from agent.mavlink.statustext import StatusTexts
from agent.measure.base import MeasureOptions
from agent.measure.collect import measure
from attest import dsse, jsonio, timeutil
from attest.baseline import PartInfo, baseline
from attest.enrollment import DeviceRecord
from attest.manifest import Airframe, Manifest, Posture
from attest.models import Measurement
from attest.root import Role, Root
from attest.signer import Signer
from attest.tpm_evidence import TpmEvidence
from hardware.software import SoftwareSigner, write_private_key

os.environ.setdefault("MAVLINK20", "1")

GATE_FC_PATH = "scripts/flightseal_gate.lua"
AIRFRAME = "FS-Quad-1"
DEVICE_ID = "drone-001"
PINNED = ("ARMING_CHECK", "SCR_ENABLE", "FS_THR_ENABLE")
# PX4: its arm authorization (what `gate install` sets) and a safety value a GCS could turn off
PX4_PINNED = ("COM_ARM_AUTH_REQ", "COM_ARM_AUTH_ID", "COM_ARM_AUTH_MET", "NAV_RCL_ACT")
ARM_TEXTS = ("Arm: ",)  # ArduPilot's texts about an arming (the Lua gate's refusal among them)
PX4_ARM_TEXTS = ("Arm auth: ", "FlightSeal: ", "Preflight Fail: ")  # PX4's, and the agent's beside them


@dataclass
class ArmResult:
    accepted: bool
    result: int | None
    text: str

    def __str__(self) -> str:
        return "ACCEPTED" if self.accepted else f"REFUSED ({self.text or f'MAV_RESULT {self.result}'})"


@dataclass
class Rig:
    """Everything but the FC process, which the caller starts (``vfc`` or ``sitl`` helpers below)."""

    workdir: Path
    fc_url: str
    gcs_url: str
    device: Signer
    makers: list[SoftwareSigner] = field(default_factory=lambda: [SoftwareSigner.generate() for _ in range(3)])
    parts: dict[str, PartInfo] = field(default_factory=dict)
    signing_key: bytes | None = None  # MAVLink2 signing key the FC holds (`flightseal signing setup`)
    gate_key: bytes | None = None  # the gate key the FC holds (VfcConfig/SitlConfig gate_key); None: made here
    tpm_evidence: TpmEvidence | None = None  # a TPM device key's proof (hardware.tpm_credential, ADR 0018)
    fc_kind: str = "ardupilot"  # or "px4": no Lua gate, PX4's arm authorization asks the agent (ADR 0024)
    fc_system_id: int = 1
    firmware_file: Path | None = None  # the FC's image on the companion (an FC that serves none over FTP)
    daemon: Daemon | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    # ---- trust
    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        key_file = self.workdir / "state" / "gate.key"  # where the agent's config looks (GateConfig.key_file "")
        if self.gate_key is not None and not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.touch(mode=0o600)
            key_file.write_bytes(self.gate_key)
        self.gate_key = ensure_gate_key(key_file)[0]
        for i, key in enumerate(self.makers):
            path = self.workdir / f"manufacturer-{i + 1}.pem"
            if not path.exists():
                write_private_key(path, key)
        role = Role(tuple(k.public_key.keyid for k in self.makers), 2)
        root = Root(1, timeutil.now() + timedelta(days=365), {k.public_key.keyid: k.public_key for k in self.makers},
                    {"root": role, "manifest": role, "enrollment": role})
        self.root_path.write_bytes(dsse.sign(dsse.ROOT_PAYLOAD_TYPE, jsonio.dumps(root.to_json()),
                                             self.makers[:2]).to_bytes())
        record = DeviceRecord(DEVICE_ID, AIRFRAME, self.device.public_key, self.device.kind,
                              tpm_ak_name=str(getattr(self.device, "ak_name", "") or ""),
                              tpm_evidence=self.tpm_evidence)
        devices = self.workdir / "trust" / "devices"
        devices.mkdir(parents=True, exist_ok=True)
        (devices / f"{DEVICE_ID}.json").write_bytes(dsse.sign(
            dsse.DEVICE_PAYLOAD_TYPE, jsonio.dumps(record.to_json()), self.makers[1:]).to_bytes())
        (self.workdir / "trust" / "root.json").write_bytes(self.root_path.read_bytes())

    @property
    def pinned(self) -> tuple[str, ...]:
        return PX4_PINNED if self.fc_kind == "px4" else PINNED

    @property
    def root_path(self) -> Path:
        return self.workdir / "root.json"

    @property
    def manifest_path(self) -> Path:
        return self.workdir / "manifest.json"

    @property
    def trust_dir(self) -> Path:
        return self.workdir / "trust"

    def config(self, device_key_uri: str = "") -> AgentConfig:
        return AgentConfig(
            mavlink=MavlinkConfig(url=self.fc_url, heartbeat_timeout_s=15.0, fc_system_id=self.fc_system_id),
            device=DeviceConfig(DEVICE_ID, AIRFRAME, device_key_uri or "in-process"),
            trust=TrustConfig(str(self.root_path), str(self.manifest_path), str(self.workdir / "state")),
            gate=GateConfig(keepalive_s=1.0),
            measure=MeasureConfig(flash_read=True, script_poll_s=1.0, script_hash_s=2.0, dronecan_poll_s=2.0,
                                  firmware_image=str(self.firmware_file or "")),
            audit=AuditConfig(str(self.workdir / "state" / "audit.log")),
        )

    def write_config_file(self, key_uri: str, state_dir: Path | None = None) -> Path:
        """An agent.toml for ``flightseal agent run`` (a separate process) against this rig."""
        state = state_dir or self.workdir / "state"
        path = self.workdir / "agent.toml"
        path.write_text(f"""
[mavlink]
url = "{self.fc_url}"
fc_system_id = {self.fc_system_id}
[device]
id = "{DEVICE_ID}"
airframe = "{AIRFRAME}"
key = "{key_uri}"
[trust]
root = "{self.root_path}"
manifest = "{self.manifest_path}"
state_dir = "{state}"
[audit]
path = "{state / 'audit.log'}"
""" + (f'[measure]\nfirmware_image = "{self.firmware_file}"\n' if self.firmware_file else ""))
        return path

    # ---- manifest
    def measure_fc(self, opts: MeasureOptions | None = None) -> list[Measurement]:
        """Measure the reference airframe as the manufacturer does: its scripts protected by
        ArduPilot's checksums first (what ``gate install`` leaves, ADR 0013), then every value."""
        pinned = MeasureOptions(pinned_params=self.pinned, param_claims="all",  # as `flightseal measure`
                                firmware_file=self.firmware_file)
        with Link.open(LinkConfig(self.fc_url, heartbeat_timeout=15.0, signing_key=self.signing_key,
                                  fc_system_id=self.fc_system_id)) as link:
            if self.fc_kind == "ardupilot":
                protect_scripts(link)
            inv = measure(link, opts or pinned)
        if inv.problems:
            raise RuntimeError("could not measure the reference FC: " + "; ".join(str(p) for p in inv.problems))
        return inv.measurements

    def sign_manifest(self, manifest: Manifest, signers: list[SoftwareSigner] | None = None) -> bytes:
        data = dsse.sign(dsse.MANIFEST_PAYLOAD_TYPE, jsonio.dumps(manifest.to_json()),
                         signers if signers is not None else self.makers[1:]).to_bytes()
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.manifest_path)
        (self.trust_dir / "manifest.json").write_bytes(data)
        return data

    def baseline_manifest(self, measurements: list[Measurement], *, version: int = 1,
                          **changes: Any) -> Manifest:
        # the script checksums are set (measure_fc protects the scripts); signing only where the rig has a key
        px4 = self.fc_kind == "px4"  # PX4 v1.16 has neither MAVLink signing nor Lua scripts
        base = Manifest(version=version, expires=timeutil.now() + timedelta(days=90),
                        airframe=Airframe(AIRFRAME, device_ids=(DEVICE_ID,)),
                        posture=Posture(signed=self.signing_key is not None, script_checksums=not px4))
        manifest, _ = baseline(base, measurements, release=1, parts=self.parts,
                               required_scripts=() if px4 else (GATE_FC_PATH,), pin=self.pinned)
        return dataclasses.replace(manifest, **changes)

    # ---- agent
    def start_agent(self, cfg: AgentConfig | None = None) -> Daemon:
        self._stop = threading.Event()
        self.daemon = Daemon(cfg or self.config(), self.device, signing_key=self.signing_key)
        self._thread = threading.Thread(target=self.daemon.run, args=(self._stop,), name="agent", daemon=True)
        self._thread.start()
        return self.daemon

    def stop_agent(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def wait_verdict(self, *, passes: int = 1, passed: bool | None = None, code: str | None = None,
                     timeout: float = 20.0) -> Daemon:
        """Wait until the agent has delivered its ``passes``-th verdict (matching, if asked) to the gate."""
        assert self.daemon is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.daemon.status
            last = st.delivered
            if st.passes >= passes and last is not None and (
                    passed is None or last.verdict.passed == passed) and (
                    code is None or code in [r.code.value for r in last.verdict.reasons]):
                return self.daemon
            time.sleep(0.05)
        st = self.daemon.status
        raise TimeoutError(f"no matching verdict within {timeout:.0f} s: {st.passes} passes, last "
                           f"{st.last.verdict.codes if st.last else None}, gate {st.gate_error or 'ok'}, "
                           f"transitions {st.transitions[-6:]}")


class Gcs:
    """A ground station on the GCS port: tries to arm and reads what the FC says."""

    def __init__(self, url: str, signing_key: bytes | None = None, *, target: tuple[int, int] = (1, 1),
                 bytewise: bool = False, source_system: int = 255, arm_texts: tuple[str, ...] = ARM_TEXTS) -> None:
        """``target`` is the FC's (system, component); ``bytewise``: the FC encodes integer parameters
        bit for bit (PX4), so values are sent and read by their type; ``arm_texts``: the texts that
        say why an arming was refused."""
        from pymavlink import mavutil

        self.target = target
        self.bytewise = bytewise
        self.arm_texts = arm_texts
        self.conn = mavutil.mavlink_connection(url, source_system=source_system, source_component=190,
                                               autoreconnect=True)
        if signing_key is not None:
            self.conn.setup_signing(signing_key, sign_outgoing=True)
        self.conn.mav.heartbeat_send(6, 8, 0, 0, 4)  # a UDP FC (PX4) answers only once it has heard us
        self.conn.wait_heartbeat(timeout=15)
        self.conn.mav.heartbeat_send(6, 8, 0, 0, 4)

    def close(self) -> None:
        self.conn.close()

    def arm(self, timeout: float = 3.0) -> ArmResult:
        return self._arm_disarm(1.0, timeout)

    def disarm(self, timeout: float = 3.0) -> ArmResult:
        return self._arm_disarm(0.0, timeout)

    def _arm_disarm(self, arm: float, timeout: float) -> ArmResult:
        self.conn.mav.heartbeat_send(6, 8, 0, 0, 4)
        self.conn.mav.command_long_send(*self.target, 400, 0, arm, 0, 0, 0, 0, 0, 0)
        deadline = time.monotonic() + timeout
        result: int | None = None
        chunks = StatusTexts()
        while time.monotonic() < deadline:
            msg = self.conn.recv_match(type=["COMMAND_ACK", "STATUSTEXT"], blocking=True, timeout=0.3)
            if msg is None:
                if result is not None:
                    break  # ArduPilot sends the "Arm: …" texts right after the ACK
                continue
            if msg.get_type() == "COMMAND_ACK" and msg.command == 400:
                result = int(msg.result)
                if result == 0:
                    break
            elif msg.get_type() == "STATUSTEXT":
                chunks.add(msg)
        texts = [t for t in chunks.texts if t.startswith(self.arm_texts)]
        return ArmResult(result == 0, result, " | ".join(texts))

    def set_mode(self, custom_mode: int, timeout: float = 3.0) -> int | None:
        """MAV_CMD_DO_SET_MODE (as a GCS's mode switch sends it); the FC's MAV_RESULT, or None."""
        self.conn.mav.command_long_send(*self.target, 176, 0, 1, custom_mode, 0, 0, 0, 0, 0)
        ack = self.conn.recv_match(type="COMMAND_ACK", blocking=True, timeout=timeout,
                                   condition="COMMAND_ACK.command==176")
        return None if ack is None else int(ack.result)

    def get_param(self, name: str, timeout: float = 3.0) -> float | None:
        """The FC's current value of ``name`` (PARAM_REQUEST_READ), or None without an answer."""
        msg = self._read(name, timeout)
        return None if msg is None else self._value(msg)

    def _read(self, name: str, timeout: float, tries: int = 3) -> Any:
        """PARAM_REQUEST_READ, asked again when unanswered (a UDP link, like PX4's, drops packets)."""
        for _ in range(tries):
            self.conn.mav.param_request_read_send(*self.target, name.encode(), -1)
            msg = self.conn.recv_match(type="PARAM_VALUE", blocking=True, timeout=timeout / tries,
                                       condition=f"PARAM_VALUE.param_id=='{name}'")
            if msg is not None:
                return msg
        return None

    def _value(self, msg: Any) -> float:
        return decode_bytewise(float(msg.param_value), int(msg.param_type)) if self.bytewise else \
            float(msg.param_value)

    def set_param(self, name: str, value: float, timeout: float = 3.0) -> None:
        ptype, wire = 2, value
        if self.bytewise:  # PX4 takes an integer's bits, and checks the type: read it first
            current = self._read(name, timeout)
            if current is None:
                raise TimeoutError(f"the FC did not answer a read of {name}")
            ptype = int(current.param_type)
            wire = encode_bytewise(value, ptype)
        self.conn.mav.param_set_send(*self.target, name.encode(), wire, ptype)
        msg = self.conn.recv_match(type="PARAM_VALUE", blocking=True, timeout=timeout,
                                   condition=f"PARAM_VALUE.param_id=='{name}'")
        if msg is None or (self.bytewise and self._value(msg) != value):
            raise TimeoutError(f"the FC did not confirm {name}={value:g}")


@contextlib.contextmanager
def gcs(url: str) -> Iterator[Gcs]:
    g = Gcs(url)
    try:
        yield g
    finally:
        g.close()


def gate_scripts() -> dict[str, bytes]:
    return {"flightseal_gate.lua": gate_script()}


# The gate key of FCs started with the gate preinstalled (VfcConfig/SitlConfig ``gate_key``); give the
# same to the Rig (``gate_key=``), as `gate install` leaves one key on both sides.
GATE_KEY = secrets.token_bytes(32)
