"""Every model family loads from disk and runs its tasks on the real diffusers engine.

Tiny random-weight models (64x64, 2 steps), so the images are noise: the checks are that
each task runs end to end, that its inputs really steer it, and that the three tasks of one
model share one copy of the weights.
"""

from __future__ import annotations

from sdserve.engine.pipelines import Needs

import numpy as np
import pytest
from PIL import Image

from sdserve.engine.params import GenerationParams, StepInfo
from sdserve.engine.schedulers import SCHEDULERS
from sdserve.errors import BadInput, Canceled
from tests.conftest import make_params, mask_bytes, png_bytes

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
INPAINTING = "@cf/runwayml/stable-diffusion-v1-5-inpainting"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
LIGHTNING = "@cf/bytedance/stable-diffusion-xl-lightning"
LCM = "@cf/lykon/dreamshaper-8-lcm"

# (model, task) for every task each family serves.
FAMILY_TASKS = [(m, t) for m in (SD15, SDXL, LIGHTNING, LCM) for t in ("txt2img", "img2img", "inpaint")]
FAMILY_TASKS.append((INPAINTING, "inpaint"))


def params(model: str, task: str, **kw) -> GenerationParams:  # type: ignore[no-untyped-def]
    """A 64x64, 2-step request; img2img/inpaint get an input image (and mask)."""
    fields: dict = dict(model=model, task=task, prompt="a lighthouse on a cliff", width=64, height=64, steps=2, seed=1)
    if task != "txt2img":
        fields.update(init_image=png_bytes(), strength=1.0)
    if task == "inpaint":
        fields.update(mask_image=mask_bytes())
    return make_params(**{**fields, **kw})


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(("model", "task"), FAMILY_TASKS, ids=[f"{m.split('/')[-1]}-{t}" for m, t in FAMILY_TASKS])
def test_family_task_generates(engine, model: str, task: str) -> None:  # type: ignore[no-untyped-def]
    steps: list[StepInfo] = []
    result = engine.generate(params(model, task), on_step=steps.append)
    assert len(result.images) == 1 and result.seeds == [1]
    img = result.images[0]
    assert img.size == (64, 64) and img.mode == "RGB"
    assert pixels(img).std() > 1  # a decoded image, not a constant fill
    spec = engine.catalog.get(model)
    assert result.params.model == spec.id and result.params.scheduler == spec.defaults.scheduler
    assert result.params.task == task
    assert steps and steps[-1].step == steps[-1].total >= 1
    assert result.device == "cpu" and result.dtype == "float32"


@pytest.mark.parametrize("task", ["txt2img", "img2img"])
def test_inpainting_checkpoint_refuses_other_tasks(engine, task: str) -> None:  # type: ignore[no-untyped-def]
    assert engine.load(INPAINTING).inpaint_unet  # the 9-channel UNet
    with pytest.raises(BadInput) as e:
        engine.generate(params(INPAINTING, task))
    assert e.value.field in ("image", "mask") and "inpaint" in e.value.message


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_the_input_image_steers_img2img(engine, model: str) -> None:  # type: ignore[no-untyped-def]
    red = engine.generate(params(model, "img2img", strength=0.5, init_image=png_bytes(color=(220, 30, 30))))
    blue = engine.generate(params(model, "img2img", strength=0.5, init_image=png_bytes(color=(30, 30, 220))))
    assert np.abs(pixels(red.images[0]) - pixels(blue.images[0])).max() > 0


@pytest.mark.parametrize("model", [SD15, INPAINTING, SDXL])
def test_the_mask_steers_inpaint(engine, model: str) -> None:  # type: ignore[no-untyped-def]
    small = engine.generate(params(model, "inpaint", mask_image=mask_bytes(box=(24, 24, 40, 40))))
    large = engine.generate(params(model, "inpaint", mask_image=mask_bytes(box=(0, 0, 64, 64))))
    assert np.abs(pixels(small.images[0]) - pixels(large.images[0])).max() > 0


def test_input_image_of_another_size_is_resized_to_the_request(engine) -> None:  # type: ignore[no-untyped-def]
    p = params(SD15, "inpaint", init_image=png_bytes((100, 80)), mask_image=mask_bytes((100, 80)))
    assert engine.generate(p).images[0].size == (64, 64)


def _param_ptrs(module) -> list[int]:  # type: ignore[no-untyped-def]
    return [p.data_ptr() for p in module.parameters()]


@pytest.mark.parametrize("model", [SD15, SDXL, LIGHTNING])
def test_the_three_tasks_share_one_copy_of_the_weights(engine, model: str) -> None:  # type: ignore[no-untyped-def]
    loaded = engine.load(model)
    base = loaded.pipeline(Needs("txt2img"))
    components = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if loaded.spec.arch == "sdxl" else [])
    for task in ("img2img", "inpaint"):
        view = loaded.pipeline(Needs(task))
        assert view is not base and type(view).__name__ != type(base).__name__
        assert loaded.pipeline(Needs(task)) is view  # built once, then reused
        for name in components:
            ours, theirs = getattr(view, name), getattr(base, name)
            assert ours is theirs, f"{task}.{name} is a different module"
            assert _param_ptrs(ours) == _param_ptrs(theirs), f"{task}.{name} holds its own tensors"


def test_lightning_runs_its_own_unet_on_the_sdxl_base(engine) -> None:  # type: ignore[no-untyped-def]
    sdxl, lightning = engine.load(SDXL), engine.load(LIGHTNING)
    name, weight = next(iter(lightning.base.unet.state_dict().items()))
    assert not np.array_equal(weight.numpy(), sdxl.base.unet.state_dict()[name].numpy())
    # ... while the text encoders and VAE are the base model's.
    for component in ("text_encoder", "text_encoder_2", "vae"):
        a = next(iter(getattr(lightning.base, component).state_dict().values()))
        b = next(iter(getattr(sdxl.base, component).state_dict().values()))
        assert np.array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("entry", SCHEDULERS, ids=lambda e: e.name)
def test_every_scheduler_runs(engine, entry) -> None:  # type: ignore[no-untyped-def]
    result = engine.generate(params(SD15, "txt2img", scheduler=entry.name))
    assert result.params.scheduler == entry.name and pixels(result.images[0]).std() > 1


# img2img cuts the schedule by strength; second-order, multistep, stochastic and LCM
# schedulers each index their timesteps differently, so each kind runs it once.
@pytest.mark.parametrize("name", ["heun", "dpm2_a", "dpmpp_2m", "dpmpp_2m_sde", "unipc", "lcm"])
def test_scheduler_kinds_run_img2img_at_partial_strength(engine, name: str) -> None:  # type: ignore[no-untyped-def]
    result = engine.generate(params(SD15, "img2img", scheduler=name, strength=0.5, steps=4))
    assert pixels(result.images[0]).std() > 1


def test_a_request_s_scheduler_does_not_leak_into_the_next(engine) -> None:  # type: ignore[no-untyped-def]
    # Schedulers are rebuilt from the model's own config for each run: a Karras or trailing
    # run in between must not change the next image made with the default scheduler.
    before = pixels(engine.generate(params(SD15, "txt2img", scheduler="dpmpp_2m")).images[0])
    engine.generate(params(SD15, "txt2img", scheduler="dpmpp_2m_karras"))
    engine.generate(params(SD15, "txt2img", scheduler="euler_trailing"))
    after = pixels(engine.generate(params(SD15, "txt2img", scheduler="dpmpp_2m")).images[0])
    assert np.array_equal(before, after)


@pytest.mark.parametrize(("strength", "steps", "ok"), [(0.5, 2, True), (0.49, 2, False), (0.1, 20, True), (0.04, 20, False)])
def test_strength_times_steps_must_leave_a_step(engine, strength: float, steps: int, ok: bool) -> None:  # type: ignore[no-untyped-def]
    p = params(SD15, "img2img", strength=strength, steps=steps)
    if ok:
        assert engine.generate(p).images[0].size == (64, 64)
    else:
        with pytest.raises(BadInput) as e:  # not a crash deep in diffusers (a 500)
            engine.generate(p)
        assert e.value.field == "strength"


@pytest.mark.parametrize(("field", "value"), [("width", 60), ("height", 8), ("width", 8192), ("steps", 0),
                                              ("guidance", -1.0), ("guidance", float("nan")), ("strength", 1.5),
                                              ("scheduler", "warp_drive")])
def test_out_of_range_values_are_bad_input(engine, field: str, value: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInput) as e:
        engine.generate(params(SD15, "img2img", **{field: value}))
    assert e.value.field == field


def test_missing_inputs_are_bad_input(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInput) as e:
        engine.generate(GenerationParams(model=SD15, task="img2img", prompt="x", width=64, height=64, steps=2))
    assert e.value.field == "image"
    with pytest.raises(BadInput) as e:
        engine.generate(make_params(model=SD15, task="inpaint", prompt="x", width=64, height=64, steps=2,
                                         init_image=png_bytes()))
    assert e.value.field == "mask"


def test_cancel_stops_the_loop(engine) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    with pytest.raises(Canceled):
        engine.generate(params(SD15, "txt2img", steps=4), on_step=lambda s: seen.append(s.step), cancel=lambda: bool(seen))
    assert seen == [1]


def test_step_events_count_every_step_and_offer_a_preview(engine) -> None:  # type: ignore[no-untyped-def]
    seen: list[StepInfo] = []
    engine.generate(params(SDXL, "txt2img", steps=3), on_step=seen.append)
    assert [s.step for s in seen] == [1, 2, 3] and {s.total for s in seen} == {3}
    preview = seen[-1].preview()
    assert preview.startswith(b"\x89PNG")
