"""Jobs whose run is cut off from outside (a Ray model replica dying: ``Interrupted``) go
back in line within ``max_attempts``; a service may keep several batches in flight. Run on
the real engine, wrapped to inject the interruption."""

from __future__ import annotations

import threading
from typing import Any

from sdserve.errors import Interrupted
from tests.jobs_support import FAST, job_client, wait_done


class LosesReplicas:
    """The real engine, except that its first ``lost`` batches end the way RemoteEngine
    reports a model replica that died under them."""

    def __init__(self, engine: Any, lost: int) -> None:
        self.engine, self.lost, self.batches = engine, lost, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate_batch(self, requests):  # type: ignore[no-untyped-def]
        self.batches += 1
        if self.lost > 0:
            self.lost -= 1
            return [Interrupted("the model replica running it stopped (test)") for _ in requests]
        return self.engine.generate_batch(requests)


def test_an_interrupted_job_runs_again_and_succeeds_once(settings, engine, tmp_path):
    flaky = LosesReplicas(engine, lost=1)
    with job_client(settings, flaky, tmp_path) as c:
        job = c.post("/v1/jobs", json={**FAST, "seed": 3}).json()
        done = wait_done(c, job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2 and len(done["outputs"]) == 1
    assert flaky.batches == 2


def test_interruptions_stop_at_max_attempts(settings, engine, tmp_path):
    flaky = LosesReplicas(engine, lost=10)
    with job_client(settings, flaky, tmp_path, max_attempts=2) as c:
        job = c.post("/v1/jobs", json=FAST).json()
        done = wait_done(c, job["id"])
    assert done["status"] == "failed" and done["attempts"] == 2
    assert done["error"]["type"] == "server_error"
    assert "interrupted 2 times" in done["error"]["message"]
    assert flaky.batches == 2


def test_several_workers_keep_batches_in_flight(settings, engine, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from sdserve.api.app import build_app
    from sdserve.compose import build_service
    from tests.jobs_support import job_settings

    s = job_settings(settings, tmp_path)
    service = build_service(s, engine, workers=2)
    in_flight: list[int] = []
    now = [0]
    lock = threading.Lock()
    real = service.engine.generate_batch

    def counting(requests):  # type: ignore[no-untyped-def]
        with lock:
            now[0] += 1
            in_flight.append(now[0])
        try:
            return real(requests)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(service.engine, "generate_batch", counting)  # the real engine, its calls counted
    with TestClient(build_app(s, service)) as c:
        assert len(service._workers) == 2 and c.get("/readyz").json()["worker"] == "running"
        # Different guidance: no two share a loop, so each is a batch of its own.
        ids = [c.post("/v1/jobs", json={**FAST, "steps": 8, "guidance": 4.0 + i}).json()["id"] for i in range(4)]
        done = [wait_done(c, j) for j in ids]
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in done), done
    assert max(in_flight) == 2  # two batches on the engine at once, never more
