"""Software ECDSA keys: for development and for offline manufacturer keys kept on an air-gapped machine.

A device attestation signed with one of these says ``software`` in its evidence, and the default
verifier policy refuses it. Key files are PEM (PKCS#8), written 0600 and never overwritten.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InternalError, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.errors import FormatError, KeyLoadError
from attest.keys import KeyKind, PublicKey


class SoftwareSigner:
    """An in-memory P-256 key. ``kind`` is always ``software``."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise KeyLoadError("software keys must be ECDSA P-256")
        self._key = private_key
        self._public = PublicKey.from_crypto(private_key.public_key())

    @classmethod
    def generate(cls) -> SoftwareSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def kind(self) -> KeyKind:
        return KeyKind.SOFTWARE

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def private_pem(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())


def write_private_key(path: Path, signer: SoftwareSigner) -> None:
    """Write a new key file 0600; refuse to overwrite (a lost signing key cannot be re-made)."""
    from hardware.regular import write_new

    try:
        write_new(path, signer.private_pem())
    except FileExistsError:
        raise KeyLoadError(f"{path} already exists; choose another name or delete it yourself") from None
    except OSError as exc:
        raise KeyLoadError(f"cannot create {path}: {exc.strerror}") from None


def load_private_key(path: Path) -> SoftwareSigner:
    from hardware.regular import read_bounded

    try:
        data = read_bounded(path, "key file", 64 * 1024)
    except FormatError as exc:
        raise KeyLoadError(str(exc)) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, InternalError) as exc:  # the last two: an odd OID
        raise KeyLoadError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyLoadError(f"{path} is not an ECDSA P-256 key (FlightSeal uses ECDSA P-256 only, ADR 0002)")
    return SoftwareSigner(key)
