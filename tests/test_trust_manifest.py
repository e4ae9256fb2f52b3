"""Attacks on the signed metadata: threshold, rollback, expiry, rotation, type confusion."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from attest import dsse, jsonio
from attest.errors import ExpiredMetadataError, FormatError, RollbackError, SignatureError, ThresholdError
from attest.trust import TrustedState
from hardware.software import SoftwareSigner
from tests.factory import World


def test_manifest_signed_by_threshold_is_trusted() -> None:
    w = World()
    v = w.trust().verify_manifest(w.manifest_bytes(), w.now)
    assert v.manifest.version == 3
    assert len(v.signers) == 2


def test_manifest_below_threshold_is_refused() -> None:
    w = World()
    one_sig = w.sign_manifest(w.manifest(), w.m_keys[:1])
    with pytest.raises(ThresholdError, match=r"1 valid signature.*threshold is 2"):
        w.trust().verify_manifest(one_sig, w.now)


def test_same_key_signing_twice_counts_once() -> None:
    w = World()
    twice = w.sign_manifest(w.manifest(), [w.m_keys[0], w.m_keys[0]])
    with pytest.raises(ThresholdError):
        w.trust().verify_manifest(twice, w.now)


def test_signatures_by_unknown_keys_do_not_count() -> None:
    w = World()
    strangers = [SoftwareSigner.generate(), SoftwareSigner.generate()]
    forged = w.sign_manifest(w.manifest(), [w.m_keys[0], *strangers])
    with pytest.raises(ThresholdError):
        w.trust().verify_manifest(forged, w.now)


def test_unknown_key_claiming_a_trusted_keyid_does_not_count() -> None:
    w = World()
    impostor = SoftwareSigner.generate()
    env = dsse.sign(dsse.MANIFEST_PAYLOAD_TYPE, jsonio.dumps(w.manifest().to_json()), [w.m_keys[0], impostor])
    relabelled = dsse.Envelope(env.payload_type, env.payload,
                               (env.signatures[0], dsse.EnvelopeSignature(w.m_keys[1].public_key.keyid,
                                                                          env.signatures[1].sig)))
    with pytest.raises(ThresholdError):
        w.trust().verify_manifest(relabelled.to_bytes(), w.now)


def test_expired_manifest_is_refused() -> None:
    w = World()
    old = w.manifest_bytes(expires=w.now - timedelta(seconds=1))
    with pytest.raises(ExpiredMetadataError, match="expired"):
        w.trust().verify_manifest(old, w.now)


def test_rollback_to_older_manifest_is_refused() -> None:
    w = World()
    older = w.manifest_bytes(version=2)
    with pytest.raises(RollbackError, match="older than version 3"):
        w.trust().verify_manifest(older, w.now, highest_seen=3)


def test_same_version_with_different_content_is_refused() -> None:
    w = World()
    trusted = w.trust().verify_manifest(w.manifest_bytes(), w.now)
    changed = w.manifest_bytes(firmware_min_release=0)
    with pytest.raises(RollbackError, match="differs"):
        w.trust().verify_manifest(changed, w.now, highest_seen=3, highest_digest=trusted.digest)


def test_root_signature_cannot_be_used_as_manifest() -> None:
    w = World()
    # A root document signed by the same keys, presented where a manifest is expected.
    with pytest.raises(SignatureError, match="payload type"):
        w.trust().verify_manifest(w.root_bytes(), w.now)


def test_manifest_payload_under_wrong_type_does_not_verify() -> None:
    w = World()
    env = dsse.Envelope.from_bytes(w.manifest_bytes(), "m")
    retyped = dsse.Envelope(dsse.DEVICE_PAYLOAD_TYPE, env.payload, env.signatures)
    with pytest.raises(SignatureError):
        w.trust().verify_manifest(retyped.to_bytes(), w.now)
    # and the signatures do not survive a type change either
    back = dsse.Envelope(dsse.MANIFEST_PAYLOAD_TYPE, env.payload, env.signatures)
    assert w.trust().verify_manifest(back.to_bytes(), w.now).manifest.version == 3


def test_pinned_root_below_its_own_threshold_is_refused() -> None:
    w = World()
    with pytest.raises(ThresholdError):
        TrustedState(w.sign_root(w.root(), w.m_keys[:1]))


def test_root_rotation_needs_old_and_new_thresholds() -> None:
    w = World()
    state = w.trust()
    new_keys = [SoftwareSigner.generate() for _ in range(3)]
    v2 = w.root(version=2, keys=new_keys)
    # signed only by the new keys: the old root did not approve it
    with pytest.raises(ThresholdError, match="old root"):
        state.update_root(w.sign_root(v2, new_keys[:2]))
    # signed only by the old keys: the new root's own keys did not
    with pytest.raises(ThresholdError, match="its own"):
        state.update_root(w.sign_root(v2, w.m_keys[:2]))
    state.update_root(w.sign_root(v2, [*w.m_keys[:2], *new_keys[:2]]))
    assert state.root.version == 2
    # old manifest keys no longer count
    with pytest.raises(ThresholdError):
        state.verify_manifest(w.manifest_bytes(), w.now)
    assert state.verify_manifest(w.sign_manifest(w.manifest(), new_keys[1:]), w.now).manifest.version == 3


def test_root_rotation_cannot_skip_or_repeat_versions() -> None:
    w = World()
    state = w.trust()
    with pytest.raises(RollbackError):
        state.update_root(w.sign_root(w.root(version=1), w.m_keys))
    with pytest.raises(RollbackError):
        state.update_root(w.sign_root(w.root(version=3), w.m_keys))


def test_expired_root_fails_manifest_verification() -> None:
    w = World()
    state = TrustedState(w.sign_root(w.root(expires_days=1), w.m_keys[:2]))
    with pytest.raises(ExpiredMetadataError, match="root"):
        state.verify_manifest(w.manifest_bytes(), w.now + timedelta(days=2))


def test_threshold_larger_than_key_list_is_a_format_error() -> None:
    w = World()
    root = w.root()
    bad = replace(root, roles={**root.roles, "manifest": replace(root.roles["manifest"], threshold=4)})
    with pytest.raises(FormatError, match="threshold 4 exceeds"):
        TrustedState(w.sign_root(bad, w.m_keys))


def test_manifest_with_unknown_field_is_refused() -> None:
    w = World()
    data = w.manifest().to_json()
    data["approve_everything"] = True
    signed = dsse.sign(dsse.MANIFEST_PAYLOAD_TYPE, jsonio.dumps(data), w.m_keys[:2]).to_bytes()
    with pytest.raises(FormatError, match="approve_everything"):
        w.trust().verify_manifest(signed, w.now)


def test_duplicate_json_keys_are_refused() -> None:
    w = World()
    payload = jsonio.dumps(w.manifest().to_json()).replace(b'"version":3', b'"version":3,"version":9')
    signed = dsse.sign(dsse.MANIFEST_PAYLOAD_TYPE, payload, w.m_keys[:2]).to_bytes()
    with pytest.raises(FormatError, match="duplicate key"):
        w.trust().verify_manifest(signed, w.now)


def test_oversized_manifest_is_refused_before_parsing() -> None:
    w = World()
    with pytest.raises(FormatError, match="limit"):
        w.trust().verify_manifest(b" " * (600 * 1024), w.now)


def test_manifest_round_trips_through_json() -> None:
    w = World()
    from attest.manifest import Manifest

    m = w.manifest()
    assert Manifest.from_json(jsonio.loads(jsonio.dumps(m.to_json()), "m", 10**6)) == m


def test_root_listing_a_key_of_the_wrong_type_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    w = World()
    data = w.root().to_json()
    keyid = next(iter(data["keys"]))
    for other in (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP384R1())):
        pem = other.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        bad = {**data, "keys": {**data["keys"], keyid: {**data["keys"][keyid], "public": pem}}}
        signed = dsse.sign(dsse.ROOT_PAYLOAD_TYPE, jsonio.dumps(bad), w.m_keys[:2]).to_bytes()
        with pytest.raises(FormatError, match="P-256"):
            TrustedState(signed)


def test_private_key_file_of_the_wrong_type_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from attest.errors import KeyLoadError
    from hardware.uri import load_signer

    path = tmp_path / "ed.pem"
    path.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(KeyLoadError, match="ECDSA"):
        load_signer(f"file:{path}")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(KeyLoadError, match="not an unencrypted PEM"):
        load_signer(f"file:{tmp_path / 'junk.pem'}")


def test_component_image_crc_must_be_16_hex_digits() -> None:
    from attest.manifest import Manifest

    data = World().manifest().to_json()
    data["components"][0]["firmware_crc64"] = ["1122334455667788"]
    assert Manifest.from_json(data).components[0].firmware_crc64 == ("1122334455667788",)
    for bad in ("11223344556677", "112233445566778G", "1122334455667788AA".lower(), 7):
        data["components"][0]["firmware_crc64"] = [bad]
        with pytest.raises(FormatError, match="firmware_crc64"):
            Manifest.from_json(data)


def test_a_component_without_image_crcs_keeps_its_old_json() -> None:
    assert "firmware_crc64" not in World().manifest().to_json()["components"][0]
