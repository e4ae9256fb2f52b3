"""The CLI end to end on files: keys, root, manifest, enrollment, attest, verify; exit codes; bad input."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli.main import main


def run(*args: str, ok: int | None = 0) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok is not None:
        assert result.exit_code == ok, result.output
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A manufacturer with 3 keys (2-of-3), a signed root, manifest and enrolled software device key."""
    os.chdir(tmp_path)
    for k in ("m1", "m2", "m3", "dev"):
        run("keys", "create", "--out", f"{k}.pem")
    keys = [a for k in ("m1", "m2", "m3") for a in ("--{role}-key", f"{k}.pub")]
    args = []
    for role in ("root", "manifest", "enrollment"):
        args += [a.format(role=role) for a in keys] + [f"--{role}-threshold", "2"]
    run("root", "create", *args, "-o", "root.json")
    run("sign", "root.json", "--key", "file:m1.pem")
    run("sign", "root.json", "--key", "file:m2.pem")
    Path("gate.lua").write_text("-- gate\n")
    run("manifest", "create", "--airframe", "FS-Quad-1", "--version", "1", "-o", "manifest.json")
    # these measurements are files with no FC link behind them: the link posture is relaxed, explicitly
    run("manifest", "set", "manifest.json", "--relax-posture", "signed", "--relax-posture", "script-checksums")
    run("manifest", "add-firmware", "manifest.json", "--name", "copter", "--fw-version", "4.7.0", "--git-hash",
        "2598e9d4", "--board-id", "0", "--release", "1")
    run("manifest", "add-script", "manifest.json", "--fc-path", "scripts/flightseal.lua", "--file", "gate.lua",
        "--required")
    run("manifest", "pin-param", "manifest.json", "ARMING_CHECK", "1")
    run("manifest", "deny", "manifest.json", "--origin", "XX")
    run("sign", "manifest.json", "--key", "file:m2.pem")
    run("sign", "manifest.json", "--key", "file:m3.pem")
    run("keys", "enroll", "--key", "file:dev.pem", "--device-id", "drone-001", "--airframe", "FS-Quad-1",
        "-o", "dev.json")
    run("sign", "dev.json", "--key", "file:m1.pem")
    run("sign", "dev.json", "--key", "file:m3.pem")
    (tmp_path / "trust" / "devices").mkdir(parents=True)
    for name in ("root.json", "manifest.json"):
        (tmp_path / "trust" / name).write_bytes((tmp_path / name).read_bytes())
    (tmp_path / "trust" / "devices" / "dev.json").write_bytes((tmp_path / "dev.json").read_bytes())
    write_measurements(tmp_path / "meas.json", hashlib.sha256(b"-- gate\n").hexdigest(), arming_check=1)
    return tmp_path


def write_measurements(path: Path, script_sha: str, arming_check: int) -> None:
    path.write_text(json.dumps([
        {"component": "fc.firmware", "kind": "firmware", "digests": {}, "source": "mavlink:AUTOPILOT_VERSION",
         "strength": "self-reported", "claims": {"git_hash": "2598e9d4", "board_id": 0, "version": "4.7.0"}},
        {"component": "fc.script:scripts/flightseal.lua", "kind": "script", "digests": {"sha256": script_sha},
         "source": "mavlink-ftp", "strength": "self-reported", "claims": {"path": "scripts/flightseal.lua"}},
        {"component": "fc.params", "kind": "params", "digests": {}, "source": "mavlink-ftp",
         "strength": "self-reported", "claims": {"param.ARMING_CHECK": arming_check}},
    ]))


def attest(nonce: str, out: str = "att.json", ok: int = 0) -> Result:
    return run("attest", "--measurements", "meas.json", "--manifest", "manifest.json", "--root", "root.json",
               "--key", "file:dev.pem", "--device-id", "drone-001", "--airframe", "FS-Quad-1", "--nonce", nonce,
               "-o", out, ok=ok)


def test_key_files_are_private(project: Path) -> None:
    assert stat.S_IMODE((project / "m1.pem").stat().st_mode) == 0o600


def test_existing_key_file_is_never_overwritten(project: Path) -> None:
    before = (project / "m1.pem").read_bytes()
    r = run("keys", "create", "--out", "m1.pem", ok=2)
    assert "already exists" in r.output
    assert (project / "m1.pem").read_bytes() == before


def test_good_attestation_verifies_with_exit_0(project: Path) -> None:
    nonce = run("nonce").output.strip()
    attest(nonce)
    r = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys")
    assert r.output.startswith("PASS device drone-001")


def test_software_key_fails_default_policy_with_exit_1(project: Path) -> None:
    nonce = run("nonce").output.strip()
    attest(nonce)
    r = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, ok=1)
    assert "FAIL software-key" in r.output


def test_json_output_lists_reasons_and_exit_1(project: Path) -> None:
    nonce = run("nonce").output.strip()
    attest(nonce)
    r = run("verify", "att.json", "--trust", "trust", "--nonce", "00" * 32, "--allow-software-keys", "--json", ok=1)
    data = json.loads(r.stdout)
    assert data["passed"] is False
    assert [x["code"] for x in data["reasons"]] == ["nonce-mismatch"]


def test_tampered_pinned_param_refused_by_device_and_verifier(project: Path) -> None:
    write_measurements(project / "meas.json", hashlib.sha256(b"-- gate\n").hexdigest(), arming_check=0)
    nonce = run("nonce").output.strip()
    r = attest(nonce, ok=1)
    assert "param-pinned [fc.param:ARMING_CHECK]: ARMING_CHECK is 0, pinned to 1" in r.output
    assert (project / "att.json").exists(), "a failing attestation is still written for the operator"
    v = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", ok=1)
    assert "FAIL param-pinned [fc.param:ARMING_CHECK]: ARMING_CHECK is 0, pinned to 1" in v.output


def test_manifest_below_threshold_verify_exit_1(project: Path) -> None:
    run("manifest", "create", "--airframe", "FS-Quad-1", "--version", "2", "-o", "m2.json")
    run("sign", "m2.json", "--key", "file:m1.pem")
    r = run("manifest", "verify", "m2.json", "--root", "root.json", ok=1)
    assert "manifest-threshold" in r.output


def test_editing_a_signed_manifest_drops_signatures(project: Path) -> None:
    r = run("manifest", "deny", "manifest.json", "--vendor", "Shady")
    assert "2 signature(s) dropped" in r.output
    assert "manifest-threshold" in run("manifest", "verify", "manifest.json", "--root", "root.json", ok=1).output


@pytest.mark.parametrize("content", [b"", b"{", b"not json", b'{"payloadType": 1}', b"\xff\xfe", b"[]"])
def test_unreadable_attestation_is_one_line_and_not_a_traceback(project: Path, content: bytes) -> None:
    (project / "bad.json").write_bytes(content)
    r = run("verify", "bad.json", "--trust", "trust", "--nonce", "00" * 32, ok=None)
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert r.output.startswith("FAIL envelope-invalid")


@pytest.mark.parametrize("args", [
    ("verify", "missing.json", "--trust", "trust", "--nonce", "00" * 32),
    ("verify", "att.json", "--trust", "nowhere", "--nonce", "00" * 32),
    ("verify", "att.json", "--trust", "trust", "--nonce", "zz"),
    ("manifest", "show", "root.json"),
    ("sign", "meas.json", "--key", "file:m1.pem"),
    ("sign", "manifest.json", "--key", "file:missing.pem"),
    ("sign", "manifest.json", "--key", "m1.pem"),
])
def test_usage_errors_exit_2_with_one_line(project: Path, args: tuple[str, ...]) -> None:
    nonce = run("nonce").output.strip()
    attest(nonce)
    r = run(*args, ok=None)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) <= 4  # click usage errors add a "Usage:" hint


def test_truncated_measurements_file_exit_2_names_file(project: Path) -> None:
    (project / "meas.json").write_text('[{"component": "fc.firmware"')
    r = attest("00" * 32, ok=2)
    assert "meas.json" in r.output


def test_failed_sign_leaves_document_untouched(project: Path) -> None:
    before = (project / "manifest.json").read_bytes()
    run("sign", "manifest.json", "--key", "file:nope.pem", ok=2)
    assert (project / "manifest.json").read_bytes() == before
    assert not [p for p in project.iterdir() if p.name.startswith(".manifest.json.")]


def test_verifier_remembers_manifest_version_and_refuses_rollback(project: Path) -> None:
    nonce = run("nonce").output.strip()
    attest(nonce)
    run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys")
    state = json.loads((project / "trust" / "state.json").read_text())
    assert state["version"] == 1
    (project / "trust" / "state.json").write_text(json.dumps({"version": 2, "sha256": "ab" * 32}))
    r = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", ok=1)
    assert "manifest-rollback" in r.output


def test_rebaseline_from_a_measured_inventory_is_one_command_then_signing(project: Path) -> None:
    meas = json.loads((project / "meas.json").read_text())
    meas[0]["claims"]["git_hash"] = "abcdef12"  # the fleet moved to a new firmware build
    meas.append({"component": "mavlink:1/100", "kind": "component", "digests": {}, "source": "mavlink:HEARTBEAT",
                 "strength": "observed", "claims": {"type": "camera", "hardware_id": "cam-1"}})
    (project / "new.json").write_text(json.dumps(meas))
    r = run("manifest", "baseline", "manifest.json", "--measurements", "new.json", "--release", "13",
            "--require-script", "scripts/flightseal.lua", "--pin", "ARMING_CHECK",
            "--part", "mavlink:1/100=gimbal camera,Acme,AC-1,JP")
    assert "as v2" in r.output and "1 parts" in r.output
    run("sign", "manifest.json", "--key", "file:m1.pem")
    run("sign", "manifest.json", "--key", "file:m2.pem")
    run("manifest", "verify", "manifest.json", "--root", "root.json")
    (project / "trust" / "manifest.json").write_bytes((project / "manifest.json").read_bytes())
    (project / "meas.json").write_text(json.dumps(meas))
    nonce = run("nonce").output.strip()
    attest(nonce)
    v = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys")
    assert v.output.startswith("PASS"), v.output


def test_rebaseline_refuses_a_bad_origin_code_and_an_unmeasured_part(project: Path) -> None:
    meas = json.loads((project / "meas.json").read_text())
    meas.append({"component": "mavlink:1/100", "kind": "component", "digests": {}, "source": "mavlink:HEARTBEAT",
                 "strength": "observed", "claims": {"type": "camera"}})
    (project / "meas.json").write_text(json.dumps(meas))
    before = (project / "manifest.json").read_bytes()
    r = run("manifest", "baseline", "manifest.json", "--measurements", "meas.json", "--release", "2",
            "--part", "mavlink:1/100=cam,Acme,AC-1,Japan", ok=2)
    assert "origin" in r.output
    r = run("manifest", "baseline", "manifest.json", "--measurements", "meas.json", "--release", "2",
            "--part", "mavlink:1/101=cam,Acme,AC-1,JP", ok=2)
    assert "mavlink:1/101 was not measured" in r.output
    assert (project / "manifest.json").read_bytes() == before


def test_rebaseline_pins_a_dronecan_part_to_its_measured_image_crc(project: Path) -> None:
    meas = json.loads((project / "meas.json").read_text())
    meas.append({"component": "dronecan:1/42", "kind": "component", "digests": {"crc64": "1122334455667788"},
                 "source": "dronecan:GetNodeInfo", "strength": "self-reported",
                 "claims": {"type": "dronecan", "model": "com.acme.gps", "vendor": "acme", "hardware_id": "ab" * 16}})
    (project / "meas.json").write_text(json.dumps(meas))
    run("manifest", "baseline", "manifest.json", "--measurements", "meas.json", "--release", "2",
        "--part", "dronecan:1/42=gps,acme,com.acme.gps,JP")
    out = run("manifest", "show", "manifest.json").output
    shown = json.loads(out[:out.rindex("signatures:")])
    gps = [c for c in shown["components"] if c["selector"] == "dronecan:1/42"]
    assert gps and gps[0]["firmware_crc64"] == ["1122334455667788"] and gps[0]["hardware_ids"] == ["ab" * 16]
