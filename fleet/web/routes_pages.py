"""The pages a security officer works in: the fleet overview, one airframe, search, and revocation.

Every page needs a logged-in viewer; revoking needs an operator and the session's CSRF token. The
pages only read the store's views (:mod:`fleet.store`) and render them; they decide nothing.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from attest.bom import Bill
from attest.models import Kind
from fleet.auth import Role
from fleet.store import DeviceSummary, State, UnknownDeviceError
from fleet.web import routes_admin
from fleet.web.guard import Denied, check_csrf, require, require_async, services
from fleet.web.queries import reason_codes
from fleet.web.routes_admin import form, render
from fleet.web.routes_api import MAX_DEVICE_ID_CHARS, device_id
from fleet.web.views import RED_STATES

HISTORY_PAGE = 25
LIST_MAX = 100
SEARCH_MAX = 200
MAX_REASON_CHARS = 1000


def overview(request: Request) -> Response:
    """Counts by state, then the red airframes and the stale ones, each list cut at LIST_MAX (the tiles
    link to the full lists): a page for 10,000 airframes stays one screen and one fast render."""
    who = require(request, Role.VIEWER)
    store = services(request).store
    view = store.overview()
    failing: list[DeviceSummary] = []
    for state in (State.NEVER_PASSED, State.DRIFTED, State.FAILING):
        if view.counts[state] and len(failing) < LIST_MAX:
            failing += store.search(f"state:{state.value}", LIST_MAX - len(failing))
    stale = view.stale[:LIST_MAX]
    return render(request, "overview.html", who, view=view, failing=failing, stale=stale,
                  failing_total=sum(view.counts[s] for s in RED_STATES),
                  codes=reason_codes(store, [d.device_id for d in failing]),
                  order=[State.PASSING, State.FAILING, State.DRIFTED, State.NEVER_PASSED, State.STALE, State.REVOKED])


def device(request: Request) -> Response:
    who = require(request, Role.VIEWER)
    ident = device_id(request.path_params["device_id"], "airframe id")
    store = services(request).store
    view = store.device(ident)
    if view is None:
        raise Denied(404, f"no airframe {ident!r} has attested to this service")
    before = request.query_params.get("before")
    if before is not None and (len(before) != 64 or not all(c in "0123456789abcdef" for c in before)):
        raise Denied(400, "before must be an attestation id (64 lowercase hex digits)")
    rows = store.history(ident, limit=HISTORY_PAGE + 1, before=before)
    parts_seen = [m for m in view.measurements if m.kind is Kind.COMPONENT]
    return render(request, "device.html", who, d=view, history=rows[:HISTORY_PAGE],
                  next_before=rows[HISTORY_PAGE - 1].id if len(rows) > HISTORY_PAGE else None,
                  paged=before is not None, parts_seen=parts_seen, notice=request.query_params.get("done"),
                  can_revoke=who.can(Role.OPERATOR))


async def revoke(request: Request) -> Response:
    who = await require_async(request, Role.OPERATOR)
    fields = await form(request)
    check_csrf(who, fields.get("csrf"))
    ident = device_id(request.path_params["device_id"], "airframe id")
    reason = fields.get("reason", "").strip()
    if not reason or len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        raise Denied(400, f"give a reason for the revocation (1 to {MAX_REASON_CHARS} printable characters)")
    try:
        await run_in_threadpool(services(request).store.revoke, ident, actor=who.name, reason=reason)
    except UnknownDeviceError as exc:
        raise Denied(404, str(exc)) from None
    return RedirectResponse(f"/devices/{quote(ident)}?done=revoked", status_code=303)


def _bill(request: Request) -> Bill:
    """The bill of the airframe's newest stored attestation, re-verified against the service's trust directory
    (issue 15): the same bill `flightseal report` writes, so a buyer and the fleet read one document."""
    from report.evidence import vet_with_state
    from truststore.trustdir import TrustDir

    require(request, Role.VIEWER)
    ident = device_id(request.path_params["device_id"], "airframe id")
    store = services(request).store
    view = store.device(ident)
    envelope = store.raw_envelope(view.current_attestation_id) if view and view.current_attestation_id else None
    if envelope is None:
        raise Denied(404, f"no airframe {ident!r} has attested to this service")
    snap = store.trust.get()
    vetting = vet_with_state(TrustDir(store.trust.path), snap.state, envelope, nonce=None,
                             max_age=store.config.max_age, allow_software_keys=store.config.allow_software_keys,
                             manifest_bytes=snap.manifest_bytes)
    if vetting.bill is None:
        raise Denied(409, f"the newest attestation of {ident!r} matches no enrolled device key any more")
    return vetting.bill


def bill_html(request: Request) -> Response:
    from report.html import CONTENT_SECURITY_POLICY, to_html

    # its own, stricter policy: nothing loads, only its inline stylesheet (by hash) applies
    return HTMLResponse(to_html(_bill(request)), headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


def bill_cyclonedx(request: Request) -> Response:
    from report.cyclonedx import to_cyclonedx

    return Response(to_cyclonedx(_bill(request)), media_type="application/vnd.cyclonedx+json; version=1.6")


def search(request: Request) -> Response:
    who = require(request, Role.VIEWER)
    query = request.query_params.get("q", "").strip()
    if len(query) > MAX_DEVICE_ID_CHARS:
        raise Denied(400, f"the search is longer than {MAX_DEVICE_ID_CHARS} characters")
    store = services(request).store
    found = store.search(query, SEARCH_MAX) if query else []
    return render(request, "search.html", who, query=query, found=found,
                  codes=reason_codes(store, [d.device_id for d in found if d.state in RED_STATES]))


ROUTES = [
    Route("/", overview, methods=["GET"]),
    Route("/search", search, methods=["GET"]),
    Route("/devices/{device_id:path}/revoke", revoke, methods=["POST"]),
    Route("/devices/{device_id:path}/report.html", bill_html, methods=["GET"]),
    Route("/devices/{device_id:path}/bom.cdx.json", bill_cyclonedx, methods=["GET"]),
    Route("/devices/{device_id:path}", device, methods=["GET"]),
    *routes_admin.ROUTES,
]
