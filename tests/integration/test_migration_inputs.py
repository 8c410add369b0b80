"""Migration 0005 (input images by role): a database written before it opens, and the jobs
queued in it run with the same pixels as the same request submitted afterwards."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
from alembic import command
from alembic.config import Config
from PIL import Image
from sqlalchemy import create_engine, text

from sdserve.engine.catalog import Catalog
from sdserve.engine.params import GenerationParams, input_images
from sdserve.engine.prepare import prepare
from sdserve.service.db import MIGRATIONS_DIR, sqlite_url
from tests.conftest import mask_bytes, png_bytes
from tests.jobs_support import job_client, wait_done


def _database_at_0004(path) -> None:  # type: ignore[no-untyped-def]
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = create_engine(sqlite_url(path))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    engine.dispose()


def _queue_the_old_way(path, job_id: str, p: GenerationParams) -> None:  # type: ignore[no-untyped-def]
    """A queued inpaint job as the code before 0005 stored it: one job_inputs row with an
    init_image and a mask_image column."""
    engine = create_engine(sqlite_url(path))
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO jobs (id, owner, status, priority, model, request, params, created_at, attempts, "
            "cancel_requested, credits) VALUES (:id, NULL, 'queued', 0, :model, '{}', :params, :now, 0, 0, 0)"),
            dict(id=job_id, model=p.model, params=p.model_dump_json(exclude={"inputs"}), now=time.time()))
        conn.execute(text("INSERT INTO job_inputs (job_id, init_image, mask_image) VALUES (:id, :init, :mask)"),
                     dict(id=job_id, init=p.init_image, mask=p.mask_image))
    engine.dispose()


def _pixels(client, job: dict) -> np.ndarray:  # type: ignore[no-untyped-def,type-arg]
    return np.asarray(Image.open(io.BytesIO(client.get(job["outputs"][0]["url"]).content)))


def test_jobs_queued_before_inputs_by_role_run_with_the_same_pixels(settings, engine, tmp_path):
    init, mask = png_bytes((64, 64), (30, 120, 200)), mask_bytes()
    request = GenerationParams(model="sd15", prompt="a lighthouse", width=64, height=64, steps=2, seed=5,
                               inputs=input_images(init=init, mask=mask))
    resolved = prepare(Catalog.builtin(), request)
    assert resolved.task == "inpaint"
    db = tmp_path / "sdserve.db"
    _database_at_0004(db)
    _queue_the_old_way(db, "job-from-before", resolved)
    with job_client(settings, engine, tmp_path) as c:  # opening it migrates to head
        old = wait_done(c, "job-from-before")
        assert old["status"] == "succeeded", old
        assert old["params"]["has_init_image"] and old["params"]["has_mask_image"]
        # Jobs stored before prompt syntax existed read their prompt as plain text.
        assert old["params"]["prompt_syntax"] == "plain"
        body = {"model": "sd15", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 5,
                "prompt_syntax": "plain",
                "image": base64.b64encode(init).decode(), "mask": base64.b64encode(mask).decode()}
        new = wait_done(c, c.post("/v1/jobs", json=body).json()["id"])
        assert new["status"] == "succeeded", new
        assert json.dumps(old["params"], sort_keys=True) == json.dumps(new["params"], sort_keys=True)
        assert np.array_equal(_pixels(c, old), _pixels(c, new))
    # Ended jobs keep no inputs, in the new table's shape.
    with create_engine(sqlite_url(db)).connect() as conn:
        cols = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(job_inputs)")]
        assert cols == ["job_id", "role", "position", "data"]
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM job_inputs").scalar() == 0
