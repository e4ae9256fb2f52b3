"""GateClient over a real pymavlink TCP link on loopback to the real Lua gate (LuaGateHost).

``FcPeer`` plays the FC's serial ports: it parses what arrives on each loopback port, hands the
frames to the gate on that channel, runs the gate on the wall clock, sends its acks back and, like
GCS_Common.cpp, answers a command no script blocked with UNSUPPORTED (a TUNNEL gets no answer).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from agent.gate.client import (
    ACCEPTED,
    EPOCH_BASE,
    GATE_SCRIPT_PATH,
    GateClient,
    GateTimeout,
    Sequence,
    SequenceSource,
    encode_verdict,
    gate_mac,
    gate_version,
    verdict_payload,
)
from agent.gate.key import FC_KEY_NAME, GATE_VM_I_COUNT
from attest.models import Code, Reason, Verdict
from sim.vfc.lua_host import LuaGateHost

PASS = Verdict(True)
KEY = bytes(range(7, 39))
OTHER_KEY = bytes(32)
FAIL = Verdict(False, (Reason(Code.SCRIPT_MISMATCH, "tampered"),))


class FcPeer:
    """Loopback TCP ports, one per MAVLink channel, in front of a LuaGateHost."""

    def __init__(self, host: LuaGateHost, channels: tuple[int, ...] = (1,), heartbeat_before_acks: bool = False):
        self.host = host
        self.lock = threading.Lock()
        self.mute = False
        self.heartbeat_before_acks = heartbeat_before_acks
        self.forge_acks = False
        self.received: list[tuple[int, bytes]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._listeners: dict[socket.socket, int] = {}
        self.ports: dict[int, int] = {}
        for channel in channels:
            s = socket.create_server(("127.0.0.1", 0))
            s.setblocking(False)
            self._listeners[s] = channel
            self.ports[channel] = s.getsockname()[1]
        self._clients: dict[socket.socket, tuple[int, Any]] = {}
        self._packer = mavlink2.MAVLink(None, srcSystem=1, srcComponent=1)
        self._thread = threading.Thread(target=self._run, name="fc-peer", daemon=True)
        host.tick(self._now())  # scripts start before any client can talk to the FC

    def url(self, channel: int = 1) -> str:
        return f"tcp:127.0.0.1:{self.ports[channel]}"

    def __enter__(self) -> FcPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in [*self._listeners, *self._clients]:
            s.close()

    def arming_check(self) -> tuple[bool, str]:
        with self.lock:
            return self.host.arming_check()

    def _now(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([*self._listeners, *self._clients], [], [], 0.01)
            for s in ready:
                if s in self._listeners:
                    conn, _ = s.accept()
                    parser = mavlink2.MAVLink(None)
                    parser.robust_parsing = True
                    self._clients[conn] = (self._listeners[s], parser)
                    continue
                channel, parser = self._clients[s]
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    del self._clients[s]
                    s.close()
                    continue
                with self.lock:
                    for msg in parser.parse_buffer(data) or []:
                        if msg.get_type() != "BAD_DATA":
                            self._handle(channel, s, msg)
            with self.lock:
                self.host.tick(self._now())
                out = self.host.drain_outgoing()
            if self.mute:
                continue
            for channel, frame in out:
                for conn, (ch, _) in list(self._clients.items()):
                    if ch == channel:
                        if self.heartbeat_before_acks:
                            conn.sendall(mavlink2.MAVLink_heartbeat_message(2, 3, 81, 0, 3, 3).pack(self._packer))
                        if self.forge_acks:  # the gate's ids, its format, another key: a forger on the channel
                            conn.sendall(self._forged_ack(frame))
                        conn.sendall(frame)

    def _forged_ack(self, frame: bytes) -> bytes:
        msg = mavlink2.MAVLink(None).parse_buffer(frame)[0]
        data = bytes(msg.payload[:msg.payload_length])
        body = data[:-16]
        forged = body[:4] + bytes([ACCEPTED]) + body[5:]
        out = forged + gate_mac(OTHER_KEY, forged)
        return bytes(mavlink2.MAVLink_tunnel_message(msg.target_system, msg.target_component, msg.payload_type,
                                                     len(out), list(out.ljust(128, b"\0"))).pack(self._packer))

    def _handle(self, channel: int, conn: socket.socket, msg: Any) -> None:
        frame = bytes(msg.get_msgbuf())
        self.received.append((channel, frame))
        self.host.deliver(channel, frame, self._now())
        if msg.get_type() in ("COMMAND_LONG", "COMMAND_INT") and not self.host.is_handling_command(msg.command):
            ack = mavlink2.MAVLink_command_ack_message(msg.command, 3, 0, 0, msg.get_srcSystem(),
                                                      msg.get_srcComponent())
            conn.sendall(ack.pack(self._packer))


@pytest.fixture(autouse=True)
def _mavlink2() -> None:
    """The gate takes MAVLink2 frames only; pymavlink picks the wire version from the environment."""
    from pymavlink import mavutil

    if not os.environ.get("MAVLINK20"):
        os.environ["MAVLINK20"] = "1"
        mavutil.set_dialect("ardupilotmega")


def connect(url: str, sysid: int = 1, compid: int = 191) -> Any:
    from pymavlink import mavutil

    return mavutil.mavlink_connection(url, source_system=sysid, source_component=compid, autoreconnect=False)


def gate_host() -> LuaGateHost:
    """The shipped gate as `gate install` leaves it: its key beside the scripts, the VM budget raised."""
    return LuaGateHost(GATE_SCRIPT_PATH, params={"SCR_VM_I_COUNT": GATE_VM_I_COUNT}, files={FC_KEY_NAME: KEY})


@pytest.fixture
def peer() -> Iterator[FcPeer]:
    host = gate_host()
    with FcPeer(host, channels=(0, 1)) as p:
        yield p


@pytest.fixture
def agent_conn(peer: FcPeer) -> Iterator[Any]:
    conn = connect(peer.url(1))
    yield conn
    conn.close()


def test_pass_is_acknowledged_and_opens_the_gate(peer: FcPeer, agent_conn: Any) -> None:
    assert peer.arming_check() == (False, "FlightSeal: waiting")
    client = GateClient(agent_conn, KEY)
    ack = client.send(PASS)
    assert ack.gate_version == gate_version()
    assert ack.gate_epoch == ack.sequence.epoch and ack.nonce == client.nonce != bytes(8)
    assert peer.arming_check() == (True, "")


def test_fail_reason_reaches_the_prearm_text(peer: FcPeer, agent_conn: Any) -> None:
    client = GateClient(agent_conn, KEY)
    client.send(PASS)
    client.send(FAIL)
    assert peer.arming_check() == (False, "FlightSeal: script-mismatch")


def test_keep_alive_holds_the_pass_and_the_gate_lapses_when_the_agent_stops(peer: FcPeer, agent_conn: Any) -> None:
    client = GateClient(agent_conn, KEY, keepalive_s=0.5)
    client.send(PASS)
    start = time.monotonic()
    while time.monotonic() - start < 3.6:  # longer than the gate's 3 s lapse
        client.keep_alive()
        assert peer.arming_check()[0]
        time.sleep(0.05)
    stopped = time.monotonic()
    while peer.arming_check()[0] and time.monotonic() - stopped < 5:
        time.sleep(0.05)
    assert peer.arming_check() == (False, "FlightSeal: verdict lapsed")
    assert 2.0 < time.monotonic() - stopped < 4.5


def test_restarted_agent_in_the_same_second_resyncs_after_a_denied_ack(peer: FcPeer, agent_conn: Any) -> None:
    now = float(EPOCH_BASE + 5000)
    first = GateClient(agent_conn, KEY, sequence=SequenceSource(clock=lambda: now))
    first.send(FAIL)
    second = GateClient(agent_conn, KEY, sequence=SequenceSource(clock=lambda: now))
    ack = second.send(PASS)
    assert ack.sequence == Sequence(5001, 1)
    assert peer.arming_check() == (True, "")


def test_persisted_epoch_keeps_sequences_rising_when_the_clock_goes_back(tmp_path: Path, peer: FcPeer,
                                                                         agent_conn: Any) -> None:
    state = tmp_path / "gate.seq"
    GateClient(agent_conn, KEY, sequence=SequenceSource(state, clock=lambda: EPOCH_BASE + 9000.0)).send(FAIL)
    sent_before = len(peer.received)
    ack = GateClient(agent_conn, KEY, sequence=SequenceSource(state, clock=lambda: EPOCH_BASE + 10.0)).send(PASS)
    assert ack.sequence == Sequence(9001, 2)  # 9001.1 came back STALE with the nonce
    assert state.read_text() == "9001\n"
    assert len(peer.received) == sent_before + 2, "taken at the first try after learning the nonce"
    assert peer.arming_check() == (True, "")


def test_forged_pass_on_the_gcs_port_with_the_agents_ids_is_ignored(peer: FcPeer, agent_conn: Any) -> None:
    GateClient(agent_conn, KEY).send(FAIL)
    gcs = connect(peer.url(0))
    try:
        forger = GateClient(gcs, KEY, ack_timeout_s=0.3,
                            sequence=SequenceSource(clock=lambda: 2**31 - 10.0 + EPOCH_BASE))
        with pytest.raises(GateTimeout):
            forger.send(PASS)
    finally:
        gcs.close()
    assert peer.arming_check() == (False, "FlightSeal: script-mismatch")


def test_replayed_pass_frame_is_ignored(peer: FcPeer, agent_conn: Any) -> None:
    client = GateClient(agent_conn, KEY)
    client.send(PASS)
    recorded = [f for ch, f in peer.received if ch == 1]
    client.send(FAIL)
    agent_conn.write(recorded[-1])
    time.sleep(0.3)
    assert peer.arming_check() == (False, "FlightSeal: script-mismatch")


def test_silent_gate_times_out_within_the_bound(peer: FcPeer, agent_conn: Any) -> None:
    client = GateClient(agent_conn, KEY, ack_timeout_s=0.3)
    client.send(FAIL)  # learns the gate's nonce
    peer.mute = True
    start = time.monotonic()
    with pytest.raises(GateTimeout, match="no ack from the arming gate"):
        client.send(PASS)
    assert time.monotonic() - start < 1.0
    assert peer.arming_check()[0], "the frame arrived; only the ack was lost"


def test_fc_without_the_gate_is_reported_with_how_to_install_it() -> None:
    with FcPeer(LuaGateHost()) as bare:
        conn = connect(bare.url(1))
        try:
            with pytest.raises(GateTimeout, match="gate install"):
                GateClient(conn, KEY, ack_timeout_s=0.3).send(PASS)
        finally:
            conn.close()


def test_other_messages_arriving_while_waiting_are_handed_on() -> None:
    seen: list[str] = []
    with FcPeer(gate_host(), heartbeat_before_acks=True) as chatty:
        conn = connect(chatty.url(1))
        try:
            GateClient(conn, KEY, on_message=lambda m: seen.append(m.get_type())).send(PASS)
        finally:
            conn.close()
    assert "HEARTBEAT" in seen


def test_verdict_message_fields() -> None:
    nonce = bytes(range(1, 9))
    msg = encode_verdict(FAIL, Sequence(77, 3), KEY, nonce)
    assert (msg.get_type(), msg.payload_type, msg.target_system, msg.target_component) == ("TUNNEL", 0xF5E2, 1, 1)
    data = bytes(msg.payload[:msg.payload_length])
    text = b"FlightSeal: script-mismatch"
    assert data == verdict_payload(2, Sequence(77, 3), text.decode(), KEY, nonce)
    assert data[:4] == b"FSV3" and data[4] == 2 and data[5:13] == nonce and data[21] == len(text)
    assert int.from_bytes(data[13:17], "little") == 77 and int.from_bytes(data[17:21], "little") == 3
    assert data[22:-16] == text and data[-16:] == hmac.new(KEY, data[:-16], hashlib.sha256).digest()[:16]


def test_a_forger_without_the_key_on_the_agents_channel_is_ignored_and_reported(peer: FcPeer,
                                                                                agent_conn: Any) -> None:
    client = GateClient(agent_conn, KEY)
    client.send(FAIL)
    forger = connect(peer.url(1))  # the same channel and ids: a router's client
    try:
        with pytest.raises(GateTimeout):
            GateClient(forger, OTHER_KEY, ack_timeout_s=0.3).send(PASS)
    finally:
        forger.close()
    assert peer.arming_check() == (False, "FlightSeal: script-mismatch")
    client.send(FAIL)
    assert client.foreign >= 1  # the gate tells the agent, in an ack only the key makes


def test_acks_forged_without_the_key_are_counted_and_never_taken(peer: FcPeer, agent_conn: Any) -> None:
    peer.forge_acks = True
    client = GateClient(agent_conn, KEY)
    ack = client.send(PASS)
    assert ack.result == ACCEPTED and client.forged_acks >= 2


def test_a_forged_far_future_epoch_is_not_followed_nor_persisted(tmp_path: Path) -> None:
    """Issue 10: a forged DENIED ack (or a forged verdict the gate took) with epoch INT32_MAX must not
    lock the agent out for good through its state file."""
    from agent.gate.client import INT32_MAX, MAX_EPOCH_AHEAD, GateError

    state = tmp_path / "gate.seq"
    source = SequenceSource(state, clock=lambda: EPOCH_BASE + 9000.0)
    with pytest.raises(GateError, match="something else sends verdicts"):
        source.resync(INT32_MAX - 1)
    assert state.read_text() == "9000\n" and source.epoch == 9000
    source.resync(9000 + MAX_EPOCH_AHEAD)  # a gate within a week of our clock: an earlier run of ours
    assert source.epoch == 9001 + MAX_EPOCH_AHEAD and state.read_text() == f"{9001 + MAX_EPOCH_AHEAD}\n"
