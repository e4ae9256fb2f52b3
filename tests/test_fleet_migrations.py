"""The fleet schema's migrations, on SQLite and on a real PostgreSQL: up, down, up again; the
migrated schema is exactly the models'; they run from the package, with no alembic.ini around."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from fleet import migrate
from fleet.db import Base, database_url, make_engine
from tests.fleet_fixtures import ROOT, fresh_url
from tests.pgserver import PgServer

pytest_plugins = ["tests.fleet_fixtures"]

TABLES = {"users", "api_tokens", "web_sessions", "devices", "attestations", "nonces", "events", "delivery_attempts",
          "audit_log"}


def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return database_url(str(tmp_path / "empty.db"))
    pg: PgServer = request.getfixturevalue("pg_server")
    return database_url(pg.create_database(f"empty_{uuid.uuid4().hex[:16]}"))


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_run_up_down_and_up_again(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = empty_url(backend, tmp_path, request)
    migrate.upgrade(url)
    assert tables(url) == TABLES
    migrate.upgrade(url)  # already at head: nothing to do
    migrate.downgrade(url, "base")
    assert tables(url) == set()
    migrate.upgrade(url)
    assert tables(url) == TABLES
    engine = make_engine(url)
    try:
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()


def test_the_migrated_schema_is_exactly_the_models(backend: str, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    engine = make_engine(fresh_url(backend, tmp_path, request))
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_migrations_run_from_any_directory_without_an_ini_file(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    code = f"from fleet import migrate; migrate.upgrade({database_url(str(db))!r})"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=60, capture_output=True,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert not (tmp_path / "alembic.ini").exists()
    assert tables(database_url(str(db))) == TABLES


def test_database_urls() -> None:
    assert database_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("fleet.db").startswith("sqlite:////")
    with pytest.raises(Exception, match="not a supported database"):
        database_url("mysql://u@h/db")
