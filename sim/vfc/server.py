"""The virtual flight controller: a pymavlink peer that behaves as ArduCopter SITL was recorded to.

Each channel is a loopback TCP port, like SITL's SERIALn ``tcp:`` ports, so the agent connects
with the same ``tcp:127.0.0.1:PORT`` string it uses for SITL. One background thread runs the
vehicle: it accepts one client per port, parses what arrives, and sends what ArduPilot would:

* nothing before the first HEARTBEAT (``boot_delay``); HEARTBEAT at 1 Hz to every connected
  channel (type 2, autopilot 3, base_mode 89 while booting, 81 in STANDBY, +128 armed);
* STATUSTEXT only to channels heard from since boot; the version/system-id/frame banner on
  PARAM_REQUEST_LIST and on opening ``@PARAM/param.pck``;
* COMMAND_LONG and COMMAND_INT alike: COMMAND_ACK first, then the requested message; FAILED for
  unknown message ids, UNSUPPORTED for unknown commands, nothing for a command the arming
  authority blocked (Lua ``block_command``); arming asks the :class:`~sim.vfc.hooks.ArmingAuthority` and answers
  FAILED plus ``Arm: <reason>`` (severity 2), with ``PreArm: <reason>`` every pre-arm period;
* the PARAM protocol and MAVLink FTP (:mod:`sim.vfc.ftp`); while booting, the announced
  parameter count leaves out the scripting parameters, as SITL's cached count did after a reboot;
* reboot: ACK, then 200 ms later every connection and port closes, the ports reopen, and the
  vehicle boots again with sequence numbers, heard channels and Lua state reset;
* MAVLink2 signing: once a key is set, every channel but 0 silently drops unsigned packets;
* routing: broadcast packets and packets for other systems are forwarded to the other channels.

Everything is bounded: a client that stops reading is dropped; the thread stops on ``stop()``.
"""

from __future__ import annotations

import contextlib
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pymavlink.dialects.v20 import ardupilotmega as mavlink

from agent.gate.key import FC_KEY_NAME, GATE_VM_I_COUNT
from agent.mavlink import ids
from agent.mavlink.ftpwire import FtpPacket
from attest.params import STREAM_RATES
from sim.vfc.can import EFF_FLAG, CanBus, Forwarding, can_frame_message
from sim.vfc.can import Frame as CanFrame
from sim.vfc.config import BusComponent, FirmwareInfo, VfcConfig
from sim.vfc.files import VehicleFiles
from sim.vfc.ftp import FtpServer, Reply, Request
from sim.vfc.hooks import AllowArming, ArmingAuthority
from sim.vfc.params import ParamTable

MAV_RESULT_ACCEPTED, MAV_RESULT_TEMPORARILY_REJECTED = ids.MAV_RESULT_ACCEPTED, ids.MAV_RESULT_TEMPORARILY_REJECTED
MAV_RESULT_UNSUPPORTED, MAV_RESULT_FAILED = ids.MAV_RESULT_UNSUPPORTED, ids.MAV_RESULT_FAILED
# GCS_MAVLink_Parameters.cpp's stream-rate parameters, and the MAV_DATA_STREAM ids that set one each
STREAM_OF_ID = {1: "RAW_SENS", 2: "EXT_STAT", 3: "RC_CHAN", 4: "RAW_CTRL", 6: "POSITION", 10: "EXTRA1",
                11: "EXTRA2", 12: "EXTRA3"}
MAV_STATE_BOOT, MAV_STATE_STANDBY, MAV_STATE_ACTIVE = ids.MAV_STATE_BOOT, ids.MAV_STATE_STANDBY, ids.MAV_STATE_ACTIVE
SAFETY_ARMED = ids.MAV_MODE_FLAG_SAFETY_ARMED
GUIDED = 4
FORCE_ARM_MAGIC = (2989, 21196)  # GCS.h magic_force_arm_value, magic_force_arm_disarm_value
CMD_REQUEST_MESSAGE = ids.MAV_CMD_REQUEST_MESSAGE
CMD_REQUEST_AUTOPILOT_CAPABILITIES = ids.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES
CMD_REBOOT = ids.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN
CMD_ARM_DISARM = ids.MAV_CMD_COMPONENT_ARM_DISARM
CMD_DO_SET_MODE = ids.MAV_CMD_DO_SET_MODE
CMD_CAN_FORWARD = ids.MAV_CMD_CAN_FORWARD
CMD_SCRIPTING = ids.MAV_CMD_SCRIPTING  # param1 2 stop, 3 stop and restart
SCRIPTING_STOP = 2
CMD_RUN_PREARM_CHECKS = ids.MAV_CMD_RUN_PREARM_CHECKS
SCR_SAVE_CHECKSUM = 32  # SCR_DEBUG_OPTS bit 5
FC_NODE_DEFAULT = 10  # CAN_D1_UC_NODE's default (AP_DRONECAN_DEFAULT_NODE)
MSG_AUTOPILOT_VERSION = ids.MSG_AUTOPILOT_VERSION
MSG_HEARTBEAT = ids.MSG_HEARTBEAT
LOOP_PERIOD = 0.01
SEVERITY_CRITICAL, SEVERITY_ERROR, SEVERITY_INFO = 2, 3, 6


def _epoch_signing_timestamp() -> int:
    return int((time.time() - 1420070400) * 100_000)


class _Channel:
    def __init__(self, index: int, port: int) -> None:
        self.index = index
        self.port = port
        self.listener: socket.socket | None = None
        self.client: socket.socket | None = None
        self.rx: mavlink.MAVLink | None = None
        self.packers: dict[tuple[int, int], mavlink.MAVLink] = {}
        self.param_queue: deque[int] = deque()


class VirtualFC:
    """Start with ``with VirtualFC(VfcConfig(...)) as fc:``; connect to ``fc.url(1)``."""

    def __init__(self, config: VfcConfig | None = None, authority: ArmingAuthority | None = None) -> None:
        self.config = config or VfcConfig()
        self.authority: ArmingAuthority = authority or AllowArming()
        self._lock = threading.RLock()
        self._text_id = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sel = selectors.DefaultSelector()
        self._own_root = self.config.root is None
        self.root = Path(tempfile.mkdtemp(prefix="flightseal-vfc-")) if self.config.root is None else self.config.root
        can = {"CAN_P1_DRIVER": 1, "CAN_D1_PROTOCOL": 1} if self.config.dronecan_nodes else {}
        vm = {"SCR_VM_I_COUNT": GATE_VM_I_COUNT} if self.config.gate_key is not None else {}
        self.params = ParamTable({**can, **vm, **self.config.params, "SCR_ENABLE": 1 if self.config.scripting else 0})
        fc_node = self.params.get("CAN_D1_UC_NODE")
        self.can_bus = CanBus(self.config.dronecan_nodes, int(fc_node.value) if fc_node else FC_NODE_DEFAULT) \
            if self.config.dronecan_nodes else None
        self.can_forwarding = Forwarding(buses=1 if self.can_bus is not None else 0)
        self.files = VehicleFiles(self.root, self._param_pack, self._param_count,
                                  flash_image=self.config.flash_image, romfs=dict(self.config.romfs),
                                  uarts_text=self._uarts_text)
        self.ftp = FtpServer(self.files, time.monotonic, self.config.ftp_link_bps)
        self._channels = [_Channel(i, self.config.ports[i] if i < len(self.config.ports) else 0)
                          for i in range(self.config.channels)]
        self.signing_key = self.config.signing_key
        # vehicle state (guarded by _lock)
        self.boots = 0
        self.armed = False
        self.custom_mode = 0
        self.booting = True
        self._boot_time = 0.0
        self._running = False
        self._heard: set[int] = set()
        self._next: dict[str, float] = {}
        self._reboot_at: float | None = None
        self._restart_at: float | None = None
        self._ftp_sent = 0
        # test observability
        self.texts: deque[tuple[int, str]] = deque(maxlen=4096)
        self.received: deque[tuple[int, str, int, int]] = deque(maxlen=4096)
        self.events: deque[str] = deque(maxlen=1024)
        self.commands: deque[int] = deque(maxlen=1024)  # command ids received for the FC itself

    # ---- lifecycle
    def start(self) -> VirtualFC:
        for ch in self._channels:
            self._listen(ch)
        if self.config.scripts:
            scripts = self.root / "scripts"
            scripts.mkdir(parents=True, exist_ok=True)
            for name, data in self.config.scripts.items():
                (scripts / name).write_bytes(data)
        if self.config.gate_key is not None:
            (self.root / FC_KEY_NAME).write_bytes(self.config.gate_key)
        with self._lock:
            self._boot()
        self._thread = threading.Thread(target=self._run, name="virtual-fc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self.authority.shutdown()
            for ch in self._channels:
                self._drop_client(ch)
                self._close_listener(ch)
            self.ftp.reset()
        with contextlib.suppress(Exception):
            self._sel.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> VirtualFC:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- public helpers for tests and rigs
    @property
    def ports(self) -> list[int]:
        return [ch.port for ch in self._channels]

    def url(self, channel: int = 1) -> str:
        return f"tcp:127.0.0.1:{self._channels[channel].port}"

    @property
    def scripts_dir(self) -> Path:
        return self.root / "scripts"

    def set_param(self, name: str, value: float) -> None:
        """Change a parameter as if a GCS had (notifies connected clients)."""
        with self._lock:
            p = self.params.set(name, value)
            if p is None:
                raise KeyError(f"no visible parameter {name}")
            self._notify_param(p.name)
            self._param_changed(p.name)

    def get_param(self, name: str) -> int | float | None:
        with self._lock:
            p = self.params.get(name)
            return None if p is None else p.value

    def reboot(self) -> None:
        with self._lock:
            self._reboot_at = time.monotonic()

    def drop_clients(self) -> None:
        """Close every client connection (a cable pulled); the ports stay open."""
        with self._lock:
            for ch in self._channels:
                self._drop_client(ch)

    def connected(self, channel: int) -> bool:
        with self._lock:
            return self._channels[channel].client is not None

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate():
                    return True
            time.sleep(0.01)
        with self._lock:
            return predicate()

    # ---- VehicleBus (for the arming authority)
    @property
    def sysid(self) -> int:
        return self.config.sysid

    @property
    def compid(self) -> int:
        return self.config.compid

    def channels(self) -> list[int]:
        with self._lock:
            return [ch.index for ch in self._channels if ch.client is not None]

    def time_ms(self) -> int:
        return int((time.monotonic() - self._boot_time) * 1000)

    def send_frame(self, channel: int, frame: bytes) -> bool:
        with self._lock:
            return self._write(self._channels[channel], frame)

    def send_payload(self, channel: int, msgid: int, payload: bytes) -> bool:
        with self._lock:
            msg = _decode_payload(msgid, payload, self.config.sysid, self.config.compid)
            if msg is None:
                return False
            return self._send(self._channels[channel], msg)

    def send_text(self, severity: int, text: str) -> None:
        with self._lock:
            self._text(severity, text)

    # ---- sockets
    def _listen(self, ch: _Channel) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", ch.port))
        s.listen(1)
        s.setblocking(False)
        ch.port = s.getsockname()[1]
        ch.listener = s
        self._sel.register(s, selectors.EVENT_READ, ("listen", ch))

    def _close_listener(self, ch: _Channel) -> None:
        if ch.listener is not None:
            with contextlib.suppress(Exception):
                self._sel.unregister(ch.listener)
            ch.listener.close()
            ch.listener = None

    def _accept(self, ch: _Channel) -> None:
        if ch.client is not None or ch.listener is None:
            return
        try:
            conn, _ = ch.listener.accept()
        except BlockingIOError:
            return
        conn.settimeout(self.config.max_send_wait)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ch.client = conn
        ch.rx = self._parser(ch.index)
        ch.param_queue.clear()
        self._sel.unregister(ch.listener)
        self._sel.register(conn, selectors.EVENT_READ, ("client", ch))
        self.events.append(f"connect {ch.index}")

    def _drop_client(self, ch: _Channel) -> None:
        if ch.client is None:
            return
        with contextlib.suppress(Exception):
            self._sel.unregister(ch.client)
        with contextlib.suppress(OSError):
            ch.client.shutdown(socket.SHUT_RDWR)
        ch.client.close()
        ch.client = None
        ch.rx = None
        ch.param_queue.clear()
        self.events.append(f"disconnect {ch.index}")
        if ch.listener is not None:
            with contextlib.suppress(Exception):
                self._sel.register(ch.listener, selectors.EVENT_READ, ("listen", ch))

    def _write(self, ch: _Channel, data: bytes) -> bool:
        if ch.client is None or self.config.silent:
            return False
        try:
            ch.client.sendall(data)
            return True
        except OSError:
            self._drop_client(ch)
            return False

    # ---- MAVLink framing
    def _parser(self, channel: int) -> mavlink.MAVLink:
        rx = mavlink.MAVLink(None, self.config.sysid, self.config.compid)
        rx.robust_parsing = True
        if self.signing_key:
            rx.signing.secret_key = self.signing_key
            rx.signing.timestamp = _epoch_signing_timestamp()
            if channel == 0:
                rx.signing.allow_unsigned_callback = lambda _mav, _msgid: True
        return rx

    def _packer(self, ch: _Channel, sysid: int, compid: int) -> mavlink.MAVLink:
        key = (sysid, compid)
        tx = ch.packers.get(key)
        if tx is None:
            tx = mavlink.MAVLink(None, sysid, compid)
            if self.signing_key:
                tx.signing.secret_key = self.signing_key
                tx.signing.sign_outgoing = True
                tx.signing.link_id = ch.index
                tx.signing.timestamp = _epoch_signing_timestamp()
            ch.packers[key] = tx
        return tx

    def _send(self, ch: _Channel, msg: Any, src: tuple[int, int] | None = None) -> bool:
        if ch.client is None:
            return False
        sysid, compid = src or (self.config.sysid, self.config.compid)
        tx = self._packer(ch, sysid, compid)
        buf = msg.pack(tx)
        tx.seq = (tx.seq + 1) % 256
        return self._write(ch, bytes(buf))

    def _broadcast(self, msg: Any, src: tuple[int, int] | None = None) -> None:
        for ch in self._channels:
            self._send(ch, msg, src)

    def _text(self, severity: int, text: str) -> None:
        """STATUSTEXT to every channel heard since boot; over 50 bytes in chunks with a shared
        ``id`` and ``chunk_seq`` as ``GCS::send_statustext`` does (seen on SITL: a 51-character
        "Arm: Scripting: … CRC incorrect want: 0x…" came as two)."""
        raw = text.encode()
        chunks = [raw[i:i + 50] for i in range(0, max(len(raw), 1), 50)]
        ident = 0
        if len(chunks) > 1:
            self._text_id = self._text_id % 0xFFFF + 1
            ident = self._text_id
        self.texts.append((severity, text))
        for seq, chunk in enumerate(chunks):
            msg = mavlink.MAVLink_statustext_message(severity, chunk, ident, seq)
            for ch in self._channels:
                if ch.index in self._heard:
                    self._send(ch, msg)

    # ---- boot and reboot
    def _boot(self) -> None:
        now = time.monotonic()
        self.boots += 1
        self.booting = True
        self.armed = False
        self.custom_mode = 0
        self._boot_time = now
        self._heard.clear()
        self._running = True
        for ch in self._channels:
            ch.packers.clear()
            ch.param_queue.clear()
        self.params.boot()
        if self.boots > 1 and self.params.get("STAT_BOOTCNT") is not None:
            self.params.set("STAT_BOOTCNT", float(self.params.get("STAT_BOOTCNT").value) + 1)  # type: ignore[union-attr]
        for i, name in enumerate(("BARO1_GND_PRESS", "BARO2_GND_PRESS")):
            if self.params.get(name) is not None:
                self.params.set(name, 94500.0 + 0.37 * self.boots + i)
        first = now + self.config.boot_delay
        self._next = {"heartbeat": first, "standby": first + self.config.standby_delay,
                      "prearm": first + self.config.prearm_check_period,
                      "timesync": first + self.config.timesync_period,
                      "runtime": first + self.config.stat_runtime_period, "bus": first, "tick": first}
        self._last_prearm = first
        self.authority.boot(self)
        self.events.append(f"boot {self.boots}")

    def _first_heartbeat_sent(self, now: float) -> bool:
        return now >= self._boot_time + self.config.boot_delay

    def _do_reboot(self) -> None:
        self.authority.shutdown()
        for ch in self._channels:
            self._drop_client(ch)
            self._close_listener(ch)
        self.ftp.reset()
        self._running = False
        self._restart_at = time.monotonic() + self.config.restart_gap
        self.events.append("reboot")

    def _do_restart(self) -> None:
        for ch in self._channels:
            self._listen(ch)
        self._boot()

    # ---- main loop
    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.ftp.next_due()
            wait = LOOP_PERIOD if due is None else min(LOOP_PERIOD, max(0.0, due - time.monotonic()))
            try:
                events = self._sel.select(timeout=wait)
            except (OSError, ValueError):
                events = []
            with self._lock:
                now = time.monotonic()
                if self._restart_at is not None:
                    if now >= self._restart_at:
                        self._restart_at = None
                        self._do_restart()
                    continue
                booted = self._first_heartbeat_sent(now)
                if booted:
                    self._serve(events, now)
            if not booted:
                time.sleep(LOOP_PERIOD)  # like SITL before its first HEARTBEAT: clients wait, nothing moves

    def _serve(self, events: list[tuple[selectors.SelectorKey, int]], now: float) -> None:
        for key, _ in events:
            kind, ch = key.data
            if kind == "listen":
                self._accept(ch)
            else:
                self._read(ch)
        self._timers(now)
        if self._reboot_at is not None and now >= self._reboot_at:
            self._reboot_at = None
            self._do_reboot()

    def _read(self, ch: _Channel) -> None:
        if ch.client is None or ch.rx is None:
            return
        try:
            data = ch.client.recv(65536)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            self._drop_client(ch)
            return
        if not data:
            self._drop_client(ch)
            return
        msgs = ch.rx.parse_buffer(data) or []
        for msg in msgs:
            if msg.get_type() == "BAD_DATA":
                # GCS_MAVLINK::update_receive hands a frame whose CRC is wrong to scripting (it may be a
                # message ArduPilot has no CRC extra for): before any signature check, wherever it is addressed
                if "CRC" in str(getattr(msg, "reason", "")) and bytes(msg.data[:1]) == b"\xfd":
                    self.authority.on_frame(ch.index, bytes(msg.data))
                continue
            self._handle(ch, msg)
            if ch.client is None:
                return

    # The periodic jobs of ArduPilot's scheduler the vFC shows, as a table: (key in ``_next``, the
    # period from the config, the job). Each runs when its time comes, then is due a period later.
    _PERIODIC: ClassVar[tuple[tuple[str, Callable[[VfcConfig], float], Callable[[VirtualFC, float], None]], ...]] = ()

    def _timers(self, now: float) -> None:
        if self.config.silent:
            return
        for key, period, job in self._PERIODIC:
            if now >= self._next[key]:
                self._next[key] = max(self._next[key] + period(self.config), now if key == "tick" else 0.0)
                job(self, now)
        if self.booting and now >= self._next["standby"]:
            self._job_standby(now)
        for job in self._EVERY_LOOP:
            job(self, now)

    def _job_heartbeat(self, now: float) -> None:
        self._broadcast(self._heartbeat())

    def _job_standby(self, now: float) -> None:
        self.booting = False
        self._text(SEVERITY_INFO, "ArduPilot Ready")
        self._text(SEVERITY_INFO, "AHRS: DCM active")
        for name in ("BARO1_GND_PRESS", "BARO2_GND_PRESS"):
            self._notify_param(name)

    def _job_prearm(self, now: float) -> None:
        if now - self._last_prearm > self.config.prearm_period:
            self._last_prearm = now
            if not self.armed:
                self._prearm_texts()

    def _job_timesync(self, now: float) -> None:
        self._broadcast(mavlink.MAVLink_timesync_message(0, int((now - self._boot_time) * 1e9)))

    def _job_runtime(self, now: float) -> None:
        p = self.params.get("STAT_RUNTIME")
        if p is not None:
            self.params.set("STAT_RUNTIME", float(p.value) + self.config.stat_runtime_period)
            self._notify_param("STAT_RUNTIME")

    def _job_bus(self, now: float) -> None:
        self._bus_traffic(now)
        self._scripting_update()

    def _job_tick(self, now: float) -> None:
        self.authority.tick(self.time_ms())

    def _job_params(self, now: float) -> None:
        for ch in self._channels:
            for _ in range(min(self.config.param_burst, len(ch.param_queue))):
                index = ch.param_queue.popleft()
                self._send_param(ch, index, index)

    def _job_ftp(self, now: float) -> None:
        if not self.config.ftp_enabled:
            return
        for reply in self.ftp.step():
            self._ftp_reply(reply)
        if self.ftp.need_banner:
            self.ftp.need_banner.clear()
            self._banner()

    _EVERY_LOOP: ClassVar[tuple[Callable[[VirtualFC, float], None], ...]] = ()

    def _heartbeat(self) -> Any:
        base = 89 if self.booting else 81 | (8 if self.custom_mode == GUIDED else 0)
        status = MAV_STATE_BOOT if self.booting else MAV_STATE_STANDBY
        if self.armed:
            base |= SAFETY_ARMED
            status = MAV_STATE_ACTIVE
        return mavlink.MAVLink_heartbeat_message(2, 3, base, self.custom_mode, status, 3)

    def _bus_traffic(self, now: float) -> None:
        for comp in self.config.components:
            if comp.heartbeat:
                msg = mavlink.MAVLink_heartbeat_message(comp.mav_type, comp.autopilot, 0, 0, MAV_STATE_ACTIVE, 3)
            else:
                msg = mavlink.MAVLink_radio_status_message(200, 190, 100, 40, 38, 0, 0)
            self._broadcast(msg, (comp.sysid, comp.compid))
        if self.can_bus is not None:
            self._can_out(self.can_bus.node_status(now))

    def _can_out(self, frames: list[CanFrame]) -> None:
        for frame in frames:
            target = self.can_forwarding.target(frame)
            if target is not None:
                channel, client = target
                self._send(channel, can_frame_message(mavlink, client, frame))

    # ---- messages in
    def _handle(self, ch: _Channel, msg: Any) -> None:
        self._heard.add(ch.index)
        mtype = msg.get_type()
        self.received.append((ch.index, mtype, msg.get_srcSystem(), msg.get_srcComponent()))
        target_sys = getattr(msg, "target_system", 0)
        target_comp = getattr(msg, "target_component", 0)
        if not (target_sys == self.config.sysid and target_comp == self.config.compid):
            self._route(ch, msg)
        if target_sys not in (0, self.config.sysid):
            return
        if target_comp in (0, self.config.compid):  # as GCS_MAVLINK::packetReceived: scripts see what is ours
            self.authority.on_frame(ch.index, bytes(msg.get_msgbuf()))
        if mtype in ("COMMAND_LONG", "COMMAND_INT"):
            comp = self._component(target_sys, target_comp)
            if comp is not None:
                self._component_command(ch, msg, comp)
            elif target_comp in (0, self.config.compid):
                self._command(ch, msg)
            return
        if target_comp not in (0, self.config.compid):
            return
        handler = self._HANDLERS.get(mtype)
        if handler is not None:
            handler(self, ch, msg)

    def _on_param_request_list(self, ch: _Channel, msg: Any) -> None:
        self._banner()
        ch.param_queue.extend(range(len(self.params)))

    def _on_param_set(self, ch: _Channel, msg: Any) -> None:
        name = msg.param_id
        if self.params.set(name, msg.param_value) is not None:
            self._notify_param(name)
            self._param_changed(name)

    def _on_ftp(self, ch: _Channel, msg: Any) -> None:
        if self.config.ftp_enabled:
            self.ftp.push(Request(ch.index, msg.get_srcSystem(), msg.get_srcComponent(), FtpPacket.unpack(msg.payload)))

    def _on_can_filter_modify(self, ch: _Channel, msg: Any) -> None:
        self.can_forwarding.modify_filter(int(msg.bus), int(msg.operation), list(msg.ids[:int(msg.num_ids)]))

    def _on_can_frame(self, ch: _Channel, msg: Any) -> None:
        if self.can_bus is not None and int(msg.bus) == self.can_bus.bus and int(msg.id) & EFF_FLAG \
                and 0 < int(msg.len) <= 8:
            frame = CanFrame(int(msg.bus), int(msg.id) & 0x1FFF_FFFF, bytes(msg.data[:int(msg.len)]))
            self._can_out(self.can_bus.receive(frame))

    def _on_setup_signing(self, ch: _Channel, msg: Any) -> None:
        if not self.armed:
            self._setup_signing(bytes(msg.secret_key))

    # What the FC itself handles, by message type (GCS_MAVLINK::handle_message's switch); commands
    # are dispatched before this table (a part on the bus may be their target).
    _HANDLERS: ClassVar[Mapping[str, Callable[[VirtualFC, _Channel, Any], None]]] = {}

    def _request_data_stream(self, ch: _Channel, msg: Any) -> None:
        """As ``GCS_MAVLINK::handle_request_data_stream`` (GCS_Param.cpp): the channel's stream-rate
        parameters (``MAV<channel+1>_*``) change in memory, unsaved and unannounced; ALL leaves
        ``_PARAMS`` alone; ``MAVn_OPTIONS`` bit 2 (NOSTREAMOVERRIDE) ignores the request. Recorded on
        SITL: tests/data/sitl-operator-session."""
        prefix = f"MAV{ch.index + 1}_"
        options = self.params.get(prefix + "OPTIONS")
        if options is not None and int(options.value) & 4:
            return
        if msg.start_stop not in (0, 1):
            return
        rate = 0 if msg.start_stop == 0 else int(msg.req_message_rate)
        if msg.req_stream_id == 0:
            names = [s for s in STREAM_RATES if s != "PARAMS"]
        elif msg.req_stream_id in STREAM_OF_ID:
            names = [STREAM_OF_ID[msg.req_stream_id]]
        else:
            return
        for name in names:
            self.params.set_in_memory(prefix + name, float(rate))

    def _route(self, src: _Channel, msg: Any) -> None:
        frame = bytes(msg.get_msgbuf())
        for ch in self._channels:
            if ch is not src and ch.client is not None:
                self._write(ch, frame)

    def _component(self, sysid: int, compid: int) -> BusComponent | None:
        for comp in self.config.components:
            if comp.sysid == sysid and comp.compid == compid:
                return comp
        return None

    def _ack(self, ch: _Channel, msg: Any, result: int, src: tuple[int, int] | None = None) -> None:
        ack = mavlink.MAVLink_command_ack_message(msg.command, result, 0, 0, msg.get_srcSystem(),
                                                 msg.get_srcComponent())
        self._send(ch, ack, src)

    def _command(self, ch: _Channel, msg: Any) -> None:
        cmd = msg.command
        self.commands.append(cmd)
        if self.authority.is_command_blocked(cmd):
            return
        if cmd in (CMD_REQUEST_MESSAGE, CMD_REQUEST_AUTOPILOT_CAPABILITIES):
            wanted = MSG_AUTOPILOT_VERSION if cmd == CMD_REQUEST_AUTOPILOT_CAPABILITIES else int(msg.param1)
            if wanted == MSG_AUTOPILOT_VERSION:
                self._ack(ch, msg, MAV_RESULT_ACCEPTED)
                self._send(ch, _autopilot_version(self.config.firmware))
            elif wanted == MSG_HEARTBEAT:
                self._ack(ch, msg, MAV_RESULT_ACCEPTED)
                self._send(ch, self._heartbeat())
            else:
                self._ack(ch, msg, MAV_RESULT_FAILED)
        elif cmd == CMD_REBOOT:
            if int(msg.param1) not in (1, 3) or self.armed:
                self._ack(ch, msg, MAV_RESULT_FAILED)
            else:
                self._ack(ch, msg, MAV_RESULT_ACCEPTED)
                self._reboot_at = time.monotonic() + self.config.reboot_delay
        elif cmd == CMD_ARM_DISARM:
            self._arm_disarm(ch, msg)
        elif cmd == CMD_DO_SET_MODE:
            if int(msg.param1) & 1:
                self.custom_mode = int(msg.param2)
                self._ack(ch, msg, MAV_RESULT_ACCEPTED)
                self._broadcast(self._heartbeat())
            else:
                self._ack(ch, msg, MAV_RESULT_FAILED)
        elif cmd == CMD_SCRIPTING:
            self._ack(ch, msg, self.authority.scripting_command(int(msg.param1)))
        elif cmd == CMD_RUN_PREARM_CHECKS:
            if self.armed:
                self._ack(ch, msg, MAV_RESULT_TEMPORARILY_REJECTED)
            else:
                self._ack(ch, msg, MAV_RESULT_ACCEPTED)
                self._prearm_texts()
        elif cmd == CMD_CAN_FORWARD:
            ok = self.can_forwarding.command(ch, (msg.get_srcSystem(), msg.get_srcComponent()), msg.param1)
            self._ack(ch, msg, MAV_RESULT_ACCEPTED if ok else MAV_RESULT_FAILED)
        else:
            self._ack(ch, msg, MAV_RESULT_UNSUPPORTED)

    def _component_command(self, ch: _Channel, msg: Any, comp: BusComponent) -> None:
        if comp.version is None:
            return  # a part that ignores the request: the collector must time out, bounded
        if msg.command == CMD_REQUEST_MESSAGE and int(msg.param1) == MSG_AUTOPILOT_VERSION:
            src = (comp.sysid, comp.compid)
            self._ack(ch, msg, MAV_RESULT_ACCEPTED, src)
            self._send(ch, _autopilot_version(comp.version), src)

    def _param_changed(self, name: str) -> None:
        """What a parameter change does at once: SCR_ENABLE=0 stops the scripting thread (recorded:
        "Scripting: stopped", every aux auth slot kept as it was)."""
        if name == "SCR_ENABLE" and self.get_param(name) == 0:
            self.authority.scripting_command(SCRIPTING_STOP)

    def _prearm_texts(self) -> None:
        """``AP_Arming::pre_arm_checks(true)``: one ``PreArm: …`` text per failing check."""
        ok, reason = self.authority.arming_check()
        if not ok:
            for line in reason.splitlines():
                self._text(SEVERITY_CRITICAL, f"PreArm: {line}")

    def _scripting_update(self) -> None:
        """``AP_Scripting::update`` (1 Hz): SCR_DEBUG_OPTS bit 5 saves the current checksums (recorded)."""
        opts = self.params.get("SCR_DEBUG_OPTS")
        sums = self.authority.checksums()
        if opts is None or sums is None or not int(opts.value) & SCR_SAVE_CHECKSUM:
            return
        for name, value in zip(("SCR_LD_CHECKSUM", "SCR_RUN_CHECKSUM"), sums, strict=True):
            self.params.set(name, float(value))
            self._notify_param(name)
        self.params.set("SCR_DEBUG_OPTS", float(int(opts.value) & ~SCR_SAVE_CHECKSUM))
        self._notify_param("SCR_DEBUG_OPTS")
        self._text(SEVERITY_ERROR, "Scripting: saved checksums")

    def _arm_disarm(self, ch: _Channel, msg: Any) -> None:
        if int(msg.param1) == 0:
            self.armed = False
            self.authority.set_armed(False)
            self._ack(ch, msg, MAV_RESULT_ACCEPTED)
            return
        if self.armed:
            self._ack(ch, msg, MAV_RESULT_ACCEPTED)
            return
        checks_off = self.params.get("ARMING_CHECK") is not None and self.get_param("ARMING_CHECK") == 0
        # forced, or ARMING_CHECK=0: ArduCopter runs only its mandatory checks, which skip Lua aux auth
        if int(msg.param2) not in FORCE_ARM_MAGIC and not checks_off:
            ok, reason = self.authority.arming_check()
            if not ok:
                self._ack(ch, msg, MAV_RESULT_FAILED)
                for line in reason.splitlines():
                    self._text(SEVERITY_CRITICAL, f"Arm: {line}")
                return
        self.armed = True
        self.authority.set_armed(True)
        self._ack(ch, msg, MAV_RESULT_ACCEPTED)
        self._broadcast(self._heartbeat())

    def _setup_signing(self, key: bytes) -> None:
        self.signing_key = None if not any(key) else key
        for ch in self._channels:
            ch.packers.clear()
            if ch.client is not None:
                ch.rx = self._parser(ch.index)

    # ---- parameters
    def _banner(self) -> None:
        for line in self.config.firmware.banner:
            self._text(SEVERITY_INFO, line)

    def _send_param(self, ch: _Channel, index: int, reply_index: int) -> None:
        p = self.params.at(index)
        if p is None:
            return
        msg = mavlink.MAVLink_param_value_message(p.name.encode(), p.as_float(), p.mav_type, self._param_count(),
                                                  reply_index & 0xFFFF)
        self._send(ch, msg)

    def _param_read(self, ch: _Channel, msg: Any) -> None:
        if msg.param_index >= 0:
            self._send_param(ch, msg.param_index, msg.param_index)
            return
        name = msg.param_id
        if self.params.get(name) is not None:
            self._send_param(ch, self.params.index_of(name), -1)

    def _notify_param(self, name: str) -> None:
        p = self.params.get(name)
        if p is None:
            return
        msg = mavlink.MAVLink_param_value_message(p.name.encode(), p.as_float(), p.mav_type, self._param_count(),
                                                  0xFFFF)
        for ch in self._channels:
            if ch.index in self._heard:
                self._send(ch, msg)

    def _param_pack(self, read_size: int) -> bytes:
        with self._lock:
            return self.params.pack(read_size, booting=self.booting)

    def _param_count(self) -> int:
        return self.params.count_at_boot if self.booting else len(self.params)

    def _uarts_text(self) -> bytes:
        lines = ["UARTV1"]
        for ch in self._channels:
            state = "connected" if ch.client is not None else "not connected"
            lines.append(f"SERIAL{ch.index} TCP {state}")
        return ("\n".join(lines) + "\n").encode()

    # ---- FTP out
    def _ftp_reply(self, reply: Reply) -> None:
        packet = reply.packet
        if self.config.ftp_drop_every and packet.req_opcode == 15 and packet.opcode == 128:
            self._ftp_sent += 1
            if self._ftp_sent % self.config.ftp_drop_every == 0:
                return
        ch = self._channels[reply.channel]
        msg = mavlink.MAVLink_file_transfer_protocol_message(0, reply.sysid, reply.compid, reply.packet.pack())
        self._send(ch, msg)


def _autopilot_version(fw: FirmwareInfo) -> Any:
    def text8(s: str) -> list[int]:
        return list(s.encode()[:8].ljust(8, b"\0"))

    return mavlink.MAVLink_autopilot_version_message(
        fw.capabilities, fw.flight_sw_version, 0, fw.os_sw_version, (fw.board_id & 0xFFFF) << 16,
        text8(fw.git_hash), text8(""), text8(fw.os_git_hash), fw.vendor_id, fw.product_id, fw.uid,
        list(fw.uid2_bytes))


def _decode_payload(msgid: int, payload: bytes, sysid: int, compid: int) -> Any:
    """A message object from a raw payload (what Lua's ``send_chan`` hands over), or None."""
    cls = mavlink.mavlink_map.get(msgid)
    if cls is None:
        return None
    body = payload.rstrip(b"\0") or b"\0"
    if len(body) > 255:
        return None
    header = struct.pack("<BBBBBBBHB", 0xFD, len(body), 0, 0, 0, sysid, compid, msgid & 0xFFFF, msgid >> 16)
    crc = mavlink.x25crc(header[1:] + body)
    crc.accumulate(bytes([cls.crc_extra]))
    frame = header + body + struct.pack("<H", crc.crc)
    parser = mavlink.MAVLink(None, sysid, compid)
    try:
        return parser.decode(bytearray(frame))
    except mavlink.MAVError:
        return None


__all__ = ["VirtualFC"]


VirtualFC._PERIODIC = (
    ("heartbeat", lambda c: c.heartbeat_period, VirtualFC._job_heartbeat),
    ("prearm", lambda c: c.prearm_check_period, VirtualFC._job_prearm),
    ("timesync", lambda c: c.timesync_period, VirtualFC._job_timesync),
    ("runtime", lambda c: c.stat_runtime_period, VirtualFC._job_runtime),
    ("bus", lambda c: 1.0, VirtualFC._job_bus),
    ("tick", lambda c: LOOP_PERIOD, VirtualFC._job_tick),
)
VirtualFC._EVERY_LOOP = (VirtualFC._job_params, VirtualFC._job_ftp)
VirtualFC._HANDLERS = {
    "PARAM_REQUEST_LIST": VirtualFC._on_param_request_list,
    "PARAM_REQUEST_READ": VirtualFC._param_read,
    "PARAM_SET": VirtualFC._on_param_set,
    "FILE_TRANSFER_PROTOCOL": VirtualFC._on_ftp,
    "CAN_FILTER_MODIFY": VirtualFC._on_can_filter_modify,
    "CAN_FRAME": VirtualFC._on_can_frame,
    "REQUEST_DATA_STREAM": VirtualFC._request_data_stream,
    "SETUP_SIGNING": VirtualFC._on_setup_signing,
}
