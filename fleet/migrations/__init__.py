"""Alembic migrations of the fleet database, run through :mod:`fleet.migrate` (no alembic.ini)."""
