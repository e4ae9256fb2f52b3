"""`flightseal gate install` on real ArduCopter SITL: upload, scripting on, reboot, script checksums
set and confirmed by ArduPilot's own pre-arm text with scripting stopped (ADR 0013)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agent.cli.main import main
from agent.gate.client import gate_script
from agent.gate.install import CHECKSUM_MASK
from agent.gate.key import FC_KEY_NAME, GATE_VM_I_COUNT
from agent.mavlink.ftpwire import crc32_ardupilot
from sim.scenarios.rig import Gcs
from tests.field import arm_until
from tests.sitl_marks import SITL

pytestmark = SITL


def test_gate_install_sets_checksums_and_a_stopped_gate_is_refused_by_ardupilot_on_sitl(tmp_path: Path) -> None:
    from sim.launchers.sitl import Sitl, SitlConfig, free_instance

    with Sitl(SitlConfig(instance=free_instance(), scripting=False)) as sitl:
        key_file = tmp_path / "gate.key"
        r = CliRunner().invoke(main, ["gate", "install", "--mavlink", sitl.url, "--gate-key", str(key_file)])
        assert r.exit_code == 0, r.output
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert (sitl.workdir / FC_KEY_NAME).read_bytes() == key_file.read_bytes(), "the gate's key is ours"
        assert "SCR_VM_I_COUNT=100000" in r.output
        want = crc32_ardupilot(gate_script()) & CHECKSUM_MASK
        assert f"{want:#x}" in r.output and "refuses arming when scripting stops" in r.output
        gcs = Gcs(f"tcp:127.0.0.1:{sitl.port(0)}")
        try:
            assert gcs.get_param("SCR_LD_CHECKSUM") == gcs.get_param("SCR_RUN_CHECKSUM") == want
            assert gcs.get_param("SCR_VM_I_COUNT") == GATE_VM_I_COUNT
            refused = gcs.arm()
            assert not refused.accepted and "FlightSeal: waiting" in refused.text, refused
            gcs.conn.mav.command_long_send(1, 1, 42701, 0, 2, 0, 0, 0, 0, 0, 0)  # an unsigned STOP from the GCS
            text = arm_until(gcs, accepted=False, text="Scripting: running CRC incorrect want: 0x0", timeout=40)
            assert "FlightSeal: waiting" in text
        finally:
            gcs.close()
