"""The device's side of TPM-proven enrolment (ADR 0018): its identity, and credential activation.

- :func:`read_identity` reads what the manufacturer needs: the EK certificate from NV
  (0x01c00002 RSA 2048, 0x01c0000a ECC P-256, 0x01c00016 ECC P-384 high range), the EK's public
  area (the persistent EK whose key is the certificate's, at 0x81010001 / 0x81010002 /
  0x81010016, or else the EK re-created from the TCG template the certificate belongs to), and
  the AK's public area and name (the key at the key URI's handle).
- :func:`activate` runs TPM2_ActivateCredential: the TPM decrypts the manufacturer's secret with
  the EK only if the object the credential names, the AK, is loaded in this same TPM. The EK's
  default policy is PolicySecret(TPM_RH_ENDORSEMENT), so a policy session satisfies it (as
  tpm2_activatecredential does); a high-range EK with userWithAuth takes its (empty) password.

The three small files the split flow exchanges (identity, challenge, answer) are defined here
too; none carries the secret in clear except the answer, which is worth nothing once used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPMA_OBJECT,
    TPMA_SESSION,
    TPMT_SYM_DEF,
)
from tpm2_pytss.TSS2_Exception import TSS2_Exception
from tpm2_pytss.utils import NVReadEK, create_ek_template

from attest import jsonio
from attest.errors import FormatError
from attest.limits import LIMITS
from attest.tpm_evidence import load_ek_certificate
from hardware.tpm import EK_HANDLES, ENDORSEMENT_AUTH_ENV, TpmError, TpmUri, _load_ak, _what, connect, persistent_at

EK_TYPES = ("EK-RSA2048", "EK-ECC256", "EK-HIGH-ECC384")  # TCG EK profile templates, by certificate NV index
IDENTITY_TYPE = "flightseal/tpm-identity"
CHALLENGE_TYPE = "flightseal/tpm-challenge"
ANSWER_TYPE = "flightseal/tpm-answer"
MAX_FILE_BYTES = LIMITS.max_tpm_identity_file_bytes


def digest(doc: Any) -> str:
    """SHA-256 of a document's canonical JSON: how a challenge names its identity, an answer its challenge."""
    return hashlib.sha256(jsonio.dumps(doc.to_json())).hexdigest()


@dataclass(frozen=True)
class TpmIdentity:
    """Device → manufacturer: the EK certificate (DER), EK and AK public areas, the AK's name."""

    ek_certificate: bytes
    ek_public: bytes  # TPM2B_PUBLIC as marshalled
    ek_handle: int  # 0: no persistent EK, re-created from ek_template
    ek_template: str
    ak_public: bytes  # TPMT_PUBLIC as marshalled (its SHA-256 is the name)
    ak_name: str

    def to_json(self) -> dict[str, Any]:
        return {"_type": IDENTITY_TYPE, "ek_certificate": base64.b64encode(self.ek_certificate).decode(),
                "ek_public": self.ek_public.hex(), "ek_handle": f"0x{self.ek_handle:08x}",
                "ek_template": self.ek_template, "ak_public": self.ak_public.hex(), "ak_name": self.ak_name}

    @classmethod
    def from_json(cls, data: Any, what: str = "TPM identity") -> TpmIdentity:
        o = _expect(data, what, IDENTITY_TYPE, {"ek_certificate", "ek_public", "ek_handle", "ek_template",
                                                  "ak_public", "ak_name"})
        try:
            cert = base64.b64decode(jsonio.expect_str(o["ek_certificate"], what, "ek_certificate", 8192),
                                    validate=True)
            handle = int(jsonio.expect_str(o["ek_handle"], what, "ek_handle", 10), 16)
        except (binascii.Error, ValueError):
            raise FormatError(what, "ek_certificate must be base64 and ek_handle hex") from None
        return cls(cert, _unhex(o, "ek_public", what), handle, jsonio.expect_str(o["ek_template"], what,
                                                                                    "ek_template", 32),
                   _unhex(o, "ak_public", what), jsonio.expect_str(o["ak_name"], what, "ak_name", 256))


@dataclass(frozen=True)
class TpmChallenge:
    """Manufacturer → device (and kept by the manufacturer): TPM2_MakeCredential's output for this
    identity's EK and AK name, and the SHA-256 of the secret it hides (never the secret)."""

    identity_sha256: str
    ek_name: str
    ak_name: str
    credential_blob: bytes  # TPM2B_ID_OBJECT as marshalled
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET as marshalled
    secret_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"_type": CHALLENGE_TYPE, "identity_sha256": self.identity_sha256, "ek_name": self.ek_name,
                "ak_name": self.ak_name, "credential_blob": self.credential_blob.hex(),
                "encrypted_secret": self.encrypted_secret.hex(), "secret_sha256": self.secret_sha256}

    @classmethod
    def from_json(cls, data: Any, what: str = "TPM challenge") -> TpmChallenge:
        o = _expect(data, what, CHALLENGE_TYPE, {"identity_sha256", "ek_name", "ak_name", "credential_blob",
                                                   "encrypted_secret", "secret_sha256"})
        s = {k: jsonio.expect_str(o[k], what, k, 256) for k in ("identity_sha256", "ek_name", "ak_name",
                                                                 "secret_sha256")}
        return cls(s["identity_sha256"], s["ek_name"], s["ak_name"], _unhex(o, "credential_blob", what),
                   _unhex(o, "encrypted_secret", what), s["secret_sha256"])


@dataclass(frozen=True)
class TpmAnswer:
    """Device → manufacturer: the secret the TPM released, for one challenge (by its digest)."""

    challenge_sha256: str
    secret: bytes

    def to_json(self) -> dict[str, Any]:
        return {"_type": ANSWER_TYPE, "challenge_sha256": self.challenge_sha256, "secret": self.secret.hex()}

    @classmethod
    def from_json(cls, data: Any, what: str = "TPM answer") -> TpmAnswer:
        o = _expect(data, what, ANSWER_TYPE, {"challenge_sha256", "secret"})
        return cls(jsonio.expect_str(o["challenge_sha256"], what, "challenge_sha256", 64), _unhex(o, "secret", what))


def _expect(data: Any, what: str, kind: str, fields: set[str]) -> dict[str, Any]:
    o = jsonio.expect_object(data, what, fields | {"_type"})
    if o["_type"] != kind:
        raise FormatError(what, f"_type is {o['_type']!r}, expected {kind!r}", "_type")
    return o


def _unhex(o: dict[str, Any], field: str, what: str) -> bytes:
    try:
        return bytes.fromhex(jsonio.expect_str(o[field], what, field, 2 * MAX_FILE_BYTES))
    except ValueError:
        raise FormatError(what, "is not hex", field) from None


# ---- on the device's TPM

def read_identity(uri: TpmUri | str) -> TpmIdentity:
    """The identity of the TPM behind ``uri``: its certified EK and the AK at the URI's handle."""
    uri = uri if isinstance(uri, TpmUri) else TpmUri.parse(uri)
    esapi = connect(uri)
    try:
        ak, _, ak_name = _load_ak(esapi, uri)
        ak_public, _, _ = esapi.read_public(ak)
        cert, ek_type, template = _ek_certificate(esapi, uri)
        handle, ek_public = _find_ek(esapi, cert, template)
    except TSS2_Exception as exc:
        raise TpmError(f"reading the TPM's identity failed ({_what(exc)})") from None
    finally:
        esapi.close()
    return TpmIdentity(cert, ek_public.marshal(), handle, ek_type, ak_public.publicArea.marshal(), ak_name.hex())


def _ek_certificate(esapi: ESAPI, uri: TpmUri) -> tuple[bytes, str, Any]:
    read = NVReadEK(esapi)
    for ek_type in EK_TYPES:
        try:
            cert, template = create_ek_template(ek_type, read)
        except ValueError:  # a high-range type without its certificate
            continue
        if cert:
            return bytes(cert), ek_type, template
    raise TpmError(f"the TPM at {uri.tcti_text} has no EK certificate in NV (0x01c00002, 0x01c0000a, 0x01c00016): "
                   "its vendor did not provision one, so it cannot be proven (swtpm: swtpm_setup --create-ek-cert)")


def _key_of(public: Any) -> Any:
    pem = public.publicArea.to_pem()
    return load_pem_public_key(pem if isinstance(pem, bytes) else str(pem).encode())


def _find_ek(esapi: ESAPI, cert_der: bytes, template: Any) -> tuple[int, Any]:
    """The persistent EK whose key is the certificate's, else the EK re-created from its template."""
    want = load_ek_certificate(cert_der).public_key()
    for handle, public in _persistent_eks(esapi):
        if _key_of(public) == want:
            return handle, public
    tr, public, *_ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
    esapi.flush_context(tr)
    if _key_of(public) != want:
        raise TpmError("no endorsement key in this TPM has the key of its EK certificate (persisted or from the TCG "
                       "template): the certificate is not this TPM's")
    return 0, public


def _persistent_eks(esapi: ESAPI) -> Iterator[tuple[int, Any]]:
    for handle, tr, public, _ in persistent_at(esapi, EK_HANDLES):
        esapi.tr_close(tr)
        yield handle, public


def activate(uri: TpmUri | str, challenge: TpmChallenge) -> TpmAnswer:
    """TPM2_ActivateCredential with the AK at the URI's handle and the EK the challenge names."""
    uri = uri if isinstance(uri, TpmUri) else TpmUri.parse(uri)
    esapi = connect(uri)
    try:
        if os.environ.get(ENDORSEMENT_AUTH_ENV):
            esapi.tr_set_auth(ESYS_TR.ENDORSEMENT, os.environ[ENDORSEMENT_AUTH_ENV].encode())
        ak, _, _ = _load_ak(esapi, uri)  # with the AK's auth value, where the URI names one (ActivateCredential
        # needs the AK's admin role)
        ek, transient = _ek_named(esapi, challenge.ek_name)
        try:
            secret = _activate(esapi, ak, ek, challenge)
        finally:
            if transient:
                esapi.flush_context(ek)
    finally:
        esapi.close()
    return TpmAnswer(digest(challenge), secret)


def _ek_named(esapi: ESAPI, name: str) -> tuple[Any, bool]:
    for _, tr, _, ek_name in persistent_at(esapi, EK_HANDLES):
        if ek_name.hex() == name:
            return tr, False
        esapi.tr_close(tr)
    read = NVReadEK(esapi)
    for ek_type in EK_TYPES:
        try:
            _, template = create_ek_template(ek_type, read)
        except ValueError:
            continue
        tr, _, _, _, _ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        _, ek_name, _ = esapi.read_public(tr)
        if bytes(ek_name).hex() == name:
            return tr, True
        esapi.flush_context(tr)
    raise TpmError(f"this TPM has no endorsement key named {name[:20]}…: the challenge was made for another TPM")


def _activate(esapi: ESAPI, ak: Any, ek: Any, challenge: TpmChallenge) -> bytes:
    blob, _ = TPM2B_ID_OBJECT.unmarshal(challenge.credential_blob)
    encrypted, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(challenge.encrypted_secret)
    ek_public, _, _ = esapi.read_public(ek)
    session = ESYS_TR.PASSWORD
    if not ek_public.publicArea.objectAttributes & TPMA_OBJECT.USERWITHAUTH:
        session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                           TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), ek_public.publicArea.nameAlg)
        esapi.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION)
    try:
        if session != ESYS_TR.PASSWORD:
            esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        secret = esapi.activate_credential(ak, ek, blob, encrypted, session1=ESYS_TR.PASSWORD, session2=session)
    except TSS2_Exception as exc:
        raise TpmError(f"the TPM refused to activate the credential ({_what(exc)}): the challenge names a key "
                       "that is not in this TPM, or was made for another TPM") from None
    finally:
        if session != ESYS_TR.PASSWORD:
            esapi.flush_context(session)
    return bytes(secret)


def public_key_of(ek_or_ak_public: bytes) -> Any:
    """The cryptography public key of a marshalled TPM2B_PUBLIC (the EK in an identity)."""
    public, _ = TPM2B_PUBLIC.unmarshal(ek_or_ak_public)
    return _key_of(public)
