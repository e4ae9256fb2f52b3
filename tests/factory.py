"""Builders for the core tests: a 2-of-3 manufacturer root, a manifest, an enrolled device.

They use the real signing code (software keys in memory); nothing here fakes a check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from attest import dsse, jsonio, params
from attest.enrollment import DeviceRecord
from attest.evidence import Predicate
from attest.keys import KeyKind
from attest.manifest import Airframe, ApprovedComponent, Firmware, Manifest, ParamPolicy, Script
from attest.models import Kind, Measurement, Strength, Verdict
from attest.root import Role, Root
from attest.trust import TrustedState
from hardware.software import SoftwareSigner

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
GATE_LUA = b"-- flightseal gate (test copy)\nreturn function() end\n"
OTHER_LUA = b"-- camera helper\n"
FW_IMAGE = b"\x7fELF pretend firmware image" * 100
PARAMS = {"ARMING_CHECK": 1.0, "SCR_ENABLE": 1.0, "FENCE_ENABLE": 0.0, "ATC_RAT_RLL_P": 0.135,
          "STAT_RUNTIME": 1234.0, "MAV_SYSID": 1.0}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    """One manufacturer (3 offline keys, threshold 2), one device, one manifest."""

    m_keys: list[SoftwareSigner] = field(default_factory=lambda: [SoftwareSigner.generate() for _ in range(3)])
    device_key: SoftwareSigner = field(default_factory=SoftwareSigner.generate)
    now: datetime = NOW

    def root(self, version: int = 1, keys: list[SoftwareSigner] | None = None, threshold: int = 2,
             expires_days: int = 365) -> Root:
        keys = keys or self.m_keys
        ids = tuple(k.public_key.keyid for k in keys)
        role = Role(ids, threshold)
        return Root(version, self.now + timedelta(days=expires_days), {k.public_key.keyid: k.public_key for k in keys},
                    {"root": role, "manifest": role, "enrollment": role})

    def sign_root(self, root: Root, signers: list[SoftwareSigner]) -> bytes:
        return dsse.sign(dsse.ROOT_PAYLOAD_TYPE, jsonio.dumps(root.to_json()), signers).to_bytes()

    def root_bytes(self) -> bytes:
        return self.sign_root(self.root(), self.m_keys[:2])

    def trust(self) -> TrustedState:
        return TrustedState(self.root_bytes())

    def manifest(self, **changes: object) -> Manifest:
        base = Manifest(
            version=3,
            expires=self.now + timedelta(days=30),
            airframe=Airframe("FS-Quad-1", board_ids=(0,), device_ids=("drone-001",)),
            firmware=(Firmware("arducopter", "4.7.0", "2598e9d4", 0, 12, sha(FW_IMAGE)),),
            firmware_min_release=12,
            scripts=(Script("scripts/flightseal.lua", sha(GATE_LUA), required=True),
                     Script("scripts/camera.lua", sha(OTHER_LUA))),
            params=ParamPolicy(pinned={"ARMING_CHECK": 1.0, "SCR_ENABLE": 1.0},
                               digest=params.digest(PARAMS)),
            components=(ApprovedComponent("gimbal camera", "mavlink:1/100", "Acme Optics", "AC-1", "JP",
                                          hardware_ids=("cam-0001",)),),
            deny_origins=("XX",),
            deny_vendors=("Shady Parts Ltd",),
            min_strength={Kind.FIRMWARE_IMAGE: Strength.IMAGE_AND_BOOTLOADER},
        )
        return replace(base, **changes)  # type: ignore[arg-type]

    def sign_manifest(self, manifest: Manifest, signers: list[SoftwareSigner] | None = None) -> bytes:
        signers = self.m_keys[:2] if signers is None else signers
        return dsse.sign(dsse.MANIFEST_PAYLOAD_TYPE, jsonio.dumps(manifest.to_json()), signers).to_bytes()

    def manifest_bytes(self, **changes: object) -> bytes:
        return self.sign_manifest(self.manifest(**changes))

    def device(self, device_id: str = "drone-001", key: SoftwareSigner | None = None,
               airframe: str = "FS-Quad-1") -> DeviceRecord:
        key = key or self.device_key
        return DeviceRecord(device_id, airframe, key.public_key, KeyKind.SOFTWARE)

    def enrollment_bytes(self, record: DeviceRecord) -> bytes:
        return dsse.sign(dsse.DEVICE_PAYLOAD_TYPE, jsonio.dumps(record.to_json()), self.m_keys[:2]).to_bytes()


def measurements(*, image: bytes = FW_IMAGE, gate: bytes = GATE_LUA, extra_scripts: dict[str, bytes] | None = None,
                 param_values: dict[str, float] | None = None, git_hash: str = "2598e9d4", board_id: int = 0,
                 components: list[Measurement] | None = None) -> list[Measurement]:
    values = PARAMS if param_values is None else param_values
    out = [
        Measurement("fc.firmware", Kind.FIRMWARE, {}, "mavlink:AUTOPILOT_VERSION", Strength.SELF_REPORTED,
                    {"git_hash": git_hash, "version": "4.7.0", "board_id": board_id, "uid": "0"}),
        Measurement("fc.firmware-image", Kind.FIRMWARE_IMAGE, {"sha256": sha(image)}, "file:arducopter",
                    Strength.IMAGE_AND_BOOTLOADER, {}),
        Measurement("fc.script:scripts/flightseal.lua", Kind.SCRIPT, {"sha256": sha(gate)}, "mavlink-ftp",
                    Strength.SELF_REPORTED, {"path": "scripts/flightseal.lua"}),
        Measurement("fc.params", Kind.PARAMS, {"sha256": params.digest(values)}, "mavlink-ftp:@PARAM/param.pck",
                    Strength.SELF_REPORTED,
                    {"param.ARMING_CHECK": values.get("ARMING_CHECK", 0.0),
                     "param.SCR_ENABLE": values.get("SCR_ENABLE", 0.0),
                     "exclude": ",".join(params.DEFAULT_EXCLUSIONS), "count": len(values)}),
    ]
    for path, data in (extra_scripts or {}).items():
        out.append(Measurement(f"fc.script:{path}", Kind.SCRIPT, {"sha256": sha(data)}, "mavlink-ftp",
                               Strength.SELF_REPORTED, {"path": path}))
    out += components if components is not None else [camera()]
    return out


def camera(vendor: str = "Acme Optics", hardware_id: str = "cam-0001", origin: str = "",
           component: str = "mavlink:1/100") -> Measurement:
    claims: dict[str, str | int | float | bool] = {"vendor": vendor, "model": "AC-1", "hardware_id": hardware_id}
    if origin:
        claims["origin"] = origin
    return Measurement(component, Kind.COMPONENT, {}, "mavlink:HEARTBEAT", Strength.OBSERVED, claims)


def predicate(world: World, manifest_bytes: bytes, ms: list[Measurement], verdict: Verdict, nonce: bytes,
              device_id: str = "drone-001", time: datetime | None = None) -> Predicate:
    from attest.evidence import ManifestRef

    env = dsse.Envelope.from_bytes(manifest_bytes, "manifest")
    manifest = Manifest.from_json(env.payload_json("manifest"))
    return Predicate(device_id, "FS-Quad-1", KeyKind.SOFTWARE, nonce, time or world.now,
                     ManifestRef(sha(env.payload), manifest.version), tuple(ms), verdict)
