"""Webhook delivery of fleet events (failure, drift, revocation, staleness): at least once.

Events are rows in the ``events`` outbox, written in the same transaction as their cause
(:mod:`fleet.store`), so an event exists exactly when its cause was committed, and delivery
survives restarts. The dispatcher:

* **claims** due events in a short transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so
  several dispatchers never send the same event at once; SQLite: the write lock) by pushing their
  next attempt a lease into the future, so a dispatcher killed mid-POST only delays an event;
* **POSTs** each as JSON with ``X-FlightSeal-Signature: sha256=<hex HMAC-SHA256 of the body>``
  and ``X-FlightSeal-Event: <id>`` (a receiver de-duplicates on the id: delivery is at least
  once, never exactly once);
* **records** every attempt (``delivery_attempts``); a 2xx marks the event delivered; anything
  else retries after ``backoff * 2**(attempts-1)`` (capped), until ``max_attempts``.

Redirects are not followed: a webhook URL is configured, not discovered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine, insert, select, update

from attest.errors import FormatError
from fleet.db import WRITE, is_postgres, make_engine
from fleet.models import DeliveryAttempt, Event, table
from fleet.store import FleetStore, utc_now

E = table(Event)
ATTEMPTS = table(DeliveryAttempt)
SIGNATURE_HEADER = "X-FlightSeal-Signature"
EVENT_HEADER = "X-FlightSeal-Event"
MAX_ERROR_CHARS = 500
LOG = logging.getLogger(__name__)


def signature(secret: bytes, body: bytes) -> str:
    """The header value a receiver recomputes (compare with :func:`hmac.compare_digest`)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Outcome:
    status: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookDispatcher:
    """Sends due events to one URL. Every loop and request is bounded (batch, timeout)."""

    def __init__(self, engine: Engine, url: str, secret: bytes, *, max_attempts: int = 10,
                 backoff: timedelta = timedelta(seconds=5), max_backoff: timedelta = timedelta(hours=1),
                 timeout_s: float = 5.0, batch: int = 50, lease: timedelta = timedelta(seconds=60),
                 clock: Callable[[], datetime] = utc_now) -> None:
        if not url.startswith(("http://", "https://")):
            raise FormatError("webhook URL", f"{url!r} is not an http:// or https:// URL")
        if not secret:
            raise FormatError("webhook secret", "is empty; receivers could not tell our events from forgeries")
        self.engine, self.url, self._secret = engine, url, secret
        self.max_attempts, self.backoff, self.max_backoff = max_attempts, backoff, max_backoff
        self.timeout_s, self.batch, self.lease = timeout_s, batch, lease
        self._clock = clock

    def deliver_due(self, now: datetime) -> int:
        """Try every event due at ``now`` (at most ``batch``); return how many were delivered."""
        claimed = self._claim(now)
        if not claimed:
            return 0
        delivered = 0
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            for event_id, payload in claimed:
                outcome = self._post(client, event_id, payload)
                self._finish(event_id, outcome, now)
                delivered += outcome.delivered
        return delivered

    def _claim(self, now: datetime) -> list[tuple[int, str]]:
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            q = (select(E.c.id, E.c.payload)
                 .where(E.c.delivered_at.is_(None), E.c.next_attempt_at <= now, E.c.attempts < self.max_attempts)
                 .order_by(E.c.id).limit(self.batch))
            if is_postgres(conn):
                q = q.with_for_update(skip_locked=True)
            rows = [(int(r.id), str(r.payload)) for r in conn.execute(q)]
            if rows:
                conn.execute(update(E).where(E.c.id.in_([r[0] for r in rows]))
                             .values(next_attempt_at=now + self.lease))
        return rows

    def _post(self, client: httpx.Client, event_id: int, payload: str) -> Outcome:
        body = json.dumps({"id": event_id, **json.loads(payload)}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(self._secret, body),
                   EVENT_HEADER: str(event_id)}
        try:
            response = client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        ok = 200 <= response.status_code < 300
        return Outcome(response.status_code, None if ok else f"HTTP {response.status_code}")

    def _finish(self, event_id: int, outcome: Outcome, now: datetime) -> None:
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            attempts = int(conn.execute(select(E.c.attempts).where(E.c.id == event_id)).scalar_one()) + 1
            conn.execute(insert(ATTEMPTS).values(event_id=event_id, attempted_at=now, status=outcome.status,
                                                 error=outcome.error))
            if outcome.delivered:
                values: dict[str, object] = {"attempts": attempts, "delivered_at": now, "last_error": None}
            else:
                delay = min(self.backoff * 2 ** (attempts - 1), self.max_backoff)
                values = {"attempts": attempts, "next_attempt_at": now + delay, "last_error": outcome.error}
            conn.execute(update(E).where(E.c.id == event_id).values(**values))

    def run(self, stop: threading.Event, *, interval_s: float = 1.0,
            tick: Callable[[datetime], object] | None = None) -> None:
        """Deliver until ``stop`` is set, waking every ``interval_s``; ``tick`` runs first on each
        wake-up (the staleness scan). An error in one round is retried on the next, never fatal."""
        while not stop.is_set():
            now = self._clock()
            try:
                if tick is not None:
                    tick(now)
                self.deliver_due(now)
            except Exception:  # a database or network hiccup must not end delivery for good
                LOG.exception("webhook round failed; retrying in %.1f s", interval_s)
            stop.wait(interval_s)


def background(*, url: str, trust: Path, webhook_url: str, secret: str | bytes | None,
               stale_days: float, stop: threading.Event | None = None) -> Callable[[], None]:
    """A runner for a thread of ``flightseal fleet serve``: delivers events and scans for staleness."""
    if not secret:
        raise FormatError("webhook", "needs a secret (--webhook-secret-file) so receivers can check our signature")
    engine = make_engine(url)
    store = FleetStore(engine, trust, stale_after=timedelta(days=stale_days))
    key = secret.encode() if isinstance(secret, str) else secret
    dispatcher = WebhookDispatcher(engine, webhook_url, key)
    halt = stop or threading.Event()

    def runner() -> None:
        dispatcher.run(halt, tick=store.staleness_scan)

    return runner
