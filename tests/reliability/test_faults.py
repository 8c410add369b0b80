"""Faults: the real engine failing (an exception, out of memory) on one job of a batch, the
output store full or unreachable, webhook receivers down or slow. Each fails or retries only
the jobs involved, with a clear error, and the server keeps serving. (SIGKILL under load and
restart: tests/e2e/test_crash.py.)

Engine faults are injected by wrapping the real denoising loop (``engine.run_batch``) so it
raises for one marked prompt, as a CUDA error or OOM would, with everything else real.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_jobs_webhooks import http_server
from tests.jobs_support import FAST, job_client, make_service, wait_done

# Same size, steps and model as FAST: these batch together behind a long job.
LONG = {**FAST, "steps": 40, "prompt": "long"}


@contextlib.contextmanager
def faulty_engine(monkeypatch: pytest.MonkeyPatch, marker: str, exc: Exception) -> Iterator[list[list[str]]]:
    """The real ``run_batch``, raising ``exc`` for any batch holding a prompt with ``marker``;
    yields the prompts of every batch it was asked to run."""
    import sdserve.engine.engine as engine_module

    real = engine_module.run_batch
    calls: list[list[str]] = []

    def run_batch(model: Any, items: Any, **passes: Any) -> Any:
        prompts = [it.params.prompt for it in items]
        calls.append(prompts)
        if any(marker in p for p in prompts):
            raise exc
        return real(model, items, **passes)

    monkeypatch.setattr(engine_module, "run_batch", run_batch)
    yield calls


def _batch_behind_a_long_job(c: Any, prompts: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A long job to hold the worker, then jobs that will be claimed as one batch after it."""
    long = c.post("/v1/jobs", json=LONG).json()
    deadline = time.time() + 60
    while c.get(f"/v1/jobs/{long['id']}").json()["status"] != "running":
        assert time.time() < deadline
        time.sleep(0.01)
    return long, [c.post("/v1/jobs", json={**FAST, "prompt": p}).json() for p in prompts]


@pytest.mark.parametrize("fault", ["exception", "out-of-memory"])
def test_an_engine_fault_fails_only_the_job_it_hits(settings, engine, tmp_path, monkeypatch, fault: str) -> None:  # type: ignore[no-untyped-def]
    import torch

    exc: Exception = RuntimeError("CUDA error: an illegal memory access was encountered") if fault == "exception" \
        else torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with job_client(settings, engine, tmp_path) as c, faulty_engine(monkeypatch, "BOOM", exc) as calls:
        long, jobs = _batch_behind_a_long_job(c, ["ok 1", "BOOM", "ok 2", "ok 3"])
        done = {j["id"]: wait_done(c, j["id"]) for j in [long, *jobs]}
        statuses = [done[j["id"]]["status"] for j in jobs]
        assert statuses == ["succeeded", "failed", "succeeded", "succeeded"], [done[j["id"]] for j in jobs]
        assert done[long["id"]]["status"] == "succeeded"
        error = done[jobs[1]["id"]]["error"]
        assert error["type"] == "server_error"
        assert ("illegal memory access" if fault == "exception" else "out of memory generating 1 image(s)") \
            in error["message"]
        # They did share a loop (the fault hit a batch), and the batch was split to find the culprit.
        assert any("BOOM" in b and len(b) > 1 for b in calls), calls
        assert ["BOOM"] in calls
        # Failed jobs are not retried (it would fail again), and the server goes on serving.
        assert done[jobs[1]["id"]]["attempts"] == 1
        after = c.post("/v1/jobs", json={**FAST, "prompt": "after"}).json()
        assert wait_done(c, after["id"])["status"] == "succeeded"
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
        assert 'sdserve_job_errors_total{kind="server_error"} 1.0' in metrics


def test_a_long_job_holds_up_no_other_request(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Found by fuzzing: /readyz waited for the engine's lock, i.e. for the whole running loop.
    with job_client(settings, engine, tmp_path) as c:
        long = c.post("/v1/jobs", json={**LONG, "steps": 150}).json()
        deadline = time.time() + 60
        while c.get(f"/v1/jobs/{long['id']}").json()["status"] != "running":
            assert time.time() < deadline
            time.sleep(0.01)
        for path in ("/readyz", "/metrics", "/v1/jobs", f"/v1/jobs/{long['id']}", "/sdapi/v1/progress", "/v1/models"):
            t0 = time.monotonic()
            assert c.get(path).status_code == 200
            assert time.monotonic() - t0 < 1.0, path
        assert c.get(f"/v1/jobs/{long['id']}").json()["status"] == "running"  # the check ran during the job
        c.delete(f"/v1/jobs/{long['id']}")


# -- the output store --------------------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the ENOSPC store test covers this")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_fails_the_job_clearly_keeps_nothing_and_loses_no_other(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    outputs = tmp_path / "outputs"
    with tmpfs(outputs, "256k"):
        with job_client(settings, engine, tmp_path / "data", outputs_dir=str(outputs)) as c:
            before = c.post("/v1/jobs", json={**FAST, "prompt": "before"}).json()
            assert wait_done(c, before["id"])["status"] == "succeeded"
            kept = set(_files(outputs))
            # Fill the disk, leaving room for about one image: a 4-image job stores one, then fails.
            filler = outputs / "filler"
            free = os.statvfs(outputs).f_bavail * os.statvfs(outputs).f_frsize
            filler.write_bytes(b"\0" * max(0, free - 12 * 1024))
            full = c.post("/v1/jobs", json={**FAST, "prompt": "full", "n": 4}).json()
            failed = wait_done(c, full["id"])
            assert failed["status"] == "failed" and failed["outputs"] == []
            assert failed["error"]["message"] == "could not store the outputs: no space left on device"
            assert str(outputs) not in failed["error"]["message"]
            assert set(_files(outputs)) == kept | {filler}, "a failed job left files behind"
            # Space again: the next job is fine, and the earlier one's images are still served.
            filler.unlink()
            after = c.post("/v1/jobs", json={**FAST, "prompt": "after", "n": 2}).json()
            assert wait_done(c, after["id"])["status"] == "succeeded"
            for j in (before, after):
                for out in c.get(f"/v1/jobs/{j['id']}").json()["outputs"]:
                    assert c.get(out["url"]).status_code == 200
            assert c.get("/readyz").status_code == 200


def test_a_store_raising_enospc_mid_batch_fails_only_that_job(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without a tmpfs: a store that fills up for one job of a batch, the way a disk does."""
    from fastapi.testclient import TestClient

    from sdserve.api.app import build_app
    from sdserve.service.artifacts import LocalArtifacts

    class FillsUp(LocalArtifacts):
        def put(self, key: str, data: bytes, content_type: str) -> None:
            if victim and key.startswith(victim[0] + "/") and len(_files(self.root)) >= 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / key))
            super().put(key, data, content_type)

    victim: list[str] = []
    s, service = make_service(settings, engine, tmp_path, artifacts=FillsUp(tmp_path / "outputs"))
    with TestClient(build_app(s, service)) as c:
        long, jobs = _batch_behind_a_long_job(c, [])
        victim.append(c.post("/v1/jobs", json={**FAST, "prompt": "victim", "n": 3}).json()["id"])
        others = [c.post("/v1/jobs", json={**FAST, "prompt": f"other {i}"}).json()["id"] for i in range(2)]
        assert wait_done(c, victim[0])["error"]["message"] == "could not store the outputs: no space left on device"
        assert all(wait_done(c, j)["status"] == "succeeded" for j in [long["id"], *others])
        assert not (tmp_path / "outputs" / victim[0]).exists() or not _files(tmp_path / "outputs" / victim[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(port: int) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                assert time.time() < deadline, "moto server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_unreachable_s3_fails_the_job_clearly_and_the_server_recovers_when_it_is_back(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = {"outputs_backend": "s3", "s3_endpoint_url": endpoint, "s3_bucket": "outs", "s3_access_key_id": "testing",
          "s3_secret_access_key": "testing", "s3_region": "us-east-1"}
    with job_client(settings, engine, tmp_path, **s3) as c:
        t0 = time.monotonic()
        down = c.post("/v1/jobs", json={**FAST, "prompt": "s3 down"}).json()
        failed = wait_done(c, down["id"])
        assert failed["status"] == "failed", failed
        assert failed["error"]["message"] == ("could not store the outputs: the output store could not be reached "
                                              "(EndpointConnectionError)")
        assert time.monotonic() - t0 < 30  # boto's bounded retries, not a hang
        assert c.get("/readyz").status_code == 200
        with moto_server(port):
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                         region_name="us-east-1").create_bucket(Bucket="outs")
            up = c.post("/v1/jobs", json={**FAST, "prompt": "s3 back"}).json()
            done = wait_done(c, up["id"])
            assert done["status"] == "succeeded"
            assert c.get(done["outputs"][0]["url"]).status_code == 200
        assert c.get(f"/v1/jobs/{down['id']}").json()["status"] == "failed"  # recorded, not lost or re-run


# -- webhook receivers ----------------------------------------------------------------------------


def test_webhook_receivers_down_or_slow_delay_nothing_else_and_are_retried(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.test_jobs_webhooks import _wait_delivery

    def slow(method: str, path: str, *_: Any) -> tuple[int, dict[str, str], bytes]:
        time.sleep(8)
        return 200, {}, b""

    arrived: dict[str, float] = {}

    def healthy(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        arrived[path] = time.monotonic()
        return 200, {}, b""

    dead = f"http://127.0.0.1:{_free_port()}/hook"  # nothing listens there
    with http_server(slow) as (slow_url, _), http_server(healthy) as (ok_url, _), \
            job_client(settings, engine, tmp_path, allow_private_urls=True, fetch_timeout_s=4,
                       webhook_retry_base_s=0.3) as c:
        t0 = time.monotonic()
        stuck = [c.post("/v1/jobs", json={**FAST, "prompt": f"to {u}", "webhook": u}).json()
                 for u in (f"{slow_url}/slow", dead) for _ in range(4)]
        fine = [c.post("/v1/jobs", json={**FAST, "prompt": f"ok {i}", "webhook": f"{ok_url}/ok/{i}"}).json()
                for i in range(4)]
        finished = {j["id"]: wait_done(c, j["id"]) for j in stuck + fine}
        assert all(f["status"] == "succeeded" for f in finished.values())
        jobs_done = time.monotonic()
        assert jobs_done - t0 < 30  # the jobs themselves never wait for webhooks
        deadline = time.monotonic() + 10
        while len(arrived) < 4:
            assert time.monotonic() < deadline, f"healthy webhooks held up: only {sorted(arrived)} arrived"
            time.sleep(0.02)
        # Each healthy webhook arrived while the slow receiver still held its connections (8 s).
        assert max(arrived.values()) - jobs_done < 3, "healthy webhooks waited for the slow receiver"
        # The dead receiver is retried with backoff; the slow one times out and is retried too.
        for j in stuck:
            deadline = time.monotonic() + 20
            while (row := c.service.webhooks.deliveries(j["id"])[0])["attempts"] < 2:
                assert time.monotonic() < deadline, row
                time.sleep(0.05)
            assert row["status"] == "pending" and row["last_error"]
        assert _wait_delivery(c.service, fine[0]["id"], "delivered")["attempts"] == 1


def test_every_store_deletes_a_jobs_leftovers_by_prefix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What a re-run job uses to drop outputs its killed attempt stored but never recorded."""
    import boto3

    from sdserve.service.artifacts import LocalArtifacts, MemoryArtifacts, S3Artifacts

    port = _free_port()
    with moto_server(port) as endpoint:
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="outs")
        stores = [LocalArtifacts(tmp_path / "outputs"), MemoryArtifacts(),
                  S3Artifacts("outs", "p/", endpoint_url=endpoint, region="us-east-1", access_key_id="testing",
                              secret_access_key="testing")]
        for store in stores:
            for key in ("job1/a.png", "job1/b.png", "job10/c.png", "job2/d.png"):
                store.put(key, b"x", "image/png")
            assert store.delete_prefix("job1/") == 2, store
            assert store.get("job10/c.png") == b"x" and store.get("job2/d.png") == b"x"
            assert store.delete_prefix("job1/") == 0
            with pytest.raises(ValueError):
                store.delete_prefix("../")
