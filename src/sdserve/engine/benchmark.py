"""Torch-side measurements for ``sdserve bench``: FLOPs per image, matmul peak, and the
baseline a user would otherwise write (a plain diffusers pipeline, one request at a time)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .loading import PIPELINE_CLASSES

__all__ = ["flops_per_image", "unet_passes", "matmul_peak_flops", "Phase", "Baseline"]


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, n: int = 4096, reps: int = 5) -> float:
    """FLOP/s of a large square matmul: the roofline the MFU figures are measured against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (kernel selection, page faults)
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def flops_per_image(model_dir: Path, arch: str, width: int, height: int, steps: int, guidance: float) -> float:
    """FLOPs to make one image: text encoder(s), the UNet passes of ``steps`` steps (x2 rows
    with CFG), VAE decode.

    Counted with torch.utils.flop_counter on meta-device copies built from the configs, so
    it costs no compute and no memory.
    """
    import diffusers
    import transformers

    cfg = 2 if guidance > 1 else 1
    lat = (cfg, 4, height // 8, width // 8)
    total = 0
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel.from_config(diffusers.UNet2DConditionModel.load_config(model_dir / "unet"))
        vae = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(model_dir / "vae"))
        encoders = []
        for name in ("text_encoder", "text_encoder_2"):
            if (model_dir / name).is_dir():
                c = transformers.CLIPTextConfig.from_pretrained(model_dir / name)
                cls = transformers.CLIPTextModelWithProjection if name.endswith("_2") else transformers.CLIPTextModel
                encoders.append(cls(c))
        ids = torch.zeros(cfg, 77, dtype=torch.long)
        with FlopCounterMode(display=False) as fc:
            for enc in encoders:
                enc(ids)
        total += fc.get_total_flops()
        ctx = torch.zeros(cfg, 77, unet.config.cross_attention_dim)
        extra: dict[str, Any] = {}
        if arch == "sdxl":
            # The pooled embedding is what the add-embedding takes beyond the 6 time ids.
            pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
            extra["added_cond_kwargs"] = {"text_embeds": torch.zeros(cfg, pooled), "time_ids": torch.zeros(cfg, 6)}
        with FlopCounterMode(display=False) as fc:
            unet(torch.zeros(lat), torch.tensor(10), encoder_hidden_states=ctx, **extra)
        total += fc.get_total_flops() * unet_passes(model_dir, steps)
        with FlopCounterMode(display=False) as fc:
            vae.decode(torch.zeros(1, 4, height // 8, width // 8))
        total += fc.get_total_flops()
    return float(total)


def unet_passes(model_dir: Path, steps: int) -> int:
    """UNet evaluations in ``steps`` steps of the model's own scheduler (the one the baseline
    and the bench's server run): one per timestep, which is not always one per step. PLMS
    (PNDM) evaluates its first step twice; second-order samplers (Heun) evaluate each twice."""
    import json

    import diffusers

    config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Phase:
    """Wall time of a phase and how much of the machine's cores this process got during it:
    CPU seconds / (wall seconds x threads). Well below 1 means something else was running
    (the ratios of such a run are not to be trusted)."""

    def __enter__(self) -> Phase:
        self.threads = torch.get_num_threads()
        self.t0, self.c0 = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu_util = (_cpu_seconds() - self.c0) / (self.wall * self.threads)


class Baseline:
    """A plain diffusers pipeline from the same weights in torch's default dtype (float32),
    one call per request.

    The dtype is explicit: diffusers 0.42 keeps the dtype the weights were saved in (the
    bench's full-size models are fp16 files), and fp16 pipelines do not run on the CPU.
    """

    def __init__(self, model_dir: Path, arch: str, device: torch.device) -> None:
        kw: dict[str, Any] = {"safety_checker": None} if arch == "sd15" else {}
        self.pipe = PIPELINE_CLASSES(arch)["txt2img"].from_pretrained(
            str(model_dir), dtype=torch.get_default_dtype(), **kw).to(device)
        self.pipe.set_progress_bar_config(disable=True)

    def __call__(self, prompt: str, width: int, height: int, steps: int, guidance: float, seed: int) -> Any:
        g = torch.Generator("cpu").manual_seed(seed)
        return self.pipe(prompt=prompt, width=width, height=height, num_inference_steps=steps,
                         guidance_scale=guidance, generator=g).images[0]
