"""Who may do what on the fleet service: operators' passwords and sessions, API tokens, roles.

The rules, in the order a request meets them:

* **Secrets are never stored.** A password is kept as an argon2id hash (memory-hard, so a stolen
  database is slow to crack); a session id and an API token are random 32-byte values of which only
  the SHA-256 is stored, so a copy of the database opens no session and authenticates no agent.
* **Sessions expire** (``session_ttl``) and are deleted on log-out; the cookie is HttpOnly and
  SameSite=Strict, and Secure whenever the service is reached over TLS.
* **Every POST form carries the session's CSRF token**, compared in constant time.
* **Roles are ordered** viewer < operator < admin for people. A token has the role it was created
  with; the ``agent`` role may only fetch nonces and push attestations, never read fleet data.
* **A revoked token is refused** at once: the check reads the row on every request.

Nothing here knows about HTTP: ``fleet.web`` maps a missing or failed check to 401/403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from attest.errors import FormatError
from fleet import audit
from fleet.db import WRITE
from fleet.models import ApiToken, User, WebSession

SESSION_TTL = timedelta(hours=8)
MAX_NAME_CHARS = 64
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024  # argon2 would hash more, but nobody types it and it bounds the work per attempt
# argon2id with RFC 9106's second recommended profile (64 MiB, 3 passes): memory-hard, ~50 ms here.
_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16, type=Type.ID)
# Compared against when a user name is unknown, so a login takes as long whether or not the name exists.
_DUMMY_HASH = _HASHER.hash("flightseal-no-such-user")


class Role(IntEnum):
    """What a principal may do; a higher value includes every lower one, except that ``AGENT`` reads nothing."""

    AGENT = 0
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str, allowed: frozenset[str]) -> Role:
        if name not in allowed:
            raise FormatError("role", f"{name!r} is not one of {', '.join(sorted(allowed))}")
        return cls[name.upper()]


USER_ROLES = frozenset({"viewer", "operator", "admin"})
TOKEN_ROLES = frozenset({"agent", "operator", "admin"})


class AuthError(FormatError):
    """A user or token could not be created or changed (a name taken, a token unknown): a usage error."""

    def __init__(self, detail: str) -> None:
        super().__init__("fleet", detail)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a logged-in person (``csrf`` set) or an API token (``csrf`` None)."""

    name: str
    role: Role
    csrf: str | None = None

    @property
    def via_token(self) -> bool:
        return self.csrf is None

    def can(self, needed: Role) -> bool:
        """An agent token may only do agent things; everyone else by rank."""
        if needed is Role.AGENT:
            return True
        return self.role is not Role.AGENT and self.role >= needed


@dataclass(frozen=True)
class TokenInfo:
    name: str
    role: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: str
    created_at: datetime


def hash_password(password: str) -> str:
    check_password(password)
    return _HASHER.hash(password)


def check_password(password: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise FormatError("password", f"must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")


def check_name(name: str, what: str) -> str:
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable() or name != name.strip():
        raise FormatError(what, f"must be 1 to {MAX_NAME_CHARS} printable characters without surrounding spaces")
    return name


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


class Auth:
    """Users, sessions and tokens in the service's database (tables of ``fleet.models``)."""

    def __init__(self, engine: Engine, *, session_ttl: timedelta = SESSION_TTL,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**WRITE)  # SQLite: take the write lock when the transaction begins
        self._ttl = session_ttl
        self._clock = clock

    # -- people ---------------------------------------------------------------------------------------

    @property
    def ttl(self) -> timedelta:
        return self._ttl

    def add_user(self, name: str, role: str, password: str, *, actor: str = "cli") -> None:
        """Add an operator, and record who did in the audit trail (in the same transaction)."""
        Role.parse(role, USER_ROLES)
        user = User(name=check_name(name, "user name"), role=role, password_hash=hash_password(password),
                    created_at=self._clock())
        try:
            with Session(self._writer) as db, db.begin():
                db.add(user)
                db.flush()
                audit.append(db.connection(), at=self._clock(), actor=actor, action="user.add", subject=name,
                             detail={"role": role})
        except IntegrityError:
            raise AuthError(f"user {name!r} already exists") from None

    def users(self) -> list[UserInfo]:
        with Session(self._engine) as db:
            rows = db.scalars(select(User).order_by(User.name)).all()
            return [UserInfo(u.name, u.role, u.created_at) for u in rows]

    def login(self, name: str, password: str) -> tuple[str, Principal] | None:
        """A new session's id (for the cookie) and who it is, or None for a wrong name or password.
        Both outcomes go to the audit trail (the web layer rate-limits attempts, which bounds it).

        The hash is checked outside any transaction: argon2 takes tens of milliseconds and must not
        hold SQLite's write lock meanwhile."""
        if len(password) > MAX_PASSWORD_CHARS or len(name) > MAX_NAME_CHARS:
            return None
        with Session(self._engine) as db:
            user = db.scalars(select(User).where(User.name == name)).first()
            found = None if user is None else (user.id, user.name, user.role, user.password_hash)
        if not _password_ok(found[3] if found else _DUMMY_HASH, password) or found is None:
            with Session(self._writer) as db, db.begin():
                audit.append(db.connection(), at=self._clock(), actor=name, action="login.failed", subject=name,
                             detail={"known_user": found is not None})
            return None
        user_id, user_name, role, stored = found
        rehashed = _HASHER.hash(password) if _HASHER.check_needs_rehash(stored) else None
        session_id, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock()
        with Session(self._writer) as db, db.begin():
            if rehashed:
                db.execute(update(User).where(User.id == user_id).values(password_hash=rehashed))
            db.execute(delete(WebSession).where(WebSession.expires_at <= now))
            db.add(WebSession(id_sha256=_sha256(session_id), user_id=user_id, csrf_token=csrf, created_at=now,
                              expires_at=now + self._ttl))
            db.flush()
            audit.append(db.connection(), at=now, actor=user_name, action="login", subject=user_name)
        return session_id, Principal(user_name, Role[role.upper()], csrf)

    def session(self, session_id: str | None) -> Principal | None:
        """Who holds this session cookie, or None if it is unknown or expired."""
        if not session_id or len(session_id) > 128:
            return None
        with Session(self._engine) as db:
            row = db.get(WebSession, _sha256(session_id))
            if row is None or row.expires_at <= self._clock():
                return None
            user = db.get(User, row.user_id)
            return None if user is None else Principal(user.name, Role[user.role.upper()], row.csrf_token)

    def logout(self, session_id: str | None) -> None:
        if session_id:
            with Session(self._writer) as db, db.begin():
                db.execute(delete(WebSession).where(WebSession.id_sha256 == _sha256(session_id)))

    def purge_sessions(self) -> int:
        """Delete expired sessions (called now and then; an expired one is refused either way)."""
        with Session(self._writer) as db, db.begin():
            result = db.execute(delete(WebSession).where(WebSession.expires_at <= self._clock()))
            return int(getattr(result, "rowcount", 0) or 0)

    # -- tokens ---------------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, created_by: str) -> str:
        """A new token; the caller shows it once, as only its hash is kept."""
        Role.parse(role, TOKEN_ROLES)
        token = "fst_" + secrets.token_urlsafe(32)
        row = ApiToken(name=check_name(name, "token name"), token_sha256=_sha256(token), role=role,
                       created_by=created_by, created_at=self._clock())
        try:
            with Session(self._writer) as db, db.begin():
                if db.scalars(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))).first():
                    raise AuthError(f"a token named {name!r} is already in use; revoke it first or pick another name")
                db.add(row)
                db.flush()
                audit.append(db.connection(), at=self._clock(), actor=created_by, action="token.create",
                             subject=name, detail={"role": role})
        except IntegrityError:
            raise AuthError(f"token {name!r} could not be stored (name or value taken)") from None
        return token

    def revoke_token(self, name: str, *, actor: str = "cli") -> None:
        with Session(self._writer) as db, db.begin():
            rows = db.scalars(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))).all()
            if not rows:
                raise AuthError(f"no active token named {name!r}")
            for row in rows:
                row.revoked_at = self._clock()
            audit.append(db.connection(), at=self._clock(), actor=actor, action="token.revoke", subject=name,
                         detail={"count": len(rows)})

    def tokens(self) -> list[TokenInfo]:
        with Session(self._engine) as db:
            rows = db.scalars(select(ApiToken).order_by(ApiToken.created_at.desc())).all()
            return [TokenInfo(t.name, t.role, t.created_by, t.created_at, t.last_used_at,
                              t.revoked_at) for t in rows]

    def token(self, bearer: str | None) -> Principal | None:
        """The principal of a bearer token, or None if unknown or revoked; notes when it was used
        (at most once a minute, so a busy agent does not take the write lock on every push)."""
        if not bearer or len(bearer) > 128:
            return None
        now = self._clock()
        with Session(self._engine) as db:
            row = db.scalars(select(ApiToken).where(ApiToken.token_sha256 == _sha256(bearer))).first()
            if row is None or row.revoked_at is not None:
                return None
            who = Principal(f"token:{row.name}", Role[row.role.upper()])
            token_id, last = row.id, row.last_used_at
        if last is None or now - last > timedelta(minutes=1):
            with Session(self._writer) as db, db.begin():
                db.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
        return who


def _password_ok(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
