"""Scale-out on Ray Serve, on loopback: two API replicas and two CPU model replicas over
PostgreSQL and S3. Jobs go in through both API replicas; a model replica is killed in the
middle of a batch and an API replica in the middle of a job; every job still succeeds
exactly once, its outputs are in the bucket, and either API replica serves them."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from sdserve.service.tables import jobs, outputs
from tests.scaleout.conftest import PREFIX, REPLICA_HEADER, Cluster

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(420)]

# Long enough on 2 cores to be caught mid-loop, short enough to keep the tier quick.
STEPS = 60


def job_body(i: int) -> dict[str, Any]:
    # Pairs share a batch key (same guidance), so the worker's batching reaches the replicas.
    return {"model": "sd15", "prompt": f"a lighthouse, take {i}", "width": 64, "height": 64, "steps": STEPS,
            "seed": 1000 + i, "guidance": 5.0 + (i // 2) * 0.5}


def submit_through_both(c: Cluster, want: int, start: int = 0) -> dict[str, str]:
    """Submit until ``want`` jobs went in and each API replica took at least two;
    returns job id -> the replica that accepted it."""
    accepted: dict[str, str] = {}
    for i in range(start, start + 40):
        r = c.post("/v1/jobs", json=job_body(i))
        assert r.status_code == 201, r.text
        accepted[r.json()["id"]] = r.headers[REPLICA_HEADER]
        per = {rep: list(accepted.values()).count(rep) for rep in set(accepted.values())}
        if len(accepted) >= want and len(per) == 2 and min(per.values()) >= 2:
            return accepted
    raise AssertionError(f"the proxy never spread submissions over both API replicas: {accepted}")


def live_progress(c: Cluster, job_id: str, tries: int = 8) -> tuple[str, int, int] | None:
    """(replica, step, total) from the API replica running ``job_id``: only the runner
    knows the live step, so ask until the proxy routes to it."""
    for _ in range(tries):
        r = c.get(f"/v1/jobs/{job_id}")
        body = r.json() if r.status_code == 200 else {}
        prog = body.get("progress") or {}
        if body.get("status") != "running":
            return None
        if prog.get("step"):
            return r.headers[REPLICA_HEADER], prog["step"], prog["total"]
    return None


def running_ids(db) -> list[str]:  # type: ignore[no-untyped-def]
    with db.connect() as conn:
        return list(conn.execute(select(jobs.c.id).where(jobs.c.status == "running")).scalars())


def wait_until(what: str, cond, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting until {what}")


def wait_all_done(c: Cluster, ids: list[str], timeout: float = 180) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}

    def finished() -> bool:
        for j in ids:
            if j not in done:
                r = c.get(f"/v1/jobs/{j}")
                if r.status_code == 200 and r.json()["status"] in ("succeeded", "failed", "canceled"):
                    done[j] = r.json()
        return len(done) == len(ids)

    wait_until("every job finished", finished, timeout)
    return done


def replica_actor(kind: str, replica_id: str | None = None):  # type: ignore[no-untyped-def]
    """A Serve replica's actor: of the ``api`` or ``models`` deployment (a given one, or any)."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == "serve" and f"#{kind}#" in a["name"]]
    if replica_id is not None:
        names = [n for n in names if n.endswith(f"#{replica_id}")]
    assert names, f"no {kind} replica {replica_id or ''} among Serve's actors"
    return ray.get_actor(names[0], namespace="serve")


def check_store(c: Cluster, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each job succeeded once: one row, one output row per image, the bucket holding
    exactly the recorded outputs. Returns the rows by id."""
    db = create_engine(c.database_url)
    try:
        with db.connect() as conn:
            rows = {r.id: r._asdict() for r in conn.execute(select(jobs).where(jobs.c.id.in_(ids)))}
            outs = conn.execute(select(outputs.c.job_id, outputs.c.key).where(outputs.c.job_id.in_(ids))).all()
            per_job = dict(conn.execute(select(outputs.c.job_id, func.count()).where(outputs.c.job_id.in_(ids))
                                        .group_by(outputs.c.job_id)).all())
    finally:
        db.dispose()
    assert set(rows) == set(ids)
    assert all(r["status"] == "succeeded" for r in rows.values()), {j: r["status"] for j, r in rows.items()}
    assert all(1 <= r["attempts"] <= c.settings.max_attempts for r in rows.values())
    assert per_job == {j: 1 for j in ids}, per_job  # one completion each: never stored twice
    recorded = {PREFIX + key for _, key in outs}
    in_bucket = {k for k in c.bucket_keys() if k.split("/")[1] in ids}
    assert in_bucket == recorded  # nothing missing, nothing left over from a lost attempt
    return rows


def check_fetch_from_both(c: Cluster, ids: list[str], replicas: set[str]) -> None:
    """Every job and output is served by every API replica, bytes equal to the bucket's."""
    for j in ids:
        served_by: set[str] = set()
        for _ in range(60):
            r = c.get(f"/v1/jobs/{j}")
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            url = r.json()["outputs"][0]["url"]
            png = c.get(url.removeprefix(c.base))
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
            key = f"{PREFIX}{j}/{url.rsplit('/', 1)[1]}.png"
            assert png.content == c.s3.get_object(Bucket="outs", Key=key)["Body"].read()
            served_by |= {r.headers[REPLICA_HEADER], png.headers[REPLICA_HEADER]}
            if served_by >= replicas:
                break
        assert served_by >= replicas, f"job {j} was served only by {served_by}"


def test_model_replica_killed_mid_batch(cluster: Cluster) -> None:
    import ray

    c = cluster
    replicas = c.api_replicas()
    assert len(replicas) == 2
    informed: set[str] = set()

    def every_api_replica_sees_both_model_replicas() -> bool:
        r = c.get("/readyz")
        models = r.json().get("model_replicas", {}) if r.status_code == 200 else {}
        if len(models) == 2 and all(m["device"] == "cpu" for m in models.values()):
            informed.add(r.headers[REPLICA_HEADER])
        return informed == replicas

    wait_until("each API replica hears from both model replicas", every_api_replica_sees_both_model_replicas, 60)
    catalog = {m["id"]: m for m in c.get("/v1/catalog").json()["data"]}
    assert catalog["@cf/runwayml/stable-diffusion-v1-5-img2img"]["available"] is True
    accepted = submit_through_both(c, want=8)
    ids = list(accepted)
    db = create_engine(c.database_url)
    try:
        def both_model_replicas_mid_loop() -> bool:
            # Each API replica keeps one batch in flight and each model replica takes one:
            # two jobs mid-loop on two API replicas means both model replicas are busy.
            seen = {}
            for j in running_ids(db):
                p = live_progress(c, j)
                if p is not None and 2 <= p[1] <= p[2] - 20:
                    seen[p[0]] = j
            return len(seen) == 2

        wait_until("both model replicas are in the middle of a batch", both_model_replicas_mid_loop, 120)
        ray.kill(replica_actor("models"), no_restart=True)
    finally:
        db.dispose()
    done = wait_all_done(c, ids)
    assert all(d["status"] == "succeeded" for d in done.values()), {j: d["error"] for j, d in done.items()}
    rows = check_store(c, ids)
    assert max(r["attempts"] for r in rows.values()) >= 2, "no job was interrupted by the kill"
    check_fetch_from_both(c, ids, c.api_replicas())


def test_api_replica_killed_mid_job(cluster: Cluster) -> None:
    import ray

    c = cluster
    accepted = submit_through_both(c, want=4, start=100)
    ids = list(accepted)
    db = create_engine(c.database_url)
    try:
        def a_job_mid_loop() -> tuple[str, str] | None:
            for j in running_ids(db):
                p = live_progress(c, j)
                if p is not None and 2 <= p[1] <= p[2] - 20:
                    return p[0], j
            return None

        victim, job_id = wait_until("a job is in the middle of its loop", a_job_mid_loop, 120)
        ray.kill(replica_actor("api", victim), no_restart=True)
    finally:
        db.dispose()
    # The job's lease (6 s) lapses; the other replica queues it again and runs it.
    done = wait_all_done(c, ids)
    assert all(d["status"] == "succeeded" for d in done.values()), {j: d["error"] for j, d in done.items()}
    rows = check_store(c, ids)
    assert rows[job_id]["attempts"] == 2, rows[job_id]
    check_fetch_from_both(c, ids, c.api_replicas() - {victim})
