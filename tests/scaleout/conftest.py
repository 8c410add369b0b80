"""The scale-out tier's cluster: PostgreSQL and an S3 server (moto) started here, a local
Ray instance on loopback, and the sdserve Serve application on it with two API replicas
and two CPU model replicas over a tiny SD 1.5. Everything stops when the module ends."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import S3_CREDS, free_port, moto_s3, postgres, s3_client

BUCKET = "outs"
PREFIX = "sdserve/"
REPLICA_HEADER = "x-sdserve-replica"  # sdserve.deploy.ray.REPLICA_HEADER (imported lazily: ray)


@dataclass
class Cluster:
    base: str             # the Ray Serve HTTP proxy
    database_url: str
    s3: Any               # boto3 client of the bucket's server
    settings: Any

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.base + path, timeout=30, **kw)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(self.base + path, timeout=30)

    def api_replicas(self, timeout: float = 60) -> set[str]:
        """Ids of the API replicas answering now (the proxy spreads requests over them)."""
        seen: set[str] = set()
        deadline = time.time() + timeout
        while len(seen) < self.settings.ray_api_replicas and time.time() < deadline:
            r = self.get("/healthz")
            if r.status_code == 200:
                seen.add(r.headers[REPLICA_HEADER])
        return seen

    def bucket_keys(self) -> set[str]:
        return {o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import ray
    from ray import serve

    from sdserve.config import Settings
    from sdserve.deploy.ray import APP_NAME, build_ray_app
    from sdserve.engine.tiny import write_tiny

    data = tmp_path_factory.mktemp("scaleout")
    write_tiny(data / "demo-models", "sd15")  # the only model these tests use
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray's "no multi-node cluster" switch: the node's address is loopback, so every Ray
    # process (GCS, raylet, workers, agents) listens on 127.0.0.1 only.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Ray's socket paths must stay short; pytest's temp dirs are too deep.
    ray_tmp = Path(tempfile.mkdtemp(prefix="sdray-", dir="/tmp"))
    with postgres() as db_url, moto_s3() as s3_url:
        s3 = s3_client(s3_url)
        s3.create_bucket(Bucket=BUCKET)
        settings = Settings(
            demo=True, data_dir=data, device="cpu", dtype="float32", preview_every=5,
            database_url=db_url, outputs_backend="s3", s3_endpoint_url=s3_url, s3_bucket=BUCKET, s3_prefix=PREFIX,
            **S3_CREDS,
            # A short lease so a dead API replica's job comes back within seconds.
            job_lease_s=6, max_attempts=3,
            ray_api_replicas=2, ray_api_num_cpus=0.5, ray_batches_in_flight=1,
            ray_model_min_replicas=2, ray_model_max_replicas=2, ray_model_num_gpus=0, ray_model_num_cpus=1,
            # One batch per model replica: two batches in flight occupy both.
            ray_model_max_ongoing_requests=1, max_loaded_models=1,
        )
        ray.init(num_cpus=4, include_dashboard=False, _temp_dir=str(ray_tmp),
                 object_store_memory=128 * 2**20, logging_level=logging.WARNING)
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build_ray_app(settings), name=APP_NAME, route_prefix="/")
            yield Cluster(base=f"http://127.0.0.1:{port}", database_url=db_url, s3=s3, settings=settings)
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
                shutil.rmtree(ray_tmp, ignore_errors=True)
