"""DSSE envelopes: every signed document in FlightSeal travels in one.

DSSE signs the pre-authentication encoding of (payload type, payload bytes), so a signature made
for one kind of document (a device enrollment, say) can never be presented as another (a
manifest), and no JSON canonicalisation is needed: the signed bytes are the bytes carried.
Spec: https://github.com/secure-systems-lab/dsse/blob/master/protocol.md
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from attest import jsonio
from attest.errors import FormatError, SignatureError, ThresholdError
from attest.keys import PublicKey
from attest.limits import LIMITS
from attest.signer import Signer

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
ROOT_PAYLOAD_TYPE = "application/vnd.flightseal.root+json"
MANIFEST_PAYLOAD_TYPE = "application/vnd.flightseal.manifest+json"
DEVICE_PAYLOAD_TYPE = "application/vnd.flightseal.device+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class EnvelopeSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures
            ],
        }

    def to_bytes(self) -> bytes:
        return jsonio.pretty(self.to_json()).encode()

    @classmethod
    def from_json(cls, data: Any, what: str) -> Envelope:
        obj = jsonio.expect_object(data, what, {"payloadType", "payload", "signatures"})
        payload_type = jsonio.expect_str(obj["payloadType"], what, "payloadType", 256)
        payload = _b64(jsonio.expect_str(obj["payload"], what, "payload", LIMITS.max_envelope_bytes * 2),
                       what, "payload")
        sigs = jsonio.expect_list(obj["signatures"], what, "signatures", LIMITS.max_signatures)
        parsed = []
        for i, s in enumerate(sigs):
            sobj = jsonio.expect_object(s, what, {"keyid", "sig"}, field=f"signatures[{i}]")
            parsed.append(EnvelopeSignature(
                keyid=jsonio.expect_str(sobj["keyid"], what, f"signatures[{i}].keyid", 128),
                sig=_b64(jsonio.expect_str(sobj["sig"], what, f"signatures[{i}].sig", 1024), what,
                         f"signatures[{i}].sig"),
            ))
        return cls(payload_type, payload, tuple(parsed))

    @classmethod
    def from_bytes(cls, data: bytes, what: str, max_bytes: int = LIMITS.max_envelope_bytes) -> Envelope:
        return cls.from_json(jsonio.loads(data, what, max_bytes), what)

    def payload_json(self, what: str, max_bytes: int = LIMITS.max_envelope_bytes) -> Any:
        return jsonio.loads(self.payload, what, max_bytes)


def _b64(text: str, what: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(what, "is not valid base64", field) from None


def sign(payload_type: str, payload: bytes, signers: Iterable[Signer]) -> Envelope:
    """Sign a payload as a DSSE envelope (pre-authentication encoding, one signature per signer)."""
    message = pae(payload_type, payload)
    sigs = tuple(EnvelopeSignature(s.public_key.keyid, s.sign(message)) for s in signers)
    return Envelope(payload_type, payload, sigs)


def add_signature(envelope: Envelope, signer: Signer) -> Envelope:
    """Add one more signature (threshold signing is done one offline key at a time)."""
    keyid = signer.public_key.keyid
    kept = tuple(s for s in envelope.signatures if s.keyid != keyid)
    new = EnvelopeSignature(keyid, signer.sign(pae(envelope.payload_type, envelope.payload)))
    return Envelope(envelope.payload_type, envelope.payload, (*kept, new))


def verify(envelope: Envelope, expected_type: str, keys: Mapping[str, PublicKey], threshold: int,
           what: str) -> set[str]:
    """Check the payload type and that at least ``threshold`` distinct listed keys signed.

    Returns the key ids whose signatures verified. Signatures by unknown keys are ignored, not
    counted; a key that signs twice counts once.
    """
    if envelope.payload_type != expected_type:
        raise SignatureError(
            f"{what}: payload type is {envelope.payload_type!r}, expected {expected_type!r}"
        )
    if threshold < 1:
        raise ThresholdError(f"{what}: threshold must be at least 1")
    message = pae(envelope.payload_type, envelope.payload)
    good: set[str] = set()
    for s in envelope.signatures:
        key = keys.get(s.keyid)
        if key is not None and s.keyid not in good and key.verify(s.sig, message):
            good.add(s.keyid)
    if len(good) < threshold:
        raise ThresholdError(
            f"{what}: {len(good)} valid signature(s) from authorised keys, threshold is {threshold}"
        )
    return good
