"""CycloneDX 1.6 JSON of a bill (ADR 0023), through ``cyclonedx-python-lib``.

The airframe is the BOM's device (``metadata.component``); every entry is a component of the type
CycloneDX has for it (device, firmware, file, data, operating-system, application). What CycloneDX
has no field for (class, origin, how it was measured, the verification's result and findings) is a
``flightseal:`` property; ADR 0023 says why not 1.6's ``declarations``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.output.json import JsonV1Dot6

from attest.bom import Bill, Entry
from attest.policy import Finding

_TYPES = {"hardware": ComponentType.DEVICE, "part": ComponentType.DEVICE, "firmware": ComponentType.FIRMWARE,
          "script": ComponentType.FILE, "parameters": ComponentType.DATA,
          "operating-system": ComponentType.OPERATING_SYSTEM, "application": ComponentType.APPLICATION}
_HASHES = {"sha256": HashAlgorithm.SHA_256, "sha512": HashAlgorithm.SHA_512}
NS = "flightseal"


def to_cyclonedx(bill: Bill, findings: Sequence[Finding] | None = None) -> str:
    """The bill as CycloneDX 1.6 JSON text; ``findings`` (a buyer policy's) become properties too."""
    device = Component(name=bill.airframe, type=ComponentType.DEVICE, bom_ref=f"airframe:{bill.device_id}",
                       description=f"airframe {bill.device_id} as attested {bill.time:%Y-%m-%dT%H:%M:%SZ}",
                       properties=[Property(name=f"{NS}:device-id", value=bill.device_id),
                                   Property(name=f"{NS}:key-kind", value=bill.key_kind)])
    meta = BomMetaData(component=device, timestamp=bill.time, properties=_result(bill, findings))
    components = [_component(e) for e in bill.entries]
    bom = Bom(metadata=meta, components=components)
    bom.register_dependency(device, components)
    text: str = JsonV1Dot6(bom).output_as_string(indent=2)
    return text


def _result(bill: Bill, findings: Sequence[Finding] | None) -> list[Property]:
    props = [Property(name=f"{NS}:verification", value="passed" if bill.verified else "failed"),
             Property(name=f"{NS}:manifest-version", value=str(bill.manifest_version)),
             Property(name=f"{NS}:manifest-sha256", value=bill.manifest_digest),
             Property(name=f"{NS}:nonce-checked", value="true" if bill.nonce_checked else "false")]
    props += [Property(name=f"{NS}:verification-reason", value=str(r)) for r in bill.verification]
    if bill.signers is not None:
        s = bill.signers
        props += [Property(name=f"{NS}:manifest-signer", value=k) for k in s.manifest_keyids]
        props += [Property(name=f"{NS}:manifest-threshold", value=str(s.manifest_threshold)),
                  Property(name=f"{NS}:enrollment-threshold", value=str(s.enrollment_threshold)),
                  Property(name=f"{NS}:device-key", value=s.device_keyid)]
    if findings is not None:
        props.append(Property(name=f"{NS}:policy", value="passed" if not findings else "failed"))
        props += [Property(name=f"{NS}:policy-finding", value=str(f)) for f in findings]
    return props


def _component(e: Entry) -> Component:
    vendor = OrganizationalEntity(name=e.vendor) if e.vendor else None
    props = [Property(name=f"{NS}:class", value=e.part_class),
             Property(name=f"{NS}:measured", value=e.strength.label if e.strength is not None else "declared-only"),
             Property(name=f"{NS}:how-measured", value=e.how)]
    if e.origin:
        props.append(Property(name=f"{NS}:origin", value=e.origin))
        props.append(Property(name=f"{NS}:origin-source", value="reported" if e.origin_reported else "manifest"))
    if e.supplier is not None:
        props += _named(("assembler", e.supplier.assembler), ("chip-origin", e.supplier.chip_origin))
    props += [Property(name=f"{NS}:document", value=f"sha256:{d.sha256} {d.title}") for d in e.documents]
    props += _named(("git-hash", e.git_hash), *((f"source:{i}", s) for i, s in enumerate(e.sources)))
    props += [Property(name=f"{NS}:{k}", value=v) for k, v in sorted(e.details.items())]
    props += [Property(name=f"{NS}:{alg}", value=v) for alg, v in sorted(e.digests.items()) if alg not in _HASHES]
    return Component(
        name=e.name, type=_TYPES.get(e.kind, ComponentType.DEVICE), bom_ref=e.ref, version=e.version or None,
        supplier=vendor, manufacturer=vendor, description=f"{e.model}" if e.model else None,
        hashes=[HashType(alg=_HASHES[alg], content=v) for alg, v in sorted(e.digests.items()) if alg in _HASHES],
        properties=props)


def _named(*pairs: tuple[str, str]) -> Iterable[Property]:
    return [Property(name=f"{NS}:{k}", value=v) for k, v in pairs if v]
