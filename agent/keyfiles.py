"""Key files on the companion: the MAVLink2 signing key and the gate key, plain or sealed to the TPM.

Plain files are 0600 and written exclusively (never over an existing key: a lost key locks the
operator out). Sealed files (``--seal-to tpm:…``, hardware/sealed.py, ADR 0016) hold a TPM object
only this companion's TPM can open, so a copied file gives nothing away. Readers accept both.
"""

from __future__ import annotations

from pathlib import Path

from attest import jsonio
from attest.errors import FlightSealError
from hardware.files import read_bounded, write_new

SEALED_MAX_BYTES = 4096


class KeyFileError(FlightSealError):
    """A key file could not be written."""


def write_exclusive(path: Path, data: bytes) -> None:
    """``data`` into a new 0600 file; KeyFileError naming the path if one is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_new(path, data)
    except FileExistsError:
        raise KeyFileError(f"{path} exists: not overwriting a key") from None


def key_file_bytes(key: bytes, plain: bytes, seal_to: str | None) -> bytes:
    """What to write for ``key``: ``plain`` (its plain form), or the key sealed to the TPM at ``seal_to``."""
    if seal_to is None:
        return plain
    from hardware.sealed import seal

    return seal(seal_to, key)


def read_key_file(path: Path, what: str) -> tuple[bytes, bool]:
    """A key file's bytes, unsealed if it was sealed (True then)."""
    from hardware.sealed import is_sealed, unseal

    raw = read_bounded(path, what, SEALED_MAX_BYTES)
    if not is_sealed(raw):
        return raw, False
    # strict, bounded JSON first: the unsealer's own json.loads let deep nesting out as a RecursionError
    jsonio.loads(raw, f"{what} {path}", SEALED_MAX_BYTES)
    return unseal(raw, f"{what} {path}"), True
