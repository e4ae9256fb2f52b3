"""Issue 11: traffic on the agent's link that must not make it work for nothing (vFC, real Lua gate)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_agent_e2e import World, close, make_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    try:
        yield w
    finally:
        close(w)


def test_setting_a_parameter_to_its_own_value_or_reading_it_starts_no_pass(world: World) -> None:
    """ArduPilot answers a PARAM_SET of an unchanged value, and every read, with a PARAM_VALUE: it used
    to force a full pass each time (60 passes in 30 s)."""
    world.rig.start_agent()
    daemon = world.rig.wait_verdict(passed=True)
    passes = daemon.status.passes
    for _ in range(10):
        world.gcs.set_param("FS_THR_ENABLE", 1)
        assert world.gcs.get_param("RTL_ALT") is not None
    time.sleep(2.0)
    assert daemon.status.passes == passes, daemon.status.transitions[-4:]
    world.gcs.set_param("FS_THR_ENABLE", 0)
    world.rig.wait_verdict(passes=passes + 1, passed=False, code="param-pinned", timeout=20)
