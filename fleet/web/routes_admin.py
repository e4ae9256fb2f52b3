"""Pages for people: log-in and log-out, and the admin's users and tokens.

Log-in is a form like every other: its CSRF token is a random value set in a short-lived cookie
and echoed in the form (there is no session yet to hold it). A wrong name or password gets the same
answer, after the same argon2 work; attempts are rate-limited per client address.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from attest.errors import FlightSealError
from fleet.auth import TOKEN_ROLES, USER_ROLES, Principal, Role, csrf_matches
from fleet.web.guard import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Denied, check_csrf, require, require_async, services
from fleet.web.limits import MAX_FORM_BYTES, client_key, read_body

AUDIT_PAGE = 50


async def form(request: Request) -> dict[str, str]:
    """The urlencoded form fields, the body bounded first (a multipart upload is not accepted here)."""
    from urllib.parse import parse_qsl

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Denied(400, "send the form as application/x-www-form-urlencoded")
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=32))
    except (UnicodeDecodeError, ValueError):
        raise Denied(400, "the form could not be read") from None


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def render(request: Request, name: str, me: Principal | None, status: int = 200, **context: Any) -> Response:
    return services(request).templates.TemplateResponse(request, name, {"me": me, **context}, status_code=status)


def login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", None, status, csrf=token, error=error,
                      next=_safe_next(request.query_params.get("next")))
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=900, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/login")
    return response


async def login(request: Request) -> Response:
    if request.method == "GET":
        return login_page(request)
    wait = services(request).login_limiter.check(client_key(request))
    if wait:
        return login_page(request, f"too many log-in attempts: wait {wait} s", 429)
    fields = await form(request)
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), fields.get("csrf")):
        return login_page(request, "the form expired or was not sent from this page; try again", 403)
    found = await run_in_threadpool(services(request).auth.login, fields.get("name", ""), fields.get("password", ""))
    if found is None:
        return login_page(request, "wrong user name or password", 401)
    session_id, _who = found
    response = RedirectResponse(_safe_next(fields.get("next")), status_code=303)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=int(services(request).auth.ttl.total_seconds()),
                        httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


async def logout(request: Request) -> Response:
    who = await require_async(request, Role.VIEWER)
    check_csrf(who, (await form(request)).get("csrf"))
    await run_in_threadpool(services(request).auth.logout, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def users_page(request: Request, who: Principal | None = None, notice: str | None = None,
               error: str | None = None, status: int = 200) -> Response:
    who = who or require(request, Role.ADMIN)
    return render(request, "admin_users.html", who, status, users=services(request).auth.users(),
                  roles=sorted(USER_ROLES), notice=notice, error=error)


async def users_post(request: Request) -> Response:
    who = await require_async(request, Role.ADMIN)
    fields = await form(request)
    check_csrf(who, fields.get("csrf"))
    name, role = fields.get("name", ""), fields.get("role", "")
    try:
        await run_in_threadpool(services(request).auth.add_user, name, role, fields.get("password", ""),
                                actor=who.name)
    except FlightSealError as exc:
        return await run_in_threadpool(users_page, request, who, None, str(exc), 400)
    return await run_in_threadpool(users_page, request, who, f"user {name} added with role {role}")


def tokens_page(request: Request, who: Principal | None = None, created: str | None = None,
                notice: str | None = None, error: str | None = None, status: int = 200) -> Response:
    who = who or require(request, Role.ADMIN)
    return render(request, "admin_tokens.html", who, status, tokens=services(request).auth.tokens(),
                  roles=sorted(TOKEN_ROLES), created=created, notice=notice, error=error)


async def tokens_post(request: Request) -> Response:
    who = await require_async(request, Role.ADMIN)
    fields = await form(request)
    check_csrf(who, fields.get("csrf"))
    auth, name = services(request).auth, fields.get("name", "")
    try:
        if fields.get("action") == "revoke":
            await run_in_threadpool(auth.revoke_token, name, actor=who.name)
            return await run_in_threadpool(tokens_page, request, who, None, f"token {name} revoked")
        value = await run_in_threadpool(auth.create_token, name, fields.get("role", ""), who.name)
    except FlightSealError as exc:
        return await run_in_threadpool(tokens_page, request, who, None, None, str(exc), 400)
    return await run_in_threadpool(tokens_page, request, who, value, f"token {name} created")


def audit_page(request: Request) -> Response:
    """The service's own audit trail, newest first, with whether its hash chain is intact."""
    who = require(request, Role.ADMIN)
    store = services(request).store
    raw = request.query_params.get("before")
    if raw is not None and (not raw.isdigit() or len(raw) > 18):
        raise Denied(400, "before must be an audit record number")
    entries = store.audit_log(limit=AUDIT_PAGE + 1, before_seq=int(raw) if raw else None)
    try:
        store.verify_audit_chain()
        broken = None
    except FlightSealError as exc:
        broken = str(exc)
    return render(request, "admin_audit.html", who, entries=entries[:AUDIT_PAGE], broken=broken,
                  older=entries[AUDIT_PAGE - 1].seq if len(entries) > AUDIT_PAGE else None)


ROUTES = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/admin/users", users_page, methods=["GET"]),
    Route("/admin/users", users_post, methods=["POST"]),
    Route("/admin/tokens", tokens_page, methods=["GET"]),
    Route("/admin/tokens", tokens_post, methods=["POST"]),
    Route("/admin/audit", audit_page, methods=["GET"]),
]
