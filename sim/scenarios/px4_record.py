"""Record a real PX4 SITL's MAVLink behaviour into JSON captures: ``python -m sim.scenarios.px4_record OUTDIR``.

The virtual PX4 (``sim/vfc/px4.py``) is tested against these captures, so every fact it
imitates was seen on the real firmware first (docs/architecture.md, "An FC behaviour").

Two pymavlink connections talk to one PX4 SITL (``sim/launchers/px4.py``, instance 0 unless
``--instance``):

* ``onboard``: the companion's link. It binds 127.0.0.1:14540+N, where PX4's onboard link
  sends; it speaks as sysid ``RESPONDER_SYSID``, compid 191 (onboard computer), and is the
  arm-authorization responder (``COM_ARM_AUTH_ID`` = ``RESPONDER_SYSID``).
* ``gcs``: a ground station on PX4's GCS link (sends to 18570+N from an ephemeral port; PX4
  answers its first localhost peer). It arms as sysid 255, compid 190, and plays the attacker by
  sending as sysid ``ATTACKER_SYSID`` from the same socket.

Each capture is JSON: ``{"scenario", "description", "params", "firmware", "events", "summary"}``
where each event is ``{"t_ms", "link", "dir": "rx"|"tx"|"note", "msg"}``; ``t_ms`` is milliseconds
since the scenario's start (wall clock; SITL runs at 1x with a 4 ms lockstep).
Every loop here is bounded; the network is 127.0.0.1 only; only our own PX4 process is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("MAVLINK20", "1")

from pymavlink import mavutil

from sim.launchers.px4 import Px4Config, Px4Sitl

mav = mavutil.mavlink

RESPONDER_SYSID = 10
RESPONDER_COMPID = mav.MAV_COMP_ID_ONBOARD_COMPUTER
GCS_SYSID = 255
GCS_COMPID = mav.MAV_COMP_ID_MISSIONPLANNER
ATTACKER_SYSID = 77
CMD_ARM_AUTH = mav.MAV_CMD_ARM_AUTHORIZATION_REQUEST  # 3001
CMD_ARM = mav.MAV_CMD_COMPONENT_ARM_DISARM  # 400
PREARM_BIT = mav.MAV_SYS_STATUS_PREARM_CHECK

AUTH_PARAMS: dict[str, float] = {
    "COM_ARM_AUTH_REQ": 1, "COM_ARM_AUTH_ID": RESPONDER_SYSID, "COM_ARM_AUTH_MET": 0, "COM_ARM_AUTH_TO": 1,
}

# message types worth keeping in an event log (PX4 streams far more telemetry than this)
KEEP = {"HEARTBEAT", "COMMAND_LONG", "COMMAND_INT", "COMMAND_ACK", "STATUSTEXT", "PARAM_VALUE", "PARAM_SET",
        "PARAM_REQUEST_READ", "PARAM_REQUEST_LIST", "FILE_TRANSFER_PROTOCOL", "AUTOPILOT_VERSION"}


def float_bits_to_int(value: float) -> int:
    """PX4's bytewise encoding: the INT32's four bytes sent as the float's four bytes."""
    return int(struct.unpack("<i", struct.pack("<f", value))[0])


def int_to_float_bits(value: int) -> float:
    return float(struct.unpack("<f", struct.pack("<i", value))[0])


def msg_dict(msg: Any) -> dict[str, Any]:
    """A pymavlink message as plain JSON data, with its sender and (for INT params) the decoded value."""
    d: dict[str, Any] = {"mavpackettype": msg.get_type(), "_src": [msg.get_srcSystem(), msg.get_srcComponent()]}
    for name in msg.get_fieldnames():
        value = getattr(msg, name)
        if isinstance(value, bytes | bytearray):
            value = list(value)
        elif isinstance(value, float) and value != value:  # NaN is not JSON (an INT32 of -1 is a NaN's bits)
            value = "nan"
        d[name] = value
    if d["mavpackettype"] in ("PARAM_VALUE", "PARAM_SET") and d.get("param_type") in INT_TYPES:
        d["_int"] = float_bits_to_int(msg.param_value)
    if d["mavpackettype"] == "FILE_TRANSFER_PROTOCOL":
        d["_ftp"] = ftp_decode(bytes(d["payload"]))
        del d["payload"]  # the decoded header and data say it all, at a tenth of the size
    return d


INT_TYPES = {mav.MAV_PARAM_TYPE_UINT8, mav.MAV_PARAM_TYPE_INT8, mav.MAV_PARAM_TYPE_UINT16, mav.MAV_PARAM_TYPE_INT16,
             mav.MAV_PARAM_TYPE_UINT32, mav.MAV_PARAM_TYPE_INT32}


# ---- MAVLink FTP wire format (the 12-byte header of the FILE_TRANSFER_PROTOCOL payload)
FTP_OPS = {0: "None", 1: "TerminateSession", 2: "ResetSessions", 3: "ListDirectory", 4: "OpenFileRO", 5: "ReadFile",
           6: "CreateFile", 7: "WriteFile", 8: "RemoveFile", 9: "CreateDirectory", 10: "RemoveDirectory",
           11: "OpenFileWO", 12: "TruncateFile", 13: "Rename", 14: "CalcFileCRC32", 15: "BurstReadFile",
           128: "ACK", 129: "NAK"}
FTP_ERRORS = {0: "None", 1: "Fail", 2: "FailErrno", 3: "InvalidDataSize", 4: "InvalidSession",
              5: "NoSessionsAvailable", 6: "EOF", 7: "UnknownCommand", 8: "FileExists", 9: "FileProtected",
              10: "FileNotFound"}


def ftp_encode(seq: int, opcode: int, data: bytes = b"", offset: int = 0, session: int = 0,
               size: int | None = None) -> list[int]:
    header = struct.pack("<HBBBBBxI", seq, session, opcode, len(data) if size is None else size, 0, 0, offset)
    return list((header + data).ljust(251, b"\0"))


def ftp_decode(payload: bytes) -> dict[str, Any]:
    seq, session, opcode, size, req_opcode, burst_complete, offset = struct.unpack("<HBBBBBxI", payload[:12])
    data = payload[12:12 + size]
    out: dict[str, Any] = {"seq": seq, "session": session, "opcode": FTP_OPS.get(opcode, opcode), "size": size,
                           "req_opcode": FTP_OPS.get(req_opcode, req_opcode), "burst_complete": burst_complete,
                           "offset": offset}
    if opcode == 129 and data:
        out["error"] = FTP_ERRORS.get(data[0], data[0])
        if len(data) > 1:
            out["errno"] = data[1]
    else:
        out["data_hex"] = data.hex()
    return out


@dataclass
class Event:
    t_ms: float
    link: str
    dir: str
    msg: dict[str, Any]


Hook = Callable[["Tap", Any], None]


class Recorder:
    """Shared clock and event log of one scenario, written by the taps' threads."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.keep: set[str] = set(KEEP)

    def now_ms(self) -> float:
        return round((time.monotonic() - self.t0) * 1000.0, 2)

    def restart(self) -> None:
        with self.lock:
            self.t0 = time.monotonic()
            self.events = []

    def add(self, link: str, direction: str, msg: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(Event(self.now_ms(), link, direction, msg))

    def note(self, text: str, **extra: Any) -> None:
        self.add("-", "note", {"text": text, **extra})

    def dump(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e.__dict__ for e in self.events]


class Tap:
    """One pymavlink connection with a reader thread that logs what it receives and runs hooks at once.

    Hooks run in the reader thread, so an answer to an arm-authorization request leaves within a
    fraction of a millisecond of the request's arrival (what case (e) needs).
    """

    def __init__(self, rec: Recorder, link: str, url: str, sysid: int, compid: int, px4_sysid: int) -> None:
        self.rec = rec
        self.px4_sysid = px4_sysid
        self.link = link
        self.conn = mavutil.mavlink_connection(url, source_system=sysid, source_component=compid)
        self.send_lock = threading.Lock()
        self.hooks: list[Hook] = []
        # what arrived, numbered, so a wait can also match a reply that beat it (the virtual PX4 answers
        # in well under a millisecond, before the caller has started waiting)
        self.count = 0
        self.history: deque[tuple[int, Any]] = deque(maxlen=4096)
        self._hist_lock = threading.Lock()
        self._local = threading.local()
        self.last: dict[str, Any] = {}
        self.heartbeats: list[tuple[float, Any]] = []
        self.forwarded: dict[int, int] = {}  # heartbeats of other peers that PX4 forwarded to this link
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tap-{link}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.conn.recv_match(blocking=True, timeout=0.05)
            except OSError:
                continue
            if msg is None:
                continue
            kind = msg.get_type()
            if kind == "BAD_DATA":
                continue
            from_px4 = msg.get_srcSystem() == self.px4_sysid and msg.get_srcComponent() == 1
            if from_px4:  # PX4 forwards other peers' messages (heartbeats) between its links
                self.last[kind] = msg
                if kind == "HEARTBEAT":
                    self.heartbeats.append((self.rec.now_ms(), msg))
            if kind == "HEARTBEAT" and not from_px4:
                self.forwarded[msg.get_srcSystem()] = self.forwarded.get(msg.get_srcSystem(), 0) + 1
            elif kind in self.rec.keep:
                self.rec.add(self.link, "rx", msg_dict(msg))
            with self._hist_lock:
                self.count += 1
                self.history.append((self.count, msg))
                hooks = list(self.hooks)
            for hook in hooks:
                hook(self, msg)

    def send(self, name: str, *args: Any, sysid: int | None = None, compid: int | None = None) -> None:
        """Send ``mav.<name>_send(*args)``, optionally as another system (the attacker), and log it.

        Remembers (per thread) what had arrived before it, so that the caller's next :meth:`wait` sees
        the answer even if it came back at once."""
        self._local.mark = self.mark()
        with self.send_lock:
            m = self.conn.mav
            saved = (m.srcSystem, m.srcComponent)
            if sysid is not None:
                m.srcSystem = sysid
            if compid is not None:
                m.srcComponent = compid
            try:
                msg = getattr(m, f"{name}_encode")(*args)
                m.send(msg)
            finally:
                m.srcSystem, m.srcComponent = saved
        if msg.get_type() in self.rec.keep and msg.get_type() != "HEARTBEAT":
            self.rec.add(self.link, "tx", msg_dict(msg))

    def heartbeat(self) -> None:
        kind = mav.MAV_TYPE_GCS if self.link == "gcs" else mav.MAV_TYPE_ONBOARD_CONTROLLER
        self.send("heartbeat", kind, mav.MAV_AUTOPILOT_INVALID, 0, 0, mav.MAV_STATE_ACTIVE)

    def mark(self) -> int:
        with self._hist_lock:
            return self.count

    def wait(self, kind: str, timeout: float, cond: Callable[[Any], bool] = lambda m: True,
             after: int | None = None) -> Any:
        """The first matching message that arrived after ``after`` (default: after this thread's last
        :meth:`send` on this tap, else after this call), waiting at most ``timeout`` seconds."""
        box: list[Any] = []
        done = threading.Event()
        since = after if after is not None else getattr(self._local, "mark", None)

        def hook(_: Tap, msg: Any) -> None:
            if not done.is_set() and msg.get_type() == kind and cond(msg):
                box.append(msg)
                done.set()

        with self._hist_lock:
            if since is not None:
                for n, msg in self.history:
                    if n > since and msg.get_type() == kind and cond(msg):
                        return msg
            self.hooks.append(hook)
        try:
            done.wait(timeout)
        finally:
            with self._hist_lock:
                self.hooks.remove(hook)
        return box[0] if box else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.conn.close()


@dataclass
class Rig:
    """A PX4 SITL plus the two taps and a 1 Hz heartbeat from both (PX4 wants to see its peers)."""

    px4: Any  # a Px4Sitl; or anything with onboard_url, gcs_url and sysid (tests drive the virtual PX4 so)
    rec: Recorder = field(default_factory=Recorder)
    onboard: Tap | None = None
    gcs: Tap | None = None
    _hb_stop: threading.Event = field(default_factory=threading.Event)

    def open(self) -> Rig:
        self.onboard = Tap(self.rec, "onboard", self.px4.onboard_url, RESPONDER_SYSID, RESPONDER_COMPID,
                           self.px4.sysid)
        self.gcs = Tap(self.rec, "gcs", self.px4.gcs_url, GCS_SYSID, GCS_COMPID, self.px4.sysid)
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def _beat(self) -> None:
        while not self._hb_stop.wait(1.0 if self.gcs and self.gcs.heartbeats else 0.2):
            for tap in (self.onboard, self.gcs):
                if tap is not None:
                    tap.heartbeat()

    def close(self) -> None:
        self._hb_stop.set()
        for tap in (self.onboard, self.gcs):
            if tap is not None:
                tap.close()

    @property
    def ob(self) -> Tap:
        assert self.onboard is not None
        return self.onboard

    @property
    def gc(self) -> Tap:
        assert self.gcs is not None
        return self.gcs

    @property
    def sysid(self) -> int:
        return int(self.px4.sysid)

    # ---- helpers on PX4
    def armed(self) -> bool:
        hb = self.ob.last.get("HEARTBEAT")
        return bool(hb is not None and hb.base_mode & mav.MAV_MODE_FLAG_SAFETY_ARMED)

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Wait until PX4 reports its pre-arm checks passing (SYS_STATUS health bit); returns seconds waited."""
        t = time.monotonic()
        deadline = t + timeout
        while time.monotonic() < deadline:
            st = self.ob.last.get("SYS_STATUS")
            if st is not None and st.onboard_control_sensors_health & PREARM_BIT:
                return time.monotonic() - t
            time.sleep(0.2)
        raise RuntimeError("PX4 pre-arm checks did not pass in time")

    def param_set(self, tap: Tap, name: str, value: float, ptype: int) -> Any:
        wire = int_to_float_bits(int(value)) if ptype in INT_TYPES else float(value)
        for _ in range(3):
            tap.send("param_set", self.sysid, 1, name.encode(), wire, ptype)
            got = tap.wait("PARAM_VALUE", 2.0, lambda m: m.param_id == name)
            if got is not None:
                return got
        raise RuntimeError(f"no PARAM_VALUE echo for {name}")

    def command(self, tap: Tap, command: int, *params: float, sysid: int | None = None) -> None:
        p = [*params, 0, 0, 0, 0, 0, 0, 0][:7]
        tap.send("command_long", self.sysid, 1, command, 0, *p, sysid=sysid)

    def arm(self, tap: Tap | None = None, timeout: float = 5.0) -> Any:
        """Send the arm command and wait for its COMMAND_ACK (PX4 blocks in the auth wait meanwhile)."""
        tap = tap or self.gc
        self.command(tap, CMD_ARM, 1)
        return tap.wait("COMMAND_ACK", timeout, lambda m: m.command == CMD_ARM)

    def disarm(self, tap: Tap | None = None) -> Any:
        tap = tap or self.gc
        ack = None
        for _ in range(3):
            before = self.ob.mark()
            self.command(tap, CMD_ARM, 0)
            ack = tap.wait("COMMAND_ACK", 3.0, lambda m: m.command == CMD_ARM)
            if ack is not None and ack.result == mav.MAV_RESULT_ACCEPTED:
                # the armed flag leaves with PX4's next heartbeat (1 Hz)
                self.ob.wait("HEARTBEAT", 2.0, lambda m: m.get_srcSystem() == self.sysid
                             and m.get_srcComponent() == 1 and not m.base_mode & mav.MAV_MODE_FLAG_SAFETY_ARMED,
                             after=before)
            if not self.armed():
                break
        return ack

    def auth_ack(self, tap: Tap, result: int, progress: int = 0, param2: int = 0, sysid: int | None = None,
                 target_system: int | None = None, target_component: int = 1) -> None:
        tap.send("command_ack", CMD_ARM_AUTH, result, progress, param2,
                 self.sysid if target_system is None else target_system, target_component, sysid=sysid)


# ---------------------------------------------------------------- scenarios
Responder = Callable[[Rig, Tap, Any, int], None]  # (rig, tap, request, nth request on that link)


def on_auth_request(rig: Rig, links: Iterable[Tap], answer: Responder) -> Callable[[], None]:
    """Install ``answer`` for every COMMAND_LONG 3001 seen on the given links; returns the remover."""
    counts: dict[str, int] = {}
    installed: list[tuple[Tap, Hook]] = []
    for tap in links:
        def hook(t: Tap, msg: Any) -> None:
            if msg.get_type() == "COMMAND_LONG" and msg.command == CMD_ARM_AUTH:
                counts[t.link] = counts.get(t.link, 0) + 1
                answer(rig, t, msg, counts[t.link])
        tap.hooks.append(hook)
        installed.append((tap, hook))

    def remove() -> None:
        for tap, hook in installed:
            if hook in tap.hooks:
                tap.hooks.remove(hook)
    return remove


def later(delay_s: float, fn: Callable[[], None]) -> None:
    timer = threading.Timer(delay_s, fn)
    timer.daemon = True
    timer.start()


def summarize_auth(rig: Rig, since_ms: float, arm_ack: Any) -> dict[str, Any]:
    """The facts of one arm attempt, from the event log."""
    events = [e for e in rig.rec.dump() if e["t_ms"] >= since_ms]
    arm_tx = next((e for e in events if e["dir"] == "tx" and e["msg"]["mavpackettype"] == "COMMAND_LONG"
                   and e["msg"]["command"] == CMD_ARM and e["msg"]["param1"] == 1), None)
    t_arm = arm_tx["t_ms"] if arm_tx else since_ms
    requests = [{"t_ms": round(e["t_ms"] - t_arm, 2), "link": e["link"], "src": e["msg"]["_src"],
                 "target": [e["msg"]["target_system"], e["msg"]["target_component"]],
                 "confirmation": e["msg"]["confirmation"],
                 "params": [e["msg"][f"param{i}"] for i in range(1, 8)]}
                for e in events if e["dir"] == "rx" and e["msg"]["mavpackettype"] == "COMMAND_LONG"
                and e["msg"]["command"] == CMD_ARM_AUTH]
    texts = []
    seen: set[tuple[str, str]] = set()
    for e in events:
        if e["dir"] == "rx" and e["msg"]["mavpackettype"] == "STATUSTEXT":
            key = (e["link"], e["msg"]["text"])
            texts.append({"t_ms": round(e["t_ms"] - t_arm, 2), "link": e["link"], "severity": e["msg"]["severity"],
                          "text": e["msg"]["text"]})
            seen.add(key)
    acks_sent = [{"t_ms": round(e["t_ms"] - t_arm, 2), "link": e["link"], "src": e["msg"]["_src"],
                  "result": e["msg"]["result"], "progress": e["msg"]["progress"],
                  "result_param2": e["msg"]["result_param2"],
                  "target": [e["msg"]["target_system"], e["msg"]["target_component"]]}
                 for e in events if e["dir"] == "tx" and e["msg"]["mavpackettype"] == "COMMAND_ACK"]
    return {
        "arm_sent_t_ms": t_arm,
        "auth_requests": requests,
        "acks_sent": acks_sent,
        "arm_ack": None if arm_ack is None else {"result": arm_ack.result,
                                                 "target": [arm_ack.target_system, arm_ack.target_component]},
        "arm_ack_t_ms": next((round(e["t_ms"] - t_arm, 2) for e in events if e["dir"] == "rx"
                              and e["link"] == "gcs" and e["msg"]["mavpackettype"] == "COMMAND_ACK"
                              and e["msg"]["command"] == CMD_ARM), None),
        "armed": rig.armed(),
        "texts": texts,
    }


def arm_attempt(rig: Rig, name: str, answer: Responder | None, links: str = "onboard",
                pre: Callable[[], None] | None = None, settle: float = 1.5) -> dict[str, Any]:
    """One arm attempt with a responder policy; always disarms afterwards. Never takes off."""
    rig.rec.note(f"attempt {name}")
    since = rig.rec.now_ms()
    remove = on_auth_request(rig, {"onboard": [rig.ob], "gcs": [rig.gc], "both": [rig.ob, rig.gc]}[links],
                             answer) if answer else (lambda: None)
    try:
        if pre is not None:
            pre()
        ack = rig.arm()
        time.sleep(settle)  # late retries, texts, the heartbeat showing the armed flag
        summary = summarize_auth(rig, since, ack)
    finally:
        remove()
    if rig.armed() or summary["armed"]:
        rig.disarm()
        time.sleep(0.5)
    summary["disarmed_after"] = not rig.armed()
    rig.rec.note(f"end {name}", armed=summary["armed"])
    return summary


def ack_after(delay_s: float, result: int, progress: int = 0, param2: int = 0, only_first: bool = True,
              sysid: int | None = None, via: str | None = None) -> Responder:
    """A responder answering a request ``delay_s`` after it arrived (0: at once, in the reader thread)."""
    def answer(rig: Rig, tap: Tap, req: Any, nth: int) -> None:
        if only_first and nth > 1:
            return
        out = {"onboard": rig.ob, "gcs": rig.gc}[via] if via else tap

        def send() -> None:
            rig.auth_ack(out, result, progress, param2, sysid=sysid)
        if delay_s <= 0:
            send()
        else:
            later(delay_s, send)
    return answer


def both(*answers: Responder) -> Responder:
    def answer(rig: Rig, tap: Tap, req: Any, nth: int) -> None:
        for a in answers:
            a(rig, tap, req, nth)
    return answer


def firmware_facts(rig: Rig) -> dict[str, Any]:
    av = rig.ob.last.get("AUTOPILOT_VERSION")
    if av is None:
        return {}
    fcv = bytes(av.flight_custom_version)
    return {"flight_sw_version": av.flight_sw_version, "flight_custom_version_hex": fcv.hex(),
            "git_hash_prefix": fcv[::-1].hex(), "capabilities": av.capabilities}


def request_autopilot_version(rig: Rig, tap: Tap) -> Any:
    for _ in range(3):
        rig.command(tap, mav.MAV_CMD_REQUEST_MESSAGE, mav.MAVLINK_MSG_ID_AUTOPILOT_VERSION)
        got = tap.wait("AUTOPILOT_VERSION", 2.0)
        if got is not None:
            return got
    return None


def rec_boot(rig: Rig, out: dict[str, Any]) -> None:
    """HEARTBEATs from the first one, then AUTOPILOT_VERSION (REQUEST_MESSAGE and the legacy request)."""
    first = rig.ob.wait("HEARTBEAT", 60.0)
    if first is None:
        raise RuntimeError("no heartbeat")
    rig.wait_ready(90.0)
    time.sleep(8.0)  # a few more heartbeats after the checks pass
    av = request_autopilot_version(rig, rig.ob)
    rig.command(rig.ob, mav.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES, 1)
    rig.ob.wait("AUTOPILOT_VERSION", 2.0)
    rig.command(rig.ob, mav.MAV_CMD_REQUEST_PROTOCOL_VERSION, 1)
    time.sleep(1.0)
    hbs = []
    prev: tuple[int, ...] | None = None
    for t, hb in rig.ob.heartbeats:
        key = (hb.type, hb.autopilot, hb.base_mode, hb.custom_mode, hb.system_status, hb.mavlink_version)
        if key != prev:
            hbs.append({"t_ms": t, **msg_dict(hb)})
            prev = key
    caps = av.capabilities if av is not None else 0
    out["summary"] = {
        "heartbeat_changes": hbs,
        "heartbeat_count": len(rig.ob.heartbeats),
        "autopilot_version": msg_dict(av) if av is not None else None,
        "capabilities_names": [e.name for v, e in sorted(mav.enums["MAV_PROTOCOL_CAPABILITY"].items())
                               if v and v & caps == v],
        "param_encode_bytewise": bool(caps & mav.MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE),
        "param_encode_c_cast": bool(caps & mav.MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_C_CAST),
        **firmware_facts(rig),
    }


def rec_params(rig: Rig, out: dict[str, Any]) -> dict[str, Any]:
    """PARAM_REQUEST_LIST (all of it, into param-list.json), PARAM_REQUEST_READ by name and index, PARAM_SET echoes."""
    rig.ob.wait("HEARTBEAT", 30.0)
    time.sleep(2.0)
    rig.rec.keep.discard("PARAM_VALUE")  # the full list goes to params.json, not the event log
    values: dict[int, Any] = {}
    extras: list[Any] = []
    count = None
    t_start = time.monotonic()

    def collect(_: Tap, msg: Any) -> None:
        nonlocal count
        if msg.get_type() == "PARAM_VALUE":
            count = msg.param_count
            if 0 <= msg.param_index < 65535:
                values.setdefault(msg.param_index, msg)
            else:
                extras.append(msg)
    rig.ob.hooks.append(collect)
    try:
        rig.ob.send("param_request_list", rig.sysid, 1)
        last_n, quiet = -1, 0
        while time.monotonic() - t_start < 60 and quiet < 10:
            time.sleep(0.2)
            quiet = quiet + 1 if len(values) == last_n else 0
            last_n = len(values)
            if count is not None and len(values) >= count:
                break
        missing = [i for i in range(count or 0) if i not in values]
        for i in missing[:200]:
            rig.ob.send("param_request_read", rig.sysid, 1, b"", i)
            time.sleep(0.02)
        time.sleep(1.0)
    finally:
        rig.ob.hooks.remove(collect)
    duration = time.monotonic() - t_start
    rig.rec.keep.add("PARAM_VALUE")
    plist = []
    for i in sorted(values):
        m = values[i]
        wire = m.param_value if m.param_value == m.param_value else None  # an INT32's bits may be a NaN: not JSON
        entry: dict[str, Any] = {"index": i, "name": m.param_id, "type": m.param_type, "wire": wire}
        entry["value"] = float_bits_to_int(m.param_value) if m.param_type in INT_TYPES else m.param_value
        plist.append(entry)
    types: dict[int, int] = {}
    for p in plist:
        types[p["type"]] = types.get(p["type"], 0) + 1

    # by name, by index, and sets
    def read(name: str = "", index: int = -1) -> Any:
        rig.ob.send("param_request_read", rig.sysid, 1, name.encode(), index)
        return rig.ob.wait("PARAM_VALUE", 2.0,
                           lambda m: (m.param_id == name) if name else (m.param_index == index))
    by_name = read("COM_ARM_AUTH_ID")
    by_index = read(index=0)
    unknown = read("NO_SUCH_PARAM")
    set_int = rig.param_set(rig.ob, "COM_ARM_AUTH_ID", RESPONDER_SYSID, mav.MAV_PARAM_TYPE_INT32)
    set_float = rig.param_set(rig.ob, "COM_ARM_AUTH_TO", 1.5, mav.MAV_PARAM_TYPE_REAL32)
    # an INT32 written with the C-cast convention (value 7.0 as a float): what does PX4 store?
    rig.ob.send("param_set", rig.sysid, 1, b"SDLOG_DIRS_MAX", 7.0, mav.MAV_PARAM_TYPE_INT32)
    cast = rig.ob.wait("PARAM_VALUE", 2.0, lambda m: m.param_id == "SDLOG_DIRS_MAX")
    rig.param_set(rig.ob, "SDLOG_DIRS_MAX", 7, mav.MAV_PARAM_TYPE_INT32)
    # a set with the wrong type: REAL32 for an INT32 parameter
    rig.ob.send("param_set", rig.sysid, 1, b"COM_ARM_AUTH_MET", 1.0, mav.MAV_PARAM_TYPE_REAL32)
    wrong_type = rig.ob.wait("PARAM_VALUE", 2.0, lambda m: m.param_id == "COM_ARM_AUTH_MET")
    rig.param_set(rig.ob, "COM_ARM_AUTH_MET", 0, mav.MAV_PARAM_TYPE_INT32)
    rig.param_set(rig.ob, "COM_ARM_AUTH_TO", 1.0, mav.MAV_PARAM_TYPE_REAL32)

    def d(m: Any) -> dict[str, Any] | None:
        return None if m is None else msg_dict(m)
    out["summary"] = {
        "param_count": count, "received": len(plist), "missing_after_list": len(missing),
        "list_duration_s": round(duration, 2),
        "types_histogram": {str(k): v for k, v in sorted(types.items())},
        "non_indexed_values": [msg_dict(m) for m in extras],
        "read_by_name": d(by_name), "read_by_index_0": d(by_index), "read_unknown_name": d(unknown),
        "set_int32_bytewise_echo": d(set_int), "set_real32_echo": d(set_float),
        "set_int32_as_c_cast_7.0_echo": d(cast), "set_int32_param_with_real32_type_echo": d(wrong_type),
    }
    meta = _param_metadata(rig.px4.build)
    for entry in plist:
        if entry["name"] in meta:
            entry["meta_default"] = meta[entry["name"]]
    return {"firmware": firmware_facts(rig), "count": count,
            "presets": {k: v for k, v in AUTH_PARAMS.items()},  # set at boot by this recorder (PX4_PARAM_*)
            "note": "values as listed on the recorded vehicle; meta_default is the build's parameters.json default",
            "params": plist}


def _param_metadata(build: Path | None) -> dict[str, Any]:
    """Compile-time defaults from the build's parameters.json (the rcS and airframe may override them)."""
    try:
        data = json.loads(((build or Path()) / "parameters.json").read_text())
    except (OSError, ValueError):
        return {}
    return {p["name"]: p.get("default") for p in data.get("parameters", []) if "name" in p}


class Ftp:
    """A minimal MAVLink FTP client that records every request and reply (ACK or NAK) as it is."""

    def __init__(self, rig: Rig, tap: Tap) -> None:
        self.rig = rig
        self.tap = tap
        self.seq = 0

    def op(self, opcode: int, data: bytes = b"", offset: int = 0, session: int = 0,
           size: int | None = None) -> dict[str, Any] | None:
        for _ in range(3):
            seq = self.seq
            self.tap.send("file_transfer_protocol", 0, self.rig.sysid, 1,
                          ftp_encode(seq, opcode, data, offset, session, size))
            want = (seq + 1) & 0xFFFF

            def is_reply(m: Any, want: int = want) -> bool:
                return bool(ftp_decode(bytes(m.payload))["seq"] == want)
            got = self.tap.wait("FILE_TRANSFER_PROTOCOL", 1.5, is_reply)
            if got is not None:
                self.seq = (seq + 2) & 0xFFFF
                dec = ftp_decode(bytes(got.payload))
                raw = bytes(got.payload)[12:12 + dec["size"]]
                dec["_data"] = raw
                return dec
        return None

    def listdir(self, path: str) -> dict[str, Any]:
        entries: list[str] = []
        replies: list[Any] = []
        offset = 0
        for _ in range(50):
            r = self.op(3, path.encode(), offset=offset)
            if r is None:
                replies.append("timeout")
                break
            if r["opcode"] == "NAK":
                replies.append({k: v for k, v in r.items() if k != "_data"})
                break
            chunk = [e for e in r["_data"].split(b"\0") if e]
            if not chunk:
                break
            entries += [e.decode(errors="replace") for e in chunk]
            offset += len(chunk)
        return {"path": path, "entries": entries, "end": replies}

    def read(self, path: str, limit: int = 65536) -> dict[str, Any]:
        r = self.op(4, path.encode())
        if r is None or r["opcode"] == "NAK":
            return {"path": path, "open": None if r is None else {k: v for k, v in r.items() if k != "_data"}}
        session = r["session"]
        size = struct.unpack("<I", r["_data"][:4])[0] if len(r["_data"]) >= 4 else None
        data = b""
        end = None
        for _ in range(limit // 239 + 2):
            rr = self.op(5, b"", offset=len(data), session=session, size=239)
            if rr is None or rr["opcode"] == "NAK":
                end = None if rr is None else {k: v for k, v in rr.items() if k != "_data"}
                break
            data += rr["_data"]
            if len(data) >= limit:
                break
        self.op(1, session=session)
        return {"path": path, "open_size": size, "session": session, "data": data, "end": end}

    def crc(self, path: str) -> dict[str, Any]:
        r = self.op(14, path.encode())
        if r is None:
            return {"path": path, "reply": None}
        out = {k: v for k, v in r.items() if k != "_data"}
        if r["opcode"] == "ACK":
            out["crc32"] = struct.unpack("<I", r["_data"][:4])[0]
        return out


def rec_ftp(rig: Rig, out: dict[str, Any], outdir: Path) -> None:
    """Directory listings, file reads, CRC32, and the ArduPilot-only virtual files (@SYS, @PARAM)."""
    rig.ob.wait("HEARTBEAT", 30.0)
    rig.wait_ready(90.0)
    # a parameter set through MAVLink, so parameters.bson holds something we chose
    rig.param_set(rig.ob, "COM_ARM_AUTH_TO", 1.5, mav.MAV_PARAM_TYPE_REAL32)
    time.sleep(1.5)  # PX4 saves parameters from a work queue item, shortly after a set
    ftp = Ftp(rig, rig.ob)
    ftp.op(2)  # ResetSessions
    listings = {}
    for path in ("/", ".", "", "etc", "/etc", "etc/init.d-posix", "etc/init.d-posix/airframes", "etc/init.d",
                 "etc/extras", "log", "eeprom", "/fs/microsd", "../", "@SYS", "@PARAM", "/proc"):
        res = ftp.listdir(path)
        if path in ("../", "/proc"):  # outside the vehicle's tree: keep only the fact, not the host's names
            res = {"path": path, "entries_count": len(res["entries"]), "end": res["end"]}
        elif path == "etc/init.d-posix/airframes":
            res["entries_count"] = len(res["entries"])
        listings[path] = res
    files = {}
    for path in ("etc/init.d-posix/airframes/10040_sihsim_quadx", "/etc/init.d-posix/rcS", "parameters.bson",
                 "parameters_backup.bson", "etc/init.d/rc.mc_defaults", "@SYS/flash.bin", "@PARAM/param.pck",
                 "@ROMFS/locations.txt", "no/such/file", "dataman"):
        res = ftp.read(path, limit=4096 if path == "dataman" else 65536)
        if "data" in res:
            data = res.pop("data")
            res["bytes_read"] = len(data)
            safe = path.strip("/").replace("/", "_")
            if path != "dataman":
                (outdir / "ftp-files").mkdir(exist_ok=True)
                (outdir / "ftp-files" / safe).write_bytes(data)
                res["saved_as"] = f"ftp-files/{safe}"
            if path.endswith(".bson"):
                res["bson"] = bson_decode(data)
        files[path] = res
    crcs = {p: ftp.crc(p) for p in ("etc/init.d-posix/airframes/10040_sihsim_quadx", "parameters.bson",
                                    "@SYS/flash.bin", "no/such/file")}
    # the same file through the local filesystem, to compare with the CRC PX4 computed
    local = (rig.px4.rootfs / "etc/init.d-posix/airframes/10040_sihsim_quadx").read_bytes()
    burst = ftp_burst(rig, ftp, "etc/init.d-posix/airframes/10040_sihsim_quadx")
    # a second OpenFileRO while one session is open: PX4 has a single session
    first = ftp.op(4, b"etc/init.d-posix/rcS")
    second = ftp.op(4, b"etc/init.d/rc.mc_defaults")
    ftp.op(1, session=0)
    read_after_close = ftp.op(5, session=0, size=239)
    write_probe = ftp.op(6, b"flightseal_probe.txt")  # CreateFile: does PX4 let a peer write?
    if write_probe and write_probe["opcode"] == "ACK":
        ftp.op(1, session=write_probe["session"])
        ftp.op(8, b"flightseal_probe.txt")
    unknown = ftp.op(99)
    out["summary"] = {
        "listings": listings, "files": files, "crc32": crcs,
        "airframe_local_size": len(local),
        # PX4's crc32part starts from 0 and has no final XOR: zlib's CRC-32 with both inverted
        "airframe_zlib_crc32": zlib.crc32(local),
        "airframe_crc32_init0_noxor": zlib.crc32(local, 0xFFFFFFFF) ^ 0xFFFFFFFF,
        "burst_read_airframe": burst,
        "open_twice": {"first": _strip(first), "second": _strip(second)},
        "read_after_terminate": _strip(read_after_close),
        "create_file_probe": None if write_probe is None else {k: v for k, v in write_probe.items() if k != "_data"},
        "unknown_opcode_99": None if unknown is None else {k: v for k, v in unknown.items() if k != "_data"},
    }


def _strip(reply: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if reply is None else {k: v for k, v in reply.items() if k != "_data"}


def ftp_burst(rig: Rig, ftp: Ftp, path: str) -> dict[str, Any]:
    """OpenFileRO, one BurstReadFile from offset 0, and every reply until a NAK or burst_complete."""
    opened = ftp.op(4, path.encode())
    if opened is None or opened["opcode"] != "ACK":
        return {"open": _strip(opened)}
    replies: list[dict[str, Any]] = []
    done = threading.Event()

    def hook(_: Tap, msg: Any) -> None:
        if msg.get_type() == "FILE_TRANSFER_PROTOCOL":
            dec = ftp_decode(bytes(msg.payload))
            if dec["req_opcode"] == "BurstReadFile":
                replies.append({k: v for k, v in dec.items() if k != "data_hex"} | {"bytes": dec["size"]})
                if dec["opcode"] == "NAK" or dec["burst_complete"]:
                    done.set()
    ftp.tap.hooks.append(hook)
    try:
        ftp.tap.send("file_transfer_protocol", 0, rig.sysid, 1, ftp_encode(ftp.seq, 15, b"", 0, 0, 239))
        done.wait(3.0)
    finally:
        ftp.tap.hooks.remove(hook)
    ftp.seq = (ftp.seq + 1 + len(replies)) & 0xFFFF
    ftp.op(1, session=0)
    return {"open": _strip(opened), "request_size": 239, "replies": replies,
            "bytes_total": sum(r["bytes"] for r in replies if r["opcode"] == "ACK")}


def bson_decode(data: bytes) -> Any:
    """Decode PX4's parameters.bson (a flat BSON document of int32 / double / bool), enough to list it."""
    try:
        total = struct.unpack("<i", data[:4])[0]
        pos, out = 4, {}
        while pos < min(total, len(data)) - 1:
            kind = data[pos]
            pos += 1
            end = data.index(b"\0", pos)
            name = data[pos:end].decode()
            pos = end + 1
            if kind == 0x10:
                out[name] = {"type": "int32", "value": struct.unpack("<i", data[pos:pos + 4])[0]}
                pos += 4
            elif kind == 0x01:
                out[name] = {"type": "double", "value": struct.unpack("<d", data[pos:pos + 8])[0]}
                pos += 8
            elif kind == 0x08:
                out[name] = {"type": "bool", "value": bool(data[pos])}
                pos += 1
            elif kind == 0x12:
                out[name] = {"type": "int64", "value": struct.unpack("<q", data[pos:pos + 8])[0]}
                pos += 8
            else:
                out[name] = {"type": f"0x{kind:02x}"}
                break
        return {"declared_size": total, "entries": out}
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        return {"error": str(exc)}


def rec_arm_auth(rig: Rig, out: dict[str, Any]) -> None:
    """Cases (a)-(h) of arm authorization, each one arm attempt (then disarm) on one PX4 boot."""
    rig.ob.wait("HEARTBEAT", 30.0)
    ready_s = rig.wait_ready(120.0)
    time.sleep(1.0)
    acc, den, tmp = mav.MAV_RESULT_ACCEPTED, mav.MAV_RESULT_DENIED, mav.MAV_RESULT_TEMPORARILY_REJECTED
    cases: dict[str, Any] = {"ready_after_s": round(ready_s, 1)}

    def run(name: str, answer: Responder | None, **kw: Any) -> None:
        cases[name] = arm_attempt(rig, name, answer, **kw)
        time.sleep(1.5)

    run("a_no_answer", None)
    run("b_accepted_after_5ms", ack_after(0.005, acc, param2=5))
    time.sleep(6.0)  # let the 5 s validity of (b) lapse before the next case
    run("b2_accepted_after_50ms_answering_every_request", ack_after(0.05, acc, param2=1, only_first=False))
    time.sleep(2.0)
    # MAV_ARM_AUTH_DENIED_REASON: GENERIC is 0, NONE is 1 ("the authorizer tells the GCS itself")
    run("c_denied_generic_progress0", ack_after(0.005, den, progress=mav.MAV_ARM_AUTH_DENIED_REASON_GENERIC))
    run("c_denied_none_progress1", ack_after(0.005, den, progress=mav.MAV_ARM_AUTH_DENIED_REASON_NONE))
    run("c_denied_waypoint_progress2", ack_after(0.005, den, progress=2, param2=7))
    run("c_denied_timeout_reason", ack_after(0.005, den, progress=mav.MAV_ARM_AUTH_DENIED_REASON_TIMEOUT))
    run("d_temporarily_rejected", ack_after(0.005, tmp))
    for n in range(3):  # the phase of the 4 ms step decides; try a few times
        run(f"e_accepted_at_once_first_request_only_{n}", ack_after(0.0, acc, param2=1))
        time.sleep(2.0)
    run("e2_accepted_at_once_every_request", ack_after(0.0, acc, param2=1, only_first=False))
    time.sleep(2.0)
    for ms in (1, 2, 3, 4):
        run(f"e3_accepted_after_{ms}ms", ack_after(ms / 1000.0, acc, param2=1))
        time.sleep(2.0)
    run("i_in_progress_then_accepted", both(ack_after(0.005, mav.MAV_RESULT_IN_PROGRESS),
                                            ack_after(0.3, acc, param2=1)))
    time.sleep(2.0)
    # ACCEPTED addressed to the wrong system / component: dropped by PX4's receiver?
    def wrong_target(rig: Rig, tap: Tap, req: Any, nth: int) -> None:
        if nth == 1:
            later(0.005, lambda: rig.auth_ack(tap, acc, 0, 1, target_system=rig.sysid + 50))
    run("j_accepted_wrong_target_system", wrong_target)

    def target_comp0(rig: Rig, tap: Tap, req: Any, nth: int) -> None:
        if nth == 1:
            later(0.005, lambda: rig.auth_ack(tap, acc, 0, 1, target_component=0))
    run("k_accepted_target_component_0", target_comp0)
    time.sleep(2.0)
    # (f) a forged ACCEPTED from sysid 77 on the GCS link, the real responder DENIES 15 ms later
    run("f_forged_accept_gcs_then_real_deny", both(
        ack_after(0.005, acc, param2=1, sysid=ATTACKER_SYSID, via="gcs"),
        ack_after(0.020, den, progress=mav.MAV_ARM_AUTH_DENIED_REASON_GENERIC)))
    time.sleep(2.0)
    run("f_forged_accept_gcs_alone", ack_after(0.005, acc, param2=1, sysid=ATTACKER_SYSID, via="gcs"))
    time.sleep(2.0)
    run("f_real_deny_then_forged_accept_gcs", both(
        ack_after(0.005, den, progress=mav.MAV_ARM_AUTH_DENIED_REASON_GENERIC),
        ack_after(0.020, acc, param2=1, sysid=ATTACKER_SYSID, via="gcs")))
    run("f_forged_accept_onboard_sysid77", ack_after(0.005, acc, param2=1, sysid=ATTACKER_SYSID, via="onboard"))
    time.sleep(2.0)
    # (g) an ACCEPTED sent before any request
    def ack_first() -> None:
        rig.auth_ack(rig.ob, acc, 0, 60)
        time.sleep(0.2)
    run("g_ack_before_request", None, pre=ack_first)
    # (h) validity: accepted for 4 s; arm, disarm, re-arm at once (inside), then after 6 s (outside)
    cases["h_validity"] = validity(rig)
    cases["forwarded_heartbeats"] = {"onboard": rig.ob.forwarded, "gcs": rig.gc.forwarded}
    out["summary"] = cases


def validity(rig: Rig) -> dict[str, Any]:
    acc = mav.MAV_RESULT_ACCEPTED
    res: dict[str, Any] = {"validity_s": 4}
    res["first"] = arm_attempt(rig, "h_first", ack_after(0.005, acc, param2=4))
    res["rearm_within"] = arm_attempt(rig, "h_rearm_within", None)
    time.sleep(5.0)
    res["rearm_after"] = arm_attempt(rig, "h_rearm_after", None)
    return res


SCENARIOS: dict[str, str] = {
    "boot": "HEARTBEATs from the first one until the pre-arm checks pass, AUTOPILOT_VERSION",
    "params": "PARAM_REQUEST_LIST, PARAM_REQUEST_READ, PARAM_SET (bytewise INT32)",
    "ftp": "MAVLink FTP listings, reads, CRC32, NAKs",
    "arm_auth": "arm authorization cases a-k with COM_ARM_AUTH_REQ=1, COM_ARM_AUTH_ID=10, MET=0, TO=1",
}


def record(name: str, outdir: Path, instance: int) -> None:
    params = dict(AUTH_PARAMS)
    px4 = Px4Sitl(Px4Config(instance=instance, params=params, wait_heartbeat=False))
    rig = Rig(px4)
    out: dict[str, Any] = {"scenario": name, "description": SCENARIOS[name], "params": params,
                           "links": {"onboard": {"url": px4.onboard_url, "as": [RESPONDER_SYSID, RESPONDER_COMPID]},
                                     "gcs": {"url": px4.gcs_url, "as": [GCS_SYSID, GCS_COMPID],
                                             "attacker_as": [ATTACKER_SYSID, GCS_COMPID]}}}
    extra: dict[str, Any] | None = None
    try:
        rig.open()  # bind the onboard port before PX4 starts, to see its very first heartbeat
        px4.start()
        rig.rec.restart()
        if name == "boot":
            rec_boot(rig, out)
        else:
            rig.ob.wait("HEARTBEAT", 30.0)
            request_autopilot_version(rig, rig.ob)
            if name == "params":
                extra = rec_params(rig, out)
            elif name == "ftp":
                rec_ftp(rig, out, outdir)
            elif name == "arm_auth":
                rec_arm_auth(rig, out)
        out["firmware"] = firmware_facts(rig)
    finally:
        out["events"] = rig.rec.dump()
        rig.close()
        px4.stop()
    (outdir / f"{name}.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    if extra is not None:
        (outdir / "param-list.json").write_text(json.dumps(extra, indent=1) + "\n")
    print(f"{name}: {len(out['events'])} events -> {outdir / (name + '.json')}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--instance", type=int, default=0)
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(SCENARIOS):
        record(name, args.outdir, args.instance)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
