"""The agent as PX4's arm authorizer, end to end: on the virtual PX4 (in CI) and on real PX4 SITL
(``px4``, with ``FLIGHTSEAL_PX4_SITL``), through the same rig, agent and ground station.

A good manifest arms; a changed pinned parameter and a changed airframe file are refused with the
reason; with the agent killed PX4 refuses by itself; arm authorization turned off is called out;
a forged authorization from another system id (which PX4 v1.16 takes: ADR 0024) is called out.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.gate.install_px4 import install_px4_gate
from agent.mavlink.link import Link, LinkConfig
from hardware.software import SoftwareSigner
from sim.scenarios.demo import _arm_until
from sim.scenarios.demo_px4 import (
    AIRFRAME_TAMPER,
    Px4Fc,
    _forged_authorization,
    _px4_sitl,
    _virtual_px4,
)
from sim.scenarios.rig import PX4_ARM_TEXTS, Gcs, Rig
from tests.px4_fixtures import PX4

os.environ.setdefault("MAVLINK20", "1")

FCS = [pytest.param("virtual", id="virtual-px4"), pytest.param("sitl", id="px4-sitl", marks=PX4)]


@contextlib.contextmanager
def _airframe(kind: str, workdir: Path) -> Iterator[tuple[Px4Fc, Rig, Gcs]]:
    """A PX4 with arm authorization on, measured and approved, and the agent running with a PASS."""
    with (_px4_sitl() if kind == "sitl" else _virtual_px4()) as fc:
        rig = Rig(workdir, fc.companion_url, fc.gcs_url, SoftwareSigner.generate(), fc_kind="px4",
                  fc_system_id=fc.sysid, firmware_file=fc.firmware_file)
        with Link.open(LinkConfig(fc.companion_url, heartbeat_timeout=30.0, fc_system_id=fc.sysid)) as link:
            install_px4_gate(link, LinkConfig.system_id)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        gcs = Gcs(fc.gcs_url, target=(fc.sysid, 1), bytewise=True, arm_texts=PX4_ARM_TEXTS)
        rig.start_agent()
        try:
            rig.wait_verdict(passed=True, timeout=60)
            yield fc, rig, gcs
        finally:
            rig.stop_agent()
            gcs.close()


@pytest.mark.parametrize("kind", FCS)
def test_a_good_manifest_arms_and_a_pinned_parameter_changed_is_refused_by_name(kind: str, tmp_path: Path) -> None:
    with _airframe(kind, tmp_path) as (fc, rig, gcs):
        armed = _arm_until(gcs, accepted=True, timeout=fc.arm_timeout)
        assert armed.accepted
        before = gcs.get_param("NAV_RCL_ACT")
        gcs.set_param("NAV_RCL_ACT", 0)
        rig.wait_verdict(passed=False, code="param-pinned", timeout=30)
        refused = _arm_until(gcs, accepted=False, timeout=20, text="FlightSeal: pinned NAV_RCL_ACT")
        assert "Arm auth: Denied" in refused.text, refused
        gcs.set_param("NAV_RCL_ACT", before or 0)
        rig.wait_verdict(passed=True, timeout=30)
        assert _arm_until(gcs, accepted=True, timeout=20).accepted


@pytest.mark.parametrize("kind", FCS)
def test_a_changed_airframe_file_is_refused_after_the_reboot(kind: str, tmp_path: Path) -> None:
    with _airframe(kind, tmp_path) as (fc, rig, gcs):
        approved = fc.read_file(fc.airframe_file)
        passes = rig.daemon.status.passes if rig.daemon else 0
        fc.write_file(fc.airframe_file, approved + AIRFRAME_TAMPER)
        fc.reboot()
        daemon = rig.wait_verdict(passes=passes + 1, passed=False, code="script-mismatch", timeout=90)
        assert daemon.status.delivered is not None
        reasons = daemon.status.delivered.verdict.reasons
        assert any(r.component.endswith(fc.airframe_file) for r in reasons), reasons
        assert not _arm_until(gcs, accepted=False, timeout=20, text="FlightSeal: script-mismatch").accepted


@pytest.mark.parametrize("kind", FCS)
def test_with_the_agent_killed_px4_refuses_by_itself(kind: str, tmp_path: Path) -> None:
    with _airframe(kind, tmp_path) as (_fc, rig, gcs):
        rig.stop_agent()
        refused = _arm_until(gcs, accepted=False, timeout=20, text="Arm auth: No response")
        assert not refused.accepted


@pytest.mark.parametrize("kind", FCS)
def test_arm_authorization_turned_off_from_the_gcs_fails_every_attestation(kind: str, tmp_path: Path) -> None:
    with _airframe(kind, tmp_path) as (_fc, rig, gcs):
        gcs.set_param("COM_ARM_AUTH_REQ", 0)
        daemon = rig.wait_verdict(passed=False, code="posture-arm-auth-off", timeout=30)
        assert daemon.status.delivered is not None


@pytest.mark.parametrize("kind", FCS)
def test_a_forged_authorization_from_another_system_is_called_out(kind: str, tmp_path: Path) -> None:
    """Measured on PX4 v1.16.0 SITL: PX4 takes an ACCEPTED ack from system 77 while the agent
    answers DENIED, and arms. The agent cannot stop it; it sees the arming it did not authorize."""
    with _airframe(kind, tmp_path) as (fc, rig, gcs):
        gcs.set_param("NAV_RCL_ACT", 0)
        rig.wait_verdict(passed=False, code="param-pinned", timeout=30)
        assert _forged_authorization(fc, gcs), "PX4 v1.16 took forged acks on SITL; did PX4 start checking?"
        time.sleep(0.5)
        daemon = rig.wait_verdict(passed=False, code="posture-gate-forgery", timeout=60)
        gate = daemon.gate
        assert gate is not None and getattr(gate, "unauthorized_arms", 0) >= 1
