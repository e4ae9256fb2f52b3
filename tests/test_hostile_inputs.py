"""Issue 11: hostile or broken files get a clear refusal (exit 2 naming the file), never a hang, a
traceback or a silent acceptance. Each case here was a hang, a traceback or a wrong acceptance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest import jsonio
from attest.errors import FormatError
from tests.test_cli_core import attest, project, run

__all__ = ["project"]

FLIGHTSEAL = [sys.executable, "-m", "agent"]


def cli(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The CLI as its own process: a hang is a timeout here, not a stuck test run."""
    return subprocess.run([*FLIGHTSEAL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def verified(project: Path) -> str:
    nonce = run("nonce").output.strip()
    attest(nonce)
    run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys")
    return nonce


FIFO_CASES = {
    "attestation": ("att.json", ["verify", "att.json", "--trust", "trust", "--nonce", "00" * 32]),
    "root": ("trust/root.json", ["verify", "att.json", "--trust", "trust", "--nonce", "00" * 32]),
    "enrollment": ("trust/devices/dev.json", ["verify", "att.json", "--trust", "trust", "--nonce", "00" * 32]),
    "state": ("trust/state.json", ["verify", "att.json", "--trust", "trust", "--nonce", "00" * 32]),
    "clocks": ("trust/clocks.json", ["verify", "att.json", "--trust", "trust", "--nonce", "00" * 32]),
    "measurements": ("meas.json", ["attest", "--measurements", "meas.json", "--manifest", "manifest.json",
                                   "--root", "root.json", "--key", "file:dev.pem", "--device-id", "drone-001",
                                   "--airframe", "FS-Quad-1", "--nonce", "00" * 32, "-o", "out.json"]),
    "manifest show": ("manifest.json", ["manifest", "show", "manifest.json"]),
    "key file": ("m1.pem", ["sign", "root.json", "--key", "file:m1.pem"]),
    "agent config": ("agent.toml", ["agent", "run", "--config", "agent.toml"]),
}


@pytest.mark.parametrize("case", sorted(FIFO_CASES))
def test_a_fifo_in_place_of_any_input_is_refused_at_once(project: Path, case: str) -> None:
    name, args = FIFO_CASES[case]
    if not (project / "att.json").exists():
        attest("00" * 32)
    target = project / name
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    done = cli(project, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "not a regular file" in done.stderr + done.stdout, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("body", [
    '{"version": -5, "sha256": "%s"}', '{"version": 1.9, "sha256": "%s"}', '{"version": true, "sha256": "%s"}',
    '{"version": 1, "sha256": 5}', '\ufeff{"version": 1, "sha256": "%s"}', '{"version": Infinity, "sha256": "%s"}',
    '{"version": 1e400, "sha256": "%s"}', "[" * 3000 + "]" * 3000, '{"version": 1, "sha256": "%s", "x": 1}',
])
def test_a_bad_verifier_state_is_refused_naming_it(project: Path, body: str) -> None:
    nonce = verified(project)
    text = body % ("ab" * 32) if "%s" in body else body
    (project / "trust" / "state.json").write_text(text, encoding="utf-8")
    r = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", ok=2)
    assert "state.json" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("name", ["state.json", "clocks.json"])
def test_a_dangling_symlink_does_not_reset_the_rollback_state(project: Path, name: str) -> None:
    nonce = verified(project)
    path = project / "trust" / name
    path.unlink(missing_ok=True)
    path.symlink_to(project / "nowhere.json")
    r = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", ok=2)
    assert "symbolic link" in r.output


@pytest.mark.parametrize("entry", [{"clock": 1, "reset_count": 0, "restart_count": 0, "safe": "no"},
                                   {"clock": -1, "reset_count": 0, "restart_count": 0, "safe": True},
                                   {"clock": 1, "reset_count": 0, "restart_count": 0}])
def test_a_bad_clocks_file_is_refused(project: Path, entry: dict[str, object]) -> None:
    nonce = verified(project)
    (project / "trust" / "clocks.json").write_text(json.dumps({"drone-001": entry}))
    r = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", ok=2)
    assert "clocks" in r.output


def test_another_manifest_of_the_recorded_version_is_a_rollback(project: Path) -> None:
    """`verify` used to throw the recorded digest away and pass a different manifest of the same version."""
    nonce = verified(project)
    run("manifest", "create", "--airframe", "FS-Quad-1", "--version", "1", "-o", "other.json")
    run("manifest", "set", "other.json", "--relax-posture", "signed", "--relax-posture", "script-checksums")
    run("manifest", "add-firmware", "other.json", "--name", "copter", "--fw-version", "4.7.0", "--git-hash",
        "2598e9d4", "--board-id", "0", "--release", "1")
    run("manifest", "add-script", "other.json", "--fc-path", "scripts/flightseal.lua", "--file", "gate.lua",
        "--required")
    run("sign", "other.json", "--key", "file:m2.pem")
    run("sign", "other.json", "--key", "file:m3.pem")
    (project / "trust" / "manifest.json").write_bytes((project / "other.json").read_bytes())
    r = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", ok=1)
    assert "manifest-rollback" in r.output and "differs from the trusted one" in r.output


def test_an_ec_key_on_another_curve_is_refused_not_a_traceback(project: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    (project / "p384.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    r = run("sign", "manifest.json", "--key", "file:p384.pem", ok=2)
    assert "P-256" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("doc", [b'{"a": 1e400}', b'{"a": -1e999}', b'{"a": NaN}', b'{"a": Infinity}'])
def test_json_numbers_beyond_float_range_are_refused(doc: bytes) -> None:
    with pytest.raises(FormatError, match="test doc"):
        jsonio.loads(doc, "test doc", 1000)


@pytest.mark.parametrize("args", [
    ("keys", "create", "--out", "new.pub"),
    ("manifest", "create", "--airframe", "A", "--version", str(2**64), "-o", "m2.json"),
    ("manifest", "create", "--airframe", "A", "--version", "1", "--expires-days", "99999999", "-o", "m2.json"),
    ("manifest", "pin-param", "manifest.json", "X", "nan"),
    ("manifest", "pin-param", "manifest.json", "X", "inf"),
    ("manifest", "pin-param", "manifest.json", "X", "1e400"),
    ("verify", "att.json", "--trust", "trust", "--nonce", "00" * 32, "--max-age", str(10**20)),
])
def test_out_of_range_options_are_usage_errors(project: Path, args: tuple[str, ...]) -> None:
    before = (project / "manifest.json").read_bytes()
    r = run(*args, ok=2)
    assert "Traceback" not in r.output
    assert (project / "manifest.json").read_bytes() == before
    assert not (project / "new.pub").exists() and not (project / "m2.json").exists()


@pytest.mark.parametrize("name", ["root.json", "devices/dev.json", "manifest.json"])
def test_a_malformed_trust_dir_file_is_bad_input_exit_2_also_in_json(project: Path, name: str) -> None:
    nonce = verified(project)
    (project / "trust" / name).write_bytes(b"{not json")
    r = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", ok=None)
    assert r.exit_code == 2, r.output
    j = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", "--json", ok=2)
    doc = json.loads(j.stdout)
    assert doc["passed"] is False and doc["exit_code"] == 2 and name.split("/")[-1] in doc["error"]


def test_output_into_a_missing_directory_names_the_path_asked_for(project: Path) -> None:
    r = run("manifest", "create", "--airframe", "A", "--version", "1", "-o", "nowhere/m.json", ok=2)
    assert "nowhere/m.json" in r.output and "does not exist" in r.output and ".m.json." not in r.output


def test_a_wrong_airframe_claim_names_the_airframe(project: Path) -> None:
    from attest.verify import _identity  # the message, without forging a whole signed statement

    class P:
        device_id, airframe, key_kind = "drone-001", "FS-Hexa-9", "software"

    class D:
        device_id, airframe, key_kind = "drone-001", "FS-Quad-1", "software"

    from attest.verify import VerifierPolicy

    reasons = _identity(P(), D(), None, VerifierPolicy())  # type: ignore[arg-type]
    assert [r.detail for r in reasons] == ["statement claims airframe FS-Hexa-9, but device drone-001 is "
                                           "enrolled as a FS-Quad-1"]


def test_one_key_in_two_pem_encodings_cannot_count_twice() -> None:
    """Issue 11: the same key with other line breaks got a second key id, so a threshold of two could
    be met with one key."""
    import base64

    from attest.errors import KeyLoadError
    from attest.keys import PublicKey
    from hardware.software import SoftwareSigner

    pem = SoftwareSigner.generate().public_key.public_pem
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert base64.b64decode(body)  # the same DER
    one_line = f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"
    assert one_line != pem
    with pytest.raises(KeyLoadError, match="canonical"):
        PublicKey(one_line)
    with pytest.raises(FormatError, match="canonical"):
        PublicKey.from_json({"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "public": one_line})
    assert PublicKey(pem).keyid


def test_an_older_root_put_back_is_refused(project: Path) -> None:
    """Issue 11: no root version was kept, so an older root could be put back in the trust dir."""
    keys = [a for k in ("m1", "m2", "m3") for a in ("--{role}-key", f"{k}.pub")]
    args = []
    for role in ("root", "manifest", "enrollment"):
        args += [a.format(role=role) for a in keys] + [f"--{role}-threshold", "2"]
    run("root", "create", *args, "--version", "2", "-o", "root2.json")
    run("sign", "root2.json", "--key", "file:m1.pem")
    run("sign", "root2.json", "--key", "file:m2.pem")
    (project / "trust" / "root.json").write_bytes((project / "root2.json").read_bytes())
    nonce = verified(project)
    assert json.loads((project / "trust" / "root-state.json").read_text())["version"] == 2
    (project / "trust" / "root.json").write_bytes((project / "root.json").read_bytes())  # version 1 again
    r = run("verify", "att.json", "--trust", "trust", "--nonce", nonce, "--allow-software-keys", ok=1)
    assert "is version 1, older than version 2 in force here" in r.output


# ---- found by the fuzz campaign (tests/fuzz_campaign.py): each raised something other than FlightSealError


def test_a_json_string_with_a_lone_surrogate_escape_is_refused() -> None:
    r"""A ``\ud800`` escape without its pair decoded to a string that is not text: a threshold-signed
    manifest holding one verified, then crashed whoever wrote it out (UnicodeEncodeError)."""
    from attest.errors import FlightSealError
    from tests.factory import World

    with pytest.raises(FormatError, match="lone UTF-16 surrogate"):
        jsonio.loads(b'{"a": ["x", {"\\udfff": 1}]}', "test doc", 1000)
    assert jsonio.loads(b'{"a": "\\ud83d\\ude00"}', "test doc", 1000) == {"a": "\U0001f600"}  # a pair is text
    world = World()
    doc = world.manifest().to_json()
    doc["airframe"]["name"] = "FS-Quad-\ud800"
    payload = json.dumps(doc).encode()  # ensure_ascii: the escape, as an attacker's tool would write it
    from attest import dsse

    signed = dsse.sign(dsse.MANIFEST_PAYLOAD_TYPE, payload, world.m_keys[:2]).to_bytes()
    with pytest.raises(FlightSealError, match="surrogate"):
        world.trust().verify_manifest(signed, world.now)


@pytest.mark.parametrize("text", ["a = " + "[" * 2000 + "]" * 2000, "[mavlink]\nsystem_id = 1" + "0" * 5000])
def test_an_agent_config_nested_too_deep_or_with_a_huge_integer_is_refused(text: str) -> None:
    """tomllib raised RecursionError and ValueError (over 4300 digits), not TOMLDecodeError."""
    from agent.config import parse

    with pytest.raises(FormatError, match="not valid TOML"):
        parse(text)


def test_a_public_key_of_an_unknown_algorithm_is_refused_not_a_traceback() -> None:
    """cryptography raises UnsupportedAlgorithm (not ValueError) for an unknown key type OID."""
    import base64

    from attest.errors import KeyLoadError
    from attest.keys import PublicKey
    from hardware.software import SoftwareSigner

    pem = SoftwareSigner.generate().public_key.public_pem
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    body = base64.b64encode(der.replace(bytes.fromhex("06072a8648ce3d0201"), bytes.fromhex("06072a8648ce3d0205")))
    lines = "\n".join(body[i:i + 64].decode() for i in range(0, len(body), 64))
    with pytest.raises(KeyLoadError, match="not a PEM public key"):
        PublicKey(f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n")


def test_a_key_file_that_looks_sealed_but_nests_too_deep_is_refused(tmp_path: Path) -> None:
    """The unsealer's json.loads let a RecursionError out of the agent's key-file reader."""
    from agent.gate.key import load_gate_key
    from attest.errors import FlightSealError

    path = tmp_path / "gate.key"
    path.write_bytes(b'{"format": "flightseal-tpm-sealed-v1", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}")
    path.chmod(0o600)
    with pytest.raises(FlightSealError, match="gate key"):
        load_gate_key(path)


def test_a_parameter_value_beyond_float32_is_compared_not_a_traceback() -> None:
    """A signed statement claiming a parameter of 1e300 made the verifier raise OverflowError while
    packing it as a float32; no FC parameter holds such a value, so it simply differs."""
    from attest import params

    assert params.canonical_value(1e300) == "1e+300"
    assert not params.same_value(1e300, 3.4e38)
    assert params.differences({"RTL_ALT": 1500.0}, {"RTL_ALT": -1e39}, ()) == {"RTL_ALT": -1e39}


def test_a_private_key_naming_an_unknown_algorithm_is_refused_not_a_traceback(tmp_path: Path) -> None:
    """Found by the fuzz campaign: cryptography's UnsupportedAlgorithm / InternalError escaped."""
    from attest.errors import KeyLoadError
    from hardware.software import SoftwareSigner, load_private_key, write_private_key

    path = tmp_path / "k.pem"
    write_private_key(path, SoftwareSigner.generate())
    import base64

    lines = path.read_text().splitlines()
    der = base64.b64decode("".join(lines[1:-1]))
    bad = der.replace(bytes.fromhex("06072a8648ce3d0201"), bytes.fromhex("06072a8648ce3d0205"))
    assert bad != der
    body = base64.b64encode(bad).decode()
    path.write_text(f"{lines[0]}\n" + "\n".join(body[i:i + 64] for i in range(0, len(body), 64)) + f"\n{lines[-1]}\n")
    with pytest.raises(KeyLoadError, match="not an unencrypted PEM private key"):
        load_private_key(path)
