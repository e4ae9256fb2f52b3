"""The database connection: SQLite by default, PostgreSQL for scale, one SQLAlchemy engine for either.

Why the SQLite settings: WAL lets page views read while an ingest writes; ``synchronous=FULL``
makes every acknowledged ingest survive a crash or power loss (on SQLite each ingest commits alone;
on PostgreSQL concurrent ingests may share a commit, and none is acknowledged before it, see
:mod:`fleet.store`);
a busy timeout makes a second process wait for the write lock instead of failing; foreign keys are
off by default in SQLite and on here. Write transactions begin ``IMMEDIATE`` (take the write lock
up front): a deferred transaction that read first and writes second fails at once with
SQLITE_BUSY when another process wrote in between, and the busy timeout cannot help it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Connection, DateTime, Engine, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from attest.errors import FormatError

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections kept open per process: up to as many as requests it serves at once (page views hold
# one each; ingests share theirs, see fleet.store's group commit). Connections beyond the pool ("overflow") are
# opened and closed per use, and each costs PostgreSQL a backend start: under load that cost more
# server CPU than the ingests themselves. The pool only grows to the concurrency actually seen.
PG_POOL_SIZE = 24
PG_MAX_OVERFLOW = 16
WRITE = {"fleet_write": True}  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


class Base(DeclarativeBase):
    """Every fleet table; ``Base.metadata`` is what the migrations create."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps.

    SQLite has no time zones: values are stored as naive UTC text (so they sort and compare);
    PostgreSQL keeps ``timestamptz``. Either way the caller gets an aware UTC datetime back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the fleet database; pass an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def database_url(db: str) -> str:
    """``--db`` as given on the command line to a SQLAlchemy URL.

    A plain path is a SQLite file (made absolute, so a worker started elsewhere opens the same
    file); ``postgresql://`` and ``postgres://`` use psycopg 3; an explicit ``sqlite:///`` or
    ``postgresql+psycopg://`` URL passes through.
    """
    if not db:
        raise FormatError("--db", "is empty; give a file path or a postgresql:// URL")
    for prefix in ("postgresql://", "postgres://"):
        if db.startswith(prefix):
            return "postgresql+psycopg://" + db[len(prefix):]
    if db.startswith(("postgresql+psycopg://", "sqlite://")):
        return db
    if "://" in db:
        raise FormatError("--db", f"{db.split('://')[0]!r} is not a supported database; use a SQLite file path "
                          "or a postgresql:// URL")
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (anything :func:`database_url` takes), set up for durable concurrent use."""
    url = database_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    # no pre-ping: it costs a round trip per request; a dropped connection fails one request and is replaced
    engine = create_engine(url, pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW, pool_recycle=3600)
    # an executemany INSERT (a group-committed batch of attestations or events) as one multi-row
    # INSERT statement, as SQLAlchemy does for psycopg2, instead of one pipelined INSERT per row
    engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                       f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("fleet_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def is_postgres(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


def insert_ignore(conn: Connection, table: sqlalchemy.Table, values: dict[str, Any]) -> None:
    """Insert a row unless one with the same key exists (both dialects spell it differently)."""
    if is_postgres(conn):
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())
