"""Upscalers: the built-in resamplers and model files (ESRGAN, Real-ESRGAN, spandrel's).

This module is torch-free (the API lists upscalers and checks names without loading the
engine); :func:`upscale` imports the torch side (``run.py``) when it is first called.

Names are A1111's: ``None``, ``Lanczos``, ``Nearest``, then each file in the ``upscaler``
add-on folders (``models/ESRGAN``, ``RealESRGAN``, ``SwinIR``, ``DAT``, ``HAT``) by its name
without suffix (``4x-UltraSharp``). The latent modes (``Latent (bicubic)``, ...) are listed
here for hires fix, which resizes latents itself; they are not image upscalers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import BadInput
from ..addon_files import AddonFile, AddonFolders

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from ..memory import AddonCache

__all__ = ["BUILTIN_UPSCALERS", "LATENT_UPSCALE_MODES", "UpscalerEntry", "list_upscalers", "upscaler_names",
           "find_upscaler", "target_size", "upscale", "MAX_SCALE",
           "default_upscaler"]

BUILTIN_UPSCALERS = ("None", "Lanczos", "Nearest")
# A1111's latent upscale modes: name -> (torch interpolate mode, antialias).
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
# A1111's extras slider goes to 8.
MAX_SCALE = 8.0
# "4x-UltraSharp", "ESRGAN_4x", "RealESRGAN_x2plus", "2x_foo": the factor a name states.
_SCALE_IN_NAME = re.compile(r"(?:^|[^0-9a-z])(?:x([1-8])(?![0-9])|([1-8])x(?![0-9a-z]))", re.IGNORECASE)


@dataclass(frozen=True)
class UpscalerEntry:
    """One upscaler as the API lists it."""

    name: str
    # None for the built-ins.
    file: AddonFile | None
    # The model's native factor as its name tells (``4x-UltraSharp``, ``RealESRGAN_x2plus``);
    # 4 when the name does not say (A1111 reports 4 the same way). Loading reads the real one.
    scale: int

    @property
    def path(self) -> Path | None:
        return self.file.path if self.file else None


def _scale_from_name(name: str) -> int:
    m = _SCALE_IN_NAME.search(name)
    return int(m[1] or m[2]) if m else 4


def list_upscalers(addons: AddonFolders) -> list[UpscalerEntry]:
    """The built-ins, then every upscaler file, by name."""
    out = [UpscalerEntry(n, None, 4) for n in BUILTIN_UPSCALERS]
    out += [UpscalerEntry(f.stem, f, _scale_from_name(f.stem)) for f in addons.files("upscaler")]
    return out


def upscaler_names(addons: AddonFolders) -> list[str]:
    """What ``upscaler_1``, ``hr_upscaler`` and the like accept (latent modes excluded)."""
    return [e.name for e in list_upscalers(addons)]


def find_upscaler(addons: AddonFolders, name: str, *, field: str) -> UpscalerEntry:
    """The upscaler called ``name``: a built-in (any case) or a file; BadInput naming ``field``."""
    for builtin in BUILTIN_UPSCALERS:
        if name.lower() == builtin.lower():
            return UpscalerEntry(builtin, None, 4)
    if name in LATENT_UPSCALE_MODES:
        raise BadInput(field, f"{name!r} is a latent upscale mode (hires fix only), not an image upscaler")
    try:
        f = addons.find("upscaler", name, field=field)
    except BadInput as e:
        raise BadInput(field, f"{e.detail.removeprefix(field + ': ')} (built-in: {', '.join(BUILTIN_UPSCALERS)})") \
            from None
    return UpscalerEntry(f.stem, f, _scale_from_name(f.stem))


def target_size(width: int, height: int, *, scale: float | None = None, size: tuple[int, int] | None = None,
                max_pixels: int, field: str = "scale") -> tuple[int, int]:
    """The output size for an image of ``width`` x ``height``: ``size`` as given, or each side
    times ``scale`` (rounded); BadInput naming ``field`` past the limits."""
    if size is not None:
        w, h = size
        if w < 1 or h < 1:
            raise BadInput(field, f"target size {w}x{h} is not allowed: both sides must be at least 1")
    else:
        if scale is None or not 0 < scale <= MAX_SCALE:
            raise BadInput(field, f"{scale} is not allowed: use a factor above 0 and at most {MAX_SCALE:g}")
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if w * h > max_pixels:
        raise BadInput(field, f"the result would be {w}x{h} ({w * h} pixels), past this server's "
                              f"limit of {max_pixels} pixels; ask for a smaller size")
    return w, h


def upscale(images: Sequence[Image], name: str, *, scale: float | None = None, size: tuple[int, int] | None = None,
            device: Any, dtype: Any, addons: AddonFolders, field: str = "upscaler",
            max_pixels: int = 8192 * 8192, store: AddonCache | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> list[Image]:
    """Each image resized by ``scale`` or to ``size`` (w, h) with the upscaler ``name``.

    A model upscaler runs (tiled, on ``device``/``dtype``) until the image reaches the
    target, at most three passes as A1111 does, then a Lanczos resize gives the exact size;
    ``None``/``Lanczos`` resample with Lanczos and ``Nearest`` with nearest neighbour.
    BadInput naming ``field`` for an unknown or unreadable upscaler (``scale``/``size`` past
    the limits: ``scale``). ``on_progress(done, total)`` counts model tiles. ``store``: the
    engine's add-on cache, which keeps the loaded network under the memory budget.
    """
    from .run import upscale_images

    entry = find_upscaler(addons, name, field=field)
    return upscale_images(images, entry, scale=scale, size=size, device=device, dtype=dtype, field=field,
                          max_pixels=max_pixels, on_progress=on_progress, store=store)


def default_upscaler(addons: AddonFolders) -> str:
    """The upscaler a request that asks only "upscale" gets: a Real-ESRGAN file if one is
    installed, else the first model file, else Lanczos."""
    files = [e for e in list_upscalers(addons) if e.file is not None]
    real = [e for e in files if "realesrgan" in e.name.lower()]
    return (real or files)[0].name if files else "Lanczos"
