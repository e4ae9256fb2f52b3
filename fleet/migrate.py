"""Schema migrations from the installed package: no ``alembic.ini``, no working directory needed.

``upgrade(url)`` brings a database to the newest schema (a new SQLite file is created);
``downgrade(url, "base")`` undoes every revision. Both run in one transaction per call where the
database allows it (PostgreSQL and SQLite both have transactional DDL).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from fleet.db import make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _run(url_or_engine: str | Engine, action: str, revision: str) -> None:
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    cfg = _config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            if action == "upgrade":
                command.upgrade(cfg, revision)
            else:
                command.downgrade(cfg, revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """Migrate the database at ``url`` (a SQLAlchemy URL, see :func:`fleet.db.database_url`) up."""
    _run(url, "upgrade", revision)


def downgrade(url: str | Engine, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"``: an empty database)."""
    _run(url, "downgrade", revision)


def head() -> str:
    """The newest revision this package knows."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    if found is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return found


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
