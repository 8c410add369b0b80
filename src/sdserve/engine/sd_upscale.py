"""A1111's "SD upscale" img2img script, as an engine request field (torch-free).

The init image is upscaled (engine.upscalers, A1111's sizing: each side times the factor,
down to a multiple of 8; upscaler "None" keeps the image as it is), cut into tiles of the
request's width x height overlapping by ``overlap`` pixels (A1111's ``images.split_grid``),
each tile is an img2img row with the request's settings, and the results are blended back
(``images.combine_grid``: a linear ramp across each overlap). The engine runs the tiles of a
request, and of several requests, as rows of one batch (engine.engine).

Seeds follow the script: output k starts at seed + k, and the tiles of it run in batches of
``batch_size``, each batch from the previous batch's first seed plus one; so tile t of
output k has seed + k + t // batch_size + t % batch_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SDUpscale", "Tile", "split_grid", "combine_grid", "tile_seeds"]


class SDUpscale(BaseModel):
    """The script's arguments: upscaler, scale factor, tile overlap, and the request's batch
    size (it sets which seed each tile gets)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upscaler: str = "None"
    scale: float = Field(default=2.0, gt=0, le=8, allow_inf_nan=False)
    overlap: int = Field(default=64, ge=0, le=1024)
    batch_size: int = Field(default=1, ge=1, le=64)


@dataclass(frozen=True)
class Tile:
    """Where a tile sits in the upscaled image (x, y may be negative: a tile larger than the
    image is cropped past its edge, as A1111's split_grid does)."""

    x: int
    y: int


def split_grid(width: int, height: int, tile_w: int, tile_h: int, overlap: int) -> list[list[Tile]]:
    """Rows of tiles covering a ``width`` x ``height`` image (A1111's arithmetic: tiles spread
    evenly, the last flush with the far edge)."""
    cols = max(1, math.ceil((width - overlap) / (tile_w - overlap)))
    rows = max(1, math.ceil((height - overlap) / (tile_h - overlap)))
    dx = (width - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (height - tile_h) / (rows - 1) if rows > 1 else 0
    out = []
    for r in range(rows):
        y = int(r * dy)
        y = height - tile_h if y + tile_h >= height else y
        row = []
        for c in range(cols):
            x = int(c * dx)
            row.append(Tile(width - tile_w if x + tile_w >= width else x, y))
        out.append(row)
    return out


def _ramp(overlap: int, shape: tuple[int, int], axis: int) -> Image.Image:
    """A1111's blend mask: 0 -> 255 * (overlap - 1) / overlap across ``overlap`` pixels."""
    line = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    arr = np.broadcast_to(line[None, :] if axis == 1 else line[:, None], shape)
    return Image.fromarray(np.ascontiguousarray(arr), "L")


def combine_grid(grid: list[list[Tile]], tiles: list[Image.Image], width: int, height: int,
                 tile_w: int, tile_h: int, overlap: int) -> Image.Image:
    """The processed tiles (row by row) blended back into one ``width`` x ``height`` image:
    each tile's first ``overlap`` columns fade in over its left neighbour, each row's first
    ``overlap`` rows over the row above."""
    it = iter(tiles)
    out = Image.new("RGB", (width, height))
    for row in grid:
        line = Image.new("RGB", (width, tile_h))
        for t in row:
            tile = next(it).convert("RGB")
            if t.x == 0 or overlap == 0:  # A1111 tests the position, not the column
                line.paste(tile, (t.x, 0))
                continue
            line.paste(tile.crop((0, 0, overlap, tile_h)), (t.x, 0), _ramp(overlap, (tile_h, overlap), 1))
            line.paste(tile.crop((overlap, 0, tile_w, tile_h)), (t.x + overlap, 0))
        y = row[0].y
        if y == 0 or overlap == 0:
            out.paste(line, (0, y))
            continue
        out.paste(line.crop((0, 0, width, overlap)), (0, y), _ramp(overlap, (overlap, width), 0))
        out.paste(line.crop((0, overlap, width, tile_h)), (0, y + overlap))
    return out


def tile_seeds(seed: int, output: int, tiles: int, batch_size: int) -> list[int]:
    """The seed of each tile of output ``output`` (see the module docstring)."""
    start = seed + output
    return [(start + t // batch_size + t % batch_size) % 2**32 for t in range(tiles)]
