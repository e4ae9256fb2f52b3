"""The bill of materials and the buyer's policy, in the pure core (attest/bom.py, attest/policy.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from attest import dsse, jsonio
from attest.bom import Bill, build_bill
from attest.errors import FormatError
from attest.evidence import ManifestRef, Predicate
from attest.keys import KeyKind
from attest.manifest import ApprovedComponent, Manifest
from attest.models import Code, Kind, Reason, Strength, Verdict
from attest.policy import POLICY_PAYLOAD_TYPE, BuyerPolicy, FindingCode, PolicyError, evaluate, load_policy
from hardware.software import SoftwareSigner
from tests.bom_kit import measured, parts
from tests.factory import World

# every critical class this airframe has measured (its ground-control software is declared only)
CRITICAL = ("flight-controller", "camera", "data-transmission", "operating-software")


def bill(camera_origin: str = "JP", image: bool = True, reasons: tuple[Reason, ...] = ()) -> Bill:
    world = World()
    manifest = world.manifest(components=parts(camera_origin))
    p = Predicate("drone-001", "FS-Quad-1", KeyKind.SOFTWARE, b"\0" * 32, world.now, ManifestRef("ab" * 32, 3),
                  tuple(measured(image)), Verdict(True))
    return build_bill(p, manifest, verification=reasons)


def codes(policy: BuyerPolicy, b: Bill) -> list[str]:
    return [f.code.value for f in evaluate(policy, b)]


def test_every_measurement_becomes_a_classed_entry_with_its_manifest_origin() -> None:
    b = bill()
    by_ref = {e.ref: e for e in b.entries}
    assert by_ref["fc"].part_class == "flight-controller" and by_ref["fc"].origin == "AU"
    assert by_ref["fc"].strength is Strength.IMAGE_AND_BOOTLOADER  # the strongest FC measurement
    fw = by_ref["fc.firmware"]
    assert (fw.part_class, fw.version, fw.git_hash) == ("operating-software", "4.7.0", "2598e9d4")
    assert "sha256" in fw.digests
    assert by_ref["mavlink:1/100"].part_class == "camera" and by_ref["mavlink:1/100"].documents
    assert by_ref["dronecan:1/125"].digests["crc64"] == "0123456789abcdef"
    assert {by_ref["companion.os"].kind, by_ref["companion.agent"].kind} == {"operating-system", "application"}
    assert by_ref["fc.script:scripts/flightseal.lua"].part_class == "operating-software"


def test_a_manifest_part_nothing_measured_is_declared_only() -> None:
    gcs = {e.ref: e for e in bill().entries}["gcs:qgroundcontrol"]
    assert gcs.part_class == "ground-control-system" and not gcs.measured
    assert "not measured" in gcs.how


def test_software_classes_are_derived_without_a_manifest_class() -> None:
    world = World()
    p = Predicate("drone-001", "FS-Quad-1", KeyKind.SOFTWARE, b"\0" * 32, world.now, None, tuple(measured()),
                  Verdict(True))
    b = build_bill(p, world.manifest(components=()))
    classes = {e.ref: e.part_class for e in b.entries}
    assert classes["fc.firmware"] == classes["companion.os"] == classes["companion.agent"] == "operating-software"
    assert classes["fc"] == "flight-controller" and classes["mavlink:1/100"] == "other"


def test_a_clean_airframe_meets_a_strict_policy() -> None:
    policy = BuyerPolicy("strict", require_classes=CRITICAL, deny_origins=("CN", "RU"),
                         min_strength={"flight-controller": Strength.IMAGE_AND_BOOTLOADER})
    assert codes(policy, bill()) == []


def test_a_camera_from_a_denied_origin_is_a_named_finding() -> None:
    findings = evaluate(BuyerPolicy("ndaa", deny_origins=("CN",)), bill(camera_origin="CN"))
    assert [(f.code, f.component) for f in findings] == [(FindingCode.ORIGIN_DENIED, "mavlink:1/100")]


def test_a_denied_main_chip_origin_is_a_finding_too() -> None:
    assert codes(BuyerPolicy("chips", deny_origins=("CH",)), bill()) == ["chip-origin-denied"]


def test_a_self_reported_flight_controller_fails_a_flash_read_policy() -> None:
    policy = BuyerPolicy("measured", min_strength={"flight-controller": Strength.FLASH_READ})
    findings = evaluate(policy, bill(image=False))
    assert [(f.code, f.component) for f in findings] == [(FindingCode.STRENGTH_TOO_WEAK, "fc")]
    assert "only self-reported" in findings[0].detail


def test_missing_and_declared_only_classes_are_told_apart() -> None:
    policy = BuyerPolicy("all", require_classes=("gimbal", "ground-control-system"))
    assert codes(policy, bill()) == ["class-missing", "class-not-measured"]


def test_vendor_lists_and_unknown_origins() -> None:
    assert "vendor-denied" in codes(BuyerPolicy("v", deny_vendors=("RFD",)), bill())
    assert "vendor-not-allowed" in codes(BuyerPolicy("v", allow_vendors=("CubePilot",)), bill())
    world = World()
    unknown = Predicate("drone-001", "FS-Quad-1", KeyKind.SOFTWARE, b"\0" * 32, world.now, None, tuple(measured()),
                        Verdict(True))
    no_origins = build_bill(unknown, world.manifest(components=(replace(parts()[2], selector="none"),)))
    assert "origin-unknown" in codes(BuyerPolicy("o", deny_origins=("CN",)), no_origins)


def test_evidence_that_failed_verification_is_a_finding_whatever_the_policy() -> None:
    b = bill(reasons=(Reason(Code.ENVELOPE_SIGNATURE, "altered"),))
    assert codes(BuyerPolicy("any"), b) == ["attestation-failed"]


def test_policy_needs_the_pinned_key_and_its_own_payload_type() -> None:
    buyer, other = SoftwareSigner.generate(), SoftwareSigner.generate()
    payload = jsonio.dumps(BuyerPolicy("p", deny_origins=("CN",)).to_json())
    pinned = {buyer.public_key.keyid: buyer.public_key}
    policy, signers = load_policy(dsse.sign(POLICY_PAYLOAD_TYPE, payload, [buyer]).to_bytes(), pinned)
    assert policy.deny_origins == ("CN",) and signers == {buyer.public_key.keyid}
    for bad in (dsse.sign(POLICY_PAYLOAD_TYPE, payload, [other]), dsse.Envelope(POLICY_PAYLOAD_TYPE, payload, ())):
        with pytest.raises(PolicyError, match="not signed by the pinned"):
            load_policy(bad.to_bytes(), pinned)
    with pytest.raises(PolicyError, match="is not a buyer policy"):
        load_policy(dsse.sign(dsse.MANIFEST_PAYLOAD_TYPE, payload, [buyer]).to_bytes(), pinned)
    assert issubclass(PolicyError, FormatError)  # unusable input: exit 2, never a finding


def test_manifest_part_fields_round_trip_and_are_absent_when_unused() -> None:
    m = World().manifest(components=parts())
    assert Manifest.from_json(jsonio.loads(jsonio.dumps(m.to_json()), "m", 1 << 20)) == m
    plain = ApprovedComponent("cam", "mavlink:1/100", "Acme", "AC-1", "JP").to_json()
    assert not {"class", "supplier", "documents"} & set(plain)
    with pytest.raises(FormatError, match="unknown class"):
        ApprovedComponent.from_json({**plain, "class": "toaster"}, "c")
    with pytest.raises(FormatError, match="ISO 3166"):
        ApprovedComponent.from_json({**plain, "supplier": {"chip_origin": "cn"}}, "c")


def test_the_schema_takes_the_new_part_fields() -> None:
    import jsonschema

    from tests.test_schemas import schema

    jsonschema.validate(World().manifest(components=parts()).to_json(), schema("manifest.schema.json"))


def test_a_posture_measurement_is_no_part() -> None:
    world = World()
    posture = measured()[0].__class__("fc.link", Kind.POSTURE, {}, "agent", Strength.OBSERVED, {})
    p = Predicate("drone-001", "FS-Quad-1", KeyKind.SOFTWARE, b"\0" * 32, world.now, None, (posture,), Verdict(True))
    assert build_bill(p, world.manifest(components=())).entries == ()
