"""Key URIs pick the backend: ``file:PATH``, ``tpm:…``, ``pkcs11:…`` (RFC 7512).

Like securesystemslib's signer URIs, the rest of the program only ever holds a URI and gets a
:class:`attest.signer.Signer` back, so it never knows which backend signs. A URI that names a
hardware key either yields that key or raises; there is no fall back to a software key.

Grammars: ``tpm:`` in :mod:`hardware.tpm`, ``pkcs11:`` in :mod:`hardware.pkcs11_backend`.
The hardware backends are imported only when their scheme is used, so a development machine
without tpm2-pytss or python-pkcs11 can still use ``file:`` keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from attest.errors import KeyLoadError
from attest.models import Measurement
from attest.signer import Signer
from hardware.software import load_private_key

Quoter = Callable[[bytes], dict[str, Any]]


@runtime_checkable
class QuotingSigner(Protocol):
    """A signer whose key can also make TPM quotes over the measurements of one pass."""

    def quoter(self, measurements: Sequence[Measurement]) -> Quoter: ...


def load_signer(uri: str) -> Signer:
    """The signer a key URI names: ``file:PATH`` (development), ``tpm:…`` or ``pkcs11:…`` (RFC 7512).

    Raises:
        KeyLoadError: not a key URI, the backend's library is missing, or the key cannot be
            opened (wrong PIN, no such handle, wrong key type)."""
    scheme, sep, rest = uri.partition(":")
    if not sep:
        raise KeyLoadError(f"key {uri!r} is not a key URI; use file:PATH, tpm:… or pkcs11:…")
    if scheme == "file":
        return load_private_key(Path(rest))
    if scheme == "tpm":
        try:
            from hardware import tpm
        except ImportError as exc:
            raise KeyLoadError(f"key {uri!r} needs tpm2-pytss ({exc}); pip install 'flightseal[hardware]'") from None
        return tpm.TpmSigner.open(uri)
    if scheme == "pkcs11":
        try:
            from hardware import pkcs11_backend
        except ImportError as exc:
            raise KeyLoadError(f"key {uri!r} needs python-pkcs11 ({exc}); pip install 'flightseal[hardware]'") \
                from None
        return pkcs11_backend.Pkcs11Signer.open(uri)
    raise KeyLoadError(f"unknown key URI scheme {scheme!r} in {uri!r}; use file:, tpm: or pkcs11:")


def quoter_for(signer: Signer, measurements: Sequence[Measurement]) -> Quoter | None:
    """The quoter for ``agent.attestation.seal_measurements``, or None when the key cannot quote."""
    if isinstance(signer, QuotingSigner):
        return signer.quoter(measurements)
    return None
