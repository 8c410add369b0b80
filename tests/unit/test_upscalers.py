"""Upscalers: the RRDBNet loader in both key layouts, tiling, the built-ins, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdserve.engine.addon_files import AddonFolders
from sdserve.engine.tiny_upscalers import _new_keys, _old_keys, write_tiny_upscalers
from sdserve.engine.upscalers import find_upscaler, list_upscalers, upscale
from sdserve.engine.upscalers.loader import load_upscaler
from sdserve.engine.upscalers.rrdbnet import RRDBNet, rrdbnet_from_state_dict
from sdserve.engine.upscalers.tiled import run_tiled
from sdserve.errors import BadInput

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def addons(tmp_path_factory: pytest.TempPathFactory) -> AddonFolders:
    folders = AddonFolders(tmp_path_factory.mktemp("models"))
    write_tiny_upscalers(folders.home("upscaler"))
    return folders


def _image(w: int = 70, h: int = 50, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(("n_up", "unshuffle", "scale"), [(2, 1, 4), (3, 1, 8), (2, 2, 2), (2, 4, 1)])
def test_both_key_layouts_rebuild_the_same_network(n_up: int, unshuffle: int, scale: int) -> None:
    torch.manual_seed(0)
    net = RRDBNet(nf=8, nb=2, gc=4, n_up=n_up, unshuffle=unshuffle).eval()
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        want = net(x)
    assert want.shape == (1, 3, 16 * scale, 24 * scale)
    layouts = [_new_keys(net)] + ([_old_keys(net)] if unshuffle == 1 else [])  # old ESRGAN never unshuffles
    for sd in layouts:
        back = rrdbnet_from_state_dict(sd).eval()
        assert (back.scale, back.unshuffle, len(back.body)) == (scale, unshuffle, 2)
        with torch.no_grad():
            assert torch.equal(back(x), want)


def test_tiles_match_the_whole_image(addons: AddonFolders) -> None:
    for name, scale, multiple in (("tiny-ESRGAN-4x", 4, 1), ("tiny-RealESRGAN_x2plus", 2, 2)):
        net = load_upscaler(addons.find("upscaler", name, field="f"), CPU, torch.float32, field="f")
        assert (net.scale, net.multiple) == (scale, multiple)
        x = torch.rand(1, 3, 61, 90)  # odd sides: padded to the unshuffle multiple
        with torch.no_grad():
            whole = net.run(torch.nn.functional.pad(x, (0, -90 % multiple, 0, -61 % multiple), mode="replicate"))
            tiled = run_tiled(net.run, x, scale, tile=24, overlap=16, multiple=multiple)
        assert tiled.shape == (1, 3, 61 * scale, 90 * scale)
        assert (tiled - whole[:, :, :61 * scale, :90 * scale]).abs().max() < 1e-5


def test_listing_and_sizes(addons: AddonFolders) -> None:
    names = [(e.name, e.scale) for e in list_upscalers(addons)]
    assert names[:3] == [("None", 4), ("Lanczos", 4), ("Nearest", 4)]
    assert ("tiny-ESRGAN-4x", 4) in names and ("tiny-RealESRGAN_x2plus", 2) in names
    im = _image()
    for name in ("None", "Lanczos", "Nearest", "tiny-ESRGAN-4x", "tiny-RealESRGAN_x2plus"):
        [out] = upscale([im], name, scale=2.5, device=CPU, dtype=torch.float32, addons=addons)
        assert out.size == (175, 125), name
        [out] = upscale([im], name, size=(90, 40), device=CPU, dtype=torch.float32, addons=addons)
        assert out.size == (90, 40), name
    # Nearest at x2 repeats pixels; the model is not a resampler of its input.
    [near] = upscale([im], "Nearest", scale=2, device=CPU, dtype=torch.float32, addons=addons)
    assert np.array_equal(np.asarray(near)[::2, ::2], np.asarray(im))
    [model] = upscale([im], "tiny-ESRGAN-4x", scale=2, device=CPU, dtype=torch.float32, addons=addons)
    [again] = upscale([im], "tiny-ESRGAN-4x", scale=2, device=CPU, dtype=torch.float32, addons=addons)
    assert np.array_equal(np.asarray(model), np.asarray(again))
    assert not np.array_equal(np.asarray(model), np.asarray(near))


def test_bad_names_scales_and_files(addons: AddonFolders, tmp_path: Path) -> None:
    with pytest.raises(BadInput) as e:
        find_upscaler(addons, "R-ESRGAN 9x", field="upscaler_1")
    assert e.value.field == "upscaler_1" and "Lanczos" in e.value.message
    with pytest.raises(BadInput) as e:
        find_upscaler(addons, "Latent (bicubic)", field="upscaler_1")
    assert "latent" in e.value.message
    with pytest.raises(BadInput) as e:
        upscale([_image()], "Lanczos", scale=9, device=CPU, dtype=torch.float32, addons=addons)
    assert e.value.field == "scale"
    with pytest.raises(BadInput) as e:
        upscale([_image()], "Lanczos", scale=4, device=CPU, dtype=torch.float32, addons=addons, max_pixels=10_000)
    assert "limit" in e.value.message
    home = addons.home("upscaler")
    (home / "broken.pth").write_bytes(b"not a pickle at all")
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, home / "other-arch.pth")
    try:
        for name, says in (("broken", "broken.pth"), ("other-arch", "spandrel")):
            with pytest.raises(BadInput) as e:
                upscale([_image()], name, scale=2, device=CPU, dtype=torch.float32, addons=addons, field="upscaler_1")
            assert e.value.field == "upscaler_1" and says in e.value.message, e.value.message
    finally:
        (home / "broken.pth").unlink()
        (home / "other-arch.pth").unlink()
        addons.refresh("upscaler")
