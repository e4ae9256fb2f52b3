"""The core's end-to-end flow on files, as a demo: no flight controller needed.

Manufacturer keys (2-of-3) → root → manifest → device key and enrollment → measurements of a
firmware image, a Lua script and parameters → attestation → offline verification (pass) →
tampered script (device verdict fails, verifier refuses) → expired manifest (refused).
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from agent.attestation import check_manifest, seal_measurements
from attest import dsse, jsonio, params, timeutil
from attest.enrollment import DeviceRecord
from attest.manifest import Airframe, Firmware, Manifest, ParamPolicy, Script
from attest.models import Kind, Measurement, Strength
from attest.root import Role, Root
from attest.trust import TrustedState
from attest.verify import VerificationResult, VerifierPolicy, verify_attestation
from hardware.software import SoftwareSigner, write_private_key
from sim.scenarios.steps import StepFailed, StepTable

FIRMWARE = b"demo firmware image " * 4096
SCRIPT = b"-- approved Lua script\nreturn function() end\n"
PARAMS = {"ARMING_CHECK": 1.0, "SCR_ENABLE": 1.0, "ATC_RAT_RLL_P": 0.135, "STAT_RUNTIME": 42.0}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _measure(script: bytes) -> list[Measurement]:
    return [
        Measurement("fc.firmware", Kind.FIRMWARE, {}, "demo:AUTOPILOT_VERSION", Strength.SELF_REPORTED,
                    {"git_hash": "2598e9d4", "version": "4.7.0", "board_id": 0}),
        Measurement("fc.firmware-image", Kind.FIRMWARE_IMAGE, {"sha256": _sha(FIRMWARE)}, "demo:file",
                    Strength.IMAGE_AND_BOOTLOADER),
        Measurement("fc.script:scripts/flightseal.lua", Kind.SCRIPT, {"sha256": _sha(script)}, "demo:ftp",
                    Strength.SELF_REPORTED, {"path": "scripts/flightseal.lua"}),
        Measurement("fc.params", Kind.PARAMS, {"sha256": params.digest(PARAMS)}, "demo:param.pck",
                    Strength.SELF_REPORTED, {"param.ARMING_CHECK": 1.0,
                                             "exclude": ",".join(params.DEFAULT_EXCLUSIONS)}),
    ]


DEMO_MARKER = ".flightseal-demo"


def fresh_out_dir(out: Path) -> None:
    """Start ``out`` empty, so the demo can run again in the same place.

    Each run is a new airframe with new keys: what an earlier run left (above all the highest
    manifest version it recorded) belongs to another trust root and would read as a rollback. Only
    a directory an earlier demo made (it holds the marker file) is emptied; anything else is refused.
    """
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).is_file():
            raise StepFailed(f"{out} is not empty and was not made by the demo: choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by `flightseal demo`; emptied by the next run\n")


def run_file_demo(out: Path) -> None:
    fresh_out_dir(out)
    t = StepTable()
    now = timeutil.now()
    makers = t.run("create 3 manufacturer keys (threshold 2)", lambda: [SoftwareSigner.generate() for _ in range(3)],
                   lambda ks: ", ".join(k.public_key.keyid[:8] for k in ks))
    for i, k in enumerate(makers):
        path = out / f"manufacturer-{i + 1}.pem"
        if not path.exists():
            write_private_key(path, k)
    device = t.run("create device key (software: development only)", SoftwareSigner.generate,
                   lambda k: k.public_key.keyid[:16])
    role = Role(tuple(k.public_key.keyid for k in makers), 2)
    root = Root(1, now + timedelta(days=365), {k.public_key.keyid: k.public_key for k in makers},
                {"root": role, "manifest": role, "enrollment": role})
    root_bytes = t.run("sign root 2-of-3", lambda: dsse.sign(dsse.ROOT_PAYLOAD_TYPE, jsonio.dumps(root.to_json()),
                                                              makers[:2]).to_bytes())
    manifest = Manifest(
        version=1, expires=now + timedelta(days=90), airframe=Airframe("FS-Quad-1", device_ids=("drone-001",)),
        firmware=(Firmware("arducopter", "4.7.0", "2598e9d4", 0, 1, _sha(FIRMWARE)),),
        scripts=(Script("scripts/flightseal.lua", _sha(SCRIPT), required=True),),
        params=ParamPolicy(pinned={"ARMING_CHECK": 1.0}, digest=params.digest(PARAMS)),
        min_strength={Kind.FIRMWARE_IMAGE: Strength.IMAGE_AND_BOOTLOADER},
    )
    manifest_bytes = t.run("sign manifest 2-of-3 (keys 2 and 3)", lambda: dsse.sign(
        dsse.MANIFEST_PAYLOAD_TYPE, jsonio.dumps(manifest.to_json()), makers[1:]).to_bytes())
    record = DeviceRecord("drone-001", "FS-Quad-1", device.public_key, device.kind)
    enrollment = dsse.sign(dsse.DEVICE_PAYLOAD_TYPE, jsonio.dumps(record.to_json()), makers[:2]).to_bytes()
    trust = TrustedState(root_bytes)
    devices = [t.run("enroll device (2-of-3 enrollment keys)", lambda: trust.verify_enrollment(enrollment),
                     lambda r: r.device_id)]
    for name, data in (("root.json", root_bytes), ("manifest.json", manifest_bytes), ("device.json", enrollment)):
        (out / name).write_bytes(data)
    policy = VerifierPolicy(allow_software_keys=True)

    def attest_and_verify(script: bytes, mbytes: bytes, label: str) -> VerificationResult:
        nonce = secrets.token_bytes(32)
        sealed = seal_measurements(_measure(script), check_manifest(trust, mbytes, timeutil.now()), device,
                                   device_id="drone-001", airframe="FS-Quad-1", nonce=nonce, now=timeutil.now())
        (out / f"attestation-{label}.json").write_bytes(sealed.envelope.to_bytes())
        return verify_attestation(sealed.envelope.to_bytes(), trust=trust, devices=devices, manifest_bytes=mbytes,
                                  nonce=nonce, now=timeutil.now(), policy=policy)

    def expect_pass() -> VerificationResult:
        r = attest_and_verify(SCRIPT, manifest_bytes, "good")
        if not r.passed:
            raise StepFailed("; ".join(str(x) for x in r.reasons))
        return r

    def expect_refused(script: bytes, mbytes: bytes, label: str, code: str) -> VerificationResult:
        r = attest_and_verify(script, mbytes, label)
        codes = [x.code.value for x in r.reasons]
        if r.passed or code not in codes:
            raise StepFailed(f"expected {code}, got {codes or 'PASS'}")
        return r

    t.run("attest approved airframe, verify offline", expect_pass, lambda r: "PASS")
    t.run("tamper Lua script → refused", lambda: expect_refused(b"-- evil\n", manifest_bytes, "tampered",
                                                                 "script-mismatch"),
          lambda r: "REFUSED: " + ", ".join(x.code.value for x in r.reasons))
    expired = dsse.sign(dsse.MANIFEST_PAYLOAD_TYPE,
                        jsonio.dumps(replace(manifest, expires=now - timedelta(seconds=1)).to_json()),
                        makers[1:]).to_bytes()
    t.run("expired manifest → refused", lambda: expect_refused(SCRIPT, expired, "expired", "manifest-expired"),
          lambda r: "REFUSED: " + ", ".join(x.code.value for x in r.reasons))
