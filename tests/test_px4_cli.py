"""The commands a PX4 airframe's owner runs, as processes: `gate install`, `measure`, `agent run`,
`challenge` and `verify`, on the virtual PX4 (CI) and on PX4 SITL (``px4``)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hardware.software import SoftwareSigner, write_private_key
from sim.scenarios.demo import _arm_until
from sim.scenarios.demo_px4 import _px4_sitl, _virtual_px4
from sim.scenarios.rig import PX4_ARM_TEXTS, Gcs, Rig
from tests.px4_fixtures import PX4

os.environ.setdefault("MAVLINK20", "1")

FCS = [pytest.param("virtual", id="virtual-px4"), pytest.param("sitl", id="px4-sitl", marks=PX4)]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("kind", FCS)
def test_the_owners_commands_on_px4(kind: str, tmp_path: Path) -> None:
    key = tmp_path / "device.pem"
    signer = SoftwareSigner.generate()
    write_private_key(key, signer)
    with (_px4_sitl() if kind == "sitl" else _virtual_px4()) as fc:
        link = ["--mavlink", fc.companion_url, "--fc-system-id", str(fc.sysid)]
        installed = _cli("gate", "install", *link)
        assert installed.returncode == 0, installed.stderr
        assert "FC: PX4" in installed.stdout and "COM_ARM_AUTH_REQ = 1" in installed.stdout

        image = ["--firmware-file", str(fc.firmware_file)] if fc.firmware_file else []
        measured = _cli("measure", *link, *image, "--json")
        assert measured.returncode == 0, measured.stderr
        names = {m["component"] for m in json.loads(measured.stdout)}
        assert {"fc.firmware", "fc.firmware-image", "fc.params", "fc.link", f"fc.file:{fc.airframe_file}"} <= names

        rig = Rig(tmp_path, fc.companion_url, fc.gcs_url, signer, fc_kind="px4", fc_system_id=fc.sysid,
                  firmware_file=fc.firmware_file)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        config = rig.write_config_file(f"file:{key}")
        agent = subprocess.Popen([sys.executable, "-m", "agent", "agent", "run", "--config", str(config)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # the ground station listens where PX4's GCS link sends: PX4 answers only its first partner, and a
        # tool restarted on the same port is that partner again (tests/data/px4-sitl/README.md)
        gcs = Gcs(fc.ground_url, target=(fc.sysid, 1), bytewise=True, arm_texts=PX4_ARM_TEXTS)
        try:
            assert _arm_until(gcs, accepted=True, timeout=fc.arm_timeout + 30).accepted
            gcs.close()
            nonce = secrets.token_hex(32)
            out = tmp_path / "attestation.json"
            challenged = _cli("challenge", "--mavlink", fc.ground_url, "--target", f"{fc.sysid}/191", "--nonce",
                              nonce, "--timeout", "60", "-o", str(out))
            assert challenged.returncode == 0, challenged.stderr
            verified = _cli("verify", str(out), "--trust", str(rig.trust_dir), "--nonce", nonce,
                            "--allow-software-keys", "--json")
            assert verified.returncode == 0, verified.stdout + verified.stderr
            assert json.loads(verified.stdout)["passed"] is True
            agent.send_signal(signal.SIGTERM)
            log, _ = agent.communicate(timeout=20)
            assert agent.returncode == 0, log
            assert "verdict PASS" in log
            gcs = Gcs(fc.ground_url, target=(fc.sysid, 1), bytewise=True, arm_texts=PX4_ARM_TEXTS)
            refused = _arm_until(gcs, accepted=False, timeout=20, text="Arm auth: No response")
            assert not refused.accepted
        finally:
            gcs.close()
            if agent.poll() is None:
                agent.kill()
                agent.wait()
