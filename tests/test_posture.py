"""Link posture (ADR 0014): what a manifest requires of the FC's links, and a stopped gate named in
every attestation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli.main import main
from attest.appraise import appraise
from attest.manifest import Manifest, Posture
from attest.models import Code, Kind, Measurement, Strength
from tests.factory import World, measurements


def posture(**claims: object) -> Measurement:
    base: dict[str, object] = {"signed": True, "script_checksums": True, "gate_stopped": False, "link": "serial"}
    return Measurement("fc.link", Kind.POSTURE, {}, "mavlink", Strength.OBSERVED, {**base, **claims})  # type: ignore[arg-type]


def codes(ms: list[Measurement], manifest: Manifest) -> list[Code]:
    return [r.code for r in appraise(ms, manifest).reasons]


def test_a_protected_link_passes_a_manifest_that_requires_it() -> None:
    assert codes([*measurements(), posture()], World().manifest(posture=Posture())) == []


@pytest.mark.parametrize(("claims", "code"), [({"signed": False}, Code.POSTURE_UNSIGNED),
                                              ({"script_checksums": False}, Code.POSTURE_SCRIPT_CHECKSUMS)])
def test_a_missing_protection_fails_with_its_own_code_and_pilot_text(claims: dict[str, object], code: Code) -> None:
    v = appraise([*measurements(), posture(**claims)], World().manifest(posture=Posture()))
    assert v.codes == (code,)
    assert v.pilot_text == f"FlightSeal: {code.value}"


def test_a_relaxed_protection_is_not_required_and_an_older_manifest_requires_none() -> None:
    unsigned = [*measurements(), posture(signed=False, script_checksums=False)]
    assert codes(unsigned, World().manifest(posture=Posture(signed=False, script_checksums=False))) == []
    assert codes(unsigned, World().manifest()) == []
    assert codes(measurements(), World().manifest(posture=Posture())) == [Code.MEASUREMENT_MISSING]


def test_a_stopped_gate_fails_whatever_the_manifest_says() -> None:
    stopped = [*measurements(), posture(gate_stopped=True)]
    assert codes(stopped, World().manifest()) == [Code.POSTURE_GATE_STOPPED]
    assert codes(stopped, World().manifest(posture=Posture(False, False))) == [Code.POSTURE_GATE_STOPPED]


def test_an_older_manifest_keeps_its_bytes() -> None:
    assert "posture" not in World().manifest().to_json()
    assert World().manifest(posture=Posture()).to_json()["posture"] == {"signed": True, "script_checksums": True}


def test_new_manifests_require_both_and_relaxing_is_explicit_and_shown(tmp_path: Path) -> None:
    m = tmp_path / "manifest.json"
    r = CliRunner().invoke(main, ["manifest", "create", "--airframe", "A", "--version", "1", "-o", str(m)])
    assert r.exit_code == 0 and "posture required: signed link, script checksums" in r.output, r.output
    r = CliRunner().invoke(main, ["manifest", "set", str(m), "--relax-posture", "signed"])
    assert r.exit_code == 0, r.output
    shown = CliRunner().invoke(main, ["manifest", "show", str(m)]).output
    assert "posture required: script checksums; relaxed by the manufacturer: signed link" in shown
    assert json.loads(shown[:shown.rindex("signatures:")])["posture"] == {"signed": False, "script_checksums": True}
    r = CliRunner().invoke(main, ["manifest", "set", str(m), "--require-posture", "signed"])
    assert "posture required: signed link, script checksums" in CliRunner().invoke(
        main, ["manifest", "show", str(m)]).output


def test_a_fully_relaxed_manifest_needs_no_posture_measurement() -> None:
    assert codes(measurements(), World().manifest(posture=Posture(signed=False, script_checksums=False))) == []
