"""Parameters judged by name (ADR 0010): the approved values in the manifest, the differences in the measurement.

The measurement names what differs, and the approved values with those differences applied must
give its digest, so a device (or a file) that names only part of what changed is caught.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.measure.base import MeasureOptions
from agent.measure.params import param_value_claims
from attest import params as paramdigest
from attest.appraise import appraise
from attest.baseline import BaselineError, baseline
from attest.errors import FormatError
from attest.jsonio import dumps, loads
from attest.manifest import Manifest, ParamPolicy
from attest.models import Code, Kind, Measurement, Reason, Verdict
from tests.factory import PARAMS, World, measurements

APPROVED = {**PARAMS, **{f"ATC_P{i:02d}": float(i) for i in range(100)}}
PINNED = {"ARMING_CHECK": 1.0, "SCR_ENABLE": 1.0}


def policy() -> ParamPolicy:
    return ParamPolicy(pinned=PINNED, values=paramdigest.included(APPROVED, paramdigest.DEFAULT_EXCLUSIONS))


def manifest() -> Manifest:
    return World().manifest(params=policy())


def params_measurement(values: dict[str, float], *, claims: str = "differences",
                       approved: dict[str, float] | None = None) -> Measurement:
    """What the collector measures from ``values`` for a manifest approving ``approved``."""
    opts = MeasureOptions(pinned_params=tuple(PINNED), param_claims=claims,
                          param_baseline=policy().values if approved is None else approved)
    base: dict[str, Any] = {"exclude": ",".join(opts.param_exclusions), "count": len(values), "method": "param.pck"}
    return Measurement("fc.params", Kind.PARAMS, {"sha256": paramdigest.digest(values)}, "mavlink-ftp:@PARAM/param.pck",
                       measurements()[0].strength, {**base, **param_value_claims(values, opts)})


def judged(values: dict[str, float], **kw: Any) -> Verdict:
    ms = [m for m in measurements() if m.kind is not Kind.PARAMS] + [params_measurement(values, **kw)]
    return appraise(ms, manifest())


def test_an_unchanged_set_passes_and_its_measurement_names_only_the_pins() -> None:
    m = params_measurement(APPROVED)
    assert judged(APPROVED).passed
    assert {k for k in m.claims if k.startswith("param.")} == {"param.ARMING_CHECK", "param.SCR_ENABLE"}
    assert m.claims["differ"] == 0


def test_a_changed_parameter_is_named_with_approved_and_measured_values() -> None:
    v = judged({**APPROVED, "ATC_RAT_RLL_P": 0.2})
    assert v.reasons == (Reason(Code.PARAM_MISMATCH, "ATC_RAT_RLL_P is 0.20000000298023224, approved "
                                "0.13500000536441803", "fc.param:ATC_RAT_RLL_P"),)
    assert v.pilot_text == "FlightSeal: param ATC_RAT_RLL_P"


def test_a_changed_pin_has_its_own_code_and_is_not_reported_twice() -> None:
    v = judged({**APPROVED, "ARMING_CHECK": 0.0})
    assert v.reasons == (Reason(Code.PARAM_PINNED, "ARMING_CHECK is 0, pinned to 1", "fc.param:ARMING_CHECK"),)
    assert v.pilot_text == "FlightSeal: pinned ARMING_CHECK"


def test_a_missing_and_a_new_parameter_are_both_named() -> None:
    values = {n: v for n, v in APPROVED.items() if n != "ATC_P07"} | {"EVIL_BACKDOOR": 1.0}
    v = judged(values)
    assert [(r.component, r.detail) for r in v.reasons] == [
        ("fc.param:ATC_P07", "ATC_P07 is absent on the FC, approved 7"),
        ("fc.param:EVIL_BACKDOOR", "EVIL_BACKDOOR is 1, not in the approved set")]


def test_what_a_ground_station_changes_by_connecting_is_not_a_mismatch() -> None:
    streams = {f"MAV{ch}_{rate}": 4.0 for ch in (1, 2, 3) for rate in paramdigest.STREAM_RATES}
    old_names = {f"SR{ch}_{rate}": 4.0 for ch in (0, 1, 2) for rate in paramdigest.STREAM_RATES}
    approved = {**APPROVED, **{n: 0.0 for n in streams}, **{n: 0.0 for n in old_names}}
    assert paramdigest.digest(approved) == paramdigest.digest({**approved, **streams, **old_names})
    assert judged({**APPROVED, **streams, **old_names}).passed


def test_stream_rate_exclusions_leave_other_mavlink_parameters_judged() -> None:
    for name in ("MAV_SYSID", "MAV_GCS_SYSID", "MAV1_OPTIONS", "MAV2_OPTIONS", "SR0_OPTIONS"):
        assert not paramdigest.is_excluded(name, paramdigest.DEFAULT_EXCLUSIONS), name
    v = judged({**APPROVED, "MAV_GCS_SYSID": 42.0})
    assert [r.component for r in v.reasons] == ["fc.param:MAV_GCS_SYSID"]


def test_more_differences_than_a_measurement_names_are_counted_and_the_set_still_fails() -> None:
    values = {**APPROVED, **{f"ATC_P{i:02d}": 1000.0 + i for i in range(100)}}
    m = params_measurement(values)
    assert m.claims["differ"] == 100 and sum(k.startswith("param.ATC_P") for k in m.claims) == 64
    v = judged(values)
    named = [r for r in v.reasons if r.component.startswith("fc.param:")]
    assert len(named) == 64 and all(r.code is Code.PARAM_MISMATCH for r in v.reasons)
    assert v.reasons[-1].detail.endswith("in parameters the measurement does not name (100 differ in all)")
    assert v.pilot_text == "FlightSeal: param ATC_P00"


def test_a_measurement_that_hides_a_change_is_caught_by_its_own_digest() -> None:
    """A device (or an edited file) names one change and hides another: the named set does not
    rebuild the measured digest, so the verdict says the measurement does not name everything."""
    values = {**APPROVED, "ATC_RAT_RLL_P": 0.2, "FENCE_ENABLE": 1.0}
    m = params_measurement(values)
    claims = {k: v for k, v in m.claims.items() if k != "param.FENCE_ENABLE"}
    hidden = dataclasses.replace(m, claims=claims)
    v = appraise([x for x in measurements() if x.kind is not Kind.PARAMS] + [hidden], manifest())
    assert [r.component for r in v.reasons] == ["fc.param:ATC_RAT_RLL_P", "fc.params"]
    assert "does not name" in v.reasons[-1].detail


def test_a_measurement_that_names_a_change_that_did_not_happen_is_caught() -> None:
    m = params_measurement(APPROVED)
    forged = dataclasses.replace(m, claims={**m.claims, "param.FENCE_ENABLE": 1.0})
    v = appraise([x for x in measurements() if x.kind is not Kind.PARAMS] + [forged], manifest())
    assert [r.component for r in v.reasons] == ["fc.param:FENCE_ENABLE", "fc.params"]
    assert "does not name" in v.reasons[-1].detail


def test_an_inventory_naming_every_parameter_is_judged_by_name_too() -> None:
    values = {**APPROVED, "ATC_RAT_RLL_P": 0.2}
    m = params_measurement(values, claims="all")
    assert m.claims["count"] == len(values) == sum(k.startswith("param.") for k in m.claims)
    v = judged(values, claims="all")
    assert [r.component for r in v.reasons] == ["fc.param:ATC_RAT_RLL_P"]


def test_a_measurement_made_without_the_approved_values_still_fails_closed() -> None:
    v = judged({**APPROVED, "ATC_RAT_RLL_P": 0.2}, approved={})
    assert not v.passed
    v = judged({**APPROVED, "FENCE_ENABLE": 1.0}, claims="differences", approved=None)
    assert [r.component for r in v.reasons] == ["fc.param:FENCE_ENABLE"]


def test_a_measurement_with_other_exclusions_is_refused_whatever_it_names() -> None:
    m = params_measurement(APPROVED)
    other = dataclasses.replace(m, claims={**m.claims, "exclude": "STAT_*"})
    v = appraise([x for x in measurements() if x.kind is not Kind.PARAMS] + [other], manifest())
    assert [r.detail for r in v.reasons] == ["parameter digest was computed with other exclusions"]


def test_manifest_values_round_trip_and_their_digest_is_the_approved_one() -> None:
    m = manifest()
    again = Manifest.from_json(loads(dumps(m.to_json()), "manifest", 1 << 20))
    assert again.params == m.params
    assert again.params.approved_digest == paramdigest.digest(APPROVED)


def test_a_manifest_without_values_keeps_its_bytes() -> None:
    legacy = World().manifest()
    assert "values" not in legacy.to_json()["params"]


@pytest.mark.parametrize(("change", "message"), [
    ({"values": {"STAT_RUNTIME": 1}}, r"include excluded parameters \(STAT_RUNTIME\)"),
    ({"values": {"A": 1}, "sha256": "0" * 64}, "sha256 is not the digest of the approved values"),
    ({"values": {"WAY_TOO_LONG_PARAMETER": 1}}, "1 to 16 characters"),
    ({"values": {"A": "1"}}, "number"),
])
def test_bad_approved_values_are_refused(change: dict[str, Any], message: str) -> None:
    data = manifest().to_json()
    data["params"] = {**data["params"], **change}
    with pytest.raises(FormatError, match=message):
        Manifest.from_json(data)


def test_baseline_from_a_full_inventory_approves_every_value_and_pins() -> None:
    inventory = [params_measurement({**APPROVED, "MAV1_RAW_SENS": 4.0}, claims="all")]
    out, notes = baseline(World().manifest(params=ParamPolicy()), inventory, release=3, pin=["FENCE_ENABLE"])
    assert out.params.pinned == {"FENCE_ENABLE": 0.0, "ARMING_CHECK": 1.0, "SCR_ENABLE": 1.0}, "asked for and defaults"
    assert out.params.values == paramdigest.included(APPROVED, paramdigest.DEFAULT_EXCLUSIONS)
    assert "MAV1_RAW_SENS" not in out.params.values
    assert [n.split(" ")[0] for n in notes if "pinned by default" in n] == [
        "SCR_LD_CHECKSUM", "SCR_RUN_CHECKSUM", "SCR_DEBUG_OPTS", "SCR_DIR_DISABLE", "SCR_VM_I_COUNT", "SCR_HEAP_SIZE"]


def test_baseline_never_drops_a_pin_it_has_no_value_for() -> None:
    inventory = [params_measurement(APPROVED, claims="all")]
    with pytest.raises(BaselineError, match="cannot pin NO_SUCH_PARAM"):
        baseline(World().manifest(), inventory, release=3, pin=["ARMING_CHECK", "NO_SUCH_PARAM"])
    with pytest.raises(BaselineError, match="no parameter measurement"):
        baseline(World().manifest(), [], release=3, pin=["ARMING_CHECK"])
    partial = [params_measurement(APPROVED)]  # names the pins only
    with pytest.raises(BaselineError, match="cannot pin FENCE_ENABLE"):
        baseline(World().manifest(), partial, release=3, pin=["FENCE_ENABLE"])


def test_baseline_from_a_partial_inventory_approves_the_digest_and_says_so() -> None:
    out, notes = baseline(World().manifest(params=ParamPolicy()), [params_measurement(APPROVED)], release=3,
                          pin=["ARMING_CHECK"])
    assert out.params.values == {} and out.params.digest == paramdigest.digest(APPROVED)
    assert any("cannot name the parameter" in n for n in notes)


def test_baseline_refuses_an_inventory_whose_values_do_not_give_its_digest() -> None:
    m = params_measurement(APPROVED, claims="all")
    edited = dataclasses.replace(m, claims={**m.claims, "param.FENCE_ENABLE": 1.0})
    with pytest.raises(BaselineError, match="do not give its parameter digest") as info:
        baseline(World().manifest(), [edited], release=3)
    assert info.value.option == "measurements"
