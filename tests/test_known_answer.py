"""Known-answer files made once (tests/vectors/generate.py); their keys are gone. They must keep verifying."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from attest.models import Code
from attest.trust import TrustedState
from attest.verify import VerifierPolicy, verify_attestation

V = Path(__file__).parent / "vectors"
CHECKED_AT = datetime(2026, 11, 21, 12, 1, 0, tzinfo=UTC)


def _verify(nonce: bytes, now: datetime = CHECKED_AT) -> list[Code]:
    trust = TrustedState((V / "root.json").read_bytes())
    device = trust.verify_enrollment((V / "device.json").read_bytes())
    r = verify_attestation((V / "attestation.json").read_bytes(), trust=trust, devices=[device],
                           manifest_bytes=(V / "manifest.json").read_bytes(), nonce=nonce, now=now,
                           policy=VerifierPolicy(allow_software_keys=True))
    return [x.code for x in r.reasons]


def test_checked_in_attestation_still_verifies() -> None:
    assert _verify(bytes.fromhex((V / "nonce.hex").read_text().strip())) == []


def test_checked_in_attestation_with_another_nonce_fails() -> None:
    assert _verify(bytes(32)) == [Code.NONCE_MISMATCH]


def test_checked_in_manifest_has_expected_content() -> None:
    trust = TrustedState((V / "root.json").read_bytes())
    v = trust.verify_manifest((V / "manifest.json").read_bytes(), CHECKED_AT)
    assert v.manifest.version == 3
    assert v.manifest.firmware[0].git_hash == "2598e9d4"
    assert len(v.signers) == 2
