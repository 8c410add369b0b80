"""The durable job queue through the native API and the real engine: lifecycle, outputs,
fairness between owners, priority, cancel, the bounded queue, and the migrated schema."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from tests.jobs_support import FAST, fresh_database_url, job_client, make_service, wait_done


def test_migrations_create_exactly_the_declared_schema(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from sdserve.service.db import Database
    from sdserve.service.tables import metadata

    db = Database.at(tmp_path)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert diff == []
    assert mode == "wal"
    Database.at(tmp_path).close()  # migrating again is a no-op


def test_job_lifecycle_outputs_and_seeds(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        r = c.post("/v1/jobs", json={**FAST, "seed": 7, "n": 2, "output_format": "webp"})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] in ("queued", "running")
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        done = wait_done(c, job["id"])
        assert done["status"] == "succeeded", done
        assert done["seeds"] == [7, 8]
        assert done["params"]["steps"] == 2 and done["params"]["scheduler"]  # resolved defaults recorded
        assert done["attempts"] == 1 and done["error"] is None
        assert [o["seed"] for o in done["outputs"]] == [7, 8]
        for out in done["outputs"]:
            assert out["content_type"] == "image/webp"
            img = c.get(out["url"])
            assert img.status_code == 200 and img.headers["content-type"] == "image/webp"
            assert Image.open(io.BytesIO(img.content)).size == (64, 64)
        # The files are under the data dir, named by unguessable tokens.
        files = sorted(p.name for p in (tmp_path / "outputs" / job["id"]).iterdir())
        assert len(files) == 2 and all(len(f) > 30 for f in files)
        assert c.get("/v1/outputs/not-a-real-token").status_code == 404


def test_same_seed_same_image_as_workers_ai(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        job = c.post("/v1/jobs", json={**FAST, "width": 256, "height": 256, "seed": 11}).json()
        native = c.get(wait_done(c, job["id"])["outputs"][0]["url"]).content
        cf = c.post("/ai/run/@cf/runwayml/stable-diffusion-v1-5-img2img",
                    json={"prompt": "a lighthouse", "width": 256, "height": 256, "num_steps": 2, "seed": 11})
        assert cf.status_code == 200
        assert Image.open(io.BytesIO(native)).tobytes() == Image.open(io.BytesIO(cf.content)).tobytes()


def test_bad_input_names_the_field(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        for body, field in [({**FAST, "width": 65}, "width"), ({**FAST, "image": "@@@"}, "image"),
                            ({**FAST, "model": "nope"}, None), ({**FAST, "steps": 0}, "steps"),
                            ({**FAST, "webhook": "file:///etc/passwd"}, "webhook"),
                            ({**FAST, "bogus": 1}, "bogus")]:
            r = c.post("/v1/jobs", json=body)
            assert 400 <= r.status_code < 500, (body, r.text)
            err = r.json()["error"]
            if field:
                assert err["field"] == field, (body, err)
        assert c.get("/v1/jobs/nope").json()["error"]["type"] == "not_found"


def test_fair_round_robin_between_owners_and_priority_within_one(settings, engine, tmp_path):
    from sdserve.engine.params import GenerationParams

    s, service = make_service(settings, engine, tmp_path)
    p = GenerationParams(**{**FAST, "steps": 1})

    async def scenario() -> list[str]:
        # Everything is queued before the worker starts, so the order is the policy's alone.
        a1 = service.submit(p, "key_a")
        a2 = service.submit(p, "key_a")
        a3 = service.submit(p, "key_a", priority=5)  # jumps a2 within key_a's own line
        b1 = service.submit(p, "key_b")
        c1 = service.submit(p, None)
        names = {a1.id: "a1", a2.id: "a2", a3.id: "a3", b1.id: "b1", c1.id: "c1"}
        assert service.queue_length() == 5
        assert service.queue_position(b1.id) == 2  # one job of key_a may go first
        await service.start()
        try:
            jobs = [await service.wait(j, 120) for j in (a1, a2, a3, b1, c1)]
        finally:
            await service.stop()
        assert all(j.status == "succeeded" for j in jobs)
        return [names[j.id] for j in sorted(jobs, key=lambda j: j.started_at or 0)]

    # key_a's head is oldest; then the owners not yet served; then key_a again, best priority first.
    assert asyncio.run(scenario()) == ["a3", "b1", "c1", "a1", "a2"]


def test_cancel_queued_and_running(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        long = c.post("/v1/jobs", json={**FAST, "steps": 200}).json()
        queued = c.post("/v1/jobs", json=FAST).json()
        deadline = time.time() + 60
        while c.get(f"/v1/jobs/{long['id']}").json()["status"] != "running" and time.time() < deadline:
            time.sleep(0.02)
        r = c.delete(f"/v1/jobs/{queued['id']}")
        assert r.status_code == 200 and r.json()["status"] == "canceled"
        r = c.delete(f"/v1/jobs/{long['id']}")
        assert r.status_code == 200
        done = wait_done(c, long["id"], timeout=60)
        assert done["status"] == "canceled", done
        assert done["error"]["type"] == "canceled"
        assert done["outputs"] == []
        assert done["progress"] is None
        q = c.get(f"/v1/jobs/{queued['id']}").json()
        assert q["status"] == "canceled" and q["started_at"] is None and q["attempts"] == 0
        # Canceling an ended job changes nothing.
        assert c.delete(f"/v1/jobs/{queued['id']}").json()["status"] == "canceled"


def test_full_queue_answers_503_with_retry_after(settings, engine, tmp_path):
    from sdserve.engine.params import GenerationParams
    from sdserve.errors import QueueFull

    _, service = make_service(settings, engine, tmp_path, max_queue=2)
    p = GenerationParams(**FAST)
    service.submit(p)
    service.submit(p)
    with pytest.raises(QueueFull) as e:
        service.submit(p)
    assert e.value.retry_after >= 1

    with job_client(settings, engine, tmp_path / "http", max_queue=1) as c:
        long = c.post("/v1/jobs", json={**FAST, "steps": 200}).json()
        deadline = time.time() + 60
        while c.get(f"/v1/jobs/{long['id']}").json()["status"] != "running" and time.time() < deadline:
            time.sleep(0.02)
        assert c.post("/v1/jobs", json=FAST).status_code == 201  # the one waiting place
        r = c.post("/v1/jobs", json=FAST)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "server_overloaded"
        c.delete(f"/v1/jobs/{long['id']}")


def test_health_readiness_and_metrics(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == "ok" and ready.json()["worker"] == "running"
        job = c.post("/v1/jobs", json={**FAST, "n": 2}).json()
        wait_done(c, job["id"])
        text = c.get("/metrics").text
        model = "@cf/runwayml/stable-diffusion-v1-5-img2img"
        assert f'sdserve_images_generated_total{{model="{model}"}} 2.0' in text
        assert f'sdserve_job_run_seconds_count{{model="{model}"}} 1.0' in text
        assert f'sdserve_job_wait_seconds_count{{model="{model}"}} 1.0' in text
        # Its two images shared one loop: in the le=2 bucket, not in le=1.
        assert f'sdserve_job_batch_images_bucket{{le="1.0",model="{model}"}} 0.0' in text
        assert f'sdserve_job_batch_images_bucket{{le="2.0",model="{model}"}} 1.0' in text
        assert f'sdserve_model_loaded{{model="{model}"}} 1.0' in text
        assert "process_resident_memory_bytes" in text
        assert "# TYPE sdserve_job_errors_total counter" in text
        assert 'sdserve_queue_depth' in text


def test_compatible_queued_jobs_share_one_denoising_loop(settings, engine, tmp_path):
    import numpy as np

    from sdserve.engine.params import GenerationParams

    _, service = make_service(settings, engine, tmp_path)
    together: list[int] = []
    service.observe(lambda kind, job: together.append(job.batch_images) if kind == "started" else None)

    async def scenario() -> tuple[bytes, bytes]:
        jobs = [service.submit(GenerationParams(**FAST, seed=s), f"key_{s}") for s in (1, 2, 3)]
        jobs.append(service.submit(GenerationParams(**{**FAST, "steps": 3}, seed=4)))  # another loop
        await service.start()
        try:
            done = [await service.wait(j, 120) for j in jobs]
            alone = await service.run(GenerationParams(**FAST, seed=2))
        finally:
            await service.stop()
        batched = await asyncio.to_thread(service.artifacts.get, done[1].outputs[0].key)
        assert all(j.status == "succeeded" for j in done)
        return alone.outputs[0].data or b"", batched

    alone, batched = asyncio.run(scenario())
    assert together[:4] == [3, 3, 3, 1]  # three compatible jobs started as one batch; the 3-step one alone
    a = np.asarray(Image.open(io.BytesIO(alone)).convert("RGB")).astype(int)
    b = np.asarray(Image.open(io.BytesIO(batched)).convert("RGB")).astype(int)
    assert np.abs(a - b).max() <= 2  # batching changes no image beyond float rounding


def test_interrupted_jobs_are_requeued_until_their_attempts_run_out(settings, engine, tmp_path):
    from sqlalchemy import update

    from sdserve.engine.params import GenerationParams
    from sdserve.service.tables import jobs

    _, service = make_service(settings, engine, tmp_path, max_attempts=2)
    p = GenerationParams(**FAST)
    once, twice = service.submit(p), service.submit(p)
    # A worker that died mid-job: it claimed both (``twice`` for the second time) and
    # stopped renewing their leases long ago.
    service.store.claim(once.id)
    service.store.claim(twice.id)
    assert service.store.requeue(twice.id, 1)
    service.store.claim(twice.id)
    with service.db.tx() as conn:
        conn.execute(update(jobs).values(heartbeat_at=0.0))

    async def restart() -> list:  # type: ignore[type-arg]
        await service.start()
        try:
            return [await service.wait(j, 120) for j in (once, twice)]
        finally:
            await service.stop()

    a, b = asyncio.run(restart())
    assert (a.status, a.attempts) == ("succeeded", 2)
    assert (b.status, b.attempts) == ("failed", 2) and b.outputs == []
    assert "stopped while running this job 2 times" in b.error.message


def test_sync_run_cancels_its_queued_job_when_the_client_goes_away(settings, engine, tmp_path):
    from sdserve.engine.params import GenerationParams
    from sdserve.errors import Canceled

    _, service = make_service(settings, engine, tmp_path)

    async def scenario() -> None:
        await service.start()
        try:
            blocker = service.submit(GenerationParams(**{**FAST, "steps": 200}))

            async def gone() -> bool:
                return True

            with pytest.raises(Canceled):
                await service.run(GenerationParams(**FAST), disconnected=gone)
            mine = next(j for j in service.list() if j.id != blocker.id)
            assert mine.status == "canceled" and mine.attempts == 0  # it never started
            service.cancel(blocker.id)
            await service.wait(blocker, 60)
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_run_returns_a_job_that_another_server_ran(settings, engine, tmp_path):
    """Two servers on one database and output store (what Ray's API replicas are): the
    one whose caller waits in ``run`` has no worker, so the other runs the job; the waiter
    finds it ended by polling the store and returns its image bytes from the shared store."""
    from sdserve.engine.params import GenerationParams

    url = fresh_database_url()  # one database for both (PostgreSQL when the run asks for it)
    shared = {"database_url": url} if url else {}
    _, waiter = make_service(settings, engine, tmp_path, options={"poll_s": 0.05}, **shared)
    _, runner = make_service(settings, engine, tmp_path, options={"poll_s": 0.05}, **shared)

    async def scenario() -> None:
        await runner.start()
        try:
            job = await asyncio.wait_for(waiter.run(GenerationParams(**FAST, seed=5)), 120)
        finally:
            await runner.stop()
        assert job.status == "succeeded" and job.attempts == 1
        assert [o.seed for o in job.outputs] == [5]
        assert Image.open(io.BytesIO(job.outputs[0].data)).size == (64, 64)
        assert not waiter._outcomes.waiters and not runner._outcomes.waiters  # no waiter left behind

    asyncio.run(scenario())


def test_the_next_batch_runs_while_the_last_one_stores_its_outputs(settings, engine, tmp_path):
    """Encoding and storing outputs overlaps the next batch on the engine: with a store that
    takes a second per file, the second job starts before the first is recorded as ended."""
    from fastapi.testclient import TestClient

    from sdserve.api.app import build_app
    from sdserve.service.artifacts import LocalArtifacts

    class Slow(LocalArtifacts):
        def put(self, key: str, data: bytes, content_type: str) -> None:
            time.sleep(1.0)
            super().put(key, data, content_type)

    s, service = make_service(settings, engine, tmp_path, artifacts=Slow(tmp_path / "outputs"))
    with TestClient(build_app(s, service)) as c:
        # Different guidance: two batches, one after the other.
        first, second = (c.post("/v1/jobs", json={**FAST, "guidance": g}).json()["id"] for g in (5.0, 6.0))
        a, b = (wait_done(c, j) for j in (first, second))
    assert a["status"] == b["status"] == "succeeded"
    assert b["started_at"] < a["finished_at"]
