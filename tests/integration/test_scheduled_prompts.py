"""A1111's scheduled prompts on the real engine (tiny SD 1.5 and SDXL): ``[from:to:when]``
switches the conditioning at A1111's step, exactly as a diffusers loop switched by hand;
alternation changes the image; batching and schedules of other rows change no image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdserve.engine.params import BatchItem, GenerationParams
from sdserve.engine.pipelines import make_scheduler

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
BASE = {"width": 64, "height": 64, "steps": 4, "seed": 11, "guidance": 7.0, "scheduler": "euler"}


def _params(model: str, prompt: str, **extra) -> GenerationParams:  # type: ignore[no-untyped-def]
    return GenerationParams(model=model, prompt=prompt, prompt_syntax="a1111", **{**BASE, **extra})


def _image(engine, model: str, prompt: str, **extra) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(engine.generate(_params(model, prompt, **extra)).images[0], dtype=np.int16)


def _by_hand(engine, model: str, texts: list[str], switch_after: int, negative: str = "blurry") -> np.ndarray:  # type: ignore[no-untyped-def]
    """diffusers' own pipeline and encode_prompt: texts[0] up to loop step ``switch_after``
    (0-based, inclusive), texts[1] after it, swapped by our own step callback."""
    loaded = engine.load(model)
    pipe = loaded.base
    pipe.scheduler = make_scheduler("euler", loaded.scheduler_config)
    sdxl = model == SDXL
    with torch.inference_mode():
        enc = [pipe.encode_prompt(prompt=t, negative_prompt=negative, device=pipe.device,
                                  num_images_per_prompt=1, do_classifier_free_guidance=True) for t in texts]

        def cat(k: int, idx_neg: int, idx_pos: int) -> torch.Tensor:
            return torch.cat([enc[k][idx_neg], enc[k][idx_pos]])

        def switch(p, i, t, kw):  # type: ignore[no-untyped-def]
            if i == switch_after:
                kw["prompt_embeds"] = cat(1, 1, 0)
                if sdxl:
                    kw["add_text_embeds"] = cat(1, 3, 2)
            return kw

        first = enc[0]
        extra = ({"pooled_prompt_embeds": first[2], "negative_pooled_prompt_embeds": first[3]} if sdxl else {})
        image = pipe(prompt_embeds=first[0], negative_prompt_embeds=first[1], **extra, num_inference_steps=4,
                     guidance_scale=7.0, width=64, height=64, generator=[torch.Generator("cpu").manual_seed(11)],
                     callback_on_step_end=switch,
                     callback_on_step_end_tensor_inputs=["prompt_embeds"] + (["add_text_embeds"] if sdxl else [])
                     ).images[0]
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_prompt_editing_switches_at_a1111s_step(engine, model):
    # 4 steps, when 0.5: A1111 ends "cat" at step 2 and uses it while the 0-based step <= 2,
    # so "dog" conditions only the last step.
    ours = _image(engine, model, "a [cat:dog:0.5]", negative_prompt="blurry")
    ref = _by_hand(engine, model, ["a cat", "a dog"], switch_after=2)
    assert np.abs(ours - ref).max() <= 1
    assert not np.array_equal(ours, _image(engine, model, "a cat", negative_prompt="blurry"))
    # A step number: [cat:dog:1] ends "cat" after 0-based step 1.
    assert np.abs(_image(engine, model, "a [cat:dog:1]", negative_prompt="blurry")
                  - _by_hand(engine, model, ["a cat", "a dog"], switch_after=1)).max() <= 1


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_a_schedule_of_one_text_is_that_text(engine, model):
    plain = _image(engine, model, "cat", negative_prompt="blurry")
    assert np.array_equal(plain, _image(engine, model, "[cat:cat:0.5]", negative_prompt="blurry"))
    # when 0: the second text from the first step; a bad `when` leaves text (A1111: emphasis).
    assert np.array_equal(plain, _image(engine, model, "[dog:cat:0]", negative_prompt="blurry"))
    assert np.array_equal(_image(engine, model, "[a:b:x]"), _image(engine, model, "(a:b:x:0.9090909090909091)"))


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_alternation_and_negative_schedules_change_the_image(engine, model):
    plain = _image(engine, model, "a cat", negative_prompt="blurry")
    assert not np.array_equal(plain, _image(engine, model, "a [cat|dog]", negative_prompt="blurry"))
    assert not np.array_equal(plain, _image(engine, model, "a cat", negative_prompt="[blurry:ugly:0.25]"))
    # Weights nest inside a schedule and a schedule inside weights.
    img = _image(engine, model, "(a [cat:(dog:1.4):2]:1.2), [red|blue|] BREAK garden", negative_prompt="[blurry::2]")
    assert img.std() > 5


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_batching_scheduled_rows_with_others_changes_no_image(engine, model):
    # The last one's texts are one and two chunks long: padded alike, in a loop of its own.
    prompts = ["a [cat:dog:0.5]", "a cat", "[a|an] (cat:1.3)", "a [cat:" + ", ".join(["word"] * 40) + ":2]"]
    negatives = ["blurry", "[blurry:ugly:1]", "", "blurry"]
    alone = [_image(engine, model, p, negative_prompt=n) for p, n in zip(prompts, negatives, strict=True)]
    items = [BatchItem(_params(model, p, negative_prompt=n)) for p, n in zip(prompts, negatives, strict=True)]
    together = engine.generate_batch(items)
    for i, res in enumerate(together):
        assert np.abs(alone[i] - np.asarray(res.images[0], dtype=np.int16)).max() <= 2, prompts[i]


def test_hires_pass_goes_on_with_the_timeline(engine):
    from sdserve.engine.hires import HiresFix

    hires = {"hires": HiresFix(scale=1.5, steps=2, strength=0.5)}
    # Fractions up to 1 are over before the hires pass: it reads the last text...
    over = _image(engine, SD15, "a [cat:dog:0.5]", **hires)
    assert np.array_equal(over, _image(engine, SD15, "a [cat:dog:0.5]", hires=HiresFix(scale=1.5, steps=2, strength=0.5,
                                                                                         prompt="a dog")))
    # ...and 1.5 switches in the middle of the hires pass (first pass: "cat" throughout).
    mid = _image(engine, SD15, "a [cat:dog:1.5]", **hires)
    assert not np.array_equal(mid, over)


def test_refiner_goes_on_counting_the_base_steps(engine):
    from sdserve.engine.hires import Refiner

    refiner = {"refiner": Refiner(model="@cf/bytedance/stable-diffusion-xl-lightning", switch_at=0.5)}
    plain = _image(engine, SDXL, "a cat", **refiner)
    # 4 steps, the base runs 0-1, the refiner 2-3: [cat:dog:3] is "cat" throughout...
    assert np.array_equal(plain, _image(engine, SDXL, "a [cat:dog:3]", **refiner))
    # ...and [cat:dog:2] is "dog" at the refiner's second step (counted from 0, it would not be).
    assert not np.array_equal(plain, _image(engine, SDXL, "a [cat:dog:2]", **refiner))


def test_a1111_route_applies_them_and_reads_bad_forms_as_text(client):
    body = {"prompt": "a [cat:dog:0.5], [red|blue]", "negative_prompt": "[blurry:ugly:2]", "steps": 3,
            "width": 64, "height": 64, "seed": 1}
    assert client.post("/sdapi/v1/txt2img", json=body).status_code == 200
    for prompt in ("[a:b:x]", "a [cat|dog", "[cat:dog:]", "[:0.5]", "a | b ] ["):
        r = client.post("/sdapi/v1/txt2img", json={**body, "prompt": prompt})
        assert r.status_code == 200, (prompt, r.text)
