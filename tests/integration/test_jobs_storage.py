"""Output storage: the S3 backend against a real S3-compatible server process (moto's server
mode on loopback), presigned URLs, and retention cleanup on both backends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.jobs_support import FAST, job_client, wait_done
from tests.servers import S3_CREDS as CREDS
from tests.servers import moto_s3, s3_client


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


def test_s3_round_trip_presigned_urls_and_retention(settings, engine, tmp_path, s3_endpoint):
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket="outs")
    common = {"outputs_backend": "s3", "s3_endpoint_url": s3_endpoint, "s3_bucket": "outs",
              "s3_prefix": "sdserve/", **CREDS}

    with job_client(settings, engine, tmp_path, **common) as c:
        job = c.post("/v1/jobs", json={**FAST, "n": 2, "seed": 9}).json()
        done = wait_done(c, job["id"])
        assert done["status"] == "succeeded"
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="outs")["Contents"])
        assert len(keys) == 2 and all(k.startswith(f"sdserve/{job['id']}/") for k in keys)
        for out in done["outputs"]:
            served = c.get(out["url"])  # through this server
            assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
            token = out["url"].rsplit("/", 1)[1]
            stored = s3.get_object(Bucket="outs", Key=f"sdserve/{job['id']}/{token}.png")["Body"].read()
            assert stored == served.content
        assert not (tmp_path / "outputs").exists()  # nothing went to local disk

    with job_client(settings, engine, tmp_path / "presign", s3_presign=True, output_url_ttl_s=120, **common) as c:
        job = c.post("/v1/jobs", json=FAST).json()
        url = wait_done(c, job["id"])["outputs"][0]["url"]
        assert url.startswith(s3_endpoint) and "X-Amz-Expires=120" in url and "X-Amz-Signature=" in url
        direct = httpx.get(url)
        assert direct.status_code == 200 and direct.content.startswith(b"\x89PNG")

    with job_client(settings, engine, tmp_path / "retention", output_retention_hours=0.5 / 3600, **common) as c:
        job = c.post("/v1/jobs", json=FAST).json()
        out = wait_done(c, job["id"])["outputs"][0]
        before = {o["Key"] for o in s3.list_objects_v2(Bucket="outs")["Contents"]}
        time.sleep(0.6)
        assert c.get(out["url"]).status_code == 404  # expired, even before cleanup runs
        assert c.service.cleanup_expired() == 1
        after = {o["Key"] for o in s3.list_objects_v2(Bucket="outs")["Contents"]}
        assert len(before - after) == 1 and all(job["id"] in k for k in before - after)
        assert c.get(f"/v1/jobs/{job['id']}").json()["outputs"][0]["url"] is None


def test_local_retention_deletes_files(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path, output_retention_hours=0.5 / 3600) as c:
        job = c.post("/v1/jobs", json=FAST).json()
        wait_done(c, job["id"])
        folder = tmp_path / "outputs" / job["id"]
        assert len(list(folder.iterdir())) == 1
        time.sleep(0.6)
        assert c.service.cleanup_expired() == 1
        assert not folder.exists()
        assert c.service.cleanup_expired() == 0
