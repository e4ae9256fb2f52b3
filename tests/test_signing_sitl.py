"""`flightseal signing` on real ArduCopter SITL: set up from the companion port (SERIAL1), enforced on
the telemetry port (SERIAL2), never on SERIAL0/USB; then removed."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agent.cli.main import main
from agent.signing import KEY_FILE, answers_unsigned, fc_signs
from tests.sitl_marks import SITL

pytestmark = SITL


def test_signing_setup_is_enforced_on_telemetry_ports_not_serial0_and_can_be_removed_on_sitl(tmp_path: Path) -> None:
    from sim.launchers.sitl import Sitl, SitlConfig, free_instance

    with Sitl(SitlConfig(instance=free_instance())) as sitl:
        companion, radio, usb = (f"tcp:127.0.0.1:{sitl.port(n)}" for n in (1, 2, 0))
        assert answers_unsigned(radio)
        r = CliRunner().invoke(main, ["signing", "setup", "--mavlink", companion, "--out", str(tmp_path / "s"),
                                      "--probe", radio])
        assert r.exit_code == 0, r.output
        key = bytes.fromhex((tmp_path / "s" / KEY_FILE).read_text().strip())
        assert not answers_unsigned(radio), "an attacker's unsigned telemetry link is dropped"
        assert fc_signs(radio, key)
        assert answers_unsigned(usb), "ArduPilot never checks SERIAL0/USB (recorded in FIELD-NOTES)"
        r = CliRunner().invoke(main, ["signing", "remove", "--mavlink", companion, "--signing-key",
                                      str(tmp_path / "s" / KEY_FILE)])
        assert r.exit_code == 0, r.output
        assert answers_unsigned(radio)
