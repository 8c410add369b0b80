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
         "--device", "cpu", "--data-dir", str(tmp_path), "--config", str(cfg), "--json", str(out),
         "--hires", "--upscaler"],
        env=cli_env(), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert KEYS | {"hires_cost_ratio", "upscaler_output_mp_per_s"} <= set(res)
    assert res["baseline_images_per_s"] > 0 and res["sdserve_images_per_s"] > 0
    assert res["speedup"] == pytest.approx(res["sdserve_images_per_s"] / res["baseline_images_per_s"])
    assert res["batch_invariant"] is True
    assert 0 < res["baseline_cpu_util"] <= 1.5 and 0 < res["sdserve_cpu_util"] <= 1.5
    assert res["channels_last"] is False  # the --config reached the server (default: on)
    assert "speedup" in proc.stdout  # the readable table


@pytest.mark.slow
@pytest.mark.parametrize("flag", [["--lora"], ["--controlnet", "2"]])
def test_bench_addon_costs_tiny(tmp_path: Path, flag: list[str]) -> None:
    """--lora and --controlnet N run their interleaved rounds and report their ratios."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [*sdserve_cmd(), "bench", "--arch", "tiny", "--requests", "2", "--steps", "1", "--rounds", "1",
         "--device", "cpu", "--data-dir", str(tmp_path), "--json", str(out), *flag],
        env=cli_env(), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    if flag[0] == "--lora":
        assert res["hot_lora_throughput_ratio"] > 0 and res["switch_s"] > 0
        assert res["hot_lora_throughput_ratio"] == pytest.approx(res["images_per_s_hot_lora"]
                                                                 / res["images_per_s_without"])
    else:
        assert res["units"] == 2 and res["flops_ratio"] > 1 and res["time_ratio"] > 0
