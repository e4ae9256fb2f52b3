"""FlightSeal inside MAVProxy: the operator's pre-flight check on the ground station's own link (issue 16).

Load it in MAVProxy's console (or ``--cmd``, or ``mavinit.scr``)::

    module load agent.mavproxy_flightseal

MAVProxy's loader imports ``MAVProxy.modules.mavproxy_NAME`` and then ``NAME`` itself, so this
module is found by its Python path wherever FlightSeal is installed in MAVProxy's environment.
It opens no connection of its own: it sends TUNNEL packets through MAVProxy's master and reads the
answers in ``mavlink_packet``, driving :class:`agent.challenge.Collector`, the same protocol state
machine as ``flightseal challenge``; ``fs verify`` is :func:`agent.verifier.verify_envelope`, the
core of ``flightseal verify``. Commands::

    fs challenge [--device ID]     fresh nonce, collect, save to the results dir, verify at once
    fs verify [FILE] [--device ID] [--nonce HEX]   verify a saved attestation (default: the last one)
    fs status                      the gate's state, the last verdict and its reasons, device, manifest
    fs push                        push saved results to the fleet service
    fs set [NAME VALUE...]         trust DIR | fleet URL TOKEN_FILE | results DIR | target SYS/COMP |
                                   max_age S | timeout S | allow_software_keys on|off | require_quote on|off

Every error is one ``fs: error: …`` line in the console, never a traceback.
"""

from __future__ import annotations

import json
import secrets
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MAVProxy.modules.lib import mp_module

from agent.challenge import ChallengeError, Collector, send_tunnel, tunnel_payload
from agent.config import FleetConfig
from agent.fleet_push import FleetPusher, FleetQueue
from agent.gate.client import ACK_ARMED, ACK_FORMAT, ACK_MAGIC
from agent.gate.client import TUNNEL_TYPE as GATE_TUNNEL_TYPE
from agent.mavlink import challenge_wire as wire
from agent.prearm_words import explain
from agent.verifier import Checked, verify_envelope
from attest import timeutil
from attest.errors import FlightSealError
from attest.limits import LIMITS
from hardware.files import read_bounded, write_atomic

USAGE = "usage: fs <challenge [--device ID]|verify [FILE] [--device ID] [--nonce HEX]|status|push|set [NAME VALUE]>"
SUFFIX = ".attestation"  # the DSSE envelope; beside it NAME.json holds the nonce and what was expected
PREARM_REPEAT_S = 30.0  # the same PreArm text is explained again after this long
_ACK_RESULTS = {0: "accepted", 1: "stale", 2: "denied"}  # MAV_RESULT_ACCEPTED, _TEMPORARILY_REJECTED, _DENIED


class UsageError(FlightSealError):
    """A command line the module cannot use."""


@dataclass
class Settings:
    trust: Path | None = None
    results: Path = Path("flightseal-results")
    target: tuple[int, int] = (1, 191)
    max_age: int = 300
    timeout: float = 60.0
    allow_software_keys: bool = False
    require_quote: bool = False
    fleet_url: str = ""
    fleet_token: Path | None = None


@dataclass
class Pending:
    collector: Collector
    expected_device: str | None


def _flag(value: str) -> bool:
    if value.lower() in ("on", "1", "true", "yes"):
        return True
    if value.lower() in ("off", "0", "false", "no"):
        return False
    raise UsageError(f"expected on or off, not {value!r}")


def _options(args: list[str], names: set[str]) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and ``--name value`` options (only those in ``names``)."""
    positional: list[str] = []
    options: dict[str, str] = {}
    it = iter(args)
    for arg in it:
        if arg.startswith("--"):
            name = arg[2:]
            if name not in names:
                raise UsageError(f"unknown option {arg}; {USAGE}")
            value = next(it, None)
            if value is None:
                raise UsageError(f"{arg} needs a value")
            options[name] = value
        else:
            positional.append(arg)
    return positional, options


class FlightSealModule(mp_module.MPModule):  # type: ignore[misc]  # MAVProxy ships no type hints
    """``fs …`` in MAVProxy's console."""

    def __init__(self, mpstate: Any) -> None:
        super().__init__(mpstate, "flightseal", "FlightSeal pre-flight attestation check", public=True)
        self.fs = Settings()
        self.pending: Pending | None = None
        self.last_file: Path | None = None
        self.last: Checked | None = None
        self.last_error = ""
        self.gate_text = ""  # the last "FlightSeal: …" STATUSTEXT from the FC
        self._explained: dict[str, float] = {}
        self.acks: Counter[str] = Counter()
        self.last_ack = ""
        self._push: threading.Thread | None = None
        self.add_command("fs", self.cmd_fs, "FlightSeal pre-flight check",
                         ["challenge", "verify (FILENAME)", "status", "push", "set"])

    # ---- console
    def out(self, line: str) -> None:
        print(line, flush=True)

    def cmd_fs(self, args: list[str]) -> None:
        try:
            self._command(args)
        except (FlightSealError, OSError) as exc:
            self.out(f"fs: error: {exc}")
        except Exception as exc:  # MAVProxy would print a traceback: one line is the contract
            self.out(f"fs: error: {type(exc).__name__}: {exc}")

    def _command(self, args: list[str]) -> None:
        if not args:
            raise UsageError(USAGE)
        verb, rest = args[0], args[1:]
        if verb == "challenge":
            self.challenge(rest)
        elif verb == "verify":
            self.verify_cmd(rest)
        elif verb == "status":
            self.status()
        elif verb == "push":
            self.push()
        elif verb == "set":
            self.set(rest)
        else:
            raise UsageError(USAGE)

    # ---- fs set
    def set(self, args: list[str]) -> None:
        s = self.fs
        if not args:
            self.out(f"fs: trust {s.trust or '(unset)'}, results {s.results}, target {s.target[0]}/{s.target[1]}, "
                     f"max_age {s.max_age}, timeout {s.timeout:g}, allow_software_keys "
                     f"{'on' if s.allow_software_keys else 'off'}, require_quote {'on' if s.require_quote else 'off'}, "
                     f"fleet {s.fleet_url or '(unset)'}")
            return
        name, values = args[0], args[1:]
        want = 2 if name == "fleet" else 1
        if len(values) != want:
            raise UsageError(f"fs set {name} takes {want} value(s)")
        value = values[0]
        if name == "trust":
            trust = Path(value).expanduser()
            if not (trust / "root.json").is_file():
                raise UsageError(f"{trust} is not a trust directory (no root.json)")
            s.trust = trust
        elif name == "results":
            s.results = Path(value).expanduser()
        elif name == "target":
            try:
                t_sys, t_comp = (int(x) for x in value.split("/"))
            except ValueError:
                raise UsageError("target is SYSTEM/COMPONENT, e.g. 1/191") from None
            s.target = (t_sys, t_comp)
        elif name == "max_age":
            s.max_age = int(value)
        elif name == "timeout":
            s.timeout = float(value)
        elif name == "allow_software_keys":
            s.allow_software_keys = _flag(value)
        elif name == "require_quote":
            s.require_quote = _flag(value)
        elif name == "fleet":
            s.fleet_url, s.fleet_token = value, Path(values[1]).expanduser()
        else:
            raise UsageError(f"unknown setting {name!r}: trust, results, target, max_age, timeout, "
                             "allow_software_keys, require_quote, fleet")
        self.out(f"fs: {name} set")

    # ---- fs challenge
    def challenge(self, args: list[str]) -> None:
        positional, options = _options(args, {"device"})
        if positional:
            raise UsageError("usage: fs challenge [--device ID]")
        if self.pending is not None:
            raise UsageError("a challenge is already running")
        if self.master is None:
            raise UsageError("no MAVLink link: connect MAVProxy to the vehicle first")
        collector = Collector(secrets.token_bytes(32), timeout=self.fs.timeout, target=self.fs.target)
        self.pending = Pending(collector, options.get("device"))
        self._send(collector.start(time.monotonic()))
        self.out(f"fs: challenge sent to {self.fs.target[0]}/{self.fs.target[1]}, nonce {collector.nonce.hex()}")

    def _send(self, packet: wire.Packet) -> None:
        send_tunnel(self.master, self.fs.target[0], self.fs.target[1], packet)

    def idle_task(self) -> None:
        pending = self.pending
        if pending is None:
            return
        try:
            for packet in pending.collector.due(time.monotonic()):
                self._send(packet)
        except ChallengeError as exc:
            self.pending = None
            self.last_error = str(exc)
            self.out(f"fs: error: challenge failed: {exc}")
        except Exception as exc:
            self.pending = None
            self.out(f"fs: error: challenge failed: {type(exc).__name__}: {exc}")

    def mavlink_packet(self, m: Any) -> None:
        try:
            kind = m.get_type()
            if kind == "TUNNEL":
                self._tunnel(m)
            elif kind == "STATUSTEXT":
                self._statustext(str(m.text))
        except Exception as exc:
            self.out(f"fs: error: {type(exc).__name__}: {exc}")

    def _tunnel(self, m: Any) -> None:
        if m.payload_type == GATE_TUNNEL_TYPE:
            self._gate_ack(bytes(m.payload[:min(int(m.payload_length), len(m.payload))]))
            return
        pending = self.pending
        if pending is None or self.master is None:
            return
        payload = tunnel_payload(m, self.master.mav.srcSystem, self.master.mav.srcComponent)
        if payload is None:
            return
        try:
            data = pending.collector.receive(payload, time.monotonic())
        except ChallengeError as exc:
            self.pending = None
            self.last_error = str(exc)
            self.out(f"fs: error: challenge failed: {exc}")
            return
        if data is None:
            return
        self.pending = None
        path = self._save(data, pending)
        self.out(f"fs: attestation received ({len(data)} bytes), saved to {path}")
        if self.fs.trust is None:
            self.out("fs: not verified: no trust dir (fs set trust DIR), then fs verify")
            return
        try:
            self._verify(data, pending.collector.nonce, pending.expected_device)
        except (FlightSealError, OSError) as exc:
            self.out(f"fs: error: {exc}")

    def _gate_ack(self, data: bytes) -> None:
        """A gate ack to the agent (unauthenticated here: the gate key stays on the companion)."""
        if len(data) < struct.calcsize(ACK_FORMAT) or not data.startswith(ACK_MAGIC):
            return
        fields = struct.unpack_from(ACK_FORMAT, data)
        result, flags = int(fields[1]), int(fields[3])
        word = _ACK_RESULTS.get(result, f"result {result}")
        self.acks[word] += 1
        self.last_ack = f"{word}{', armed' if flags & ACK_ARMED else ''}"

    def _statustext(self, text: str) -> None:
        if "FlightSeal" not in text:
            return
        body = text.removeprefix("PreArm: ")
        if body.startswith("FlightSeal: "):
            self.gate_text = body
        meaning = explain(text)
        now = time.monotonic()
        if meaning is not None and now - self._explained.get(text, -1e9) >= PREARM_REPEAT_S:
            self._explained[text] = now
            self.out(f"fs: {text} -> {meaning}")

    def _save(self, data: bytes, pending: Pending) -> Path:
        self.fs.results.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.fs.results / f"{stamp}-{pending.collector.session:08x}{SUFFIX}"
        write_atomic(path, data)
        meta = {"nonce": pending.collector.nonce.hex(), "expected_device": pending.expected_device,
                "target": f"{self.fs.target[0]}/{self.fs.target[1]}", "received": timeutil.format(timeutil.now())}
        write_atomic(path.with_suffix(".json"), json.dumps(meta, indent=2).encode())
        self.last_file = path
        return path

    # ---- fs verify
    def verify_cmd(self, args: list[str]) -> None:
        positional, options = _options(args, {"device", "nonce"})
        if len(positional) > 1:
            raise UsageError("usage: fs verify [FILE] [--device ID] [--nonce HEX]")
        path = Path(positional[0]).expanduser() if positional else self.last_file
        if path is None:
            raise UsageError("no attestation yet: fs challenge, or fs verify FILE")
        meta: dict[str, Any] = {}
        side = path.with_suffix(".json")
        if side.is_file():
            try:
                meta = json.loads(read_bounded(side, "attestation record", 64 * 1024))
            except ValueError:
                raise UsageError(f"{side} is not the JSON fs challenge wrote") from None
        nonce_hex = options.get("nonce") or str(meta.get("nonce") or "")
        if not nonce_hex:
            raise UsageError(f"no nonce for {path}: give --nonce HEX (the challenge's nonce)")
        try:
            nonce = bytes.fromhex(nonce_hex)
        except ValueError:
            raise UsageError("--nonce must be hex") from None
        data = read_bounded(path, "attestation", LIMITS.max_envelope_bytes)
        self._verify(data, nonce, options.get("device") or meta.get("expected_device"))

    def _verify(self, data: bytes, nonce: bytes, expected_device: str | None) -> None:
        if self.fs.trust is None:
            raise UsageError("no trust dir: fs set trust DIR")
        checked = verify_envelope(data, self.fs.trust, nonce, expected_device=expected_device,
                                  max_age=self.fs.max_age, allow_software_keys=self.fs.allow_software_keys,
                                  require_quote=self.fs.require_quote)
        self.last, self.last_error = checked, ""
        for line in checked.lines():
            self.out(f"fs: {line}")

    # ---- fs status
    def status(self) -> None:
        gate = self.gate_text or "(no FlightSeal text from the FC yet)"
        meaning = explain(self.gate_text) if self.gate_text else None
        self.out(f"fs: gate: {gate}{f' -> {meaning}' if meaning else ''}")
        acks = ", ".join(f"{n} {word}" for word, n in sorted(self.acks.items()))
        self.out(f"fs: gate acks seen: {acks or 'none'}{f' (last {self.last_ack})' if self.last_ack else ''}")
        if self.pending is not None:
            self.out("fs: challenge in progress")
        if self.last is None:
            self.out(f"fs: last verdict: none{f' (last error: {self.last_error})' if self.last_error else ''}")
            return
        result, p = self.last.result, self.last.result.predicate
        self.out(f"fs: last verdict: {'PASS' if result.passed else 'FAIL'}")
        for r in result.reasons:
            self.out(f"fs:   {r}")
        device = result.device.device_id if result.device else (p.device_id if p else "?")
        self.out(f"fs: device: {device}")
        if p is not None:
            self.out(f"fs: manifest: v{p.manifest.version if p.manifest else '?'}, attested {timeutil.format(p.time)}")
            kinds = Counter(m.kind.value for m in p.measurements)
            summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
            self.out(f"fs: measurements: {len(p.measurements)} ({summary})")

    # ---- fs push
    def push(self) -> None:
        if not self.fs.fleet_url or self.fs.fleet_token is None:
            raise UsageError("no fleet service: fs set fleet URL TOKEN_FILE")
        if self._push is not None and self._push.is_alive():
            raise UsageError("a push is already running")
        files = sorted(self.fs.results.glob(f"*{SUFFIX}"))
        todo = [f for f in files if not f.with_suffix(".pushed").exists()]
        if not todo:
            self.out("fs: nothing to push")
            return
        pusher = FleetPusher(FleetConfig(url=self.fs.fleet_url, token_file=str(self.fs.fleet_token)),
                             FleetQueue(self.fs.results / "fleet-queue"), device_id="")
        self._push = threading.Thread(target=self._push_all, args=(pusher, todo), name="fs-push", daemon=True)
        self._push.start()  # an HTTP round trip must not hold up MAVProxy's link

    def _push_all(self, pusher: FleetPusher, todo: list[Path]) -> None:
        done = 0
        for path in todo:
            try:
                outcome = pusher.push(read_bounded(path, "attestation", LIMITS.max_envelope_bytes))
            except (FlightSealError, OSError) as exc:
                self.out(f"fs: error: push {path.name}: {exc}")
                continue
            if 200 <= outcome.status < 300:
                path.with_suffix(".pushed").write_text(outcome.detail[:2000])
                done += 1
            else:
                self.out(f"fs: error: push {path.name}: {outcome.status or 'no answer'}: {outcome.detail[:200]}")
        self.out(f"fs: pushed {done} of {len(todo)} attestation(s) to {pusher.cfg.url}")


def init(mpstate: Any) -> FlightSealModule:
    """MAVProxy's entry point (``module load agent.mavproxy_flightseal``)."""
    return FlightSealModule(mpstate)
