"""An SD-upscale request (engine.sd_upscale) as rows of the engine's batch: the tiles of the
upscaled image as img2img items with the script's seeds, and their results blended back into
the request's outputs. The engine upscales, groups the tiles with any compatible rows and
runs them (engine.engine)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from ..errors import GenerationFailed, SdserveError
from .params import BatchItem, GenerationParams, GenerationResult, UpscaleSettings
from .sd_upscale import SDUpscale, Tile, combine_grid, split_grid, tile_seeds

__all__ = ["Tiled", "tile_items", "upscale_settings"]


def upscale_settings(s: SDUpscale) -> UpscaleSettings:
    """The upscale before tiling, in engine.postprocess terms (A1111 rounds sides to 8)."""
    return UpscaleSettings(upscaler=s.upscaler, scale=s.scale, grid=8)


@dataclass
class Tiled:
    """One SD-upscale request cut into tile rows: its item, the upscaled size, the grid, the
    tile items (output by output, row by row), and where the engine put their results."""

    item: BatchItem
    size: tuple[int, int]
    grid: list[list[Tile]]
    tiles: list[BatchItem]
    slots: list[int]

    def result(self, results: list[GenerationResult | SdserveError | None]) -> GenerationResult | SdserveError:
        """The request's outputs: each output's tiles blended back (the first failure fails it)."""
        done: list[GenerationResult] = []
        for slot in self.slots:
            r = results[slot]
            if not isinstance(r, GenerationResult):
                return r if isinstance(r, SdserveError) else GenerationFailed("a tile was not run")
            done.append(r)
        p = self.item.params
        assert p.width and p.height and p.sd_upscale is not None
        per = len(done) // p.n
        images = [combine_grid(self.grid, [r.images[0] for r in done[k * per:(k + 1) * per]], *self.size, p.width,
                               p.height, p.sd_upscale.overlap) for k in range(p.n)]
        flags = None if done[0].nsfw is None else [any(r.nsfw and r.nsfw[0] for r in done[k * per:(k + 1) * per])
                                                   for k in range(p.n)]
        first = done[0]
        return GenerationResult(params=p, images=images, seeds=p.seeds, device=first.device, dtype=first.dtype,
                                timings={**first.timings, "tiles": float(len(done))}, warnings=first.warnings,
                                provenance=first.provenance, nsfw=flags)


def tile_items(item: BatchItem, upscaled: Image.Image) -> Tiled:
    """``item`` (an SD-upscale request, its init image as sent) as one img2img row per tile of
    ``upscaled``, for each of its ``n`` outputs, with the script's seeds."""
    p = item.params
    s = p.sd_upscale
    assert s is not None and p.width and p.height and p.seed is not None
    grid = split_grid(upscaled.width, upscaled.height, p.width, p.height, s.overlap)
    crops = [upscaled.crop((t.x, t.y, t.x + p.width, t.y + p.height)) for row in grid for t in row]
    tiles = []
    for k in range(p.n):
        for crop, seed in zip(crops, tile_seeds(p.seed, k, len(crops), s.batch_size), strict=True):
            q: GenerationParams = p.model_copy(update={"sd_upscale": None, "n": 1, "seed": seed, "inputs": ()})
            tiles.append(BatchItem(q, {"init": crop}, item.on_step, item.cancel, item.interrupt))
    return Tiled(item, upscaled.size, grid, tiles, [])
