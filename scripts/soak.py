#!/usr/bin/env python3
"""Bounded soak on loopback: a real `sdserve serve --demo` process (tiny models) and N
concurrent clients sending a mix of every dialect, then the figures as JSON.

    .venv/bin/python scripts/soak.py --requests 500 --concurrency 32

Every request must succeed, or be refused with the documented backpressure (429/503 with
Retry-After, which the client honours, retrying up to 29 times); every accepted job must end
'succeeded'; the server's resident memory is sampled throughout. Exit status 1 if any
request failed otherwise or any accepted job did not succeed. docs/RELIABILITY.md records a run.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

KINDS = ["workers_ai", "workers_ai_img2img", "openai", "a1111", "modelslab", "native"]


def _png(size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (120, 40, 200)).save(buf, format="PNG")
    return buf.getvalue()


IMAGE = list(_png())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """`sdserve serve --demo` in a child process, on loopback."""

    def __init__(self, data: Path, port: int, max_queue: int, log: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "SDSERVE_DTYPE": "float32", "SDSERVE_PREVIEW_EVERY": "0",
               "SDSERVE_MODELSLAB_WAIT_S": "30", "SDSERVE_MAX_QUEUE": str(max_queue)}
        cmd = [sys.executable, "-m", "sdserve.cli.main", "serve", "--demo", "--device", "cpu",
               "--data-dir", str(data), "--port", str(port), "--host", "127.0.0.1"]
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {log}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"server did not become ready; see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _wait_job(c: httpx.Client, job_id: str, timeout: float = 600) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = c.get(f"/v1/jobs/{job_id}").json()["status"]
        if status in ("succeeded", "failed", "canceled"):
            return status  # type: ignore[no-any-return]
        time.sleep(0.05)
    return "timeout"


def one_request(c: httpx.Client, kind: str, seed: int) -> tuple[httpx.Response, str]:
    """Send one request of ``kind``; returns the (last) response and the outcome: 'ok', or why not."""
    if kind == "workers_ai":
        r = c.post("/ai/run/sd15", json={"prompt": f"soak {seed}", "width": 256, "height": 256, "num_steps": 2,
                                          "seed": seed})
        return r, "ok" if r.status_code == 200 and r.content.startswith(b"\x89PNG") else f"http {r.status_code}"
    if kind == "workers_ai_img2img":
        r = c.post("/ai/run/sd15", json={"prompt": f"soak {seed}", "image": IMAGE, "num_steps": 2, "seed": seed,
                                          "strength": 0.8})
        return r, "ok" if r.status_code == 200 and r.content.startswith(b"\x89PNG") else f"http {r.status_code}"
    if kind == "openai":
        r = c.post("/v1/images/generations", json={"prompt": f"soak {seed}", "size": "64x64", "steps": 2,
                                                   "seed": seed, "response_format": "b64_json", "model": "sd15"})
        ok = r.status_code == 200 and base64.b64decode(r.json()["data"][0]["b64_json"]).startswith(b"\x89PNG")
        return r, "ok" if ok else f"http {r.status_code}"
    if kind == "a1111":
        r = c.post("/sdapi/v1/txt2img", json={"prompt": f"soak {seed}", "width": 64, "height": 64, "steps": 2,
                                               "seed": seed})
        return r, "ok" if r.status_code == 200 and len(r.json()["images"]) == 1 else f"http {r.status_code}"
    if kind == "modelslab":
        r = c.post("/api/v3/text2img", json={"prompt": f"soak {seed}", "width": "64", "height": "64",
                                             "num_inference_steps": "2", "seed": seed})
        if r.status_code != 200:
            return r, f"http {r.status_code}"
        body = r.json()
        while body["status"] == "processing":
            time.sleep(0.1)
            body = c.post(f"/api/v3/fetch/{body['id']}", json={}).json()
        return r, "ok" if body["status"] == "success" else f"modelslab {body['status']}"
    r = c.post("/v1/jobs", json={"model": "sd15", "prompt": f"soak {seed}", "width": 64, "height": 64, "steps": 2,
                                 "seed": seed})
    if r.status_code != 201:
        return r, f"http {r.status_code}"
    status = _wait_job(c, r.json()["id"])
    return r, "ok" if status == "succeeded" else f"job {status}"


def soak(base: str, pid: int, requests: int, concurrency: int) -> dict[str, Any]:
    todo = iter(range(requests))
    lock = threading.Lock()
    outcomes: Counter[str] = Counter()
    backpressure: Counter[int] = Counter()
    latency: dict[str, list[float]] = defaultdict(list)
    done = [0]
    rss: list[tuple[float, int, float]] = []  # (time, requests done, MB)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss.append((time.monotonic(), done[0], _rss_mb(pid)))
            stop.wait(0.25)

    def client() -> None:
        with httpx.Client(base_url=base, timeout=600) as c:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                kind = KINDS[i % len(KINDS)]
                t0 = time.monotonic()
                outcome = "error"
                for _attempt in range(30):  # backpressure is answered with Retry-After: honour it
                    try:
                        r, outcome = one_request(c, kind, i)
                    except (httpx.HTTPError, ValueError, KeyError) as e:
                        outcome = f"exception {type(e).__name__}"
                        break
                    if r.status_code not in (429, 503):
                        break
                    with lock:
                        backpressure[r.status_code] += 1
                    time.sleep(min(2.0, float(r.headers.get("retry-after", "1"))))
                with lock:
                    outcomes[outcome] += 1
                    latency[kind].append(time.monotonic() - t0)
                    done[0] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    stop.set()
    sampler.join()

    # Memory after warm-up: from the time 30% of the requests were done (allocator pools and
    # caches have grown by then; see the curve in by_progress), to the end.
    warm = [mb for _, n, mb in rss if n >= requests * 3 // 10] or [rss[-1][2]]
    with httpx.Client(base_url=base, timeout=60) as c:
        jobs = c.get("/v1/jobs", params={"limit": 500}).json()["data"]  # the newest 500
    job_statuses = Counter(j["status"] for j in jobs)
    q = lambda xs, p: round(statistics.quantiles(xs, n=100, method="inclusive")[p - 1], 3) if len(xs) > 1 else round(xs[0], 3)  # noqa: E731
    return {
        "requests": requests, "concurrency": concurrency, "elapsed_s": round(elapsed, 1),
        "requests_per_s": round(requests / elapsed, 2), "outcomes": dict(outcomes),
        "backpressure_retries": {str(k): v for k, v in backpressure.items()},
        "errors": sum(v for k, v in outcomes.items() if k != "ok"),
        "jobs_in_store": dict(job_statuses),
        "latency_s": {k: {"p50": q(v, 50), "p95": q(v, 95), "max": round(max(v), 3)} for k, v in sorted(latency.items())},
        "rss_mb": {"start": round(rss[0][2], 1), "after_warmup": round(warm[0], 1), "end": round(rss[-1][2], 1),
                   "max_after_warmup": round(max(warm), 1), "growth_after_warmup": round(rss[-1][2] - warm[0], 1),
                   "samples": len(rss),
                   # The curve: resident memory when each further tenth of the requests was done.
                   "by_progress": {f"{p}%": round(next((mb for _, n, mb in rss if n >= requests * p // 100),
                                                       rss[-1][2]), 1) for p in range(10, 101, 10)}},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-queue", type=int, default=256, help="server max_queue (lower it to see 503s)")
    ap.add_argument("--tiny-dir", type=Path, help="tiny models written by `sdserve make-tiny` (else written now)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="sdserve-soak-"))
    data = root / "data"
    data.mkdir()
    if args.tiny_dir:
        (data / "demo-models").symlink_to(args.tiny_dir.resolve(), target_is_directory=True)
    log = root / "server.log"
    server = Server(data, _free_port(), args.max_queue, log)
    try:
        with httpx.Client(base_url=server.base, timeout=600) as c:  # warm-up: load the model, one of each kind
            for i, kind in zip(itertools.count(10_000), KINDS):
                one_request(c, kind, i)
        report = soak(server.base, server.proc.pid, args.requests, args.concurrency)
        report["server_log_errors"] = sum(" ERROR " in line or "Traceback" in line
                                          for line in log.read_text(errors="replace").splitlines())
    finally:
        server.stop()
        if args.keep:
            report["data_dir"] = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    accepted_ok = all(s == "succeeded" for s in report["jobs_in_store"]) if report["jobs_in_store"] else True
    report["every_accepted_job_succeeded"] = accepted_ok
    print(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 and accepted_ok and report["server_log_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
