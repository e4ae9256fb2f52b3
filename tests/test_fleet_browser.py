"""The pages in a real browser: Debian's headless Chromium against `flightseal fleet serve` on loopback.

The service is the real command in its own process, on a SQLite file; attestations arrive over
HTTP as an agent would push them. The browser logs in through the form, reads the overview, opens
the tampered airframe, searches and revokes through the form. Screenshots are kept in
test-artifacts/fleet/ for a person to look at.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import chromium, screenshot
from tests.fleet_kit import Fleet, make_fleet

PASSWORD = "a long enough password"
FLIGHTSEAL = [str(Path(sys.executable).parent / "flightseal")]


@dataclass
class Service:
    url: str
    fleet: Fleet
    token: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*FLIGHTSEAL, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"flightseal {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
    return done


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Service]:
    fleet = make_fleet(tmp_path)
    db = str(tmp_path / "fleet.db")
    _cli("fleet", "migrate", "--db", db)
    (tmp_path / "pw").write_text(PASSWORD)
    _cli("fleet", "user", "add", "olga", "--role", "operator", "--db", db, "--password-file", str(tmp_path / "pw"))
    _cli("fleet", "user", "add", "ada", "--role", "admin", "--db", db, "--password-file", str(tmp_path / "pw"))
    token = _cli("fleet", "token", "create", "vfc", "--role", "agent", "--db", db).stdout.strip()
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([*FLIGHTSEAL, "fleet", "serve", "--db", db, "--trust", str(fleet.trust), "--port",
                             str(port), "--allow-software-keys"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"fleet serve did not come up: {(tmp_path / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield Service(url, fleet, token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _push(svc: Service, body: bytes) -> dict[str, object]:
    r = httpx.post(f"{svc.url}/api/v1/attestations", content=body, timeout=30,
                   headers={"Authorization": f"Bearer {svc.token}", "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    doc: dict[str, object] = r.json()
    return doc


def _log_in(page: Any, name: str) -> None:
    """Through the real form, as a person would; lands on the overview."""
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))


def test_officer_logs_in_sees_the_tampered_airframe_red_searches_and_revokes(served: Service) -> None:
    svc = served
    assert _push(svc, svc.fleet.attestation("drone-001"))["passed"] is True
    assert _push(svc, svc.fleet.attestation("drone-002"))["passed"] is True
    assert _push(svc, svc.fleet.attestation("drone-002", tampered=True))["passed"] is False
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(f"{svc.url}/")
        assert "/login" in page.url
        screenshot(page, "01-login")
        _log_in(page, "olga")
        assert page.inner_text("#count-passing .n") == "1"
        assert page.inner_text("#count-drifted .n") == "1"
        assert page.inner_text("#count-failing .n") == "0"
        assert "script-mismatch" in page.inner_text("table.devices tr:has-text('drone-002')")
        screenshot(page, "02-overview")

        page.click("table.devices >> text=drone-002")
        page.wait_for_url(f"{svc.url}/devices/drone-002")
        banner = page.locator("#state")
        assert "DRIFTED" in banner.inner_text() and "script-mismatch" in banner.inner_text()
        red = banner.evaluate("e => getComputedStyle(e).backgroundColor")
        assert red == "rgb(255, 235, 233)", red  # the failing banner's red, from the served stylesheet
        assert "scripts/flightseal.lua" in page.inner_text("#drift")
        assert page.locator("#history tbody tr").count() == 2
        assert "JP" in page.inner_text("#parts-approved")
        screenshot(page, "03-tampered-airframe")

        page.fill("header input[name=q]", "drone-00")
        page.press("header input[name=q]", "Enter")
        page.wait_for_url("**/search?q=drone-00")
        assert page.locator("table.devices tbody tr").count() == 2
        screenshot(page, "04-search")

        page.goto(f"{svc.url}/devices/drone-001")
        page.fill("#revoke input[name=reason]", "airframe lost over water")
        page.click("#revoke button[type=submit]")
        page.wait_for_url("**/devices/drone-001?done=revoked")
        assert "REVOKED" in page.inner_text("#state") and "airframe lost over water" in page.inner_text("#state")
        screenshot(page, "05-revoked")

        page.click("header button:has-text('Log out')")
        page.wait_for_url("**/login")
        _log_in(page, "ada")
        page.goto(f"{svc.url}/admin/tokens")
        page.fill("form:has(input[value=create]) input[name=name]", "ci-nightly")
        page.select_option("form:has(input[value=create]) select[name=role]", "operator")
        page.click("form:has(input[value=create]) button[type=submit]")
        assert page.inner_text("#new-token").startswith("fst_")
        screenshot(page, "06-admin-token-created")
        page.goto(f"{svc.url}/admin/audit")
        assert "Chain intact" in page.inner_text("#chain")
        assert "airframe lost over water" in page.inner_text("table")
        screenshot(page, "07-audit-trail")
        page.close()
    assert requested and all(u.startswith(svc.url) for u in requested), "a page fetched something off the service"
    assert any(u.endswith("/static/fleet.css") for u in requested)
    assert _push(svc, svc.fleet.attestation("drone-001"))["passed"] is False
