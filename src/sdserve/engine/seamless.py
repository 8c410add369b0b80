"""Seamless tiling (A1111's ``tiling``): circular padding in the UNet's and the VAE's
convolutions, so the image wraps at its edges and tiles without a seam.

Set for one loop and restored after it: the engine runs one loop at a time under its lock,
so no other request's images see the change. The VAE decodes whole for such a loop (its
tiled decode would wrap each tile on itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

__all__ = ["circular_padding"]


@contextmanager
def circular_padding(pipe: Any, enabled: bool) -> Iterator[None]:
    """Within the block, every Conv2d of ``pipe``'s UNet and VAE pads circularly (if ``enabled``)."""
    if not enabled:
        yield
        return
    convs = [m for part in (pipe.unet, pipe.vae) for m in part.modules() if isinstance(m, nn.Conv2d)]
    before = [m.padding_mode for m in convs]
    vae_tiling = getattr(pipe.vae, "use_tiling", False)
    try:
        for m in convs:
            m.padding_mode = "circular"
        pipe.vae.use_tiling = False
        yield
    finally:
        for m, mode in zip(convs, before, strict=True):
            m.padding_mode = mode
        pipe.vae.use_tiling = vae_tiling
