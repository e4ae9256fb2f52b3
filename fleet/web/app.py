"""The fleet service's ASGI application: routes, templates, static files and the error mapping.

``create_app`` wires a :class:`fleet.store.FleetStore` (verification and storage) to HTTP;
``app_from_env`` builds the same app from environment variables, so uvicorn can start one per worker
process (``flightseal fleet serve --workers N`` sets them). Every response carries headers that keep
the pages offline-only and unframeable (a strict Content-Security-Policy: nothing but this origin).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import jinja2
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.auth import SESSION_TTL, Auth
from fleet.config import FleetConfig
from fleet.store import FleetStore
from fleet.web import routes_api, routes_pages, views
from fleet.web.guard import Denied, Services
from fleet.web.limits import BodyTooLarge, RateLimit, RateLimiter

PACKAGE = Path(__file__).resolve().parent.parent
ENV_DB = "FLIGHTSEAL_FLEET_DB"
ENV_TRUST = "FLIGHTSEAL_FLEET_TRUST"
ENV_STALE_DAYS = "FLIGHTSEAL_FLEET_STALE_DAYS"
ENV_INTAKE_RATE = "FLIGHTSEAL_FLEET_INTAKE_RATE"
ENV_ALLOW_SOFTWARE_KEYS = "FLIGHTSEAL_FLEET_ALLOW_SOFTWARE_KEYS"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; form-action 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


INTAKE_LIMIT = RateLimit(rate=200.0, burst=400)  # per client: a CI job pushing a batch, not a flood
LOGIN_LIMIT = RateLimit(rate=1.0, burst=10)  # per client: password guessing at one try a second


def create_app(store: FleetStore, *, engine: Engine, intake_limit: RateLimit = INTAKE_LIMIT,
               login_limit: RateLimit = LOGIN_LIMIT, session_ttl: timedelta = SESSION_TTL) -> Starlette:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    templates = Jinja2Templates(env=env)
    views.install_filters(env)
    services = Services(store, Auth(engine, session_ttl=session_ttl), templates, RateLimiter(intake_limit),
                        RateLimiter(login_limit))
    app = Starlette(
        routes=[*routes_api.ROUTES, *routes_pages.ROUTES,
                Mount("/static", app=StaticFiles(directory=PACKAGE / "static"), name="static")],
        exception_handlers={Denied: _denied, BodyTooLarge: _too_large},  # type: ignore[dict-item]
    )
    app.state.services = services
    app.add_middleware(SecurityHeaders)
    return app


def app_from_env() -> Starlette:
    """The app for one uvicorn worker: the database URL and trust directory come from the environment."""
    from fleet.db import make_engine

    url, trust = os.environ.get(ENV_DB), os.environ.get(ENV_TRUST)
    if not url or not trust:
        raise RuntimeError(f"set {ENV_DB} and {ENV_TRUST} (flightseal fleet serve does)")
    engine = make_engine(url)
    stale = timedelta(days=float(os.environ.get(ENV_STALE_DAYS, "7")))
    rate = float(os.environ.get(ENV_INTAKE_RATE, str(INTAKE_LIMIT.rate)))
    config = FleetConfig(stale_after=stale, allow_software_keys=os.environ.get(ENV_ALLOW_SOFTWARE_KEYS) == "1")
    return create_app(FleetStore(engine, Path(trust), stale_after=stale, config=config), engine=engine,
                      intake_limit=RateLimit(rate=rate, burst=max(1, int(2 * rate))))


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _denied(request: Request, exc: Denied) -> Response:
    if _is_api(request):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
    if exc.status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return error_page(request, exc.status, exc.message)


async def _too_large(request: Request, exc: BodyTooLarge) -> Response:
    message = f"request body too large: the limit is {exc.limit} bytes"
    if _is_api(request):
        return JSONResponse({"error": message}, status_code=413)
    return error_page(request, 413, message)


def error_page(request: Request, status: int, message: str) -> Response:
    titles = {400: "Bad request", 403: "Forbidden", 404: "Not found", 413: "Too large", 429: "Too many requests"}
    services: Services = request.app.state.services
    return services.templates.TemplateResponse(
        request, "error.html", {"me": None, "status": status, "title": titles.get(status, "Error"),
                                "message": message}, status_code=status)


class SecurityHeaders:
    """Adds the security headers to every response (pure ASGI: no buffering of bodies). A header the route
    set itself is kept (the bill report sends a stricter Content-Security-Policy with its style's hash)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in SECURITY_HEADERS if h[0] not in own)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
