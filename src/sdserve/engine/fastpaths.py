"""Speed choices applied to a loaded pipeline, each configurable and reported.

- channels_last: convolutions in NHWC. cuDNN's tensor-core kernels want it; on the CPU
  (oneDNN, bf16, full-size SD 1.5 at 256²) it made the VAE decode 18% faster (335 -> 408
  GFLOP/s) and the UNet no slower (it already runs at the matmul peak), so 'auto' is on.
- torch.compile of the UNet (the denoising loop's cost), off by default: compiling takes
  minutes and recompiles per shape. 'reduce-overhead' adds CUDA graphs per shape. The
  model's default size is compiled at load (warm-up) so the first request does not pay.
- VAE tiling: decoding in overlapping tiles keeps memory flat at large sizes; 'auto' tiles
  above ``TILE_ABOVE_PIXELS`` only, since tiling changes pixels slightly. Tiling depends on
  the size alone, which is part of the batch key, so it never breaks batch invariance.
- SDXL's VAE overflows in fp16; diffusers then decodes it in fp32 (``force_upcast``). A
  fp16-safe VAE (e.g. madebyollin/sdxl-vae-fp16-fix), when configured, decodes in fp16.
Attention is PyTorch SDPA (diffusers' default with torch 2): flash/memory-efficient kernels
on CUDA, fused on the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["FastPaths", "TILE_ABOVE_PIXELS", "resolve_fast_paths"]

log = logging.getLogger(__name__)

Switch = Literal["auto", "on", "off"]
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
# Beyond 1536x1536 an untiled SDXL decode needs >10 GB in 16-bit; below, tiling only costs.
TILE_ABOVE_PIXELS = 1536 * 1536


@dataclass(frozen=True)
class FastPaths:
    """The choices in force for one device."""

    channels_last: bool
    compile: CompileMode
    vae_tiling: Switch
    compile_backend: str = "inductor"

    def apply(self, pipe: Any) -> None:
        """Make ``pipe``'s modules fast; called once per load, before task views exist."""
        if self.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if self.compile != "off":
            # dynamic=False: one specialised graph per shape (CUDA graphs need static shapes).
            pipe.unet = torch.compile(pipe.unet, mode=None if self.compile == "default" else self.compile,
                                      backend=self.compile_backend, dynamic=False)

    def tile_vae(self, pipe: Any, width: int, height: int) -> bool:
        """Switch ``pipe``'s VAE tiling for one loop at this size; returns whether it tiles."""
        tile = self.vae_tiling == "on" or (self.vae_tiling == "auto" and width * height > TILE_ABOVE_PIXELS)
        if tile:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        return tile

    def report(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last, "compile": self.compile, "vae_tiling": self.vae_tiling,
                "attention": "sdpa"}


def resolve_fast_paths(device: torch.device, channels_last: Switch = "auto", compile: CompileMode = "off",
                       vae_tiling: Switch = "auto", compile_backend: str = "inductor") -> FastPaths:
    """Settle 'auto' for ``device``."""
    cl = channels_last != "off"
    if compile == "reduce-overhead" and device.type != "cuda":
        log.warning("compile='reduce-overhead' adds CUDA graphs, which need a GPU; compiling with 'default'")
        compile = "default"
    return FastPaths(channels_last=cl, compile=compile, vae_tiling=vae_tiling, compile_backend=compile_backend)
