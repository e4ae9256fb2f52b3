"""With real MAVProxy on the virtual FC's links (CI): a ground station through a whole operator
session, and a router owning the companion port. The vFC changes stream rates as SITL was recorded
to (tests/data/sitl-operator-session), so these would fail without the default exclusions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware.software import SoftwareSigner
from sim.launchers.mavproxy import mavproxy_command
from sim.scenarios.rig import GATE_KEY, Rig, gate_scripts
from sim.vfc.config import VfcConfig
from sim.vfc.lua_host import LuaScriptingAuthority
from sim.vfc.server import VirtualFC
from tests.field import agent_behind_a_mavproxy_router, operator_session_with_mavproxy

pytestmark = pytest.mark.skipif(mavproxy_command() is None,
                                reason="MAVProxy is not installed (scripts/install.sh installs it from PyPI)")

IMAGE = b"\x00\x10\x00\x20 virtual FC firmware image " * 2048


@pytest.fixture
def fc() -> Iterator[VirtualFC]:
    vfc = VirtualFC(VfcConfig(channels=3, scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=IMAGE,
                              prearm_period=1.0),  # 0 the GCS, 1 the companion, 2 a telemetry radio
                    authority=LuaScriptingAuthority()).start()
    try:
        yield vfc
    finally:
        vfc.stop()


@pytest.fixture
def rig(tmp_path: Path, fc: VirtualFC) -> Iterator[Rig]:
    r = Rig(tmp_path, fc.url(1), fc.url(0), SoftwareSigner.generate(), gate_key=GATE_KEY)
    r.sign_manifest(r.baseline_manifest(r.measure_fc()))
    try:
        yield r
    finally:
        r.stop_agent()


def test_with_mavproxy_as_the_gcs_a_good_manifest_arms_and_changed_parameters_are_named(
        rig: Rig, fc: VirtualFC, tmp_path: Path) -> None:
    operator_session_with_mavproxy(rig, tmp_path, arm_timeout=15)
    streams = [r for r in fc.received if r[1] == "REQUEST_DATA_STREAM"]
    assert streams and all(ch == 0 for ch, *_ in streams), "MAVProxy asked for streams on the GCS port only"


def test_the_agent_arms_through_a_mavproxy_router_on_the_companion_port(
        rig: Rig, fc: VirtualFC, tmp_path: Path) -> None:
    agent_behind_a_mavproxy_router(rig, fc.url(1), tmp_path, arm_timeout=15)
    assert any(ch == 1 and mtype == "REQUEST_DATA_STREAM" for ch, mtype, *_ in fc.received), \
        "the router asked for streams on the companion port (MAV2_*), and the agent still passed"
