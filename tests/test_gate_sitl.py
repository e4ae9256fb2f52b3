"""The shipped gate in real ArduCopter SITL: refused with "FlightSeal: waiting", accepted after a pass.

Needs FLIGHTSEAL_SITL_BINARY (an ``arducopter`` SITL build) and ArduPilot's copter.parm, found next to
the binary's source tree or named by FLIGHTSEAL_SITL_DEFAULTS. sim/launchers/sitl.py did not exist when this
was written, so the test starts SITL itself; SITL binds its TCP ports on all interfaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.gate.client import GATE_SCRIPT_PATH, GateClient, gate_version
from agent.gate.key import FC_KEY_NAME, GATE_VM_I_COUNT
from attest.models import Verdict

pytestmark = [pytest.mark.sitl, pytest.mark.slow]

HOME = "-35.363261,149.165230,584,353"
KEY = bytes(range(200, 232))


def _binary() -> Path:
    value = os.environ.get("FLIGHTSEAL_SITL_BINARY")
    if not value:
        pytest.skip("FLIGHTSEAL_SITL_BINARY is not set (path of an ArduCopter SITL binary)")
    path = Path(value)
    if not path.is_file():
        pytest.skip(f"FLIGHTSEAL_SITL_BINARY={value} is not a file")
    return path


def _defaults(binary: Path) -> Path:
    from sim.launchers.sitl import find_defaults

    found = find_defaults(binary)
    if found is None:
        pytest.skip("copter.parm not found; set FLIGHTSEAL_SITL_DEFAULTS to ArduPilot's default_params/copter.parm")
    return found


def _free_instance() -> int:
    for instance in range(20, 60):
        ports = [5760 + 10 * instance + k for k in (0, 2, 3)]
        with contextlib.ExitStack() as stack:
            try:
                for port in ports:
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return instance
    pytest.skip("no free SITL instance ports in 5960..6353")


@pytest.fixture
def sitl(tmp_path: Path) -> Iterator[int]:
    """A fresh SITL with the gate in scripts/ and SCR_ENABLE=1; yields the SERIAL1 TCP port."""
    binary = _binary()
    defaults = _defaults(binary)
    (tmp_path / "scripts").mkdir()
    shutil.copyfile(GATE_SCRIPT_PATH, tmp_path / "scripts" / "flightseal_gate.lua")
    (tmp_path / FC_KEY_NAME).write_bytes(KEY)
    (tmp_path / "flightseal.parm").write_text(f"SCR_ENABLE 1\nSCR_VM_I_COUNT {GATE_VM_I_COUNT}\n")
    instance = _free_instance()
    log = (tmp_path / "sitl.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "--model", "quad", "--speedup", "1", "-I", str(instance), "--home", HOME,
         "--defaults", f"{defaults},{tmp_path / 'flightseal.parm'}", "--serial0", "tcp:0"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield 5760 + 10 * instance + 2
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _connect(port: int) -> Any:
    os.environ.setdefault("MAVLINK20", "1")
    from pymavlink import mavutil

    mavutil.set_dialect("ardupilotmega")
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = mavutil.mavlink_connection(f"tcp:127.0.0.1:{port}", source_system=1, source_component=191,
                                              autoreconnect=False, retries=0)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert conn.wait_heartbeat(timeout=30) is not None, "no HEARTBEAT from SITL"
    return conn


def _command(conn: Any, command: int, *params: float, texts: list[str], timeout: float = 3.0) -> int:
    """COMMAND_LONG to (1,1); returns the ack result and appends STATUSTEXTs seen meanwhile."""
    values = [*params, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0][:7]
    conn.mav.command_long_send(1, 1, command, 0, *values)
    deadline = time.monotonic() + timeout
    result = -1
    while time.monotonic() < deadline:
        msg = conn.recv_match(type=["COMMAND_ACK", "STATUSTEXT"], blocking=True, timeout=0.2)
        if msg is None:
            continue
        if msg.get_type() == "STATUSTEXT":
            texts.append(msg.text)
        elif msg.command == command:
            result = int(msg.result)
            deadline = min(deadline, time.monotonic() + 0.3)  # the Arm: texts follow the ACK
    return result


def test_sitl_refuses_arming_until_the_agent_sends_a_pass(sitl: int) -> None:
    conn = _connect(sitl)
    try:
        texts: list[str] = []
        deadline = time.monotonic() + 20
        while f"FlightSeal gate v{gate_version()} running" not in " ".join(texts) and time.monotonic() < deadline:
            msg = conn.recv_match(type="STATUSTEXT", blocking=True, timeout=0.5)
            conn.mav.heartbeat_send(18, 8, 0, 0, 4)
            if msg is not None:
                texts.append(msg.text)
        assert f"FlightSeal gate v{gate_version()} running" in texts, texts
        assert _command(conn, 176, 1, 4, texts=texts) == 0  # GUIDED
        texts.clear()
        assert _command(conn, 400, 1, texts=texts) == 4
        assert "Arm: FlightSeal: waiting" in texts

        client = GateClient(conn, KEY,
                            on_message=lambda m: texts.append(m.text) if m.get_type() == "STATUSTEXT" else None)
        first = client.send(Verdict(True))
        assert first.gate_version == gate_version() and not first.armed
        deadline = time.monotonic() + 120  # until the EKF is ready (~42 s after boot at speedup 1)
        result = -1
        while result != 0 and time.monotonic() < deadline:
            client.keep_alive()
            texts.clear()
            result = _command(conn, 400, 1, texts=texts, timeout=1.0)
            assert not any("FlightSeal" in t for t in texts if t.startswith("Arm:")), texts
        assert result == 0, texts
        assert client.send(Verdict(True)).armed, "the gate's authenticated ack says armed (arming:is_armed())"
        assert _command(conn, 400, 0, 21196, texts=texts) == 0  # disarm
        assert not client.send(Verdict(True)).armed
    finally:
        conn.close()
