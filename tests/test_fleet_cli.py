"""`flightseal fleet ...`: operators, tokens, migrations and push, with the project's exit codes
(0 pass, 1 a verification failed, 2 unusable input or an unreachable service)."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import inspect

from agent.cli.main import main
from fleet.auth import Auth
from fleet.db import database_url, make_engine
from tests.fleet_kit import Fleet, make_fleet, running, service

PASSWORD = "a long enough password"


def run(*args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), input=stdin)
    assert result.exit_code == code, (result.output, result.exception)
    return result


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "fleet.db")
    run("fleet", "migrate", "--db", path)
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Fleet, Path]]:
    """A real uvicorn on loopback over a fresh database; yields its URL, the fleet and a token file."""
    fleet = make_fleet(tmp_path)
    app, engine = service(tmp_path, fleet)
    token_file = tmp_path / "ci.token"
    token_file.write_text(Auth(engine).create_token("ci", "agent", "test") + "\n")
    with running(app) as url:
        yield url, fleet, token_file


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_migrate_up_and_down_to_base(tmp_path: Path) -> None:
    path = str(tmp_path / "fleet.db")
    assert "up to date" in run("fleet", "migrate", "--db", path).output
    tables = set(inspect(make_engine(database_url(path))).get_table_names())
    assert {"users", "api_tokens", "web_sessions", "devices", "attestations"} <= tables
    run("fleet", "migrate", "--db", path, "--down-to", "base")
    assert set(inspect(make_engine(database_url(path))).get_table_names()) <= {"alembic_version"}


def test_user_add_from_a_password_file_then_log_in(db: str, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert "added with role operator" in run("fleet", "user", "add", "olga", "--role", "operator", "--db", db,
                                             "--password-file", str(pw)).output
    assert Auth(make_engine(database_url(db))).login("olga", PASSWORD) is not None


def test_user_add_prompts_twice_for_the_password(db: str) -> None:
    run("fleet", "user", "add", "vera", "--role", "viewer", "--db", db, stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert Auth(make_engine(database_url(db))).login("vera", PASSWORD) is not None


@pytest.mark.parametrize(("args", "says"), [
    (("--role", "root"), "root"),
    (("--role", "viewer", "--password-file", "{short}"), "password"),
])
def test_bad_user_input_exits_2_with_one_line(db: str, tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    (tmp_path / "short").write_text("short")
    argv = [a.replace("{short}", str(tmp_path / "short")) for a in args]
    result = run("fleet", "user", "add", "bob", *argv, "--db", db, code=2)
    assert says in result.output and "Traceback" not in result.output


def test_duplicate_user_is_one_line_and_not_a_traceback(db: str, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    run("fleet", "user", "add", "olga", "--role", "admin", "--db", db, "--password-file", str(pw))
    result = run("fleet", "user", "add", "olga", "--role", "admin", "--db", db, "--password-file", str(pw), code=2)
    assert "already exists" in result.output and "Traceback" not in result.output


def test_token_create_prints_it_once_and_revoke_refuses_it(db: str) -> None:
    created = run("fleet", "token", "create", "ci", "--role", "agent", "--db", db)
    token = created.stdout.strip()
    auth = Auth(make_engine(database_url(db)))
    assert token.startswith("fst_") and auth.token(token) is not None
    run("fleet", "token", "revoke", "ci", "--db", db)
    assert auth.token(token) is None
    assert "no active token" in run("fleet", "token", "revoke", "ci", "--db", db, code=2).output


def test_push_of_good_attestations_exits_0_and_prints_each_verdict(served: tuple[str, Fleet, Path],
                                                                   tmp_path: Path) -> None:
    url, fleet, token = served
    files = [write(tmp_path / f"{d}.json", fleet.attestation(d)) for d in ("drone-001", "drone-002")]
    result = run("fleet", "push", *files, "--url", url, "--token-file", str(token))
    assert result.output.count(": PASS drone-00") == 2


def test_push_with_a_tampered_attestation_exits_1_naming_the_reason(served: tuple[str, Fleet, Path],
                                                                    tmp_path: Path) -> None:
    url, fleet, token = served
    good = write(tmp_path / "good.json", fleet.attestation("drone-001"))
    bad = write(tmp_path / "bad.json", fleet.attestation("drone-002", tampered=True))
    result = run("fleet", "push", good, bad, "--url", url, "--token-file", str(token), code=1)
    assert "bad.json: FAIL drone-002" in result.output and "script-mismatch" in result.output
    assert "1 of 2 attestation(s) failed verification" in result.output


def test_push_twice_reports_the_duplicate(served: tuple[str, Fleet, Path], tmp_path: Path) -> None:
    url, fleet, token = served
    f = write(tmp_path / "a.json", fleet.attestation("drone-001"))
    run("fleet", "push", f, "--url", url, "--token-file", str(token))
    assert "already stored" in run("fleet", "push", f, "--url", url, "--token-file", str(token)).output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_push_to_an_unreachable_service_exits_2(tmp_path: Path, fleet_files: dict[str, Any]) -> None:
    result = run("fleet", "push", fleet_files["att"], "--url", f"http://127.0.0.1:{_closed_port()}",
                 "--token-file", fleet_files["token"], "--timeout", "5", code=2)
    assert "cannot be reached" in result.output and "Traceback" not in result.output


def test_push_with_a_bad_token_exits_2_with_the_services_reason(served: tuple[str, Fleet, Path],
                                                                tmp_path: Path) -> None:
    url, fleet, _token = served
    wrong = tmp_path / "wrong.token"
    wrong.write_text("fst_wrong")
    f = write(tmp_path / "a.json", fleet.attestation("drone-001"))
    result = run("fleet", "push", f, "--url", url, "--token-file", str(wrong), code=2)
    assert "401" in result.output and "unknown or revoked" in result.output


def test_push_of_a_missing_or_empty_file_exits_2(tmp_path: Path, fleet_files: dict[str, Any]) -> None:
    run("fleet", "push", str(tmp_path / "nope.json"), "--url", "http://127.0.0.1:1", "--token-file",
        fleet_files["token"], code=2)
    empty = tmp_path / "empty.token"
    empty.write_text("")
    result = run("fleet", "push", fleet_files["att"], "--url", "http://127.0.0.1:1", "--token-file", str(empty),
                 code=2)
    assert "is empty" in result.output


@pytest.fixture
def fleet_files(tmp_path: Path) -> dict[str, Any]:
    fleet = make_fleet(tmp_path)
    token = tmp_path / "t.token"
    token.write_text("fst_x")
    return {"att": write(tmp_path / "att.json", fleet.attestation("drone-001")), "token": str(token)}


@pytest.mark.parametrize(("extra", "says"), [
    (["--tls-cert", "{cert}"], "give both"),
    (["--db", "mysql://x/y"], "not a supported database"),
    (["--webhook-url", "ftp://x/"], "not an http"),
])
def test_serve_refuses_bad_options_with_exit_2(tmp_path: Path, extra: list[str], says: str) -> None:
    fleet = make_fleet(tmp_path)
    (tmp_path / "cert.pem").write_text("x")
    argv = ["fleet", "serve", "--db", str(tmp_path / "f.db"), "--trust", str(fleet.trust)]
    argv += [a.replace("{cert}", str(tmp_path / "cert.pem")) for a in extra]
    assert says in run(*argv, code=2).output


def test_serve_refuses_a_trust_directory_without_a_root(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("fleet", "serve", "--db", str(tmp_path / "f.db"), "--trust", str(tmp_path / "empty"), code=2)
    assert "has no root.json" in result.output


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as an operator would get from their CA."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address(
                "127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "fleet.crt", tmp / "fleet.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@contextmanager
def serving(db: str, fleet: Fleet, *extra: str, scheme: str = "http", verify: Any = True) -> Iterator[str]:
    """`flightseal fleet serve` as its own process on a free loopback port, until it answers /healthz."""
    port = _closed_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "fleet", "serve", "--db", db, "--trust", str(fleet.trust),
                             "--port", str(port), "--allow-software-keys", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=verify, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "fleet serve did not come up"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_over_tls_with_two_workers_sets_secure_cookies_and_push_verifies_the_cert(tmp_path: Path) -> None:
    """The real command: migrations, uvicorn with TLS and two worker processes from the env-configured factory."""
    fleet = make_fleet(tmp_path)
    cert, key = _self_signed(tmp_path)
    db = str(tmp_path / "fleet.db")
    run("fleet", "migrate", "--db", db)
    token_file = tmp_path / "ci.token"
    token_file.write_text(run("fleet", "token", "create", "ci", "--role", "agent", "--db", db).stdout.strip())
    ours = ssl.create_default_context(cafile=str(cert))
    with serving(db, fleet, "--workers", "2", "--tls-cert", str(cert), "--tls-key", str(key), scheme="https",
                 verify=ours) as url:
        assert "Secure" in httpx.get(f"{url}/login", verify=ours).headers["set-cookie"]
        att = write(tmp_path / "a.json", fleet.attestation("drone-001"))
        result = run("fleet", "push", att, "--url", url, "--token-file", str(token_file), "--ca", str(cert))
        assert ": PASS drone-001" in result.output
        untrusted = run("fleet", "push", att, "--url", url, "--token-file", str(token_file), code=2)
        assert "cannot be reached" in untrusted.output and "CERTIFICATE_VERIFY_FAILED" in untrusted.output


class _Receiver(BaseHTTPRequestHandler):
    got: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.got.put((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_tampered_push_turns_the_airframe_red_and_fires_a_signed_webhook(tmp_path: Path) -> None:
    """The issue's end-to-end: serve with a webhook, push a tampered attestation, the receiver gets the failure."""
    fleet = make_fleet(tmp_path)
    db = str(tmp_path / "fleet.db")
    run("fleet", "migrate", "--db", db)
    token_file = tmp_path / "ci.token"
    token_file.write_text(run("fleet", "token", "create", "ci", "--role", "operator", "--db", db).stdout.strip())
    (tmp_path / "hook.secret").write_text("webhook secret\n")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    try:
        with serving(db, fleet, "--webhook-url", hook, "--webhook-secret-file", str(tmp_path / "hook.secret")) as url:
            bad = write(tmp_path / "bad.json", fleet.attestation("drone-003", tampered=True))
            run("fleet", "push", bad, "--url", url, "--token-file", str(token_file), code=1)
            headers, body = _Receiver.got.get(timeout=20)
            state = httpx.get(f"{url}/api/v1/devices/drone-003", headers={"Authorization":
                              f"Bearer {token_file.read_text().strip()}"}).json()["state"]
    finally:
        receiver.shutdown()
    event = json.loads(body)
    assert event["kind"] == "failure" and event["device_id"] == "drone-003"
    assert "script-mismatch" in [r["code"] for r in event["reasons"]]
    expected = "sha256=" + hmac.new(b"webhook secret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-FlightSeal-Signature"], expected)
    assert state == "never-passed"


def test_loading_the_fleet_command_imports_none_of_the_services_libraries() -> None:
    """Every `flightseal` run loads fleet.cli through the entry point; without the `fleet` extra it must still load."""
    code = ("import sys; import fleet.cli; "
            "heavy = {'sqlalchemy', 'argon2', 'starlette', 'uvicorn', 'jinja2', 'httpx'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_the_commands_role_choices_match_the_auth_rules() -> None:
    from fleet import auth, cli

    assert set(cli.USER_ROLES) == auth.USER_ROLES and set(cli.TOKEN_ROLES) == auth.TOKEN_ROLES
