"""Public keys as the core knows them: ECDSA P-256 with SHA-256, identified by a key id.

One algorithm keeps the core small and works on every backend we support: TPM 2.0, PKCS#11
tokens and software keys all do ECDSA P-256. The key id is the SHA-256 of the key's
deterministic JSON, as in TUF, so a key id cannot be claimed for another key.
"""

from __future__ import annotations

import enum
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from attest import jsonio
from attest.errors import FormatError, KeyLoadError

KEYTYPE = "ecdsa"
SCHEME = "ecdsa-sha2-nistp256"


class KeyKind(enum.StrEnum):
    """Where a private key lives. Verifier policy may refuse ``software``."""

    SOFTWARE = "software"
    TPM = "tpm"
    PKCS11 = "pkcs11"


@dataclass(frozen=True)
class PublicKey:
    """An ECDSA P-256 public key (PEM SubjectPublicKeyInfo)."""

    public_pem: str

    def __post_init__(self) -> None:
        if _canonical_pem(self.public_pem) != self.public_pem:
            # one key, one text, one key id: another encoding of the same key (compressed point, other
            # line breaks) would get a second key id and count twice toward a threshold (issue 11)
            raise KeyLoadError("public key is not in canonical form (PEM SubjectPublicKeyInfo, uncompressed "
                               "point, as `flightseal keys show` prints it)")

    def _load(self) -> ec.EllipticCurvePublicKey:
        return _load_pem(self.public_pem)

    @classmethod
    def from_crypto(cls, key: ec.EllipticCurvePublicKey) -> PublicKey:
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(pem.decode())

    @property
    def keyid(self) -> str:
        return _keyid(self.public_pem)

    def to_json(self) -> dict[str, Any]:
        return {"keytype": KEYTYPE, "scheme": SCHEME, "public": self.public_pem}

    @classmethod
    def from_json(cls, data: Any, what: str = "key") -> PublicKey:
        obj = jsonio.expect_object(data, what, {"keytype", "scheme", "public"})
        if obj["keytype"] != KEYTYPE or obj["scheme"] != SCHEME:
            raise FormatError(what, f"unsupported key {obj['keytype']}/{obj['scheme']} (want {KEYTYPE}/{SCHEME})")
        try:
            return cls(jsonio.expect_str(obj["public"], what, "public", 1024))
        except KeyLoadError as exc:
            raise FormatError(what, str(exc), "public") from None

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if ``signature`` (DER) is this key's ECDSA-SHA256 signature over ``data``."""
        try:
            self._load().verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def verify_prehashed(self, signature: bytes, digest: bytes) -> bool:
        """Like :meth:`verify` for a SHA-256 digest computed elsewhere (a TPM quote's attest hash)."""
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

        try:
            self._load().verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except (InvalidSignature, ValueError):
            return False
        return True


@functools.lru_cache(maxsize=256)
def _load_pem(pem: str) -> ec.EllipticCurvePublicKey:
    """Parse once per key: verifiers check many signatures by the same few keys."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # unknown key type or curve: refused the same
        raise KeyLoadError(f"public key is not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyLoadError("public key is not ECDSA P-256 (the only key type FlightSeal accepts)")
    return key


@functools.lru_cache(maxsize=256)
def _canonical_pem(pem: str) -> str:
    key = _load_pem(pem)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@functools.lru_cache(maxsize=256)
def _keyid(pem: str) -> str:
    return hashlib.sha256(jsonio.dumps({"keytype": KEYTYPE, "scheme": SCHEME, "public": pem})).hexdigest()


def raw_to_der(raw: bytes) -> bytes:
    """Convert an r‖s signature (PKCS#11 CKM_ECDSA, TPM) to DER for pyca/cryptography."""
    if len(raw) != 64:
        raise FormatError("signature", f"raw P-256 signature must be 64 bytes, got {len(raw)}")
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def der_to_raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")
