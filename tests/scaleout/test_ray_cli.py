"""`sdserve serve --ray local` end to end: a Ray instance of its own on loopback, the
Serve application over PostgreSQL and S3, a Workers AI request answered with a PNG through
it, and Ctrl-C removing the application and stopping Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, moto_s3, postgres, s3_client

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(400)]


def test_serve_ray_local_answers_and_stops_on_ctrl_c(tmp_path):
    from sdserve.engine.tiny import write_tiny

    write_tiny(tmp_path / "demo-models", "sd15")
    ray_tmp = Path(tempfile.mkdtemp(prefix="sdray-", dir="/tmp"))  # Ray's socket paths must stay short
    with postgres() as db_url, moto_s3() as s3_url:
        s3_client(s3_url).create_bucket(Bucket="outs")
        port = free_port()
        env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every Ray process on loopback
               "SDSERVE_DATABASE_URL": db_url, "SDSERVE_OUTPUTS_BACKEND": "s3", "SDSERVE_S3_BUCKET": "outs",
               "SDSERVE_S3_ENDPOINT_URL": s3_url, "SDSERVE_S3_ACCESS_KEY_ID": "testing",
               "SDSERVE_S3_SECRET_ACCESS_KEY": "testing", "SDSERVE_S3_REGION": "us-east-1",
               "SDSERVE_DEVICE": "cpu", "SDSERVE_DTYPE": "float32", "SDSERVE_RAY_API_REPLICAS": "1",
               "SDSERVE_RAY_MODEL_NUM_GPUS": "0", "SDSERVE_RAY_MODEL_NUM_CPUS": "1"}
        log = tmp_path / "serve.log"  # a file, not a pipe: Ray's log lines would fill a pipe nobody reads
        proc = subprocess.Popen([sys.executable, "-m", "sdserve.cli.main", "serve", "--ray", "local", "--demo",
                                 "--data-dir", str(tmp_path), "--port", str(port)],
                                env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 180
            while time.time() < deadline and proc.poll() is None:
                try:
                    if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                raise AssertionError(f"sdserve serve --ray local did not become ready (exit {proc.poll()}):\n"
                                     + log.read_text()[-3000:])
            r = httpx.post(base + "/ai/run/@cf/runwayml/stable-diffusion-v1-5-img2img",
                           json={"prompt": "a lighthouse", "width": 256, "height": 256, "num_steps": 2, "seed": 1},
                           timeout=180)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG")
            assert r.headers["x-sdserve-seed"] == "1" and r.headers["x-sdserve-replica"]
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            assert proc.wait(90) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            shutil.rmtree(ray_tmp, ignore_errors=True)
        with pytest.raises(httpx.HTTPError):
            httpx.get(base + "/healthz", timeout=2)  # the proxy went with it
