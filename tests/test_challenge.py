"""Operator challenge over real pymavlink connections on loopback TCP."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("MAVLINK20", "1")
from pymavlink import mavutil

from agent.challenge import ChallengeError, Responder, request_attestation, tunnel_payload
from agent.mavlink import challenge_wire as wire
from attest.errors import FlightSealError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentPeer:
    """The agent's side: a real pymavlink endpoint running the Responder in a bounded thread."""

    def __init__(self, attest: Any, drop: set[int] | None = None, corrupt: bool = False,
                 ignore_challenges: int = 0) -> None:
        self.ignore_challenges = ignore_challenges
        self.port = free_port()
        self.conn = mavutil.mavlink_connection(f"tcpin:127.0.0.1:{self.port}", source_system=1,
                                               source_component=191)
        self.responder = Responder(attest)
        self.drop = set(drop or ())
        self.corrupt = corrupt
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 20
        while not self.stop.is_set() and time.monotonic() < deadline:
            msg = self.conn.recv_match(type="TUNNEL", blocking=True, timeout=0.05)
            if msg is not None and (payload := tunnel_payload(msg, 1, 191)) is not None:
                if payload[0] == wire.Op.CHALLENGE and self.ignore_challenges > 0:
                    self.ignore_challenges -= 1  # lost on the radio
                    continue
                self.responder.handle(msg.get_srcSystem(), msg.get_srcComponent(), payload)
            while self.responder.outbox:
                system, component, packet = self.responder.outbox.popleft()
                if packet.op is wire.Op.CHUNK:
                    index, data = wire.parse_chunk(packet)
                    if index in self.drop:
                        self.drop.discard(index)  # lost once; a resend gets through
                        continue
                    if self.corrupt and index == 0:
                        packet = wire.chunk(packet.session, 0, bytes([data[0] ^ 1]) + data[1:])
                self.responder.outbox.appendleft((system, component, packet))
                self.responder.pump(self.conn, budget=1)


@pytest.fixture
def operator_for() -> Iterator[Any]:
    peers: list[AgentPeer] = []

    def start(attest: Any, **kw: Any) -> Any:
        peer = AgentPeer(attest, **kw)
        peer.thread.start()
        op = mavutil.mavlink_connection(f"tcp:127.0.0.1:{peer.port}", source_system=255, source_component=190)
        peers.append(peer)
        return op

    yield start
    for p in peers:
        p.stop.set()
        p.thread.join(timeout=5)
        p.conn.close()


def fake_attestation(nonce: bytes) -> bytes:
    # stands in for the sealed envelope: the transport must carry any bytes, so it echoes the nonce
    return b'{"nonce":"' + nonce.hex().encode() + b'"}' + secrets.token_bytes(3000)


def test_challenge_returns_attestation_bound_to_the_operator_nonce(operator_for: Any) -> None:
    op = operator_for(fake_attestation)
    nonce = secrets.token_bytes(32)
    got = request_attestation(op, nonce, timeout=10)
    assert got.startswith(b'{"nonce":"' + nonce.hex().encode())
    assert len(got) > 3000


def test_lost_chunks_are_requested_again(operator_for: Any) -> None:
    op = operator_for(fake_attestation, drop={0, 3, 7})
    got = request_attestation(op, secrets.token_bytes(32), timeout=15)
    assert len(got) > 3000


def test_corrupted_chunk_is_detected_not_accepted(operator_for: Any) -> None:
    op = operator_for(fake_attestation, corrupt=True)
    with pytest.raises(ChallengeError, match="SHA-256"):
        request_attestation(op, secrets.token_bytes(32), timeout=10)


def test_agent_error_reaches_the_operator(operator_for: Any) -> None:
    def failing(nonce: bytes) -> bytes:
        raise FlightSealError("TPM unreachable at swtpm:host=127.0.0.1,port=1")

    op = operator_for(failing)
    with pytest.raises(ChallengeError, match="TPM unreachable"):
        request_attestation(op, secrets.token_bytes(32), timeout=10)


def test_silent_agent_times_out_with_a_clear_error(operator_for: Any) -> None:
    op = operator_for(fake_attestation)
    start = time.monotonic()
    with pytest.raises(ChallengeError, match="no answer"):
        request_attestation(op, secrets.token_bytes(32), target_component=99, timeout=2)
    assert time.monotonic() - start < 5


def test_challenge_flood_is_rate_limited() -> None:
    calls: list[bytes] = []
    now = [100.0]
    r = Responder(lambda n: calls.append(n) or b"x", clock=lambda: now[0])
    for session in range(1, 6):
        r.handle(255, 190, wire.challenge(session, bytes(32)).encode())
    assert len(calls) == 1
    assert any(p.op is wire.Op.ERROR for _, _, p in r.outbox)


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x09\x00\x00\x00\x00", b"\x01\x01\x00\x00\x00\x05abc",
                                     b"\x04\x01\x00\x00\x00\xff"])
def test_malformed_packets_are_ignored(payload: bytes) -> None:
    calls: list[bytes] = []
    r = Responder(lambda n: calls.append(n) or b"x")
    r.handle(255, 190, payload)
    assert not calls
    assert all(p.op is wire.Op.ERROR for _, _, p in r.outbox)


def test_repeated_challenge_is_answered_again_without_signing_twice() -> None:
    calls: list[bytes] = []
    now = [100.0]
    r = Responder(lambda n: calls.append(n) or b"x" * 500, clock=lambda: now[0])
    packet = wire.challenge(7, bytes(32)).encode()
    r.handle(255, 190, packet)
    first = [p for _, _, p in r.outbox]
    r.outbox.clear()
    now[0] += 0.2
    r.handle(255, 190, packet)
    assert len(calls) == 1
    assert [p for _, _, p in r.outbox] == first


def test_lost_challenge_is_repeated_by_the_client(operator_for: Any) -> None:
    op = operator_for(fake_attestation, ignore_challenges=1)
    got = request_attestation(op, secrets.token_bytes(32), timeout=10)
    assert len(got) > 3000


def test_resends_cannot_grow_the_outbox_past_one_attestation() -> None:
    """Issue 11: each RESEND queued its chunks again: 10k RESENDs made 610k packets (~200 MB)."""
    import os as _os

    from agent.challenge import MAX_OUTBOX, Responder
    from agent.mavlink import challenge_wire as wire

    blob = _os.urandom(20_000)  # incompressible: ~166 chunks
    r = Responder(lambda _n: blob)
    r.handle(255, 190, wire.challenge(7, bytes(32)).encode())
    first = len(r.outbox)
    assert first > 100
    every = list(range(first))
    for k in range(10_000):
        start = (k * wire.MAX_RESEND) % first
        r.handle(255, 190, wire.resend(7, every[start:start + wire.MAX_RESEND]).encode())
    assert len(r.outbox) == first <= MAX_OUTBOX, "nothing queued twice"
    assert len(set(r.outbox)) == len(r.outbox)
    class Sink:  # a link that takes every packet (a Channel): only the outbox is under test
        def send(self, msg: object) -> None:
            pass

        def receive(self, timeout: float) -> None:
            return None

        def mavlink20(self) -> bool:
            return True

    sent = r.pump(Sink(), budget=first)
    assert sent == first and not r.outbox
    r.handle(255, 190, wire.resend(7, [0, 1, 2]).encode())
    assert len(r.outbox) == 3, "after sending, a resend queues again"


def _offer_and_chunks(session: int, blob: bytes) -> tuple[bytes, list[bytes]]:
    import hashlib

    chunks = wire.split(blob)
    offer = wire.offer(session, len(blob), len(chunks), hashlib.sha256(blob).digest()).encode()
    return offer, [wire.chunk(session, i, c).encode() for i, c in enumerate(chunks)]


def test_a_lossy_link_that_keeps_bringing_chunks_gets_more_resend_rounds() -> None:
    """Through PX4's forwarding half the TUNNELs are lost (tests/data/px4-sitl/forwarding.json): each
    RESEND that brings a new chunk starts the count of fruitless rounds again."""
    import zlib

    from agent.challenge import Collector

    raw = secrets.token_bytes(2000)
    blob = zlib.compress(raw)
    c = Collector(b"n" * 32, timeout=60, resend_rounds=2)
    c.start(0.0)
    offer, chunks = _offer_and_chunks(c.session, blob)
    c.receive(offer, 0.0)
    now, got = 0.0, None
    for i, chunk in enumerate(chunks):  # one chunk per round: many more rounds than resend_rounds
        now += 1.0
        assert c.due(now), f"round {i}: a RESEND is due"
        got = c.receive(chunk, now)
    assert got == raw and c.resends == len(chunks) > c.resend_rounds


def test_a_dead_link_stops_resending_after_the_fruitless_rounds() -> None:
    from agent.challenge import Collector

    c = Collector(b"n" * 32, timeout=5, resend_rounds=2)
    c.start(0.0)
    offer, _chunks = _offer_and_chunks(c.session, secrets.token_bytes(500))
    c.receive(offer, 0.0)
    sent = sum(len(c.due(t / 10)) for t in range(1, 49))
    assert sent == 2
    with pytest.raises(ChallengeError, match=r"transfer incomplete: 0 of \d+ chunks after 2 resends"):
        c.due(5.0)
