"""Who is asking, and whether they may: the one place a route's role requirement is enforced.

A request is authenticated by a bearer token (``Authorization: Bearer ...``, agents and CI) or by
the session cookie (people in a browser). A failed check raises :class:`Denied`; the app turns it
into JSON for ``/api/`` and into a redirect to the log-in page or an error page for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from fleet.auth import Auth, Principal, Role, csrf_matches
from fleet.store import FleetStore
from fleet.web.limits import RateLimiter

SESSION_COOKIE = "fs_session"
LOGIN_CSRF_COOKIE = "fs_login_csrf"


class Denied(Exception):
    """The request may not go on: 401 (who are you?), 403 (not allowed), or another status with a reason."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds, sent as Retry-After (429)
        super().__init__(message)


@dataclass
class Services:
    """What every route needs, built once per process in ``create_app``."""

    store: FleetStore
    auth: Auth
    templates: Jinja2Templates
    intake_limiter: RateLimiter
    login_limiter: RateLimiter


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def identify(request: Request) -> Principal | None:
    """The token's principal if a bearer token was sent (even a bad one: no falling back to the cookie)."""
    auth = services(request).auth
    if request.headers.get("authorization") is not None:
        return auth.token(bearer(request))
    return auth.session(request.cookies.get(SESSION_COOKIE))


def require(request: Request, role: Role, *, tokens_only: bool = False) -> Principal:
    """The principal, if it has ``role``; else Denied(401) when nobody is logged in, Denied(403) when too weak."""
    if tokens_only and bearer(request) is None:
        raise Denied(401, "this endpoint needs an API token: send 'Authorization: Bearer <token>'")
    who = identify(request)
    if who is None:
        if request.headers.get("authorization") is not None:
            raise Denied(401, "the API token is unknown or revoked")
        raise Denied(401, "log in first")
    if not who.can(role):
        raise Denied(403, f"role {who.role.name.lower()} may not do this; it needs {role.name.lower()} or higher")
    return who


async def require_async(request: Request, role: Role, *, tokens_only: bool = False) -> Principal:
    return await run_in_threadpool(require, request, role, tokens_only=tokens_only)


def check_csrf(who: Principal, given: object) -> None:
    """A POST form must carry the session's CSRF token (tokens have no session and post no forms)."""
    if who.via_token or not csrf_matches(who.csrf, given if isinstance(given, str) else None):
        raise Denied(403, "the form's CSRF token is missing or wrong; reload the page and try again")
