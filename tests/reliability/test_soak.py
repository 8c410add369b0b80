"""A small soak in CI (60 requests, 16 clients): scripts/soak.py (the same tool as the long run in docs/RELIABILITY.md)
with a real server process, every dialect, bounded in count and time. Nothing may fail except
documented backpressure, every accepted job succeeds, and the server's memory stays bounded.

A second run lowers max_queue so backpressure really happens: 503 (429 for Workers AI) with
Retry-After, which the clients honour, and still nothing else fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _soak(tiny_dir: Path, *args: str) -> dict:  # type: ignore[type-arg]
    cmd = [sys.executable, str(ROOT / "scripts" / "soak.py"), "--tiny-dir", str(tiny_dir), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert r.stdout, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert r.returncode == 0, report
    return report  # type: ignore[no-any-return]


def test_small_soak_every_dialect_no_errors_memory_bounded(tiny_dir) -> None:  # type: ignore[no-untyped-def]
    report = _soak(tiny_dir, "--requests", "60", "--concurrency", "16")
    assert report["outcomes"] == {"ok": 60}
    assert report["every_accepted_job_succeeded"] and report["server_log_errors"] == 0
    # Loose for a short CI run on a shared machine; the long run's figure is in docs/RELIABILITY.md.
    assert report["rss_mb"]["growth_after_warmup"] < 250, report["rss_mb"]


def test_backpressure_is_the_documented_503_or_429_and_loses_nothing(tiny_dir) -> None:  # type: ignore[no-untyped-def]
    report = _soak(tiny_dir, "--requests", "32", "--concurrency", "16", "--max-queue", "2")
    assert report["outcomes"] == {"ok": 32}, report
    assert sum(report["backpressure_retries"].values()) > 0, "max_queue=2 with 16 clients never pushed back"
    assert set(report["backpressure_retries"]) <= {"429", "503"}
    assert report["every_accepted_job_succeeded"]
