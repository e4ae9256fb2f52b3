"""Install the Lua arming gate on the FC over MAVLink: upload, enable scripting, reboot, confirm,
then make ArduPilot itself refuse arming when the gate stops (script checksums, ADR 0013).

Refuses to do anything while the vehicle is armed (it reboots the FC). Confirms the upload by the
FC's own CRC32 of the file, the gate by a probe it must refuse as old (see ``_confirm``), and the
checksums by ArduPilot's own pre-arm text with scripting stopped (``_confirm_stop_refused``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.gate.client import STALE, ForgedAck, Sequence, decode_ack, encode_verdict, gate_script, gate_version
from agent.gate.key import GATE_VM_I_COUNT, fc_key_path
from agent.mavlink.ftp import FtpClient, FtpError, FtpNotFound
from agent.mavlink.ftpwire import crc32_ardupilot
from agent.mavlink.ids import MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN
from agent.mavlink.link import Link, LinkError, heartbeat_armed
from agent.mavlink.statustext import StatusTexts
from attest.errors import FlightSealError
from attest.models import Code, Reason, Verdict

GATE_NAME = "flightseal_gate.lua"
CMD_REBOOT = MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN
CMD_RUN_PREARM_CHECKS = 401
CMD_SCRIPTING = 42701  # MAV_CMD_SCRIPTING
SCRIPTING_STOP = 2
CHECKSUM_MASK = 0x7FFFFF  # AP_Scripting::checksum_param_mask
DEBUG_DISABLE_PRE_ARM = 16  # SCR_DEBUG_OPTS bit 4: ArduPilot skips its scripting pre-arm checks
PARAM_TIMEOUT_S = 2.0


class GateInstallError(FlightSealError):
    """The gate could not be installed or confirmed."""


@dataclass
class InstallReport:
    path: str
    crc32: int
    version: int
    rebooted: bool
    scripting_enabled_now: bool
    script_checksum: int | None = None  # SCR_LD_CHECKSUM = SCR_RUN_CHECKSUM, as set


def _armed(link: Link) -> bool:
    return heartbeat_armed(link.fc_heartbeat)


def _scripts_dir(ftp: FtpClient) -> str:
    for directory in ("APM/scripts", "scripts"):
        try:
            ftp.list_dir(directory)
            return directory
        except FtpNotFound:
            continue
    for parent, directory in (("APM", "APM/scripts"), ("/", "scripts")):
        try:
            ftp.list_dir(parent)
        except FtpNotFound:
            continue
        ftp.mkdir(directory)
        return directory
    raise GateInstallError("the FC has neither APM/ nor a writable scripts directory (is there an SD card?)")


def _param(link: Link, name: str) -> float | None:
    link.send(link.mav.param_request_read_encode(link.fc[0], link.fc[1], name.encode(), -1))
    msg = link.recv(["PARAM_VALUE"], PARAM_TIMEOUT_S, lambda m: str(m.param_id).rstrip("\x00") == name)
    return None if msg is None else float(msg.param_value)


def _set_param(link: Link, name: str, value: float) -> None:
    link.send(link.mav.param_set_encode(link.fc[0], link.fc[1], name.encode(), value, 2))
    msg = link.recv(["PARAM_VALUE"], PARAM_TIMEOUT_S, lambda m: str(m.param_id).rstrip("\x00") == name)
    if msg is None or float(msg.param_value) != value:
        raise GateInstallError(f"the FC did not confirm {name}={value:g}")


def install_gate(link: Link, key: bytes, say: Callable[[str], None] = lambda _: None,
                 reboot_timeout: float = 60.0) -> InstallReport:
    """``key`` is the airframe's gate key (agent/gate/key.py): written beside the scripts directory,
    where the gate reads it at load. Send it over a direct link: MAVLink FTP does not encrypt, and a
    router would show it to every client (ADR 0015)."""
    if _armed(link):
        raise GateInstallError("the vehicle is armed: disarm and land before installing the gate (it reboots the FC)")
    script = gate_script()
    ftp = FtpClient(link)
    try:
        ftp.reset_sessions()
        directory = _scripts_dir(ftp)
        key_path = fc_key_path(directory)
        say(f"writing the gate key to {key_path}")
        ftp.write_file(key_path, key)
        if ftp.crc32(key_path) != crc32_ardupilot(key):
            raise GateInstallError(f"{key_path} on the FC does not hold the key just written; run the install again")
        path = f"{directory}/{GATE_NAME}"
        say(f"uploading {len(script)} bytes to {path}")
        ftp.write_file(path, script)
        crc = ftp.crc32(path)
    except FtpError as exc:
        raise GateInstallError(f"upload over MAVLink FTP failed: {exc}") from None
    if crc != crc32_ardupilot(script):
        raise GateInstallError(f"{path} on the FC has CRC32 {crc:08x}, expected {crc32_ardupilot(script):08x}: "
                               "the upload was corrupted; run the install again")
    scr = _param(link, "SCR_ENABLE")
    if scr is None:
        raise GateInstallError("the FC has no SCR_ENABLE parameter: this firmware was built without Lua scripting")
    enabled_now = scr != 1
    if enabled_now:
        say("setting SCR_ENABLE=1")
        _set_param(link, "SCR_ENABLE", 1)
    if _armed(link):
        raise GateInstallError("the vehicle armed during the install: not rebooting; disarm and run it again")
    say("rebooting the FC so scripting loads the gate")
    _reboot(link, reboot_timeout)
    vm = _param(link, "SCR_VM_I_COUNT")  # ArduPilot shows it only once scripting was on at boot
    if vm is None:
        raise GateInstallError("the FC has no SCR_VM_I_COUNT with scripting on: is SCR_ENABLE 1 after the reboot?")
    if vm < GATE_VM_I_COUNT:
        say(f"setting SCR_VM_I_COUNT={GATE_VM_I_COUNT} (the gate's MACs need it) and rebooting again")
        _set_param(link, "SCR_VM_I_COUNT", GATE_VM_I_COUNT)
        _reboot(link, reboot_timeout)
    say("FC is back; asking the gate to confirm")
    version = _confirm(link, key)
    checksum = protect_scripts(link, say, directory)
    say("confirming that ArduPilot refuses arming when scripting stops")
    _confirm_stop_refused(link, reboot_timeout)
    say("FC is back; asking the gate to confirm again")
    _confirm(link, key)
    texts = _prearm_scripting_texts(link)
    if texts:
        raise GateInstallError(f"after the reboot ArduPilot still refuses the scripts: {texts[0]}")
    return InstallReport(path, crc, version, True, enabled_now, checksum)


def scripts_checksum(crcs: list[int]) -> int:
    """SCR_LD_CHECKSUM / SCR_RUN_CHECKSUM for scripts with these CRC32s (ArduPilot's ``crc_crc32``
    from 0 over each file): their XOR in 23 bits (``checksum_param_mask``; recorded on SITL)."""
    value = 0
    for crc in crcs:
        value ^= crc
    return value & CHECKSUM_MASK


def protect_scripts(link: Link, say: Callable[[str], None] = lambda _: None, directory: str | None = None) -> int:
    """Set ArduPilot's script checksums to the scripts now on the FC and check that it agrees.

    With them set, ArduPilot itself refuses arming when the set of loaded or running scripts
    changes: the gate stopped (MAV_CMD_SCRIPTING), failed, removed, or joined by another script
    (ADR 0013). The FC's own CRC of each file is asked for (no transfer); ArduPilot then runs its
    pre-arm checks and must not complain about the scripts.
    """
    ftp = FtpClient(link)
    try:
        directory = directory or _scripts_dir(ftp)
        names = sorted(e.name for e in ftp.list_dir(directory)
                       if not e.is_dir and e.name.endswith(".lua") and not e.name.startswith("."))
        crcs = [ftp.crc32(f"{directory}/{name}") for name in names]
    except FtpError as exc:
        raise GateInstallError(f"cannot read the scripts' CRCs over MAVLink FTP: {exc}") from None
    value = scripts_checksum(crcs)
    say(f"setting SCR_LD_CHECKSUM = SCR_RUN_CHECKSUM = {value:#x} for {', '.join(names)}")
    for name in ("SCR_LD_CHECKSUM", "SCR_RUN_CHECKSUM"):
        _set_param(link, name, float(value))
    texts = _prearm_scripting_texts(link)
    if texts:
        raise GateInstallError(f"ArduPilot does not agree with the script checksum {value:#x} of {', '.join(names)}: "
                               f"{texts[0]} (are there scripts in @ROMFS/scripts, or one that failed to load?)")
    return value


def _prearm_scripting_texts(link: Link, wait: float = 1.5) -> list[str]:
    """MAV_CMD_RUN_PREARM_CHECKS (ArduPilot reports each failure as ``PreArm: …`` and never arms);
    the scripting failures among them."""
    link.send(link.mav.command_long_encode(link.fc[0], link.fc[1], CMD_RUN_PREARM_CHECKS, 0, 0, 0, 0, 0, 0, 0, 0))
    texts = StatusTexts()
    deadline = time.monotonic() + wait
    acked = False
    while time.monotonic() < deadline:
        msg = link.recv(["COMMAND_ACK", "STATUSTEXT"], max(0.01, min(0.2, deadline - time.monotonic())),
                        lambda m: (m.get_srcSystem(), m.get_srcComponent()) == link.fc)
        if msg is None:
            continue
        if msg.get_type() == "STATUSTEXT":
            texts.add(msg)
        elif msg.command == CMD_RUN_PREARM_CHECKS:
            if msg.result != 0:
                raise GateInstallError(f"the FC refused to run its pre-arm checks (MAV_RESULT {msg.result})")
            acked = True
    if not acked:
        raise GateInstallError("the FC did not answer MAV_CMD_RUN_PREARM_CHECKS")
    return [t.removeprefix("PreArm: ") for t in texts.texts if t.startswith("PreArm: Scripting:")]


def _confirm_stop_refused(link: Link, reboot_timeout: float) -> None:
    """Stop scripting (MAV_CMD_SCRIPTING) and see ArduPilot refuse arming by its running checksum;
    then reboot, which starts scripting and the gate afresh (a scripting restart would XOR the
    loaded checksum twice: recorded on SITL)."""
    ack = link.command_long(CMD_SCRIPTING, (float(SCRIPTING_STOP),), timeout=1.0, retries=2)
    if ack is None or ack.result != 0:
        raise GateInstallError("the FC did not accept MAV_CMD_SCRIPTING stop")
    time.sleep(0.5)
    texts = _prearm_scripting_texts(link)
    if not any("running CRC incorrect" in t for t in texts):
        raise GateInstallError("with scripting stopped ArduPilot did not refuse arming by the running script checksum "
                               f"(pre-arm said {texts or 'nothing about scripting'}); SCR_DEBUG_OPTS bit 4?")
    _reboot(link, reboot_timeout)


def _reboot(link: Link, timeout: float) -> None:
    link.command_long(CMD_REBOOT, (1.0,), timeout=1.0, retries=2)
    time.sleep(1.0)
    try:
        link.reconnect(timeout=timeout)
    except LinkError as exc:
        raise GateInstallError(f"the FC did not come back after the reboot: {exc}") from None


def _confirm(link: Link, key: bytes, timeout: float = 20.0) -> int:
    """Prove the gate runs, holds our key and listens to us, without changing what the pilot reads.

    The probe is a fail verdict made with the key for no nonce of the gate's (all zero), so the gate
    answers STALE with its version and nonce, in an ack made with the same key, and changes nothing:
    the pilot keeps reading "FlightSeal: waiting". A gate with another key counts it as forged and
    says so; an FC without the gate says nothing.
    """
    deadline = time.monotonic() + timeout
    probe = encode_verdict(Verdict.from_reasons([Reason(Code.MEASUREMENT_MISSING, "install check")]),
                           Sequence(0, 0), key, bytes(8), link.fc[0], link.fc[1])
    last = "no answer"
    texts = StatusTexts()
    while time.monotonic() < deadline:
        link.send(probe)
        end = time.monotonic() + 1.0
        while (left := end - time.monotonic()) > 0:
            msg = link.recv(["TUNNEL", "STATUSTEXT"], left, lambda m: (m.get_srcSystem(), m.get_srcComponent())
                            == link.fc)
            if msg is None:
                break
            if msg.get_type() == "STATUSTEXT":
                texts.add(msg)
                said = [t for t in texts.texts if t.startswith("FlightSeal: ") and "gate v" not in t]
                if said:
                    last = f"the FC said {said[-1]!r}"
                continue
            try:
                ack = decode_ack(msg, key)
            except ForgedAck as exc:
                raise GateInstallError(f"{exc}: something else answers in the gate's name") from None
            if ack is None or ack.sequence != Sequence(0, 0):
                continue
            if ack.result != STALE:
                raise GateInstallError(f"the gate answered the probe with MAV_RESULT {ack.result}, not STALE")
            if ack.gate_version != gate_version():
                raise GateInstallError(f"the FC runs gate version {ack.gate_version}, this agent ships "
                                       f"{gate_version()}: another copy of the gate is installed?")
            return ack.gate_version
        time.sleep(0.3)
    raise GateInstallError(f"the gate did not answer after the reboot ({last}); check SCR_ENABLE and the FC's "
                           "scripting messages (Lua: …) in the GCS ('forged verdict seen': the FC holds another "
                           "gate key, e.g. a stray APM/flightseal_gate.key; a gate older than this agent does not "
                           "answer its verdicts either)")
