"""``sdserve bench`` end to end on tiny models: one run measures the baseline and the server,
writes every documented key, and honours the server settings given with --config."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_cli import cli_env, sdserve_cmd

KEYS = {"baseline_images_per_s", "sdserve_images_per_s", "speedup", "latency_p50_s", "latency_p95_s", "mfu",
        "baseline_mfu", "overhead_ms_p50", "batch_invariant", "device", "dtype", "peak_flops", "flops_per_image",
        "channels_last", "compile", "baseline_cpu_util", "sdserve_cpu_util"}


@pytest.mark.slow
def test_bench_tiny_writes_every_key(tmp_path: Path) -> None:
    cfg = tmp_path / "server.toml"
    cfg.write_text('channels_last = "off"\nmax_batch_images = 2\n')
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [*sdserve_cmd(), "bench", "--arch", "tiny", "--requests", "3", "--concurrency", "2", "--steps", "1",
         "--device", "cpu", "--data-dir", str(tmp_path), "--config", str(cfg), "--json", str(out)],
        env=cli_env(), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert KEYS <= set(res)
    assert res["baseline_images_per_s"] > 0 and res["sdserve_images_per_s"] > 0
    assert res["speedup"] == pytest.approx(res["sdserve_images_per_s"] / res["baseline_images_per_s"])
    assert res["batch_invariant"] is True
    assert 0 < res["baseline_cpu_util"] <= 1.5 and 0 < res["sdserve_cpu_util"] <= 1.5
    assert res["channels_last"] is False  # the --config reached the server (default: on)
    assert "speedup" in proc.stdout  # the readable table
