"""Issue 10's "done when" on the virtual FC (tests/hardening.py): the radio is a third MAVLink port."""

from __future__ import annotations

import time
from pathlib import Path

from sim.vfc.config import VfcConfig
from sim.vfc.lua_host import LuaScriptingAuthority
from sim.vfc.server import VirtualFC
from tests.hardening import hardened_airframe


def test_hardened_vfc_cannot_be_armed_past_a_failing_manifest_from_an_unsigned_link(tmp_path: Path) -> None:
    image = b"\x00\x10\x00\x20 virtual FC firmware image " * 2048
    with VirtualFC(VfcConfig(channels=3, scripting=False, prearm_period=1.0, flash_image=image),
                   authority=LuaScriptingAuthority()) as fc:
        hardened_airframe(fc.url(1), fc.url(2), fc.url(0), fc.scripts_dir, tmp_path, arm_timeout=20)


def test_signing_switched_off_on_the_fc_is_seen_at_once_and_fails_the_attestation(tmp_path: Path) -> None:
    """Issue 10 item 6: posture lost. A key holder removes signing while the agent runs: the next FC
    heartbeat is unsigned, the agent re-attests, and the manifest's required posture fails."""
    from agent.mavlink.link import Link, LinkConfig
    from agent.signing import send_key
    from hardware.software import SoftwareSigner
    from sim.scenarios.rig import GATE_KEY, Gcs, Rig, gate_scripts
    from tests.field import arm_until

    key = bytes(range(64, 96))
    image = b"\x00\x10\x00\x20 virtual FC firmware image " * 2048
    with VirtualFC(VfcConfig(scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=image, signing_key=key,
                             prearm_period=1.0), authority=LuaScriptingAuthority()) as fc:
        rig = Rig(tmp_path, fc.url(1), fc.url(0), SoftwareSigner.generate(), signing_key=key, gate_key=GATE_KEY)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        try:
            daemon = rig.start_agent()
            rig.wait_verdict(passed=True, timeout=30)
            passes = daemon.status.passes
            with Link.open(LinkConfig(fc.url(0), signing_key=key)) as link:
                send_key(link, bytes(32))
            deadline = time.monotonic() + 30
            while daemon.status.passes == passes and time.monotonic() < deadline:
                time.sleep(0.1)
            last = daemon.status.last
            assert last is not None and "now unsigned" in daemon.status.last_reason, daemon.status.last_reason
            assert {"posture-unsigned", "measurement-missing"} <= {r.code.value for r in last.verdict.reasons}
            assert any("no longer signs" in r.detail for r in last.verdict.reasons), last.verdict.reasons
            # the FC takes the agent's signed fail (it checks no signatures now); its answers are unsigned
            pilot = Gcs(fc.url(0))
            try:
                assert "FlightSeal: " in arm_until(pilot, accepted=False, text="FlightSeal: ", timeout=10)
            finally:
                pilot.close()
        finally:
            rig.stop_agent()
