"""Issue 10's "done when" on real ArduCopter SITL (tests/hardening.py): the radio is SERIAL2."""

from __future__ import annotations

from pathlib import Path

from tests.hardening import hardened_airframe
from tests.sitl_marks import SITL

pytestmark = SITL


def test_hardened_sitl_cannot_be_armed_past_a_failing_manifest_from_an_unsigned_link(tmp_path: Path) -> None:
    from sim.launchers.sitl import Sitl, SitlConfig, free_instance

    with Sitl(SitlConfig(instance=free_instance(), scripting=False)) as sitl:
        companion, radio, usb = sitl.url, *(f"tcp:127.0.0.1:{sitl.port(n)}" for n in (2, 0))
        hardened_airframe(companion, radio, usb, sitl.scripts_dir, tmp_path, arm_timeout=60)
