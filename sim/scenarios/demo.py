"""``flightseal demo``: the whole story on one machine, with real components.

Flight controller: ArduPilot SITL when ``FLIGHTSEAL_SITL_BINARY`` is set, else the virtual FC
(which runs the project's real Lua gate in lupa). Device key: a TPM 2.0 key in swtpm. Then:
manufacturer keys 2-of-3 → root → device key proven to be in the TPM (EK certificate from swtpm's local
CA, credential activation) and enrolled → gate installed over MAVLink → FC measured
and the manifest signed for what was measured → agent running → arming **accepted** → an
approved Lua script changed on the FC → arming **refused** → restored → a pinned parameter
changed → arming **refused** → restored → an operator challenge verified offline → a tampered
manifest → arming **refused** → an unsigned MAV_CMD_SCRIPTING stop with the agent killed → arming
**refused** by ArduPilot's script checksum → reboot → MAVLink2 signing set up → the same stop from
the unsigned telemetry radio is dropped and the pilot's signed arming is **accepted**. Any step that
does not behave ends the demo with exit code 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from agent.challenge import request_attestation
from agent.gate.install import install_gate
from agent.mavlink import ids
from agent.mavlink.link import Link, LinkConfig
from attest import timeutil
from attest.verify import VerificationResult, verify_attestation
from hardware.quote_check import default_quote_checker
from sim.scenarios.demo_files import fresh_out_dir
from sim.scenarios.rig import ArmResult, Gcs, Rig
from sim.scenarios.steps import StepFailed, StepTable
from truststore.trustdir import TrustDir

MISSION_SCRIPT = (b"-- mission helper approved by the manufacturer\n"
                  b"local function update()\n  return update, 1000\nend\nreturn update, 1000\n")
TAMPERED_SCRIPT = MISSION_SCRIPT + b"-- added after approval: sends telemetry elsewhere\n"
TPM_HANDLE = 0x81010100


@dataclass
class Fc:
    """The flight controller under test and where its files live on this host."""

    kind: str
    companion_url: str
    gcs_url: str
    scripts_dir: Path
    arm_timeout: float  # SITL needs its EKF to settle before any arming is accepted
    radio_url: str  # a third MAVLink port: the telemetry radio an attacker holds


@contextlib.contextmanager
def _virtual_fc() -> Iterator[Fc]:
    from sim.vfc.config import VfcConfig
    from sim.vfc.lua_host import LuaScriptingAuthority
    from sim.vfc.server import VirtualFC

    image = b"".join(i.to_bytes(4, "little") for i in range(64 * 1024))  # stands in for the flashed image
    with VirtualFC(VfcConfig(channels=3, scripting=False, flash_image=image, scripts={"mission.lua": MISSION_SCRIPT}),
                   authority=LuaScriptingAuthority()) as fc:
        yield Fc("virtual FC (ArduCopter 4.7.0-dev behaviour, real Lua gate in lupa)", fc.url(1), fc.url(0),
                 fc.scripts_dir, 10.0, fc.url(2))


@contextlib.contextmanager
def _sitl() -> Iterator[Fc]:
    from sim.launchers.sitl import Sitl, SitlConfig, free_instance

    with Sitl(SitlConfig(instance=free_instance(), scripts={"mission.lua": MISSION_SCRIPT})) as sitl:
        yield Fc(f"ArduPilot SITL ({sitl.binary})", sitl.url, f"tcp:127.0.0.1:{sitl.port(0)}", sitl.scripts_dir,
                 100.0, f"tcp:127.0.0.1:{sitl.port(2)}")


def _arm_until(gcs: Gcs, *, accepted: bool, timeout: float, text: str = "") -> ArmResult:
    """Try to arm until the FC answers as expected; disarm again after an accepted arm."""
    deadline = time.monotonic() + timeout
    last = ArmResult(False, None, "no answer")
    while time.monotonic() < deadline:
        last = gcs.arm()
        if last.accepted:
            gcs.disarm()
            if accepted:
                return last
        elif not accepted and text in last.text:
            return last
        time.sleep(1.0)
    raise StepFailed(f"expected arming {'accepted' if accepted else 'refused with ' + text}, got {last}")


@dataclass
class Device:
    """The companion's device key in swtpm, proven to be in a TPM (EK certificate, credential activation)."""

    tpm: Any
    signer: Any
    evidence: Any


def device_key(t: StepTable, stack: contextlib.ExitStack, out: Path) -> Device:
    """The demo's first three steps, the same for every FC."""
    from attest.tpm_evidence import load_cas
    from hardware.tpm import create_key
    from hardware.tpm_credential import prove_bench
    from sim.launchers.swtpm import Swtpm

    tpm = t.run("start swtpm (TPM 2.0 emulator, EK certificate from its local CA)",
                lambda: stack.enter_context(Swtpm(ek_cert=True)), lambda s: s.tcti)
    ak_uri = f"{tpm.key_uri(TPM_HANDLE)};auth={out / 'tpm-ak.auth'}"  # the key's auth value stays in out/
    signer = t.run("create device key in the TPM", lambda: create_key(ak_uri),
                   lambda k: f"{k.public_key.keyid[:16]}… ({k.kind}, handle {TPM_HANDLE:#x})")
    stack.callback(signer.close)
    cas = [c for f in tpm.ek_ca_certs for c in load_cas(f.read_bytes(), str(f))]
    proven = t.run("prove the key is in the TPM (EK certificate, credential activation)",
                   lambda: prove_bench(signer.uri, cas, timeutil.now()),
                   lambda p: f"EK vouched for by {p.evidence.ek_ca.subject}")
    return Device(tpm, signer, proven.evidence)


def enroll(t: StepTable, out: Path, dev: Device, companion_url: str, gcs_url: str, **rig_options: Any) -> Rig:
    """Keys, root and enrolment (the fourth step), and the EK's CAs where the verifier looks."""
    rig = t.run("manufacturer keys 2-of-3, root, enroll device",
                lambda: Rig(out, companion_url, gcs_url, dev.signer, tpm_evidence=dev.evidence, **rig_options),
                lambda r: f"root {r.root_path}, device drone-001 ({dev.signer.kind} key, proven)")
    (rig.trust_dir / "tpm-cas").mkdir(exist_ok=True)  # the verifier re-checks the EK certificate too
    for f in dev.tpm.ek_ca_certs:
        shutil.copyfile(f, rig.trust_dir / "tpm-cas" / f.name)
    return rig


def run_demo(out: Path, *, use_sitl: bool | None = None) -> None:
    fresh_out_dir(out)
    sitl = bool(os.environ.get("FLIGHTSEAL_SITL_BINARY")) if use_sitl is None else use_sitl
    t = StepTable()
    with contextlib.ExitStack() as stack:
        dev = device_key(t, stack, out)
        signer = dev.signer
        fc = t.run("start flight controller", lambda: stack.enter_context(_sitl() if sitl else _virtual_fc()),
                   lambda f: f.kind)
        rig = enroll(t, out, dev, fc.companion_url, fc.gcs_url)

        def install() -> int:
            assert rig.gate_key is not None  # made by Rig.__post_init__
            with Link.open(LinkConfig(fc.companion_url, heartbeat_timeout=30.0)) as link:
                return install_gate(link, rig.gate_key).version

        t.run("install the Lua gate over MAVLink (upload, SCR_ENABLE, reboot)", install, lambda v: f"gate v{v}")
        gcs = stack.enter_context(_closing(Gcs(fc.gcs_url)))
        t.run("gate blocks arming before any verdict",
              lambda: _arm_until(gcs, accepted=False, timeout=15, text="FlightSeal: waiting"), str)
        measured = t.run("measure the FC (firmware, scripts, parameters, parts)", rig.measure_fc,
                         lambda ms: f"{len(ms)} measurements")
        t.run("sign manifest v1 for what was measured (keys 2 and 3)",
              lambda: rig.sign_manifest(rig.baseline_manifest(measured)), lambda b: f"{len(b)} bytes")
        t.run("start the agent", lambda: rig.start_agent(rig.config(str(signer.uri))), lambda _: "")
        stack.callback(rig.stop_agent)
        t.run("agent verdict delivered to the gate", lambda: rig.wait_verdict(passed=True, timeout=60),
              lambda d: "PASS")
        t.run("arm: ACCEPTED", lambda: _arm_until(gcs, accepted=True, timeout=fc.arm_timeout), str)

        mission = fc.scripts_dir / "mission.lua"
        t.run("tamper: change approved scripts/mission.lua on the FC", lambda: mission.write_bytes(TAMPERED_SCRIPT),
              lambda _: "")
        t.run("arm: REFUSED", lambda: _refused(rig, gcs, "script-mismatch"), str)
        t.run("restore the script", lambda: _restored(rig, lambda: mission.write_bytes(MISSION_SCRIPT)),
              lambda _: "PASS")
        t.run("tamper: set pinned parameter FS_THR_ENABLE=0 from the GCS",
              lambda: gcs.set_param("FS_THR_ENABLE", 0), lambda _: "")
        t.run("arm: REFUSED", lambda: _refused(rig, gcs, "param-pinned", "FlightSeal: pinned FS_THR_ENABLE"), str)
        t.run("restore the parameter", lambda: _restored(rig, lambda: gcs.set_param("FS_THR_ENABLE", 1)),
              lambda _: "PASS")

        operator_checks(t, rig, gcs, out, "operator challenge over MAVLink (fresh nonce)",
                        lambda: _refused(rig, gcs, "manifest-"))
        t.run("attack: unsigned MAV_CMD_SCRIPTING stop from the GCS port, then the agent killed",
              lambda: _stop_gate(rig, gcs), lambda _: "the gate's last state was a pass")
        t.run("arm: REFUSED by ArduPilot's script checksum (ADR 0013)",
              lambda: _arm_until(gcs, accepted=False, timeout=20, text="Scripting: running CRC incorrect"), str)

        gcs.close()
        t.run("reboot the FC (scripting loads the gate again)", lambda: _reboot(fc), lambda _: "")
        key = t.run("set up MAVLink2 signing (new key, sent to the FC, unsigned radio dropped)",
                    lambda: _signing(fc, out / "signing"), lambda k: f"key in {out / 'signing'}/")
        rig.signing_key = key
        t.run("restart the agent on the signed link", lambda: rig.start_agent(rig.config(str(signer.uri))),
              lambda _: "")
        t.run("agent verdict delivered to the gate", lambda: rig.wait_verdict(passed=True, timeout=60),
              lambda d: "PASS")
        gcs = stack.enter_context(_closing(Gcs(fc.gcs_url, signing_key=key)))
        t.run("attack: unsigned MAV_CMD_SCRIPTING stop from the telemetry radio", lambda: _radio_stop(fc),
              lambda _: "sent")
        t.run("arm (signed GCS): ACCEPTED, the FC dropped the unsigned stop",
              lambda: _arm_until(gcs, accepted=True, timeout=fc.arm_timeout), str)
    click.echo(f"demo passed: {len(t.rows)} steps; attestation and files in {out}/")


def operator_checks(t: StepTable, rig: Rig, gcs: Gcs, out: Path, challenge_step: str,
                    refused: Callable[[], object]) -> None:
    """The steps both demos share: the operator's challenge verified offline (files in ``out``), then a
    manifest changed without re-signing refused (``refused`` waits for it the FC's way) and restored."""
    nonce = secrets.token_bytes(32)
    data = t.run(challenge_step, lambda: request_attestation(gcs.conn, nonce, timeout=30), lambda d: f"{len(d)} bytes")
    (out / "attestation.json").write_bytes(data)
    result = t.run("verify offline at the ground station", lambda: _verify(rig, data, nonce), _describe)
    (out / "verification.json").write_text(json.dumps({"passed": result.passed, "reasons": [
        r.to_json() for r in result.reasons]}, indent=2))
    signed = rig.manifest_path.read_bytes()
    t.run("tamper: approve an extra script in the manifest without re-signing",
          lambda: _tamper_manifest(rig.manifest_path), lambda _: "signature broken")
    t.run("arm: REFUSED", refused, str)
    t.run("restore the signed manifest", lambda: _restored(rig, lambda: rig.manifest_path.write_bytes(signed)),
          lambda _: "PASS")


def _reboot(fc: Fc) -> None:
    with Link.open(LinkConfig(fc.gcs_url, heartbeat_timeout=30.0)) as link:
        link.command_long(ids.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, (1.0,), timeout=1.0, retries=2)
    time.sleep(3.0)
    with Link.open(LinkConfig(fc.gcs_url, heartbeat_timeout=60.0)):
        pass


def _signing(fc: Fc, directory: Path) -> bytes:
    from agent.signing import SigningSecret, answers_unsigned, fc_signs, save_secret, send_key

    secret = SigningSecret.generate()
    save_secret(directory, secret)
    with Link.open(LinkConfig(fc.companion_url, heartbeat_timeout=30.0)) as link:
        send_key(link, secret.key)
    if not fc_signs(fc.companion_url, secret.key):
        raise StepFailed("the FC does not sign with the new key")
    if answers_unsigned(fc.radio_url):
        raise StepFailed("the FC still answers the unsigned radio")
    return secret.key


def _radio_stop(fc: Fc) -> None:
    with _closing(Gcs(fc.radio_url)) as radio:
        radio.conn.mav.command_long_send(1, 1, 42701, 0, 2, 0, 0, 0, 0, 0, 0)  # MAV_CMD_SCRIPTING stop
        time.sleep(1.0)


def _stop_gate(rig: Rig, gcs: Gcs) -> None:
    gcs.conn.mav.command_long_send(1, 1, 42701, 0, 2, 0, 0, 0, 0, 0, 0)  # MAV_CMD_SCRIPTING, SCRIPTING_CMD_STOP
    rig.stop_agent()


def _restored(rig: Rig, undo: Callable[[], object]) -> None:
    undo()
    rig.wait_verdict(passed=True, timeout=30)


def _refused(rig: Rig, gcs: Gcs, code: str, text: str | None = None) -> ArmResult:
    """Wait for the agent's fail verdict with ``code``, then see the FC refuse with ``text`` (default: the code)."""
    rig.wait_verdict(passed=False, code=None if code.endswith("-") else code, timeout=30)
    return _arm_until(gcs, accepted=False, timeout=15, text=text or f"FlightSeal: {code}")


def _verify(rig: Rig, data: bytes, nonce: bytes) -> VerificationResult:
    td = TrustDir(rig.trust_dir)
    state = td.trusted_state()
    result = verify_attestation(data, trust=state, devices=td.devices(state), manifest_bytes=td.manifest_bytes(),
                                nonce=nonce, now=timeutil.now(), quote_checker=default_quote_checker(),
                                tpm_vendor_cas=td.tpm_cas())
    if not result.passed:
        raise StepFailed("; ".join(str(r) for r in result.reasons))
    return result


def _describe(r: VerificationResult) -> str:
    p = r.predicate
    quote = "TPM quote checked" if p is not None and p.quote is not None else "no quote"
    return f"PASS ({r.device.key_kind if r.device else '?'} key, {quote}, {len(p.measurements) if p else 0} " \
           "measurements)"


def _tamper_manifest(path: Path) -> None:
    doc = json.loads(path.read_text())
    import base64

    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["allow_unlisted_scripts"] = True
    doc["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    path.write_text(json.dumps(doc))


@contextlib.contextmanager
def _closing(g: Gcs) -> Iterator[Gcs]:
    try:
        yield g
    finally:
        g.close()

