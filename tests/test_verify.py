"""Attacks on the attestation as the operator's offline verifier sees them."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import replace
from datetime import timedelta

import pytest

from agent.attestation import check_manifest, seal_measurements
from attest import dsse, evidence, jsonio
from attest.appraise import appraise
from attest.models import Code, Verdict
from attest.verify import VerificationResult, VerifierPolicy, verify_attestation
from hardware.software import SoftwareSigner
from tests.factory import World, camera, measurements, predicate

ALLOW_SW = VerifierPolicy(allow_software_keys=True)


def make(w: World, nonce: bytes, ms=None, manifest_bytes: bytes | None = None, signer=None,  # type: ignore[no-untyped-def]
         device_id: str = "drone-001") -> bytes:
    mb = manifest_bytes or w.manifest_bytes()
    sealed = seal_measurements(ms if ms is not None else measurements(), check_manifest(w.trust(), mb, w.now),
                               signer or w.device_key, device_id=device_id, airframe="FS-Quad-1", nonce=nonce,
                               now=w.now)
    return sealed.envelope.to_bytes()


def check(w: World, att: bytes, nonce: bytes, policy: VerifierPolicy = ALLOW_SW, devices=None,  # type: ignore[no-untyped-def]
          manifest_bytes: bytes | None = None, **kw) -> VerificationResult:
    return verify_attestation(att, trust=w.trust(), devices=devices or [w.device()],
                              manifest_bytes=manifest_bytes or w.manifest_bytes(), nonce=nonce, now=w.now,
                              policy=policy, **kw)


def test_fresh_attestation_of_approved_drone_passes() -> None:
    w, n = World(), secrets.token_bytes(32)
    r = check(w, make(w, n), n)
    assert r.passed, r.reasons
    assert r.device is not None and r.device.device_id == "drone-001"


def test_software_key_is_refused_by_default_policy() -> None:
    w, n = World(), secrets.token_bytes(32)
    r = check(w, make(w, n), n, policy=VerifierPolicy())
    assert not r.passed
    assert [x.code for x in r.reasons] == [Code.SOFTWARE_KEY]


def test_replayed_attestation_for_old_nonce_is_refused() -> None:
    w = World()
    old_nonce, new_nonce = secrets.token_bytes(32), secrets.token_bytes(32)
    r = check(w, make(w, old_nonce), new_nonce)
    assert [x.code for x in r.reasons] == [Code.NONCE_MISMATCH]


def test_stale_attestation_is_refused() -> None:
    w, n = World(), secrets.token_bytes(32)
    att = make(w, n)
    later = World(m_keys=w.m_keys, device_key=w.device_key, now=w.now + timedelta(minutes=10))
    r = verify_attestation(att, trust=w.trust(), devices=[w.device()], manifest_bytes=w.manifest_bytes(), nonce=n,
                           now=later.now, policy=ALLOW_SW)
    assert [x.code for x in r.reasons] == [Code.ATTESTATION_STALE]


def test_attestation_from_the_future_is_refused() -> None:
    w, n = World(), secrets.token_bytes(32)
    att = make(w, n)
    r = verify_attestation(att, trust=w.trust(), devices=[w.device()], manifest_bytes=w.manifest_bytes(), nonce=n,
                           now=w.now - timedelta(minutes=5), policy=ALLOW_SW)
    assert Code.ATTESTATION_FUTURE in [x.code for x in r.reasons]


@pytest.mark.parametrize("position", ["payload", "signature", "payloadType"])
def test_flipped_bit_anywhere_in_the_envelope_fails(position: str) -> None:
    w, n = World(), secrets.token_bytes(32)
    doc = json.loads(make(w, n))
    if position == "payloadType":
        doc["payloadType"] = doc["payloadType"].replace("json", "jsoN")
    else:
        field = doc["payload"] if position == "payload" else doc["signatures"][0]["sig"]
        raw = bytearray(base64.b64decode(field))
        raw[len(raw) // 2] ^= 0x01
        if position == "payload":
            doc["payload"] = base64.b64encode(raw).decode()
        else:
            doc["signatures"][0]["sig"] = base64.b64encode(raw).decode()
    r = check(w, json.dumps(doc).encode(), n)
    assert not r.passed
    assert r.reasons[0].code in {Code.ENVELOPE_SIGNATURE, Code.ENVELOPE_INVALID}


def test_every_single_bit_flip_of_the_file_fails_closed() -> None:
    w, n = World(), secrets.token_bytes(32)
    att = bytearray(make(w, n))
    step = max(1, len(att) // 200)
    for i in range(0, len(att), step):
        flipped = bytearray(att)
        flipped[i] ^= 0x04
        r = check(w, bytes(flipped), n)
        # a flip in insignificant white space may still verify; anything else must not pass
        if r.passed:
            assert json.loads(bytes(flipped)) == json.loads(bytes(att)), f"byte {i} changed meaning and passed"


def test_signature_by_unknown_key_is_refused() -> None:
    w, n = World(), secrets.token_bytes(32)
    r = check(w, make(w, n, signer=SoftwareSigner.generate()), n)
    assert [x.code for x in r.reasons] == [Code.DEVICE_UNKNOWN]


def test_attestation_of_another_device_presented_as_this_one() -> None:
    w, n = World(), secrets.token_bytes(32)
    other_key = SoftwareSigner.generate()
    other = w.device("drone-002", other_key)
    # drone-002 signs a statement that claims to be drone-001
    att = make(w, n, signer=other_key, device_id="drone-001")
    r = check(w, att, n, devices=[w.device(), other])
    assert Code.WRONG_DEVICE in [x.code for x in r.reasons]
    # and honestly labelled, it still is not the drone the operator asked about
    honest = make(w, n, signer=other_key, device_id="drone-002")
    r2 = check(w, honest, n, devices=[w.device(), other], expected_device="drone-001")
    assert Code.WRONG_DEVICE in [x.code for x in r2.reasons]


def test_device_of_another_airframe_is_wrong_hardware() -> None:
    w, n = World(), secrets.token_bytes(32)
    r = check(w, make(w, n), n, devices=[w.device(airframe="FS-Hexa-9")])
    assert Code.WRONG_DEVICE in [x.code for x in r.reasons] or Code.WRONG_HARDWARE in [x.code for x in r.reasons]


def test_device_not_bound_in_manifest_is_wrong_hardware() -> None:
    w, n = World(), secrets.token_bytes(32)
    key = SoftwareSigner.generate()
    att = make(w, n, signer=key, device_id="drone-077")
    r = check(w, att, n, devices=[w.device("drone-077", key)])
    assert [x.code for x in r.reasons] == [Code.WRONG_HARDWARE]


def test_lying_device_verdict_is_caught_by_reappraisal() -> None:
    w, n = World(), secrets.token_bytes(32)
    ms = measurements(extra_scripts={"scripts/evil.lua": b"x"})
    mb = w.manifest_bytes()
    pred = predicate(w, mb, ms, Verdict(passed=True), n)  # device claims pass
    att = evidence.seal(pred, w.device_key).to_bytes()
    codes = [x.code for x in check(w, att, n).reasons]
    assert Code.SCRIPT_UNKNOWN in codes and Code.VERDICT_DISAGREES in codes


def test_attestation_against_another_manifest_is_refused() -> None:
    w, n = World(), secrets.token_bytes(32)
    att = make(w, n, manifest_bytes=w.manifest_bytes(version=2))
    r = check(w, att, n, manifest_bytes=w.manifest_bytes(version=3))
    assert Code.MANIFEST_REFERENCE in [x.code for x in r.reasons]


def test_verifier_with_newer_manifest_seen_refuses_rollback() -> None:
    w, n = World(), secrets.token_bytes(32)
    r = check(w, make(w, n), n, highest_manifest_version=4)
    assert [x.code for x in r.reasons] == [Code.MANIFEST_ROLLBACK]


def test_expired_manifest_fails_verification() -> None:
    w, n = World(), secrets.token_bytes(32)
    expired = w.manifest_bytes(expires=w.now - timedelta(days=1))
    att = make(w, n, manifest_bytes=expired)
    r = check(w, att, n, manifest_bytes=expired)
    assert [x.code for x in r.reasons] == [Code.MANIFEST_EXPIRED]


def test_device_sealed_fail_verdict_for_expired_manifest() -> None:
    w, n = World(), secrets.token_bytes(32)
    sealed = seal_measurements(measurements(), check_manifest(w.trust(), w.manifest_bytes(
        expires=w.now - timedelta(days=1)), w.now), w.device_key, device_id="drone-001", airframe="FS-Quad-1",
        nonce=n, now=w.now)
    assert sealed.verdict.codes == (Code.MANIFEST_EXPIRED,)
    assert sealed.predicate.manifest is None


def test_denied_origin_and_unknown_component_fail_verification() -> None:
    w, n = World(), secrets.token_bytes(32)
    ms = measurements(components=[camera(origin="XX"), camera(vendor="X", hardware_id="y", component="dronecan:9")])
    r = check(w, make(w, n, ms=ms), n)
    codes = [x.code for x in r.reasons]
    assert Code.COMPONENT_DENIED_ORIGIN in codes and Code.COMPONENT_UNKNOWN in codes


def test_subjects_that_disagree_with_measurements_are_refused() -> None:
    w, n = World(), secrets.token_bytes(32)
    ms = measurements()
    pred = predicate(w, w.manifest_bytes(), ms, appraise(ms, w.manifest()), n)
    st = evidence.statement(pred)
    st["subject"][0]["digest"]["sha256"] = "0" * 64
    env = dsse.sign(dsse.INTOTO_PAYLOAD_TYPE, jsonio.dumps(st), [w.device_key])
    r = check(w, env.to_bytes(), n)
    assert [x.code for x in r.reasons] == [Code.ENVELOPE_INVALID]


def test_enrolled_key_signing_a_non_intoto_payload_is_refused() -> None:
    w, n = World(), secrets.token_bytes(32)
    env = dsse.sign(dsse.MANIFEST_PAYLOAD_TYPE, b"{}", [w.device_key])
    r = check(w, env.to_bytes(), n)
    assert [x.code for x in r.reasons] == [Code.ENVELOPE_INVALID]


def test_truncated_attestation_is_invalid_not_a_crash() -> None:
    w, n = World(), secrets.token_bytes(32)
    att = make(w, n)
    r = check(w, att[: len(att) // 2], n)
    assert [x.code for x in r.reasons] == [Code.ENVELOPE_INVALID]
    assert not r.passed


def test_tpm_enrolled_device_without_quote_fails() -> None:
    w, n = World(), secrets.token_bytes(32)
    from attest.keys import KeyKind

    tpm_record = replace(w.device(), key_kind=KeyKind.TPM)
    r = check(w, make(w, n), n, devices=[tpm_record])
    codes = [x.code for x in r.reasons]
    assert Code.QUOTE_MISSING in codes and Code.WRONG_DEVICE in codes
    assert Code.DEVICE_TPM_UNPROVEN in codes  # labelled tpm with no proof (ADR 0018)
