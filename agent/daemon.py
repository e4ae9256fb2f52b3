"""The agent daemon: connect → measure → appraise → seal → deliver → keep alive → watch.

One thread does everything, so there is one order of events to reason about:

* **connect** opens the link and waits (bounded) for the FC heartbeat; failures back off and retry.
* **measure** runs every collector (``agent.measure.collect``); anything that could not be
  measured becomes a ``measurement-missing`` reason, so the verdict fails closed.
* **appraise** verifies the manifest file (signatures, threshold, expiry, never an older version
  than the highest one recorded) and appraises the measurements.
* **seal** signs the attestation with the device key (and a TPM quote where the key has one) and
  appends it to the hash-chained audit log.
* **deliver** sends the verdict to the Lua gate and waits for its ack.
* **watch** keeps the verdict alive at the gate and re-attests when something changes: a
  parameter (PARAM_VALUE), a script (CRC32 over FTP, polled), a new component on the bus, a new
  manifest file, the FC rebooting, the link coming back. It also answers operator challenges.

If the daemon stops or crashes, nothing refreshes the pass and the gate lapses to blocked by
itself within its lapse time. The daemon never disarms and never measures an armed vehicle: a change
seen in flight sends a fail verdict at once (the gate applies it only to the next arming) and the
pass runs after disarm.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import profiles
from agent.appraisal import Appraisal, ManifestStatus, appraise_pass, check_manifest
from agent.attestation import Sealed, seal, with_boot_log
from agent.audit import AuditError, AuditLog
from agent.challenge import Responder, tunnel_payload
from agent.config import AgentConfig
from agent.fleet_push import FleetPusher, FleetQueue
from agent.gate.client import GateClient, GateError, GateTimeout, SequenceSource
from agent.gate.key import GateKeyError, load_gate_key
from agent.gate.px4 import ArmAuthorizer
from agent.mavlink.ftp import FtpClient, FtpError, FtpNotFound
from agent.mavlink.ids import MAV_TYPE_GCS  # ground stations come and go; they are not parts of the airframe
from agent.mavlink.link import MAX_COMPONENTS, Link, LinkError, LinkLost, heartbeat_armed, link_config
from agent.measure.base import DroneCanBus, Inventory, MeasureOptions
from agent.measure.collect import STARTING, measure
from agent.measure.dronecan import node_statuses
from agent.measure.imagecache import ImageCache
from agent.measure.params import as_float32, bytewise_value
from agent.measure.scripts import list_scripts
from agent.profiles import FcProfile
from attest import params as paramdigest
from attest import timeutil
from attest.appraise import manifest_failure
from attest.errors import FlightSealError
from attest.limits import LIMITS
from attest.models import Code, Kind, Reason, Verdict
from attest.signer import Signer
from attest.trust import VerifiedManifest
from hardware.files import read_bounded
from hardware.uri import quoter_for
from truststore.manifest_state import ManifestState
from truststore.root_store import RootStore

log = logging.getLogger("flightseal.agent")
BENIGN_TRIGGERS = ("the arming gate answers again",)  # passes that do not put a kept-alive pass in doubt


def _printable(text: str, limit: int = 16) -> str:
    """Link-supplied text as it may go into a log line: printable ASCII, bounded."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])

REBOOT_GAP_S = 3.0  # no FC heartbeat this long, then one again: the FC rebooted
ARMED_ACK_FRESH_S = 2.5  # a gate ack this recent says whether the vehicle is armed (keep-alive: 1 s)
HEARTBEAT_DISPUTE_S = 3.0  # "armed" HEARTBEATs the gate's acks contradict this long are not the FC's
ARMED_HEARTBEAT_S = 1.5  # an FC HEARTBEAT said armed this recently (the FC sends them at 1 Hz)
COMPONENT_PASS_MIN_S = 5.0  # passes started by components coming or going: at most one per this
MANIFEST_POLL_S = 1.0
PASS_RETRY_S = 5.0
RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
MAX_TRANSITIONS = 256  # kept in Status for tests and the demo; a daemon runs for months


class State(enum.Enum):
    CONNECT = "connect"
    MEASURE = "measure"
    APPRAISE = "appraise"
    SEAL = "seal"
    DELIVER = "deliver"
    WATCH = "watch"
    STOPPED = "stopped"


@dataclass
class Status:
    """What the daemon has done so far (for tests, benchmarks and the demo)."""

    state: State = State.CONNECT
    passes: int = 0
    last: Sealed | None = None
    delivered: Sealed | None = None  # the last attestation whose verdict the gate acknowledged
    last_reason: str = ""
    gate_acks: int = 0
    gate_error: str = ""
    audit_error: str = ""  # why the audit log cannot be written now (a full disk), "" when it can
    first_ack_at: float | None = None
    transitions: list[str] = field(default_factory=list)  # the latest MAX_TRANSITIONS only


class Daemon:
    """The onboard agent: connect → measure → appraise → seal → deliver → watch, and again on any
    change (a parameter, a script, a part, the manifest). One state, one call (``_attest_pass``).

    It never stops on an error: a lost link reconnects, a key or audit failure makes the pass
    fail closed (the gate gets a fail verdict naming it), and nothing is sent to a vehicle that
    is armed. ``run`` returns only when ``stop`` is set."""

    def __init__(self, cfg: AgentConfig, signer: Signer, *, signing_key: bytes | None = None,
                 measure_options: MeasureOptions | None = None, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.signer = signer
        self.signing_key = signing_key
        state_dir = Path(cfg.trust.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        roots = RootStore(Path(cfg.trust.root), state_dir)  # never an older root, a newer one only through it
        self.trust = roots.load()
        roots.accept()
        self.manifest_state = ManifestState(state_dir / "manifest-state.json")
        self.sequence = SequenceSource(state_dir / "gate.seq")
        # the Lua gate's key: needed only once the FC turns out to be ArduPilot (PX4's gate has no key)
        gate_key_path = Path(cfg.gate.key_file) if cfg.gate.key_file else state_dir / "gate.key"
        self._gate_key_error: GateKeyError | None = None
        self.gate_key = b""
        if cfg.gate.enabled:
            try:
                self.gate_key = load_gate_key(gate_key_path)
            except GateKeyError as exc:
                if gate_key_path.exists():
                    raise  # a key readable by others, or not a key: said at once
                self._gate_key_error = exc
        self.profile: FcProfile | None = None  # the connected FC's, from its HEARTBEAT
        self._forgeries_seen = 0
        self.image_cache = ImageCache(state_dir / "image-cache")
        self.audit = AuditLog(Path(cfg.audit.path))
        self.fleet: FleetPusher | None = None  # pushes each attestation to the fleet service, in its own thread
        if cfg.fleet.url:
            queue_dir = Path(cfg.fleet.queue_dir) if cfg.fleet.queue_dir else state_dir / "fleet-queue"
            self.fleet = FleetPusher(cfg.fleet, FleetQueue(queue_dir, cfg.fleet.max_queued), cfg.device.id)
        self.base_options = measure_options or MeasureOptions(
            flash_read=cfg.measure.flash_read,
            firmware_file=Path(cfg.measure.firmware_image) if cfg.measure.firmware_image else None,
            scripts_dirs=(cfg.measure.scripts_dir,) if cfg.measure.scripts_dir else MeasureOptions().scripts_dirs,
            dronecan=cfg.measure.dronecan, dronecan_node_id=cfg.measure.dronecan_node_id,
            companion_config=config_path)
        self.status = Status()
        self.responder = Responder(self._answer_challenge)
        self.link: Link | None = None
        self.gate: GateClient | ArmAuthorizer | None = None
        self._inventory: Inventory | None = None
        self._manifest: ManifestStatus | None = None
        self._manifest_stat: tuple[int, int] | None = None
        self._dirty: str | None = "start"
        self._retry_at = 0.0
        self._deferred: str | None = None
        self._scripts_crc: dict[str, int | None] | None = None
        self._next_script_poll = 0.0
        self._next_script_hash = 0.0
        self._unenforced: list[str] = []  # why verdicts stopped being enforced, audited at the next pass
        self._next_dronecan_poll = 0.0
        self._dronecan: list[DroneCanBus] = []  # the buses the last pass scanned, with node uptimes
        self._next_manifest_poll = 0.0
        self._last_fc_heartbeat = 0.0
        self._known_components: set[tuple[int, int]] = set()
        self._armed_disputed_since: float | None = None
        self._pcr_log: Path | None = None  # the agent PCR's log, for a TPM key (ADR 0020)
        self._agent_digest = b""
        self._start_recorded = False
        self._record_start(state_dir)
        self._hb_armed_at = float("-inf")  # when an FC HEARTBEAT last said armed
        self._spoof_reported = False
        self._pass_started = float("-inf")
        self._fc_was_up = False  # the FC's last heartbeat said it was up (neither UNINIT nor BOOT)
        self._params_seen_first: dict[str, float] = {}  # PARAM_VALUEs heard while the first pass measured

    def _record_start(self, state_dir: Path) -> None:
        """A TPM key: this start-up (the agent's files and config) goes into the agent PCR (ADR 0020)."""
        from agent.measure.companion import collect_companion
        from agent.pcr_log import record_start
        from hardware.tpm import TpmError, TpmSigner

        if not isinstance(self.signer, TpmSigner):
            return
        agent = next(m for m in collect_companion(self.base_options) if m.component == "companion.agent")
        self._agent_digest = bytes.fromhex(agent.digests["sha256"])
        self._pcr_log = state_dir / "agent-pcr.json"
        try:
            record_start(self._pcr_log, self.signer, self._agent_digest)
            self._start_recorded = True
        except (TpmError, OSError) as exc:  # the TPM away at start: recorded before the first quote instead
            log.error("cannot record this start-up in the agent PCR yet: %s", exc)

    # ---- state machine
    def _enter(self, state: State, why: str = "") -> None:
        line = f"{self.status.state.value} → {state.value}" + (f" ({why})" if why else "")
        self.status.state = state
        self.status.transitions.append(line)
        if len(self.status.transitions) > MAX_TRANSITIONS:
            del self.status.transitions[:-MAX_TRANSITIONS // 2]
        log.info(line)

    def _audit(self, kind: str, body: dict[str, Any]) -> None:
        """An audit record whose loss must not stop the daemon (a full disk): logged once, not raised.
        Records that a verdict depends on go through ``self.audit.append`` and fail the pass instead."""
        try:
            self.audit.append(kind, body)
        except AuditError as exc:
            self._audit_failed(exc)

    def _audit_failed(self, exc: AuditError) -> None:
        if str(exc) != self.status.audit_error:
            log.error("%s", exc)
        self.status.audit_error = str(exc)

    def run(self, stop: threading.Event) -> None:
        attempt = 0
        if self.fleet is not None:
            self.fleet.start()
        try:
            while not stop.is_set():
                self._enter(State.CONNECT, self._dirty or "reconnect")
                try:
                    self._connect()
                except LinkError as exc:
                    delay = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
                    log.warning("cannot reach the FC: %s; retrying in %.1f s", exc, delay)
                    attempt += 1
                    stop.wait(delay)
                    continue
                attempt = 0
                self._dirty = self._dirty or "reconnect"
                try:
                    self._watch(stop)
                except LinkLost as exc:
                    log.warning("%s", exc)
                    self._dirty = "link lost: FC rebooted or unplugged"
                except OSError as exc:
                    # a local fault (a full disk under gate.seq or the image cache, a vanished device):
                    # the daemon stays up; the pass in force lapses at the gate while it reconnects
                    log.error("local error: %s; reconnecting in %.0f s, arming blocked meanwhile", exc, PASS_RETRY_S)
                    self._dirty = f"recovering from a local error: {exc.strerror or exc}"
                    stop.wait(PASS_RETRY_S)
                finally:
                    self._close()
        finally:
            if self.fleet is not None:
                self.fleet.stop()
            self._enter(State.STOPPED, "stop requested" if stop.is_set() else "error")

    def _connect(self) -> None:
        c = self.cfg.mavlink
        self.link = Link.open(link_config(c, self.signing_key))
        self._last_fc_heartbeat = time.monotonic()
        hb = self.link.fc_heartbeat  # the one Link.open waited for: an armed vehicle is hands off from the start
        self._hb_armed_at = self._last_fc_heartbeat if heartbeat_armed(hb) else float("-inf")
        self._fc_was_up = hb is not None and int(hb.system_status) not in STARTING
        self._armed_disputed_since, self._spoof_reported = None, False
        self._known_components = set(self.link.heard)
        self._fc_signed: bool | None = None  # whether the FC's last heartbeat was signed (posture, ADR 0014)
        # Every message the link receives passes through here, whoever reads it (the FTP client during a
        # pass, the gate client waiting for its ack): a parameter change in the middle of a pass is not lost.
        self.link.listeners.append(self._handle)
        self._scripts_crc = None
        self.profile = profiles.for_heartbeat(hb)
        if not self.cfg.gate.enabled:
            return
        self._forgeries_seen = 0
        if self.profile.gate == profiles.GATE_ARM_AUTHORIZATION:
            # PX4 asks us before arming (COM_ARM_AUTH_ID = our system id); answered from this thread only
            self.gate = ArmAuthorizer(self.link, own=(c.system_id, c.component_id),
                                      fc=(c.fc_system_id, c.fc_component_id), armed=heartbeat_armed(hb))
            return
        if self._gate_key_error is not None:
            raise self._gate_key_error
        # through the link: its lock and signing for what is sent, its observer (and so _handle) for
        # everything received while the gate waits for an ack
        self.gate = GateClient(self.link, self.gate_key, sequence=self.sequence,
                               target_system=c.fc_system_id, target_component=c.fc_component_id,
                               keepalive_s=self.cfg.gate.keepalive_s)

    def _close(self) -> None:
        if self.link is not None:
            self.link.close()
        self.link = None
        self.gate = None

    def _watch(self, stop: threading.Event) -> None:
        assert self.link is not None
        while not stop.is_set():
            if self._dirty is not None and self._fc_armed():
                self._defer_while_armed(self._dirty)
            elif self._dirty is not None and time.monotonic() < self._retry_at:
                self._hold_gate(self._dirty)  # waiting to retry or to coalesce: the pass in force is in doubt now
            elif self._dirty is not None:
                why, self._dirty = self._dirty, None
                self._deferred = None
                try:
                    self._attest_pass(why)
                except LinkLost:
                    raise
                except (FlightSealError, OSError) as exc:  # OSError: a full disk, a lost device
                    self._pass_failed(why, exc)
                self._enter(State.WATCH)
            self.link.recv(timeout=0.05)  # received messages reach _handle through the link's listener
            self._keep_alive()
            self.responder.pump(self.link, budget=self.profile.challenge_burst if self.profile else 8)
            now = time.monotonic()
            self._check_gone(now)
            if now >= self._next_manifest_poll:
                self._next_manifest_poll = now + MANIFEST_POLL_S
                self._poll_manifest()
            if self._lua_fc() and now >= self._next_script_poll:
                self._next_script_poll = now + self.cfg.measure.script_poll_s
                with self._gate_ticking():
                    self._poll_scripts()
            if self._lua_fc() and now >= self._next_script_hash and not self._dirty:
                self._next_script_hash = now + self.cfg.measure.script_hash_s
                if not self._fc_armed():  # a read-back loads the link: never in flight
                    with self._gate_ticking():
                        self._hash_scripts()
            if self._lua_fc() and now >= self._next_dronecan_poll and self._dirty is None:
                self._next_dronecan_poll = now + self.cfg.measure.dronecan_poll_s
                if not self._fc_armed():  # forwarding a CAN bus loads the link: never in flight
                    with self._gate_ticking():
                        self._poll_dronecan()

    def _lua_fc(self) -> bool:
        """ArduPilot: its Lua scripts and DroneCAN buses are watched between passes (PX4 has neither;
        its files are measured at every pass, and a changed startup file acts only after a reboot,
        which starts a pass)."""
        return self.profile is None or self.profile.name == "ardupilot"

    def _check_gone(self, now: float) -> None:
        """A MAVLink component the last pass measured and no longer heard: a new pass leaves it out
        (issue 11: one spoofed HEARTBEAT gave component-unknown until the agent reconnected)."""
        if self.link is None or self._inventory is None or self._dirty is not None:
            return
        gone_s = self.base_options.component_gone_s
        for m in self._inventory.measurements:
            if m.kind is not Kind.COMPONENT or not m.component.startswith("mavlink:"):
                continue
            try:
                sysid, compid = (int(x) for x in m.component.removeprefix("mavlink:").split("/"))
            except ValueError:
                continue
            entry = self.link.heard.get((sysid, compid))
            if entry is None or now - entry.last_seen > gone_s:
                self._known_components.discard((sysid, compid))
                self._component_changed(f"component {sysid}/{compid} no longer heard")
                return

    # ---- in flight
    def _fc_armed(self) -> bool:
        """Whether the vehicle is armed, by the gate's word where it has one.

        A HEARTBEAT's armed bit is what anyone on an unsigned link can send as the FC (issue 11: spoofed
        armed heartbeats kept the agent from ever re-attesting; spoofed disarmed ones, interleaved with
        the FC's, could have it measure a flying vehicle). The gate's acks carry ``arming:is_armed()``
        under the gate key. So: armed if the gate's fresh ack says so; without a fresh ack, armed if any
        heartbeat said so lately (hands off when in doubt). When the gate says disarmed but heartbeats
        keep saying armed, they are believed for HEARTBEAT_DISPUTE_S (real arming reaches the next ack
        within a keep-alive), then called out as spoofed and ignored while the gate keeps answering.
        """
        now = time.monotonic()
        hb_armed = now - self._hb_armed_at < ARMED_HEARTBEAT_S
        gate = self.gate
        if gate is None or gate.last_ack is None or now - gate.last_ack_at > ARMED_ACK_FRESH_S:
            self._armed_disputed_since = None
            return hb_armed
        if gate.last_ack.armed or not hb_armed:
            self._armed_disputed_since = None
            return gate.last_ack.armed
        if self._armed_disputed_since is None:
            self._armed_disputed_since = now
        disputed = now - self._armed_disputed_since
        if disputed < HEARTBEAT_DISPUTE_S:
            return True
        if not self._spoof_reported:
            self._spoof_reported = True
            log.error("the FC's HEARTBEATs say armed but the gate's authenticated acks have said disarmed for %.0f s: "
                      "something on the link sends HEARTBEATs as the FC; believing the gate (sign the link: "
                      "`flightseal signing setup`)", disputed)
            self._audit("fc-heartbeat-spoofed", {"disputed_s": round(disputed, 1)})
        return False

    def _defer_while_armed(self, why: str) -> None:
        """Never measure a flying vehicle (FTP reads load its link and CPU); but never let a stale pass
        allow the next arming either: the gate gets a fail at once, the pass runs after disarm."""
        if self._deferred == why:
            return
        self._deferred = why
        log.warning("%s while armed: arming after landing is blocked until re-attested", why)
        self._audit("deferred-in-flight", {"why": why})
        if self.gate is not None:
            verdict = Verdict.from_reasons([Reason(Code.MEASUREMENT_MISSING, f"changed in flight: {why}"[:200])])
            try:
                self.gate.send(verdict)
            except GateError as exc:
                self._gate_failed(exc)

    # ---- one pass
    def _pass_failed(self, why: str, exc: FlightSealError | OSError) -> None:
        """No attestation could be made (e.g. the TPM is unreachable): never keep an older pass alive.

        The gate gets a fail verdict (it needs no signature: it only ever tightens), the failure is
        audited, and the pass is retried after a pause.
        """
        log.error("attestation pass failed (%s): %s; arming blocked, retrying in %.0f s", why, exc, PASS_RETRY_S)
        verdict = Verdict.from_reasons([Reason(Code.MEASUREMENT_MISSING, f"attestation failed: {exc}"[:200])])
        self._audit("pass-failed", {"why": why, "error": str(exc)[:1000]})
        self._dirty = f"retry after failure: {why}"
        self._retry_at = time.monotonic() + PASS_RETRY_S
        if self.gate is not None:
            try:
                self.gate.send(verdict)
            except GateError as gate_exc:
                self._gate_failed(gate_exc)

    def _attest_pass(self, why: str) -> None:
        assert self.link is not None
        self._pass_started = time.monotonic()
        self._hold_gate(why)  # before anything else: the pass in force is in doubt from now on
        self._enter(State.MEASURE, why)
        with self._gate_ticking():
            manifest = self._load_manifest()
            opts = self._options(manifest)
            self._inventory = measure(self.link, opts, self.image_cache)
        self._recheck_params_seen_first()
        self._scripts_crc = self._measured_script_crcs()
        self._known_components = set(self.link.heard)
        self._dronecan = list(self._inventory.dronecan)
        self._next_dronecan_poll = time.monotonic() + self.cfg.measure.dronecan_poll_s
        self._seal_and_deliver(why)

    def _hold_gate(self, why: str) -> None:
        """A pass starts: a pass verdict kept alive from before is no longer what the agent knows, so
        the gate gets a fail naming the re-attestation ("FlightSeal: re-attesting") until the new one."""
        in_force = self.gate.verdict if self.gate is not None and self.gate.verdict is not None else (
            self.status.delivered.verdict if self.status.delivered is not None else None)  # after a reconnect: the
        # new GateClient has sent nothing yet, but the pass delivered before the link dropped may still be in force
        if self.gate is None or in_force is None or not in_force.passed or why in BENIGN_TRIGGERS:
            return
        try:
            self.gate.send(Verdict.from_reasons([Reason(Code.REATTESTING, f"re-attesting: {why}"[:200])]))
        except GateError as exc:
            self._gate_failed(exc)

    @contextlib.contextmanager
    def _gate_ticking(self) -> Iterator[None]:
        """While a long job receives (a pass, a script read-back, a CAN scan), the gate's verdict stays
        alive: sent from the link's tick without waiting, acked through ``_handle``. A verdict never
        lapses because the agent was busy (issue 11); it ends only by the agent's decision."""
        if self.link is None or self.gate is None:
            yield
            return
        self.link.tick_hooks.append(self._tick_gate)
        try:
            yield
        finally:
            if self.link is not None and self._tick_gate in self.link.tick_hooks:
                self.link.tick_hooks.remove(self._tick_gate)

    def _tick_gate(self) -> None:
        if self.gate is None:
            return
        try:
            self.gate.send_nowait()
        except (GateError, OSError) as exc:
            self.status.gate_error = str(exc)

    def _seal_and_deliver(self, why: str) -> None:
        assert self._inventory is not None
        for text in self._unenforced:  # audited here: _handle runs inside whoever is receiving, without I/O
            self._audit("gate-unenforced", {"fc_said": text[:100]})
        self._unenforced.clear()
        self._enter(State.APPRAISE)
        appraisal = self._appraise()
        self._enter(State.SEAL)
        issued = self.fleet.take_nonce() if self.fleet is not None else None  # never waits for the network
        sealed = self._seal(appraisal, issued or secrets.token_bytes(32))
        try:  # an attestation that is not in the audit log is never delivered: the pass fails instead
            self.audit.append("attestation", {"why": why, "envelope_sha256": hashlib.sha256(
                sealed.envelope.to_bytes()).hexdigest(), "verdict": sealed.verdict.to_json(),
                "manifest_version": sealed.predicate.manifest.version if sealed.predicate.manifest else None})
        except AuditError as exc:
            self._audit_failed(exc)
            raise
        self.status.audit_error = ""
        self.status.passes += 1
        self.status.last = sealed
        self.status.last_reason = why
        verdict = sealed.verdict
        log.info("verdict %s%s", "PASS" if verdict.passed else "FAIL",
                 "" if verdict.passed else ": " + "; ".join(str(r) for r in verdict.reasons))
        self._enter(State.DELIVER, "PASS" if verdict.passed else verdict.reasons[0].code.value)
        self._deliver()
        self._queue_for_fleet(sealed)

    def _queue_for_fleet(self, sealed: Sealed) -> None:
        """After the gate has the verdict: the attestation joins the fleet queue (a local write; the
        push thread sends it). A queue that cannot be written is logged and audited, never a failed pass."""
        if self.fleet is None:
            return
        try:
            self.fleet.queue.put(sealed.envelope.to_bytes())
        except OSError as exc:
            log.error("fleet queue: cannot keep the attestation (%s); the fleet service will not see it",
                      exc.strerror or exc)
            self._audit("fleet-queue-failed", {"error": str(exc.strerror or exc)[:200]})
            return
        self.fleet.submitted()

    def _appraise(self) -> Appraisal:
        assert self._inventory is not None
        manifest = self._manifest if self._manifest is not None else self._load_manifest()
        return appraise_pass(self._inventory.measurements, manifest, device_id=self.cfg.device.id,
                             airframe=self.cfg.device.airframe, problems=self._inventory.problems)

    def _seal(self, appraisal: Appraisal, nonce: bytes) -> Sealed:
        assert self._inventory is not None
        inv = self._inventory
        boot_log = Path(self.cfg.measure.boot_event_log) if self.cfg.measure.boot_event_log else None
        if self._pcr_log is not None:
            from agent.pcr_log import record_start, resync
            from hardware.tpm import TpmSigner

            assert isinstance(self.signer, TpmSigner)
            if self._start_recorded:
                resync(self._pcr_log, self.signer, self._agent_digest)
            else:
                record_start(self._pcr_log, self.signer, self._agent_digest)
                self._start_recorded = True
        return seal(appraisal, inv.measurements, self.signer, device_id=self.cfg.device.id,
                    airframe=self.cfg.device.airframe, nonce=nonce, now=timeutil.now(),
                    quoter=with_boot_log(quoter_for(self.signer, inv.measurements), boot_log))

    def _deliver(self) -> None:
        if self.gate is None or self.status.last is None:
            return
        try:
            self.gate.send(self.status.last.verdict)
        except GateError as exc:  # GateTimeout included: logged once, retried by keep-alive
            self._gate_failed(exc)
            return
        self._gate_answered()
        self.status.delivered = self.status.last
        if self.status.first_ack_at is None:
            self.status.first_ack_at = time.monotonic()

    def _gate_failed(self, exc: GateError) -> None:
        why = str(exc)
        # logged once per kind of failure: a stopped gate times out every keep-alive, each time with a new
        # verdict sequence in the text
        if re.sub(r"\d+", "#", why) != re.sub(r"\d+", "#", self.status.gate_error):
            log.error("gate: %s", why)
        self.status.gate_error = why
        if isinstance(exc, GateTimeout) and self.link is not None and self.link.gate_answers is not False:
            # the verdict may not be enforced: said in every attestation (posture-gate-silent) until it answers
            self.link.gate_answers = False
            self._unenforced.append(f"gate silent: {why}"[:100])
            self._dirty = self._dirty or "the arming gate does not answer"
        self._check_forgeries()

    def _gate_answered(self) -> None:
        self.status.gate_acks += 1
        self.status.gate_error = ""
        if self.link is not None:
            if self.link.gate_answers is False:
                log.info("the arming gate answers again")
                self._dirty = self._dirty or "the arming gate answers again"
            self.link.gate_answers = True
        self._check_forgeries()

    def _check_forgeries(self) -> None:
        """Verdicts the gate saw with a wrong MAC, acks we saw with a wrong MAC, the FC's "forged
        verdict seen": something else on the channel speaks for the agent or the gate. Loud, audited,
        and in every attestation (``posture-gate-forgery``) until the FC reboots."""
        if self.gate is None or self.link is None:
            return
        seen = max(self.gate.foreign + self.gate.forged_acks, self.link.gate_forgeries)
        if seen <= self._forgeries_seen:
            return
        self._forgeries_seen = seen
        self.link.gate_forgeries = seen
        if isinstance(self.gate, ArmAuthorizer):
            log.error("forged arm authorization on PX4: %d arming(s) or authorization(s) the agent did not give, %d "
                      "arm-authorization ack(s) in another system's name; PX4 v1.16 takes an authorization from "
                      "anyone (ADR 0024): find the sender (a telemetry radio?); every attestation now fails with "
                      "posture-gate-forgery until the FC reboots", self.gate.foreign, self.gate.forged_acks)
            self._unenforced.append(f"forged arm authorization: {self.gate.unauthorized_arms} unauthorized "
                                    f"armings, {self.gate.forged_acks} acks")
            self._dirty = self._dirty or "forged arm authorization seen"
            return
        log.error("forged gate traffic on the FC link: %d verdict(s) the gate refused for a wrong MAC, %d ack(s) in "
                  "the gate's name with a wrong MAC; something else speaks for the agent or the gate (a router's "
                  "client?); every attestation now fails with posture-gate-forgery until the FC reboots",
                  self.gate.foreign, self.gate.forged_acks)
        self._unenforced.append(f"forged gate traffic: {self.gate.foreign} verdicts, {self.gate.forged_acks} acks")
        self._dirty = self._dirty or "forged gate traffic seen"

    def _keep_alive(self) -> None:
        if self.gate is None:
            return
        try:
            if isinstance(self.gate, ArmAuthorizer):
                self.gate.keep_alive()  # answers PX4's requests that are due; PX4 acks nothing
                self._check_forgeries()
            elif self.gate.keep_alive() is not None:
                self._gate_answered()
        except GateError as exc:
            self._gate_failed(exc)

    # ---- manifest
    def _load_manifest(self) -> ManifestStatus:
        path = Path(self.cfg.trust.manifest)
        try:
            st = path.stat()
            self._manifest_stat = (st.st_mtime_ns, st.st_size)
            data = read_bounded(path, "manifest", LIMITS.max_manifest_bytes)
            highest, digest = self.manifest_state.load()
            self._manifest = check_manifest(self.trust, data, timeutil.now(), highest, digest)
            if isinstance(self._manifest, VerifiedManifest) and self._binds_us(self._manifest):
                # trusted from now on, whatever the airframe's verdict: an older one is a rollback. Only
                # a manifest for this airframe counts: another one's version must not make ours "old"
                self.manifest_state.record(self._manifest.manifest.version, self._manifest.digest)
        except (OSError, FlightSealError) as exc:
            self._manifest = manifest_failure(exc if isinstance(exc, FlightSealError) else FlightSealError(
                f"manifest {path}: {exc.strerror or exc}"))
        return self._manifest

    def _binds_us(self, verified: VerifiedManifest) -> bool:
        return verified.manifest.airframe.covers(self.cfg.device.airframe, self.cfg.device.id)

    def _poll_manifest(self) -> None:
        try:
            st = Path(self.cfg.trust.manifest).stat()
            current: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            current = None
        if current != self._manifest_stat:
            self._dirty = "manifest file changed"
        elif isinstance(self._manifest, VerifiedManifest) and timeutil.now() >= self._manifest.manifest.expires:
            self._dirty = "manifest expired"

    def _options(self, manifest: ManifestStatus) -> MeasureOptions:
        if isinstance(manifest, VerifiedManifest):
            return self.base_options.for_params(manifest.manifest.params)
        return self.base_options

    def _exclusions(self) -> tuple[str, ...]:
        if isinstance(self._manifest, VerifiedManifest):
            return tuple(self._manifest.manifest.params.exclude)
        if self.profile is not None and self.profile.name == "px4" \
                and self.base_options.param_exclusions == paramdigest.DEFAULT_EXCLUSIONS:
            return self.profile.param_exclusions
        return self.base_options.param_exclusions

    # ---- watching
    def _param_value(self, name: str, value: float) -> None:
        """A PARAM_VALUE from the FC: a change only if the value differs from the one last measured.

        ArduPilot answers every read and every PARAM_SET (even of the same value) with one, and a
        router's other clients read parameters too; re-measuring on each would let anyone on the link
        keep the agent busy. A name the FC did not have when measured is not a change either (ArduPilot
        adds parameters at boot, and a reboot is a change of its own); it is never logged raw.
        """
        if paramdigest.is_excluded(name, self._exclusions()):
            return
        known = self._inventory.fc_params if self._inventory is not None else None
        if known is None:
            if self.status.state is State.MEASURE and len(self._params_seen_first) < LIMITS.max_params:
                # the first pass is reading them (PX4 answers its PARAM_REQUEST_LIST with every value):
                # compared once the pass has measured, not taken as changes (they cost a second pass)
                self._params_seen_first[name] = value
                return
            self._dirty = self._dirty or f"parameter {_printable(name)} changed"  # no pass yet to compare with
            return
        before = known.get(name)
        if before is None:
            log.debug("PARAM_VALUE for %r, which the FC did not have when measured: ignored", _printable(name))
        elif not (as_float32(value) == before or (math.isnan(value) and math.isnan(before))):  # measured: float32
            self._dirty = f"parameter {_printable(name)} changed"

    def _recheck_params_seen_first(self) -> None:
        """The PARAM_VALUEs that arrived during the first pass, against what it measured: a value that
        changed while the list was being read is a change all the same."""
        seen, self._params_seen_first = self._params_seen_first, {}
        if self._inventory is None or self._inventory.fc_params is None:
            return
        for name, value in seen.items():
            self._param_value(name, value)

    def _handle(self, msg: Any) -> None:
        """Note what changed; cheap and without I/O, since it runs inside whoever is receiving."""
        if self.link is None:
            return
        mtype = msg.get_type()
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        if isinstance(self.gate, ArmAuthorizer):
            self.gate.observe(msg)  # PX4's requests, and its word on authorizations we did not give
        if mtype == "HEARTBEAT" and src == self.link.fc:
            now = time.monotonic()
            if now - self._last_fc_heartbeat > REBOOT_GAP_S:
                self._dirty = f"FC heartbeat back after {now - self._last_fc_heartbeat:.1f} s (rebooted?)"
            starting = int(msg.system_status) in STARTING
            if starting and self._fc_was_up:  # a restart quicker than REBOOT_GAP_S (PX4 SITL: ~1 s)
                self._dirty = "the FC's heartbeat says it is starting again (rebooted)"
            self._fc_was_up = not starting
            self._last_fc_heartbeat = now
            if heartbeat_armed(msg):
                self._hb_armed_at = now
            signed = bool(getattr(msg, "_signed", False))
            if self._fc_signed is not None and signed != self._fc_signed:
                log.warning("the FC's heartbeats are now %s: the link posture changed", "signed" if signed else
                            "unsigned")
                self._dirty = f"the FC's heartbeats are now {'signed' if signed else 'unsigned'}"
            self._fc_signed = signed
        elif mtype == "PARAM_VALUE" and src == self.link.fc:
            # PX4 sends integers bit for bit: read by type, as its collector does
            value = bytewise_value(msg) if self.profile is not None and self.profile.name == "px4" else \
                float(msg.param_value)
            self._param_value(str(msg.param_id).rstrip("\x00"), value)
        elif mtype == "STATUSTEXT" and src == self.link.fc and str(msg.text).startswith(
                ("Scripting: stopped", "Scripting: restarted")):
            text = str(msg.text)
            if text.startswith("Scripting: stopped"):
                log.error("the FC stopped scripting: the arming gate no longer takes verdicts; every attestation "
                          "now fails with posture-gate-stopped (ArduPilot's script checksums refuse arming)")
                self._unenforced.append(text)
            self._dirty = f"FC said {text!r}"
        elif mtype == "TUNNEL":
            if self.gate is not None and src == self.link.fc:
                try:
                    self.gate.observe(msg)  # an ack to a verdict sent while a pass was receiving
                except GateError as exc:
                    self.status.gate_error = str(exc)
            payload = tunnel_payload(msg, self.cfg.mavlink.system_id, self.cfg.mavlink.component_id)
            if payload is not None:
                self.responder.handle(src[0], src[1], payload)
        if src not in self._known_components and mtype == "HEARTBEAT" and int(msg.type) != MAV_TYPE_GCS and src != (
                self.cfg.mavlink.system_id, self.cfg.mavlink.component_id):
            self._known_components.add(src)
            if len(self._known_components) > 4 * MAX_COMPONENTS:  # a flood of made-up ids: keep what the link keeps
                self._known_components = set(self.link.heard) | {src}
            self._component_changed(f"new component {src[0]}/{src[1]} on the bus")

    def _component_changed(self, why: str) -> None:
        """A part came or went: a pass, but at most one per COMPONENT_PASS_MIN_S. HEARTBEATs from
        made-up ids cost nothing to send; the gate is held at once (``_watch``), the pass coalesced."""
        if self._dirty is None:
            self._dirty = why
        self._retry_at = max(self._retry_at, self._pass_started + COMPONENT_PASS_MIN_S)

    def _measured_script_crcs(self) -> dict[str, int | None]:
        """The FC-format CRC32 of each script as the last pass read it (None: it could not be read).

        Derived from the measured bytes, so a change between reading a script and polling it is seen.
        """
        assert self._inventory is not None
        out: dict[str, int | None] = {}
        for m in self._inventory.measurements:
            path = str(m.claims.get("path", ""))
            if m.kind is Kind.SCRIPT and m.claims.get("dir") in self.base_options.scripts_dirs and path != "*":
                crc = m.digests.get("crc32")
                out[path] = int(crc, 16) if crc else None
        return out

    def _poll_scripts(self) -> None:
        """The FC's CRC32 of every script over FTP (no file transfer); a change means a full pass."""
        if self.link is None or self._scripts_crc is None:
            return
        ftp = FtpClient(self.link)
        try:
            directory = self._scripts_dir(ftp)
            paths = list_scripts(ftp, directory, self.base_options) if directory is not None else []
            current = {path: ftp.crc32(path) for path in paths}
        except FtpError as exc:
            log.warning("script check over FTP failed: %s", exc)
            return
        measured = self._scripts_crc
        if set(current) != set(measured) or any(
                crc is not None and current[path] != crc for path, crc in measured.items()):
            self._dirty = "a Lua script on the FC changed"

    def _hash_scripts(self) -> None:
        """Read every measured script back and compare its SHA-256 with the pass's.

        The CRC32 poll is cheap but a CRC32 can be forged with four bytes in a comment; this read
        cannot be fooled, and its cost is bounded: each script's size (``max_script_bytes`` at most)
        once per ``script_hash_s`` (the gate, 6.6 kB a minute by default).
        """
        if self.link is None or self._inventory is None:
            return
        scripts = [(str(m.claims.get("path", "")), m.digests.get("sha256")) for m in self._inventory.measurements
                   if m.kind is Kind.SCRIPT and m.claims.get("dir") in self.base_options.scripts_dirs]
        ftp = FtpClient(self.link)
        for path, sha in scripts:
            if not path or path == "*" or sha is None:
                continue
            try:
                data = ftp.read_file(path, self.base_options.max_script_bytes)
            except FtpError as exc:
                self._dirty = f"Lua script {path} could not be read back: {exc}"
                return
            if hashlib.sha256(data).hexdigest() != sha:
                self._dirty = f"Lua script {path} changed (its SHA-256 differs; its CRC32 may not)"
                return

    def _poll_dronecan(self) -> None:
        """One round of NodeStatus per DroneCAN bus: a node that appeared, vanished or restarted
        (its uptime went back: re-flashed, swapped, power-cycled) means a full pass."""
        if self.link is None:
            return
        for known in self._dronecan:
            now = node_statuses(self.link, bus=known.bus, local_node=self.base_options.dronecan_node_id,
                                listen=self.base_options.dronecan_listen)
            if now is None:
                self._dirty = f"DroneCAN bus {known.bus} is no longer forwarded"
                return
            before = {n: t for n, t in known.uptimes.items() if n != known.fc_node}
            after = {n: t for n, t in now.items() if n != known.fc_node}
            if set(after) != set(before):
                changed = sorted(set(after) ^ set(before))
                self._dirty = f"DroneCAN node(s) {', '.join(map(str, changed))} on bus {known.bus} came or went"
                return
            restarted = sorted(n for n, t in after.items() if t < before[n])
            if restarted:
                self._dirty = f"DroneCAN node(s) {', '.join(map(str, restarted))} on bus {known.bus} restarted"
                return
            known.uptimes.update(now)

    def _scripts_dir(self, ftp: FtpClient) -> str | None:
        """The first scripts directory the FC has, or None when it has none. An FTP server that does
        not answer is not "no scripts": that raises, so a link that drops the FC's answers (signing
        switched off) is never read as every script gone."""
        unanswered: FtpError | None = None
        for directory in self.base_options.scripts_dirs:
            try:
                ftp.list_dir(directory)
                return directory
            except FtpNotFound:
                continue
            except FtpError as exc:
                unanswered = exc
        if unanswered is not None:
            raise unanswered
        return None

    # ---- challenge
    def _answer_challenge(self, nonce: bytes) -> bytes:
        if self._inventory is None or self._manifest is None:
            raise FlightSealError("not measured yet; try again in a few seconds")
        sealed = self._seal(self._appraise(), nonce)
        data = sealed.envelope.to_bytes()
        self.audit.append("challenge", {"nonce": nonce.hex(), "envelope_sha256": hashlib.sha256(data).hexdigest(),
                                        "verdict": sealed.verdict.to_json()})
        return data
