"""Secrets sealed to the companion's TPM: the MAVLink2 signing key and the gate key at rest (ADR 0016).

A file copied off the companion (a stolen SD card, a backup) must not give away the key that lets
its holder arm the drone past a failing manifest. Sealed, the file holds a TPM object only this TPM
can load: a keyedhash (fixedTPM, fixedParent, noDA, userWithAuth, no policy) under the owner
hierarchy's ECC P-256 storage primary, which the TPM derives again from its seed on every unseal
(the template tpm2-tools uses by default, so ``tpm2_createprimary``/``tpm2_load``/``tpm2_unseal``
read the same file). Who may unseal is who may open the TPM, as for the device key (ADR 0003).

File format (JSON, one object): ``format`` = ``flightseal-tpm-sealed-v1``, ``tpm`` (the TPM's key URI as
given; its handle is not used), ``public`` and ``private`` (base64 of the marshalled TPM2B_PUBLIC and
TPM2B_PRIVATE, what ``tpm2_create -u/-r`` writes).
"""

from __future__ import annotations

import base64
import binascii
import json

from tpm2_pytss import (
    ESYS_TR,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMA_OBJECT,
    TPMS_SENSITIVE_CREATE,
)
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from attest.errors import FlightSealError
from hardware.tpm import TpmUri, connect

FORMAT = "flightseal-tpm-sealed-v1"
MAX_SECRET = 128  # TPM2B_SENSITIVE_DATA holds up to 128 bytes
STORAGE_TEMPLATE = "ecc256:aes128cfb"
SEALED_ATTRS = TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.NODA


class SealError(FlightSealError):
    """A secret could not be sealed to, or unsealed from, the TPM."""


def _primary(esapi: object) -> object:
    template = TPM2B_PUBLIC.parse(STORAGE_TEMPLATE, objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS)
    handle, *_ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)  # type: ignore[attr-defined]
    return handle


def seal(tpm: str, secret: bytes) -> bytes:
    """The sealed-file bytes for ``secret`` on the TPM at ``tpm`` (a ``tpm:`` URI, handle ignored)."""
    if not 0 < len(secret) <= MAX_SECRET:
        raise SealError(f"a sealed secret has 1 to {MAX_SECRET} bytes, not {len(secret)}")
    uri = TpmUri.parse(tpm)
    esapi = connect(uri)
    try:
        primary = _primary(esapi)
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(secret)))
        template = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=SEALED_ATTRS)
        private, public, *_ = esapi.create(primary, sensitive, template)
        esapi.flush_context(primary)
    except TSS2_Exception as exc:
        raise SealError(f"cannot seal to the TPM at {uri.tcti_text}: {exc} (owner hierarchy auth set?)") from None
    finally:
        esapi.close()
    doc = {"format": FORMAT, "tpm": str(uri), "public": base64.b64encode(public.marshal()).decode(),
           "private": base64.b64encode(private.marshal()).decode()}
    return (json.dumps(doc, indent=2) + "\n").encode()


def is_sealed(raw: bytes) -> bool:
    """Whether a key file's bytes are a sealed secret (a raw 32-byte key never starts like this)."""
    return raw.lstrip().startswith(b"{") and FORMAT.encode() in raw


def unseal(raw: bytes, what: str) -> bytes:
    """The secret in a sealed file's bytes; ``what`` names the file in errors."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        tpm, public_b64, private_b64 = str(doc["tpm"]), str(doc["public"]), str(doc["private"])
        public, _ = TPM2B_PUBLIC.unmarshal(base64.b64decode(public_b64, validate=True))
        private, _ = TPM2B_PRIVATE.unmarshal(base64.b64decode(private_b64, validate=True))
    except (ValueError, KeyError, TypeError, binascii.Error, TSS2_Exception) as exc:
        raise SealError(f"{what} is not a readable sealed secret ({exc}); seal it again") from None
    uri = TpmUri.parse(tpm)
    esapi = connect(uri)
    try:
        primary = _primary(esapi)
        try:
            handle = esapi.load(primary, private, public)
        except TSS2_Exception as exc:
            raise SealError(f"{what} was sealed to another TPM (or the owner hierarchy was cleared): the TPM at "
                            f"{uri.tcti_text} cannot load it ({exc}); make a new key there") from None
        secret = bytes(esapi.unseal(handle))
        esapi.flush_context(handle)
        esapi.flush_context(primary)
    except TSS2_Exception as exc:
        raise SealError(f"cannot unseal {what} with the TPM at {uri.tcti_text}: {exc}") from None
    finally:
        esapi.close()
    return secret
