"""A1111's "SD upscale" img2img script on the real engine (tiny SD 1.5): the grid arithmetic,
the scaled size, the same pixels as the tiles run by hand, alone == batched, the script's
seeds, and the script through webuiapi's img2img(script_name=..., script_args=...)."""

from __future__ import annotations

import numpy as np
import pytest
import webuiapi
from PIL import Image

from sdserve.engine.params import BatchItem, GenerationParams, StepInfo, input_images
from sdserve.engine.postprocess import apply_upscale
from sdserve.engine.sd_upscale import SDUpscale, combine_grid, split_grid, tile_seeds
from sdserve.engine.sd_upscale_run import upscale_settings
from sdserve.errors import BadInput
from tests.conftest import png_of
from tests.integration.test_a1111 import api, base_url  # noqa: F401 - the module's live server fixtures

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
TINY_X2 = "tiny-RealESRGAN_x2plus"


def picture(w: int = 60, h: int = 44, seed: int = 3) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


def params(s: SDUpscale, image: Image.Image | None = None, **kw) -> GenerationParams:  # type: ignore[no-untyped-def]
    base = {"model": SD15, "prompt": "sharper", "width": 64, "height": 64, "steps": 2, "strength": 0.5, "seed": 21,
            "inputs": input_images(png_of(image or picture()))}
    return GenerationParams(**{**base, **kw}, sd_upscale=s)


def test_grid_is_a1111s_and_unprocessed_tiles_blend_back_exactly() -> None:
    grid = split_grid(1024, 1024, 512, 512, 64)
    assert [[(t.x, t.y) for t in row] for row in grid][1] == [(0, 256), (256, 256), (512, 256)]
    im = picture(200, 150)
    g = split_grid(200, 150, 64, 64, 16)
    tiles = [im.crop((t.x, t.y, t.x + 64, t.y + 64)) for row in g for t in row]
    assert np.array_equal(np.asarray(combine_grid(g, tiles, 200, 150, 64, 64, 16)), np.asarray(im))
    assert tile_seeds(10, 0, 5, 1) == [10, 11, 12, 13, 14]
    assert tile_seeds(10, 1, 5, 2) == [11, 12, 12, 13, 13]  # A1111: each batch from the last one's seed + 1


def test_scaled_size_and_same_as_tiles_by_hand(engine) -> None:  # type: ignore[no-untyped-def]
    s = SDUpscale(upscaler="Lanczos", scale=2, overlap=16)
    im = picture()
    steps: list[StepInfo] = []
    res = engine.generate(params(s, im), on_step=steps.append)
    out = res.images[0]
    assert out.size == (120, 88)  # 60x44 x2, sides down to 8
    # 3 x 2 tiles of 64 (A1111: ceil((120 - 16) / 48) columns, ceil((88 - 16) / 48) rows), in one loop
    assert res.timings["tiles"] == 6.0 and res.timings["batch_requests"] == 6
    assert steps  # the tiles report progress to the request
    # By hand: the same upscale, each tile an img2img request of its own with the script's seed.
    [big] = apply_upscale([im], upscale_settings(s), device=engine.device, dtype=engine.dtype, addons=engine.addons,
                          max_pixels=2**24)
    grid = split_grid(120, 88, 64, 64, 16)
    seeds = tile_seeds(21, 0, 6, 1)
    tiles = [engine.generate(GenerationParams(model=SD15, prompt="sharper", width=64, height=64, steps=2,
                                              strength=0.5, seed=seed,
                                              inputs=input_images(png_of(big.crop((t.x, t.y, t.x + 64, t.y + 64)))))
                             ).images[0]
             for t, seed in zip([t for row in grid for t in row], seeds, strict=True)]
    by_hand = combine_grid(grid, tiles, 120, 88, 64, 64, 16)
    diff = np.abs(np.asarray(out, dtype=np.int16) - np.asarray(by_hand, dtype=np.int16))
    assert diff.max() <= 2, diff.max()  # batched kernels may round the last bit differently


def test_batched_equals_alone_and_two_outputs(engine) -> None:  # type: ignore[no-untyped-def]
    s = SDUpscale(upscaler=TINY_X2, scale=1.5, overlap=8)
    a, b = params(s, picture(seed=1)), params(s, picture(seed=2), seed=5, n=2)
    alone = [engine.generate(p).images for p in (a, b)]
    together = engine.generate_batch([BatchItem(a), BatchItem(b)])
    assert [len(r.images) for r in together] == [1, 2] and together[1].seeds == [5, 6]
    for one, res in zip(alone, together, strict=True):
        for x, y in zip(one, res.images, strict=True):
            assert x.size == (88, 64)
            assert np.abs(np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16)).max() <= 2
    assert not np.array_equal(np.asarray(together[1].images[0]), np.asarray(together[1].images[1]))


@pytest.mark.parametrize(("kw", "field"), [
    ({"sd_upscale": SDUpscale(overlap=64)}, "sd_upscale.overlap"),
    ({"sd_upscale": SDUpscale(upscaler="Bogus", overlap=16)}, "sd_upscale.upscaler"),
    ({"sd_upscale": SDUpscale(upscaler="Lanczos", scale=8, overlap=16), "inputs": input_images(png_of(picture(4000, 100)))},
     "sd_upscale.scale"),
    ({"sd_upscale": SDUpscale(), "inputs": input_images(png_of(picture()), png_of(Image.new("L", (60, 44))))},
     "sd_upscale")])
def test_bad_settings_name_the_field(engine, kw, field: str) -> None:  # type: ignore[no-untyped-def]
    p = params(SDUpscale()).model_copy(update=kw)
    with pytest.raises(BadInput) as e:
        engine.prepare(p)
    assert e.value.field == field


def test_webuiapi_sd_upscale_script(api: webuiapi.WebUIApi) -> None:  # noqa: F811
    im = picture()
    ups = [u["name"] for u in api.get_upscalers()]
    kw = dict(images=[im], prompt="sharper", width=64, height=64, denoising_strength=0.5, seed=21, steps=2,
              sampler_name="Euler")
    r = api.img2img(script_name="SD upscale", script_args=[None, 16, ups.index("Lanczos"), 2], **kw)
    assert r.image.size == (120, 88)
    assert "SD upscale overlap: 16" in r.info["infotexts"][0] and "SD upscale upscaler: Lanczos" in r.info["infotexts"][0]
    by_name = api.img2img(script_name="sd upscale", script_args=["", 16, "lanczos", 2], **kw)
    assert np.array_equal(np.asarray(by_name.image), np.asarray(r.image))
    two = api.img2img(script_name="sd upscale", script_args=[None, 16, 0, 2], n_iter=2, **kw)  # "None": no upscale
    # "None" keeps the image as sent (A1111), and one 64x64 tile overhangs it (cropped past the edge)
    assert [i.size for i in two.images] == [(60, 44), (60, 44)] and two.info["all_seeds"][:2] == [21, 22]


def test_other_scripts_stay_refused(api: webuiapi.WebUIApi) -> None:  # noqa: F811
    import httpx

    base = f"http://{api.baseurl.split('://', 1)[1]}"
    r = httpx.post(base + "/img2img", json={"init_images": [png_b64()], "script_name": "loopback", "width": 64,
                                            "height": 64, "steps": 1})
    assert r.status_code == 422 and "loopback" in r.text
    t = httpx.post(base + "/txt2img", json={"prompt": "x", "script_name": "sd upscale", "width": 64, "height": 64})
    assert t.status_code == 422, t.text
    bad = httpx.post(base + "/img2img", json={"init_images": [png_b64()], "script_name": "sd upscale",
                                              "script_args": [None, 16, 99, 2], "width": 64, "height": 64})
    assert bad.status_code == 400 and "script_args[2]" in bad.text, bad.text


def png_b64() -> str:
    import base64

    return base64.b64encode(png_of(picture())).decode()
