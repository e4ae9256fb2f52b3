"""The SITL launcher's command line, defaults lookup and errors (no SITL needed; tests/test_sitl.py runs it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sim.launchers.sitl import MINIMAL_DEFAULTS, Sitl, SitlConfig, SitlError, find_defaults, serial_port


def fake_tree(tmp_path: Path, with_parm: bool) -> Path:
    binary = tmp_path / "ardupilot" / "build" / "sitl" / "bin" / "arducopter"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nsleep 30\n")
    binary.chmod(0o755)
    if with_parm:
        parm = tmp_path / "ardupilot" / "Tools" / "autotest" / "default_params" / "copter.parm"
        parm.parent.mkdir(parents=True)
        parm.write_text("FRAME_CLASS 1\n")
    return binary


def test_ports_follow_sitl_numbering() -> None:
    assert (serial_port(0, 0), serial_port(0, 1), serial_port(3, 1), serial_port(4, 1)) == (5760, 5762, 5792, 5802)


def test_command_line_uses_serial1_for_the_companion_and_our_defaults(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIGHTSEAL_SITL_DEFAULTS", raising=False)
    binary = fake_tree(tmp_path, with_parm=True)
    sitl = Sitl(SitlConfig(binary=binary, instance=5, scripting=True, params={"ARMING_CHECK": 0},
                           workdir=tmp_path / "work"))
    (tmp_path / "work").mkdir()
    cmd = sitl.command()
    assert cmd[cmd.index("--serial0") + 1] == "tcp:0" and cmd[cmd.index("--serial1") + 1] == "tcp:2"
    assert cmd[cmd.index("-I") + 1] == "5" and cmd[cmd.index("--home") + 1] == "-35.363261,149.165230,584,353"
    defaults = cmd[cmd.index("--defaults") + 1].split(",")
    assert defaults[0].endswith("Tools/autotest/default_params/copter.parm")
    assert (tmp_path / "work" / "flightseal.parm").read_text() == "SCR_ENABLE 1\nARMING_CHECK 0\n"
    assert sitl.url == "tcp:127.0.0.1:5812"


def test_without_arducopter_defaults_a_minimal_set_of_our_own_is_written(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIGHTSEAL_SITL_DEFAULTS", raising=False)
    binary = fake_tree(tmp_path, with_parm=False)
    assert find_defaults(binary) is None
    sitl = Sitl(SitlConfig(binary=binary, workdir=tmp_path / "w"))
    (tmp_path / "w").mkdir()
    assert sitl.command()[sitl.command().index("--defaults") + 1] == str(tmp_path / "w" / "flightseal.parm")
    written = (tmp_path / "w" / "flightseal.parm").read_text().splitlines()
    assert len(written) == len(MINIMAL_DEFAULTS) and "FRAME_CLASS 1" in written


def test_defaults_from_the_environment_win_and_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = fake_tree(tmp_path, with_parm=True)
    own = tmp_path / "mine.parm"
    own.write_text("FRAME_CLASS 1\n")
    monkeypatch.setenv("FLIGHTSEAL_SITL_DEFAULTS", str(own))
    assert find_defaults(binary) == own
    monkeypatch.setenv("FLIGHTSEAL_SITL_DEFAULTS", str(tmp_path / "nope.parm"))
    with pytest.raises(SitlError, match="is not a file"):
        find_defaults(binary)


def test_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIGHTSEAL_SITL_BINARY", raising=False)
    with pytest.raises(SitlError, match="set FLIGHTSEAL_SITL_BINARY"):
        Sitl(SitlConfig())
    with pytest.raises(SitlError, match="is not an executable file"):
        Sitl(SitlConfig(binary=tmp_path / "missing"))


def test_a_process_that_exits_early_keeps_its_log(tmp_path: Path) -> None:
    binary = tmp_path / "bad-sitl"
    binary.write_text("#!/bin/sh\necho 'no such model' >&2\nexit 3\n")
    binary.chmod(0o755)
    sitl = Sitl(SitlConfig(binary=binary, instance=59, start_timeout=5))
    with pytest.raises(SitlError, match="exited with code 3"):
        sitl.start()
    assert "no such model" in sitl.log_tail()
    shutil.rmtree(sitl.workdir)


@pytest.mark.sitl
@pytest.mark.skipif(not os.environ.get("FLIGHTSEAL_SITL_BINARY"), reason="FLIGHTSEAL_SITL_BINARY is not set")
def test_sitl_boots_on_our_minimal_defaults_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.mavlink.link import Link, LinkConfig
    from sim.launchers.sitl import free_instance

    monkeypatch.delenv("FLIGHTSEAL_SITL_DEFAULTS", raising=False)
    binary = tmp_path / "arducopter"
    shutil.copy(os.environ["FLIGHTSEAL_SITL_BINARY"], binary)  # outside its source tree: no copter.parm
    with Sitl(SitlConfig(binary=binary, instance=free_instance())) as sitl, Link.open(LinkConfig(sitl.url)) as link:
        link.send(link.mav.param_request_read_encode(1, 1, b"FRAME_CLASS", -1))
        frame = link.recv(["PARAM_VALUE"], 3, lambda m: m.param_id == "FRAME_CLASS")
        assert frame is not None and frame.param_value == 1.0
