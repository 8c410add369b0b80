"""Model-free ControlNet preprocessors and the units' torch-free checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdserve.engine.preprocessors import PREPROCESSORS, check_preprocessor, control_image, fit, preprocess
from sdserve.errors import BadInput


def square(size: int = 64) -> Image.Image:
    img = Image.new("RGB", (size, size))
    img.paste((255, 255, 255), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return img


def test_canny_draws_the_outline_of_a_filled_square() -> None:
    edges = np.asarray(preprocess("canny", square(), 64))[..., 0] > 0
    assert edges.shape == (64, 64)
    assert not edges[32, 32] and not edges[2, 2]  # inside and outside stay dark
    assert edges[16:48, 15:18].any(axis=1).all()  # every row of the left side has an edge
    # Thresholds above the square's gradient leave nothing.
    assert not np.asarray(preprocess("canny", square(), 64, 5000, 6000)).any()


def test_every_preprocessor_returns_an_rgb_image_at_processor_res() -> None:
    for name, pre in PREPROCESSORS.items():
        out = preprocess(name, square(100), 128)
        assert out.mode == "RGB", name
        assert out.size == ((128, 128) if pre.rescales else (100, 100)), name


def test_invert_and_threshold() -> None:
    img = Image.new("RGB", (8, 8), (200, 200, 200))
    assert np.asarray(preprocess("invert", img))[0, 0].tolist() == [55, 55, 55]
    assert np.asarray(preprocess("threshold", img, 8, 150))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(preprocess("threshold", img, 8, 250))[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize(("mode", "pixel"), [("just_resize", 255), ("crop_and_resize", 255), ("resize_and_fill", 0)])
def test_resize_modes(mode: str, pixel: int) -> None:
    wide = Image.new("RGB", (128, 64), (255, 255, 255))
    out = fit(wide, (64, 64), mode)
    assert out.size == (64, 64)
    assert np.asarray(out)[2, 32, 0] == pixel  # the fill mode pads the top and bottom with black


def test_inpaint_marks_the_area_to_repaint_transparent() -> None:
    mask = Image.new("L", (64, 64))
    mask.paste(255, (0, 0, 32, 64))
    out = control_image("inpaint_only", square(), (64, 64), "just_resize", 512, None, None, mask)
    alpha = np.asarray(out)[..., 3]
    assert out.mode == "RGBA" and alpha[:, :32].max() == 0 and alpha[:, 32:].min() == 255


@pytest.mark.parametrize(("name", "words"), [("depth_zoe", "ZoeD"), ("openpose_hand", "hand_pose"),
                                             ("sharpen", "unknown")])
def test_refused_preprocessors_say_why(name: str, words: str) -> None:
    with pytest.raises(BadInput) as e:
        check_preprocessor(name, "module")
    assert e.value.field == "module" and words in e.value.detail


def test_controlnet_units_add_to_the_job_cost() -> None:
    from sdserve.engine.cost import CONTROLNET_WEIGHT, job_cost
    from sdserve.engine.params import ControlUnit, GenerationParams

    p = GenerationParams(model="m", task="txt2img", prompt="x", width=512, height=512, steps=20, guidance=7.5,
                         scheduler="euler")
    half = ControlUnit(model="c", guidance_end=0.5)
    assert job_cost(p.model_copy(update={"control": (ControlUnit(model="c"), half)}), "sd15") == \
        pytest.approx(job_cost(p, "sd15") * (1 + 1.5 * CONTROLNET_WEIGHT))
