"""``flightseal measure`` and ``flightseal attest --mavlink`` against the virtual FC, end to end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli.main import main
from attest.models import Measurement
from sim.vfc import VfcConfig, VirtualFC

GATE = b"-- gate\n"


def run(*args: str, ok: int | None = 0) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok is not None:
        assert result.exit_code == ok, result.output
    return result


@pytest.fixture(autouse=True)
def no_sitl_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIGHTSEAL_SITL_BINARY", raising=False)


@pytest.fixture
def fc() -> Iterator[VirtualFC]:
    with VirtualFC(VfcConfig(scripts={"flightseal.lua": GATE}, flash_image=os.urandom(3000),
                             standby_delay=0.1)) as vfc:
        yield vfc


def test_measure_json_is_what_attest_reads(fc: VirtualFC) -> None:
    r = run("measure", "--mavlink", fc.url(1), "--json")
    items = json.loads(r.stdout)
    measured = [Measurement.from_json(i) for i in items]
    assert {m.component for m in measured} >= {"fc.firmware", "fc.firmware-image", "fc.params",
                                                "fc.script:scripts/flightseal.lua", "companion.agent"}


def test_measure_prints_a_table(fc: VirtualFC) -> None:
    r = run("measure", "--mavlink", fc.url(1))
    assert "fc.firmware" in r.stdout and "git_hash=2598e9d4" in r.stdout and "flash-read" in r.stdout
    assert "measurements in" in r.stdout


def test_table_shows_a_dronecan_parts_image_crc_as_manifest_add_component_takes_it() -> None:
    from sim.vfc import DroneCanNode

    node = DroneCanNode(42, "com.acme.gps", sw_version=(1, 4), vcs_commit=0x1A2B3C4D, image_crc=0x1122334455667788)
    with VirtualFC(VfcConfig(scripts={"flightseal.lua": GATE}, flash_image=os.urandom(3000), standby_delay=0.1,
                             dronecan_nodes=(node,))) as vfc:
        out = run("measure", "--mavlink", vfc.url(1)).output
    row = next(line for line in out.splitlines() if line.startswith("dronecan:1/42"))
    assert "1122334455667788" in row and "self-reported" in row and "dronecan:GetNodeInfo" in row
    assert "model=com.acme.gps" in out and "vcs_commit=1a2b3c4d" in out


def test_what_cannot_be_measured_is_listed_and_exits_1() -> None:
    with VirtualFC(VfcConfig()) as vfc:
        r = run("measure", "--mavlink", vfc.url(1), ok=1)
    assert "MISSING fc.firmware-image: the FC serves no @SYS/flash.bin" in r.output


def test_an_unreachable_fc_is_one_line_and_exit_2() -> None:
    with VirtualFC(VfcConfig(silent=True)) as vfc:
        r = run("measure", "--mavlink", vfc.url(1), "--heartbeat-timeout", "0.5", ok=2)
    assert r.output.startswith("flightseal: error: no HEARTBEAT") and "Traceback" not in r.output
    r = run("measure", "--mavlink", "COM", ok=2)
    r = run("measure", "--mavlink", "tcp:localhost", ok=2)
    assert "expected tcp:HOST:PORT" in r.output


def test_bad_signing_key_file_is_refused(fc: VirtualFC, tmp_path: Path) -> None:
    (tmp_path / "k").write_text("not a key")
    r = run("measure", "--mavlink", fc.url(1), "--signing-key", str(tmp_path / "k"), ok=2)
    assert "must be 32 raw bytes or 64 hex digits" in r.output


@pytest.fixture
def project(tmp_path: Path, fc: VirtualFC) -> Iterator[Path]:
    """A 2-of-3 root, a manifest approving the virtual FC's firmware, gate and ARMING_CHECK, a device."""
    old = os.getcwd()
    os.chdir(tmp_path)
    for k in ("m1", "m2", "m3", "dev"):
        run("keys", "create", "--out", f"{k}.pem")
    keys = [a for k in ("m1", "m2", "m3") for a in ("--{role}-key", f"{k}.pub")]
    args: list[str] = []
    for role in ("root", "manifest", "enrollment"):
        args += [a.format(role=role) for a in keys] + [f"--{role}-threshold", "2"]
    run("root", "create", *args, "-o", "root.json")
    for k in ("m1", "m2"):
        run("sign", "root.json", "--key", f"file:{k}.pem")
    Path("gate.lua").write_bytes(GATE)
    run("manifest", "create", "--airframe", "FS-Quad-1", "--version", "1", "-o", "manifest.json")
    run("manifest", "set", "manifest.json", "--relax-posture", "signed")  # this vFC link is not signed
    from agent.gate.install import protect_scripts
    from agent.mavlink.link import Link, LinkConfig

    with Link.open(LinkConfig(fc.url(1))) as link:  # what `gate install` leaves: ArduPilot's script checksums
        protect_scripts(link)
    run("manifest", "add-firmware", "manifest.json", "--name", "copter", "--fw-version", "4.7.0", "--git-hash",
        "2598e9d4", "--board-id", "0", "--release", "1")
    run("manifest", "add-script", "manifest.json", "--fc-path", "scripts/flightseal.lua", "--file", "gate.lua",
        "--required")
    run("manifest", "pin-param", "manifest.json", "ARMING_CHECK", "1")
    for k in ("m2", "m3"):
        run("sign", "manifest.json", "--key", f"file:{k}.pem")
    run("keys", "enroll", "--key", "file:dev.pem", "--device-id", "drone-001", "--airframe", "FS-Quad-1",
        "-o", "dev.json")
    for k in ("m1", "m3"):
        run("sign", "dev.json", "--key", f"file:{k}.pem")
    (tmp_path / "trust" / "devices").mkdir(parents=True)
    for name in ("root.json", "manifest.json"):
        (tmp_path / "trust" / name).write_bytes((tmp_path / name).read_bytes())
    (tmp_path / "trust" / "devices" / "dev.json").write_bytes((tmp_path / "dev.json").read_bytes())
    yield tmp_path
    os.chdir(old)


def attest_over_mavlink(url: str, nonce: str, ok: int) -> Result:
    return run("attest", "--mavlink", url, "--manifest", "manifest.json", "--root", "root.json",
               "--key", "file:dev.pem", "--device-id", "drone-001", "--airframe", "FS-Quad-1", "--nonce", nonce,
               "-o", "att.json", ok=ok)


def test_attest_over_mavlink_measures_appraises_signs_and_verifies(project: Path, fc: VirtualFC) -> None:
    nonce = run("nonce").stdout.strip()
    r = attest_over_mavlink(fc.url(1), nonce, ok=0)
    assert "verdict PASS" in r.output
    v = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", "--json")
    assert json.loads(v.stdout)["passed"] is True
    pinned = run("measure", "--mavlink", fc.url(1), "--json", "--manifest", "manifest.json")
    params = next(m for m in json.loads(pinned.stdout) if m["component"] == "fc.params")
    assert params["claims"]["param.ARMING_CHECK"] == 1


def test_attest_over_mavlink_fails_with_the_reason_when_a_script_is_added(project: Path, fc: VirtualFC) -> None:
    (fc.scripts_dir / "evil.lua").write_bytes(b"-- not approved\n")
    fc.set_param("ARMING_CHECK", 0)
    nonce = run("nonce").stdout.strip()
    r = attest_over_mavlink(fc.url(1), nonce, ok=1)
    assert "verdict FAIL" in r.output and "script-unknown [fc.script:scripts/evil.lua]" in r.output
    assert "param-pinned [fc.param:ARMING_CHECK]: ARMING_CHECK is 0, pinned to 1" in r.output
    v = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", ok=1)
    assert "script-unknown" in v.output


def test_attest_needs_exactly_one_source_of_measurements(project: Path, fc: VirtualFC) -> None:
    r = run("attest", "--manifest", "manifest.json", "--root", "root.json", "--key", "file:dev.pem",
            "--device-id", "d", "--airframe", "a", "--nonce", "00" * 32, "-o", "x.json", ok=2)
    assert "exactly one of --measurements FILE and --mavlink URL" in r.output


def test_readme_rebaseline_names_a_changed_parameter_on_device_and_verifier(project: Path, fc: VirtualFC) -> None:
    """The README's workflow: measure a reference airframe (no manifest), baseline with a pin, sign;
    then a changed parameter is named with both values, on the device and by the offline verifier."""
    inventory = run("measure", "--mavlink", fc.url(1), "--json").stdout
    params = next(m for m in json.loads(inventory) if m["component"] == "fc.params")
    assert params["claims"]["count"] == sum(k.startswith("param.") for k in params["claims"]) > 1000
    Path("inventory.json").write_text(inventory)
    r = run("manifest", "baseline", "manifest.json", "--measurements", "inventory.json", "--release", "2",
            "--pin", "ARMING_CHECK", "--pin", "FS_THR_ENABLE")
    assert "9 pinned" in r.output and "parameter values" in r.output  # the 2 asked for and ADR 0013's defaults
    shown = run("manifest", "show", "manifest.json").output
    assert '"FS_THR_ENABLE": 1' in shown and "not judged (volatile): STAT_*" in shown and "MAV[1-9]_RAW_SENS" in shown
    for k in ("m1", "m2"):
        run("sign", "manifest.json", "--key", f"file:{k}.pem")
    (project / "trust" / "manifest.json").write_bytes(Path("manifest.json").read_bytes())
    fc.set_param("ATC_RAT_RLL_P", 0.5)
    fc.set_param("FS_THR_ENABLE", 0)
    nonce = run("nonce").stdout.strip()
    r = attest_over_mavlink(fc.url(1), nonce, ok=1)
    assert "param-pinned [fc.param:FS_THR_ENABLE]: FS_THR_ENABLE is 0, pinned to 1" in r.output
    assert "param-mismatch [fc.param:ATC_RAT_RLL_P]: ATC_RAT_RLL_P is 0.5, approved 0.13500000536441803" in r.output
    v = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", "--json", ok=1)
    reasons = json.loads(v.stdout)["reasons"]
    assert [(x["code"], x["component"]) for x in reasons] == [("param-pinned", "fc.param:FS_THR_ENABLE"),
                                                              ("param-mismatch", "fc.param:ATC_RAT_RLL_P")]
    assert len(Path("att.json").read_bytes()) < 40_000, "the attestation names differences, not every value"


def test_baseline_pin_of_an_unmeasured_parameter_exits_2_and_writes_nothing(project: Path, fc: VirtualFC) -> None:
    Path("inventory.json").write_text(run("measure", "--mavlink", fc.url(1), "--json").stdout)
    before = Path("manifest.json").read_bytes()
    r = run("manifest", "baseline", "manifest.json", "--measurements", "inventory.json", "--release", "2",
            "--pin", "ARMING_CHECK", "--pin", "NO_SUCH_PARAM", ok=2)
    assert "--pin" in r.output and "cannot pin NO_SUCH_PARAM" in r.output and "Traceback" not in r.output
    assert Path("manifest.json").read_bytes() == before
