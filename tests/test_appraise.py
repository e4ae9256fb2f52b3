"""Appraisal: every rule, every reason code, all reasons collected together."""

from __future__ import annotations

from dataclasses import replace

import pytest

from attest.appraise import appraise
from attest.errors import FormatError
from attest.manifest import Airframe, ApprovedComponent, Manifest
from attest.models import Code, Kind, Measurement, Reason, Strength, Verdict
from tests.factory import PARAMS, World, camera, measurements


def codes(v: Verdict) -> list[Code]:
    return list(v.codes)


def test_measurements_matching_the_manifest_pass() -> None:
    v = appraise(measurements(), World().manifest())
    assert v.passed, v.reasons
    assert v.pilot_text == "FlightSeal: pass"


def test_empty_manifest_approves_nothing() -> None:
    w = World()
    empty = replace(w.manifest(), firmware=(), scripts=(), components=())
    v = appraise(measurements(), empty)
    assert not v.passed
    assert Code.FIRMWARE_MISMATCH in v.codes
    assert Code.SCRIPT_UNKNOWN in v.codes
    assert Code.COMPONENT_UNKNOWN in v.codes


def test_no_measurements_at_all_fails_as_missing() -> None:
    v = appraise([], World().manifest())
    assert Code.MEASUREMENT_MISSING in v.codes
    assert not v.passed


def test_modified_firmware_image_is_firmware_mismatch() -> None:
    v = appraise(measurements(image=b"tampered image"), World().manifest())
    assert codes(v) == [Code.FIRMWARE_MISMATCH]
    assert v.reasons[0].component == "fc.firmware-image"


def test_unapproved_git_hash_is_firmware_mismatch() -> None:
    v = appraise(measurements(git_hash="deadbeef"), World().manifest())
    assert codes(v) == [Code.FIRMWARE_MISMATCH]
    assert "deadbeef" in v.reasons[0].detail


def test_firmware_below_min_release_is_rollback() -> None:
    w = World()
    v = appraise(measurements(), w.manifest(firmware_min_release=13))
    assert codes(v) == [Code.FIRMWARE_ROLLBACK]


def test_missing_image_measurement_when_manifest_pins_digest() -> None:
    ms = [m for m in measurements() if m.kind is not Kind.FIRMWARE_IMAGE]
    assert codes(appraise(ms, World().manifest())) == [Code.MEASUREMENT_MISSING]


def test_weak_image_measurement_is_too_weak() -> None:
    ms = [replace(m, strength=Strength.SELF_REPORTED) if m.kind is Kind.FIRMWARE_IMAGE else m for m in measurements()]
    assert codes(appraise(ms, World().manifest())) == [Code.MEASUREMENT_TOO_WEAK]


def test_wrong_board_id_is_wrong_hardware_and_mismatch() -> None:
    v = appraise(measurements(board_id=140), World().manifest())
    assert Code.WRONG_HARDWARE in v.codes


def test_fc_uid_binding_refuses_another_fc() -> None:
    w = World()
    m = w.manifest(airframe=Airframe("FS-Quad-1", fc_uids=("ABCD",)))
    assert codes(appraise(measurements(), m)) == [Code.WRONG_HARDWARE]


def test_unapproved_script_is_script_unknown() -> None:
    v = appraise(measurements(extra_scripts={"scripts/evil.lua": b"x"}), World().manifest())
    assert codes(v) == [Code.SCRIPT_UNKNOWN]
    assert v.reasons[0].component == "fc.script:scripts/evil.lua"


def test_changed_approved_script_is_script_mismatch() -> None:
    v = appraise(measurements(extra_scripts={"scripts/camera.lua": b"changed"}), World().manifest())
    assert codes(v) == [Code.SCRIPT_MISMATCH]


def test_removed_required_gate_script_is_missing() -> None:
    ms = [m for m in measurements() if m.kind is not Kind.SCRIPT]
    assert codes(appraise(ms, World().manifest())) == [Code.MEASUREMENT_MISSING]


def test_pinned_parameter_changed_is_param_mismatch() -> None:
    v = appraise(measurements(param_values={**PARAMS, "ARMING_CHECK": 0.0}), World().manifest())
    assert Code.PARAM_MISMATCH in v.codes
    assert any("ARMING_CHECK is 0, pinned to 1" in r.detail for r in v.reasons)


def test_unpinned_parameter_change_breaks_the_set_digest() -> None:
    v = appraise(measurements(param_values={**PARAMS, "ATC_RAT_RLL_P": 0.2}), World().manifest())
    assert codes(v) == [Code.PARAM_MISMATCH]
    assert "set differs" in v.reasons[0].detail


def test_volatile_parameter_change_is_excluded_from_the_digest() -> None:
    v = appraise(measurements(param_values={**PARAMS, "STAT_RUNTIME": 99999.0}), World().manifest())
    assert v.passed, v.reasons


def test_unknown_component_on_the_bus() -> None:
    ms = measurements(components=[camera(), camera(vendor="Other", hardware_id="x", component="mavlink:1/154")])
    v = appraise(ms, World().manifest())
    assert codes(v) == [Code.COMPONENT_UNKNOWN]
    assert v.reasons[0].component == "mavlink:1/154"


def test_component_with_wrong_hardware_id_is_unknown() -> None:
    assert codes(appraise(measurements(components=[camera(hardware_id="cam-9999")]),
                          World().manifest())) == [Code.COMPONENT_UNKNOWN]


def test_denied_vendor_is_refused() -> None:
    ms = measurements(components=[camera(vendor="Shady Parts Ltd")])
    assert codes(appraise(ms, World().manifest())) == [Code.COMPONENT_DENIED_VENDOR]


def test_denied_origin_claimed_by_part_is_refused() -> None:
    ms = measurements(components=[camera(origin="XX")])
    assert codes(appraise(ms, World().manifest())) == [Code.COMPONENT_DENIED_ORIGIN]


def test_approved_part_whose_origin_is_later_denied_is_refused() -> None:
    w = World()
    assert codes(appraise(measurements(), w.manifest(deny_origins=("JP",)))) == [Code.COMPONENT_DENIED_ORIGIN]


def test_component_reporting_another_vendor_is_mismatch() -> None:
    ms = measurements(components=[camera(vendor="Acme Clone")])
    assert codes(appraise(ms, World().manifest())) == [Code.COMPONENT_MISMATCH]


def gps(crc64: str | None) -> Measurement:
    claims: dict[str, str | int | float | bool] = {"type": "dronecan", "vendor": "acme", "model": "com.acme.gps",
                                                   "hardware_id": "00" * 16}
    return Measurement("dronecan:1/42", Kind.COMPONENT, {"crc64": crc64} if crc64 else {}, "dronecan:GetNodeInfo",
                       Strength.SELF_REPORTED, claims)


def manifest_with_gps(*crcs: str) -> Manifest:
    m = World().manifest()
    entry = ApprovedComponent("GPS", "dronecan:*", "acme", "com.acme.gps", "JP", firmware_crc64=crcs)
    return replace(m, components=(*m.components, entry))


def test_dronecan_part_with_an_approved_image_crc_passes() -> None:
    v = appraise(measurements(components=[camera(), gps("1122334455667788")]),
                 manifest_with_gps("aaaaaaaaaaaaaaaa", "1122334455667788"))
    assert v.passed, v.reasons


def test_dronecan_part_with_another_image_crc_is_a_mismatch_naming_the_crc() -> None:
    v = appraise(measurements(components=[camera(), gps("0000000000000bad")]), manifest_with_gps("1122334455667788"))
    assert codes(v) == [Code.COMPONENT_MISMATCH]
    assert "0000000000000bad" in v.reasons[0].detail and v.reasons[0].component == "dronecan:1/42"


def test_dronecan_part_that_does_not_report_its_image_crc_fails_when_one_is_pinned() -> None:
    v = appraise(measurements(components=[camera(), gps(None)]), manifest_with_gps("1122334455667788"))
    assert codes(v) == [Code.COMPONENT_MISMATCH]
    assert "not reported" in v.reasons[0].detail


def test_every_reason_is_collected_not_just_the_first() -> None:
    ms = measurements(image=b"bad", extra_scripts={"scripts/evil.lua": b"x"},
                      param_values={**PARAMS, "ARMING_CHECK": 0.0},
                      components=[camera(vendor="Shady Parts Ltd")])
    v = appraise(ms, World().manifest())
    assert {Code.FIRMWARE_MISMATCH, Code.SCRIPT_UNKNOWN, Code.PARAM_MISMATCH,
            Code.COMPONENT_DENIED_VENDOR} <= set(v.codes)


def test_pilot_text_fits_arducopter_prearm_limit() -> None:
    for code in Code:
        v = Verdict.from_reasons([Reason(code, "x")])
        assert len(v.pilot_text) <= 42
        assert v.pilot_text.startswith("FlightSeal: ")


def test_measurement_refuses_malformed_digest() -> None:
    with pytest.raises(FormatError, match="sha256 digest"):
        Measurement("x", Kind.SCRIPT, {"sha256": "XYZ"}, "s", Strength.OBSERVED)
