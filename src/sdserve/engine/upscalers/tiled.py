"""Running an upscaling network tile by tile, so any image size fits in memory.

Each tile is read with ``overlap`` extra pixels of context on every side (clipped at the
image border) and only its core is kept: the seams see the same neighbourhood as the
middle of a tile, so they do not show, and no blending weights are needed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

__all__ = ["run_tiled"]


def run_tiled(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int, *, tile: int,
              overlap: int, multiple: int = 1, on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``run`` over ``x`` ([1, C, H, W]) in tiles of ``tile`` px; returns [1, C', H*scale, W*scale].

    ``multiple``: input sides the network needs (the image is edge-padded up to it, and the
    padding cropped from the output). ``on_tile(done, total)`` reports progress.
    """
    _, _, h, w = x.shape
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    H, W = x.shape[2], x.shape[3]
    tile = max(multiple, tile // multiple * multiple)
    overlap = overlap // multiple * multiple
    out: torch.Tensor | None = None
    coords = [(y, x0) for y in range(0, H, tile) for x0 in range(0, W, tile)]
    for done, (y, x0) in enumerate(coords, 1):
        y1, x1 = min(y + tile, H), min(x0 + tile, W)
        # the core tile with its context, context clipped at the border
        cy0, cx0 = max(0, y - overlap), max(0, x0 - overlap)
        cy1, cx1 = min(H, y1 + overlap), min(W, x1 + overlap)
        piece = run(x[:, :, cy0:cy1, cx0:cx1])
        if out is None:
            out = piece.new_empty((1, piece.shape[1], H * scale, W * scale))
        core = piece[:, :, (y - cy0) * scale:(y1 - cy0) * scale, (x0 - cx0) * scale:(x1 - cx0) * scale]
        out[:, :, y * scale:y1 * scale, x0 * scale:x1 * scale] = core
        if on_tile is not None:
            on_tile(done, len(coords))
    assert out is not None
    return out[:, :, :h * scale, :w * scale]
