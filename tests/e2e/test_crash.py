"""Crash safety with a real server process: jobs are submitted, the server is killed with
SIGKILL in the middle of a job, and after a restart every job succeeds exactly once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SDSERVE_DTYPE": "float32", "SDSERVE_PREVIEW_EVERY": "0"}
    cmd = [sys.executable, "-m", "sdserve.cli.main", "serve", "--demo", "--device", "cpu",
           "--data-dir", str(data), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server did not become ready:\n{log.read_text()[-3000:]}")


def test_sigkill_mid_job_then_restart_runs_every_job_exactly_once(tiny_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "demo-models").symlink_to(tiny_dir, target_is_directory=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    job = {"model": "sd15", "prompt": "crash test", "width": 64, "height": 64}

    proc = _start(data, port, log)
    try:
        long = httpx.post(f"{base}/v1/jobs", json={**job, "steps": 40, "seed": 1}).json()
        rest = [httpx.post(f"{base}/v1/jobs", json={**job, "steps": 2, "seed": s, "n": 2}).json() for s in (2, 3)]
        deadline = time.time() + 120
        while time.time() < deadline:
            cur = httpx.get(f"{base}/v1/jobs/{long['id']}").json()
            if cur["status"] == "running" and cur["progress"]["step"] >= 1:
                break
            assert cur["status"] in ("queued", "running"), cur
            time.sleep(0.01)
        else:
            raise AssertionError("the long job never started")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()

    proc = _start(data, port, log)
    try:
        ids = [long["id"]] + [j["id"] for j in rest]
        final = {}
        deadline = time.time() + 180
        while len(final) < len(ids) and time.time() < deadline:
            for i in ids:
                body = httpx.get(f"{base}/v1/jobs/{i}").json()
                if body["status"] in ("succeeded", "failed", "canceled"):
                    final[i] = body
            time.sleep(0.1)
        assert len(final) == len(ids), f"jobs left unfinished: {set(ids) - set(final)}"
        assert all(b["status"] == "succeeded" for b in final.values()), final
        # The interrupted job ran a second time; the ones that were waiting ran once.
        assert final[long["id"]]["attempts"] == 2
        assert [final[j["id"]]["attempts"] for j in rest] == [1, 1]
        for i, b in final.items():
            n = b["params"]["n"]
            assert len(b["outputs"]) == n
            for out in b["outputs"]:
                assert httpx.get(out["url"]).status_code == 200
            # Exactly one completed run wrote outputs: no leftovers of a second one.
            assert len(list((data / "outputs" / i).iterdir())) == n
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "queued again" in log.read_text()
