"""The agent's MAVLink link to the flight controller.

The agent is a MAVLink component of its own: by default system 1 (the vehicle's: ArduPilot
accepts packets from its own system id, "e.g. mavlink-connected companion computers"),
component 191 (MAV_COMP_ID_ONBOARD_COMPUTER). It announces itself with a 1 Hz HEARTBEAT of
type 18 (ONBOARD_CONTROLLER), autopilot 8 (INVALID), as the companion in the SITL captures did;
ArduPilot sends STATUSTEXT only to links it has heard from, so the first heartbeat goes out as
soon as the FC's is seen.

Every wait is bounded: opening waits for the FC's HEARTBEAT at most ``heartbeat_timeout``; a
TCP peer closing the connection (SITL re-executes itself on reboot) raises :class:`LinkLost`,
and :meth:`Link.reconnect` retries within a deadline. With a signing key, outgoing packets are
signed (MAVLink2) and unsigned incoming packets are dropped, but for HEARTBEATs (so an FC that
stopped signing is seen: the link posture). Heartbeats are sent from whichever
thread is receiving (:meth:`Link.recv` and :meth:`Link.poll`), so the link needs no thread of
its own; sends are serialised by a lock so a daemon may add threads.

Every message received is also noted in :attr:`Link.heard` (who is on the bus), which the
components collector reads.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.mavlink.ids import (
    MAV_AUTOPILOT_INVALID,
    MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN,
    MAV_CMD_REQUEST_MESSAGE,
    MAV_MODE_FLAG_SAFETY_ARMED,
    MAV_RESULT_ACCEPTED,
    MAV_STATE_ACTIVE,
    MAV_STATE_BOOT,
    MAV_TYPE_ADSB,
    MAV_TYPE_CAMERA,
    MAV_TYPE_GCS,
    MAV_TYPE_GIMBAL,
    MAV_TYPE_ONBOARD_CONTROLLER,
    MSG_HEARTBEAT,
)
from attest.errors import FlightSealError
from attest.limits import LIMITS

os.environ.setdefault("MAVLINK20", "1")

MAX_COMPONENTS = LIMITS.max_components
MAX_TYPES_PER_COMPONENT = LIMITS.max_types_per_component
_NON_VEHICLE_TYPES = {MAV_TYPE_GCS, MAV_TYPE_ONBOARD_CONTROLLER, MAV_TYPE_GIMBAL, MAV_TYPE_ADSB, MAV_TYPE_CAMERA}


GATE_FORGED_TEXT = "FlightSeal: forged verdict seen"  # the gate's words (agent/gate/lua/flightseal_gate.lua)


HEARTBEAT_ID = MSG_HEARTBEAT


class LinkError(FlightSealError):
    """The MAVLink link could not be opened or used."""


class FcSilent(LinkError):
    """No HEARTBEAT from the flight controller within the bounded wait."""


class LinkLost(LinkError):
    """The connection to the flight controller closed (cable, reboot)."""



@dataclass(frozen=True)
class LinkConfig:
    """How to reach the FC, and who the agent is on the link. The one home of the link's defaults:
    the agent's ``[mavlink]`` section and the CLI options take theirs from these fields."""

    url: str
    system_id: int = 1
    component_id: int = 191
    fc_system_id: int | None = 1  # None: the first autopilot heartbeat decides
    fc_component_id: int | None = 1
    heartbeat_timeout: float = 10.0
    heartbeat_period: float = 1.0
    signing_key: bytes | None = None
    signing_link_id: int = 1
    accept_unsigned: bool = False  # with a key: still accept unsigned packets from the FC
    connect_timeout: float = 5.0  # TCP: keep trying to connect this long


def link_config(mavlink: Any, signing_key: bytes | None = None) -> LinkConfig:
    """The daemon's :class:`LinkConfig`, from the agent's ``[mavlink]`` config section
    (``agent.config.MavlinkConfig``): the one place a config section becomes link settings."""
    return LinkConfig(url=mavlink.url, system_id=mavlink.system_id, component_id=mavlink.component_id,
                      fc_system_id=mavlink.fc_system_id, fc_component_id=mavlink.fc_component_id,
                      heartbeat_timeout=mavlink.heartbeat_timeout_s, signing_key=signing_key)


@dataclass(frozen=True)
class Endpoint:
    """A parsed connection string."""

    kind: str  # serial, tcp, udpin, udpout
    device: str  # what pymavlink's mavlink_connection takes
    baud: int = 115200


_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-]+:\d{1,5}$")


def parse_url(url: str) -> Endpoint:
    """Check a connection string and say how to fix it when it is wrong."""
    text = url.strip()
    for kind in ("tcp", "udpin", "udpout"):
        if text.startswith(kind + ":"):
            rest = text[len(kind) + 1:]
            if not _HOST_PORT.match(rest) or not 0 < int(rest.rsplit(":", 1)[1]) < 65536:
                raise LinkError(f"MAVLink URL {url!r}: expected {kind}:HOST:PORT, e.g. {kind}:127.0.0.1:5762")
            return Endpoint(kind, f"{kind}:{rest}")
    if text.startswith("/dev/") or text.startswith("COM"):
        device, _, baud = text.partition(",")
        if baud and not baud.isdigit():
            raise LinkError(f"MAVLink URL {url!r}: baud rate must be a number, e.g. /dev/ttyAMA0,921600")
        return Endpoint("serial", device, int(baud) if baud else 115200)
    raise LinkError(f"MAVLink URL {url!r}: use /dev/ttyX,BAUD, tcp:HOST:PORT, udpin:HOST:PORT or udpout:HOST:PORT")


def heartbeat_armed(hb: Any) -> bool:
    """The armed bit of a HEARTBEAT (what anyone on an unsigned link can send: the daemon prefers the
    gate's authenticated word, ADR 0015)."""
    return hb is not None and bool(int(hb.base_mode) & MAV_MODE_FLAG_SAFETY_ARMED)


def _noise(msg: Any) -> bool:
    mtype = str(msg.get_type())
    return mtype == "BAD_DATA" or mtype.startswith("UNKNOWN_")


@dataclass
class HeardComponent:
    """What one (system, component) has been heard sending."""

    system: int
    component: int
    first_seen: float
    last_seen: float
    messages: int = 0
    heartbeat: Any = None
    autopilot_version: Any = None
    types: set[str] = field(default_factory=set)


class Link:
    """An open link to the FC; use as a context manager or call :meth:`close`."""

    def __init__(self, config: LinkConfig, endpoint: Endpoint) -> None:
        self.config = config
        self.endpoint = endpoint
        self.conn: Any = None
        self.fc: tuple[int, int] = (config.fc_system_id or 0, config.fc_component_id or 0)
        self.fc_heartbeat: Any = None
        self.scripting_stopped = False  # the FC said "Scripting: stopped" (MAV_CMD_SCRIPTING, SCR_ENABLE=0)
        self.gate_forgeries = 0  # verdicts or acks in the agent's or the gate's name not made with the gate key
        self.gate_answers: bool | None = None  # whether the gate acked the agent's last verdict (None: none sent)
        self.heard: dict[tuple[int, int], HeardComponent] = {}
        self.opened_at = 0.0
        self.listeners: list[Callable[[Any], None]] = []
        self.tick_hooks: list[Callable[[], None]] = []  # run by whoever receives (e.g. the gate keep-alive)
        self._send_lock = threading.Lock()
        self._next_heartbeat = 0.0
        self._lost = False

    # ---- opening and closing
    @classmethod
    def open(cls, config: LinkConfig) -> Link:
        """Connect to the FC and wait (bounded) for its first heartbeat.

        Raises:
            LinkError: the connection string is malformed or the port cannot be opened.
            FcSilent: no autopilot heartbeat within ``config.heartbeat_timeout``."""
        link = cls(config, parse_url(config.url))
        link._connect(time.monotonic() + config.connect_timeout)
        try:
            link.wait_fc_heartbeat(config.heartbeat_timeout)
        except BaseException:
            link.close()
            raise
        return link

    def _connect(self, deadline: float) -> None:
        from pymavlink import mavutil

        ep = self.endpoint
        last: Exception | None = None
        while True:
            try:
                if ep.kind == "serial":
                    conn = mavutil.mavlink_connection(ep.device, baud=ep.baud, source_system=self.config.system_id,
                                                      source_component=self.config.component_id,
                                                      dialect="ardupilotmega", autoreconnect=False)
                else:
                    conn = mavutil.mavlink_connection(ep.device, source_system=self.config.system_id,
                                                      source_component=self.config.component_id,
                                                      dialect="ardupilotmega", autoreconnect=False, retries=0)
                break
            except Exception as exc:  # pymavlink raises bare OSError / SerialException / ValueError
                last = exc
                if ep.kind != "tcp" or time.monotonic() >= deadline:
                    raise LinkError(f"cannot open MAVLink link {self.config.url}: {exc}") from None
                time.sleep(0.1)
        del last
        conn.handle_eof = self._on_eof  # pymavlink would print and carry on reading nothing
        conn.handle_disconnect = self._on_eof
        if self.config.signing_key is not None:
            # Unsigned HEARTBEATs are let through (and only those): they carry no data the agent trusts, and
            # seeing one says the FC stopped signing, which the posture must report (ADR 0014)
            allow = (lambda _mav, _msgid: True) if self.config.accept_unsigned else \
                (lambda _mav, msgid: msgid == HEARTBEAT_ID)
            conn.setup_signing(self.config.signing_key, sign_outgoing=True, allow_unsigned_callback=allow,
                               link_id=self.config.signing_link_id)
        self.conn = conn
        self._lost = False
        self.opened_at = time.monotonic()
        self._next_heartbeat = 0.0

    def _on_eof(self) -> None:
        self._lost = True

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # a half-dead socket must not stop the close
                self.conn.close()
            self.conn = None

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reconnect(self, timeout: float = 15.0) -> None:
        """Close and reopen (e.g. after the FC rebooted), then wait for its heartbeat; bounded."""
        self.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._connect(deadline)
                self.wait_fc_heartbeat(max(0.1, deadline - time.monotonic()))
                return
            except LinkLost:
                self.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def reboot_fc(self, timeout: float = 20.0) -> None:
        """Reboot the FC (MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN) and come back on the new boot.

        ArduPilot acknowledges, then closes the connection about 200 ms later (SITL re-executes
        itself); reconnecting before that would land on the old boot and be cut. So: ack, wait
        for the close (a serial link never closes: then a fixed pause), reconnect; all bounded.
        """
        ack = self.command_long(MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, [1.0])
        if ack is None or ack.result != MAV_RESULT_ACCEPTED:
            raise LinkError("the FC refused to reboot" + (f" (MAV_RESULT {ack.result})" if ack else
                                                          " (no answer)") + "; it refuses while armed")
        deadline = time.monotonic() + 2.0
        try:
            while time.monotonic() < deadline:
                self._recv_raw(0.1)
        except LinkLost:
            pass
        self.reconnect(timeout)

    # ---- the FC's identity
    def _is_fc_heartbeat(self, msg: Any) -> bool:
        src: tuple[int, int] = (msg.get_srcSystem(), msg.get_srcComponent())
        want_sys, want_comp = self.config.fc_system_id, self.config.fc_component_id
        if want_sys is not None and src[0] != want_sys:
            return False
        if want_comp is not None:
            return src[1] == want_comp
        return bool(msg.autopilot != MAV_AUTOPILOT_INVALID and msg.type not in _NON_VEHICLE_TYPES)

    def _hello(self) -> None:
        """Our heartbeat plus a request for the FC's, so link-up does not wait up to a second."""
        self.send(self.mav.heartbeat_encode(MAV_TYPE_ONBOARD_CONTROLLER, MAV_AUTOPILOT_INVALID, 0, 0,
                                            MAV_STATE_ACTIVE))
        self.send(self.mav.command_long_encode(self.config.fc_system_id or 0, self.config.fc_component_id or 0,
                                               MAV_CMD_REQUEST_MESSAGE, 0, 0.0, 0, 0, 0, 0, 0, 0))

    def wait_fc_heartbeat(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        next_hello = time.monotonic()
        others: set[tuple[int, int]] = set()  # autopilots heard that are not the one configured
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                if others:
                    heard = ", ".join(f"{s}/{c}" for s, c in sorted(others))
                    raise FcSilent(f"no HEARTBEAT from the flight controller {self.config.fc_system_id}/"
                                   f"{self.config.fc_component_id} within {timeout:.1f} s on {self.config.url}, but "
                                   f"autopilot(s) {heard} (system/component) answered: give its system id "
                                   "(--fc-system-id, or [mavlink] fc_system_id)")
                raise FcSilent(f"no HEARTBEAT from the flight controller within {timeout:.1f} s on "
                               f"{self.config.url}: check the URL, cable, baud rate and that the FC is powered")
            if now >= next_hello:
                self._hello()
                next_hello = now + self.config.heartbeat_period
            msg = self._recv_raw(min(remaining, next_hello - now, 0.5))
            if msg is not None and msg.get_type() == "HEARTBEAT" and not self._is_fc_heartbeat(msg) and \
                    msg.autopilot != MAV_AUTOPILOT_INVALID and msg.type not in _NON_VEHICLE_TYPES:
                others.add((msg.get_srcSystem(), msg.get_srcComponent()))
            elif msg is not None and msg.get_type() == "HEARTBEAT" and self._is_fc_heartbeat(msg):
                self.fc = (msg.get_srcSystem(), msg.get_srcComponent())
                self.fc_heartbeat = msg
                self.send_heartbeat()
                return msg

    # ---- sending
    @property
    def mav(self) -> Any:
        """pymavlink's message factory (``link.mav.command_long_encode(...)``)."""
        if self.conn is None:
            raise LinkLost(f"link {self.config.url} is closed")
        return self.conn.mav

    def send(self, msg: Any) -> None:
        if self.conn is None or self._lost:
            raise LinkLost(f"the connection to the flight controller on {self.config.url} closed")
        with self._send_lock:
            try:
                self.conn.mav.send(msg)
            except OSError as exc:
                self._lost = True
                raise LinkLost(f"the connection to the flight controller on {self.config.url} broke "
                               f"({exc.strerror or exc}); reconnect") from None

    def receive(self, timeout: float) -> Any:
        """The next message of any type, or None (the :class:`~agent.mavlink.channel.Channel` shape)."""
        return self.recv(None, timeout)

    def mavlink20(self) -> bool:
        """Whether the link speaks MAVLink2 (it does from the FC's first MAVLink2 frame)."""
        return self.conn is not None and bool(self.conn.mavlink20())

    def send_heartbeat(self) -> None:
        self.send(self.mav.heartbeat_encode(MAV_TYPE_ONBOARD_CONTROLLER, MAV_AUTOPILOT_INVALID, 0, 0,
                                            MAV_STATE_ACTIVE))
        self._next_heartbeat = time.monotonic() + self.config.heartbeat_period

    def poll(self) -> None:
        """Send the 1 Hz heartbeat if it is due (callers that do not receive for a while call this), and
        run the tick hooks: a long pass (FTP, parameters) receives all the time, so they keep running."""
        if self.fc_heartbeat is not None and time.monotonic() >= self._next_heartbeat:
            self.send_heartbeat()
        for hook in self.tick_hooks:
            hook()

    # ---- receiving
    def _recv_raw(self, timeout: float) -> Any:
        if self.conn is None:
            raise LinkLost(f"link {self.config.url} is closed")
        deadline = time.monotonic() + timeout
        while True:
            if self._lost:
                raise LinkLost(f"the flight controller closed the connection on {self.config.url} "
                               "(rebooted or unplugged); reconnect")
            try:
                msg = self.conn.recv_msg()
            except OSError as exc:  # reset by peer: SITL re-executing on reboot resets a fresh connection
                self._lost = True
                raise LinkLost(f"the connection to the flight controller on {self.config.url} was reset "
                               f"({exc.strerror or exc}); reconnect") from None
            if msg is not None:
                if _noise(msg):
                    continue
                self.observe(msg)
                return msg
            if self._lost:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.conn.select(min(remaining, 0.05))

    def recv(self, types: Iterable[str] | None = None, timeout: float = 1.0,
             condition: Callable[[Any], bool] | None = None) -> Any:
        """The next message of one of ``types`` (any when None) matching ``condition``, or None."""
        wanted = set(types) if types is not None else None
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            until_heartbeat = self._next_heartbeat - time.monotonic() if self.fc_heartbeat is not None else 0.2
            msg = self._recv_raw(min(remaining, 0.2, max(0.005, until_heartbeat)))
            if msg is None:
                continue
            if wanted is not None and msg.get_type() not in wanted:
                continue
            if condition is not None and not condition(msg):
                continue
            return msg

    def _prune_pymavlink(self) -> None:
        """pymavlink keeps the last message of every type per sender system and a sequence per sender;
        with senders made up by the thousand that is tens of MB. Keep what ``heard`` keeps."""
        conn = self.conn
        if conn is None:
            return
        systems = {k[0] for k in self.heard} | {self.fc[0], self.config.system_id}
        for sysid in [s for s in getattr(conn, "sysid_state", {}) if s not in systems and s != conn.sysid]:
            del conn.sysid_state[sysid]
        last_seq = getattr(conn, "last_seq", {})
        for key in [k for k in last_seq if k not in self.heard]:
            del last_seq[key]

    def observe(self, msg: Any) -> None:
        """Note a received message in :attr:`heard` (call it for messages read elsewhere).

        BAD_DATA and UNKNOWN_n (an id pymavlink cannot check the CRC of) are line noise, not senders:
        the fuzz campaign saw noise list a part "mavlink:0/0" in almost every pass."""
        if _noise(msg):
            return
        key = (msg.get_srcSystem(), msg.get_srcComponent())
        now = time.monotonic()
        entry = self.heard.get(key)
        if entry is None:
            if len(self.heard) >= MAX_COMPONENTS:
                # full (a flood of made-up ids): the one heard least recently makes room, never the FC.
                # Refusing newcomers instead would let a flood hide a real part that joins afterwards.
                oldest = min((k for k in self.heard if k != self.fc), key=lambda k: self.heard[k].last_seen)
                del self.heard[oldest]
                self._prune_pymavlink()
            entry = HeardComponent(key[0], key[1], now, now)
            self.heard[key] = entry
        entry.last_seen = now
        entry.messages += 1
        mtype = msg.get_type()
        if len(entry.types) < MAX_TYPES_PER_COMPONENT:
            entry.types.add(mtype)
        if mtype == "HEARTBEAT":
            entry.heartbeat = msg
            if key == self.fc:
                self.fc_heartbeat = msg
                if int(msg.system_status) == MAV_STATE_BOOT:
                    self.scripting_stopped = False  # a reboot starts scripting afresh
                    self.gate_forgeries = 0
        elif mtype == "STATUSTEXT" and key == self.fc:
            text = str(msg.text)
            if text.startswith("Scripting: stopped"):
                self.scripting_stopped = True
            elif text.startswith("Scripting: restarted"):
                self.scripting_stopped = False
            elif text.startswith(GATE_FORGED_TEXT):
                self.gate_forgeries = max(self.gate_forgeries, 1)
        elif mtype == "AUTOPILOT_VERSION":
            entry.autopilot_version = msg
        for listener in self.listeners:
            listener(msg)

    # ---- commands
    def command_long(self, command: int, params: Iterable[float] = (), *, target: tuple[int, int] | None = None,
                     timeout: float = 1.0, retries: int = 3) -> Any:
        """Send COMMAND_LONG and return its COMMAND_ACK, or None after ``retries`` bounded waits."""
        p = [*params, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0][:7]
        tsys, tcomp = target or self.fc
        for attempt in range(max(1, retries)):
            self.send(self.mav.command_long_encode(tsys, tcomp, command, attempt, *p))
            ack = self.recv(["COMMAND_ACK"], timeout, lambda m: m.command == command and
                            (m.get_srcSystem(), m.get_srcComponent()) == (tsys, tcomp))
            if ack is not None:
                return ack
        return None

    def request_message(self, msg_id: int, type_name: str, *, target: tuple[int, int] | None = None,
                        timeout: float = 1.0, retries: int = 3) -> Any:
        """MAV_CMD_REQUEST_MESSAGE: the FC acks first, then sends the message; bounded."""
        tsys, tcomp = target or self.fc

        def from_target(m: Any) -> bool:
            return (m.get_srcSystem(), m.get_srcComponent()) == (tsys, tcomp)

        for attempt in range(max(1, retries)):
            self.send(self.mav.command_long_encode(tsys, tcomp, MAV_CMD_REQUEST_MESSAGE, attempt, float(msg_id),
                                                   0, 0, 0, 0, 0, 0))
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                m = self.recv(["COMMAND_ACK", type_name], remaining, from_target)
                if m is None:
                    break
                if m.get_type() == type_name:
                    return m
                if m.command == MAV_CMD_REQUEST_MESSAGE and m.result != MAV_RESULT_ACCEPTED:
                    return None  # refused: asking again will not help
        return None
