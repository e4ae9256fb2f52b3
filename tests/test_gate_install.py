"""`flightseal gate install` against the virtual FC running real Lua scripting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.ftpwire import crc32_ardupilot as ardupilot_crc32
from agent.gate import gate_script
from sim.lua_host import LuaScriptingAuthority
from sim.rig import Gcs
from sim.vfc.config import VfcConfig
from sim.vfc.server import VirtualFC


@pytest.fixture
def fc() -> Iterator[VirtualFC]:
    v = VirtualFC(VfcConfig(scripting=False), authority=LuaScriptingAuthority()).start()
    try:
        yield v
    finally:
        v.stop()


def test_install_uploads_enables_scripting_reboots_and_blocks(fc: VirtualFC) -> None:
    g = Gcs(fc.url(0))
    try:
        assert g.arm().accepted, "without the gate nothing vetoes arming"
        assert g.disarm().accepted
        r = CliRunner().invoke(main, ["gate", "install", "--mavlink", fc.url(1)])
        assert r.exit_code == 0, r.output
        assert "installed at scripts/flightseal_gate.lua" in r.output
        assert (fc.scripts_dir / "flightseal_gate.lua").read_bytes() == gate_script()
        assert fc.get_param("SCR_ENABLE") == 1
        assert fc.boots >= 2
    finally:
        g.close()
    g = Gcs(fc.url(0))
    try:
        result = g.arm()
        assert not result.accepted and "FlightSeal: waiting" in result.text, result
    finally:
        g.close()


def test_install_refuses_an_armed_vehicle(fc: VirtualFC) -> None:
    g = Gcs(fc.url(0))
    try:
        assert g.arm().accepted
        r = CliRunner().invoke(main, ["gate", "install", "--mavlink", fc.url(1)])
        assert r.exit_code == 1, r.output
        assert "armed" in r.output
        assert fc.armed and fc.boots == 1
        assert not (fc.scripts_dir / "flightseal_gate.lua").exists()
    finally:
        g.close()


def test_install_against_a_silent_port_fails_clearly() -> None:
    with VirtualFC(VfcConfig(silent=True)) as silent:
        r = CliRunner().invoke(main, ["gate", "install", "--mavlink", silent.url(1), "--heartbeat-timeout", "1"])
    assert r.exit_code == 1 and "cannot reach the FC" in r.output


def test_ardupilot_crc32_matches_the_captured_sitl_value() -> None:
    # scripts/tick.lua as read over FTP from real SITL (sitl-captures/ftp.fc.tlog), and the CRC SITL computed
    tick = (b"-- tick.lua: trivial script, it only reschedules itself every 1000 ms\n"
            b"local function update()\n  return update, 1000\nend\nreturn update, 1000\n")
    assert len(tick) == 140
    assert ardupilot_crc32(tick) == 0xD57ED916
