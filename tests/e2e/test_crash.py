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


def _server_place(tiny_dir: Path, tmp_path: Path) -> tuple[Path, int, str, Path]:
    """A data dir serving the session's tiny models as demo models, a free port, its base
    URL and the log file: where a test's server runs, before and after the kill."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "demo-models").symlink_to(tiny_dir, target_is_directory=True)
    port = _free_port()
    return data, port, f"http://127.0.0.1:{port}", tmp_path / "server.log"


def test_sigkill_mid_job_then_restart_runs_every_job_exactly_once(tiny_dir, tmp_path):
    data, port, base, log = _server_place(tiny_dir, tmp_path)
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


def test_sigkill_under_load_then_restart_completes_every_accepted_job_exactly_once(tiny_dir, tmp_path):
    """Clients of three dialects keep the server busy; it is killed with SIGKILL while jobs run
    and wait. After a restart every job it accepted (those whose clients were cut off too)
    succeeds, with exactly its images on disk, and each completion webhook carries one id."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hooks: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            hooks.append({"id": self.headers["webhook-id"], "job": body["data"]["id"], "type": body["type"]})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"

    data, port, base, log = _server_place(tiny_dir, tmp_path)
    os.environ["SDSERVE_ALLOW_PRIVATE_URLS"] = "1"  # the webhook receiver is on loopback
    try:
        proc = _start(data, port, log)
    finally:
        del os.environ["SDSERVE_ALLOW_PRIVATE_URLS"]
    accepted: list[str] = []
    stop = threading.Event()

    def sync_client(kind: str) -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            while not stop.is_set():
                try:
                    if kind == "workers_ai":
                        c.post("/ai/run/sd15", json={"prompt": "sync", "width": 256, "height": 256, "num_steps": 3})
                    else:
                        r = c.post("/api/v3/text2img", json={"prompt": "ml", "width": "64", "height": "64",
                                                             "num_inference_steps": "4", "instant_response": "yes"})
                        accepted.append(r.json()["id"])
                except (httpx.HTTPError, ValueError, KeyError):
                    return  # the server is gone

    try:
        job = {"model": "sd15", "prompt": "load", "width": 64, "height": 64, "steps": 6, "webhook": hook_url}
        for i in range(10):
            accepted.append(httpx.post(f"{base}/v1/jobs", json={**job, "seed": i, "n": 1 + i % 2}).json()["id"])
        # One long job, so the kill lands while a job surely runs: a 6-step one could end
        # between the listing that saw it running and the signal.
        long_id = httpx.post(f"{base}/v1/jobs", json={**job, "seed": 99, "steps": 150}).json()["id"]
        accepted.append(long_id)
        clients = [threading.Thread(target=sync_client, args=(k,), daemon=True) for k in ("workers_ai", "modelslab")]
        for t in clients:
            t.start()
        deadline = time.time() + 120
        while time.time() < deadline:  # kill once some jobs are done and others still run or wait
            listed = httpx.get(f"{base}/v1/jobs", params={"limit": 500}).json()["data"]
            done = sum(j["status"] == "succeeded" for j in listed)
            if done >= 4 and any(j["id"] == long_id and j["status"] == "running" for j in listed):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the load never got going")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for t in clients:
            t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()

    os.environ["SDSERVE_ALLOW_PRIVATE_URLS"] = "1"
    try:
        proc = _start(data, port, log)
    finally:
        del os.environ["SDSERVE_ALLOW_PRIVATE_URLS"]
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            listed = httpx.get(f"{base}/v1/jobs", params={"limit": 500}).json()["data"]
            if all(j["status"] in ("succeeded", "failed", "canceled") for j in listed):
                break
            time.sleep(0.2)
        ids = {j["id"] for j in listed}
        assert set(accepted) <= ids, "an accepted job is missing"
        assert len(listed) > len(accepted), "no synchronous request's job was accepted before the kill"
        assert all(j["status"] == "succeeded" for j in listed), [j for j in listed if j["status"] != "succeeded"]
        assert next(j for j in listed if j["id"] == long_id)["attempts"] == 2, "the long job was not running at the kill"
        assert all(j["attempts"] <= 2 for j in listed)
        for j in listed:
            n = j["params"]["n"]
            assert len(j["outputs"]) == n
            assert len(list((data / "outputs" / j["id"]).iterdir())) == n, j["id"]
        # Completion webhooks: every native job's arrives, under one webhook-id however often it is sent.
        native = [j for j in listed if j["webhook"]]
        deadline = time.time() + 60
        while {h["job"] for h in hooks if h["type"] == "job.succeeded"} != {j["id"] for j in native}:
            assert time.time() < deadline, "completion webhooks missing after the restart"
            time.sleep(0.1)
        for j in native:
            assert len({h["id"] for h in hooks if h["job"] == j["id"] and h["type"] == "job.succeeded"}) == 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        receiver.shutdown()
