"""`flightseal fleet ...`: run the service, manage its operators and tokens, push attestations, migrate.

Registered through the ``flightseal.commands`` entry point, so ``agent/`` never imports the fleet.
Errors follow attest/errors.py: bad input raises :class:`FormatError` (exit 2), a service that cannot
be reached is exit 2 as well, and ``push`` exits 1 when any attestation failed verification.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
from pathlib import Path
from typing import Any

import click

from attest.errors import FlightSealError, FormatError

# The roles as fleet.auth defines them (a test checks they agree). Spelled here so that loading the
# command, which every `flightseal` run does through the entry point, imports no fleet dependency:
# a companion without the `fleet` extra still runs `flightseal` (the service's libraries load only
# when a fleet command runs).
USER_ROLES = ("admin", "operator", "viewer")
TOKEN_ROLES = ("admin", "agent", "operator")

MAX_TOKEN_FILE_BYTES = 4096
MAX_SECRET_FILE_BYTES = 4096


class VerificationFailed(FlightSealError):
    """At least one pushed attestation was stored but failed verification (exit 1)."""


class ServiceUnusable(click.ClickException):
    """The service could not be reached or refused the request itself (exit 2, one line)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"flightseal: error: {self.message}", err=True)


@click.group("fleet")
def fleet() -> None:
    """The fleet service: one view of every airframe's attestations."""


def _db_option(f: Any) -> Any:
    return click.option("--db", "db", required=True, metavar="PATH_OR_URL",
                        help="SQLite file path, or a postgresql:// URL")(f)


def _engine(db: str) -> Any:
    from fleet.db import database_url, make_engine

    return make_engine(database_url(db))


def _read_secret(path: Path, what: str, limit: int) -> str:
    data = path.read_bytes()
    if len(data) > limit:
        raise FormatError(f"{what} {path}", f"is larger than {limit} bytes")
    try:
        value = data.decode().strip()
    except UnicodeDecodeError:
        raise FormatError(f"{what} {path}", "is not UTF-8 text") from None
    if not value:
        raise FormatError(f"{what} {path}", "is empty")
    return value


@fleet.command("serve")
@_db_option
@click.option("--trust", "trust", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="trust directory: root.json, manifest.json, devices/")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--webhook-url", help="POST events (failure, drift, revocation, staleness) here")
@click.option("--webhook-secret-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="HMAC key that signs each webhook body (the file's text, surrounding whitespace dropped)")
@click.option("--stale-days", default=7.0, show_default=True, type=click.FloatRange(0.01, 3650),
              help="an airframe that has not attested for this long is stale")
@click.option("--intake-rate", default=200.0, show_default=True, type=click.FloatRange(0.1, 1e6),
              help="intake requests per second per client address and worker (bursts of twice that)")
@click.option("--allow-software-keys", is_flag=True,
              help="accept airframes whose key is a software key (demos and tests; never in service)")
def serve(db: str, trust: Path, host: str, port: int, workers: int, tls_cert: Path | None, tls_key: Path | None,
          webhook_url: str | None, webhook_secret_file: Path | None, stale_days: float, intake_rate: float,
          allow_software_keys: bool) -> None:
    """Bring the database up to date, then serve the pages and the API."""
    import uvicorn

    from fleet.db import database_url
    from fleet.migrate import upgrade
    from fleet.web.app import ENV_ALLOW_SOFTWARE_KEYS, ENV_DB, ENV_INTAKE_RATE, ENV_STALE_DAYS, ENV_TRUST

    if (tls_cert is None) != (tls_key is None):
        raise FormatError("--tls-cert/--tls-key", "give both, or neither (then put a TLS proxy in front)")
    if not (trust / "root.json").is_file():
        raise FormatError(f"trust directory {trust}", "has no root.json; copy the pinned root there")
    url = database_url(db)
    upgrade(url)
    os.environ.update({ENV_DB: url, ENV_TRUST: str(trust.resolve()), ENV_STALE_DAYS: str(stale_days),
                       ENV_INTAKE_RATE: str(intake_rate), ENV_ALLOW_SOFTWARE_KEYS: "1" if allow_software_keys else "0"})
    if webhook_url and not webhook_url.startswith(("http://", "https://")):
        raise FormatError("--webhook-url", f"{webhook_url!r} is not an http:// or https:// URL")
    if webhook_url:
        secret = _read_secret(webhook_secret_file, "webhook secret", MAX_SECRET_FILE_BYTES) \
            if webhook_secret_file else None
        _start_background(url, trust.resolve(), webhook_url, secret, stale_days)
    uvicorn.run("fleet.web.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None,
                proxy_headers=True, server_header=False, log_level="info")


def _start_background(url: str, trust: Path, webhook_url: str, secret: str | None, stale_days: float) -> None:
    """One dispatcher thread per ``serve`` (not per worker): it delivers queued webhook events and scans for
    stale airframes; the events are in the database, so a restart resumes where it stopped."""
    from fleet import webhooks

    runner = webhooks.background(url=url, trust=trust, webhook_url=webhook_url, secret=secret,
                                 stale_days=stale_days)
    threading.Thread(target=runner, name="fleet-webhooks", daemon=True).start()


@fleet.group("user")
def user() -> None:
    """Operators who log in to the pages."""


@user.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(USER_ROLES))
@_db_option
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="read the password from this file instead of prompting")
def user_add(name: str, role: str, db: str, password_file: Path | None) -> None:
    """Add an operator; the password is stored only as an argon2id hash."""
    from fleet.auth import MAX_PASSWORD_CHARS, Auth

    if password_file:
        password = _read_secret(password_file, "password file", MAX_PASSWORD_CHARS + 2)
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    Auth(_engine(db)).add_user(name, role, password)
    click.echo(f"user {name} added with role {role}")


@fleet.group("token")
def token() -> None:
    """API tokens for agents and CI."""


@token.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(TOKEN_ROLES),
              help="agent: push attestations and fetch nonces only")
@_db_option
def token_create(name: str, role: str, db: str) -> None:
    """Create a token and print it once: only its hash is kept."""
    from fleet.auth import Auth

    value = Auth(_engine(db)).create_token(name, role, created_by="cli")
    click.echo(value)
    click.echo(f"token {name} ({role}) created; it is shown only now, store it in a file only its user can read",
               err=True)


@token.command("revoke")
@click.argument("name")
@_db_option
def token_revoke(name: str, db: str) -> None:
    """Revoke a token at once: the next request with it is refused."""
    from fleet.auth import Auth

    Auth(_engine(db)).revoke_token(name)
    click.echo(f"token {name} revoked")


@fleet.command("migrate")
@_db_option
@click.option("--down-to", "down_to", metavar="REVISION", help="downgrade to this revision ('base' empties it)")
def migrate(db: str, down_to: str | None) -> None:
    """Bring the database schema up to date (or down to a revision)."""
    from fleet import migrate as migrations
    from fleet.db import database_url

    url = database_url(db)
    if down_to:
        migrations.downgrade(url, down_to)
        click.echo(f"database downgraded to {down_to}")
    else:
        migrations.upgrade(url)
        click.echo("database schema is up to date")


@fleet.command("push")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--url", required=True, help="the fleet service, e.g. https://fleet.example:8443")
@click.option("--token-file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600))
@click.option("--ca", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="CA bundle that signed the service's TLS certificate")
def push(files: tuple[Path, ...], url: str, token_file: Path, timeout: float, ca: Path | None) -> None:
    """Upload attestation files and print each verdict (exit 1 if any failed verification)."""
    import httpx

    from attest.limits import LIMITS

    secret = _read_secret(token_file, "token file", MAX_TOKEN_FILE_BYTES)
    bodies = [(f, _read_bounded(f, LIMITS.max_envelope_bytes)) for f in files]
    failed = 0
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    verify = ssl.create_default_context(cafile=str(ca)) if ca else True
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, verify=verify) as client:
        for path, body in bodies:
            try:
                response = client.post("/api/v1/attestations", content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise ServiceUnusable(f"fleet service {url} cannot be reached: {exc}") from None
            failed += not _report(path, response)
    if failed:
        raise VerificationFailed(f"{failed} of {len(files)} attestation(s) failed verification")


def _read_bounded(path: Path, limit: int) -> bytes:
    data = path.read_bytes()
    if len(data) > limit:
        raise FormatError(f"attestation {path}", f"is larger than {limit} bytes")
    return data


def _report(path: Path, response: Any) -> bool:
    """Print one verdict line (and its reasons); True if it passed."""
    try:
        doc = response.json()
    except (ValueError, json.JSONDecodeError):
        doc = None
    if response.status_code not in (200, 201) or not isinstance(doc, dict):
        error = doc.get("error") if isinstance(doc, dict) else None
        raise ServiceUnusable(f"{path}: the service answered {response.status_code}: {error or response.text[:200]}")
    passed = doc.get("passed") is True
    device = doc.get("device") or "unknown device"
    note = " (already stored)" if doc.get("duplicate") else ""
    click.echo(f"{path}: {'PASS' if passed else 'FAIL'} {device} {str(doc.get('id', ''))[:16]}{note}")
    for reason in doc.get("reasons") or []:
        click.echo(f"  {reason.get('code')}: {reason.get('detail')}")
    return passed


def register(group: click.Group) -> None:
    group.add_command(fleet)
