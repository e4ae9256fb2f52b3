"""A demo-like airframe with classed parts, written as a buyer receives it: a trust directory and an attestation.

Real keys, real signatures, the real seal (tests/factory.py's builders); only the measurements are
made up, as the file demo's are (sim/scenarios/demo_files.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from agent.attestation import check_manifest, seal_measurements
from attest import dsse, jsonio, timeutil
from attest.manifest import ApprovedComponent, Document, Firmware, Manifest, Supplier
from attest.models import Kind, Measurement, Strength
from attest.policy import POLICY_PAYLOAD_TYPE, BuyerPolicy
from hardware.software import SoftwareSigner, write_private_key
from tests.factory import World, camera, measurements, sha

DOC = sha(b"declaration of origin, Acme Optics, 2026")


def parts(camera_origin: str = "JP") -> tuple[ApprovedComponent, ...]:
    return (
        ApprovedComponent("flight controller", "fc", "CubePilot", "Cube Orange+", "AU", part_class="flight-controller",
                          supplier=Supplier("Hex Technology", "CH")),
        ApprovedComponent("ArduPilot Copter", "fc.firmware", "ArduPilot", "Copter", "US",
                          part_class="operating-software"),
        ApprovedComponent("gimbal camera", "mavlink:1/100", "Acme Optics", "AC-1", camera_origin,
                          hardware_ids=("cam-0001",), part_class="camera", supplier=Supplier("Acme Assembly", "JP"),
                          documents=(Document(DOC, "Declaration of origin"),)),
        ApprovedComponent("telemetry radio", "mavlink:1/68", "RFD", "RFD900x", "AU", part_class="data-transmission"),
        ApprovedComponent("GNSS", "dronecan:1/125", "Here", "Here4", "AU", firmware_crc64=("0123456789abcdef",),
                          part_class="other"),
        ApprovedComponent("companion OS", "companion.os", "Raspberry Pi", "Raspberry Pi OS", "GB",
                          part_class="operating-software"),
        ApprovedComponent("FlightSeal agent", "companion.agent", "FlightSeal", "agent", "JP",
                          part_class="operating-software"),
        ApprovedComponent("QGroundControl", "gcs:qgroundcontrol", "Dronecode", "QGC 4.4", "US",
                          part_class="ground-control-system"),
    )


def measured(image: bool = True) -> list[Measurement]:
    radio = Measurement("mavlink:1/68", Kind.COMPONENT, {}, "mavlink:HEARTBEAT", Strength.OBSERVED,
                        {"vendor": "RFD", "model": "RFD900x", "type": "radio"})
    gnss = Measurement("dronecan:1/125", Kind.COMPONENT, {"crc64": "0123456789abcdef"}, "dronecan:GetNodeInfo",
                       Strength.SELF_REPORTED, {"name": "com.cubepilot.here4", "version": "1.14"})
    companion = [Measurement("companion.agent", Kind.COMPANION, {"sha256": sha(b"agent")}, "companion:installed-files",
                             Strength.SELF_REPORTED, {"agent_version": "0.1.0"}),
                 Measurement("companion.os", Kind.COMPANION, {"sha256": sha(b"os")}, "companion:os-release",
                             Strength.SELF_REPORTED, {"os": "Debian GNU/Linux 12", "os_version": "12",
                                                      "kernel": "6.1.0"})]
    out = measurements(components=[camera(), radio, gnss]) + companion
    return out if image else [m for m in out if m.kind is not Kind.FIRMWARE_IMAGE]


@dataclass
class Airframe:
    trust: Path
    attestation: Path
    nonce: bytes
    world: World


def write_airframe(tmp: Path, *, camera_origin: str = "JP", image: bool = True, age: timedelta = timedelta(days=2),
                   name: str = "att.json") -> Airframe:
    """A trust directory and one attestation made ``age`` ago (evidence handed over)."""
    world = World(now=timeutil.now() - age)
    manifest: Manifest = world.manifest(components=parts(camera_origin))
    if not image:  # a manifest that approves the identity only: the FC is then self-reported
        manifest = replace(manifest, firmware=(Firmware("arducopter", "4.7.0", "2598e9d4", 0, 12),), min_strength={})
    manifest_bytes = world.sign_manifest(manifest)
    trust = tmp / "trust"
    (trust / "devices").mkdir(parents=True, exist_ok=True)
    (trust / "root.json").write_bytes(world.root_bytes())
    (trust / "manifest.json").write_bytes(manifest_bytes)
    (trust / "devices" / "drone-001.json").write_bytes(world.enrollment_bytes(world.device()))
    nonce = secrets.token_bytes(32)
    sealed = seal_measurements(measured(image), check_manifest(world.trust(), manifest_bytes, world.now),
                               world.device_key, device_id="drone-001", airframe="FS-Quad-1", nonce=nonce,
                               now=world.now)
    assert sealed.verdict.passed, sealed.verdict.reasons
    att = tmp / name
    att.write_bytes(sealed.envelope.to_bytes())
    return Airframe(trust, att, nonce, world)


def buyer_key(tmp: Path) -> tuple[SoftwareSigner, Path, Path]:
    """The buyer's key: the private key file and its public half, as `flightseal keys create` writes them."""
    key = SoftwareSigner.generate()
    priv, pub = tmp / "buyer.pem", tmp / "buyer.pub"
    write_private_key(priv, key)
    pub.write_text(key.public_key.public_pem)
    return key, priv, pub


def signed_policy(path: Path, policy: BuyerPolicy, key: SoftwareSigner) -> Path:
    path.write_bytes(dsse.sign(POLICY_PAYLOAD_TYPE, jsonio.dumps(policy.to_json()), [key]).to_bytes())
    return path


