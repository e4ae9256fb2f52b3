"""The PX4 gate: the agent is PX4's external arm authorizer (ADR 0024).

With ``COM_ARM_AUTH_REQ=1``, PX4 asks the system in ``COM_ARM_AUTH_ID`` before every arming with
COMMAND_LONG MAV_CMD_ARM_AUTHORIZATION_REQUEST (3001) and waits ``COM_ARM_AUTH_TO`` seconds for a
COMMAND_ACK (src/modules/commander/Arming/ArmAuthorization/ArmAuthorization.cpp, v1.16.0). No
answer is a refusal ("Arm auth: No response"): the gate fails closed when the agent is gone.

What PX4 takes, and so what this module sends:

* an ack with command 3001 and ``target_system`` = PX4's own system id, whose arrival time is
  *strictly later* than the request's. SITL's clock moves in 4 ms steps, so an answer within the
  same step is ignored: we answer no sooner than :data:`MIN_DELAY_S` after the request arrived;
* ACCEPTED with the validity in seconds in ``result_param2`` (PX4 then arms without asking again
  for that long: we give no more than the keep-alive window of a verdict, 1–3 s);
* TEMPORARILY_REJECTED while a pass is running ("re-attesting"), DENIED with
  ``progress`` = MAV_ARM_AUTH_DENIED_REASON_GENERIC otherwise; PX4 shows "Arm auth: Denied", and
  the reason in words goes out beside it as our own STATUSTEXT ("FlightSeal: …").

What it never does:

* answer a request older than the FC's timeout (PX4 is no longer waiting for it; a late
  ACCEPTED could be taken as the answer to a newer request made under another verdict);
* answer a request from anything but the FC (a forged request would make us speak on demand);
* answer when the agent is not running its loop: answers go out only from the daemon's thread,
  in ``keep_alive`` (the watch loop) and ``send_nowait`` (a pass's tick); if that thread stops or
  hangs, PX4 hears nothing and refuses ("Arm auth: No response"), as it does with the agent killed.

PX4 v1.16 does not check *who* sends the ack (mavlink_receiver.cpp ``handle_message_command_ack``
checks only the target). A forged ACCEPTED that reaches PX4 while it waits, before ours, arms it.
Measured on PX4 v1.16.0 SITL: a ground station with system id 77 sending ACCEPTED acks on the GCS
link armed the vehicle while this authorizer answered DENIED. We cannot stop that from the
companion; we see it. The FC's HEARTBEAT turning armed with no ACCEPTED of ours in the window
before it (PX4's timeout plus the validity we give) is counted in ``foreign`` (and in
``unauthorized_arms``), as is PX4's "Arm auth: Authorized for the next N seconds" where that text
reaches us without an ACCEPTED of ours just before; every attestation then fails with
``posture-gate-forgery`` (as for the Lua gate) until the FC reboots. An ack for 3001 in another
system's name that reaches our link is counted in ``forged_acks``. The fix belongs in PX4
(take an arm-authorization ack only from ``COM_ARM_AUTH_ID``); until then, keep untrusted radios
off links that reach PX4 unfiltered (ADR 0024).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.gate.client import gate_text
from agent.mavlink.channel import channel_of
from agent.mavlink.ids import (
    MAV_ARM_AUTH_DENIED_REASON_GENERIC,
    MAV_CMD_ARM_AUTHORIZATION_REQUEST,
    MAV_MODE_FLAG_SAFETY_ARMED,
    MAV_RESULT_ACCEPTED,
    MAV_RESULT_DENIED,
    MAV_RESULT_TEMPORARILY_REJECTED,
)
from attest.models import Code, Verdict

MIN_DELAY_S = 0.006  # PX4 takes an ack only if its timestamp is later than the request's; SITL steps 4 ms
AUTH_TIMEOUT_S = 1.0  # COM_ARM_AUTH_TO as `gate install` sets it
MAX_VALIDITY_S = 3  # a verdict lapses at the Lua gate after 3 s without a keep-alive: the same bound here
MAX_PENDING = 8
AUTHORIZED_TEXT = re.compile(r"Arm auth: Authorized for the next (-?\d+) seconds")
SEVERITY_WARNING = 4


@dataclass
class Request:
    """One MAV_CMD_ARM_AUTHORIZATION_REQUEST as it arrived (``at`` on the authorizer's clock)."""

    at: float
    src: tuple[int, int]


@dataclass(frozen=True)
class Answer:
    """What we answered to one request: the MAV_RESULT, the validity given, and when."""

    result: int
    validity_s: int
    at: float
    text: str


def _is_request(msg: Any) -> bool:
    return bool(msg.get_type() == "COMMAND_LONG" and int(msg.command) == MAV_CMD_ARM_AUTHORIZATION_REQUEST)


class ArmAuthorizer:
    """Answers PX4's arm authorization requests from the verdict the daemon keeps alive.

    The same shape the daemon drives the Lua gate's :class:`~agent.gate.client.GateClient` with:
    ``send(verdict)`` sets the verdict in force, ``keep_alive``/``send_nowait`` answer the
    requests that are due, ``observe(msg)`` sees every received message. ``last_ack`` is always
    None: PX4 tells us nothing authenticated about arming, so the daemon goes by heartbeats.

    ``own`` is the agent's (system, component) (the system is what ``COM_ARM_AUTH_ID`` holds),
    ``fc`` PX4's; ``timeout_s`` is PX4's ``COM_ARM_AUTH_TO``; ``validity_s`` what an ACCEPTED gives;
    ``armed`` what the FC's last HEARTBEAT said when the link opened (an arming after it is judged).
    """

    def __init__(self, conn: Any, *, own: tuple[int, int], fc: tuple[int, int] = (1, 1),
                 timeout_s: float = AUTH_TIMEOUT_S, validity_s: int = 1, armed: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= validity_s <= MAX_VALIDITY_S:
            raise ValueError(f"validity_s must be 1..{MAX_VALIDITY_S} s (the verdict's keep-alive window)")
        self._conn = channel_of(conn)
        self._own = own
        self._fc = fc
        self._timeout = timeout_s
        self._validity = validity_s
        self._clock = clock
        self._verdict: Verdict | None = None
        self._pending: list[Request] = []
        self.answers: list[Answer] = []  # the latest ones, for status and tests
        self.last_accept_at = float("-inf")
        self.requests = 0
        self.stale = 0  # requests dropped unanswered because they were older than the FC's timeout
        self.foreign_requests = 0  # requests from anything but the FC, ignored
        self.forged_acks = 0  # acks for 3001 in another system's name seen on our link
        self.foreign = 0  # authorizations PX4 announced or acted on that we did not give
        self.unauthorized_arms = 0  # the FC armed without an ACCEPTED of ours before it
        # from the FC's HEARTBEATs (``armed``: the one the link opened with); None before the first
        self._fc_armed: bool | None = armed
        self.last_ack: Any = None
        self.last_ack_at = float("-inf")

    # ---- the daemon's side
    @property
    def verdict(self) -> Verdict | None:
        """The verdict requests are answered from."""
        return self._verdict

    def send(self, verdict: Verdict) -> None:
        """Answer from ``verdict`` from now on (and answer what is due)."""
        self._verdict = verdict
        self._answer_due()

    def keep_alive(self) -> None:
        """The daemon's watch loop: answer what is due."""
        self._answer_due()

    def send_nowait(self) -> bool:
        """A pass is receiving: answer what is due from the verdict in force (the daemon put it on
        hold as "re-attesting" before the pass). True if anything was answered."""
        before = len(self.answers)
        self._answer_due()
        return len(self.answers) != before

    # ---- what arrives
    def observe(self, msg: Any) -> None:
        """Every message the link receives: requests are queued, ack forgeries and PX4's word on an
        authorization we did not give are counted."""
        mtype = msg.get_type()
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        if mtype == "COMMAND_LONG" and _is_request(msg):
            if src != self._fc or int(msg.target_system) not in (self._own[0], 0):
                self.foreign_requests += int(src != self._fc)
                return
            self.requests += 1
            self._pending.append(Request(self._clock(), src))
            del self._pending[:-MAX_PENDING]
        elif mtype == "COMMAND_ACK" and int(msg.command) == MAV_CMD_ARM_AUTHORIZATION_REQUEST \
                and src not in (self._own, self._fc):
            # not the FC's: with the agent on the FC's own system id (a companion's usual setup), PX4 addresses
            # the request to itself too, and its commander acks it (SITL, instance 0) to nobody in particular
            self.forged_acks += 1
        elif mtype == "HEARTBEAT" and src == self._fc:
            armed = bool(int(msg.base_mode) & MAV_MODE_FLAG_SAFETY_ARMED)
            if armed and self._fc_armed is False and not self._authorized_lately():
                self.unauthorized_arms += 1
                self.foreign += 1
            self._fc_armed = armed
        elif mtype == "STATUSTEXT" and src == self._fc:
            found = AUTHORIZED_TEXT.search(str(msg.text))
            if found is not None and not self._ours(int(found.group(1))):
                self.foreign += 1

    def _authorized_lately(self) -> bool:
        """Whether an ACCEPTED of ours can explain an arming now: PX4 arms within its timeout of
        asking, or within the validity we gave (plus a second for the heartbeat to tell us)."""
        return self._clock() - self.last_accept_at <= self._timeout + self._validity + 1.0

    def _ours(self, validity: int) -> bool:
        """Whether PX4's "Authorized for the next N seconds" follows an ACCEPTED of ours."""
        recent = self._clock() - self.last_accept_at <= self._timeout + 1.0
        return recent and validity == self._validity

    # ---- answering
    def _answer_due(self) -> None:
        now = self._clock()
        keep: list[Request] = []
        for req in self._pending:
            age = now - req.at
            if age < MIN_DELAY_S:
                keep.append(req)
            elif age >= self._timeout:
                self.stale += 1  # PX4 has given up on it ("No response"): never answered late
            else:
                self._answer(req, now)
        self._pending = keep

    def _answer(self, req: Request, now: float) -> None:
        verdict = self._verdict
        if verdict is not None and verdict.passed:
            result, validity, text = MAV_RESULT_ACCEPTED, self._validity, ""
            self.last_accept_at = now
        else:
            words = gate_text(verdict) if verdict is not None else None
            text = words or "FlightSeal: no verdict in force"
            reattesting = verdict is not None and any(r.code is Code.REATTESTING for r in verdict.reasons)
            result = MAV_RESULT_TEMPORARILY_REJECTED if reattesting else MAV_RESULT_DENIED
            validity = 0
        progress = 0 if result == MAV_RESULT_ACCEPTED else MAV_ARM_AUTH_DENIED_REASON_GENERIC
        mav = self._mav()
        self._conn.send(mav.command_ack_encode(MAV_CMD_ARM_AUTHORIZATION_REQUEST, result, progress, validity,
                                               req.src[0], req.src[1]))
        if text:
            self._conn.send(mav.statustext_encode(SEVERITY_WARNING, text[:50].encode()))
        self.answers.append(Answer(result, validity, now, text))
        del self.answers[:-16]

    def _mav(self) -> Any:
        mav = getattr(self._conn, "mav", None)
        if mav is None:
            mav = self._conn.conn.mav  # type: ignore[attr-defined]  # a RawChannel
        return mav
