"""Forged, replayed and flooded verdicts against the real Lua gate in the virtual FC (ADR 0015), with
real MAVProxy as the companion's router. The same scenarios run on SITL in test_gate_forgery_sitl.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.launchers.mavproxy import mavproxy_command
from sim.scenarios.rig import Gcs, Rig
from sim.vfc.lua_host import LuaScriptingAuthority
from sim.vfc.server import VirtualFC
from tests.forgery import forger_behind_the_router, radio_flood, replay_after_reboot
from tests.test_field_vfc import fc, rig

RADIO = 2  # the third MAVLink port: the telemetry radio

__all__ = ["fc", "rig"]  # the field tests' virtual FC and rig, used here as fixtures


@pytest.mark.skipif(mavproxy_command() is None,
                    reason="MAVProxy is not installed (scripts/install.sh installs it from PyPI)")
def test_a_forger_behind_the_router_neither_opens_nor_wedges_the_gate_and_is_named(
        rig: Rig, fc: VirtualFC, tmp_path: Path) -> None:
    forger_behind_the_router(rig, fc.url(1), tmp_path, arm_timeout=15)


def test_a_pass_replayed_after_the_fc_rebooted_is_stale(rig: Rig, fc: VirtualFC) -> None:
    def reboot(_pilot: Gcs) -> None:
        fc.reboot()

    replay_after_reboot(rig, reboot)


def test_a_bad_crc_flood_from_the_radio_does_not_push_the_agents_pass_out(rig: Rig, fc: VirtualFC) -> None:
    radio_flood(rig, fc.url(RADIO), arm_timeout=15)
    assert isinstance(fc.authority, LuaScriptingAuthority) and fc.authority.host is not None
    assert fc.authority.host.rx_queued[RADIO] > 300, "the flood reached the gate's queue"
    assert fc.authority.host.rx_dropped[1] == 0, "no verdict of the agent's was pushed out"
