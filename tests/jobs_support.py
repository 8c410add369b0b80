"""Helpers for the job-service tests: a full service (SQLite + local outputs under a temp
dir) over the session's real engine, and polling a job to its end."""

from __future__ import annotations

import os
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Tiny, fast requests: 64 px, 2 steps on the tiny SD 1.5.
FAST: dict[str, Any] = {"model": "sd15", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}


def job_settings(settings, data_dir: Path, **overrides):  # type: ignore[no-untyped-def]
    """The session settings with another data dir and ``overrides``, validated."""
    return settings.model_validate({**settings.model_dump(), "data_dir": data_dir, **overrides})


def fresh_database_url() -> str | None:
    """With SDSERVE_TEST_DATABASE_URL set (e.g. postgresql+psycopg://postgres@/postgres?host=/tmp),
    a new, empty database on that server for one test; otherwise None (SQLite in the data dir)."""
    base = os.environ.get("SDSERVE_TEST_DATABASE_URL")
    if not base:
        return None
    from sqlalchemy import create_engine, make_url

    name = "sdserve_test_" + secrets.token_hex(6)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def make_service(settings, engine, data_dir: Path, *, artifacts=None, options=None, **overrides):  # type: ignore[no-untyped-def]
    """Settings with ``overrides`` and a service built from them by the composition root;
    ``artifacts`` replaces the configured output store, ``options`` overrides ServiceOptions fields."""
    from sdserve.compose import build_service

    if "database_url" not in overrides and (url := fresh_database_url()):
        overrides["database_url"] = url
    s = job_settings(settings, data_dir, **overrides)
    return s, build_service(s, engine, artifacts=artifacts, **(options or {}))


@contextmanager
def job_client(settings, engine, data_dir: Path, **overrides):  # type: ignore[no-untyped-def]
    """A TestClient over an app whose service has a real SQLite store under ``data_dir``."""
    from fastapi.testclient import TestClient

    from sdserve.api.app import build_app

    s, service = make_service(settings, engine, data_dir, **overrides)
    with TestClient(build_app(s, service)) as c:
        c.service = service  # type: ignore[attr-defined]
        yield c


def wait_done(client, job_id: str, timeout: float = 120, headers: dict[str, str] | None = None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get(f"/v1/jobs/{job_id}", headers=headers or {})
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")
