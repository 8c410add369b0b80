"""``sdserve bench``: one run, same machine, same work: a plain diffusers baseline against
sdserve over HTTP, reported as ratios (speedup, MFU against a matmul peak measured now)."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.catalog import Arch

__all__ = ["cmd_bench", "add_bench_parser"]

_PROMPTS = ["a lighthouse on a cliff", "a bowl of fruit", "a red fox in snow", "a city at night",
            "a sailing boat", "mountains at dawn", "a cup of coffee", "an old library"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model_dir(arch: str, root: Path) -> tuple[Path, Arch]:
    if arch == "tiny":
        from ..engine.tiny import write_all_tiny

        return write_all_tiny(root / "tiny", ("sd15",))[0] / "base", "sd15"
    from ..engine.fullsize import write_full_size

    return write_full_size(root / "full", arch), "sdxl" if arch == "sdxl" else "sd15"


def _pixels(png: bytes) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _serve(settings: Any) -> tuple[Any, threading.Thread]:
    import uvicorn

    from ..api.app import build_app
    from sdserve.compose import build_service

    server = uvicorn.Server(uvicorn.Config(build_app(settings, build_service(settings)), host="127.0.0.1",
                                           port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def _addon_settings(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Server settings for the add-on measurements: the auxiliary models written as random
    weights (tiny beside tiny models, the real architectures beside full-size ones), and
    ModelsLab calls that wait for their job (the measurement goes through that dialect)."""
    if not (args.safety_checker or args.enhance_prompt):
        return {}
    from ..engine.auxiliary.tiny import write_tiny_aux

    aux = root / ("aux-tiny" if args.arch == "tiny" else "aux-full")
    write_tiny_aux(aux, ("safety-checker", "enhancer"), full_size=args.arch != "tiny")
    return {"safety_checker_model": str(aux / "safety-checker"), "enhancer_model": str(aux / "enhancer"),
            "modelslab_wait_s": 3600.0}


def _addon_costs(http: Any, base: str, args: argparse.Namespace, guidance: float) -> dict[str, Any]:
    """Seconds each add-on adds to one image: the same requests, one at a time, alternately
    without and with it (so drift hits both), medians compared."""
    flags = [f for f, on in (("safety_checker", args.safety_checker), ("enhance_prompt", args.enhance_prompt)) if on]
    out: dict[str, Any] = {}
    body = {"model_id": "bench", "width": args.size, "height": args.size, "num_inference_steps": args.steps,
            "guidance_scale": guidance, "samples": 1, "safety_checker": "no", "enhance_prompt": "no"}

    def timed(extra: dict[str, Any], i: int) -> float:
        t = time.perf_counter()
        r = http.post(f"{base}/api/v3/text2img", json={**body, **extra, "prompt": _PROMPTS[i % len(_PROMPTS)],
                                                       "seed": 2000 + i})
        r.raise_for_status()
        if r.json().get("status") != "success":
            raise RuntimeError(f"bench request with {extra} failed: {r.text[:300]}")
        return time.perf_counter() - t

    for flag in flags:
        timed({flag: "yes"}, 0)  # loads the auxiliary model
        plain, added = [], []
        for i in range(8 if args.arch == "tiny" else 4):
            plain.append(timed({}, i))
            added.append(timed({flag: "yes"}, i))
        p, a = statistics.median(plain), statistics.median(added)
        out[f"{flag}_s_per_image"] = a - p
        out[f"{flag}_share"] = (a - p) / p
    return out


def _hires_cost(http: Any, base: str, size: int, steps: int, guidance: float) -> dict[str, float]:
    """What a hires-fix image costs against the same final size made directly: A1111's
    txt2img at ``size`` vs a first pass at ``size``/2 plus a hires pass (Latent, the same
    steps, strength 0.5) to ``size``; median wall time of 3 each, one at a time."""
    url = f"{base}/sdapi/v1/txt2img"
    common = {"prompt": _PROMPTS[0], "steps": steps, "cfg_scale": guidance, "sampler_name": "Euler",
              "override_settings": {"sd_model_checkpoint": "bench"}}
    half = max(64, size // 16 * 8)
    bodies = {"direct": {**common, "width": size, "height": size},
              "hires": {**common, "width": half, "height": half, "enable_hr": True, "hr_resize_x": size,
                        "hr_resize_y": size, "denoising_strength": 0.5}}
    times: dict[str, list[float]] = {k: [] for k in bodies}
    for i in range(4):  # the first round warms both shapes up
        for name, body in bodies.items():
            t = time.perf_counter()
            http.post(url, json={**body, "seed": i}).raise_for_status()
            if i:
                times[name].append(time.perf_counter() - t)
    direct, hires = statistics.median(times["direct"]), statistics.median(times["hires"])
    return {"direct_image_s": direct, "hires_fix_image_s": hires, "hires_cost_ratio": hires / direct}


def cmd_bench(args: argparse.Namespace) -> int:
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)

    from ..config import UserModel, load_settings
    from ..engine.benchmark import Baseline, Phase, flops_per_image, matmul_peak_flops
    from ..engine.engine import pick_device, pick_dtype, resolve_dtype

    root = Path(args.data_dir or "data") / "bench"
    model_dir, arch = _model_dir(args.arch, root)
    if args.controlnet:  # the cost of ControlNet units instead (cli/bench_controlnet.py)
        from .bench_controlnet import cmd_bench_controlnet

        return cmd_bench_controlnet(args, model_dir, arch, root)
    if args.lora:  # the cost of a hot LoRA and of switching instead (cli/bench_lora.py)
        from .bench_lora import cmd_bench_lora

        return cmd_bench_lora(args, model_dir, arch, root)
    # A fresh job database each run: jobs an interrupted run left queued would run in this one.
    shutil.rmtree(root / "server", ignore_errors=True)
    # The server runs with the settings a user would run it with (``--config``: compile,
    # channels_last, batch limits...), over the bench model, on its own data dir and port.
    settings = load_settings(
        args.config, data_dir=root / "server", port=_free_port(), device=args.device, demo=False,
        models=[UserModel(id="bench", source=str(model_dir), arch=arch, scheduler="pndm" if arch == "sd15" else "euler")],
        **_addon_settings(args, root),
    )
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    guidance = 7.5
    reqs: list[dict[str, Any]] = [{"prompt": _PROMPTS[i % len(_PROMPTS)], "seed": 1000 + i} for i in range(args.requests)]
    print(f"bench: arch={args.arch} size={args.size} steps={args.steps} requests={args.requests} "
          f"concurrency={args.concurrency} device={device} sdserve dtype={str(dtype).removeprefix('torch.')}")

    flops = flops_per_image(model_dir, arch, args.size, args.size, args.steps, guidance)
    peak = matmul_peak_flops(device, dtype)
    peak_fp32 = matmul_peak_flops(device, resolve_dtype("float32"))

    # Baseline: plain diffusers, default dtype, one request at a time (after one warm-up).
    base = Baseline(model_dir, arch, device)
    base(reqs[0]["prompt"], args.size, args.size, args.steps, guidance, 0)
    with Phase() as base_phase:
        for r in reqs:
            base(r["prompt"], args.size, args.size, args.steps, guidance, r["seed"])
    baseline_ips = len(reqs) / base_phase.wall
    del base

    server, thread = _serve(settings)
    url = f"http://127.0.0.1:{settings.port}/ai/run/bench"
    body = {"width": args.size, "height": args.size, "num_steps": args.steps, "guidance": guidance}
    latencies: list[float] = []
    overheads: list[float] = []
    images: dict[int, bytes] = {}
    with httpx.Client(timeout=3600) as http:
        http.post(url, json={**body, "prompt": "warm-up", "seed": 0}).raise_for_status()

        def one(i: int) -> None:
            t = time.perf_counter()
            r = http.post(url, json={**body, **reqs[i]})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)
            images[i] = r.content

        with Phase() as serve_phase, ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(len(reqs))))
        sdserve_ips = len(reqs) / serve_phase.wall
        alone = http.post(url, json={**body, **reqs[-1]}).content  # same request, nothing beside it
        # Overhead: end-to-end minus the job's run time, one request at a time (no queueing);
        # tiny models make 20 samples cheap, full-size ones take 5.
        for i in range(20 if args.arch == "tiny" else 5):
            r = reqs[i % len(reqs)]
            t = time.perf_counter()
            resp = http.post(url, json={**body, **r})
            overheads.append((time.perf_counter() - t) * 1000 - float(resp.headers["x-sdserve-run-ms"]))
        ready = http.get(f"http://127.0.0.1:{settings.port}/readyz").json()
        addons = _addon_costs(http, f"http://127.0.0.1:{settings.port}", args, guidance)
        hires = _hires_cost(http, f"http://127.0.0.1:{settings.port}", args.size, args.steps, guidance) \
            if args.hires else {}
    server.should_exit = True
    thread.join(timeout=30)
    diff = int(abs(_pixels(alone) - _pixels(images[len(reqs) - 1])).max())
    result = {
        "baseline_images_per_s": baseline_ips,
        "sdserve_images_per_s": sdserve_ips,
        "speedup": sdserve_ips / baseline_ips,
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0],
        "mfu": flops * sdserve_ips / peak,
        "baseline_mfu": flops * baseline_ips / peak_fp32,
        "overhead_ms_p50": statistics.median(overheads),
        "baseline_cpu_util": base_phase.cpu_util,
        "sdserve_cpu_util": serve_phase.cpu_util,
        "batch_invariant": diff <= 2,
        "batch_max_pixel_diff": diff,
        "flops_per_image": flops,
        "peak_flops": peak,
        "baseline_peak_flops": peak_fp32,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": ready.get("threads"), "channels_last": ready.get("channels_last"),
        "compile": ready.get("compile"), "vae_tiling": ready.get("vae_tiling"),
        **hires,
        "arch": args.arch, "size": args.size, "steps": args.steps,
        "requests": args.requests, "concurrency": args.concurrency, **addons,
    }
    if args.upscaler:
        # Upscaler throughput: an RRDBNet x4 (Real-ESRGAN x4plus's shape; the demo's for tiny)
        # through the serving path, to the bench's output size.
        from ..engine.upscalers.bench import upscaler_throughput

        result.update(upscaler_throughput("tiny" if args.arch == "tiny" else "full", max(16, args.size // 4),
                                          device, dtype, peak))
    for k, v in result.items():
        print(f"  {k:24} {v:.4g}" if isinstance(v, float) else f"  {k:24} {v}")
    if device.type == "cpu" and args.arch != "tiny" and min(base_phase.cpu_util, serve_phase.cpu_util) < 0.85:
        print(f"WARNING: this process got only {base_phase.cpu_util:.0%} (baseline) and {serve_phase.cpu_util:.0%} "
              "(sdserve) of the cores: other work was running, so the ratios above are not reliable.")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def add_bench_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="Measure sdserve against a plain diffusers baseline in one run.")
    p.add_argument("--arch", choices=["tiny", "sd15", "sdxl"], default="tiny",
                   help="tiny models, or full-size SD 1.5 / SDXL architectures with random weights.")
    p.add_argument("--size", type=int, default=256, help="Image width and height (Workers AI route: 256-2048).")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", type=Path, help="Where benchmark models are written (default ./data).")
    p.add_argument("--json", type=Path, help="Also write the results as JSON here.")
    p.add_argument("--controlnet", type=int, default=0, metavar="N",
                   help="Instead: the cost of N ControlNet units relative to none (same engine, size, requests).")
    p.add_argument("--lora", action="store_true",
                   help="Instead: a hot LoRA's throughput relative to none, and the cost of switching LoRAs.")
    p.add_argument("--rounds", type=int, default=3,
                   help="Interleaved rounds for --controlnet/--lora (the median batch time of each variant).")
    p.add_argument("--hires", action="store_true",
                   help="Also measure a hires-fix image against the same final size made directly.")
    p.add_argument("--upscaler", action="store_true",
                   help="Also measure an RRDBNet x4 upscaler's throughput (output megapixels/s, MFU).")
    p.add_argument("--config", type=Path,
                   help="sdserve settings (TOML) for the server side, e.g. compile or channels_last; "
                        "its dtype applies to sdserve only (the baseline keeps diffusers' default).")
    p.add_argument("--safety-checker", action="store_true",
                   help="Also measure what the safety checker adds per image (same requests with and without).")
    p.add_argument("--enhance-prompt", action="store_true",
                   help="Also measure what the prompt enhancer adds per image (same requests with and without).")
    p.set_defaults(func=cmd_bench)
