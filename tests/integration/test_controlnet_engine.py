"""ControlNet on the real engine: the tiny random-weight ControlNets demo mode writes beside
the tiny base models (engine.tiny_addons), in both formats and both families.

The ControlNets' output convolutions are random (not zero as in a fresh real one), so a
control image visibly changes the image and these tests can tell a unit was applied.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sdserve.engine.params import BatchItem, ControlUnit, GenerationParams, InputImage, IPAdapterUnit, input_images
from sdserve.errors import BadInput
from tests.conftest import mask_bytes, png_bytes, png_of

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"


def drawing(shift: int = 0) -> bytes:
    """A white square outline on black: a control image with edges."""
    img = Image.new("RGB", (64, 64))
    ImageDraw.Draw(img).rectangle((12 + shift, 12, 48, 48 - shift), outline=(255, 255, 255), width=3)
    return png_of(img)


def request(model: str = SD15, units: tuple[ControlUnit, ...] | None = None, images: tuple[bytes, ...] | None = None,
            seed: int = 3, **kw) -> GenerationParams:  # type: ignore[no-untyped-def]
    units = (ControlUnit(model="tiny-sd15-canny"),) if units is None else units
    images = tuple(drawing() for _ in units) if images is None else images
    inputs = (*kw.pop("inputs", ()), *(InputImage(role="control", index=i, data=d) for i, d in enumerate(images)))
    return GenerationParams(model=model, prompt="a house", width=64, height=64, steps=2, seed=seed, control=units,
                            inputs=inputs, **kw)


def pixels(engine, p: GenerationParams) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(engine.generate(p).images[0], dtype=np.int16)


def test_equals_diffusers_controlnet_pipeline(engine, tiny_dir) -> None:  # type: ignore[no-untyped-def]
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    p = request()
    ours = engine.generate(p)
    model = engine.load(SD15)
    net = ControlNetModel.from_pretrained(str(tiny_dir / "ControlNet" / "tiny-sd15-canny"))
    pipe = StableDiffusionControlNetPipeline.from_pretrained(str(model.spec.source.path), controlnet=net,
                                                             safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = model.scheduler(ours.params.scheduler or "")
    theirs = pipe("a house", image=Image.open(io.BytesIO(drawing())), width=64, height=64, num_inference_steps=2,
                  guidance_scale=ours.params.guidance, generator=[torch.Generator("cpu").manual_seed(3)]).images[0]
    # Up to float rounding: the engine's VAE decodes one image at a time (engine.load).
    assert np.abs(np.asarray(ours.images[0], dtype=np.int16) - np.asarray(theirs, dtype=np.int16)).max() <= 1
    # ... and the unit is applied: without it the image differs.
    plain = p.model_copy(update={"control": (), "inputs": ()})
    assert np.abs(pixels(engine, plain) - np.asarray(ours.images[0], dtype=np.int16)).mean() > 1


def test_batch_equals_alone(engine) -> None:  # type: ignore[no-untyped-def]
    # Same unit settings, different control images and seeds: one loop, each image its own.
    a, b = request(images=(drawing(0),), seed=5), request(images=(drawing(10),), seed=6)
    together = engine.generate_batch([BatchItem(a), BatchItem(b)])
    assert together[0].timings["batch_requests"] == 2  # type: ignore[union-attr]
    for p, res in zip((a, b), together, strict=True):
        alone = pixels(engine, p)
        assert np.abs(alone - np.asarray(res.images[0], dtype=np.int16)).max() <= 1  # type: ignore[union-attr]


def test_unit_settings_steer_the_image(engine) -> None:  # type: ignore[no-untyped-def]
    base = pixels(engine, request())
    for unit in (ControlUnit(model="tiny-sd15-canny", weight=0.3),
                 ControlUnit(model="tiny-sd15-canny", control_mode="control"),
                 ControlUnit(model="tiny-sd15-canny", guidance_start=0.5)):
        assert np.abs(pixels(engine, request(units=(unit,))) - base).mean() > 0.2, unit
    # A preprocessor changes what the ControlNet sees: a filled square's edges are its outline.
    square = Image.new("RGB", (64, 64))
    square.paste((255, 255, 255), (16, 16, 48, 48))
    as_sent = pixels(engine, request(images=(png_of(square),)))
    edges = pixels(engine, request(units=(ControlUnit(model="tiny-sd15-canny", preprocessor="canny"),),
                                   images=(png_of(square),)))
    assert np.abs(as_sent - edges).mean() > 0.2


@pytest.mark.parametrize(("model", "net", "task"), [
    (SD15, "tiny-sd15-canny-single", "img2img"),
    (SD15, "tiny-sd15-canny", "inpaint"),
    (SDXL, "tiny-sdxl-canny", "txt2img"),
    (SDXL, "tiny-sdxl-canny-single", "inpaint"),
])
def test_families_formats_and_tasks(engine, model: str, net: str, task: str) -> None:  # type: ignore[no-untyped-def]
    extra = dict(inputs=input_images(init=png_bytes(), mask=mask_bytes() if task == "inpaint" else None),
                 task=task, strength=1.0) if task != "txt2img" else {}
    pre = "inpaint" if task == "inpaint" else "none"
    with_unit = pixels(engine, request(model, (ControlUnit(model=net, preprocessor=pre),), **extra))
    without = pixels(engine, request(model, (), (), **extra))
    assert with_unit.shape == (64, 64, 3)
    assert np.abs(with_unit - without).mean() > 0.2


def test_two_units_share_one_multicontrolnet(engine) -> None:  # type: ignore[no-untyped-def]
    units = (ControlUnit(model="tiny-sd15-canny"), ControlUnit(model="tiny-sd15-canny-single", weight=0.5))
    two = pixels(engine, request(units=units, images=(drawing(0), drawing(8))))
    one = pixels(engine, request(units=units[:1], images=(drawing(0),)))
    assert np.abs(two - one).mean() > 0.2


@pytest.mark.parametrize(("change", "field", "words"), [
    (dict(images=(b"not an image",)), "control[0].image", "image"),
    (dict(units=(ControlUnit(model="tiny-sdxl-canny"),)), "control[0].model", "SDXL"),
    (dict(units=(ControlUnit(model="no-such-net"),)), "control[0].model", "no-such-net"),
    (dict(units=(ControlUnit(model="tiny-sd15-canny", preprocessor="sharpen"),)), "control[0].preprocessor", "unknown"),
    (dict(units=(ControlUnit(model="tiny-sd15-canny", preprocessor="depth_leres"),)), "control[0].preprocessor",
     "res101"),
    (dict(units=(ControlUnit(model="tiny-sd15-canny", preprocessor="inpaint"),)), "control[0].preprocessor", "mask"),
    (dict(units=(ControlUnit(model="tiny-sd15-canny", control_mode="prompt"),)), "control[0].control_mode", "prompt"),
    (dict(units=(ControlUnit(model="tiny-sd15-canny", guidance_start=0.8, guidance_end=0.2),)),
     "control[0].guidance_start", "guidance_end"),
    (dict(units=tuple(ControlUnit(model="tiny-sd15-canny") for _ in range(5))), "control", "at most"),
    (dict(images=()), "control[0].image", "no control image"),
])
def test_bad_units_are_refused_naming_the_field(engine, change: dict, field: str, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInput) as e:
        engine.prepare(request(**change))
    assert e.value.field == field
    assert words in e.value.detail


def test_single_file_wrong_family_is_refused_before_loading(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInput) as e:
        engine.prepare(request(SDXL, (ControlUnit(model="tiny-sd15-canny-single"),)))
    assert e.value.field == "control[0].model" and "SD 1.5" in e.value.detail


def adapter_request(color: tuple[int, int, int], model: str = SD15, adapter: str = "tiny-ip-adapter_sd15",
                    seed: int = 3) -> GenerationParams:
    return GenerationParams(model=model, prompt="a house", width=64, height=64, steps=2, seed=seed,
                            ip_adapter=IPAdapterUnit(model=adapter, scale=0.8),
                            inputs=(InputImage(role="ip_adapter", data=png_bytes((80, 60), color)),))


def test_ip_adapter_image_prompt_batch_equals_alone(engine) -> None:  # type: ignore[no-untyped-def]
    red, blue = adapter_request((255, 0, 0)), adapter_request((0, 0, 255))
    alone = [pixels(engine, p) for p in (red, blue)]
    assert np.abs(alone[0] - alone[1]).mean() > 1  # the image prompt steers the image
    together = engine.generate_batch([BatchItem(red), BatchItem(blue)])
    for a, res in zip(alone, together, strict=True):
        assert np.abs(a - np.asarray(res.images[0], dtype=np.int16)).max() <= 1  # type: ignore[union-attr]
    # Unloaded after the call: a plain request is as before.
    plain = red.model_copy(update={"ip_adapter": None, "inputs": ()})
    assert np.abs(pixels(engine, plain) - alone[0]).mean() > 1


def test_ip_adapter_sdxl_and_wrong_family(engine) -> None:  # type: ignore[no-untyped-def]
    assert pixels(engine, adapter_request((255, 0, 0), SDXL, "tiny-ip-adapter_sdxl")).shape == (64, 64, 3)
    with pytest.raises(BadInput) as e:
        engine.generate(adapter_request((255, 0, 0), SDXL, "tiny-ip-adapter_sd15"))
    assert e.value.field == "ip_adapter.model"
    with pytest.raises(BadInput) as e:
        engine.prepare(adapter_request((1, 2, 3)).model_copy(update={"inputs": ()}))
    assert e.value.field == "ip_adapter.image"
