"""The agent's side of the arming-gate protocol (docs/adr/0005-gate-protocol.md, transport in 0012,
authentication in 0015).

A verdict travels as one TUNNEL message to the FC, where the Lua gate
(agent/gate/lua/flightseal_gate.lua) takes it only from our channel and ids, only with an HMAC-SHA256
under the airframe's gate key (agent/gate/key.py), only bound to the nonce the gate drew when it
loaded, and only with a sequence newer than any it took since; it answers with a TUNNEL ack it
authenticates the same way. A fail verdict carries the text the pilot reads
(``FlightSeal: param FS_THR_ENABLE``), so the gate needs no table of reason codes. A pass lapses on
the FC after a few seconds, so the agent repeats the current verdict (with a new sequence) well
within that time; if the agent stops, the gate blocks arming by itself.

The sequence is a pair (epoch, counter) of int32s compared in that order. The epoch is seconds
since 2025 at agent start, raised above the last one persisted (if a state file is given) and above
what a gate reports in a DENIED ack (bounded), so it grows across agent restarts without trusting
one source. The nonce makes an FC reboot or a scripting restart end every earlier verdict: the
first verdict after it comes back STALE with the new nonce, and the agent sends it again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from agent.mavlink.channel import channel_of
from attest.errors import FlightSealError, FormatError
from attest.models import Verdict
from hardware.files import read_bounded, write_atomic

GATE_SCRIPT_PATH = Path(__file__).parent / "lua" / "flightseal_gate.lua"
GATE_SCRIPT_MAX_BYTES = 64 * 1024

TUNNEL_TYPE = 0xF5E2  # FlightSeal gate verdicts and acks (private range; the challenge is 0xF5E1)
MAGIC = b"FSV3"  # verdict: magic kind nonce(8) epoch counter text-length text MAC(16)
ACK_MAGIC = b"FSA4"  # ack: magic result version flags foreign nonce(8) epoch counter gate-epoch MAC(16)
ACK_ARMED = 1  # flags: the vehicle was armed when the gate answered
NONCE_LEN = 8
MAC_LEN = 16
ACK_FORMAT = "<4sBBBH8siii"
ACK_LEN = struct.calcsize(ACK_FORMAT) + MAC_LEN
GATE_TEXT_MAX = 41  # ArduPilot keeps 42 bytes of aux auth text, NUL included
VERDICT_PASS = 1
VERDICT_FAIL = 2
EPOCH_BASE = 1735689600  # 2025-01-01T00:00:00Z
INT32_MAX = 2**31 - 1
MAX_EPOCH_AHEAD = 7 * 24 * 3600  # a gate epoch further ahead than this was not made by an agent's clock

ACCEPTED = mavlink2.MAV_RESULT_ACCEPTED
STALE = mavlink2.MAV_RESULT_TEMPORARILY_REJECTED  # made for an earlier load of the gate: the ack has its nonce
DENIED = mavlink2.MAV_RESULT_DENIED  # sequence not newer: ignored; the ack has the gate's epoch
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


def gate_mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 under the gate key, truncated to 16 bytes: what the gate computes in Lua."""
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_LEN]


def verdict_payload(kind: int, seq: Sequence, text: str, key: bytes, nonce: bytes = bytes(NONCE_LEN)) -> bytes:
    """The gate's TUNNEL payload (ADR 0015): magic, kind, the gate's nonce, epoch, counter, text, MAC."""
    raw = text.encode("ascii", "replace")
    data = MAGIC + struct.pack("<B8siiB", kind, nonce, seq.epoch, seq.counter, len(raw)) + raw
    return data + gate_mac(key, data)


def encode_verdict(verdict: Verdict, seq: Sequence, key: bytes, nonce: bytes = bytes(NONCE_LEN),
                   target_system: int = 1, target_component: int = 1) -> Any:
    """The TUNNEL message that carries ``verdict`` (pymavlink message; send with ``conn.mav.send``)."""
    text = gate_text(verdict)
    data = verdict_payload(VERDICT_PASS if text is None else VERDICT_FAIL, seq, text or "", key, nonce)
    return mavlink2.MAVLink_tunnel_message(target_system, target_component, TUNNEL_TYPE, len(data),
                                           list(data.ljust(128, b"\0")))


@dataclass(frozen=True)
class GateAck:
    """The gate's answer to one verdict, authenticated by the gate key."""

    sequence: Sequence  # the verdict it answers
    result: int
    gate_epoch: int  # the newest epoch the gate has taken since it loaded
    gate_version: int
    foreign: int  # verdicts with a wrong MAC the gate has seen since it loaded
    nonce: bytes  # the gate's nonce for this load
    armed: bool = False  # arming:is_armed() when the gate answered: authenticated, unlike a HEARTBEAT's bit


class ForgedAck(GateError):
    """A gate ack whose MAC the gate key did not make."""


def decode_ack(msg: Any, key: bytes) -> GateAck | None:
    """The gate ack in a TUNNEL message; None for any other TUNNEL; ForgedAck if its MAC is wrong."""
    if msg.get_type() != "TUNNEL" or msg.payload_type != TUNNEL_TYPE:
        return None
    n = int(msg.payload_length)
    data = bytes(msg.payload[:n])
    if n != ACK_LEN or not data.startswith(ACK_MAGIC):
        return None
    body, tag = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(tag, gate_mac(key, body)):
        raise ForgedAck("an ack in the gate's name whose MAC the gate key did not make")
    _, result, version, flags, foreign, nonce, epoch, counter, gate_epoch = struct.unpack(ACK_FORMAT, body)
    return GateAck(Sequence(epoch, counter), result, gate_epoch, version, foreign, nonce, bool(flags & ACK_ARMED))


class GateClient:
    """Sends verdicts to the gate over a pymavlink connection, waits for the ack, keeps a pass alive.

    ``conn`` is a ``mavutil`` connection whose source ids are the agent's (the gate checks them);
    ``key`` is the airframe's gate key. While waiting for an ack, other messages are handed to
    ``on_message`` so a caller sharing the connection loses nothing. ``forged_acks`` counts acks in
    the gate's name with a wrong MAC, ``foreign`` is what the gate last reported of verdicts with a
    wrong MAC: either means something else on the channel speaks for the agent or the gate.
    """

    def __init__(self, conn: Any, key: bytes, *, sequence: SequenceSource | None = None, target_system: int = 1,
                 target_component: int = 1, ack_timeout_s: float = 1.0, keepalive_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_message: Callable[[Any], None] | None = None) -> None:
        self._conn = channel_of(conn)
        self._key = key
        self.sequence = sequence if sequence is not None else SequenceSource()
        self._target = (target_system, target_component)
        self._ack_timeout = ack_timeout_s
        self._keepalive = keepalive_s
        self._clock = clock
        self._on_message = on_message
        self._verdict: Verdict | None = None
        self._last_sent = float("-inf")
        self.nonce = bytes(NONCE_LEN)  # the gate's, learnt from its first STALE ack
        self.last_ack: GateAck | None = None
        self.last_ack_at = float("-inf")  # when the last authenticated ack arrived (clock)
        self.forged_acks = 0
        self.foreign = 0
        self._unanswered: dict[Sequence, float] = {}  # sent by send_nowait, not acked yet

    @property
    def verdict(self) -> Verdict | None:
        """The verdict being kept alive."""
        return self._verdict

    def send(self, verdict: Verdict) -> GateAck:
        """Deliver ``verdict`` and return the gate's ACCEPTED ack, or raise GateError."""
        if not self._conn.mavlink20():
            raise GateError("the link speaks MAVLink1 and the gate takes MAVLink2 only: set MAVLINK20=1 before "
                            "pymavlink is imported, or wait for the FC's first MAVLink2 frame")
        self._verdict = verdict
        for _ in range(4):
            seq = self.sequence.next()
            self._conn.send(encode_verdict(verdict, seq, self._key, self.nonce, *self._target))
            self._last_sent = self._clock()
            ack = self._wait_ack(seq)
            self.foreign = ack.foreign
            self.nonce = ack.nonce
            if ack.result == STALE:
                continue  # the gate loaded since our last verdict: again, with its nonce
            if ack.result == DENIED:
                self.sequence.resync(ack.gate_epoch)
                continue
            self.last_ack, self.last_ack_at = ack, self._clock()
            if ack.result != ACCEPTED:
                raise GateError(f"the gate refused verdict {seq.epoch}.{seq.counter} as malformed "
                                f"(MAV_RESULT {ack.result}); agent and gate script versions differ?")
            return ack
        raise GateError("the gate keeps refusing the verdict as old or stale (is it restarting?); reboot the FC "
                        "to reset it")

    def send_nowait(self) -> bool:
        """Send the current verdict again, if due, without waiting for the ack (``observe`` takes it
        later): for a pass in progress, whose receiving must not be interrupted. True if sent."""
        if self._verdict is None or self._clock() - self._last_sent < self._keepalive:
            return False
        seq = self.sequence.next()
        self._conn.send(encode_verdict(self._verdict, seq, self._key, self.nonce, *self._target))
        self._last_sent = self._clock()
        self._unanswered[seq] = self._last_sent
        while len(self._unanswered) > 16:
            self._unanswered.pop(next(iter(self._unanswered)))
        return True

    def observe(self, msg: Any) -> GateAck | None:
        """An ack read by someone else (during a pass): taken if it answers a verdict sent with
        ``send_nowait``; a STALE one teaches the nonce, a DENIED one the epoch."""
        ack = self._ack_in(msg)
        if ack is None or self._unanswered.pop(ack.sequence, None) is None:
            return None
        self.foreign = ack.foreign
        self.nonce = ack.nonce
        if ack.result == DENIED:
            self.sequence.resync(ack.gate_epoch)
        elif ack.result == STALE:
            self._last_sent = float("-inf")  # again at the next tick, with the nonce
        elif ack.result == ACCEPTED:
            self.last_ack, self.last_ack_at = ack, self._clock()
        return ack

    def keep_alive(self) -> GateAck | None:
        """Send the current verdict again if ``keepalive_s`` has passed since the last send."""
        if self._verdict is None or self._clock() - self._last_sent < self._keepalive:
            return None
        return self.send(self._verdict)

    def _wait_ack(self, seq: Sequence) -> GateAck:
        deadline = self._clock() + self._ack_timeout
        while (remaining := deadline - self._clock()) > 0:
            msg = self._conn.receive(min(remaining, 0.1))
            if msg is None:
                continue
            ack = self._match(msg, seq)
            if ack is not None:
                return ack
            if self._on_message is not None:
                self._on_message(msg)
        raise GateTimeout(f"no ack from the arming gate within {self._ack_timeout:.1f} s for verdict "
                          f"{seq.epoch}.{seq.counter}: is the gate installed and running (`flightseal gate install`, "
                          "SCR_ENABLE=1), does it hold this agent's gate key (the FC says 'FlightSeal: forged verdict "
                          "seen' if not), and is the agent on the FC port the gate listens to?")

    def _match(self, msg: Any, seq: Sequence) -> GateAck | None:
        ack = self._ack_in(msg)
        if ack is None or ack.sequence != seq:
            return None  # not an ack, or about an older verdict of ours
        return ack

    def _ack_in(self, msg: Any) -> GateAck | None:
        """The gate's authenticated ack in ``msg``, if it is one; a forged one is counted, never taken."""
        if msg.get_type() != "TUNNEL" or (msg.get_srcSystem(), msg.get_srcComponent()) != self._target:
            return None
        try:
            return decode_ack(msg, self._key)
        except ForgedAck:
            self.forged_acks += 1
            return None
