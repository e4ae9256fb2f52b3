"""The agent's side of the fleet (issue 14): its queue on disk, the push thread, the service's nonces,
and an agent on the virtual FC whose airframe shows up in the fleet service, then turns red.

Real components throughout: the fleet app on a real uvicorn (loopback) over SQLite, the agent's
daemon against the vFC running the real Lua gate, and `flightseal fleet serve` as its own process
with a webhook receiver for the end-to-end case.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from agent.config import FleetConfig
from agent.fleet_push import FleetPusher, FleetQueue
from attest import dsse
from attest.evidence import parse_statement
from fleet.auth import Auth
from tests.fleet_kit import make_fleet, running, service


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pusher(tmp: Path, url: str, token: str, device: str = "drone-001", **options: object) -> FleetPusher:
    token_file = tmp / "agent.token"
    token_file.write_text(token + "\n")
    cfg = FleetConfig(url=url, token_file=str(token_file), timeout_s=2.0, **options)  # type: ignore[arg-type]
    return FleetPusher(cfg, FleetQueue(tmp / "queue"), device)


def _nonce_of(envelope: bytes) -> bytes:
    return parse_statement(dsse.Envelope.from_bytes(envelope, "attestation", 1 << 20)).nonce


def test_the_queue_survives_an_offline_service_and_a_restart_and_then_drains(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    app, engine = service(tmp_path, fleet)
    token = Auth(engine).create_token("drone-001", "agent", "test")
    offline = _pusher(tmp_path, f"http://127.0.0.1:{_closed_port()}", token)
    made = [fleet.attestation("drone-001"), fleet.attestation("drone-001", tampered=True)]
    for envelope in made:
        offline.queue.put(envelope)
    assert offline.push_pending() is False
    assert len(offline.queue.pending()) == 2 and "cannot reach" in offline.last_error

    with running(app) as url:  # the agent restarts (a new pusher over the same queue) and the service is back
        restarted = _pusher(tmp_path, url, token)
        assert restarted.push_pending() is True
        assert restarted.queue.pending() == [] and restarted.pushed == 2
        seen = httpx.get(f"{url}/api/v1/devices/drone-001", headers={"Authorization": f"Bearer {token}"})
    assert seen.status_code == 403  # an agent token pushes; it reads nothing back
    viewer = Auth(engine).create_token("ops", "operator", "test")
    with running(app) as url:
        state = httpx.get(f"{url}/api/v1/devices/drone-001", headers={"Authorization": f"Bearer {viewer}"}).json()
    # the newest of the two, the tampered one, is the state in force: failed, and drifted from the pass before
    assert state["passed"] is False and state["state"] in ("failing", "drifted"), state


def test_a_refused_token_keeps_the_queue_and_an_unusable_body_is_set_aside(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    app, engine = service(tmp_path, fleet)
    token = Auth(engine).create_token("drone-001", "agent", "test")
    with running(app) as url:
        wrong = _pusher(tmp_path, url, "not-a-token")
        wrong.queue.put(fleet.attestation("drone-001"))
        assert wrong.push_pending() is False
        assert len(wrong.queue.pending()) == 1 and wrong.last_error.startswith("401")
        right = _pusher(tmp_path, url, token)
        right.queue.put(b"{ not an attestation")
        assert right.push_pending() is True
        assert right.pushed == 1 and right.queue.pending() == []
        rejected = sorted((tmp_path / "queue" / "rejected").glob("*.json"))
        assert len(rejected) == 1 and rejected[0].read_bytes() == b"{ not an attestation"
        assert rejected[0].with_suffix(".why").read_text().startswith("400")


def test_a_full_queue_drops_the_oldest_and_keeps_the_newest(tmp_path: Path) -> None:
    queue = FleetQueue(tmp_path / "q", max_queued=3)
    for i in range(5):
        queue.put(f"attestation {i}".encode())
    assert [p.read_bytes() for p in queue.pending()] == [b"attestation 2", b"attestation 3", b"attestation 4"]


def test_the_next_attestation_answers_a_nonce_the_service_issued(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    app, engine = service(tmp_path, fleet)
    token = Auth(engine).create_token("drone-001", "agent", "test")
    with running(app) as url:
        pusher = _pusher(tmp_path, url, token)
        assert pusher.take_nonce() is None  # nothing fetched yet: the pass never waits for one
        pusher.start()
        try:
            deadline = time.monotonic() + 10
            nonce = None
            while nonce is None and time.monotonic() < deadline:
                with pusher._lock:
                    ready = pusher._nonce is not None
                nonce = pusher.take_nonce() if ready else None
                time.sleep(0.05)
            assert nonce is not None, pusher.last_error
            envelope = fleet.attestation("drone-001", nonce=nonce)
            answered = httpx.post(f"{url}/api/v1/attestations", content=envelope,
                                  headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            replayed = httpx.post(f"{url}/api/v1/attestations", content=fleet.attestation("drone-001", nonce=nonce),
                                  headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        finally:
            pusher.stop()
    assert answered.json()["answered_nonce"] is True and answered.json()["passed"] is True, answered.json()
    assert replayed.json()["passed"] is False, "an issued nonce answers once"


def test_a_config_with_a_fleet_url_needs_a_token_file() -> None:
    from agent.config import parse
    from attest.errors import FormatError

    base = '[device]\nid = "d"\nairframe = "a"\nkey = "file:k"\n'
    with pytest.raises(FormatError, match=r"fleet\.token_file"):
        parse(base + '[fleet]\nurl = "https://fleet.example"\n')
    with pytest.raises(FormatError, match=r"fleet\.url"):
        parse(base + '[fleet]\nurl = "ftp://fleet.example"\ntoken_file = "t"\n')
    assert parse(base + '[fleet]\nurl = "https://fleet.example"\ntoken_file = "t"\n').fleet.url


def test_an_agent_on_the_vfc_pushes_and_its_airframe_turns_red_with_a_webhook(tmp_path: Path) -> None:
    """The issue's "done when": the agent's own passes reach the service; a tampered script turns the
    airframe red there with the reason, and the webhook fires."""
    import dataclasses

    from hardware.software import SoftwareSigner
    from sim.scenarios.rig import GATE_KEY, Rig, gate_scripts
    from sim.vfc.config import VfcConfig
    from sim.vfc.lua_host import LuaScriptingAuthority
    from sim.vfc.server import VirtualFC
    from tests.test_fleet_cli import _Receiver, run, serving

    image = b"\x00\x10\x00\x20 virtual FC firmware image " * 2048
    db = str(tmp_path / "fleet.db")
    run("fleet", "migrate", "--db", db)
    agent_token = run("fleet", "token", "create", "drone-001", "--role", "agent", "--db", db).stdout.strip()
    reader = run("fleet", "token", "create", "ops", "--role", "operator", "--db", db).stdout.strip()
    (tmp_path / "agent.token").write_text(agent_token + "\n")
    (tmp_path / "hook.secret").write_text("webhook secret\n")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    with VirtualFC(VfcConfig(scripts=gate_scripts(), gate_key=GATE_KEY, flash_image=image, prearm_period=1.0),
                   authority=LuaScriptingAuthority()) as fc:
        rig = Rig(tmp_path / "rig", fc.url(1), fc.url(0), SoftwareSigner.generate(), gate_key=GATE_KEY)
        rig.sign_manifest(rig.baseline_manifest(rig.measure_fc()))

        class FleetFixture:  # the airframe's trust dir is the one the service reads
            trust = rig.trust_dir

        try:
            with serving(db, FleetFixture, "--webhook-url", hook,  # type: ignore[arg-type]
                         "--webhook-secret-file", str(tmp_path / "hook.secret")) as url:
                cfg = dataclasses.replace(rig.config(), fleet=FleetConfig(
                    url=url, token_file=str(tmp_path / "agent.token"), timeout_s=2.0))
                rig.start_agent(cfg)
                rig.wait_verdict(passed=True, timeout=30)
                headers = {"Authorization": f"Bearer {reader}"}
                device = _wait_state(url, headers, ("passing",))
                assert device["last_success"], device
                (fc.scripts_dir / "evil.lua").write_bytes(b"-- exfiltrate telemetry\nreturn function() end\n")
                rig.wait_verdict(passed=False, code="script-unknown", timeout=30)
                device = _wait_state(url, headers, ("failing", "drifted"))
                assert "script-unknown" in json.dumps(device["reasons"]), device
                history = httpx.get(f"{url}/api/v1/devices/drone-001", headers=headers).json()
                event = _next_event("failure")
                assert event["device_id"] == "drone-001", event
                assert rig.daemon is not None and not list((rig.workdir / "state" / "fleet-queue").glob("*.json"))
        finally:
            rig.stop_agent()
            receiver.shutdown()
    assert history["passed"] is False and any(d["component"].startswith("fc.script:") for d in history["drift"]), \
        history


def _wait_state(url: str, headers: dict[str, str], states: tuple[str, ...], timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/api/v1/devices/drone-001", headers=headers)
        if answer.status_code == 200:
            last = answer.json()
            if last.get("state") in states:
                return last
        time.sleep(0.2)
    raise AssertionError(f"drone-001 never became {' or '.join(states)}: {last}")


def _next_event(kind: str, timeout: float = 30.0) -> dict[str, object]:
    from tests.test_fleet_cli import _Receiver

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _headers, body = _Receiver.got.get(timeout=max(0.1, deadline - time.monotonic()))
        event = json.loads(body)
        if event.get("kind") == kind:
            return dict(event)
    raise AssertionError(f"no {kind} event")
