"""The manufacturer's side of TPM-proven enrolment (ADR 0018): challenge, then accept the answer.

Like Keylime's registrar: the EK certificate must chain to a TPM vendor CA and hold the EK's
key; the AK must be a restricted signing key fixed to its TPM; TPM2_MakeCredential (in software,
``tpm2_pytss.utils.make_credential``) hides a random secret that only the TPM holding that EK can
recover, and only while the object named by the AK's name is loaded in it. An answer carrying the
secret therefore proves the AK and the certified EK share one TPM.

The challenge is the manufacturer's own record of what it asked (it holds the SHA-256 of the
secret, not the secret): ``enroll`` checks the answer against the manufacturer's copy, never a
copy that came back from the device. :func:`prove_bench` runs all of it in one process for a
device on the manufacturer's bench, and the secret never reaches a file.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from tpm2_pytss import TPM2_ALG, TPM2B_NAME, TPM2B_PUBLIC, TPMA_OBJECT
from tpm2_pytss.utils import make_credential

from attest.keys import PublicKey
from attest.tpm_evidence import CaRef, TpmEvidence, TpmProofError, check_ak, load_ek_certificate, vouching_ca
from hardware.tpm import TpmUri
from hardware.tpm_identity import TpmAnswer, TpmChallenge, TpmIdentity, activate, digest, public_key_of, read_identity

SECRET_BYTES = 32
EK_REQUIRED = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT


def check_identity(identity: TpmIdentity, cas: Sequence[x509.Certificate], now: datetime) -> tuple[CaRef, PublicKey]:
    """The CA that vouches for the identity's EK and the AK's key, or :class:`TpmProofError` saying why not."""
    cert = load_ek_certificate(identity.ek_certificate)
    ca = vouching_ca(cert, cas, now)
    try:
        ek, _ = TPM2B_PUBLIC.unmarshal(identity.ek_public)
        ek_key = public_key_of(identity.ek_public)
    except Exception as exc:  # the TSS's unmarshalling raises several kinds for bad bytes
        raise TpmProofError(f"the identity's EK public area is not a TPM2B_PUBLIC ({exc})") from None
    if cert.public_key() != ek_key:
        raise TpmProofError("the EK certificate is for another key than the identity's EK")
    if ek.publicArea.objectAttributes & EK_REQUIRED != EK_REQUIRED:
        raise TpmProofError("the identity's EK is not a restricted decryption key fixed to its TPM")
    if ek.publicArea.nameAlg not in (TPM2_ALG.SHA256, TPM2_ALG.SHA384, TPM2_ALG.SHA512):
        raise TpmProofError("the identity's EK uses a name algorithm we do not accept")
    return CaRef.of(ca), check_ak(identity.ak_public, identity.ak_name, None)


def make_challenge(identity: TpmIdentity, cas: Sequence[x509.Certificate], now: datetime) -> tuple[TpmChallenge,
                                                                                                    bytes]:
    """TPM2_MakeCredential for the identity's EK and AK name, after :func:`check_identity`; the challenge
    and its secret (which the caller keeps in memory or drops)."""
    check_identity(identity, cas, now)
    ek, _ = TPM2B_PUBLIC.unmarshal(identity.ek_public)
    secret = secrets.token_bytes(SECRET_BYTES)
    blob, encrypted = make_credential(ek, secret, TPM2B_NAME(bytes.fromhex(identity.ak_name)))
    return TpmChallenge(digest(identity), bytes(ek.get_name()).hex(), identity.ak_name, blob.marshal(),
                        encrypted.marshal(), hashlib.sha256(secret).hexdigest()), secret


@dataclass(frozen=True)
class Proven:
    """What an enrolment record of a proven TPM key holds: the AK's key, the EK's name, the evidence."""

    key: PublicKey
    ek_name: str
    evidence: TpmEvidence


def accept(identity: TpmIdentity, challenge: TpmChallenge, answer: TpmAnswer, cas: Sequence[x509.Certificate],
           now: datetime) -> Proven:
    """The AK's key and the evidence for its enrolment record, once the answer proves the TPM."""
    if challenge.identity_sha256 != digest(identity):
        raise TpmProofError("the challenge was made for another TPM identity file")
    if answer.challenge_sha256 != digest(challenge):
        raise TpmProofError("the answer is for another challenge")
    if not hmac.compare_digest(hashlib.sha256(answer.secret).hexdigest(), challenge.secret_sha256):
        raise TpmProofError("the answer's secret is not the challenge's: the AK is not in the TPM that holds the "
                            "certified EK, or the answer was made up")
    ca, key = check_identity(identity, cas, now)
    return Proven(key, challenge.ek_name, TpmEvidence(identity.ek_certificate, ca, identity.ak_public,
                                                       identity.ak_name))


def prove_bench(uri: TpmUri | str, cas: Sequence[x509.Certificate], now: datetime) -> Proven:
    """All the steps against a TPM this machine can reach (the manufacturer's bench, tests, the demo)."""
    identity = read_identity(uri)
    challenge, _ = make_challenge(identity, cas, now)
    return accept(identity, challenge, activate(uri, challenge), cas, now)
