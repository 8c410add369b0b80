"""Scale-out on Ray Serve, on loopback: two API replicas and two CPU model replicas over
PostgreSQL and S3. Jobs go in through both API replicas; a model replica is killed in the
middle of a batch and an API replica in the middle of a job; every job still succeeds
exactly once, its outputs are in the bucket, and either API replica serves them."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from sdserve.service.tables import jobs, outputs
from tests.scaleout.conftest import PREFIX, REPLICA_HEADER, Cluster

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(420)]

# Long enough on 2 cores to be caught early in its loop (about 4 s a job, measured),
# short enough to keep the tier quick.
SIZE, STEPS = 128, 120
# A job is "early in its loop" up to this step: what the database shows lags the loop by
# up to a second (ServiceOptions.progress_s, about 30 steps here), so this leaves seconds
# before the loop ends.
EARLY = 50


def job_body(i: int) -> dict[str, Any]:
    # Pairs share a batch key (same guidance), so the worker's batching reaches the replicas.
    return {"model": "sd15", "prompt": f"a lighthouse, take {i}", "width": SIZE, "height": SIZE, "steps": STEPS,
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


def running(c: Cluster) -> list[dict[str, Any]]:
    """Running jobs as the database shows them: who claimed each (an API replica's id) and
    its progress, which the replica running it stores every second."""
    db = create_engine(c.database_url)
    try:
        with db.connect() as conn:
            return [r._asdict() for r in conn.execute(
                select(jobs.c.id, jobs.c.claimed_by, jobs.c.progress_step).where(jobs.c.status == "running"))]
    finally:
        db.dispose()


def early(row: dict[str, Any]) -> bool:
    return 1 <= (row["progress_step"] or 0) <= EARLY


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
    accepted = submit_through_both(c, want=6)
    ids = list(accepted)

    def both_model_replicas_early_in_a_batch() -> bool:
        # Each API replica keeps one batch in flight and each model replica takes one:
        # jobs of two API replicas early in their loops mean both model replicas are busy.
        return len({r["claimed_by"] for r in running(c) if early(r)}) == 2

    wait_until("both model replicas are early in a batch", both_model_replicas_early_in_a_batch, 120)
    ray.kill(replica_actor("models"), no_restart=True)
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
    row = wait_until("a job is early in its loop", lambda: next(filter(early, running(c)), None), 120)
    victim, job_id = row["claimed_by"], row["id"]
    ray.kill(replica_actor("api", victim), no_restart=True)
    # The job's lease (6 s) lapses; the other replica queues it again and runs it.
    done = wait_all_done(c, ids)
    assert all(d["status"] == "succeeded" for d in done.values()), {j: d["error"] for j, d in done.items()}
    rows = check_store(c, ids)
    assert rows[job_id]["attempts"] == 2, rows[job_id]
    check_fetch_from_both(c, ids, c.api_replicas() - {victim})


def previews(c: Cluster, job_id: str, listen_s: float, out: list[tuple[str, str]]) -> None:
    """Listen to the job's event stream for ``listen_s``; append (answering API replica,
    preview data URI) for each ``step`` event with a preview."""
    import json

    deadline = time.time() + listen_s
    with httpx.stream("GET", f"{c.base}/v1/jobs/{job_id}/events", timeout=listen_s + 5) as r:
        assert r.status_code == 200
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "step":
                data = json.loads(line.removeprefix("data: "))
                if "preview" in data:
                    out.append((r.headers[REPLICA_HEADER], data["preview"]))
            if time.time() > deadline or event in ("succeeded", "failed", "canceled"):
                return


def test_previews_and_cancel_cross_to_the_model_replicas(cluster: Cluster) -> None:
    import base64

    c = cluster
    r = c.post("/v1/jobs", json={**job_body(0), "steps": 200, "seed": 4242, "guidance": 8.0})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    # Two streams at once: the proxy sends the second to the other API replica (the one
    # with fewer requests open). The runner has the previews first hand; the other reads
    # what the runner stores in the database every second.
    import threading

    for _ in range(5):
        first: list[tuple[str, str]] = []
        second: list[tuple[str, str]] = []
        t = threading.Thread(target=previews, args=(c, job_id, 2.5, first))
        t.start()
        time.sleep(0.3)
        previews(c, job_id, 2.0, second)
        t.join()
        if first and second and first[0][0] != second[0][0]:
            break
    assert first and second, "a stream got no preview"
    assert {first[0][0], second[0][0]} == c.api_replicas(), "both streams were answered by one API replica"
    for _, uri in first + second:
        assert base64.b64decode(uri.removeprefix("data:image/png;base64,")).startswith(b"\x89PNG")

    assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
    done = wait_all_done(c, [job_id], timeout=60)[job_id]
    assert done["status"] == "canceled" and done["outputs"] == []
    assert not [k for k in c.bucket_keys() if f"/{job_id}/" in k]
    # The model replica stopped that loop: the next job runs at once.
    after = c.post("/v1/jobs", json={**job_body(0), "steps": 4, "seed": 4243, "guidance": 8.0}).json()["id"]
    assert wait_all_done(c, [after], timeout=60)[after]["status"] == "succeeded"


def test_interrogate_is_answered_by_a_model_replica(cluster: Cluster) -> None:
    """A1111 /interrogate on Ray: the caption comes from a model replica's captioner (the API
    replicas hold no weights); a bad image is still the caller's 4xx."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")
    img = base64.b64encode(buf.getvalue()).decode()
    r = httpx.post(cluster.base + "/sdapi/v1/interrogate", json={"image": img, "model": "clip"}, timeout=300)
    assert r.status_code == 200, r.text
    caption = r.json()["caption"]
    assert isinstance(caption, str) and caption
    again = httpx.post(cluster.base + "/sdapi/v1/interrogate", json={"image": img}, timeout=300)
    assert again.json() == r.json()  # deterministic, whichever replica answers
    bad = httpx.post(cluster.base + "/sdapi/v1/interrogate", json={"image": "bm90IGFuIGltYWdl"}, timeout=60)
    assert bad.status_code in (400, 422) and "image" in bad.text
