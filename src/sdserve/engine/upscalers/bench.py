"""Upscaler throughput for ``sdserve bench``: output megapixels per second of an RRDBNet x4
written in ESRGAN's real file format and run through the serving path (loader, tiles), and
its MFU from FLOPs counted by torch's flop counter (convolutions: linear in pixels)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from ..addon_files import AddonFolders
from ..tiny_upscalers import _old_keys
from . import upscale
from .rrdbnet import RRDBNet

__all__ = ["upscaler_throughput"]

# Real-ESRGAN x4plus's shape (nf 64, 23 blocks, growth 32) or the demo's tiny one.
_SHAPES = {"full": dict(nf=64, nb=23, gc=32), "tiny": dict(nf=8, nb=1, gc=4)}
_COUNT_SIDE = 32  # FLOPs counted on a 32x32 input and scaled by pixels


def _flops_per_input_pixel(net: RRDBNet) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 3, _COUNT_SIDE, _COUNT_SIDE))
    return float(counter.get_total_flops()) / _COUNT_SIDE**2


def upscaler_throughput(shape: str, side: int, device: torch.device, dtype: torch.dtype, peak_flops: float,
                        repeats: int = 3) -> dict[str, Any]:
    """Upscale a ``side`` x ``side`` image 4x ``repeats`` times (after a warm-up) and report
    output megapixels per second, FLOPs per output pixel and MFU against ``peak_flops``."""
    torch.manual_seed(0)
    net = RRDBNet(**_SHAPES[shape]).eval()
    flops_in = _flops_per_input_pixel(net)
    with tempfile.TemporaryDirectory() as d:
        addons = AddonFolders(Path(d))
        home = addons.home("upscaler")
        home.mkdir(parents=True)
        torch.save(_old_keys(net), home / "bench-4x.pth")
        img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (side, side, 3), dtype=np.uint8))
        run = lambda: upscale([img], "bench-4x", scale=4, device=device, dtype=dtype, addons=addons)  # noqa: E731
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = (time.perf_counter() - t0) / repeats
    out_mp = (4 * side) ** 2 / 1e6
    # Tiles read 16 px of context on each side: the work done exceeds the image's by that share.
    flops = flops_in * side * side
    return {"upscaler_shape": shape, "upscaler_input_side": side, "upscaler_output_mp_per_s": out_mp / wall,
            "upscaler_flops_per_output_pixel": flops_in / 16, "upscaler_mfu": flops / wall / peak_flops}
