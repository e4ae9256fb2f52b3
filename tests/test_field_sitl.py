"""The field scenarios on real ArduCopter SITL: MAVProxy as the GCS on SERIAL0 through an operator
session, and MAVProxy as the companion's router on SERIAL1 with the agent behind it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware.software import SoftwareSigner
from sim.launchers.mavproxy import mavproxy_command
from sim.scenarios.rig import GATE_KEY, Rig, gate_scripts
from tests.field import agent_behind_a_mavproxy_router, operator_session_with_mavproxy
from tests.sitl_marks import SITL

pytestmark = [
    *SITL,
    pytest.mark.skipif(mavproxy_command() is None,
                       reason="MAVProxy is not installed (scripts/install.sh installs it from PyPI)"),
]


@pytest.fixture
def sitl_rig(tmp_path: Path) -> Iterator[tuple[Rig, str]]:
    from sim.launchers.sitl import Sitl, SitlConfig, free_instance

    with Sitl(SitlConfig(instance=free_instance(), scripting=True, scripts=gate_scripts(), gate_key=GATE_KEY)) as sitl:
        rig = Rig(tmp_path, sitl.url, f"tcp:127.0.0.1:{sitl.port(0)}", SoftwareSigner.generate(), gate_key=GATE_KEY)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))
        try:
            yield rig, sitl.url
        finally:
            rig.stop_agent()


def test_with_mavproxy_as_the_gcs_a_good_manifest_arms_and_changed_parameters_are_named_on_sitl(
        sitl_rig: tuple[Rig, str], tmp_path: Path) -> None:
    rig, _ = sitl_rig
    operator_session_with_mavproxy(rig, tmp_path)


def test_the_agent_arms_through_a_mavproxy_router_on_sitl(sitl_rig: tuple[Rig, str], tmp_path: Path) -> None:
    rig, companion_url = sitl_rig
    agent_behind_a_mavproxy_router(rig, companion_url, tmp_path)
