"""Forged, replayed and flooded verdicts against the gate on real ArduCopter SITL (ADR 0015): MAVProxy
routes the companion port (SERIAL1), the attacker's radio is SERIAL2. The same scenarios run on the
virtual FC in test_gate_forgery_vfc.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware.software import SoftwareSigner
from sim.launchers.mavproxy import mavproxy_command
from sim.scenarios.rig import GATE_KEY, Gcs, Rig, gate_scripts
from tests.forgery import forger_behind_the_router, radio_flood, replay_after_reboot
from tests.sitl_marks import SITL

pytestmark = SITL


@pytest.fixture
def sitl_rig(tmp_path: Path) -> Iterator[tuple[Rig, str]]:
    from sim.launchers.sitl import Sitl, SitlConfig, free_instance

    with Sitl(SitlConfig(instance=free_instance(), scripting=True, scripts=gate_scripts(),
                         gate_key=GATE_KEY)) as sitl:
        rig = Rig(tmp_path, sitl.url, f"tcp:127.0.0.1:{sitl.port(0)}", SoftwareSigner.generate(), gate_key=GATE_KEY)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        try:
            yield rig, f"tcp:127.0.0.1:{sitl.port(2)}"
        finally:
            rig.stop_agent()


@pytest.mark.skipif(mavproxy_command() is None,
                    reason="MAVProxy is not installed (scripts/install.sh installs it from PyPI)")
def test_a_forger_behind_the_router_neither_opens_nor_wedges_the_gate_and_is_named_on_sitl(
        sitl_rig: tuple[Rig, str], tmp_path: Path) -> None:
    rig, _radio = sitl_rig
    forger_behind_the_router(rig, rig.fc_url, tmp_path)


def test_a_pass_replayed_after_sitl_rebooted_is_stale(sitl_rig: tuple[Rig, str]) -> None:
    rig, _radio = sitl_rig

    def reboot(pilot: Gcs) -> None:
        pilot.conn.mav.command_long_send(1, 1, 246, 0, 1, 0, 0, 0, 0, 0, 0)  # MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN
        time.sleep(3.0)

    replay_after_reboot(rig, reboot)


def test_a_bad_crc_flood_from_the_radio_does_not_push_the_agents_pass_out_on_sitl(sitl_rig: tuple[Rig, str]) -> None:
    rig, radio = sitl_rig
    radio_flood(rig, radio)
