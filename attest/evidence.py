"""The attestation itself: an in-toto Statement v1 in a DSSE envelope, signed by the device key.

Subjects are the measured digests, so generic in-toto tooling can see what was measured; the
predicate (``https://flightseal.dev/attestation/v1``) carries the measurements with their
source and strength, the manifest reference, the device's own verdict, the operator's nonce,
the device identity, the key kind and, where the backend has one, a TPM quote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from attest import dsse, jsonio, timeutil
from attest.errors import FormatError
from attest.keys import KeyKind
from attest.limits import LIMITS
from attest.models import Measurement, Verdict
from attest.signer import Signer

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://flightseal.dev/attestation/v1"
_W = "attestation"
MAX_NONCE_BYTES = 64


@dataclass(frozen=True)
class ManifestRef:
    sha256: str
    version: int


@dataclass(frozen=True)
class Predicate:
    """What an attestation says: who (device, airframe, key kind), when (time, nonce), against
    which manifest, the measurements, the agent's verdict, and the TPM quote if any."""

    device_id: str
    airframe: str
    key_kind: KeyKind
    nonce: bytes
    time: datetime
    manifest: ManifestRef | None
    measurements: tuple[Measurement, ...]
    verdict: Verdict
    agent_version: str = ""
    quote: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "device": {"id": self.device_id, "airframe": self.airframe},
            "key_kind": self.key_kind.value,
            "nonce": self.nonce.hex(),
            "time": timeutil.format(self.time),
            "manifest": None if self.manifest is None else
            {"digest": {"sha256": self.manifest.sha256}, "version": self.manifest.version},
            "measurements": [m.to_json() for m in self.measurements],
            "verdict": self.verdict.to_json(),
            "agent_version": self.agent_version,
        }
        if self.quote is not None:
            out["quote"] = self.quote
        return out

    @classmethod
    def from_json(cls, data: Any) -> Predicate:
        o = jsonio.expect_object(data, _W, {"device", "key_kind", "nonce", "time", "manifest", "measurements",
                                            "verdict"}, {"agent_version", "quote"}, "predicate")
        dev = jsonio.expect_object(o["device"], _W, {"id", "airframe"}, field="predicate.device")
        try:
            kind = KeyKind(o["key_kind"])
        except ValueError:
            raise FormatError(_W, f"unknown key kind {o['key_kind']!r}", "predicate.key_kind") from None
        nonce_hex = jsonio.expect_str(o["nonce"], _W, "predicate.nonce", MAX_NONCE_BYTES * 2)
        try:
            nonce = bytes.fromhex(nonce_hex)
        except ValueError:
            raise FormatError(_W, "must be hex", "predicate.nonce") from None
        ref = None
        if o["manifest"] is not None:
            mo = jsonio.expect_object(o["manifest"], _W, {"digest", "version"}, field="predicate.manifest")
            digest = jsonio.expect_str_map(mo["digest"], _W, "predicate.manifest.digest", 4)
            if "sha256" not in digest:
                raise FormatError(_W, "needs a sha256 digest", "predicate.manifest.digest")
            ref = ManifestRef(digest["sha256"], jsonio.expect_int(mo["version"], _W, "predicate.manifest.version"))
        ms = jsonio.expect_list(o["measurements"], _W, "predicate.measurements", LIMITS.max_measurements)
        quote = o.get("quote")
        if quote is not None and not isinstance(quote, dict):
            raise FormatError(_W, "must be an object", "predicate.quote")
        return cls(
            device_id=jsonio.expect_str(dev["id"], _W, "predicate.device.id", 128),
            airframe=jsonio.expect_str(dev["airframe"], _W, "predicate.device.airframe", 128),
            key_kind=kind,
            nonce=nonce,
            time=timeutil.parse(o["time"], _W, "predicate.time"),
            manifest=ref,
            measurements=tuple(Measurement.from_json(m) for m in ms),
            verdict=Verdict.from_json(o["verdict"]),
            agent_version=jsonio.expect_str(o.get("agent_version", ""), _W, "predicate.agent_version", 64),
            quote=quote,
        )


def subjects(measurements: Sequence[Measurement]) -> list[dict[str, Any]]:
    return [{"name": m.component, "digest": dict(sorted(m.digests.items()))} for m in measurements if m.digests]


def statement(predicate: Predicate) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects(predicate.measurements),
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate.to_json(),
    }


def statement_digest(predicate: Predicate) -> bytes:
    """SHA-256 of the statement without its quote: what a TPM quote's qualifying data binds."""
    body = predicate.to_json()
    body.pop("quote", None)
    return hashlib.sha256(jsonio.dumps(body)).digest()


def seal(predicate: Predicate, signer: Signer) -> dsse.Envelope:
    """Sign a predicate into a DSSE envelope (an in-toto statement) with the device key.

    Raises:
        KeyLoadError: the signer cannot sign (a TPM or token gone, a wrong key)."""
    if signer.kind != predicate.key_kind:
        raise ValueError(f"predicate says key kind {predicate.key_kind}, signer is {signer.kind}")
    return dsse.sign(dsse.INTOTO_PAYLOAD_TYPE, jsonio.dumps(statement(predicate)), [signer])


def parse_statement(envelope: dsse.Envelope) -> Predicate:
    """Parse the statement of an envelope whose signature the caller has already checked."""
    data = envelope.payload_json(_W)
    o = jsonio.expect_object(data, _W, {"_type", "subject", "predicateType", "predicate"})
    if o["_type"] != STATEMENT_TYPE:
        raise FormatError(_W, f"statement type is {o['_type']!r}, expected {STATEMENT_TYPE!r}", "_type")
    if o["predicateType"] != PREDICATE_TYPE:
        raise FormatError(_W, f"predicate type is {o['predicateType']!r}, expected {PREDICATE_TYPE!r}",
                          "predicateType")
    predicate = Predicate.from_json(o["predicate"])
    if o["subject"] != subjects(predicate.measurements):
        raise FormatError(_W, "subjects do not match the measured digests", "subject")
    return predicate
