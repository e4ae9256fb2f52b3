"""Alembic's environment: run the migrations on the connection :mod:`fleet.migrate` hands in.

Only "online" mode: the fleet never emits SQL scripts for someone else to run; an operator runs
``flightseal fleet migrate`` (or the service at start) against the database itself.
"""

from __future__ import annotations

from alembic import context

from fleet import models  # noqa: F401  (registers the tables on Base.metadata)
from fleet.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
