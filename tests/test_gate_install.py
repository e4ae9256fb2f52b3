"""`flightseal gate install` against the virtual FC running real Lua scripting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from agent.cli.main import main
from agent.gate.client import gate_script
from agent.mavlink.ftpwire import crc32_ardupilot as ardupilot_crc32
from sim.scenarios.rig import Gcs
from sim.vfc.config import VfcConfig
from sim.vfc.lua_host import LuaScriptingAuthority
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
    assert r.exit_code == 2 and "cannot reach the FC" in r.output  # unusable input, as for every command


def test_ardupilot_crc32_matches_the_captured_sitl_value() -> None:
    # scripts/tick.lua as read over FTP from real SITL (sitl-captures/ftp.fc.tlog), and the CRC SITL computed
    tick = (b"-- tick.lua: trivial script, it only reschedules itself every 1000 ms\n"
            b"local function update()\n  return update, 1000\nend\nreturn update, 1000\n")
    assert len(tick) == 140
    assert ardupilot_crc32(tick) == 0xD57ED916


def test_install_sets_the_script_checksums_and_a_stopped_gate_then_refuses_arming(fc: VirtualFC) -> None:
    """ADR 0013: ArduPilot itself refuses arming once the gate no longer runs, whatever its slot says."""
    from agent.gate.install import CHECKSUM_MASK

    r = CliRunner().invoke(main, ["gate", "install", "--mavlink", fc.url(1)])
    assert r.exit_code == 0, r.output
    want = ardupilot_crc32(gate_script()) & CHECKSUM_MASK
    assert fc.get_param("SCR_LD_CHECKSUM") == fc.get_param("SCR_RUN_CHECKSUM") == want
    assert "a stopped" in r.output or "refuses arming when scripting stops" in r.output
    g = Gcs(fc.url(0))
    try:
        g.conn.mav.command_long_send(1, 1, 42701, 0, 2, 0, 0, 0, 0, 0, 0)  # MAV_CMD_SCRIPTING stop
        refused = g.arm()
        assert not refused.accepted and "Scripting: running CRC incorrect want: 0x0" in refused.text, refused
    finally:
        g.close()


def test_install_fails_when_ardupilots_scripting_checks_are_off(fc: VirtualFC) -> None:
    fc.params.set_hidden_ok("SCR_DEBUG_OPTS", 16)  # DISABLE_PRE_ARM: a stopped gate would not be refused
    r = CliRunner().invoke(main, ["gate", "install", "--mavlink", fc.url(1)])
    assert r.exit_code != 0 and "did not refuse arming by the running script checksum" in r.output, r.output
    assert "Traceback" not in r.output


def test_install_names_a_script_ardupilot_disagrees_about(fc: VirtualFC) -> None:
    fc.scripts_dir.mkdir(parents=True, exist_ok=True)
    (fc.scripts_dir / "broken.lua").write_bytes(b"this is not lua(\n")  # listed, but does not load
    r = CliRunner().invoke(main, ["gate", "install", "--mavlink", fc.url(1)])
    assert r.exit_code != 0 and "does not agree with the script checksum" in r.output, r.output
    assert "loaded CRC incorrect" in r.output
