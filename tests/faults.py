"""Fault injection for tests/test_faults.py: a link that can be cut or stalled, a pilot who keeps
trying to arm whatever happens to the FC, and the checks every fault test ends with.

Nothing here stands in for the thing under test: the relay moves the real bytes between the real
agent and the virtual FC (which runs the real Lua gate), and the checks read the agent's own files
with the agent's own parsers.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.audit import AuditReport, scan
from agent.gate.key import load_gate_key
from sim.scenarios.rig import ArmResult, Gcs
from sim.vfc.server import VirtualFC
from truststore.manifest_state import ManifestState

LAPSE_S = 3.0  # the gate's lapse time (agent/gate/lua/flightseal_gate.lua)
LAPSE_MARGIN_S = 1.5  # one gate tick, one FC arming round trip and a loaded 2-core machine


class Relay:
    """A loopback TCP relay between the agent and one virtual-FC port, whose link a test can cut or stall.

    ``cut`` is a cable pulled: both connections close, and while it lasts every new connection is
    accepted and closed at once (the agent sees its link drop and its reconnects fail). ``stall`` is a
    radio out of range: the connections stay up and every byte is dropped, both ways. ``restore``
    ends either. One thread forwards; every socket operation is bounded.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._sel = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._mode = "up"  # up, cut, stall
        self.connections = 0  # connections relayed to the FC (the agent's reconnects)
        self.refused = 0  # connections closed at once because the link was cut
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def cut(self) -> None:
        with self._lock:
            self._mode = "cut"
            self._close_pair()

    def stall(self) -> None:
        with self._lock:
            self._mode = "stall"

    def restore(self) -> None:
        with self._lock:
            self._mode = "up"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            self._close_pair()
        with contextlib.suppress(Exception):
            self._sel.unregister(self._listener)
        self._listener.close()
        self._sel.close()

    def _close_pair(self) -> None:
        if self._pair is None:
            return
        for s in self._pair:
            with contextlib.suppress(Exception):
                self._sel.unregister(s)
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._pair = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._sel.select(timeout=0.05)
            except (OSError, ValueError):
                events = []
            with self._lock:
                for key, _ in events:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif self._pair is not None and key.fileobj in self._pair:
                        self._forward(key.fileobj)

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._mode == "cut":
            self.refused += 1
            conn.close()
            return
        self._close_pair()  # the vFC takes one client per port: the agent's new connection replaces the old
        try:
            up = socket.create_connection(self.upstream, timeout=2.0)
        except OSError:
            conn.close()
            return
        for s in (conn, up):
            s.settimeout(2.0)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sel.register(s, selectors.EVENT_READ, None)
        self._pair = (conn, up)
        self.connections += 1

    def _forward(self, src: socket.socket) -> None:
        assert self._pair is not None
        dst = self._pair[1] if src is self._pair[0] else self._pair[0]
        try:
            data = src.recv(65536)
            if data and self._mode == "up":
                dst.sendall(data)
        except OSError:
            data = b""
        if not data:
            self._close_pair()


class Pilot:
    """A ground station on the FC's GCS port that keeps trying to arm, reconnecting when the FC reboots."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._gcs: Gcs | None = None

    def arm(self) -> ArmResult:
        """One arming attempt; an accepted one is disarmed at once. No answer counts as refused."""
        try:
            if self._gcs is None:
                self._gcs = Gcs(self.url)
            result = self._gcs.arm()
            if result.accepted:
                disarm = self._gcs.disarm()
                assert disarm.accepted, f"armed, and the FC did not disarm: {disarm}"
            return result
        except (OSError, EOFError, TimeoutError) as exc:  # the FC closed the port (rebooting)
            self.close()
            return ArmResult(False, None, f"no link to the FC ({exc.__class__.__name__})")

    def close(self) -> None:
        if self._gcs is not None:
            with contextlib.suppress(Exception):
                self._gcs.close()
            self._gcs = None


def arm_until(pilot: Pilot, accepted: bool, timeout: float, text: str = "") -> ArmResult:
    """Try to arm until the FC accepts (or refuses, with ``text`` in its reason); bounded."""
    deadline = time.monotonic() + timeout
    last: ArmResult | None = None
    while time.monotonic() < deadline:
        last = pilot.arm()
        if last.accepted == accepted and (accepted or text in last.text):
            return last
        time.sleep(0.2)
    raise AssertionError(f"arming never became {'accepted' if accepted else 'refused'} within {timeout:.0f} s: "
                         f"last {last}")


@dataclass(frozen=True)
class StateCheck:
    """What the agent's state directory holds, each file parsed by the agent's own reader."""

    root_version: int
    manifest_version: int  # 0: no manifest recorded yet
    gate_epoch: int
    audit: AuditReport
    leftovers: tuple[str, ...]  # temporary files a killed atomic write left behind


def check_state(state_dir: Path, audit_log: Path) -> StateCheck:
    """Every state file parses (or the check raises naming it); the audit chain is intact up to any torn tail."""
    root_version, _ = ManifestState(state_dir / "root-state.json", "root").load()
    manifest_version, _ = ManifestState(state_dir / "manifest-state.json").load()
    raw = (state_dir / "gate.seq").read_text(encoding="ascii").strip()
    assert raw.isdigit(), f"gate.seq holds {raw!r}"
    assert len(load_gate_key(state_dir / "gate.key")) == 32
    cache = state_dir / "image-cache"
    if cache.exists():
        assert isinstance(json.loads(cache.read_bytes()), dict), "image-cache is not a JSON object"
    leftovers = tuple(sorted(p.name for p in state_dir.iterdir() if p.name.startswith(".")))
    return StateCheck(root_version, manifest_version, int(raw), scan(audit_log), leftovers)


def audit_records(audit_log: Path) -> list[dict[str, Any]]:
    """Every complete record of the audit log, in order (a torn last line is left out)."""
    out: list[dict[str, Any]] = []
    for line in audit_log.read_bytes().split(b"\n"):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out


def audit_kinds(audit_log: Path) -> list[str]:
    return [str(r.get("kind")) for r in audit_records(audit_log)]


class GateWatch:
    """Samples what the FC's arming checks (the real Lua gate) say every 50 ms, from a thread.

    A pilot's arming attempt needs a link, and reconnecting one after an FC reboot takes longer than
    the agent takes to pass again; this watch sees the gate from the FC's first moment up. Each sample
    also records whether the agent had a pass in force (``in_force``), read just after the check.
    """

    def __init__(self, fc: VirtualFC, in_force: Callable[[], bool]) -> None:
        self.fc = fc
        self.in_force = in_force
        self.samples: list[tuple[float, bool, str, bool]] = []  # time, arming allowed, reason, agent pass in force
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gate-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fc = self.fc
        while not self._stop.wait(0.05):
            with fc._lock:  # the vFC's thread drives the Lua gate under this lock
                if fc._reboot_at is not None or fc._restart_at is not None:
                    continue  # rebooting: no port is open, nobody can arm
                ok, reason = fc.authority.arming_check()
            self.samples.append((time.monotonic(), ok, reason, self.in_force()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def allowed_without_pass(self, grace: float = 0.5) -> list[tuple[float, bool, str, bool]]:
        """Samples where the gate allowed arming while the agent had no pass in force, not counting the
        moment between the gate taking a pass and the agent noting the gate's ack (``grace``)."""
        bad: list[tuple[float, bool, str, bool]] = []
        for t, ok, reason, in_force in self.samples:
            later = [f for s, _, _, f in self.samples if t < s <= t + grace]
            if ok and not in_force and not any(later):
                bad.append((t, ok, reason, in_force))
        return bad
