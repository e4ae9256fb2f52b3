"""The agent and the gate against real ArduPilot SITL: the same scenarios as on the virtual FC."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware.software import SoftwareSigner
from sim.scenarios.rig import GATE_KEY, Gcs, Rig, gate_scripts
from tests.sitl_marks import SITL

pytestmark = SITL


def test_demo_runs_green_on_sitl(tmp_path: Path) -> None:
    """Accepted; tampered script, pinned parameter and manifest refused; challenge verified offline."""
    from sim.scenarios.demo import run_demo

    run_demo(tmp_path / "demo", use_sitl=True)


@pytest.fixture
def sitl_world(tmp_path: Path) -> Iterator[tuple[Rig, Gcs]]:
    from sim.launchers.sitl import Sitl, SitlConfig, free_instance

    with Sitl(SitlConfig(instance=free_instance(), scripting=True, scripts=gate_scripts(), gate_key=GATE_KEY)) as sitl:
        rig = Rig(tmp_path, sitl.url, f"tcp:127.0.0.1:{sitl.port(0)}", SoftwareSigner.generate(), gate_key=GATE_KEY)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        gcs = Gcs(rig.gcs_url)
        try:
            yield rig, gcs
        finally:
            gcs.close()
            rig.stop_agent()


def arm_until_accepted(gcs: Gcs, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gcs.arm().accepted:
            return
        time.sleep(1.0)
    raise AssertionError("SITL never accepted arming")


def test_forged_pass_on_serial0_is_ignored_and_a_change_in_flight_never_disarms_on_sitl(
        sitl_world: tuple[Rig, Gcs]) -> None:
    from pymavlink import mavutil

    from agent.gate.client import Sequence, encode_verdict
    from attest.models import Verdict

    rig, gcs = sitl_world
    forger = mavutil.mavlink_connection(rig.gcs_url, source_system=1, source_component=191)
    try:
        forger.wait_heartbeat(timeout=10)
        for i in range(3):
            forger.mav.send(encode_verdict(Verdict(passed=True), Sequence(2**30, i + 1), bytes(32)))
            time.sleep(0.2)
    finally:
        forger.close()
    refused = gcs.arm()
    assert not refused.accepted and "FlightSeal: waiting" in refused.text, refused

    rig.start_agent()
    rig.wait_verdict(passed=True, timeout=60)
    arm_until_accepted(gcs)
    time.sleep(1.2)
    assert rig.daemon is not None
    passes = rig.daemon.status.passes
    gcs.set_param("FS_THR_ENABLE", 0)
    time.sleep(2.0)
    gcs.conn.mav.heartbeat_send(6, 8, 0, 0, 4)
    hb = gcs.conn.recv_match(type="HEARTBEAT", blocking=True, timeout=3,
                             condition="HEARTBEAT.get_srcComponent()==1")
    assert hb is not None and hb.base_mode & 128, "a change in flight must not disarm the vehicle"
    assert rig.daemon.status.passes == passes, "an armed vehicle must not be measured"
    assert gcs.disarm().accepted
    rig.wait_verdict(passed=False, code="param-pinned", timeout=30)
    again = gcs.arm()
    assert not again.accepted and "FlightSeal: pinned FS_THR_ENABLE" in again.text, again


def test_stopped_agent_lapses_to_blocked_on_sitl(sitl_world: tuple[Rig, Gcs]) -> None:
    rig, gcs = sitl_world
    rig.start_agent()
    rig.wait_verdict(passed=True, timeout=60)
    arm_until_accepted(gcs)
    assert gcs.disarm().accepted
    rig.stop_agent()
    time.sleep(3.5)
    r = gcs.arm()
    assert not r.accepted and "FlightSeal: verdict lapsed" in r.text, r


def test_scripting_stop_after_a_pass_with_the_agent_killed_is_refused_by_ardupilot_on_sitl(
        sitl_world: tuple[Rig, Gcs]) -> None:
    """The attack that armed SITL before ADR 0013: an unsigned MAV_CMD_SCRIPTING stop from the GCS port
    after the agent's pass, then the agent killed. ArduPilot's running-script checksum refuses it."""
    from tests.field import arm_until

    rig, gcs = sitl_world
    rig.start_agent()
    rig.wait_verdict(passed=True, timeout=60)
    arm_until_accepted(gcs)
    assert gcs.disarm().accepted
    gcs.conn.mav.command_long_send(1, 1, 42701, 0, 2, 0, 0, 0, 0, 0, 0)  # MAV_CMD_SCRIPTING stop, unsigned
    rig.stop_agent()
    time.sleep(8.0)
    text = arm_until(gcs, accepted=False, text="Scripting: running CRC incorrect want: 0x0", timeout=20)
    assert "Arm: Scripting: running CRC incorrect want: 0x0" in text
