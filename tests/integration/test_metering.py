"""Metering through the real service on the tiny models: each job's cost, per-request limits
refused in every dialect before anything is queued, compute credits and usage, fairness by
compute between keys, and rate limits and credits held across two servers on one database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sdserve.engine.params import GenerationParams
from tests.jobs_support import FAST, job_client, make_service, wait_done

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
# FAST: 64x64 (8x8 latent), 2 steps with CFG (guidance 7.5): 2 x 2 x 64 / 4096 units.
FAST_COST = 2 * 2 * 64 / 4096


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_job_shows_its_cost_and_metrics_count_it_per_key(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        rec, key = c.service.keys.create("meter")
        job = c.post("/v1/jobs", json={**FAST, "n": 2}, headers=_auth(key)).json()
        assert job["cost"] == pytest.approx(2 * FAST_COST)
        done = wait_done(c, job["id"], headers=_auth(key))
        assert done["status"] == "succeeded" and done["cost"] == pytest.approx(2 * FAST_COST)
        assert c.service.store.get(job["id"]).cost == pytest.approx(2 * FAST_COST)  # stored with the job
        metrics = c.get("/metrics").text
        assert f'sdserve_compute_units_accepted_total{{key="{rec.id}"}} {2 * FAST_COST}' in metrics
        assert f'sdserve_compute_units_served_total{{key="{rec.id}"}} {2 * FAST_COST}' in metrics


def _refusals(c: Any, h: dict[str, str]) -> list[tuple[str, Any, str, str]]:
    """(dialect, response, field as the dialect names it, the limit in words)."""
    return [
        ("native", c.post("/v1/jobs", json={**FAST, "steps": 31}, headers=h), "steps", "limit of 30 steps"),
        ("native", c.post("/v1/jobs", json={**FAST, "width": 264}, headers=h), "width", "256 pixels per side"),
        ("workers_ai", c.post(f"/ai/run/{SD15}", json={"prompt": "x", "width": 512, "height": 256, "num_steps": 2},
                              headers=h), "width", "256 pixels per side"),
        # A1111 counts every n_iter batch: 2 x 3 = 6 images, over 4, refused before the first runs.
        ("a1111", c.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 2,
                                                    "batch_size": 2, "n_iter": 3}, headers=h),
         "batch_size", "limit of 4 images"),
        ("openai", c.post("/v1/images/generations", json={"prompt": "x", "model": SD15, "n": 5, "size": "256x256"},
                          headers=h), "n", "limit of 4 images"),
        ("modelslab", c.post("/api/v6/images/text2img", json={"prompt": "x", "model_id": SD15, "width": 64,
                                                              "height": 64, "num_inference_steps": 31}, headers=h),
         "num_inference_steps", "limit of 30 steps"),
        ("native", c.post("/v1/jobs", json={**FAST, "width": 256, "height": 256, "steps": 10, "n": 2}, headers=h),
         "cost", "limit of 4 per request"),
    ]


def test_limits_are_refused_in_each_dialects_shape_before_anything_is_queued(settings, engine, tmp_path):
    limits = dict(request_max_steps=30, request_max_side=256, request_max_images=4, request_max_cost=4)
    with job_client(settings, engine, tmp_path, **limits) as c:
        for dialect, r, field, limit in _refusals(c, {}):
            assert r.status_code == 400, (dialect, r.status_code, r.text)
            text = r.text
            assert field in text and limit in text, (dialect, text)
        assert c.service.queue_length() == 0 and c.service.list() == []  # nothing was queued
        # Within the limits, work goes through.
        job = c.post("/v1/jobs", json={**FAST, "steps": 30}, headers={}).json()
        assert wait_done(c, job["id"])["status"] == "succeeded"


def test_a_keys_limits_narrow_the_servers(settings, engine, tmp_path):
    from sdserve.service.limits import RequestLimits

    with job_client(settings, engine, tmp_path, request_max_steps=50) as c:
        _, small = c.service.keys.create("small", limits=RequestLimits(max_steps=4))
        _, big = c.service.keys.create("big", limits=RequestLimits(max_steps=500))
        r = c.post("/v1/jobs", json={**FAST, "steps": 5}, headers=_auth(small))
        assert r.status_code == 400 and r.json()["error"]["field"] == "steps" and "limit of 4" in r.text
        r = c.post("/v1/jobs", json={**FAST, "steps": 51}, headers=_auth(big))  # the server's 50 still holds
        assert r.status_code == 400 and "limit of 50" in r.text
        usage = c.get("/v1/usage", headers=_auth(small)).json()
        assert usage["limits"]["max_steps"] == 4


def test_compute_credits_are_charged_refunded_and_reported(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path, api_keys=["operator-secret"]) as c:
        rec, key = c.service.keys.create("metered", compute_credits=4 * FAST_COST)
        h = _auth(key)
        jobs = [c.post("/v1/jobs", json=FAST, headers=h).json() for _ in range(2)]
        r = c.post("/v1/jobs", json={**FAST, "n": 3}, headers=h)  # 3 x FAST_COST, 2 x left
        assert r.status_code == 402 and r.json()["error"]["type"] == "insufficient_credits"
        assert "compute credit" in r.json()["error"]["message"]
        for j in jobs:
            assert wait_done(c, j["id"], headers=h)["status"] == "succeeded"
        # A canceled job gives its compute back.
        long = c.post("/v1/jobs", json={**FAST, "steps": 3}, headers=h).json()
        assert long["cost"] == pytest.approx(1.5 * FAST_COST)
        assert c.post("/v1/jobs", json=FAST, headers=h).status_code == 402  # half a FAST left
        c.delete(f"/v1/jobs/{long['id']}", headers=h)
        assert wait_done(c, long["id"], headers=h)["status"] in ("canceled", "succeeded")
        usage = c.get("/v1/usage", headers=h).json()
        spent = 2 * FAST_COST + (1.5 * FAST_COST if c.service.get(long["id"]).status == "succeeded" else 0)
        assert usage["key"] == rec.id and usage["compute_used"] == pytest.approx(spent)
        assert usage["compute_left"] == pytest.approx(4 * FAST_COST - spent) and usage["images_used"] >= 2
        # The operator (a key from the api_keys setting) sees every key; a stored key does not.
        assert c.get("/v1/usage/keys", headers=h).status_code == 404
        every = c.get("/v1/usage/keys", headers=_auth("operator-secret")).json()["data"]
        assert [u["compute_used"] for u in every if u["key"] == rec.id] == [pytest.approx(spent)]
        # Granting more lets it go on; jobs already accepted keep what they were charged.
        c.service.keys.grant(rec.id, compute=10 * FAST_COST)
        assert c.post("/v1/jobs", json=FAST, headers=h).status_code == 201


def test_fairness_shares_the_device_by_compute_not_by_job_count(settings, engine, tmp_path):
    """Key L sends 8 jobs of 12 steps, key S 20 jobs of 3 (a quarter of the cost), all queued
    at once. While both have work waiting, S gets four jobs in for each of L's, and each key
    about half the device. (Taking turns by job count, L would get about three quarters.)"""
    import time

    _, service = make_service(settings, engine, tmp_path)
    cpu: dict[str, float] = {}  # job id -> the process's CPU time when it started: the device is the CPU here
    service.observe(lambda kind, job: cpu.setdefault(job.id, time.process_time()) if kind == "started" else None)

    def params(steps: int, i: int) -> GenerationParams:
        # A guidance of its own per job: no two jobs share a denoising loop.
        return GenerationParams(**{**FAST, "steps": steps, "guidance": 2.0 + i / 100, "seed": i})

    async def scenario() -> tuple[list[Any], float]:
        for i in range(20):
            if i < 8:
                service.submit(params(12, i), "key_L")
            service.submit(params(3, 100 + i), "key_S")
        await service.start()
        try:
            jobs = [await service.wait(j, 600) for j in service.list(limit=100)]
            return jobs, time.process_time()
        finally:
            await service.stop()

    import torch

    # One thread: the CPU time a job takes is then its own work, not also the spinning of a
    # second thread waiting for a core on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        jobs, end = asyncio.run(scenario())
    finally:
        torch.set_num_threads(threads)
    jobs.sort(key=lambda j: j.started_at)
    assert all(j.status == "succeeded" for j in jobs)
    assert [j.owner[-1] for j in jobs] == list("LSSSS" * 5 + "LLL")
    assert jobs[0].cost == 4 * jobs[1].cost
    # Device use while both had work waiting (up to S's last job): one worker runs one job at
    # a time, so a job had the CPU from its start to the next one's.
    starts = [cpu[j.id] for j in jobs] + [end]
    busy = {"key_L": 0.0, "key_S": 0.0}
    for k, j in enumerate(jobs[:25]):
        busy[j.owner] += starts[k + 1] - starts[k]
    share = busy["key_L"] / sum(busy.values())
    assert 0.25 <= share <= 0.62, busy


@contextmanager
def _shared_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A database URL two servers share: one SQLite file, or a fresh PostgreSQL cluster."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    from tests.servers import postgres, postgres_bin

    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (scripts/ci/system-packages.sh installs it)")
    with postgres() as url:
        yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_rate_limits_and_credits_hold_across_two_servers_on_one_database(settings, engine, tmp_path, kind):
    """Two servers (each its own app and job service) on one database, as Ray's API replicas
    are: a key gets one rate limit and one credit balance between them, not one per server."""
    from fastapi.testclient import TestClient

    from sdserve.api.app import build_app

    with _shared_database(kind, tmp_path) as url:
        s1, one = make_service(settings, engine, tmp_path / "one", database_url=url)
        s2, two = make_service(settings, engine, tmp_path / "two", database_url=url)
        with TestClient(build_app(s1, one)) as a, TestClient(build_app(s2, two)) as b:
            _, key = one.keys.create("shared", rate_limit=3, compute_credits=2 * FAST_COST)
            h = _auth(key)
            assert a.post("/v1/jobs", json=FAST, headers=h).status_code == 201
            assert b.post("/v1/jobs", json=FAST, headers=h).status_code == 201
            # Third request: within the rate limit, but the credits are spent, on either server.
            r = a.post("/v1/jobs", json=FAST, headers=h)
            assert r.status_code == 402, r.text
            # Fourth: the rate limit (3 a minute) is spent over both servers together.
            r = b.get("/v1/jobs", headers=h)
            assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_exceeded"
            assert 1 <= int(r.headers["retry-after"]) <= 20
            assert a.get("/v1/jobs", headers=h).status_code == 429


def test_concurrent_requests_on_two_servers_cannot_overdraw_a_rate_limit(tmp_path):
    """The bucket is one conditional UPDATE: two limiters (two servers) taking tokens at once
    from threads admit exactly the limit between them."""
    from concurrent.futures import ThreadPoolExecutor

    from sdserve.errors import RateLimited
    from sdserve.service.db import Database
    from sdserve.service.ratelimit import RateLimiter

    url = f"sqlite:///{tmp_path / 'rl.db'}"
    limiters = [RateLimiter(Database(url), clock=lambda: 1000.0) for _ in range(2)]

    def attempt(i: int) -> bool:
        try:
            limiters[i % 2].check("key_x", 10)
            return True
        except RateLimited:
            return False

    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(attempt, range(40)))
    assert admitted == 10


def test_keys_cli_sets_compute_credits_and_limits_grants_and_lists_usage(tmp_path, capsys):
    from sdserve.cli.main import main
    from sdserve.service.db import Database
    from sdserve.service.keys import KeyStore
    from sdserve.service.limits import RequestLimits

    assert main(["keys", "create", "--data-dir", str(tmp_path), "--name", "cli", "--compute-credits", "400",
                 "--max-steps", "30", "--max-cost", "200"]) == 0
    key = capsys.readouterr().out.splitlines()[0]
    store = KeyStore(Database.at(tmp_path))
    rec = store.authenticate(key)
    assert rec is not None and rec.compute_credits == 400 and rec.limits == RequestLimits(max_steps=30, max_cost=200)
    assert main(["keys", "grant", rec.id, "--compute", "100", "--images", "5", "--data-dir", str(tmp_path)]) == 0
    assert "compute 0/500" in capsys.readouterr().out
    rec = store.get(rec.id)
    assert rec is not None and rec.compute_credits == 500 and rec.credits == 5
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "compute used/total" in listing and "0/500" in listing and '"max_steps": 30' in listing


def test_cost_route_quotes_a_job_with_the_same_checks_and_queues_nothing(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path, request_max_steps=30) as c:
        _, key = c.service.keys.create("quote", compute_credits=1.0)
        h = _auth(key)
        q = c.post("/v1/cost", json={**FAST, "n": 2}, headers=h)
        assert q.status_code == 200 and q.json() == {"cost": pytest.approx(2 * FAST_COST), "compute_left": 1.0}
        r = c.post("/v1/cost", json={**FAST, "steps": 31}, headers=h)
        assert r.status_code == 400 and r.json()["error"]["field"] == "steps" and "limit of 30" in r.text
        assert c.post("/v1/cost", json=FAST).status_code == 401
        assert c.service.queue_length() == 0 and c.service.keys.authenticate(key).compute_used == 0
        # The page that shows it loads the element it writes to.
        assert 'id="cost"' in c.get("/").text and "/v1/cost" in c.get("/playground/static/playground.js").text


def test_jobs_already_accepted_run_when_limits_or_credits_change(settings, engine, tmp_path):
    """Limits and credits are checked when a job is accepted; tightening them later drops and
    re-charges nothing that is already queued."""
    from dataclasses import replace

    from sqlalchemy import update

    from sdserve.service.limits import RequestLimits
    from sdserve.service.tables import api_keys

    _, service = make_service(settings, engine, tmp_path)
    rec, _ = service.keys.create("changes", compute_credits=2 * FAST_COST)
    params = GenerationParams(**FAST)

    async def scenario() -> list[Any]:
        queued = [service.submit(params, rec.id) for _ in range(2)]
        service.options = replace(service.options, limits=RequestLimits(max_steps=1))
        with service.db.tx() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == rec.id).values(compute_credits=0.0))
        await service.start()
        try:
            return [await service.wait(j, 120) for j in queued]
        finally:
            await service.stop()

    assert [j.status for j in asyncio.run(scenario())] == ["succeeded", "succeeded"]
    key = service.keys.get(rec.id)
    assert key is not None and key.compute_used == pytest.approx(2 * FAST_COST)
    from sdserve.errors import BadInput

    with pytest.raises(BadInput) as e:  # new work meets the new limit
        service.submit(params, rec.id)
    assert e.value.field == "steps" and "limit of 1 steps" in e.value.message
