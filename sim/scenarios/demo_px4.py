"""``flightseal demo --fc px4``: the same story on PX4, whose arm authorization asks the agent (ADR 0024).

Flight controller: PX4 SITL (SIH quadrotor) when ``FLIGHTSEAL_PX4_SITL`` is set, else the virtual
PX4 (which behaves as recorded from PX4 SITL in ``tests/data/px4-sitl/``). The steps follow the
ArduPilot demo's: device key in swtpm → root and enrolment → PX4's arm authorization turned on
(`gate install`) → arming refused while nobody answers → FC measured, manifest signed → agent
running → arming **accepted** → the airframe file changed (and PX4 rebooted) → **refused** →
restored → a pinned parameter changed → **refused** → restored → an operator challenge verified
offline → a tampered manifest → **refused** → the agent killed → **refused** by PX4 itself → the
agent back, then a forged authorization from the telemetry radio while the agent refuses: PX4 v1.16
takes it (it does not check who authorizes) and the agent calls it out (``posture-gate-forgery``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from agent.gate.install_px4 import install_px4_gate
from agent.mavlink.ids import MAV_CMD_ARM_AUTHORIZATION_REQUEST, MAV_RESULT_ACCEPTED
from agent.mavlink.link import Link, LinkConfig
from sim.scenarios.demo import _arm_until, _closing, device_key, enroll, operator_checks
from sim.scenarios.demo_files import fresh_out_dir
from sim.scenarios.rig import PX4_ARM_TEXTS, Gcs, Rig
from sim.scenarios.steps import StepFailed, StepTable

PINNED_TAMPER = ("NAV_RCL_ACT", 0.0)  # RC loss action: 0 = disabled (a pinned safety value)
AIRFRAME_TAMPER = b"\n# added after approval\nparam set-default NAV_RCL_ACT 0\n"
FORGER_SYSTEM = 77
ARMED_FOR_S = 3.0
REBOOT_S = 5.0  # a PX4 restart is silent for seconds (SITL: a new process); the agent sees the heartbeat gap
AIRFRAME_FILE = "etc/init.d-posix/airframes/10040_sihsim_quadx"  # SYS_AUTOSTART 10040, as PX4 SITL serves it


@dataclass
class Px4Fc:
    """A PX4 under test: its links, its system id, and its files as the FC serves them."""

    kind: str
    companion_url: str
    gcs_url: str
    radio_url: str  # the attacker's telemetry radio: another client on a link that reaches PX4
    sysid: int
    arm_timeout: float  # PX4 needs its estimator to settle before any arming is accepted
    airframe_file: str  # as MAVLink FTP serves it
    read_file: Callable[[str], bytes]
    write_file: Callable[[str, bytes], object]
    reboot: Callable[[], object]
    firmware_file: Path | None = None  # the image on the companion; None: FLIGHTSEAL_PX4_SITL's bin/px4
    ground_url: str = ""  # where a ground station listens, so one restarted there stays PX4's partner


@contextlib.contextmanager
def _px4_sitl() -> Iterator[Px4Fc]:
    from sim.launchers.px4 import Px4Config, Px4Sitl

    instance = int(os.environ.get("FLIGHTSEAL_PX4_INSTANCE", "0"))  # global on the machine: one per runner
    with Px4Sitl(Px4Config(instance=instance, private_etc=True)) as sitl:
        yield Px4Fc(f"PX4 SITL ({sitl.binary}, SIH quadrotor)", sitl.onboard_url, sitl.gcs_url, sitl.gcs_url,
                    sitl.sysid, 60.0, AIRFRAME_FILE, lambda p: (sitl.workdir / p).read_bytes(),
                    lambda p, data: (sitl.workdir / p).write_bytes(data), lambda: sitl.reboot(),
                    ground_url=sitl.gcs_listen_url)


@contextlib.contextmanager
def _virtual_px4() -> Iterator[Px4Fc]:
    from sim.vfc.px4 import VirtualPx4

    with VirtualPx4() as fc, tempfile.TemporaryDirectory(prefix="flightseal-vpx4-image-") as tmp:
        image = Path(tmp) / "px4"  # stands in for PX4's binary, which a PX4 board serves no copy of
        image.write_bytes(b"".join(i.to_bytes(4, "little") for i in range(64 * 1024)))
        yield Px4Fc("virtual PX4 (PX4 v1.16.0 SITL behaviour, arm authorization as recorded)", fc.url, fc.gcs_url,
                    fc.gcs_url, fc.sysid, 15.0, AIRFRAME_FILE, fc.read_file, fc.write_file,
                    lambda: fc.reboot(gap=REBOOT_S), image, fc.gcs_listen_url)


def run_px4_demo(out: Path, *, use_sitl: bool | None = None) -> None:
    from sim.launchers.px4 import ENV_PX4

    fresh_out_dir(out)
    sitl = bool(os.environ.get(ENV_PX4)) if use_sitl is None else use_sitl
    t = StepTable()
    with contextlib.ExitStack() as stack:
        dev = device_key(t, stack, out)
        fc = t.run("start flight controller", lambda: stack.enter_context(_px4_sitl() if sitl else _virtual_px4()),
                   lambda f: f.kind)
        rig = enroll(t, out, dev, fc.companion_url, fc.gcs_url, fc_kind="px4", fc_system_id=fc.sysid,
                     firmware_file=fc.firmware_file)

        def install() -> str:
            with Link.open(LinkConfig(fc.companion_url, heartbeat_timeout=30.0, fc_system_id=fc.sysid)) as link:
                report = install_px4_gate(link, LinkConfig.system_id)
            return ", ".join(f"{k}={v:g}" for k, v in report.params.items())

        t.run("turn on PX4's arm authorization over MAVLink (gate install: COM_ARM_AUTH_*)", install, str)
        gcs = stack.enter_context(_closing(Gcs(fc.gcs_url, target=(fc.sysid, 1), bytewise=True,
                                               arm_texts=PX4_ARM_TEXTS)))
        t.run("PX4 refuses arming while nobody answers",
              lambda: _arm_until(gcs, accepted=False, timeout=15, text="Arm auth: No response"), str)
        measured = t.run("measure the FC (firmware, airframe file, parameters, parts)", rig.measure_fc,
                         lambda ms: f"{len(ms)} measurements")
        t.run("sign manifest v1 for what was measured (keys 2 and 3)",
              lambda: rig.sign_manifest(rig.baseline_manifest(measured)), lambda b: f"{len(b)} bytes")
        t.run("start the agent", lambda: rig.start_agent(rig.config(str(dev.signer.uri))), lambda _: "")
        stack.callback(rig.stop_agent)
        t.run("agent holds a PASS for PX4's next request", lambda: rig.wait_verdict(passed=True, timeout=60),
              lambda d: "PASS")
        t.run("arm: ACCEPTED (PX4 asked, the agent authorized)",
              lambda: _arm_until(gcs, accepted=True, timeout=fc.arm_timeout), str)

        approved = fc.read_file(fc.airframe_file)
        t.run(f"tamper: change the airframe file {fc.airframe_file}, reboot PX4",
              lambda: _change_and_reboot(fc, rig, approved + AIRFRAME_TAMPER), lambda _: "")
        t.run("arm: REFUSED", lambda: _refused(rig, gcs, "script-mismatch"), str)
        t.run("restore the airframe file, reboot PX4", lambda: _restored(rig, lambda: _change_and_reboot(
            fc, rig, approved), timeout=90), lambda _: "PASS")
        name, value = PINNED_TAMPER
        before = gcs.get_param(name)
        t.run(f"tamper: set pinned parameter {name}={value:g} from the GCS", lambda: gcs.set_param(name, value),
              lambda _: "")
        t.run("arm: REFUSED", lambda: _refused(rig, gcs, "param-pinned", f"FlightSeal: pinned {name}"), str)
        t.run("restore the parameter", lambda: _restored(rig, lambda: gcs.set_param(name, before or 0.0)),
              lambda _: "PASS")

        operator_checks(t, rig, gcs, out, "operator challenge over MAVLink through PX4 (fresh nonce)",
                        lambda: _refused(rig, gcs, "manifest-"))
        t.run("attack: the agent killed", rig.stop_agent, lambda _: "nobody answers PX4 now")
        t.run("arm: REFUSED by PX4 itself (no authorizer answers)",
              lambda: _arm_until(gcs, accepted=False, timeout=15, text="Arm auth: No response"), str)
        t.run("restart the agent", lambda: rig.start_agent(rig.config(str(dev.signer.uri))), lambda _: "")
        t.run("agent holds a PASS again", lambda: rig.wait_verdict(passed=True, timeout=60), lambda d: "PASS")
        t.run(f"tamper: set pinned parameter {name}={value:g} again (the agent now refuses)",
              lambda: _tamper_and_wait(rig, gcs, name, value), lambda _: "")
        armed = t.run(f"attack: forged ACCEPTED acks from the telemetry radio (system {FORGER_SYSTEM})",
                      lambda: _forged_authorization(fc, gcs), _forged_outcome)
        t.run("the agent calls out the arming it did not authorize", lambda: _called_out(rig, gcs, armed),
              lambda code: f"every attestation now fails: {code}")
        gcs.set_param(name, before or 0.0)
    click.echo(f"demo passed: {len(t.rows)} steps; attestation and files in {out}/")


def _change_and_reboot(fc: Px4Fc, rig: Rig, data: bytes) -> None:
    fc.write_file(fc.airframe_file, data)
    fc.reboot()  # a startup file acts at boot; the agent re-measures after the FC's heartbeat gap


def _restored(rig: Rig, undo: Callable[[], object], timeout: float = 30.0) -> None:
    undo()
    rig.wait_verdict(passed=True, timeout=timeout)


def _refused(rig: Rig, gcs: Gcs, code: str, text: str | None = None) -> object:
    rig.wait_verdict(passed=False, code=None if code.endswith("-") else code, timeout=90)
    return _arm_until(gcs, accepted=False, timeout=20, text=text or "Arm auth: Denied")


def _tamper_and_wait(rig: Rig, gcs: Gcs, name: str, value: float) -> None:
    gcs.set_param(name, value)
    rig.wait_verdict(passed=False, code="param-pinned", timeout=30)


def _forged_authorization(fc: Px4Fc, gcs: Gcs, seconds: float = 6.0) -> bool:
    """The pilot arms while a forger on another link sends ACCEPTED acks in a loop; whether PX4 armed."""
    from pymavlink import mavutil

    forger = mavutil.mavlink_connection(fc.radio_url, source_system=FORGER_SYSTEM, source_component=190)
    stop = threading.Event()

    def forge() -> None:  # an ACCEPTED every 2 ms: one lands between PX4's request and the agent's answer
        while not stop.is_set():
            forger.mav.command_ack_send(MAV_CMD_ARM_AUTHORIZATION_REQUEST, MAV_RESULT_ACCEPTED, 0, 5, fc.sysid, 1)
            time.sleep(0.002)

    thread = threading.Thread(target=forge, name="forger", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + seconds
        armed = False
        while time.monotonic() < deadline and not armed:
            armed = gcs.arm(timeout=1.5).accepted
        if armed:
            time.sleep(ARMED_FOR_S)  # an attacker arms to fly; PX4 tells the onboard link in 1 Hz HEARTBEATs
            gcs.disarm()
        return armed
    finally:
        stop.set()
        thread.join(timeout=2)
        forger.close()


def _forged_outcome(armed: bool) -> str:
    return ("PX4 ARMED: v1.16 takes an authorization from anyone (ADR 0024)" if armed
            else "PX4 refused")


def _called_out(rig: Rig, gcs: Gcs, armed: bool) -> str:
    if not armed:
        return "nothing to call out"
    daemon = rig.wait_verdict(passed=False, code="posture-gate-forgery", timeout=60)
    assert daemon.status.delivered is not None
    if "posture-gate-forgery" not in [c.value for c in daemon.status.delivered.verdict.codes]:
        raise StepFailed("the agent did not call out the forged authorization")
    return "posture-gate-forgery"
