"""Proof that an enrolled device key lives in a certified TPM (ADR 0018), and its checks.

The rules, checked by the manufacturer before the enrolment record is signed, and again by a
verifier (the ones marked *) from the record alone:

1. The EK certificate chains, signature by signature, to a configured TPM vendor CA (intermediates
   among the CAs are allowed), and each certificate on the way is within its validity at
   enrolment. (*: the verifier re-checks the signatures against its own ``tpm-cas/``, not the
   dates, so a fleet does not stop flying the day an EK certificate expires.)
2. The EK certificate's public key is the EK's.
3. *The AK's public area hashes to its TPM name, is a restricted signing key born in the TPM and
   bound to it (fixedTPM, fixedParent, sensitiveDataOrigin), and its point is the enrolled key.
4. Credential activation: the TPM holding that EK released a secret bound to the AK's name, which
   it does only for an object with that name loaded in the same TPM. The record says so in
   ``method``; only the manufacturer sees it happen.

Everything here is bytes in, decisions out: the TPM work is in ``hardware/tpm_identity.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest import jsonio
from attest.errors import FlightSealError, FormatError
from attest.keys import PublicKey
from attest.limits import LIMITS

METHOD = "credential-activation"
MAX_CHAIN = LIMITS.max_ek_chain
MAX_CERT_BYTES = LIMITS.max_cert_bytes
MAX_PUBLIC_BYTES = 1024
_W = "tpm evidence"

TPM_ALG_SHA256, TPM_ALG_ECC, TPM_ALG_NULL, TPM_ECC_NIST_P256 = 0x000B, 0x0023, 0x0010, 0x0003
FIXEDTPM, FIXEDPARENT, SENSITIVEDATAORIGIN = 0x2, 0x10, 0x20
RESTRICTED, DECRYPT, SIGN_ENCRYPT = 0x10000, 0x20000, 0x40000
AK_REQUIRED = FIXEDTPM | FIXEDPARENT | SENSITIVEDATAORIGIN | RESTRICTED | SIGN_ENCRYPT


class TpmProofError(FlightSealError):
    """The TPM could not be proven: untrusted EK certificate, a foreign AK, a wrong answer."""


@dataclass(frozen=True)
class CaRef:
    """The CA that vouched for an EK certificate: its subject and the SHA-256 of its DER."""

    subject: str
    sha256: str

    @classmethod
    def of(cls, cert: x509.Certificate) -> CaRef:
        return cls(cert.subject.rfc4514_string(), hashlib.sha256(cert.public_bytes(serialization.Encoding.DER))
                   .hexdigest())


@dataclass(frozen=True)
class TpmEvidence:
    """What an enrolment record carries for a ``tpm`` key: the EK certificate, the CA that vouched
    for it, and the AK (public area and name) that credential activation bound to that EK."""

    ek_certificate: bytes
    ek_ca: CaRef
    ak_public: bytes
    ak_name: str
    method: str = METHOD

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "ek_certificate": base64.b64encode(self.ek_certificate).decode(),
                "ek_certificate_sha256": hashlib.sha256(self.ek_certificate).hexdigest(),
                "ek_ca": {"subject": self.ek_ca.subject, "sha256": self.ek_ca.sha256},
                "ak_public": self.ak_public.hex(), "ak_name": self.ak_name}

    @classmethod
    def from_json(cls, data: Any) -> TpmEvidence:
        o = jsonio.expect_object(data, _W, {"method", "ek_certificate", "ek_certificate_sha256", "ek_ca",
                                            "ak_public", "ak_name"})
        ca = jsonio.expect_object(o["ek_ca"], _W, {"subject", "sha256"})
        cert = _b64(jsonio.expect_str(o["ek_certificate"], _W, "ek_certificate", 2 * MAX_CERT_BYTES),
                    "ek_certificate")
        if hashlib.sha256(cert).hexdigest() != jsonio.expect_str(o["ek_certificate_sha256"], _W,
                                                                 "ek_certificate_sha256", 64):
            raise FormatError(_W, "is not the SHA-256 of ek_certificate", "ek_certificate_sha256")
        return cls(ek_certificate=cert,
                   ek_ca=CaRef(jsonio.expect_str(ca["subject"], _W, "ek_ca.subject", 1024),
                               jsonio.expect_str(ca["sha256"], _W, "ek_ca.sha256", 64)),
                   ak_public=_hex(jsonio.expect_str(o["ak_public"], _W, "ak_public", 2 * MAX_PUBLIC_BYTES),
                                  "ak_public"),
                   ak_name=jsonio.expect_str(o["ak_name"], _W, "ak_name", 256),
                   method=jsonio.expect_str(o["method"], _W, "method", 64))


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(_W, "is not base64", field) from None


def _hex(text: str, field: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise FormatError(_W, "is not hex", field) from None


# ---- CAs and the EK certificate

def load_cas(pem: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file of TPM vendor CAs (roots and intermediates alike)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise FormatError(what, f"is not a PEM file of CA certificates ({exc})") from None
    return certs


def load_ek_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise TpmProofError(f"the EK certificate is not a DER X.509 certificate ({exc})") from None


def vouching_ca(ek_cert: x509.Certificate, cas: Sequence[x509.Certificate], now: datetime | None) -> x509.Certificate:
    """The CA at the top of the chain from ``ek_cert`` through ``cas``; :class:`TpmProofError` if none.

    Each link is checked: the issuer's name, its signature, that the issuer is a CA, and (when
    ``now`` is given) each certificate's validity. The path climbs while an issuer is among the
    CAs, so a vendor intermediate given alone, or with its root, both vouch.
    """
    if not cas:
        raise TpmProofError("no TPM vendor CA is configured: give --ek-ca CA.pem (the TPM vendor's EK CA)")
    cert, path = ek_cert, []
    for _ in range(MAX_CHAIN):
        _check_dates(cert, now)
        issuer = next((ca for ca in cas if ca.subject == cert.issuer and _signed_by(cert, ca)), None)
        if issuer is None or issuer in path:
            break
        if not _is_ca(issuer):
            raise TpmProofError(f"{issuer.subject.rfc4514_string()} signed the EK certificate's chain but is not a CA")
        path.append(issuer)
        if issuer.issuer == issuer.subject:
            _check_dates(issuer, now)
            break
        cert = issuer
    if not path:
        raise TpmProofError(f"the EK certificate (issuer {ek_cert.issuer.rfc4514_string()!r}) is not issued by any "
                            f"configured TPM vendor CA ({', '.join(c.subject.rfc4514_string() for c in cas)})")
    return path[-1]


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return cert.version is x509.Version.v1  # a v1 certificate has no extensions; old vendor roots are v1
    except (ValueError, x509.DuplicateExtension):  # malformed extensions: not a CA we can trust
        return False


def _check_dates(cert: x509.Certificate, now: datetime | None) -> None:
    if now is None:
        return
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise TpmProofError(f"certificate {cert.subject.rfc4514_string() or '(no subject)'} is valid from "
                            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}, "
                            f"not at {now:%Y-%m-%d %H:%M}")


# ---- the AK's public area (TPMT_PUBLIC, as the TPM marshals it)

@dataclass(frozen=True)
class AkPublic:
    name_alg: int
    attributes: int
    curve: int
    x: bytes
    y: bytes


def parse_ak_public(data: bytes) -> AkPublic:
    """An ECC TPMT_PUBLIC; anything else, or trailing bytes, is a :class:`TpmProofError`."""
    r = _Reader(data)
    kind, name_alg, attrs = r.u16(), r.u16(), r.u32()
    if kind != TPM_ALG_ECC:
        raise TpmProofError(f"the AK is not an ECC key (TPM algorithm 0x{kind:04x})")
    r.sized()  # authPolicy
    if r.u16() != TPM_ALG_NULL:  # symmetric: a signing key has none
        raise TpmProofError("the AK has a symmetric algorithm: it is a storage key, not a signing key")
    if r.u16() != TPM_ALG_NULL:  # scheme: ECDSA / ECDAA carry a hash (ECDAA also a count)
        r.u16()
    curve = r.u16()
    if r.u16() != TPM_ALG_NULL:  # kdf
        r.u16()
    x, y = r.sized(), r.sized()
    if not r.done():
        raise TpmProofError("the AK public area has trailing bytes")
    return AkPublic(name_alg, attrs, curve, x, y)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def _take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise TpmProofError("the AK public area is truncated")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u16(self) -> int:
        return int(struct.unpack(">H", self._take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def sized(self) -> bytes:
        return self._take(self.u16())

    def done(self) -> bool:
        return self.at == len(self.data)


def tpm_name(public_area: bytes) -> str:
    """The TPM name of an object whose nameAlg is SHA-256: 000b ‖ SHA-256(TPMT_PUBLIC), hex."""
    return (TPM_ALG_SHA256.to_bytes(2, "big") + hashlib.sha256(public_area).digest()).hex()


def check_ak(ak_public: bytes, ak_name: str, key: PublicKey | None) -> PublicKey:
    """The enrolled key the AK public area holds, after rule 3; :class:`TpmProofError` otherwise."""
    ak = parse_ak_public(ak_public)
    if ak.name_alg != TPM_ALG_SHA256 or tpm_name(ak_public) != ak_name.lower():
        raise TpmProofError(f"the AK public area does not have the AK name {ak_name[:20]}…")
    missing = AK_REQUIRED & ~ak.attributes
    if missing or ak.attributes & DECRYPT:
        raise TpmProofError(f"the AK's attributes 0x{ak.attributes:08x} are not those of a restricted signing key "
                            "born in and bound to its TPM (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, "
                            "sign, not decrypt)")
    if ak.curve != TPM_ECC_NIST_P256 or len(ak.x) > 32 or len(ak.y) > 32:
        raise TpmProofError("the AK is not an ECC P-256 key")
    try:
        point = ec.EllipticCurvePublicNumbers(int.from_bytes(ak.x, "big"), int.from_bytes(ak.y, "big"),
                                              ec.SECP256R1()).public_key()
    except ValueError:
        raise TpmProofError("the AK's point is not on P-256") from None
    public = PublicKey.from_crypto(point)
    if key is not None and public != key:
        raise TpmProofError(f"the AK in the TPM evidence is key {public.keyid[:16]}…, not the enrolled key "
                            f"{key.keyid[:16]}…")
    return public


def check_record(evidence: TpmEvidence | None, key: PublicKey, ak_name: str,
                 cas: Sequence[x509.Certificate]) -> list[str]:
    """What a verifier re-checks in an enrolment record of kind ``tpm`` (rules 1 without dates, 3)."""
    if evidence is None:
        return ["enrolled as a TPM key with no proof that it is one (no credential activation against a "
                "certified EK); re-enrol it: flightseal keys enroll --kind tpm … --ek-ca VENDOR_CA.pem"]
    if evidence.method != METHOD:
        return [f"TPM evidence method {evidence.method!r} is not {METHOD!r}"]
    problems = []
    if ak_name and ak_name.lower() != evidence.ak_name.lower():
        problems.append("the record's AK name differs from the one its TPM evidence proves")
    try:
        check_ak(evidence.ak_public, evidence.ak_name, key)
    except TpmProofError as exc:
        problems.append(str(exc))
    if cas:
        try:
            vouching_ca(load_ek_certificate(evidence.ek_certificate), cas, None)
        except TpmProofError as exc:
            problems.append(f"{exc} (this verifier's tpm-cas/)")
        except Exception as exc:  # a certificate cryptography cannot read to the end: unproven, never a crash
            problems.append(f"the EK certificate cannot be checked ({type(exc).__name__}: {exc})")
    return problems
