"""The ``px4_sitl`` fixture and the marks every test on a real PX4 SITL carries.

Use in a test module::

    from tests.px4_fixtures import PX4
    pytest_plugins = ["tests.px4_fixtures"]
    pytestmark = PX4

A test that needs boot-time parameters (``COM_ARM_AUTH_REQ`` ...) parametrizes the fixture
indirectly with a dict: ``@pytest.mark.parametrize("px4_sitl", [{"COM_ARM_AUTH_REQ": 1}], indirect=True)``.
The fixture uses PX4 instance 0 (instance numbers are global on the machine; see sim/launchers/px4.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sim.launchers.px4 import ENV_PX4, Px4Config, Px4Sitl, Px4SitlError, check_build, px4_from_env


def _skip_reason() -> str | None:
    """Why PX4 tests cannot run here, or None when FLIGHTSEAL_PX4_SITL names a usable build."""
    if not os.environ.get(ENV_PX4):
        return f"{ENV_PX4} is not set (a PX4 px4_sitl_default build dir, from ../shared/tools/build-px4-sitl.sh)"
    try:
        check_build(px4_from_env())
    except Px4SitlError as exc:
        return str(exc)
    return None


PX4_SKIP_REASON = _skip_reason()

PX4 = [
    pytest.mark.px4,
    pytest.mark.slow,
    pytest.mark.skipif(PX4_SKIP_REASON is not None, reason=PX4_SKIP_REASON or ""),
]


@pytest.fixture
def px4_sitl(request: pytest.FixtureRequest) -> Iterator[Px4Sitl]:
    """A running PX4 SITL (instance 0, SIH quadrotor) in a temp dir, stopped and removed afterwards."""
    if PX4_SKIP_REASON is not None:
        pytest.skip(PX4_SKIP_REASON)
    params = getattr(request, "param", None) or {}
    with Px4Sitl(Px4Config(instance=0, params=dict(params))) as sitl:
        yield sitl
