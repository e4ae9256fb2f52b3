"""Webhook delivery against a real HTTP receiver on 127.0.0.1 that fails its first requests:
signed bodies, at least once, exponential backoff, every attempt recorded (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from attest.errors import FormatError
from fleet.models import DeliveryAttempt, Event, table
from fleet.store import FleetStore
from fleet.webhooks import EVENT_HEADER, SIGNATURE_HEADER, WebhookDispatcher, signature
from tests.factory import NOW
from tests.fleet_fixtures import Clock, Fleet, tamper_script

pytest_plugins = ["tests.fleet_fixtures"]

SECRET = b"webhook-test-secret"
WAIT_S = 10


class Receiver:
    """An HTTP endpoint that answers 500 to its first ``fail_first`` requests, then 204."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(({k: v for k, v in self.headers.items()}, body))
                    failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=WAIT_S)


def attempts(store: FleetStore) -> list[tuple[int | None, str | None]]:
    t = table(DeliveryAttempt)
    with store.engine.connect() as conn:
        return [(r.status, r.error) for r in conn.execute(select(t.c.status, t.c.error).order_by(t.c.id))]


def test_failed_deliveries_are_retried_with_backoff_until_one_succeeds(store: FleetStore, fleet: Fleet,
                                                                        clock: Clock) -> None:
    r = store.ingest(tamper_script(fleet, "drone-001", NOW), source="agent", actor="ci")
    with Receiver(fail_first=2) as rx:
        d = WebhookDispatcher(store.engine, rx.url, SECRET, backoff=timedelta(seconds=10), clock=clock)
        assert d.deliver_due(clock.now) == 0 and len(rx.requests) == 1
        assert d.deliver_due(clock.now + timedelta(seconds=9)) == 0 and len(rx.requests) == 1  # not due yet
        clock.advance(timedelta(seconds=10))
        assert d.deliver_due(clock.now) == 0 and len(rx.requests) == 2
        clock.advance(timedelta(seconds=19))
        assert d.deliver_due(clock.now) == 0 and len(rx.requests) == 2  # the second wait is 20 s
        clock.advance(timedelta(seconds=1))
        assert d.deliver_due(clock.now) == 1 and len(rx.requests) == 3
        assert d.deliver_due(clock.now + timedelta(days=1)) == 0 and len(rx.requests) == 3  # delivered: done
    headers, body = rx.requests[-1]
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], "sha256=" + hmac.new(SECRET, body, hashlib.sha256)
                               .hexdigest())
    event = json.loads(body)
    assert event["kind"] == "failure" and event["attestation_id"] == r.attestation_id
    assert event["reasons"][0]["code"] == "script-mismatch" and headers[EVENT_HEADER] == str(event["id"])
    assert [s for s, _ in attempts(store)] == [500, 500, 204]
    assert len({b for _, b in rx.requests}) == 1  # the very same signed body every time


def test_delivery_gives_up_after_max_attempts_and_records_unreachable_receivers(store: FleetStore, fleet: Fleet,
                                                                                 clock: Clock) -> None:
    store.revoke("drone-001", actor="alice", reason="stolen")
    with Receiver(fail_first=0) as rx:
        url = rx.url
    d = WebhookDispatcher(store.engine, url, SECRET, max_attempts=2, backoff=timedelta(seconds=1), timeout_s=2)
    for _ in range(4):
        d.deliver_due(clock.now)
        clock.advance(timedelta(minutes=1))
    recorded = attempts(store)
    assert len(recorded) == 2 and all(status is None and error for status, error in recorded)
    t = table(Event)
    with store.engine.connect() as conn:
        row = conn.execute(select(t.c.attempts, t.c.delivered_at, t.c.last_error)).one()
    assert row.attempts == 2 and row.delivered_at is None and row.last_error


def test_an_event_claimed_by_a_dispatcher_that_died_is_sent_after_its_lease(store: FleetStore, fleet: Fleet,
                                                                            clock: Clock) -> None:
    store.ingest(tamper_script(fleet, "drone-001", NOW), source="agent", actor="ci")
    with Receiver(fail_first=0) as rx:
        dead = WebhookDispatcher(store.engine, rx.url, SECRET, lease=timedelta(seconds=60))
        assert len(dead._claim(clock.now)) == 1  # claimed, then the process died before posting
        other = WebhookDispatcher(store.engine, rx.url, SECRET)
        assert other.deliver_due(clock.now + timedelta(seconds=59)) == 0
        assert other.deliver_due(clock.now + timedelta(seconds=60)) == 1 and len(rx.requests) == 1


def test_run_loop_delivers_stale_events_and_stops_when_told(store: FleetStore, fleet: Fleet, clock: Clock) -> None:
    store.ingest(fleet.attestation("drone-001"), source="agent", actor="ci")
    clock.advance(timedelta(days=8))
    stop = threading.Event()
    with Receiver(fail_first=1) as rx:
        d = WebhookDispatcher(store.engine, rx.url, SECRET, backoff=timedelta(0), clock=clock)
        worker = threading.Thread(target=d.run, args=(stop,), kwargs={"interval_s": 0.02,
                                                                      "tick": store.staleness_scan})
        worker.start()
        deadline = time.monotonic() + WAIT_S
        while len(rx.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        worker.join(timeout=WAIT_S)
    assert not worker.is_alive()
    kinds = [json.loads(body)["kind"] for _, body in rx.requests]
    assert kinds == ["stale", "stale"]  # one stale event, failed once, then delivered; no second episode
    assert signature(SECRET, rx.requests[1][1]) == rx.requests[1][0][SIGNATURE_HEADER]


def test_dispatcher_refuses_an_empty_secret_or_a_non_http_url(store: FleetStore) -> None:
    with pytest.raises(FormatError, match="secret"):
        WebhookDispatcher(store.engine, "http://127.0.0.1:1/", b"")
    with pytest.raises(FormatError, match="http"):
        WebhookDispatcher(store.engine, "file:///etc/passwd", SECRET)
