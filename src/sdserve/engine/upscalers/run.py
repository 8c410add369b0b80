"""Upscaling PIL images with a built-in resampler or a model (the torch side of upscalers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..memory import AddonCache
from . import UpscalerEntry, target_size
from .loader import LoadedUpscaler, load_upscaler
from .tiled import run_tiled

__all__ = ["upscale_images", "model_upscale", "MODEL_PASSES"]

# A1111 runs a model at most three times to reach the target (x4 model, x8 asked: two passes).
MODEL_PASSES = 3
_OVERLAP = 16


def _tile_px(device: torch.device) -> int:
    # Activations of RRDBNet at the x4 output are ~1 KB per input pixel per channel group;
    # 512² input tiles fit a few GB of GPU memory, 256² keep CPU caches warm.
    return 512 if device.type == "cuda" else 256


@torch.inference_mode()
def model_upscale(net: LoadedUpscaler, img: Image.Image,
                  on_tile: Callable[[int, int], None] | None = None) -> Image.Image:
    """One pass of ``net`` over ``img`` (RGB), tiled."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(net.device, net.dtype)
    y = run_tiled(net.run, x, net.scale, tile=_tile_px(net.device), overlap=_OVERLAP, multiple=net.multiple,
                  on_tile=on_tile)
    out = (y[0, :3].float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(out, "RGB")


def _image_progress(report: Callable[[int, int], None], index: int, count: int) -> Callable[[int, int], None]:
    """Tile progress of image ``index`` of ``count`` as progress over all of them."""
    return lambda done, total: report(index * total + done, count * total)


def upscale_images(images: Sequence[Image.Image], entry: UpscalerEntry, *, scale: float | None,
                   size: tuple[int, int] | None, device: torch.device, dtype: torch.dtype, field: str,
                   max_pixels: int, on_progress: Callable[[int, int], None] | None = None,
                   store: AddonCache | None = None) -> list[Image.Image]:
    targets = [target_size(im.width, im.height, scale=scale, size=size, max_pixels=max_pixels) for im in images]
    if entry.file is None:
        resample = Image.Resampling.NEAREST if entry.name == "Nearest" else Image.Resampling.LANCZOS
        return [im if im.size == t else im.resize(t, resample) for im, t in zip(images, targets, strict=True)]
    net = load_upscaler(entry.file, device, dtype, field=field, store=store)
    out = []
    for i, (im, (w, h)) in enumerate(zip(images, targets, strict=True)):
        cur = im.convert("RGB")
        on_tile = None if on_progress is None else _image_progress(on_progress, i, len(images))
        for n in range(MODEL_PASSES):
            # At x1 (a restoration model) A1111 still runs the model once.
            if cur.width >= w and cur.height >= h and (n > 0 or (w, h) != im.size):
                break
            if (cur.width * net.scale) * (cur.height * net.scale) > max_pixels * 4:
                break  # a further pass would only be thrown away by the resize below
            cur = model_upscale(net, cur, on_tile)
        out.append(cur if cur.size == (w, h) else cur.resize((w, h), Image.Resampling.LANCZOS))
    return out
