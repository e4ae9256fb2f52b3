"""The fleet service over HTTP: who may read and write what, the bounds on intake, and verdicts as served.

The app is the real one over a real SQLite database and a real trust directory; attestations are
signed by enrolled software keys (tests/fleet_kit.py). Most tests use Starlette's TestClient; the
ones about what reaches the wire (limits on a streamed body) run against uvicorn on loopback.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Mount, Route

from fleet.auth import Auth
from fleet.web.limits import MAX_INTAKE_BYTES, RateLimit, RateLimiter
from tests.fleet_kit import Fleet, make_fleet, running, service

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2 for its TestClient; httpx is what we ship
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PASSWORD = "a long enough password"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


@pytest.fixture
def app_engine(tmp_path: Path, fleet: Fleet) -> tuple[Any, Engine]:
    return service(tmp_path, fleet)


@pytest.fixture
def client(app_engine: tuple[Any, Engine]) -> Iterator[TestClient]:
    with TestClient(app_engine[0], follow_redirects=False) as c:
        yield c


@pytest.fixture
def auth(app_engine: tuple[Any, Engine]) -> Auth:
    return Auth(app_engine[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log in through the form; return the session's CSRF token (read from a page, as a browser would)."""
    page = client.get("/login")
    match = CSRF_FIELD.search(page.text)
    assert match
    r = client.post("/login", data={"csrf": match[1], "name": name, "password": password, "next": "/"})
    assert r.status_code == 303, r.text
    home = client.get("/")
    assert home.status_code == 200
    found = CSRF_FIELD.search(home.text)
    assert found
    return found[1]


def push(client: TestClient, token: str, body: bytes) -> httpx.Response:
    response: httpx.Response = client.post("/api/v1/attestations", content=body, headers=bearer(token))
    return response


# ---- nobody unauthenticated reads or changes anything ---------------------------------------------

PAGES = ["/", "/devices/drone-001", "/search?q=drone", "/admin/users", "/admin/tokens", "/admin/audit",
         "/devices/drone-001/report.html", "/devices/drone-001/bom.cdx.json"]
APIS = ["/api/v1/devices", "/api/v1/devices/drone-001"]
POST_PAGES = ["/logout", "/devices/drone-001/revoke", "/admin/users", "/admin/tokens"]
POST_APIS = ["/api/v1/nonces", "/api/v1/attestations", "/api/v1/revocations"]
OPEN = {"/login", "/healthz", "/static"}


def test_every_route_is_covered_by_the_unauthenticated_checks(client: TestClient) -> None:
    """A new route must be added to the lists above (and so be checked) or be deliberately open."""
    tested = {p.split("?")[0] for p in PAGES + APIS + POST_PAGES + POST_APIS} | OPEN
    paths = {r.path.replace("{device_id:path}", "drone-001") for r in client.app.routes  # type: ignore[attr-defined]
             if isinstance(r, Route | Mount)}
    assert paths <= tested, f"routes not checked for authentication: {sorted(paths - tested)}"


@pytest.mark.parametrize("path", PAGES)
def test_unauthenticated_page_redirects_to_login(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=")
    assert "drone" not in r.text


@pytest.mark.parametrize("path", APIS)
def test_unauthenticated_api_read_is_401_json(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401
    assert "error" in r.json()


@pytest.mark.parametrize("path", POST_PAGES)
def test_unauthenticated_form_post_changes_nothing(client: TestClient, path: str) -> None:
    r = client.post(path, data={"csrf": "x", "reason": "x", "name": "eve", "role": "admin", "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


@pytest.mark.parametrize("path", POST_APIS)
def test_intake_without_or_with_a_bad_token_is_401(client: TestClient, fleet: Fleet, path: str) -> None:
    body = b'{"device": "drone-001"}' if "nonces" in path else fleet.attestation("drone-001")
    assert client.post(path, content=body, headers={"Content-Type": "application/json"}).status_code == 401
    r = client.post(path, content=body, headers=bearer("fst_not-a-token"))
    assert r.status_code == 401 and "unknown or revoked" in r.json()["error"]


def test_health_check_is_open_and_says_nothing_about_the_fleet(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_static_css_is_served_and_pages_allow_no_other_origin(client: TestClient) -> None:
    css = client.get("/static/fleet.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert "http" not in css.text  # no external font or image
    csp = client.get("/login").headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp


# ---- log-in, sessions and CSRF -------------------------------------------------------------------

def test_session_cookie_is_httponly_and_samesite_strict(client: TestClient, auth: Auth) -> None:
    auth.add_user("alice", "viewer", PASSWORD)
    page = client.get("/login")
    match = CSRF_FIELD.search(page.text)
    assert match
    r = client.post("/login", data={"csrf": match[1], "name": "alice", "password": PASSWORD, "next": "/"})
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("fs_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure (next test)


def test_session_cookie_is_secure_over_tls(app_engine: tuple[Any, Engine], auth: Auth) -> None:
    auth.add_user("alice", "viewer", PASSWORD)
    with TestClient(app_engine[0], base_url="https://fleet.test", follow_redirects=False) as c:
        match = CSRF_FIELD.search(c.get("/login").text)
        assert match
        r = c.post("/login", data={"csrf": match[1], "name": "alice", "password": PASSWORD, "next": "/"})
    assert "Secure" in r.headers["set-cookie"]


def test_login_without_the_form_csrf_token_is_refused(client: TestClient, auth: Auth) -> None:
    auth.add_user("alice", "viewer", PASSWORD)
    client.get("/login")
    r = client.post("/login", data={"name": "alice", "password": PASSWORD})
    assert r.status_code == 403 and "fs_session" not in r.headers.get("set-cookie", "")


def test_wrong_password_is_refused_and_next_cannot_leave_the_site(client: TestClient, auth: Auth) -> None:
    auth.add_user("alice", "viewer", PASSWORD)
    csrf = CSRF_FIELD.search(client.get("/login").text)
    assert csrf
    bad = client.post("/login", data={"csrf": csrf[1], "name": "alice", "password": "not the password"})
    assert bad.status_code == 401 and "wrong user name or password" in bad.text
    csrf = CSRF_FIELD.search(client.get("/login").text)
    assert csrf
    ok = client.post("/login", data={"csrf": csrf[1], "name": "alice", "password": PASSWORD,
                                     "next": "//evil.example/"})
    assert ok.headers["location"] == "/"


def test_logout_needs_csrf_and_ends_the_session(client: TestClient, auth: Auth) -> None:
    auth.add_user("alice", "viewer", PASSWORD)
    csrf = login(client, "alice")
    assert client.post("/logout", data={"csrf": "wrong"}).status_code == 403
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/").status_code == 303


@pytest.mark.parametrize("csrf", [None, "", "forged-token"])
def test_revoke_without_the_right_csrf_token_is_refused(client: TestClient, auth: Auth, fleet: Fleet,
                                                        csrf: str | None) -> None:
    auth.add_user("olga", "operator", PASSWORD)
    push(client, auth.create_token("ci", "agent", "test"), fleet.attestation("drone-001"))
    login(client, "olga")
    data = {"reason": "lost in the field"} | ({"csrf": csrf} if csrf is not None else {})
    r = client.post("/devices/drone-001/revoke", data=data)
    assert r.status_code == 403 and "CSRF" in r.text
    assert client.get("/api/v1/devices/drone-001").json()["revoked"] is None


# ---- roles ---------------------------------------------------------------------------------------

def test_viewer_cannot_revoke_and_sees_no_revoke_form(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    auth.add_user("vera", "viewer", PASSWORD)
    push(client, auth.create_token("ci", "agent", "test"), fleet.attestation("drone-001"))
    csrf = login(client, "vera")
    assert 'id="revoke"' not in client.get("/devices/drone-001").text
    r = client.post("/devices/drone-001/revoke", data={"csrf": csrf, "reason": "because"})
    assert r.status_code == 403
    assert client.get("/api/v1/devices/drone-001").json()["revoked"] is None


def test_operator_revokes_through_the_form_and_it_is_audited(client: TestClient, auth: Auth, fleet: Fleet,
                                                             app_engine: tuple[Any, Engine]) -> None:
    from fleet import audit

    auth.add_user("olga", "operator", PASSWORD)
    token = auth.create_token("ci", "agent", "test")
    push(client, token, fleet.attestation("drone-001"))
    csrf = login(client, "olga")
    r = client.post("/devices/drone-001/revoke", data={"csrf": csrf, "reason": "motor swapped without approval"})
    assert r.status_code == 303
    assert client.get("/api/v1/devices/drone-001").json()["revoked"]["by"] == "olga"
    later = push(client, token, fleet.attestation("drone-001")).json()
    assert not later["passed"] and "device-revoked" in [x["code"] for x in later["reasons"]]
    with app_engine[1].connect() as conn:
        assert ("olga", "revoke", "drone-001") in [(e.actor, e.action, e.subject) for e in audit.entries(conn)]


def test_non_admin_cannot_open_or_post_admin_pages(client: TestClient, auth: Auth) -> None:
    auth.add_user("olga", "operator", PASSWORD)
    csrf = login(client, "olga")
    assert client.get("/admin/users").status_code == 403
    assert client.get("/admin/tokens").status_code == 403
    assert client.get("/admin/audit").status_code == 403
    r = client.post("/admin/users", data={"csrf": csrf, "name": "eve", "role": "admin", "password": PASSWORD})
    assert r.status_code == 403
    assert [u.name for u in auth.users()] == ["olga"]


def test_agent_token_pushes_but_cannot_read_devices(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    token = auth.create_token("vfc", "agent", "test")
    assert push(client, token, fleet.attestation("drone-001")).status_code == 201
    for path in APIS:
        r = client.get(path, headers=bearer(token))
        assert r.status_code == 403 and "agent" in r.json()["error"]


def test_operator_token_reads_devices(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    token = auth.create_token("ci", "operator", "test")
    push(client, token, fleet.attestation("drone-002"))
    listed = client.get("/api/v1/devices", headers=bearer(token)).json()["devices"]
    assert [d["device"] for d in listed] == ["drone-002"] and listed[0]["state"] == "passing"
    one = client.get("/api/v1/devices/drone-002", headers=bearer(token)).json()
    assert one["passed"] is True and one["parts"][0]["origin"] == "JP"
    assert client.get("/api/v1/devices/drone-404", headers=bearer(token)).status_code == 404


def test_a_bad_bearer_token_does_not_fall_back_to_the_session(client: TestClient, auth: Auth) -> None:
    auth.add_user("alice", "admin", PASSWORD)
    login(client, "alice")
    assert client.get("/api/v1/devices").status_code == 200
    assert client.get("/api/v1/devices", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_revoked_token_is_refused_at_once(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    token = auth.create_token("ci", "agent", "test")
    assert push(client, token, fleet.attestation("drone-001")).status_code == 201
    auth.revoke_token("ci")
    r = push(client, token, fleet.attestation("drone-001"))
    assert r.status_code == 401 and "revoked" in r.json()["error"]


def test_admin_creates_a_token_shown_once_and_revokes_it_through_the_forms(client: TestClient, auth: Auth,
                                                                           fleet: Fleet) -> None:
    auth.add_user("ada", "admin", PASSWORD)
    csrf = login(client, "ada")
    page = client.post("/admin/tokens", data={"csrf": csrf, "action": "create", "name": "ci", "role": "agent"})
    shown = re.search(r'id="new-token">([^<]+)<', page.text)
    assert page.status_code == 200 and shown
    assert shown[1] not in client.get("/admin/tokens").text  # only once
    assert push(client, shown[1], fleet.attestation("drone-001")).status_code == 201
    client.post("/admin/tokens", data={"csrf": csrf, "action": "revoke", "name": "ci"})
    assert push(client, shown[1], fleet.attestation("drone-001")).status_code == 401
    made = client.post("/admin/users", data={"csrf": csrf, "name": "vera", "role": "viewer", "password": PASSWORD})
    assert made.status_code == 200 and "vera" in made.text


# ---- intake bounds and validation ----------------------------------------------------------------

def test_body_over_the_bound_is_413_before_verification(client: TestClient, auth: Auth) -> None:
    token = auth.create_token("ci", "agent", "test")
    r = push(client, token, b"{" + b" " * MAX_INTAKE_BYTES + b"}")
    assert r.status_code == 413 and str(MAX_INTAKE_BYTES) in r.json()["error"]


def test_streamed_body_over_the_bound_is_413_on_the_wire(app_engine: tuple[Any, Engine], auth: Auth) -> None:
    token = auth.create_token("ci", "agent", "test")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bound is enforced while reading
        for _ in range(MAX_INTAKE_BYTES // 65536 + 2):
            yield b" " * 65536

    with running(app_engine[0]) as url:
        r = httpx.post(f"{url}/api/v1/attestations", content=chunks(), headers=bearer(token), timeout=30)
    assert r.status_code == 413


def test_intake_is_rate_limited_per_client_with_retry_after(tmp_path: Path, fleet: Fleet) -> None:
    app, engine = service(tmp_path, fleet, intake_limit=RateLimit(rate=0.5, burst=3))
    token = Auth(engine).create_token("ci", "agent", "test")
    with TestClient(app) as c:
        codes = [c.post("/api/v1/nonces", json={"device": "drone-001"}, headers=bearer(token)) for _ in range(4)]
    assert [r.status_code for r in codes] == [201, 201, 201, 429]
    assert int(codes[-1].headers["retry-after"]) >= 1 and "too many" in codes[-1].json()["error"]


@pytest.mark.parametrize(("path", "body", "content_type", "says"), [
    ("/api/v1/attestations", b"not json {", "application/json", "not JSON"),
    ("/api/v1/attestations", b"{}", "text/plain", "Content-Type"),
    ("/api/v1/nonces", b"[1, 2]", "application/json", "exactly"),
    ("/api/v1/nonces", b'{"device": ""}', "application/json", "device id"),
    ("/api/v1/nonces", b'{"device": "x", "more": 1}', "application/json", "exactly"),
    ("/api/v1/nonces", b"\xff\xfe", "application/json", "not JSON"),
])
def test_malformed_request_is_400_naming_the_problem(client: TestClient, auth: Auth, path: str, body: bytes,
                                                     content_type: str, says: str) -> None:
    token = auth.create_token("ci", "agent", "test")
    r = client.post(path, content=body, headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    assert r.status_code == 400 and says in r.json()["error"]


# ---- verdicts through HTTP -----------------------------------------------------------------------

def test_good_attestation_is_201_then_200_as_a_duplicate(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    token = auth.create_token("ci", "agent", "test")
    att = fleet.attestation("drone-001")
    first = push(client, token, att)
    assert first.status_code == 201
    doc = first.json()
    assert doc["passed"] is True and doc["device"] == "drone-001" and doc["reasons"] == []
    assert doc["duplicate"] is False and len(doc["id"]) == 64 and doc["answered_nonce"] is False
    again = push(client, token, att)
    assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["id"] == doc["id"]


def test_tampered_attestation_is_stored_failed_with_its_reason(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    token = auth.create_token("ci", "agent", "test")
    r = push(client, token, fleet.attestation("drone-003", tampered=True))
    assert r.status_code == 201
    assert r.json()["passed"] is False and "script-mismatch" in [x["code"] for x in r.json()["reasons"]]


def test_altered_bytes_are_stored_against_no_airframe(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    token = auth.create_token("ci", "operator", "test")
    att = bytearray(fleet.attestation("drone-001"))
    at = att.index(b'"payload": "') + 20
    att[at] = ord("A") if att[at] != ord("A") else ord("B")
    r = push(client, token, bytes(att))
    assert r.status_code == 201 and r.json()["passed"] is False and r.json()["device"] is None
    assert client.get("/api/v1/devices", headers=bearer(token)).json()["devices"] == []


def test_answered_nonce_is_recorded(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    token = auth.create_token("vfc", "agent", "test")
    r = client.post("/api/v1/nonces", json={"device": "drone-002"}, headers=bearer(token))
    assert r.status_code == 201 and r.json()["device"] == "drone-002" and r.json()["expires"].endswith("Z")
    nonce = bytes.fromhex(r.json()["nonce"])
    doc = push(client, token, fleet.attestation("drone-002", nonce=nonce)).json()
    assert doc["passed"] is True and doc["answered_nonce"] is True
    unknown = client.post("/api/v1/nonces", json={"device": "drone-999"}, headers=bearer(token))
    assert unknown.status_code == 404 and "not enrolled" in unknown.json()["error"]


def test_pages_show_counts_the_failing_airframe_in_red_and_search(client: TestClient, auth: Auth,
                                                                  fleet: Fleet) -> None:
    token = auth.create_token("ci", "agent", "test")
    push(client, token, fleet.attestation("drone-001"))
    push(client, token, fleet.attestation("drone-002"))
    push(client, token, fleet.attestation("drone-003", tampered=True))
    auth.add_user("vera", "viewer", PASSWORD)
    login(client, "vera")
    home = client.get("/").text
    assert re.search(r'id="count-passing"[^>]*>\s*<span class="n">2<', home)
    assert re.search(r'id="count-never-passed"[^>]*>\s*<span class="n">1<', home)
    assert re.search(r'drone-003</a>.*?<span class="code">script-mismatch</span>', home, re.S)
    page = client.get("/devices/drone-003").text
    assert 'class="banner fail"' in page and "script-mismatch" in page and "NEVER PASSED" in page
    found = client.get("/search", params={"q": "drone-00"}).text
    assert all(f"/devices/drone-00{i}" in found for i in (1, 2, 3))
    assert client.get("/devices/drone-404").status_code == 404


def test_page_text_is_escaped(client: TestClient, auth: Auth) -> None:
    auth.add_user("vera", "viewer", PASSWORD)
    login(client, "vera")
    page = client.get("/search", params={"q": "<script>alert(1)</script>"}).text
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page


def test_signed_revocation_needs_the_enrolment_threshold(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    from datetime import UTC, datetime

    from fleet.revocation import Revocation, sign_revocation

    token = auth.create_token("ops", "operator", "test")
    agent = auth.create_token("vfc", "agent", "test")
    revocation = Revocation("drone-002", "key extracted from a crashed airframe", datetime.now(UTC))
    one = sign_revocation(revocation, fleet.world.m_keys[:1])
    two = sign_revocation(revocation, fleet.world.m_keys[:2])
    assert client.post("/api/v1/revocations", content=two, headers=bearer(agent)).status_code == 403
    refused = client.post("/api/v1/revocations", content=one, headers=bearer(token))
    assert refused.status_code == 400 and "revocation refused" in refused.json()["error"]
    done = client.post("/api/v1/revocations", content=two, headers=bearer(token))
    assert done.status_code == 201 and done.json()["device"] == "drone-002"
    assert client.get("/api/v1/devices/drone-002", headers=bearer(token)).json()["state"] == "revoked"


def test_history_is_newest_first_and_pages_with_older(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    from fleet.web.routes_pages import HISTORY_PAGE

    token = auth.create_token("ci", "agent", "test")
    ids = [push(client, token, fleet.attestation("drone-001")).json()["id"] for _ in range(HISTORY_PAGE + 3)]
    auth.add_user("vera", "viewer", PASSWORD)
    login(client, "vera")
    first = client.get("/devices/drone-001").text
    shown = re.findall(r'<td class="mono" title="([0-9a-f]{64})">', first)
    assert len(shown) == HISTORY_PAGE and set(shown) <= set(ids)
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older
    rest = re.findall(r'<td class="mono" title="([0-9a-f]{64})">', client.get(older[1].replace("&amp;", "&")).text)
    assert len(rest) == 3 and not set(rest) & set(shown) and set(shown) | set(rest) == set(ids)
    assert client.get("/devices/drone-001", params={"before": "zz"}).status_code == 400


def test_admin_reads_the_audit_trail_with_its_chain_intact(client: TestClient, auth: Auth, fleet: Fleet) -> None:
    auth.add_user("ada", "admin", PASSWORD)
    csrf = login(client, "ada")
    client.post("/admin/tokens", data={"csrf": csrf, "action": "create", "name": "ci", "role": "agent"})
    page = client.get("/admin/audit").text
    assert "Chain intact" in page
    assert re.search(r"<td>ada</td><td>token.create</td><td>ci</td>", page)
    assert re.search(r"<td>cli</td><td>user.add</td><td>ada</td>", page)
    assert client.get("/admin/audit", params={"before": "x"}).status_code == 400


def test_rate_limiter_refills_over_time_and_keeps_clients_apart() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(rate=2.0, burst=2), clock=lambda: now[0])
    assert [limiter.check("a"), limiter.check("a"), limiter.check("a")] == [0, 0, 1]
    assert limiter.check("b") == 0  # another client has its own bucket
    now[0] += 0.5  # one token back at 2 per second
    assert limiter.check("a") == 0 and limiter.check("a") == 1


@pytest.fixture(scope="module")
def pg() -> Iterator[Any]:
    from tests.pgserver import PgServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with PgServer(fsync=False) as server:
        yield server


def test_log_in_intake_pages_revocation_and_audit_on_postgresql(tmp_path: Path, pg: Any) -> None:
    """The same web layer over a real PostgreSQL server: timestamps with zones, the audit chain's advisory lock."""
    from fleet import audit
    from fleet.db import database_url

    fleet = make_fleet(tmp_path)
    app, engine = service(tmp_path, fleet, database_url(pg.create_database("fleet_web")))
    auth = Auth(engine)
    auth.add_user("olga", "operator", PASSWORD)
    token = auth.create_token("ci", "agent", "test")
    with TestClient(app, follow_redirects=False) as client:
        assert push(client, token, fleet.attestation("drone-001")).status_code == 201
        assert push(client, token, fleet.attestation("drone-002", tampered=True)).json()["passed"] is False
        csrf = login(client, "olga")
        home = client.get("/").text
        assert re.search(r'id="count-passing"[^>]*>\s*<span class="n">1<', home) and "script-mismatch" in home
        assert 'class="banner fail"' in client.get("/devices/drone-002").text
        r = client.post("/devices/drone-001/revoke", data={"csrf": csrf, "reason": "sold"})
        assert r.status_code == 303
        assert client.get("/api/v1/devices/drone-001").json()["state"] == "revoked"
        assert client.post("/logout", data={"csrf": csrf}).status_code == 303
        assert client.get("/").status_code == 303
    with engine.connect() as conn:
        assert audit.verify_chain(conn) >= 4


def test_a_viewer_reads_each_airframes_bill_as_html_and_cyclonedx(client: TestClient, auth: Auth,
                                                                    fleet: Fleet) -> None:
    import base64
    import hashlib

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from report.html import CONTENT_SECURITY_POLICY

    push(client, auth.create_token("ci", "agent", "test"), fleet.attestation("drone-001"))
    auth.add_user("vera", "viewer", PASSWORD)
    login(client, "vera")
    assert "/devices/drone-001/report.html" in client.get("/devices/drone-001").text
    page = client.get("/devices/drone-001/report.html")
    assert page.status_code == 200 and "Bill of materials" in page.text
    assert "What this evidence cannot prove" in page.text
    assert "Verdict: verified" in page.text
    assert page.headers.get_list("content-security-policy") == [CONTENT_SECURITY_POLICY]  # its own, not both
    style = page.text.split("<style>", 1)[1].split("</style>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    bom = client.get("/devices/drone-001/bom.cdx.json")
    assert bom.status_code == 200 and bom.headers["content-type"].startswith("application/vnd.cyclonedx+json")
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(bom.text) is None
    assert client.get("/devices/drone-404/report.html").status_code == 404
