"""Alembic migrations of the job database (applied on start by ``Database.migrate``)."""
