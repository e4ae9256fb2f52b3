"""Run ArduPilot Lua scripts (above all the FlightSeal gate) with lupa, behind ArduPilot-like bindings.

Why: CI has no ArduPilot, yet the virtual FC must run the very file we ship, and the parts of
AP_Scripting that decide whether the gate is safe must behave as they do on the FC. Each rule below
was read in ArduPilot's source (AP_Scripting/lua_scripts.cpp, lua_bindings.cpp, AP_Arming.cpp,
GCS_Common.cpp, mavlink_helpers.h) and is kept here on purpose:

* scheduling: the chunk runs first when loaded; a run returns ``(function, delay_ms)`` to be run
  again ``delay_ms`` after it started; returning nothing ends the script; anything else, an error,
  or more than ``SCR_VM_I_COUNT`` VM instructions ends it with ``Lua: …`` at severity CRITICAL.
  A script that ends leaves its aux auth slot as it last set it — the gate must fail closed itself.
* aux auth: at most 3 slots; a fourth request makes arming fail ("Too many auxiliary authorisers");
  the failure text of the lowest failing slot is kept (42 bytes); unanswered slots say "Waiting…".
* MAVLink rx: ``mavlink:init`` once sizes one queue shared by all scripts; messages of registered ids
  are queued (a full queue drops the new one) as the C ``mavlink_message_t`` (291 bytes), not as the
  wire frame; frames with a bad CRC are queued too (GCS_Common passes them to scripting), with
  ``ck`` holding the received CRC and the payload zero-filled only up to the message's length.
* checksums (recorded in tests/data/sitl-scripting): each script that loads XORs its CRC32
  (``crc_crc32`` from 0, the whole file) into the loaded and the running checksum; a script that
  ends or fails XORs it out of the running one; the loaded one is never reset, so a restart XORs
  it in again. A script error is kept and refuses arming (``Scripting: <error>``) until the next
  restart; ``SCR_LD_CHECKSUM``/``SCR_RUN_CHECKSUM`` (-1: off) refuse it when the 23-bit masked
  values differ; ``SCR_DEBUG_OPTS`` bit 4 or ``SCR_ENABLE`` 0 skip those checks.
* MAV_CMD_SCRIPTING stop ends every script and keeps every aux auth slot as it was; stop-and-restart
  also resets the slots and loads the scripts again.
* ``mavlink:send_chan`` takes the untruncated payload (``max_msg_len`` bytes) and frames it for the
  channel; ``mavlink:block_command`` stops the FC from handling (and acking) that command itself.
* Lua 5.3 numbers: ArduPilot builds Lua with 32-bit integers and floats; ``uint32_t_ud:toint()``
  therefore wraps above 2^31 here too. lupa's Lua has 64-bit numbers otherwise: the gate is
  written not to depend on the width.

* ``io.open`` (read-only here) opens files relative to the FC's working directory, as ArduPilot's
  filesystem does (SITL: its directory; a board: the SD card, where ``APM/`` lives).
* the VM instruction limit is ``SCR_VM_I_COUNT`` (at least 1000), read at every run.

Not modelled: other bindings, the 50-character STATUSTEXT split, routing (deliver only frames the
FC handles itself), MAVLink signing (deliver only frames whose signature was accepted).
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lupa.lua53 as lupa_lua
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from agent.gate.install import CHECKSUM_MASK, DEBUG_DISABLE_PRE_ARM
from agent.mavlink.ftpwire import crc32_ardupilot
from attest.errors import FlightSealError

AUX_AUTH_SLOTS = 3  # AP_Arming::aux_auth_count_max
SCRIPTING_STOP, SCRIPTING_STOP_AND_RESTART = 2, 3  # MAV_CMD_SCRIPTING param1
AUX_AUTH_TEXT_LEN = 42  # AP_Arming::aux_auth_str_len
VM_INSTRUCTIONS = 10000  # SCR_VM_I_COUNT default
COMM_CHANNELS = 8  # MAVLINK_COMM_NUM_BUFFERS on SITL
MAX_RX = 25  # mavlink:init bounds for queue length and id count
SCRIPTS_DIR = "./scripts"  # SCRIPTING_DIRECTORY on SITL

# mavlink_message_t layout (MAVPACKED): checksum, magic, len, incompat, compat, seq, sysid, compid,
# msgid:24, payload64[33], ck[2], signature[13]
_PAYLOAD_AT = 12
_PAYLOAD_SPACE = 264
_CK_AT = _PAYLOAD_AT + _PAYLOAD_SPACE
_SIG_AT = _CK_AT + 2
MESSAGE_T_SIZE = _SIG_AT + 13


class LuaHostError(FlightSealError):
    """The host was used wrongly (script file missing, bad channel): a test or rig bug."""


@dataclass(frozen=True)
class GcsText:
    """A ``gcs:send_text`` (or a ``Lua: …`` error) the FC would send as STATUSTEXT."""

    severity: int
    text: str
    time_ms: int


def x25_crc(data: bytes, crc: int = 0xFFFF) -> int:
    """MAVLink's CRC-16/MCRF4XX, as ``crc_accumulate`` in checksum.h."""
    for b in data:
        tmp = (b ^ crc) & 0xFF
        tmp = (tmp ^ (tmp << 4)) & 0xFF
        crc = ((crc >> 8) ^ (tmp << 8) ^ (tmp << 3) ^ (tmp >> 4)) & 0xFFFF
    return crc


def _entry(msgid: int) -> tuple[int, int] | None:
    """(crc_extra, max_msg_len) of a known message, as ``mavlink_get_msg_entry``."""
    cls = mavlink2.mavlink_map.get(msgid)
    if cls is None:
        return None
    return int(cls.crc_extra), int(cls.unpacker.size)


class AuxAuth:
    """AP_Arming's auxiliary authorisation slots and their pre-arm check."""

    NO_RESPONSE, PASSED, FAILED = 0, 1, 2

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """``reset_all_aux_auths``: what a scripting restart does."""
        self.count = 0
        self.error = False
        self.states = [self.NO_RESPONSE] * AUX_AUTH_SLOTS
        self.fail_msg = ""
        self.fail_source = 0

    def get_id(self) -> int | None:
        if self.count >= AUX_AUTH_SLOTS:
            self.error = True
            return None
        self.count += 1
        return self.count - 1

    def set_passed(self, auth_id: int) -> None:
        if 0 <= auth_id < self.count:
            self.states[auth_id] = self.PASSED

    def set_failed(self, auth_id: int, msg: str) -> None:
        if not 0 <= auth_id < self.count:
            return
        self.states[auth_id] = self.FAILED
        if any(self.states[i] == self.FAILED for i in range(auth_id)):
            return
        # strncpy into 42 bytes: a 42-character text has no terminator on the FC; keep what fits
        self.fail_msg = msg[:AUX_AUTH_TEXT_LEN]
        self.fail_source = auth_id

    def check(self) -> tuple[bool, str]:
        """``aux_auth_checks``: (ok, the failure text ArduPilot prefixes with ``PreArm:``/``Arm:``)."""
        if self.error:
            return False, "Too many auxiliary authorisers"
        waiting = False
        failed = False
        for i in range(self.count):
            if self.states[i] == self.FAILED:
                failed = True
                if i == self.fail_source:
                    return False, self.fail_msg
            elif self.states[i] == self.NO_RESPONSE:
                waiting = True
        if failed:
            return False, "Auxiliary authorisation refused"
        if waiting:
            return False, "Waiting for auxiliary authorisation"
        return True, ""


class _RxParser:
    """One channel's ``mavlink_message_t`` buffer, reused between frames like the C parser's."""

    def __init__(self) -> None:
        self.buf = bytearray(MESSAGE_T_SIZE)

    def parse(self, frame: bytes) -> tuple[bytes, int, bool] | None:
        """Fill the struct from one whole wire frame: (struct bytes, msgid, crc ok), or None if unframed."""
        if len(frame) < 8:
            return None
        buf = self.buf
        if frame[0] == 0xFD:
            length, incompat, compat = frame[1], frame[2], frame[3]
            if incompat & ~0x01:
                return None  # unknown incompat flag: the parser drops the frame
            end = 10 + length
            if len(frame) < end + 2 + (13 if incompat & 1 else 0):
                return None
            msgid = frame[7] | frame[8] << 8 | frame[9] << 16
            header = bytes(frame[1:10])
            buf[2:12] = bytes([0xFD, length, incompat, compat, frame[4], frame[5], frame[6]]) + frame[7:10]
            payload = bytes(frame[10:end])
            signature = bytes(frame[end + 2:end + 15]) if incompat & 1 else b""
        elif frame[0] == 0xFE:
            length = frame[1]
            end = 6 + length
            if len(frame) < end + 2:
                return None
            msgid = frame[5]
            header = bytes(frame[1:6])
            buf[2:12] = bytes([0xFE, length, 0, 0, frame[2], frame[3], frame[4], msgid, 0, 0])
            payload = bytes(frame[6:end])
            signature = b""
        else:
            return None
        entry = _entry(msgid)
        crc = x25_crc(header + payload)
        if entry is not None:
            crc = x25_crc(bytes([entry[0]]), crc)
        received = bytes(frame[end:end + 2])
        buf[0:2] = struct.pack("<H", crc)
        buf[_PAYLOAD_AT:_PAYLOAD_AT + length] = payload
        if entry is not None and length < entry[1]:
            buf[_PAYLOAD_AT + length:_PAYLOAD_AT + entry[1]] = bytes(entry[1] - length)
        buf[_CK_AT:_CK_AT + 2] = received
        if signature:
            buf[_SIG_AT:_SIG_AT + 13] = signature
        ok = entry is not None and received == struct.pack("<H", crc)
        return bytes(buf), msgid, ok


@dataclass
class _Script:
    name: str
    run: Any  # the Lua function to call next
    env: Any
    next_run_ms: int
    crc: int = 0  # ArduPilot's CRC32 of the file, in the loaded and running checksums


# The Lua side of the bindings, a real .lua file (issue 13).
PRELUDE_PATH = Path(__file__).parent / "lua" / "prelude.lua"


class LuaGateHost:
    """ArduPilot's scripting engine in miniature, for the virtual FC and the gate's tests.

    The virtual FC feeds it every MAVLink frame it handles itself (``deliver``), advances its clock
    (``tick``), reports arming (``set_armed``), asks it before arming (``arming_check``) and before
    handling a command (``is_handling_command``), and sends on what the scripts send
    (``drain_outgoing`` or the ``send`` callback).
    """

    def __init__(self, script: Path | bytes | None = None, *, name: str = "flightseal_gate.lua",
                 sysid: int = 1, compid: int = 1,
                 params: Mapping[str, float] | Callable[[str], float | None] | None = None,
                 send: Callable[[int, int, bytes], bool] | None = None,
                 vm_instructions: int = VM_INSTRUCTIONS, channels: int = COMM_CHANNELS, now_ms: int = 0,
                 files: Path | Mapping[str, bytes] | None = None) -> None:
        """``files`` is what ``io.open`` sees: the FC's working directory, or a name → bytes map.
        ``SCR_VM_I_COUNT`` in ``params``, where given, overrides ``vm_instructions`` (as on the FC).
        ``send(channel, msgid, payload)``, if given, frames and sends what scripts send (returns
        False when the channel has no room); otherwise the host frames MAVLink2 itself as
        ``sysid``/``compid`` and keeps the frames for ``drain_outgoing``."""
        self.sysid = sysid
        self.compid = compid
        self.channels = channels
        self._params = params if params is not None else {}
        self.vm_instructions = vm_instructions
        self._files = files
        self.aux = AuxAuth()
        self.texts: list[GcsText] = []
        self.arm_requests = 0
        self.disarm_requests = 0
        self._send = send
        self._now_ms = now_ms
        self._armed = False
        self._outgoing: list[tuple[int, bytes]] = []
        self._tx_seq = [0] * channels
        self._parsers = [_RxParser() for _ in range(channels)]
        self._rx: collections.deque[tuple[bytes, int, int]] | None = None
        self.rx_queued: collections.Counter[int] = collections.Counter()  # frames queued for scripts, by channel
        self.rx_dropped: collections.Counter[int] = collections.Counter()  # ... and dropped, the queue full
        self._rx_max = 0
        self._accept: list[int] = []
        self._accept_size = 0
        self._blocked: set[int] = set()
        self._scripts: list[_Script] = []
        self._sources: list[tuple[str, bytes]] = []
        self.loaded_checksum = 0
        self.running_checksum = 0
        self.last_error: str | None = None
        self._text_cursor = 0
        self._rt = lupa_lua.LuaRuntime(encoding=None, register_eval=False, register_builtins=False,
                                       unpack_returned_tuples=True)
        self._bindings = _Bindings(self)
        prelude = PRELUDE_PATH.read_text(encoding="utf-8")
        self._lua = self._rt.execute(prelude, self._bindings, self._rt.eval("debug.sethook"))
        if script is not None:
            self.add_script(script, name)

    # ---- scripts -------------------------------------------------------------------------------

    def add_script(self, script: Path | bytes, name: str = "script.lua") -> None:
        """Load a script as AP_Scripting does at start: compile now, first run on the next tick."""
        if isinstance(script, Path):
            try:
                source = script.read_bytes()
            except OSError as exc:
                raise LuaHostError(f"cannot read Lua script {script}: {exc.strerror}") from None
            name = script.name
        else:
            source = script
        self._sources.append((name, source))
        self._load(name, source)

    def _load(self, name: str, source: bytes) -> None:
        filename = f"{SCRIPTS_DIR}/{name}"
        env = self._lua.make_env()
        loaded = self._lua.compile(source, ("@" + filename).encode(), env)
        fn = loaded[0] if isinstance(loaded, tuple) else loaded
        if fn is None:
            self._text(2, f"Lua: Error: {_text(loaded[1] if isinstance(loaded, tuple) else None)}")
            return
        crc = crc32_ardupilot(source)
        self.loaded_checksum ^= crc
        self.running_checksum ^= crc
        self._scripts.append(_Script(filename, fn, env, self._now_ms - 1, crc))

    def _remove(self, script: _Script) -> None:
        """``lua_scripts::remove_script``: the script leaves the running checksum."""
        self._scripts.remove(script)
        self.running_checksum ^= script.crc

    def stop_scripting(self) -> None:
        """MAV_CMD_SCRIPTING stop: every script ends; the aux auth slots keep their last state."""
        for script in list(self._scripts):
            self._remove(script)
        self._text(2, "Scripting: stopped")

    def restart_scripting(self, now_ms: int | None = None) -> None:
        """MAV_CMD_SCRIPTING restart: aux auth slots, blocked commands and the last error are reset,
        scripts load again (and the loaded checksum takes their CRCs once more)."""
        if now_ms is not None:
            self._now_ms = now_ms
        if self._scripts:
            self.stop_scripting()
        self._blocked.clear()
        self.aux.reset()
        self.last_error = None
        self._text(2, "Scripting: restarted")
        for name, source in self._sources:
            self._load(name, source)

    @property
    def now_ms(self) -> int:
        """The host's clock: the last time given to ``tick`` or ``deliver``."""
        return self._now_ms

    @property
    def running(self) -> list[str]:
        """File names of the scripts still scheduled."""
        return [s.name for s in self._scripts]

    def tick(self, now_ms: int) -> int:
        """Advance the clock to ``now_ms`` and run every script that is due once; returns the runs."""
        if now_ms < self._now_ms:
            raise LuaHostError(f"time went backwards: {now_ms} < {self._now_ms}")
        self._now_ms = now_ms
        runs = 0
        for script in sorted(self._scripts, key=lambda s: s.next_run_ms):
            if script.next_run_ms <= now_ms and script in self._scripts:
                self._run(script)
                runs += 1
        return runs

    def _run(self, script: _Script) -> None:
        start = self._now_ms
        limit = self.param("SCR_VM_I_COUNT")
        self._lua.arm_hook(max(int(limit) if limit is not None else self.vm_instructions, 1000))
        try:
            result = self._lua.pcall(script.run)
        finally:
            self._lua.clear_hook()
        overtime = bool(self._lua.state.overtime)
        values = result if isinstance(result, tuple) else (result,)
        if not values[0]:
            if overtime:
                self._fail(script, f"{script.name} exceeded time limit")
            else:
                self._fail(script, _text(values[1] if len(values) > 1 else None))
            return
        returned = values[1:]
        if len(returned) == 0:
            self._remove(script)
            return
        if len(returned) != 2:
            self._fail(script, f"{script.name} returned bad result count ({len(returned)})")
            return
        fn, delay = returned
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            self._fail(script, f"{script.name} did not return a delay")
            return
        if _lua_type(self._rt, fn) != "function":
            self._fail(script, f"{script.name} did not return a function")
            return
        script.run = fn
        script.next_run_ms = start + int(delay)

    def _fail(self, script: _Script, message: str) -> None:
        self._text(2, f"Lua: {message}")
        self.last_error = message
        self._remove(script)

    # ---- the vehicle side ----------------------------------------------------------------------

    def file_read(self, path: str) -> bytes | None:
        """What ``io.open(path)`` reads, or None (no such file). Paths stay inside the FC's directory."""
        parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or ".." in parts or self._files is None:
            return None
        if isinstance(self._files, Path):
            target = self._files.joinpath(*parts)
            return target.read_bytes() if target.is_file() else None
        return self._files.get("/".join(parts))

    def param(self, name: str) -> float | None:
        """What ``param:get(name)`` returns: the value, or nil for an unknown parameter."""
        value = self._params(name) if callable(self._params) else self._params.get(name)
        return None if value is None else float(value)

    def set_armed(self, armed: bool) -> None:
        self._armed = armed

    @property
    def armed(self) -> bool:
        return self._armed

    def arming_check(self) -> tuple[bool, str]:
        """The first failing pre-arm check of scripting, then of aux auth: (ok, reason without the
        ``PreArm: ``/``Arm: `` prefix)."""
        failures = self.arming_failures()
        return (not failures, failures[0] if failures else "")

    def arming_failures(self) -> list[str]:
        """Every failing text, in ArduPilot's order: the system check (scripting), then aux auth."""
        out = []
        scripting = self.scripting_check()
        if scripting:
            out.append(scripting)
        ok, aux = self.aux.check()
        if not ok:
            out.append(aux)
        return out

    def scripting_check(self) -> str:
        """``AP_Scripting::arming_checks``: the failure text, or "" when scripting allows arming."""
        if (self.param("SCR_ENABLE") or 0) == 0 or int(self.param("SCR_DEBUG_OPTS") or 0) & DEBUG_DISABLE_PRE_ARM:
            return ""
        if self.last_error is not None:
            return f"Scripting: {self.last_error}"
        for what, name, actual in (("loaded", "SCR_LD_CHECKSUM", self.loaded_checksum),
                                   ("running", "SCR_RUN_CHECKSUM", self.running_checksum)):
            want = self.param(name)
            if want is not None and int(want) != -1 and int(want) & CHECKSUM_MASK != actual & CHECKSUM_MASK:
                return f"Scripting: {what} CRC incorrect want: 0x{actual & CHECKSUM_MASK:X}"
        return ""

    def is_handling_command(self, command: int) -> bool:
        """True when a script blocked ``command``: the FC neither handles nor acks it (GCS_Common.cpp)."""
        return command in self._blocked

    def deliver(self, channel: int, frame: bytes, now_ms: int | None = None) -> bool:
        """Hand one received wire frame to scripting; True if it was queued for the scripts."""
        if not 0 <= channel < self.channels:
            raise LuaHostError(f"channel {channel} out of range 0..{self.channels - 1}")
        if now_ms is not None:
            self._now_ms = max(self._now_ms, now_ms)
        parsed = self._parsers[channel].parse(frame)
        if parsed is None or self._rx is None:
            return False
        data, msgid, _crc_ok = parsed
        if msgid not in self._accept:
            return False
        if len(self._rx) >= self._rx_max:
            self.rx_dropped[channel] += 1
            return False
        self._rx.append((data, channel, self._now_ms & 0xFFFFFFFF))
        self.rx_queued[channel] += 1
        return True

    def drain_outgoing(self) -> list[tuple[int, bytes]]:
        """Frames scripts sent since the last call, as (channel, MAVLink2 frame)."""
        out, self._outgoing = self._outgoing, []
        return out

    def drain_texts(self) -> list[GcsText]:
        """Texts sent since the last call."""
        new = self.texts[self._text_cursor:]
        self._text_cursor = len(self.texts)
        return new

    def _text(self, severity: int, text: str) -> None:
        self.texts.append(GcsText(severity, text, self._now_ms))

    def _frame(self, channel: int, msgid: int, payload: bytes, crc_extra: int) -> bytes:
        length = len(payload)
        while length > 1 and payload[length - 1] == 0:
            length -= 1  # _mav_trim_payload
        seq = self._tx_seq[channel]
        self._tx_seq[channel] = (seq + 1) & 0xFF
        header = struct.pack("<BBBBBB", length, 0, 0, seq, self.sysid, self.compid) + msgid.to_bytes(3, "little")
        crc = x25_crc(bytes([crc_extra]), x25_crc(header + payload[:length]))
        return b"\xfd" + header + payload[:length] + struct.pack("<H", crc)


class _Bindings:
    """What the Lua prelude may call; the scripts themselves never see this object."""

    def __init__(self, host: LuaGateHost) -> None:
        self._h = host
        self.channels = host.channels

    def aux_get_id(self) -> int | None:
        return self._h.aux.get_id()

    def aux_passed(self, auth_id: int) -> None:
        self._h.aux.set_passed(auth_id)

    def aux_failed(self, auth_id: int, msg: bytes) -> None:
        self._h.aux.set_failed(auth_id, msg.decode("utf-8", "replace"))

    def is_armed(self) -> bool:
        return self._h.armed

    def arm_request(self) -> bool:
        self._h.arm_requests += 1
        return False

    def disarm_request(self) -> bool:
        self._h.disarm_requests += 1
        return False

    def mav_init(self, queue: int, count: int) -> None:
        h = self._h
        if h._rx is None:
            h._rx = collections.deque()
            h._rx_max = queue
        # the C code clears the registrations on every init, also another script's
        h._accept = []
        h._accept_size = count

    def mav_register(self, msgid: int) -> bool:
        h = self._h
        if msgid in h._accept:
            return False
        if len(h._accept) >= h._accept_size:
            raise LuaHostError("no registrations free")
        h._accept.append(msgid)
        return True

    def mav_receive(self) -> tuple[bytes, int, int] | None:
        h = self._h
        if h._rx is None:
            raise LuaHostError("RX not initialized")
        if not h._rx:
            return None
        return h._rx.popleft()

    def mav_send(self, channel: int, msgid: int, payload: bytes) -> bool:
        h = self._h
        entry = _entry(msgid)
        if entry is None:
            raise LuaHostError(f"Unknown MAVLink message ID ({msgid})")
        crc_extra, max_len = entry
        if len(payload) < max_len:
            # the FC would read past the Lua string; refuse so the script gets fixed
            raise LuaHostError(f"payload of message {msgid} is {len(payload)} bytes, send_chan reads {max_len}")
        payload = payload[:max_len]
        if h._send is not None:
            return bool(h._send(channel, msgid, payload))
        h._outgoing.append((channel, h._frame(channel, msgid, payload, crc_extra)))
        return True

    def mav_block(self, command: int) -> bool:
        self._h._blocked.add(command)
        return True

    def send_text(self, severity: int, text: bytes) -> None:
        self._h._text(severity, text.decode("utf-8", "replace"))

    def file_read(self, path: bytes) -> bytes | None:
        return self._h.file_read(path.decode("utf-8", "replace"))

    def param_get(self, name: bytes) -> float | None:
        return self._h.param(name.decode("ascii", "replace"))

    def millis(self) -> int:
        return self._h._now_ms & 0xFFFFFFFF


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _lua_type(rt: Any, value: object) -> str:
    return str(lupa_lua.lua_type(value) or type(value).__name__)


class _Bus(Protocol):
    """The part of sim.vfc.hooks.VehicleBus this adapter uses."""

    @property
    def sysid(self) -> int: ...

    @property
    def compid(self) -> int: ...

    def send_payload(self, channel: int, msgid: int, payload: bytes) -> bool: ...

    def send_text(self, severity: int, text: str) -> None: ...

    def time_ms(self) -> int: ...


class LuaScriptingAuthority:
    """ArduPilot scripting for the virtual FC: an ``ArmingAuthority`` (sim/vfc/hooks.py) backed by LuaGateHost.

    At every boot it starts a fresh Lua state, as the FC does, and loads the scripts: the ones given
    here, else every ``*.lua`` in the bus's ``scripts_dir`` (so a gate installed over MAVLink FTP runs
    after the reboot, and a tampered or removed one behaves as it would on the FC), else the shipped
    gate. If the bus has ``get_param`` and ``SCR_ENABLE`` is 0, no script runs — and, as on ArduPilot,
    nothing then vetoes arming.
    """

    def __init__(self, scripts: Mapping[str, bytes] | None = None, *,
                 vm_instructions: int = VM_INSTRUCTIONS) -> None:
        self._scripts = dict(scripts) if scripts is not None else None
        self._vm_instructions = vm_instructions
        self._bus: _Bus | None = None
        self.host: LuaGateHost | None = None

    def boot(self, bus: _Bus) -> None:
        self._bus = bus
        get_param = getattr(bus, "get_param", None)
        directory = getattr(bus, "scripts_dir", None)
        host = LuaGateHost(sysid=bus.sysid, compid=bus.compid, send=bus.send_payload, params=get_param,
                           vm_instructions=self._vm_instructions, now_ms=bus.time_ms(),
                           files=directory.parent if isinstance(directory, Path) else None)
        self.host = host
        enabled = get_param("SCR_ENABLE") if get_param is not None else 1
        if enabled:
            for name, source in self._boot_scripts(bus):
                host.add_script(source, name)
            host.tick(host.now_ms)  # scripts claim their aux auth slots before the FC answers anything
        self._flush()

    def _boot_scripts(self, bus: _Bus) -> list[tuple[str, bytes]]:
        if self._scripts is not None:
            return sorted(self._scripts.items())
        directory = getattr(bus, "scripts_dir", None)
        if isinstance(directory, Path):
            return [(p.name, p.read_bytes()) for p in sorted(directory.glob("*.lua")) if p.is_file()]
        from agent.gate.client import gate_script

        return [("flightseal_gate.lua", gate_script())]

    def shutdown(self) -> None:
        self.host = None
        self._bus = None

    def on_frame(self, channel: int, frame: bytes) -> None:
        if self.host is not None and self._bus is not None and 0 <= channel < self.host.channels:
            self.host.deliver(channel, frame, self._bus.time_ms())

    def tick(self, now_ms: int) -> None:
        if self.host is not None:
            self.host.tick(max(now_ms, self.host.now_ms))
            self._flush()

    def is_command_blocked(self, command: int) -> bool:
        return self.host is not None and self.host.is_handling_command(command)

    def arming_check(self) -> tuple[bool, str]:
        if self.host is None:
            return True, ""
        failures = self.host.arming_failures()
        return not failures, "\n".join(failures)

    def scripting_command(self, action: int) -> int:
        """As ``AP_Scripting::handle_command_int_packet``: REPL denied, stop and stop-and-restart
        accepted (from any link, no authorisation: recorded), anything else unsupported."""
        if action in (0, 1):
            return 2  # MAV_RESULT_DENIED
        if action not in (SCRIPTING_STOP, SCRIPTING_STOP_AND_RESTART):
            return 3  # MAV_RESULT_UNSUPPORTED
        if self.host is not None and self._bus is not None:
            if action == SCRIPTING_STOP:
                self.host.stop_scripting()
            else:
                self.host.restart_scripting(max(self._bus.time_ms(), self.host.now_ms))
                self.host.tick(self.host.now_ms)
            self._flush()
        return 0  # MAV_RESULT_ACCEPTED (with scripting disabled too: nothing runs to stop)

    def checksums(self) -> tuple[int, int] | None:
        if self.host is None:
            return None
        return self.host.loaded_checksum & CHECKSUM_MASK, self.host.running_checksum & CHECKSUM_MASK

    def set_armed(self, armed: bool) -> None:
        if self.host is not None:
            self.host.set_armed(armed)

    def _flush(self) -> None:
        if self.host is not None and self._bus is not None:
            for text in self.host.drain_texts():
                self._bus.send_text(text.severity, text.text)

