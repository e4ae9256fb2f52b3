"""Issue 10's "done when", shared by the virtual FC (CI) and SITL (``sitl``): `gate install` plus
`signing setup` on a fresh FC give an airframe that no unsigned link can arm past a failing
manifest. The attacker holds the telemetry radio without the key; the pilot's ground station (on
SERIAL0/USB, which ArduPilot never checks) has it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from click.testing import CliRunner

from agent.cli.main import main
from agent.signing import KEY_FILE
from hardware.software import SoftwareSigner
from sim.scenarios.rig import Gcs, Rig


def hardened_airframe(companion: str, radio: str, usb: str, scripts_dir: Path, tmp_path: Path, *,
                      arm_timeout: float) -> None:
    """`gate install` + `signing setup` on a fresh FC, a manifest the FC fails; then the radio without
    the key tries everything, and a key holder stops scripting."""
    from tests.field import arm_until

    key_file = tmp_path / "rig" / "state" / "gate.key"  # where the rig's agent looks for it
    assert CliRunner().invoke(main, ["gate", "install", "--mavlink", companion,
                                     "--gate-key", str(key_file)]).exit_code == 0
    r = CliRunner().invoke(main, ["signing", "setup", "--mavlink", companion, "--out", str(tmp_path / "s"),
                                  "--probe", radio])
    assert r.exit_code == 0, r.output
    key = bytes.fromhex((tmp_path / "s" / KEY_FILE).read_text().strip())

    rig = Rig(tmp_path / "rig", companion, usb, SoftwareSigner.generate(), signing_key=key)
    manifest = rig.baseline_manifest(rig.measure_fc())
    failing = dataclasses.replace(manifest, params=dataclasses.replace(
        manifest.params, pinned={**manifest.params.pinned, "FS_THR_ENABLE": 0.0}))  # this FC has 1
    rig.sign_manifest(failing)
    rig.start_agent()
    attacker = Gcs(radio)  # unsigned: hears the FC (it signs), is not heard
    pilot = Gcs(usb, signing_key=key)
    try:
        daemon = rig.wait_verdict(passed=False, code="param-pinned", timeout=60)
        assert daemon.status.last is not None
        link = next(m for m in daemon.status.last.predicate.measurements if m.component == "fc.link")
        assert link.claims["signed"] is True and link.claims["script_checksums"] is True, link.claims
        assert [r.code.value for r in daemon.status.last.verdict.reasons] == ["param-pinned"], \
            "the posture the manifest requires (signed link, script checksums) holds"
        for command in ((42701, 2), (400, 1, 21196), (246, 1)):  # scripting stop; force-arm; reboot
            attacker.conn.mav.command_long_send(1, 1, command[0], 0, *[*command[1:], 0, 0, 0, 0, 0, 0, 0][:7])
        attacker.conn.mav.param_set_send(1, 1, b"ARMING_CHECK", 0, 2)
        attacker.conn.mav.param_set_send(1, 1, b"SCR_ENABLE", 0, 2)
        attacker.conn.mav.param_set_send(1, 1, b"FS_THR_ENABLE", 0, 2)  # a pinned one
        time.sleep(2.0)
        assert attacker.get_param("ARMING_CHECK", timeout=2.0) is None, "unsigned reads get no answer"
        assert pilot.get_param("ARMING_CHECK") == 1 and pilot.get_param("SCR_ENABLE") == 1
        assert pilot.get_param("FS_THR_ENABLE") == 1
        result = attacker.arm(timeout=2.0)
        assert not result.accepted and result.result is None, "the FC drops the unsigned arm"
        attacker.close()  # SITL's TCP serial port takes one client: the radio's FTP session next
        unsigned_ftp_is_dropped(radio, scripts_dir)
        text = arm_until(pilot, accepted=False, text="FlightSeal: pinned FS_THR_ENABLE", timeout=arm_timeout)
        assert "Scripting:" not in text, text
        # a key holder who stops scripting is refused by ArduPilot's own checksum check
        pilot.conn.mav.command_long_send(1, 1, 42701, 0, 2, 0, 0, 0, 0, 0, 0)
        rig.stop_agent()
        arm_until(pilot, accepted=False, text="Scripting: running CRC incorrect", timeout=30)
    finally:
        attacker.close()
        pilot.close()
        rig.stop_agent()


def unsigned_ftp_is_dropped(radio: str, scripts_dir: Path) -> None:
    """Replacing or deleting the gate over MAVLink FTP from the unsigned radio: no answer, no change."""
    from agent.gate.client import gate_script
    from agent.mavlink.ftp import FtpClient, FtpError
    from agent.mavlink.link import Link, LinkConfig

    with Link.open(LinkConfig(radio, heartbeat_timeout=10.0)) as link:
        ftp = FtpClient(link)
        for attempt in (lambda: ftp.write_file("scripts/flightseal_gate.lua", b"return\n"),
                        lambda: ftp.remove("scripts/flightseal_gate.lua")):
            try:
                attempt()
            except FtpError:
                continue
            raise AssertionError("the signed FC answered an unsigned FTP request")
    assert (scripts_dir / "flightseal_gate.lua").read_bytes() == gate_script()
