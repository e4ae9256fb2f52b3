"""Pushing attestations to the fleet service: a queue on disk and a thread that drains it.

The pass never waits for the network. The daemon puts each attestation it delivered to the gate
into the queue (one small file, written atomically) and goes on; a thread of its own pushes the
queue oldest first, deletes a file only when the service answered 200 or 201, and keeps the rest
across a restart, an offline service or a reboot. What the service refuses as unusable (400, 413)
is moved aside to ``rejected/`` rather than retried for ever; a refused token (401, 403), a busy
service (429, 5xx) or no network is retried with a growing wait.

The same thread asks the service for a nonce ahead of each pass (``POST /api/v1/nonces``), so the
next attestation answers a nonce the service issued: its evidence is fresh by the service's own
measure. The pass takes a nonce only if one is already there (:meth:`FleetPusher.take_nonce`);
otherwise it uses a random one, and the service records that it answered none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.config import FleetConfig
from attest.errors import FlightSealError
from attest.limits import LIMITS
from hardware.files import read_bounded, write_atomic

log = logging.getLogger("flightseal.fleet")

NONCE_MARGIN_S = 30.0  # a nonce this close to its expiry is not used: the pass and the push take time
MAX_TOKEN_BYTES = 4096
MAX_ANSWER_BYTES = 64 * 1024


class FleetPushError(FlightSealError):
    """The fleet service could not be reached or refused a request."""


@dataclass(frozen=True)
class PushOutcome:
    """What the service said of one queued attestation."""

    status: int  # HTTP status; 0 when the service could not be reached
    detail: str


class FleetQueue:
    """Attestations waiting for the service: ``<time_ns>-<sha256 prefix>.json`` files, oldest first."""

    def __init__(self, directory: Path, max_queued: int = 10000) -> None:
        self.directory = directory
        self.max_queued = max_queued
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "rejected").mkdir(exist_ok=True)

    def put(self, envelope: bytes) -> Path:
        """Queue one attestation (fsync'd before this returns); the oldest go when the queue is full.

        Raises:
            OSError: it cannot be written (a full disk); the caller logs it and goes on.
        """
        name = f"{time.time_ns():020d}-{hashlib.sha256(envelope).hexdigest()[:16]}.json"
        path = self.directory / name
        write_atomic(path, envelope)
        for old in self.pending()[:-self.max_queued]:
            log.warning("fleet queue full (%d): dropped the oldest attestation %s", self.max_queued, old.name)
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return path

    def pending(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*.json") if not p.name.startswith("."))

    def reject(self, path: Path, why: str) -> None:
        """Set aside what the service refuses as unusable, with its answer beside it."""
        target = self.directory / "rejected" / path.name
        os.replace(path, target)
        write_atomic(target.with_suffix(".why"), why.encode()[:4096])


class FleetPusher:
    """The thread that drains a :class:`FleetQueue` into the service and keeps a nonce ready."""

    def __init__(self, cfg: FleetConfig, queue: FleetQueue, device_id: str,
                 clock: type[datetime] = datetime) -> None:
        self.cfg = cfg
        self.queue = queue
        self.device_id = device_id
        self._token = read_bounded(Path(cfg.token_file), "fleet token file", MAX_TOKEN_BYTES).decode(
            "utf-8", "replace").strip()
        if not self._token:
            raise FleetPushError(f"fleet token file {cfg.token_file} is empty; put an agent-role token there "
                                 "(`flightseal fleet token create NAME --role agent`)")
        self._ssl = ssl.create_default_context(cafile=cfg.ca_file or None) if cfg.url.startswith("https") else None
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._nonce: tuple[bytes, float] | None = None  # (value, monotonic time it stops being usable)
        self.pushed = 0
        self.last_error = ""

    # ---- the daemon's side: never blocks
    def take_nonce(self) -> bytes | None:
        """A nonce the service issued, if one is ready and fresh; None otherwise (never waits)."""
        with self._lock:
            nonce, self._nonce = self._nonce, None
        self._wake.set()  # fetch the next one
        if nonce is None or time.monotonic() >= nonce[1]:
            return None
        return nonce[0]

    def submitted(self) -> None:
        """A new attestation is in the queue: push it now rather than at the next retry."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-push", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the thread
    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            ok = self.push_pending()
            if ok and self.cfg.fetch_nonces and self._needs_nonce():
                ok = self._fetch_nonce()
            delay = 1.0 if ok else min(delay * 2, self.cfg.retry_max_s)
            self._wake.wait(self._until_nonce_due() if ok else delay)
            self._wake.clear()

    def _needs_nonce(self) -> bool:
        with self._lock:
            return self._nonce is None or time.monotonic() >= self._nonce[1]

    def _until_nonce_due(self) -> float:
        with self._lock:
            if self._nonce is None or not self.cfg.fetch_nonces:
                return self.cfg.retry_max_s
            return max(1.0, self._nonce[1] - time.monotonic())

    def push_pending(self) -> bool:
        """Push every queued attestation, oldest first; False if the service is away or refuses."""
        for path in self.queue.pending():
            try:
                envelope = read_bounded(path, "queued attestation", LIMITS.max_envelope_bytes)
            except (OSError, FlightSealError) as exc:  # torn or oversized: nothing the service could use
                self.queue.reject(path, f"unreadable in the queue: {exc}")
                continue
            outcome = self.push(envelope)
            if outcome.status in (200, 201):
                path.unlink(missing_ok=True)
                self.pushed += 1
                self.last_error = ""
            elif outcome.status in (400, 413):
                log.error("the fleet service refused %s as unusable (%d): %s; set aside in rejected/", path.name,
                          outcome.status, outcome.detail)
                self.queue.reject(path, f"{outcome.status}: {outcome.detail}")
            else:
                self._failed(outcome)
                return False
        return True

    def push(self, envelope: bytes) -> PushOutcome:
        """One attestation to ``POST /api/v1/attestations``."""
        return self._post("/api/v1/attestations", envelope)

    def _fetch_nonce(self) -> bool:
        outcome = self._post("/api/v1/nonces", json.dumps({"device": self.device_id}).encode())
        if outcome.status != 201:
            self._failed(outcome)
            return False
        try:
            body = json.loads(outcome.detail)
            nonce = bytes.fromhex(body["nonce"])
            expires = datetime.fromisoformat(str(body["expires"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError) as exc:
            self._failed(PushOutcome(0, f"a nonce answer that is not one ({exc})"))
            return False
        lifetime = (expires - self._clock.now(UTC)).total_seconds() - NONCE_MARGIN_S
        if not 0 < len(nonce) <= 64 or lifetime <= 0:
            self._failed(PushOutcome(0, "a nonce that is empty, too long or already expired"))
            return False
        with self._lock:
            self._nonce = (nonce, time.monotonic() + lifetime)
        return True

    def _post(self, path: str, body: bytes) -> PushOutcome:
        request = urllib.request.Request(self.cfg.url.rstrip("/") + path, data=body, method="POST", headers={
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s, context=self._ssl) as answer:
                return PushOutcome(answer.status, answer.read(MAX_ANSWER_BYTES).decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            return PushOutcome(exc.code, exc.read(MAX_ANSWER_BYTES).decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return PushOutcome(0, f"cannot reach {self.cfg.url}: {reason}")

    def _failed(self, outcome: PushOutcome) -> None:
        text = f"{outcome.status or 'no answer'}: {outcome.detail[:200]}"
        if text != self.last_error:  # logged once per kind of failure, not at every retry
            hint = " (is the token an agent token, and not revoked?)" if outcome.status in (401, 403) else ""
            log.warning("fleet service: %s%s; %d attestation(s) kept in the queue", text, hint,
                        len(self.queue.pending()))
        self.last_error = text
