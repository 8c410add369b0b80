"""Golden images: the same seed and parameters give the same pixels, run after run.

For each family and task a fixed request (64x64, 2 denoising steps, float32 on CPU) is
generated and the bottom-right 3x3 pixels (27 values, 0-255) are compared with the values
stored in ``tests/goldens/<family>.json``.

Tolerance: max abs diff <= 2/255 per value. On CPU with float32 the same torch version
gives the same pixels bit for bit on one machine; the 2/255 allows for other CPUs whose
vector kernels round differently. A real change (seeding, scheduler, conditioning, weights
layout) moves these values by far more. When a change of output is intended, regenerate on
purpose with ``python scripts/regen_goldens.py`` and commit the new JSON with the reason.

Also here: a different seed gives different pixels, and image i of an n=2 request equals
the n=1 request with seed s+i (each image has its own generator, whatever shares the batch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdserve.engine.params import GenerationParams
from tests.conftest import make_params, png_of

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "goldens"
TOLERANCE = 2  # in 0-255 pixel units, i.e. 2/255

# Stored per family (one JSON file each) in the order the catalog lists them.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sd15": ("@cf/runwayml/stable-diffusion-v1-5-img2img", ("txt2img", "img2img", "inpaint")),
    "sd15-inpaint": ("@cf/runwayml/stable-diffusion-v1-5-inpainting", ("inpaint",)),
    "sdxl": ("@cf/stabilityai/stable-diffusion-xl-base-1.0", ("txt2img", "img2img", "inpaint")),
    "sdxl-lightning": ("@cf/bytedance/stable-diffusion-xl-lightning", ("txt2img", "img2img", "inpaint")),
    "lcm": ("@cf/lykon/dreamshaper-8-lcm", ("txt2img", "img2img", "inpaint")),
}
CASES = [(family, task) for family, (_, tasks) in FAMILIES.items() for task in tasks]
SEED = 1234


def init_image() -> bytes:
    """A fixed gradient, so the VAE encodes something with structure."""
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    return png_of(Image.fromarray(rgb, "RGB"))


def mask_image() -> bytes:
    """White (repaint) square in the middle, black (keep) around it."""
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (16, 16, 48, 48))
    return png_of(m)


def case_params(family: str, task: str, **overrides: Any) -> GenerationParams:
    """The fixed request of one golden case; model defaults pick scheduler and guidance."""
    model, _ = FAMILIES[family]
    fields: dict[str, Any] = dict(model=model, task=task, prompt="a lighthouse on a cliff at dawn",
                                  negative_prompt="blurry", width=64, height=64, steps=2, seed=SEED)
    if task != "txt2img":
        # Strength 1 runs both steps; the input still enters through the VAE and the mask.
        fields.update(init_image=init_image(), strength=1.0)
    if task == "inpaint":
        fields.update(mask_image=mask_image())
    return make_params(**{**fields, **overrides})


def pixel_slice(img: Image.Image) -> list[int]:
    """The bottom-right 3x3 pixels, RGB, as 27 ints (the diffusers tests' convention)."""
    return np.asarray(img.convert("RGB"))[-3:, -3:, :].flatten().astype(int).tolist()


def render_case(engine: Any, family: str, task: str) -> list[int]:
    return pixel_slice(engine.generate(case_params(family, task)).images[0])


def load_golden(family: str) -> dict[str, Any]:
    return json.loads((GOLDEN_DIR / f"{family}.json").read_text())


def _as_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(("family", "task"), CASES, ids=[f"{f}-{t}" for f, t in CASES])
def test_matches_the_stored_golden(engine, family: str, task: str) -> None:  # type: ignore[no-untyped-def]
    golden = load_golden(family)
    expected = np.array(golden["cases"][task])
    got = np.array(render_case(engine, family, task))
    assert got.shape == expected.shape == (27,)
    diff = int(np.abs(got - expected).max())
    assert diff <= TOLERANCE, (
        f"{family}/{task} moved by {diff}/255 (tolerance {TOLERANCE}/255): got {got.tolist()}. "
        "If the change is intended, run `python scripts/regen_goldens.py` and commit the new goldens."
    )


def test_goldens_cover_every_case_and_nothing_else() -> None:
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.json")) == sorted(FAMILIES)
    for family, (_, tasks) in FAMILIES.items():
        golden = load_golden(family)
        assert sorted(golden["cases"]) == sorted(tasks)
        assert golden["tolerance_0_255"] == TOLERANCE


def test_same_request_twice_is_bit_identical(engine) -> None:  # type: ignore[no-untyped-def]
    a = engine.generate(case_params("sd15", "img2img")).images[0]
    b = engine.generate(case_params("sd15", "img2img")).images[0]
    assert np.array_equal(_as_array(a), _as_array(b))


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_a_different_seed_gives_different_pixels(engine, family: str) -> None:  # type: ignore[no-untyped-def]
    a = engine.generate(case_params(family, "txt2img", seed=SEED)).images[0]
    b = engine.generate(case_params(family, "txt2img", seed=SEED + 100)).images[0]
    assert np.abs(_as_array(a) - _as_array(b)).mean() > 1


@pytest.mark.parametrize(("family", "task"), [("sd15", "txt2img"), ("sdxl", "txt2img"), ("sd15", "img2img"),
                                              ("sd15", "inpaint")])
def test_image_i_of_a_batch_is_the_single_request_with_seed_plus_i(engine, family: str, task: str) -> None:  # type: ignore[no-untyped-def]
    pair = engine.generate(case_params(family, task, n=2))
    assert pair.seeds == [SEED, SEED + 1] and len(pair.images) == 2
    for i in range(2):
        alone = engine.generate(case_params(family, task, seed=SEED + i)).images[0]
        # Batched kernels may round differently from single ones: same tolerance as goldens.
        diff = int(np.abs(_as_array(pair.images[i]) - _as_array(alone)).max())
        assert diff <= TOLERANCE, f"image {i} of n=2 differs from seed {SEED + i} alone by {diff}/255"
    assert np.abs(_as_array(pair.images[0]) - _as_array(pair.images[1])).mean() > 1
