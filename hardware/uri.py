"""Key URIs pick the backend: ``file:PATH``, ``tpm:…``, ``pkcs11:…`` (RFC 7512).

Like securesystemslib's signer URIs, the rest of the program only ever holds a URI and gets a
:class:`attest.signer.Signer` back, so it never knows which backend signs.
"""

from __future__ import annotations

from pathlib import Path

from attest.errors import KeyLoadError
from attest.signer import Signer
from hardware.software import load_private_key


def load_signer(uri: str) -> Signer:
    scheme, sep, rest = uri.partition(":")
    if not sep:
        raise KeyLoadError(f"key {uri!r} is not a key URI; use file:PATH, tpm:… or pkcs11:…")
    if scheme == "file":
        return load_private_key(Path(rest))
    raise KeyLoadError(f"unknown key URI scheme {scheme!r} in {uri!r}; use file:, tpm: or pkcs11:")
