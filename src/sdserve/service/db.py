"""Opening the job database: SQLite (WAL) under the data dir, or any SQLAlchemy URL
(PostgreSQL in production), with the Alembic migrations applied before first use."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import StaticPool

__all__ = ["Database", "sqlite_url", "MIGRATIONS_DIR"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Database:
    """A migrated database and a transaction helper the stores share.

    ``Database.memory()`` is a private in-memory database for embedding and for services
    built without a data dir; it lives as long as the object.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if url in ("sqlite://", "sqlite:///:memory:"):
            # One shared connection: every new connection to :memory: would be a new, empty database.
            self.engine: Engine = create_engine(url, poolclass=StaticPool,
                                                connect_args={"check_same_thread": False})
        elif self.is_sqlite:
            self.engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite has one writer; serialising this process's transactions avoids "database is
        # locked" retries between the event loop and worker threads. Other databases lock rows.
        self._lock: contextlib.AbstractContextManager[object] = (
            threading.RLock() if self.is_sqlite else contextlib.nullcontext()
        )
        self.migrate()

    @classmethod
    def memory(cls) -> Database:
        return cls("sqlite://")

    @classmethod
    def at(cls, data_dir: Path) -> Database:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(sqlite_url(data_dir / "sdserve.db"))

    @contextlib.contextmanager
    def tx(self) -> Iterator[Connection]:
        """One transaction: committed on success, rolled back on any exception."""
        with self._lock, self.engine.begin() as conn:
            yield conn

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (a no-op when it is already there)."""
        # Alembic narrates every plugin it sets up (on import) at INFO; a start needs none of it.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.tx() as conn:
            if conn.dialect.name == "postgresql":
                # Several servers starting at once (Ray API replicas) would race to create
                # the same tables; this lock, held to the end of the transaction (DDL is
                # transactional there), lets one migrate while the others wait, then no-op.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7310436)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def ping(self) -> bool:
        """Whether the database answers (for /readyz)."""
        from sqlalchemy import text

        try:
            with self.tx() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the writer; synchronous=NORMAL in WAL mode survives a
    # killed process (only power loss can drop the last commits).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
