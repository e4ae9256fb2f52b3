"""The FlightSeal MAVProxy module (``module load agent.mavproxy_flightseal``) in a real MAVProxy on the
virtual FC's GCS port, with the agent running on the companion port (issue 16). The operator types
``fs …`` lines on MAVProxy's console; what it prints is read back. One MAVProxy session serves the
tests in order (pass, wrong device, stale, ``flightseal challenge`` through MAVProxy's ``--out``,
then the tampered airframe last, since it changes the FC)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.prearm_words import CODES, explain
from attest.models import Code
from hardware.software import SoftwareSigner
from sim.launchers.mavproxy import mavproxy_command
from sim.scenarios.rig import DEVICE_ID, GATE_KEY, Rig, gate_scripts
from sim.vfc.config import VfcConfig
from sim.vfc.lua_host import LuaScriptingAuthority
from sim.vfc.server import VirtualFC
from tests.field import free_udp_port
from tests.mavproxy_console import Console

IMAGE = b"\x00\x10\x00\x20 virtual FC firmware image " * 2048


@dataclass
class Field:
    fc: VirtualFC
    rig: Rig
    console: Console
    out_port: int
    workdir: Path


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Field]:
    if mavproxy_command() is None:
        pytest.skip("MAVProxy is not installed (scripts/install.sh installs it from PyPI)")
    workdir = tmp_path_factory.mktemp("mavproxy-module")
    fc = VirtualFC(VfcConfig(scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=IMAGE, prearm_period=1.0),
                   authority=LuaScriptingAuthority()).start()
    rig: Rig | None = None
    console: Console | None = None
    try:
        rig = Rig(workdir / "rig", fc.url(1), fc.url(0), SoftwareSigner.generate(), gate_key=GATE_KEY)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        rig.start_agent()
        rig.wait_verdict(passed=True, timeout=60)
        out_port = free_udp_port()
        console = Console(fc.url(0), workdir / "gcs", out_ports=[out_port])
        console.wait("Loaded module agent.mavproxy_flightseal", timeout=30)
        console.wait("Received ", timeout=60)  # the link is up: MAVProxy has the parameters
        for line in (f"fs set trust {rig.trust_dir}", "fs set allow_software_keys on",
                     f"fs set results {workdir / 'results'}", "fs set timeout 20"):
            console.run(line, "fs: ", timeout=10)
        yield Field(fc, rig, console, out_port, workdir)
    finally:
        if console is not None:
            console.stop()
        if rig is not None:
            rig.stop_agent()
        fc.stop()


def test_fs_challenge_collects_saves_and_verifies_a_passing_airframe(field: Field) -> None:
    out = field.console.run("fs challenge", "fs: PASS", timeout=40)
    assert f"PASS device {DEVICE_ID}" in out and "fs: error" not in out
    saved = sorted((field.workdir / "results").glob("*.attestation"))
    assert saved and saved[-1].with_suffix(".json").is_file(), "the attestation and its nonce are kept"
    status = field.console.run("fs status", "fs: measurements:", timeout=10)
    assert "last verdict: PASS" in status and f"device: {DEVICE_ID}" in status and "manifest: v1" in status


def test_fs_challenge_for_another_device_fails_naming_it(field: Field) -> None:
    out = field.console.run("fs challenge --device drone-999", "fs: FAIL", timeout=40)
    assert "FAIL wrong-device" in out, out


def test_fs_verify_of_an_old_attestation_fails_stale(field: Field) -> None:
    field.console.run("fs set max_age 1", "fs: max_age set", timeout=10)
    try:
        time.sleep(2.1)
        old = sorted((field.workdir / "results").glob("*.attestation"))[0]
        out = field.console.run(f"fs verify {old}", "fs: FAIL", timeout=20)
        assert "FAIL attestation-stale" in out, out
        # and an old file offered against another challenge's nonce is a replay
        out = field.console.run(f"fs verify {old} --nonce {'ab' * 32}", "fs: FAIL", timeout=20)
        assert "FAIL nonce-mismatch" in out, out
    finally:
        field.console.run("fs set max_age 300", "fs: max_age set", timeout=10)


def test_errors_are_one_line_never_a_traceback(field: Field) -> None:
    out = field.console.run("fs verify /nonexistent.attestation --nonce 00", "fs: error", timeout=10)
    out += field.console.run("fs set target nonsense", "fs: error", timeout=10)
    out += field.console.run("fs frobnicate", "fs: error: usage", timeout=10)
    assert "Traceback" not in field.console.output()


def test_flightseal_challenge_through_mavproxy_out_gets_and_verifies(field: Field, tmp_path: Path) -> None:
    att = tmp_path / "att.dsse"
    nonce = "cd" * 32
    cli = [sys.executable, "-m", "agent", "challenge", "--mavlink", f"udpin:127.0.0.1:{field.out_port}",
           "--nonce", nonce, "--timeout", "30", "-o", str(att)]
    got = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stdout + got.stderr
    ver = subprocess.run([sys.executable, "-m", "agent", "verify", str(att), "--trust", str(field.rig.trust_dir),
                          "--nonce", nonce, "--allow-software-keys", "--device", DEVICE_ID],
                         capture_output=True, text=True, timeout=60)
    assert ver.returncode == 0 and f"PASS device {DEVICE_ID}" in ver.stdout, ver.stdout + ver.stderr


def test_fs_push_sends_the_saved_results_to_the_fleet_service(field: Field) -> None:
    """Results go to the fleet service when one is set: the airframe shows up there, verified again."""
    import httpx

    from fleet.auth import Auth
    from tests.fleet_kit import running, service

    class Trust:  # the operator's trust dir is the one the service verifies against
        trust = field.rig.trust_dir

    app, engine = service(field.workdir, Trust)  # type: ignore[arg-type]
    token = Auth(engine).create_token("operator-laptop", "operator", "test")
    (field.workdir / "fleet.token").write_text(token + "\n")
    with running(app) as url:
        field.console.run(f"fs set fleet {url} {field.workdir / 'fleet.token'}", "fs: ", timeout=10)
        out = field.console.run("fs push", "fs: pushed ", timeout=30)
        seen = httpx.get(f"{url}/api/v1/devices/{DEVICE_ID}", headers={"Authorization": f"Bearer {token}"})
        again = field.console.run("fs push", "fs: nothing to push", timeout=10)
    saved = list((field.workdir / "results").glob("*.attestation"))
    assert f"fs: pushed {len(saved)} of {len(saved)}" in out, out
    assert seen.status_code == 200 and seen.json()["last_attempt"], seen.text
    assert "nothing to push" in again


def test_a_tampered_airframe_fails_with_the_reason_and_prearm_in_plain_words(field: Field) -> None:
    since = field.console.mark()
    (field.fc.scripts_dir / "evil.lua").write_bytes(b"-- exfiltrate telemetry\nreturn function() end\n")
    field.rig.wait_verdict(passed=False, code="script-unknown", timeout=30)
    out = field.console.run("fs challenge", "fs: FAIL", timeout=40)
    assert "FAIL script-unknown" in out and "evil.lua" in out, out
    field.console.wait(f"-> {CODES[Code.SCRIPT_UNKNOWN]}", since, timeout=20)  # beside ArduPilot's PreArm text
    status = field.console.run("fs status", "fs: device:", timeout=10)
    assert "last verdict: FAIL" in status and "script-unknown" in status


def test_every_reason_code_and_gate_text_has_plain_words() -> None:
    assert all(code in CODES for code in Code)
    assert explain("PreArm: FlightSeal: pinned FS_THR_ENABLE") == \
        "pinned (safety) parameter FS_THR_ENABLE has been changed"
    assert explain("PreArm: FlightSeal: waiting") is not None
    assert explain("PreArm: Battery low") is None
