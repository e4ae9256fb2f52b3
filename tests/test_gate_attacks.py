"""An attacker with an unsigned telemetry link against the gate, on the virtual FC running the real
Lua gate with ArduPilot's scripting rules as recorded on SITL (tests/data/sitl-scripting).

What ArduPilot's script checksums stop (ADR 0013) is refused by the FC itself, with its own text,
even with the agent gone. What only MAVLink2 signing can stop (parameters set by anyone) is shown
for what it is: the FC arms, and the agent's attestation names the change, so the operator's
pre-flight check fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from attest.models import Code
from tests.test_agent_e2e import World, close, make_world

SCRIPTING = 42701
STOP = 2
# A second script that claims to be the gate: it passes slot 0, the gate's (any script may).
IMPOSTOR = b"function update() arming:set_aux_auth_passed(0) return update, 100 end\nreturn update()\n"


@pytest.fixture(name="world")
def attacked_world(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The e2e airframe (vFC with the real Lua gate, scripts protected as gate install leaves them)."""
    w = make_world(tmp_path)
    try:
        yield w
    finally:
        close(w)


def pass_then(world: World) -> None:
    """The agent's pass is in effect (an arming goes through), then the agent is killed."""
    world.rig.start_agent()
    world.rig.wait_verdict(passed=True)
    assert world.gcs.arm().accepted
    assert world.gcs.disarm().accepted
    time.sleep(1.2)  # the FC's next heartbeat tells the agent it is disarmed


def attacker_command(world: World, command: int, *params: float) -> None:
    world.gcs.conn.mav.command_long_send(1, 1, command, 0, *[*params, 0, 0, 0, 0, 0, 0, 0][:7])


def test_scripting_stop_after_a_pass_with_the_agent_killed_is_refused_by_ardupilot(world: World) -> None:
    """The issue's attack: one unsigned MAV_CMD_SCRIPTING stop keeps the gate's slot passed forever."""
    pass_then(world)
    attacker_command(world, SCRIPTING, STOP)
    world.rig.stop_agent()
    time.sleep(4.0)  # past the gate's lapse: the gate is not running to lapse
    result = world.gcs.arm()
    assert not result.accepted, result
    assert "Arm: Scripting: running CRC incorrect want: 0x0" in result.text, result


def reboot(world: World) -> None:
    """The FC reboots (its TCP links close); the ground station connects again."""
    from sim.scenarios.rig import Gcs

    world.fc.reboot()
    time.sleep(1.5)
    world.gcs.close()
    world.gcs = Gcs(world.fc.url(0))


def test_a_second_script_passing_the_gates_slot_is_refused_after_the_reboot_it_needs(world: World) -> None:
    pass_then(world)
    (world.fc.scripts_dir / "helper.lua").write_bytes(IMPOSTOR)
    reboot(world)
    result = world.gcs.arm()
    assert not result.accepted and "Scripting: loaded CRC incorrect" in result.text, result
    world.rig.wait_verdict(passed=False, code="script-unknown", timeout=30)


def test_deleting_the_gate_and_rebooting_is_refused_by_ardupilot(world: World) -> None:
    pass_then(world)
    world.rig.stop_agent()
    (world.fc.scripts_dir / "flightseal_gate.lua").unlink()
    reboot(world)
    result = world.gcs.arm()
    assert not result.accepted and "Scripting: loaded CRC incorrect want: 0x0" in result.text, result


@pytest.mark.parametrize(("name", "value"), [("SCR_RUN_CHECKSUM", -1), ("SCR_DEBUG_OPTS", 16), ("SCR_ENABLE", 0)])
def test_unsigned_parameter_changes_that_switch_the_checks_off_are_named_in_the_attestation(
        world: World, name: str, value: float) -> None:
    """Known limit until MAVLink2 signing is set up: anyone on an unsigned link may set parameters.
    With the checks switched off a stopped gate's passed slot arms the FC; the agent names the
    pinned parameter at once, so every attestation (and the operator's verify) fails."""
    pass_then(world)
    daemon = world.rig.daemon
    assert daemon is not None
    world.fc.set_param(name, value)  # as the attacker's unsigned PARAM_SET would
    if name != "SCR_ENABLE":
        attacker_command(world, SCRIPTING, STOP)  # at once, before the agent re-attests (SCR_ENABLE=0 stops itself)

    def named() -> list[str]:  # sealed in the attestation, whether or not a gate is left to take the verdict
        last = daemon.status.last
        return [] if last is None else [r.component for r in last.verdict.reasons if r.code is Code.PARAM_PINNED]

    deadline = time.monotonic() + 20
    while f"fc.param:{name}" not in named() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert named() == [f"fc.param:{name}"], named()
    world.rig.stop_agent()
    time.sleep(1.0)
    assert world.gcs.arm().accepted, "ArduPilot's behaviour: the stopped gate's last slot state holds"


def crc32_forgery(prefix: bytes, target: int) -> bytes:
    """Four bytes that make ``prefix + them`` have ArduPilot's CRC32 ``target`` (CRC32 is linear)."""
    from agent.mavlink.ftpwire import crc32_ardupilot

    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    by_top = {t >> 24: i for i, t in enumerate(table)}
    state, indices = target, []
    for _ in range(4):
        i = by_top[state >> 24]
        indices.append(i)
        state = ((state ^ table[i]) << 8) & 0xFFFFFFFF
    state, out = crc32_ardupilot(prefix), bytearray()
    for i in reversed(indices):
        b = (state ^ i) & 0xFF
        out.append(b)
        state = table[(state ^ b) & 0xFF] ^ (state >> 8)
    return bytes(out)


def test_a_swapped_gate_with_the_same_crc32_is_caught_by_its_sha256(world: World) -> None:
    """Item 5: the FC's CRC32 poll cannot see a swap that keeps the CRC32; reading the script back can."""
    from agent.mavlink.ftpwire import crc32_ardupilot

    world.rig.start_agent()
    daemon = world.rig.wait_verdict(passed=True)
    path = world.fc.scripts_dir / "flightseal_gate.lua"
    original = path.read_bytes()
    for pad in range(8):  # the forged bytes live in a Lua comment, so none may be a newline
        evil = original.replace(b"local PASS_LAPSE_MS = 3000", b"local PASS_LAPSE_MS = 9e9 ") + b"-- " + b" " * pad
        tail = crc32_forgery(evil, crc32_ardupilot(original))
        if b"\n" not in tail:
            break
    evil += tail
    assert crc32_ardupilot(evil) == crc32_ardupilot(original) and evil != original
    path.write_bytes(evil)
    world.rig.wait_verdict(passed=False, code="script-mismatch", timeout=20)
    assert any("SHA-256 differs" in t for t in daemon.status.transitions), daemon.status.transitions[-5:]


def test_a_stopped_gate_is_said_loudly_and_named_in_every_attestation(world: World) -> None:
    """Item 6: the agent hears "Scripting: stopped", audits it, and every attestation fails with
    posture-gate-stopped until the FC reboots; the gate no longer answering adds posture-gate-silent."""
    pass_then(world)
    daemon = world.rig.daemon
    assert daemon is not None
    attacker_command(world, SCRIPTING, STOP)

    def codes() -> list[Code]:
        last = daemon.status.last
        return [] if last is None else list(last.verdict.codes)

    deadline = time.monotonic() + 15
    while Code.POSTURE_GATE_STOPPED not in codes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Code.POSTURE_GATE_STOPPED in codes(), codes()
    deadline = time.monotonic() + 15  # the fail verdict goes unanswered: the gate is silent too
    while Code.POSTURE_GATE_SILENT not in codes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Code.POSTURE_GATE_SILENT in codes(), codes()
    audit = (world.rig.workdir / "state" / "audit.log").read_text()
    assert '"kind":"gate-unenforced"' in audit and "Scripting: stopped" in audit and "gate silent" in audit
    reboot(world)
    world.rig.wait_verdict(passed=True, timeout=30)  # a reboot starts the gate afresh: enforced again
