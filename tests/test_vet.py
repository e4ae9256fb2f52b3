"""`flightseal vet` and `flightseal policy`: a buyer vets an airframe's handed-over attestation against their policy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli.main import main
from attest.models import Strength
from attest.policy import BuyerPolicy
from tests.bom_kit import Airframe, buyer_key, signed_policy, write_airframe


def run(*args: str, ok: int | None = 0) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok is not None:
        assert result.exit_code == ok, result.output
    assert "Traceback" not in result.output
    return result


def vet(a: Airframe, policy: Path, *extra: str, ok: int | None = 0) -> Result:
    return run("vet", "--attestation", a.attestation, "--trust", a.trust, "--policy", policy,
               "--allow-software-keys", *extra, ok=ok)


@pytest.fixture
def buyer(tmp_path: Path) -> tuple[Path, Path]:
    """The buyer's key files (private, public) and a policy against covered-country origins, signed."""
    key, priv, pub = buyer_key(tmp_path)
    signed_policy(tmp_path / "policy.json", BuyerPolicy("no covered origins", deny_origins=("CN", "RU")), key)
    return priv, pub


def test_a_clean_airframe_passes_and_says_the_evidence_was_handed_over(tmp_path: Path,
                                                                       buyer: tuple[Path, Path]) -> None:
    r = vet(write_airframe(tmp_path), tmp_path / "policy.json", "--policy-key", buyer[1])
    assert "no nonce checked" in r.output and "verification: PASS device drone-001" in r.output
    assert "PASS the airframe meets the policy" in r.output


def test_a_camera_from_a_denied_origin_is_refused_with_a_named_finding(tmp_path: Path,
                                                                        buyer: tuple[Path, Path]) -> None:
    r = vet(write_airframe(tmp_path, camera_origin="CN"), tmp_path / "policy.json", "--policy-key", buyer[1], ok=1)
    assert "FINDING origin-denied [mavlink:1/100]: gimbal camera (camera): origin CN is denied" in r.output


def test_a_self_reported_flight_controller_is_refused_when_the_policy_demands_flash_read(tmp_path: Path) -> None:
    key, _, pub = buyer_key(tmp_path)
    policy = signed_policy(tmp_path / "measured.json", BuyerPolicy(
        "measured FC", min_strength={"flight-controller": Strength.FLASH_READ}), key)
    r = vet(write_airframe(tmp_path, image=False), policy, "--policy-key", pub, ok=1)
    assert ("FINDING strength-too-weak [fc]: flight controller (flight-controller) is only self-reported by the "
            "software itself; the policy needs flash-read") in r.output


def test_policy_keys_pinned_in_the_trust_directory_are_used(tmp_path: Path, buyer: tuple[Path, Path]) -> None:
    a = write_airframe(tmp_path)
    (a.trust / "policy-keys").mkdir()
    (a.trust / "policy-keys" / "buyer.pub").write_bytes(buyer[1].read_bytes())
    vet(a, tmp_path / "policy.json")


def _tampered(path: Path) -> None:
    env = json.loads(path.read_text())
    body = json.loads(base64.b64decode(env["payload"]))
    body["deny_origins"] = []
    env["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
    path.write_text(json.dumps(env))


def _unsigned(path: Path) -> None:
    env = json.loads(path.read_text())
    env["signatures"] = []
    path.write_text(json.dumps(env))


@pytest.mark.parametrize("spoil", [_tampered, _unsigned])
def test_a_tampered_or_unsigned_policy_is_unusable_input(tmp_path: Path, buyer: tuple[Path, Path], spoil: object
                                                         ) -> None:
    a = write_airframe(tmp_path, camera_origin="CN")
    spoil(tmp_path / "policy.json")  # type: ignore[operator]
    r = vet(a, tmp_path / "policy.json", "--policy-key", buyer[1], ok=2)
    assert r.output.strip().count("\n") == 0
    assert "not signed by the pinned policy key" in r.output


def test_a_policy_signed_by_another_key_is_unusable_input(tmp_path: Path, buyer: tuple[Path, Path]) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _, _, other_pub = buyer_key(other)
    r = vet(write_airframe(tmp_path), tmp_path / "policy.json", "--policy-key", other_pub, ok=2)
    assert "not signed by the pinned policy key" in r.output and "threshold is 1" in r.output


def test_no_pinned_policy_key_is_unusable_input(tmp_path: Path, buyer: tuple[Path, Path]) -> None:
    r = vet(write_airframe(tmp_path), tmp_path / "policy.json", ok=2)
    assert "no policy key pinned" in r.output


@pytest.mark.parametrize("what,content", [("attestation", b"not json"), ("attestation", b"{}"),
                                          ("policy", b"\xff\xfe"), ("policy", b"[]"), ("attestation", None)])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, buyer: tuple[Path, Path], what: str,
                                          content: bytes | None) -> None:
    a = write_airframe(tmp_path)
    target = a.attestation if what == "attestation" else tmp_path / "policy.json"
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)
    r = vet(a, tmp_path / "policy.json", "--policy-key", buyer[1], ok=2)
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_a_nonce_given_is_checked_and_age_is_bounded(tmp_path: Path, buyer: tuple[Path, Path]) -> None:
    a = write_airframe(tmp_path)
    ok = vet(a, tmp_path / "policy.json", "--policy-key", buyer[1], "--nonce", a.nonce.hex())
    assert "no nonce checked" not in ok.output
    wrong = vet(a, tmp_path / "policy.json", "--policy-key", buyer[1], "--nonce", "00" * 32, ok=1)
    assert "nonce-mismatch" in wrong.output
    old = vet(a, tmp_path / "policy.json", "--policy-key", buyer[1], "--max-age", "3600", ok=1)
    assert "attestation-stale" in old.output


def test_policy_create_sign_show_then_vet(tmp_path: Path) -> None:
    a = write_airframe(tmp_path, camera_origin="CN")
    run("keys", "create", "--out", tmp_path / "b.pem")
    policy = tmp_path / "p.json"
    run("policy", "create", "--name", "agency", "--deny-origin", "CN", "--require-class", "camera",
        "--min-strength", "flight-controller=image-and-bootloader", "-o", policy)
    assert "not signed" in vet(a, policy, "--policy-key", tmp_path / "b.pub", ok=2).output
    run("policy", "sign", policy, "--key", f"file:{tmp_path / 'b.pem'}")
    assert '"deny_origins"' in run("policy", "show", policy, "--policy-key", tmp_path / "b.pub").output
    assert "FINDING origin-denied" in vet(a, policy, "--policy-key", tmp_path / "b.pub", ok=1).output
    assert run("policy", "create", "--name", "x", "--deny-origin", "China", "-o", policy, ok=2)
    assert run("policy", "create", "--name", "x", "--min-strength", "radio=strong", "-o", policy, ok=2)


def test_manifest_part_sets_class_supplier_and_documents(tmp_path: Path) -> None:
    a = write_airframe(tmp_path)
    manifest = a.trust / "manifest.json"
    (tmp_path / "cert.pdf").write_bytes(b"%PDF certificate")
    r = run("manifest", "part", manifest, "--selector", "mavlink:1/68", "--class", "radio", "--assembler", "Acme",
            "--chip-origin", "US", "--document", tmp_path / "cert.pdf", "--title", "FCC grant")
    assert "signature(s) dropped" in r.output
    shown = run("manifest", "show", manifest).output
    assert '"class": "radio"' in shown and '"chip_origin": "US"' in shown and "FCC grant" in shown
    assert "no approved part" in run("manifest", "part", manifest, "--selector", "nope", "--class", "radio",
                                     ok=2).output
    assert run("manifest", "part", manifest, "--selector", "mavlink:1/68", "--chip-origin", "usa", ok=2)


def test_baseline_part_takes_an_optional_class(tmp_path: Path) -> None:
    from tests.bom_kit import measured

    inventory = tmp_path / "m.json"
    inventory.write_text(json.dumps([m.to_json() for m in measured()]))
    manifest = tmp_path / "manifest.json"
    run("manifest", "create", "--airframe", "FS-Quad-1", "--version", "1", "-o", manifest)
    part = "mavlink:1/100=gimbal camera,Acme Optics,AC-1,JP"
    run("manifest", "baseline", manifest, "--measurements", inventory, "--release", "1", "--part", f"{part},camera")
    assert '"class": "camera"' in run("manifest", "show", manifest).output
    bad = run("manifest", "baseline", manifest, "--measurements", inventory, "--release", "1", "--part",
              f"{part},toaster", ok=2)
    assert "unknown class 'toaster'" in bad.output
