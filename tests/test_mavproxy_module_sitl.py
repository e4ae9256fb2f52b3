"""The FlightSeal MAVProxy module on real ArduCopter SITL, through the telemetry port (SERIAL2) with
MAVLink2 signing on: MAVProxy's own ``signing setup`` gives the FC the key (SHA-256 of a passphrase),
the agent on the companion port (SERIAL1) signs with the same key, the manifest requires a signed
link, and ``fs challenge`` passes through MAVProxy's signed link (issue 16)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hardware.software import SoftwareSigner
from sim.launchers.mavproxy import mavproxy_command
from sim.scenarios.rig import DEVICE_ID, GATE_KEY, Rig, gate_scripts
from tests.mavproxy_console import Console
from tests.sitl_marks import SITL

pytestmark = [
    *SITL,
    pytest.mark.skipif(mavproxy_command() is None,
                       reason="MAVProxy is not installed (scripts/install.sh installs it from PyPI)"),
]

PASSPHRASE = "flightseal-field-test"


def test_fs_challenge_through_a_signed_telemetry_port_on_sitl(tmp_path: Path) -> None:
    from sim.launchers.sitl import Sitl, SitlConfig, free_instance

    key = hashlib.sha256(PASSPHRASE.encode()).digest()  # what MAVProxy's `signing setup` sends the FC
    with Sitl(SitlConfig(instance=free_instance(), scripting=True, scripts=gate_scripts(), gate_key=GATE_KEY)) as sitl:
        console = Console(f"tcp:127.0.0.1:{sitl.port(2)}", tmp_path / "gcs")
        rig: Rig | None = None
        try:
            console.wait("Loaded module agent.mavproxy_flightseal", timeout=30)
            console.wait("online system 1", timeout=60)
            console.run(f"signing setup {PASSPHRASE}", "Sent secret_key", timeout=20)
            rig = Rig(tmp_path / "rig", sitl.url, f"tcp:127.0.0.1:{sitl.port(0)}", SoftwareSigner.generate(),
                      gate_key=GATE_KEY, signing_key=key)
            rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))  # requires the signed link
            rig.start_agent()
            rig.wait_verdict(passed=True, timeout=90)
            for line in (f"fs set trust {rig.trust_dir}", "fs set allow_software_keys on",
                         f"fs set results {tmp_path / 'results'}", "fs set timeout 30"):
                console.run(line, "fs: ", timeout=10)
            out = console.run("fs challenge", "fs: PASS", timeout=60)
            assert f"PASS device {DEVICE_ID}" in out and "posture required: signed link" in out, out
            out = console.run("fs challenge --device drone-999", "fs: FAIL", timeout=60)
            assert "FAIL wrong-device" in out, out
            assert "Traceback" not in console.output()
        finally:
            console.stop()
            if rig is not None:
                rig.stop_agent()
