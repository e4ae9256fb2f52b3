"""Helpers for tests against the virtual FC: a raw MAVLink client and fast configurations.

The raw client is a plain pymavlink parser over a loopback socket, so a test can see exactly
what the virtual FC sends (order, sequence numbers, bytes) without the agent's link in between.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

os.environ.setdefault("MAVLINK20", "1")

from pymavlink.dialects.v20 import ardupilotmega as mavlink

from agent.mavlink.ftpwire import FtpPacket

# The two trivial scripts of the SITL "ftp" capture, byte for byte (tick.lua's CRC32 there: 0xd57ed916).
TICK_LUA = (b"-- tick.lua: trivial script, it only reschedules itself every 1000 ms\n"
            b"local function update()\n  return update, 1000\nend\nreturn update, 1000\n")
IDLE_LUA = (b"-- idle.lua: trivial script, counts its own runs, reschedules every 2000 ms\n"
            b"local runs = 0\nlocal function update()\n  runs = runs + 1\n  return update, 2000\nend\n"
            b"return update, 2000\n")


class RawClient:
    """A MAVLink peer on one vFC channel, as sysid/compid of our choosing."""

    def __init__(self, port: int, sysid: int = 1, compid: int = 191, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.sock.settimeout(0.05)
        self.mav = mavlink.MAVLink(None, sysid, compid)
        self.mav.robust_parsing = True
        self.parser = mavlink.MAVLink(None, sysid, compid)
        self.parser.robust_parsing = True
        self.pending: list[Any] = []
        self.closed = False
        self.ftp_seq = 100
        self.first_bytes_at: float | None = None

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: Any) -> None:
        buf = msg.pack(self.mav)
        self.mav.seq = (self.mav.seq + 1) % 256
        self.sock.sendall(bytes(buf))

    def heartbeat(self, mav_type: int = 18, autopilot: int = 8) -> None:
        self.send(mavlink.MAVLink_heartbeat_message(mav_type, autopilot, 0, 0, 4, 3))

    def command(self, command: int, *params: float, target: tuple[int, int] = (1, 1)) -> None:
        p = [*params, 0, 0, 0, 0, 0, 0, 0][:7]
        self.send(mavlink.MAVLink_command_long_message(target[0], target[1], command, 0, *p))

    def ftp(self, packet: FtpPacket, target: tuple[int, int] = (1, 1)) -> None:
        self.send(mavlink.MAVLink_file_transfer_protocol_message(0, target[0], target[1], packet.pack()))

    def _fill(self, timeout: float) -> None:
        try:
            self.sock.settimeout(max(0.001, timeout))
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError:
            self.closed = True
            return
        if not data:
            self.closed = True
            return
        if self.first_bytes_at is None:
            self.first_bytes_at = time.monotonic()
        self.pending.extend(m for m in (self.parser.parse_buffer(data) or []) if m.get_type() != "BAD_DATA")

    def recv(self, types: Iterable[str] | None = None, timeout: float = 2.0,
             cond: Callable[[Any], bool] | None = None) -> Any:
        wanted = set(types) if types is not None else None
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.pending):
                if (wanted is None or m.get_type() in wanted) and (cond is None or cond(m)):
                    del self.pending[: i + 1]
                    return m
            self.pending.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return None
            self._fill(min(remaining, 0.05))

    def collect(self, duration: float, types: Iterable[str] | None = None) -> list[Any]:
        wanted = set(types) if types is not None else None
        out: list[Any] = []
        deadline = time.monotonic() + duration
        while (remaining := deadline - time.monotonic()) > 0 and not self.closed:
            self._fill(min(remaining, 0.05))
            out.extend(m for m in self.pending if wanted is None or m.get_type() in wanted)
            self.pending.clear()
        return out

    def ftp_reply(self, timeout: float = 2.0) -> FtpPacket | None:
        msg = self.recv(["FILE_TRANSFER_PROTOCOL"], timeout)
        return None if msg is None else FtpPacket.unpack(msg.payload)
