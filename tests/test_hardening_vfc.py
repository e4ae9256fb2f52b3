"""Issue 10's "done when" on the virtual FC (tests/hardening.py): the radio is a third MAVLink port."""

from __future__ import annotations

from pathlib import Path

from sim.lua_host import LuaScriptingAuthority
from sim.vfc.config import VfcConfig
from sim.vfc.server import VirtualFC
from tests.hardening import hardened_airframe


def test_hardened_vfc_cannot_be_armed_past_a_failing_manifest_from_an_unsigned_link(tmp_path: Path) -> None:
    image = b"\x00\x10\x00\x20 virtual FC firmware image " * 2048
    with VirtualFC(VfcConfig(channels=3, scripting=False, prearm_period=1.0, flash_image=image),
                   authority=LuaScriptingAuthority()) as fc:
        hardened_airframe(fc.url(1), fc.url(2), fc.url(0), fc.scripts_dir, tmp_path, arm_timeout=20)
