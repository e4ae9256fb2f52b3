"""`flightseal report`: the bill as CycloneDX 1.6 (validated against the official schema) and as an HTML page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from agent.cli.main import main
from attest.bom import build_bill
from attest.evidence import Predicate
from attest.keys import KeyKind
from attest.models import Kind, Measurement, Strength, Verdict
from attest.policy import BuyerPolicy, Finding, FindingCode
from report.cyclonedx import to_cyclonedx
from report.html import to_html
from tests.bom_kit import buyer_key, signed_policy, write_airframe
from tests.factory import World


def run(*args: object, ok: int | None = 0) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok is not None:
        assert result.exit_code == ok, result.output
    assert "Traceback" not in result.output
    return result


def valid_cyclonedx(text: str) -> dict[str, Any]:
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert errors is None, errors
    data: dict[str, Any] = json.loads(text)
    return data


def props(component: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in component.get("properties", [])}


def test_the_bill_is_cyclonedx_1_6_with_every_part_typed_hashed_and_placed(tmp_path: Path) -> None:
    a = write_airframe(tmp_path)
    out = tmp_path / "bom.cdx.json"
    run("report", "--attestation", a.attestation, "--trust", a.trust, "--allow-software-keys", "--cyclonedx", out)
    bom = valid_cyclonedx(out.read_text())
    assert bom["specVersion"] == "1.6"
    device = bom["metadata"]["component"]
    assert (device["type"], device["name"]) == ("device", "FS-Quad-1")
    assert props(bom["metadata"])["flightseal:verification"] == "passed"
    by_ref = {c["bom-ref"]: c for c in bom["components"]}
    fw = by_ref["fc.firmware"]
    assert (fw["type"], fw["version"], props(fw)["flightseal:git-hash"]) == ("firmware", "4.7.0", "2598e9d4")
    assert fw["hashes"][0]["alg"] == "SHA-256"
    assert by_ref["fc.script:scripts/flightseal.lua"]["type"] == "file"
    assert by_ref["fc.params"]["type"] == "data"
    assert props(by_ref["dronecan:1/125"])["flightseal:crc64"] == "0123456789abcdef"
    cam = props(by_ref["mavlink:1/100"])
    assert (cam["flightseal:class"], cam["flightseal:origin"], cam["flightseal:chip-origin"]) == ("camera", "JP", "JP")
    assert cam["flightseal:measured"] == "observed" and cam["flightseal:document"].startswith("sha256:")
    assert by_ref["mavlink:1/100"]["manufacturer"]["name"] == "Acme Optics"
    assert by_ref["companion.os"]["type"] == "operating-system" and by_ref["companion.agent"]["type"] == "application"
    assert props(by_ref["gcs:qgroundcontrol"])["flightseal:measured"] == "declared-only"
    assert bom["dependencies"][0]["ref"] == device["bom-ref"]


def test_policy_findings_travel_in_both_files_and_exit_1(tmp_path: Path) -> None:
    a = write_airframe(tmp_path, camera_origin="CN")
    key, _, pub = buyer_key(tmp_path)
    policy = signed_policy(tmp_path / "p.json", BuyerPolicy("agency", deny_origins=("CN",)), key)
    cdx, html = tmp_path / "b.json", tmp_path / "r.html"
    r = run("report", "--attestation", a.attestation, "--trust", a.trust, "--allow-software-keys", "--policy", policy,
            "--policy-key", pub, "--cyclonedx", cdx, "--html", html, ok=1)
    assert "FINDING origin-denied" in r.output
    meta = valid_cyclonedx(cdx.read_text())["metadata"]
    assert props(meta)["flightseal:policy"] == "failed"
    assert "does not meet the policy" in html.read_text() and "origin-denied" in html.read_text()


def test_the_html_is_self_contained_and_escapes_what_the_device_says(tmp_path: Path) -> None:
    world = World()
    evil = Measurement("mavlink:1/99", Kind.COMPONENT, {}, "mavlink:HEARTBEAT", Strength.OBSERVED,
                       {"name": "<script>alert(1)</script>", "vendor": "<img src=x onerror=alert(1)>"})
    p = Predicate("drone-001", "FS-Quad-1", KeyKind.SOFTWARE, b"\0" * 32, world.now, None, (evil,), Verdict(True))
    bill = build_bill(p, world.manifest(components=()))
    page = to_html(bill, (Finding(FindingCode.ORIGIN_UNKNOWN, "<b>x</b>", "mavlink:1/99"),), BuyerPolicy("p"))
    assert "<script" not in page and "<img" not in page and "<b>x" not in page
    assert "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page) and "@import" not in page
    valid_cyclonedx(to_cyclonedx(bill))


def test_the_file_demos_attestation_makes_a_valid_bill(tmp_path: Path) -> None:
    from sim.scenarios.demo_files import run_file_demo

    demo = tmp_path / "demo"
    run_file_demo(demo)
    trust = tmp_path / "trust"
    (trust / "devices").mkdir(parents=True)
    for name in ("root.json", "manifest.json"):
        (trust / name).write_bytes((demo / name).read_bytes())
    (trust / "devices" / "device.json").write_bytes((demo / "device.json").read_bytes())
    cdx, html = tmp_path / "demo.cdx.json", tmp_path / "demo.html"
    run("report", "--attestation", demo / "attestation-good.json", "--trust", trust, "--allow-software-keys",
        "--cyclonedx", cdx, "--html", html)
    refs = {c["bom-ref"] for c in valid_cyclonedx(cdx.read_text())["components"]}
    assert {"fc", "fc.firmware", "fc.params", "fc.script:scripts/flightseal.lua"} <= refs
    assert "Verdict: verified" in html.read_text()
    run("report", "--attestation", demo / "attestation-tampered.json", "--trust", trust, "--allow-software-keys",
        "--html", html, ok=1)
    assert "not verified" in html.read_text() and "script-mismatch" in html.read_text()


@pytest.mark.parametrize("extra", [(), ("--html", "/nonexistent-dir/r.html")])
def test_report_usage_errors_are_one_line_exit_2(tmp_path: Path, extra: tuple[str, ...]) -> None:
    a = write_airframe(tmp_path)
    r = run("report", "--attestation", a.attestation, "--trust", a.trust, "--allow-software-keys", *extra, ok=2)
    assert len([x for x in r.output.splitlines() if x.startswith(("flightseal:", "Error:"))]) == 1
