"""The JSON API: nonces and intake for agents and CI, device reads for tools, and the health check.

The agent-side client is written against exactly these shapes (docs/fleet.md lists them). Each
intake request is checked in the order that costs least first: rate limit, token, size, JSON; only
then does the store verify the envelope. A failed verification is not an HTTP error: the attempt is
stored and answered 201 (200 for a duplicate) with ``passed: false`` and every reason.
"""

from __future__ import annotations

import json
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attest.errors import FlightSealError
from fleet.auth import Role
from fleet.intake import TrustUnavailableError
from fleet.revocation import MAX_REVOCATION_BYTES
from fleet.store import EnvelopeTooLargeError, UnknownDeviceError
from fleet.web import views
from fleet.web.guard import Denied, require, require_async, services
from fleet.web.limits import MAX_INTAKE_BYTES, MAX_JSON_BYTES, client_key, read_body

LOG = logging.getLogger(__name__)
MAX_DEVICE_ID_CHARS = 128
MAX_LIST = 500


def _rate_limit(request: Request) -> None:
    wait = services(request).intake_limiter.check(client_key(request))
    if wait:
        raise Denied(429, f"too many requests from this client: retry in {wait} s", retry_after=wait)


def _need_json(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Denied(400, f"Content-Type must be application/json, not {kind or 'missing'}")


def device_id(value: object, what: str = "device") -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_DEVICE_ID_CHARS or not value.isprintable():
        raise Denied(400, f"{what} must be a device id: 1 to {MAX_DEVICE_ID_CHARS} printable characters")
    return value


async def nonces(request: Request) -> Response:
    _rate_limit(request)
    await require_async(request, Role.AGENT, tokens_only=True)
    _need_json(request)
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Denied(400, "body is not JSON: send {\"device\": \"<id>\"}") from None
    if not isinstance(doc, dict) or set(doc) != {"device"}:
        raise Denied(400, "body must be exactly {\"device\": \"<id>\"}")
    device = device_id(doc["device"])
    try:
        nonce = await run_in_threadpool(services(request).store.issue_nonce, device)
    except UnknownDeviceError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse({"device": device, "nonce": nonce.value.hex(), "expires": views.rfc3339(nonce.expires_at)},
                        status_code=201)


async def attestations(request: Request) -> Response:
    _rate_limit(request)
    who = await require_async(request, Role.AGENT, tokens_only=True)
    _need_json(request)
    body = await read_body(request, MAX_INTAKE_BYTES)
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Denied(400, "body is not JSON: send the attestation envelope file as it is") from None
    try:
        result = await run_in_threadpool(services(request).store.ingest, body, source="api", actor=who.name)
    except EnvelopeTooLargeError as exc:
        return JSONResponse({"error": str(exc)}, status_code=413)
    except TrustUnavailableError:
        LOG.exception("intake refused: the trust directory is unusable")
        return JSONResponse({"error": "the service cannot verify right now (its trust directory is unusable); "
                                      "retry later"}, status_code=503, headers={"Retry-After": "60"})
    except FlightSealError as exc:
        return JSONResponse({"error": f"attestation refused: {exc}"}, status_code=400)
    return JSONResponse(views.ingest_json(result), status_code=200 if result.duplicate else 201)


async def revocations(request: Request) -> Response:
    """A revocation signed by the root's enrolment role (operator or admin token uploads it; audited)."""
    who = await require_async(request, Role.OPERATOR, tokens_only=True)
    _need_json(request)
    body = await read_body(request, MAX_REVOCATION_BYTES)
    try:
        done = await run_in_threadpool(services(request).store.revoke_signed, body, actor=who.name)
    except FlightSealError as exc:
        return JSONResponse({"error": f"revocation refused: {exc}"}, status_code=400)
    return JSONResponse({"device": done.device_id, "revoked": True, "reason": done.reason}, status_code=201)


def devices(request: Request) -> Response:
    require(request, Role.VIEWER)
    query = request.query_params.get("q", "")
    if len(query) > MAX_DEVICE_ID_CHARS:
        raise Denied(400, f"q is longer than {MAX_DEVICE_ID_CHARS} characters")
    limit = _int_param(request, "limit", 100, 1, MAX_LIST)
    found = services(request).store.search(query, limit)
    return JSONResponse({"devices": [views.summary_json(d) for d in found]})


def device(request: Request) -> Response:
    require(request, Role.VIEWER)
    ident = device_id(request.path_params["device_id"])
    view = services(request).store.device(ident)
    if view is None:
        return JSONResponse({"error": f"no device {ident!r}"}, status_code=404)
    return JSONResponse(views.device_json(view))


async def healthz(request: Request) -> Response:
    """Up and able to reach its database; says nothing about the fleet."""
    ok = await run_in_threadpool(services(request).store.ping)
    return JSONResponse({"status": "ok" if ok else "database unreachable"}, status_code=200 if ok else 503)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise Denied(400, f"{name} must be a whole number from {low} to {high}")
    return int(raw)


ROUTES = [
    Route("/api/v1/nonces", nonces, methods=["POST"]),
    Route("/api/v1/attestations", attestations, methods=["POST"]),
    Route("/api/v1/revocations", revocations, methods=["POST"]),
    Route("/api/v1/devices", devices, methods=["GET"]),
    Route("/api/v1/devices/{device_id:path}", device, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
