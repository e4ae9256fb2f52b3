"""Device enrollment: the manufacturer vouches that a device key belongs to one airframe.

An enrollment record is signed by the root's ``enrollment`` role. The verifier trusts an
attestation only if its signing key is in an enrolled record, so a key made on a bench, or
another drone's key, cannot speak for this airframe. A ``tpm`` key carries its proof
(``tpm_evidence``, ADR 0018); a record without one still parses, and the verifier refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attest import jsonio
from attest.errors import FormatError
from attest.keys import KeyKind, PublicKey
from attest.tpm_evidence import TpmEvidence

DEVICE_TYPE = "flightseal/device"
_W = "device enrollment"


@dataclass(frozen=True)
class DeviceRecord:
    """An enrolled device: its id, airframe, key kind and public key, signed by the enrolment role."""

    device_id: str
    airframe: str
    key: PublicKey
    key_kind: KeyKind
    tpm_ak_name: str = ""
    tpm_ek_name: str = ""
    tpm_evidence: TpmEvidence | None = None

    def __post_init__(self) -> None:
        if self.tpm_evidence is not None and self.key_kind is not KeyKind.TPM:
            raise FormatError(_W, f"a {self.key_kind.value} key cannot carry TPM evidence", "tpm_evidence")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_type": DEVICE_TYPE, "device_id": self.device_id, "airframe": self.airframe,
                               "key": self.key.to_json(), "key_kind": self.key_kind.value}
        if self.tpm_ak_name:
            out["tpm_ak_name"] = self.tpm_ak_name
        if self.tpm_ek_name:
            out["tpm_ek_name"] = self.tpm_ek_name
        if self.tpm_evidence is not None:
            out["tpm_evidence"] = self.tpm_evidence.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any) -> DeviceRecord:
        o = jsonio.expect_object(data, _W, {"_type", "device_id", "airframe", "key", "key_kind"},
                                 {"tpm_ak_name", "tpm_ek_name", "tpm_evidence"})
        if o["_type"] != DEVICE_TYPE:
            raise FormatError(_W, f"_type is {o['_type']!r}, expected {DEVICE_TYPE!r}", "_type")
        try:
            kind = KeyKind(o["key_kind"])
        except ValueError:
            raise FormatError(_W, f"unknown key kind {o['key_kind']!r}", "key_kind") from None
        return cls(
            device_id=jsonio.expect_str(o["device_id"], _W, "device_id", 128),
            airframe=jsonio.expect_str(o["airframe"], _W, "airframe", 128),
            key=PublicKey.from_json(o["key"], _W),
            key_kind=kind,
            tpm_ak_name=jsonio.expect_str(o.get("tpm_ak_name", ""), _W, "tpm_ak_name", 256),
            tpm_ek_name=jsonio.expect_str(o.get("tpm_ek_name", ""), _W, "tpm_ek_name", 256),
            tpm_evidence=TpmEvidence.from_json(o["tpm_evidence"]) if "tpm_evidence" in o else None,
        )
