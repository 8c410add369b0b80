"""Alembic environment: runs the revisions on the connection ``Database.migrate`` passes in,
or on ``sqlalchemy.url`` when run from the alembic command line."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from sdserve.service.tables import metadata


def _run(connection: Connection) -> None:
    # Batch mode lets later revisions alter SQLite tables (it copies and renames them).
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)


# Alembic executes this file to migrate; nothing else imports it.
run_migrations()
