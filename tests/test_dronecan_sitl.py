"""DroneCAN parts on real SITL: nodes of a real DroneCAN stack on SITL's CAN bus, measured by the
agent through ArduPilot's MAVLink CAN forwarding, then appraised.

SITL's CAN bus is multicast UDP, so everything runs in a loopback-only network namespace
(sim/launchers/netns.py): nothing leaves the machine. The vFC's CAN forwarding (tests/test_vfc.py) copies
what was recorded here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from attest.appraise import appraise
from attest.manifest import ApprovedComponent
from attest.models import Code, Measurement
from sim.launchers.netns import LoopbackNamespace, unavailable_reason
from tests.factory import World

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.sitl,
    pytest.mark.skipif(not os.environ.get("FLIGHTSEAL_SITL_BINARY"),
                       reason="FLIGHTSEAL_SITL_BINARY is not set (path to an ArduCopter SITL build, "
                              "build/sitl/bin/arducopter)"),
    pytest.mark.skipif(unavailable_reason() is not None,
                       reason=f"SITL's multicast CAN bus is kept in a network namespace: {unavailable_reason()}"),
]

GPS_CRC = "1122334455667788"


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    with LoopbackNamespace() as ns:
        r = subprocess.run([*ns.prefix(), sys.executable, "-m", "sim.scenarios.dronecan_sitl",
                            "--node", f"42:com.acme.gps:{GPS_CRC}", "--node", "55:org.evil.tracker:00000000deadbeef",
                            "--node", "56:com.acme.fdnode:00000000cafef00d:fd"],
                           cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    doc: dict[str, Any] = json.loads(r.stdout)
    assert doc["problems"] == [], doc["problems"]
    return doc


@pytest.fixture(scope="module")
def measured(run: dict[str, Any]) -> dict[str, Measurement]:
    return {m.component: m for m in map(Measurement.from_json, run["measurements"])}


def test_the_watch_hears_every_node_and_uptimes_only_go_forward(run: dict[str, Any]) -> None:
    (scanned,) = run["scanned"]
    assert scanned["bus"] == 1 and scanned["fc_node"] == 10
    before = {int(k): v for k, v in scanned["uptimes"].items()}
    after = {int(k): v for k, v in run["statuses"].items()}
    assert set(before) == set(after) == {10, 42, 55, 56}
    assert all(after[n] >= before[n] for n in before), (before, after)


def test_every_dronecan_node_is_measured_but_the_fc_itself(measured: dict[str, Measurement]) -> None:
    nodes = sorted(c for c in measured if c.startswith("dronecan:"))
    assert nodes == ["dronecan:1/42", "dronecan:1/55", "dronecan:1/56"], "node 10 is SITL's own (CAN_D1_UC_NODE)"
    gps = measured["dronecan:1/42"]
    assert gps.digests == {"crc64": GPS_CRC} and gps.source == "dronecan:GetNodeInfo"
    assert gps.claims["model"] == "com.acme.gps" and gps.claims["vendor"] == "acme"
    assert gps.claims["sw_version"] == "1.4" and gps.claims["vcs_commit"] == "1a2b3c4d"
    assert gps.claims["hardware_id"] == "2a" * 16
    fd = measured["dronecan:1/56"]  # answers in CAN FD frames: forwarded as CANFD_FRAME, no tail array optimisation
    assert fd.digests == {"crc64": "00000000cafef00d"} and fd.claims["model"] == "com.acme.fdnode"


def test_appraisal_refuses_an_unapproved_node_and_a_reflashed_part(measured: dict[str, Measurement]) -> None:
    w = World()
    ms = list(measured.values())
    base = w.manifest()
    ok_gps = ApprovedComponent("GNSS", "dronecan:1/42", "acme", "com.acme.gps", "JP", firmware_crc64=(GPS_CRC,))
    anything_else = ApprovedComponent("any", "mavlink:*", "", "", "JP")
    v = appraise(ms, replace(base, components=(ok_gps, anything_else)))
    comp = [r for r in v.reasons if r.component.startswith("dronecan:")]
    assert [(r.code, r.component) for r in comp] == [(Code.COMPONENT_UNKNOWN, "dronecan:1/55"),
                                                      (Code.COMPONENT_UNKNOWN, "dronecan:1/56")]
    other_build = replace(ok_gps, firmware_crc64=("0" * 16,))
    v = appraise(ms, replace(base, components=(other_build, anything_else)))
    assert (Code.COMPONENT_MISMATCH, "dronecan:1/42") in [(r.code, r.component) for r in v.reasons]
