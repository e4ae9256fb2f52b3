"""The one signing interface. Backends (TPM, PKCS#11, software file) live in ``hardware/``.

The core only ever asks a signer for its public key, where its private key lives, and a
signature; it never learns which backend it is talking to.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from attest.keys import KeyKind, PublicKey


@runtime_checkable
class Signer(Protocol):
    """What every key backend implements (securesystemslib's shape): a key kind, the public key,
    and ``sign(payload) -> bytes``. Backends are chosen by URI (:func:`hardware.uri.load_signer`)."""

    @property
    def public_key(self) -> PublicKey:
        """The key that verifies this signer's signatures."""
        ...

    @property
    def kind(self) -> KeyKind:
        """Where the private key lives; recorded in the evidence."""
        ...

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 signature over ``data``, DER encoded."""
        ...
