"""Operators' and agents' credentials in the fleet database: what is stored, and what is refused."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from attest.errors import FormatError
from fleet import audit
from fleet.auth import Auth, AuthError, Principal, Role, csrf_matches
from fleet.db import database_url, make_engine
from fleet.migrate import upgrade
from fleet.models import ApiToken, User, WebSession

PASSWORD = "correct horse battery"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    url = database_url(str(tmp_path / "fleet.db"))
    upgrade(url)
    return make_engine(url)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_password_is_stored_as_an_argon2id_hash_never_in_clear(engine: Engine) -> None:
    Auth(engine).add_user("alice", "operator", PASSWORD)
    with Session(engine) as db:
        stored = db.scalars(select(User.password_hash)).one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert "m=65536" in stored  # memory-hard: 64 MiB per guess


def test_login_with_right_password_gives_a_session_whose_id_is_stored_only_hashed(engine: Engine) -> None:
    auth = Auth(engine)
    auth.add_user("alice", "viewer", PASSWORD)
    found = auth.login("alice", PASSWORD)
    assert found is not None
    session_id, who = found
    assert who == Principal("alice", Role.VIEWER, who.csrf) and who.csrf
    with Session(engine) as db:
        (row,) = db.scalars(select(WebSession)).all()
    assert row.id_sha256 == hashlib.sha256(session_id.encode()).hexdigest() != session_id
    assert auth.session(session_id) == who


@pytest.mark.parametrize(("name", "password"), [("alice", "wrong password!"), ("nobody", PASSWORD),
                                                ("nobody", "flightseal-no-such-user"), ("alice", "")])
def test_wrong_name_or_password_is_refused(engine: Engine, name: str, password: str) -> None:
    auth = Auth(engine)
    auth.add_user("alice", "admin", PASSWORD)
    assert auth.login(name, password) is None


def test_session_expires_and_logout_ends_it(engine: Engine) -> None:
    clock = Clock()
    auth = Auth(engine, session_ttl=timedelta(hours=1), clock=clock)
    auth.add_user("alice", "viewer", PASSWORD)
    first = auth.login("alice", PASSWORD)
    second = auth.login("alice", PASSWORD)
    assert first and second
    clock.now += timedelta(minutes=59)
    assert auth.session(first[0]) is not None
    auth.logout(second[0])
    assert auth.session(second[0]) is None
    clock.now += timedelta(minutes=2)
    assert auth.session(first[0]) is None
    assert auth.purge_sessions() == 1
    assert auth.login("alice", PASSWORD) is not None


def test_unknown_or_forged_session_id_is_refused(engine: Engine) -> None:
    auth = Auth(engine)
    auth.add_user("alice", "viewer", PASSWORD)
    found = auth.login("alice", PASSWORD)
    assert found
    with Session(engine) as db:
        stored_hash = db.scalars(select(WebSession.id_sha256)).one()
    assert auth.session(stored_hash) is None  # a stolen database row opens no session
    assert auth.session("x" * 500) is None
    assert auth.session(None) is None


def test_token_is_shown_once_stored_hashed_and_revocation_is_immediate(engine: Engine) -> None:
    auth = Auth(engine)
    token = auth.create_token("ci", "operator", created_by="alice")
    with Session(engine) as db:
        row = db.scalars(select(ApiToken)).one()
    assert row.token_sha256 == hashlib.sha256(token.encode()).hexdigest() and token not in row.token_sha256
    assert auth.token(token) == Principal("token:ci", Role.OPERATOR)
    assert auth.token(row.token_sha256) is None
    auth.revoke_token("ci", actor="alice")
    assert auth.token(token) is None
    assert [t.revoked_at is not None for t in auth.tokens()] == [True]


def test_token_use_is_noted(engine: Engine) -> None:
    auth = Auth(engine)
    token = auth.create_token("agent-1", "agent", created_by="cli")
    assert auth.tokens()[0].last_used_at is None
    auth.token(token)
    assert auth.tokens()[0].last_used_at is not None


def test_roles_are_ordered_and_agent_reads_nothing() -> None:
    agent, viewer, operator = (Principal("a", Role.AGENT), Principal("v", Role.VIEWER, "c"),
                               Principal("o", Role.OPERATOR, "c"))
    assert agent.can(Role.AGENT) and not agent.can(Role.VIEWER) and not agent.can(Role.OPERATOR)
    assert viewer.can(Role.VIEWER) and not viewer.can(Role.OPERATOR)
    assert operator.can(Role.VIEWER) and operator.can(Role.OPERATOR) and not operator.can(Role.ADMIN)


@pytest.mark.parametrize(("role", "password", "name"), [("superuser", PASSWORD, "bob"), ("agent", PASSWORD, "bob"),
                                                        ("viewer", "short", "bob"), ("viewer", PASSWORD, " bob"),
                                                        ("viewer", PASSWORD, "")])
def test_bad_user_input_is_refused_with_a_format_error(engine: Engine, role: str, password: str, name: str) -> None:
    with pytest.raises(FormatError):
        Auth(engine).add_user(name, role, password)


def test_duplicate_user_and_active_token_names_are_refused(engine: Engine) -> None:
    auth = Auth(engine)
    auth.add_user("alice", "viewer", PASSWORD)
    with pytest.raises(AuthError, match="already exists"):
        auth.add_user("alice", "admin", PASSWORD)
    auth.create_token("ci", "agent", created_by="cli")
    with pytest.raises(AuthError, match="already in use"):
        auth.create_token("ci", "admin", created_by="cli")
    with pytest.raises(AuthError, match="no active token"):
        auth.revoke_token("nope")


def test_operator_actions_and_log_ins_are_in_the_audit_trail(engine: Engine) -> None:
    auth = Auth(engine)
    auth.add_user("alice", "admin", PASSWORD, actor="cli")
    assert auth.login("alice", "not her password") is None
    assert auth.login("alice", PASSWORD) is not None
    auth.create_token("ci", "agent", created_by="alice")
    auth.revoke_token("ci", actor="alice")
    with engine.connect() as conn:
        assert audit.verify_chain(conn) == 5
        got = [(e.actor, e.action, e.subject) for e in audit.entries(conn)]
    assert got == [("alice", "token.revoke", "ci"), ("alice", "token.create", "ci"), ("alice", "login", "alice"),
                   ("alice", "login.failed", "alice"), ("cli", "user.add", "alice")]


def test_csrf_comparison_needs_both_values_equal() -> None:
    assert csrf_matches("abc", "abc")
    assert not csrf_matches("abc", "abd")
    assert not csrf_matches(None, None) and not csrf_matches("", "") and not csrf_matches("abc", None)
