"""Operator challenge over MAVLink: nonce in, fresh attestation out, in TUNNEL chunks.

The **responder** runs inside the agent's loop. It never measures on the spot: the daemon keeps
its measurements current (it re-measures on every reboot, parameter, script, component or
manifest change), so answering a challenge is sealing those measurements with the operator's
nonce and the current time and signing them, which takes milliseconds, not the seconds a full
pass over MAVLink takes, and never starves the gate's keep-alive.

The **client** (``flightseal challenge``) sends the nonce, collects the chunks, asks again for
missing ones a bounded number of times, checks the SHA-256 from the offer and decompresses with a
bound. It returns the attestation bytes; verifying them is ``flightseal verify``'s job, offline.
"""

from __future__ import annotations

import hashlib
import random
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from agent.mavlink import challenge_wire as wire
from agent.mavlink.channel import channel_of
from attest.errors import FlightSealError, FormatError

MIN_CHALLENGE_INTERVAL_S = 1.0
CHALLENGE_RETRY_S = 1.5  # MAVLink links lose packets: repeat the challenge until an offer arrives


class ChallengeError(FlightSealError):
    """The challenge could not be completed (no answer, corrupt transfer, agent error)."""


def send_tunnel(link_or_conn: Any, target_system: int, target_component: int, packet: wire.Packet) -> None:
    """One packet in a TUNNEL message, through the agent's link (or a ground tool's connection)."""
    data = packet.encode()
    channel_of(link_or_conn).send(mavlink2.MAVLink_tunnel_message(
        target_system, target_component, wire.PAYLOAD_TYPE, len(data), list(data.ljust(wire.TUNNEL_MAX, b"\0"))))


def tunnel_payload(msg: Any, own_system: int, own_component: int) -> bytes | None:
    """Our packet bytes from a TUNNEL message addressed to us, or None if it is someone else's."""
    if msg.get_type() != "TUNNEL" or msg.payload_type != wire.PAYLOAD_TYPE:
        return None
    if msg.target_system != own_system or msg.target_component != own_component:
        return None
    length = min(int(msg.payload_length), wire.TUNNEL_MAX)
    return bytes(msg.payload[:length])


MAX_OUTBOX = wire.MAX_CHUNKS + 16  # one whole attestation, its offer and a few errors
_Item = tuple[int, int, wire.Packet]


class Outbox(deque[_Item]):
    """The responder's queue, which knows in O(1) what it holds (so nothing is queued twice)."""

    def __init__(self) -> None:
        super().__init__()
        self._held: Counter[_Item] = Counter()

    def __contains__(self, item: object) -> bool:
        return self._held[item] > 0  # type: ignore[index]

    def append(self, item: _Item) -> None:
        super().append(item)
        self._held[item] += 1

    def appendleft(self, item: _Item) -> None:
        super().appendleft(item)
        self._held[item] += 1

    def popleft(self) -> _Item:
        item = super().popleft()
        self._held[item] -= 1
        if self._held[item] <= 0:
            del self._held[item]
        return item

    def clear(self) -> None:
        super().clear()
        self._held.clear()


@dataclass
class Responder:
    """Answers challenges addressed to the agent. ``attest(nonce)`` returns a sealed envelope."""

    attest: Callable[[bytes], bytes]
    clock: Callable[[], float] = time.monotonic
    outbox: Outbox = field(default_factory=Outbox)
    _last_challenge: float = -1e9
    _chunks: dict[int, list[bytes]] = field(default_factory=dict)
    _offer: wire.Packet | None = None
    dropped: int = 0  # packets not queued because the outbox was full

    def _queue(self, system: int, component: int, packet: wire.Packet) -> None:
        """Queue once: a packet already waiting is not queued again (RESENDs asking for the same chunks
        would otherwise multiply the outbox), and the outbox never holds more than one attestation's
        worth (issue 11: 10k RESENDs queued 610k packets)."""
        key = (system, component, packet)
        if key in self.outbox:
            return
        if len(self.outbox) >= MAX_OUTBOX:
            self.dropped += 1
            return
        self.outbox.append(key)

    def handle(self, src_system: int, src_component: int, payload: bytes) -> None:
        try:
            packet = wire.decode(payload)
        except FormatError:
            return
        if packet.op is wire.Op.CHALLENGE:
            self._challenge(src_system, src_component, packet)
        elif packet.op is wire.Op.RESEND and packet.session in self._chunks:
            try:
                indices = wire.parse_resend(packet)
            except FormatError:
                return
            chunks = self._chunks[packet.session]
            for i in indices:
                if 0 <= i < len(chunks):
                    self._queue(src_system, src_component, wire.chunk(packet.session, i, chunks[i]))

    def _challenge(self, src_system: int, src_component: int, packet: wire.Packet) -> None:
        now = self.clock()
        if packet.session in self._chunks and self._offer is not None:
            # the same challenge again (our answer or the challenge was lost): answer again, same bytes
            self._queue(src_system, src_component, self._offer)
            for i, data in enumerate(self._chunks[packet.session]):
                self._queue(src_system, src_component, wire.chunk(packet.session, i, data))
            return
        if now - self._last_challenge < MIN_CHALLENGE_INTERVAL_S:
            self._queue(src_system, src_component, wire.error(packet.session, "busy: retry in 1 s"))
            return
        self._last_challenge = now
        try:
            nonce = wire.parse_challenge(packet)
            blob = zlib.compress(self.attest(nonce), 9)
        except FlightSealError as exc:
            self._queue(src_system, src_component, wire.error(packet.session, str(exc)))
            return
        if len(blob) > wire.MAX_BLOB_BYTES:
            self._queue(src_system, src_component, wire.error(packet.session, "attestation too large"))
            return
        chunks = wire.split(blob)
        self._chunks = {packet.session: chunks}  # one session kept for resends
        self._offer = wire.offer(packet.session, len(blob), len(chunks), hashlib.sha256(blob).digest())
        self._queue(src_system, src_component, self._offer)
        for i, data in enumerate(chunks):
            self._queue(src_system, src_component, wire.chunk(packet.session, i, data))

    def pump(self, link: Any, budget: int = 32) -> int:
        """Send up to ``budget`` queued packets; the caller paces it to the link."""
        sent = 0
        while self.outbox and sent < budget:
            system, component, packet = self.outbox.popleft()
            send_tunnel(link, system, component, packet)
            sent += 1
        return sent


class Collector:
    """The operator's side of one challenge, as a state machine with no I/O and no clock of its own.

    ``start`` gives the CHALLENGE packet to send; ``receive`` takes each TUNNEL payload addressed to
    the operator and returns the attestation bytes once every chunk is in; ``due`` says what to send
    now (the challenge again until an offer arrives, a RESEND for missing chunks after a quiet spell)
    and raises :class:`ChallengeError` once the time is up. :func:`request_attestation` drives it
    over a pymavlink connection, MAVProxy's module (``agent/mavproxy_flightseal.py``) from its
    packet callback and idle task.
    """

    QUIET_S = 0.5  # no packet for this long after an offer: ask for the missing chunks

    def __init__(self, nonce: bytes, *, timeout: float = 30.0, resend_rounds: int = 5,
                 target: tuple[int, int] = (1, 191), session: int | None = None) -> None:
        self.nonce = nonce
        self.timeout = timeout
        self.resend_rounds = resend_rounds
        self.target = target
        self.session = session if session is not None else random.randrange(1, 2**32)
        self.challenge = wire.challenge(self.session, nonce)
        self.offer: tuple[int, int, bytes] | None = None
        self.chunks: dict[int, bytes] = {}
        self.rounds = 0  # RESENDs in a row that brought no new chunk (a dead link stops at resend_rounds)
        self.resends = 0  # RESENDs in all (a lossy link, e.g. through PX4's forwarding, needs many)
        self._deadline = 0.0
        self._next_challenge = 0.0
        self._last_heard = 0.0

    def start(self, now: float) -> wire.Packet:
        """The CHALLENGE to send first; the clock starts here."""
        self._deadline = now + self.timeout
        self._next_challenge = now + CHALLENGE_RETRY_S
        self._last_heard = now
        return self.challenge

    def receive(self, payload: bytes, now: float) -> bytes | None:
        """Take one of our TUNNEL payloads; the attestation bytes once complete, else None.

        Raises:
            ChallengeError: the agent refused, or the reassembled transfer is corrupt.
        """
        try:
            packet = wire.decode(payload)
        except FormatError:
            return None
        if packet.session != self.session:
            return None
        self._last_heard = now
        if packet.op is wire.Op.ERROR:
            if self.offer is None and packet.body.startswith(b"busy"):
                return None  # the agent answers one challenge a second: ours goes again (``due``)
            raise ChallengeError(f"agent refused the challenge: {packet.body.decode(errors='replace')}")
        if packet.op is wire.Op.OFFER:
            self.offer = wire.parse_offer(packet)
        elif packet.op is wire.Op.CHUNK and self.offer is not None:
            index, data = wire.parse_chunk(packet)
            if 0 <= index < self.offer[1]:
                if index not in self.chunks:
                    self.rounds = 0  # progress: the link is lossy, not dead
                self.chunks[index] = data
        if self.offer is not None and len(self.chunks) == self.offer[1]:
            return _assemble(self.offer, self.chunks)
        return None

    def due(self, now: float) -> list[wire.Packet]:
        """What to send now (often nothing).

        Raises:
            ChallengeError: the time is up, with what was missing.
        """
        if now >= self._deadline:
            t_sys, t_comp = self.target
            if self.offer is None:
                raise ChallengeError(f"no answer from the agent ({t_sys}/{t_comp}) within {self.timeout:.0f} s: "
                                     "is flightseal agent running and the link routed?")
            raise ChallengeError(f"transfer incomplete: {len(self.chunks)} of {self.offer[1]} chunks after "
                                 f"{self.resends} resends")
        if self.offer is None:
            if now >= self._next_challenge:  # lost on the way: the same session again
                self._next_challenge = now + CHALLENGE_RETRY_S
                return [self.challenge]
            return []
        if now - self._last_heard >= self.QUIET_S and self.rounds < self.resend_rounds:
            missing = [i for i in range(self.offer[1]) if i not in self.chunks]
            if missing:
                self.rounds += 1
                self.resends += 1
                self._last_heard = now
                return [wire.resend(self.session, missing)]
        return []


def request_attestation(conn: Any, nonce: bytes, *, target_system: int = 1, target_component: int = 191,
                        timeout: float = 30.0, resend_rounds: int = 5) -> bytes:
    """Challenge the agent through ``conn`` and return the attestation envelope bytes.

    Raises:
        ChallengeError: no answer in time, a refusal, or a corrupt transfer.
    """
    collector = Collector(nonce, timeout=timeout, resend_rounds=resend_rounds,
                          target=(target_system, target_component))
    send_tunnel(conn, target_system, target_component, collector.start(time.monotonic()))
    while True:
        for packet in collector.due(time.monotonic()):
            send_tunnel(conn, target_system, target_component, packet)
        msg = conn.recv_match(type="TUNNEL", blocking=True, timeout=Collector.QUIET_S / 2)
        if msg is None:
            continue
        payload = tunnel_payload(msg, conn.source_system, conn.source_component)
        if payload is None:
            continue
        data = collector.receive(payload, time.monotonic())
        if data is not None:
            return data


def _assemble(offer: tuple[int, int, bytes], chunks: dict[int, bytes]) -> bytes:
    length, count, digest = offer
    blob = b"".join(chunks[i] for i in range(count))
    if len(blob) != length or hashlib.sha256(blob).digest() != digest:
        raise ChallengeError("transfer corrupted: the reassembled attestation does not match the offer's SHA-256")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(blob, wire.MAX_BLOB_BYTES * 4)
    except zlib.error as exc:
        raise ChallengeError(f"attestation does not decompress: {exc}") from None
    if inflater.unconsumed_tail:
        raise ChallengeError("attestation decompresses to more than the size limit")
    return data
