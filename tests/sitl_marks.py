"""The marks every test on real ArduPilot SITL carries: ``sitl``, ``slow``, and a skip that says why."""

from __future__ import annotations

import os

import pytest

SITL = [
    pytest.mark.sitl,
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("FLIGHTSEAL_SITL_BINARY"),
                       reason="FLIGHTSEAL_SITL_BINARY is not set (path of an ArduCopter SITL binary)"),
]
