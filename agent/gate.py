"""The agent's side of the arming-gate protocol (docs/adr/0005-gate-protocol.md, transport in 0012).

A verdict travels as one TUNNEL message to the FC, where the Lua gate
(agent/lua/flightseal_gate.lua) takes it only from our channel and ids and only with a sequence
newer than any it took since the FC booted, and answers with a COMMAND_ACK. A fail verdict
carries the text the pilot reads (``FlightSeal: param FS_THR_ENABLE``), so the gate needs no
table of reason codes. A pass lapses on the
FC after a few seconds, so the agent repeats the current verdict (with a new sequence) well within
that time; if the agent stops, the gate blocks arming by itself.

The sequence is a pair (epoch, counter) of int32s compared in that order. The epoch is seconds
since 2025 at agent start, raised above the last one persisted (if a state file is given) and above
what a gate reports in a DENIED ack, so it grows across agent restarts without trusting one source.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from agent.files import read_bounded, write_atomic
from attest.errors import FlightSealError, FormatError
from attest.models import Verdict

GATE_SCRIPT_PATH = Path(__file__).parent / "lua" / "flightseal_gate.lua"
GATE_SCRIPT_MAX_BYTES = 64 * 1024

GATE_COMMAND = mavlink2.MAV_CMD_USER_1  # 31010: the command the gate's COMMAND_ACKs are about
TUNNEL_TYPE = 0xF5E2  # FlightSeal gate verdict (private range; the challenge is 0xF5E1)
MAGIC = b"FSV2"
GATE_TEXT_MAX = 41  # ArduPilot keeps 42 bytes of aux auth text, NUL included
VERDICT_PASS = 1
VERDICT_FAIL = 2
EPOCH_BASE = 1735689600  # 2025-01-01T00:00:00Z
INT32_MAX = 2**31 - 1
MAX_EPOCH_AHEAD = 7 * 24 * 3600  # a gate epoch further ahead than this was not made by an agent's clock

ACCEPTED = mavlink2.MAV_RESULT_ACCEPTED
DENIED = mavlink2.MAV_RESULT_DENIED  # sequence not newer: ignored; result_param2 = the gate's epoch
FAILED = mavlink2.MAV_RESULT_FAILED  # malformed verdict from us: the gate blocks


class GateError(FlightSealError):
    """The gate did not take a verdict."""


class GateTimeout(GateError):
    """No acknowledgement from the gate in time."""


def gate_text(verdict: Verdict) -> str | None:
    """What the gate shows after ``PreArm: `` for this verdict (None: it allows arming)."""
    return None if verdict.passed else verdict.pilot_text[:GATE_TEXT_MAX]


def gate_script() -> bytes:
    """The gate script as shipped: the bytes to install on the FC and to approve in the manifest."""
    return read_bounded(GATE_SCRIPT_PATH, "gate script", GATE_SCRIPT_MAX_BYTES)


def gate_version(source: bytes | None = None) -> int:
    """The ``GATE_VERSION`` constant of the gate script, which the gate also reports in its acks."""
    text = (gate_script() if source is None else source).decode("utf-8", "replace")
    match = re.search(r"^local GATE_VERSION = (\d+)\b", text, re.MULTILINE)
    if match is None:
        raise FormatError("gate script", "has no 'local GATE_VERSION = <n>' line")
    return int(match.group(1))


@dataclass(frozen=True, order=True)
class Sequence:
    """A verdict's sequence number; the gate takes only strictly greater ones (tuple order)."""

    epoch: int
    counter: int


class SequenceSource:
    """Hands out ever-increasing sequences, across agent restarts too.

    Without a state file the epoch is the wall clock in seconds since 2025; with one, it is also
    above the last epoch written there. A gate that remembers a larger epoch says so in a DENIED
    ack and ``resync`` moves above it.
    """

    def __init__(self, state_file: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self._file = state_file
        self._clock = clock
        epoch = max(int(clock()) - EPOCH_BASE, 1)
        if state_file is not None and state_file.exists():
            raw = read_bounded(state_file, "gate sequence state", 64).decode("ascii", "replace").strip()
            if not raw.isdigit():
                raise FormatError(f"gate sequence state {state_file}", "is not a decimal number; delete it to reset")
            epoch = max(epoch, int(raw) + 1)
        self.epoch = 0
        self.counter = 0
        self._set_epoch(epoch)

    def _set_epoch(self, epoch: int) -> None:
        if epoch > INT32_MAX:
            raise GateError(f"gate sequence epoch {epoch} exceeds int32; reboot the FC to reset the gate")
        self.epoch = epoch
        self.counter = 0
        if self._file is not None:
            write_atomic(self._file, f"{epoch}\n".encode())

    def next(self) -> Sequence:
        if self.counter >= INT32_MAX:
            self._set_epoch(self.epoch + 1)
        self.counter += 1
        return Sequence(self.epoch, self.counter)

    def resync(self, gate_epoch: int) -> None:
        """The gate has taken a verdict of ``gate_epoch``: continue above it, within a bound.

        The epoch comes from the link, so anything on the agent's channel could send it (a forged
        DENIED ack, or a forged verdict the gate took). Followed without a bound and persisted, one
        such frame with INT32_MAX would lock the agent out for good; so an epoch more than
        ``MAX_EPOCH_AHEAD`` beyond this agent's own (and its clock's) is refused, and never written.
        """
        if gate_epoch < self.epoch:
            return
        own = max(self.epoch, int(self._clock()) - EPOCH_BASE)
        if gate_epoch > own + MAX_EPOCH_AHEAD:
            raise GateError(f"the gate reports verdict epoch {gate_epoch}, far ahead of this agent's {own}: something "
                            "else sends verdicts or acks with the agent's ids on its channel; not following it. Find "
                            "the sender (a router's client?) and reboot the FC to reset the gate")
        self._set_epoch(gate_epoch + 1)


def verdict_payload(kind: int, seq: Sequence, text: str) -> bytes:
    """The gate's TUNNEL payload: magic, kind, epoch, counter, text length, text (ADR 0012)."""
    raw = text.encode("ascii", "replace")
    return MAGIC + struct.pack("<BiiB", kind, seq.epoch, seq.counter, len(raw)) + raw


def encode_verdict(verdict: Verdict, seq: Sequence, target_system: int = 1,
                   target_component: int = 1) -> Any:
    """The TUNNEL message that carries ``verdict`` (pymavlink message; send with ``conn.mav.send``)."""
    text = gate_text(verdict)
    data = verdict_payload(VERDICT_PASS if text is None else VERDICT_FAIL, seq, text or "")
    return mavlink2.MAVLink_tunnel_message(target_system, target_component, TUNNEL_TYPE, len(data),
                                           list(data.ljust(128, b"\0")))


@dataclass(frozen=True)
class GateAck:
    """The gate's answer to one verdict."""

    sequence: Sequence
    result: int
    value: int  # result_param2: the counter echoed, or the gate's epoch when DENIED
    gate_version: int  # progress


class GateClient:
    """Sends verdicts to the gate over a pymavlink connection, waits for the ack, keeps a pass alive.

    ``conn`` is a ``mavutil`` connection whose source ids are the agent's (the gate checks them).
    While waiting for an ack, other messages are handed to ``on_message`` so a caller sharing the
    connection loses nothing.
    """

    def __init__(self, conn: Any, *, sequence: SequenceSource | None = None, target_system: int = 1,
                 target_component: int = 1, ack_timeout_s: float = 1.0, keepalive_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_message: Callable[[Any], None] | None = None) -> None:
        self._conn = conn
        self.sequence = sequence if sequence is not None else SequenceSource()
        self._target = (target_system, target_component)
        self._ack_timeout = ack_timeout_s
        self._keepalive = keepalive_s
        self._clock = clock
        self._on_message = on_message
        self._verdict: Verdict | None = None
        self._last_sent = float("-inf")
        self.last_ack: GateAck | None = None

    @property
    def verdict(self) -> Verdict | None:
        """The verdict being kept alive."""
        return self._verdict

    def send(self, verdict: Verdict) -> GateAck:
        """Deliver ``verdict`` and return the gate's ACCEPTED ack, or raise GateError."""
        if hasattr(self._conn, "mavlink20") and not self._conn.mavlink20():
            raise GateError("the link speaks MAVLink1 and the gate takes MAVLink2 only: set MAVLINK20=1 before "
                            "pymavlink is imported, or wait for the FC's first MAVLink2 frame")
        self._verdict = verdict
        for _ in range(3):
            seq = self.sequence.next()
            self._conn.mav.send(encode_verdict(verdict, seq, *self._target))
            self._last_sent = self._clock()
            ack = self._wait_ack(seq)
            if ack.result == DENIED:
                self.sequence.resync(ack.value)
                continue
            self.last_ack = ack
            if ack.result != ACCEPTED:
                raise GateError(f"the gate refused verdict {seq.epoch}.{seq.counter} as malformed "
                                f"(MAV_RESULT {ack.result}); agent and gate script versions differ?")
            return ack
        raise GateError("the gate keeps refusing the verdict sequence as old; reboot the FC to reset it")

    def keep_alive(self) -> GateAck | None:
        """Send the current verdict again if ``keepalive_s`` has passed since the last send."""
        if self._verdict is None or self._clock() - self._last_sent < self._keepalive:
            return None
        return self.send(self._verdict)

    def _wait_ack(self, seq: Sequence) -> GateAck:
        deadline = self._clock() + self._ack_timeout
        while (remaining := deadline - self._clock()) > 0:
            msg = self._conn.recv_match(blocking=True, timeout=min(remaining, 0.1))
            if msg is None:
                continue
            ack = self._match(msg, seq)
            if ack is not None:
                return ack
            if self._on_message is not None:
                self._on_message(msg)
        raise GateTimeout(f"no ack from the arming gate within {self._ack_timeout:.1f} s for verdict "
                          f"{seq.epoch}.{seq.counter}: is the gate installed and running (`flightseal gate install`, "
                          "SCR_ENABLE=1) and the agent on the FC port the gate listens to?")

    def _match(self, msg: Any, seq: Sequence) -> GateAck | None:
        if msg.get_type() != "COMMAND_ACK" or msg.command != GATE_COMMAND:
            return None
        if (msg.get_srcSystem(), msg.get_srcComponent()) != self._target:
            return None
        if msg.result == DENIED:
            if msg.result_param2 < seq.epoch:
                return None  # about an older verdict of ours
        elif msg.result_param2 != seq.counter:
            return None
        return GateAck(seq, int(msg.result), int(msg.result_param2), int(msg.progress))
