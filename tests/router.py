"""A companion router with an attacker among its clients, for tests on the agent's link.

Like mavlink-router or MAVProxy with several outputs, it forwards every frame from the FC to the
agent and back, and lets another client put frames on the agent's side of the link: what a process
on the companion (or a bridged radio) can do where the link is not signed. Frames are forwarded
whole (parsed with pymavlink), so an injected frame always lands between two of the FC's.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

os.environ.setdefault("MAVLINK20", "1")

from pymavlink.dialects.v20 import ardupilotmega as mavlink


class Router:
    def __init__(self, fc_port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._fc_port = fc_port
        self._agent: socket.socket | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="router", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def inject(self, msg: Any, sysid: int, compid: int) -> None:
        """Send ``msg`` to the agent as (sysid, compid): a spoofer needs no more than this."""
        mav = mavlink.MAVLink(None, sysid, compid)
        data = bytes(msg.pack(mav))
        with self._lock:
            if self._agent is not None:
                self._agent.sendall(data)

    def inject_raw(self, data: bytes) -> None:
        """Bytes that are not a frame (line noise on a radio), to the agent."""
        with self._lock:
            if self._agent is not None:
                self._agent.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                agent, _ = self._listener.accept()
            except TimeoutError:
                continue
            fc = socket.create_connection(("127.0.0.1", self._fc_port), timeout=5)
            with self._lock:
                self._agent = agent
            up = threading.Thread(target=self._pump, args=(agent, fc, False), daemon=True)
            up.start()
            self._pump(fc, agent, True)
            up.join(timeout=5)
            with self._lock:
                self._agent = None
            agent.close()
            fc.close()

    def _pump(self, src: socket.socket, dst: socket.socket, framed: bool) -> None:
        parser = mavlink.MAVLink(None)
        parser.robust_parsing = True
        src.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                if not framed:
                    dst.sendall(data)
                    continue
                for msg in parser.parse_buffer(data) or []:
                    with self._lock:
                        dst.sendall(bytes(msg.get_msgbuf()))
            except OSError:
                return
