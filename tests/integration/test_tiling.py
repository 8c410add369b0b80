"""Seamless tiling: circular padding makes the image wrap at its edges, for that loop only.

A network whose every convolution pads circularly commutes with circular shifts: shifting
the latent shifts the decoded image by 8x as much, edges included. That is what "the image
wraps" means, and it is checked exactly on the model's own VAE and UNet; with zero padding
the edges break it. The tiny random-weight models make no picture whose seams one could
judge by eye, so the end-to-end test checks the loop's switch: different pixels with tiling,
the same pixels as before once it is over.
"""

from __future__ import annotations

import numpy as np
import torch

from sdserve.engine.params import GenerationParams
from sdserve.engine.seamless import circular_padding

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"


def _shift_error(f, x: torch.Tensor, shift: int, scale: int) -> float:  # type: ignore[no-untyped-def]
    """How far ``f`` is from commuting with a circular shift of ``shift`` latent pixels (both axes)."""
    with torch.no_grad():
        a = torch.roll(f(x), (shift * scale, shift * scale), dims=(2, 3))
        b = f(torch.roll(x, (shift, shift), dims=(2, 3)))
    return float((a - b).abs().max())


def test_vae_and_unet_wrap_only_inside_the_block(engine) -> None:  # type: ignore[no-untyped-def]
    pipe = engine.load(SD15).base
    z = torch.randn(1, pipe.vae.config.latent_channels, 16, 24, generator=torch.Generator().manual_seed(0))
    decode = lambda t: pipe.vae.decode(t).sample  # noqa: E731
    text = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    unet = lambda t: pipe.unet(t, 10, encoder_hidden_states=text).sample  # noqa: E731
    plain = (_shift_error(decode, z, 4, 8), _shift_error(unet, z, 8, 1))
    with circular_padding(pipe, True):
        wrapped = (_shift_error(decode, z, 4, 8), _shift_error(unet, z, 8, 1))
    assert wrapped[0] < 1e-4 and wrapped[1] < 1e-4, wrapped
    assert plain[0] > 100 * max(wrapped[0], 1e-6) and plain[1] > 100 * max(wrapped[1], 1e-6), (plain, wrapped)
    assert (plain[0], plain[1]) == (_shift_error(decode, z, 4, 8), _shift_error(unet, z, 8, 1))  # restored


def test_a_tiled_request_leaves_the_next_one_unchanged(engine) -> None:  # type: ignore[no-untyped-def]
    p = GenerationParams(model=SD15, prompt="a brick wall", seed=5, steps=2, width=64, height=64)
    before = np.asarray(engine.generate(p).images[0])
    tiled = engine.generate(p.model_copy(update={"tiling": True}))
    after = np.asarray(engine.generate(p).images[0])
    assert np.array_equal(before, after)
    assert not np.array_equal(before, np.asarray(tiled.images[0]))
