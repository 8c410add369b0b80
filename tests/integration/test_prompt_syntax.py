"""A1111 prompt syntax on the real engine (tiny SD 1.5 and SDXL): weights change the image,
``(x:1.0)`` does not, long prompts are read in chunks, and batching changes no image."""

from __future__ import annotations

import numpy as np
import pytest

from sdserve.engine.params import BatchItem, GenerationParams

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
BASE = {"width": 64, "height": 64, "steps": 2, "seed": 3, "guidance": 7.0, "scheduler": "euler"}
LONG = ", ".join(f"detail number {i}" for i in range(40))  # ~120 tokens: two chunks


def _image(engine, model: str, prompt: str, syntax: str = "a1111", **extra) -> np.ndarray:  # type: ignore[no-untyped-def]
    p = GenerationParams(model=model, prompt=prompt, prompt_syntax=syntax, **{**BASE, **extra})
    return np.asarray(engine.generate(p).images[0], dtype=np.int16)


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_weight_one_and_plain_text_give_the_same_pixels(engine, model):
    plain = _image(engine, model, "a cat in a garden")
    assert np.array_equal(plain, _image(engine, model, "(a cat in a garden:1.0)"))
    assert np.array_equal(plain, _image(engine, model, "a cat in a garden", syntax="plain"))


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_weights_and_break_change_the_conditioning(engine, model):
    plain = _image(engine, model, "a cat in a garden")
    assert not np.array_equal(plain, _image(engine, model, "a cat in a (garden:1.5)"))
    assert not np.array_equal(plain, _image(engine, model, "a cat BREAK in a garden"))
    # Without the syntax, the brackets are words the encoder reads.
    assert not np.array_equal(plain, _image(engine, model, "(a cat in a garden:1.0)", syntax="plain"))


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_long_weighted_prompts_make_a_real_image(engine, model):
    # Many chunks with weights (the tiny tokenizer reads one token per character): every chunk's
    # emphasis must stay finite, whatever the encoder's mean.
    img = _image(engine, model, "a (cat in a hat, " + " ".join(f"word{i}" for i in range(120)),
                 negative_prompt="[blurry], (low quality:1.4)")
    assert img.std() > 5  # NaN latents decode to an all-black image


def test_long_prompts_are_read_in_chunks_without_a_warning(engine):
    p = GenerationParams(model=SD15, prompt=LONG + ", and then a red moon", prompt_syntax="a1111", **BASE)
    res = engine.generate(p)
    assert res.warnings == []
    cut = engine.generate(p.model_copy(update={"prompt": LONG + ", and then a green sea"}))
    # The tail after the first 75 tokens reaches the model (plain text would cut it off).
    assert not np.array_equal(np.asarray(res.images[0]), np.asarray(cut.images[0]))
    plain = engine.generate(p.model_copy(update={"prompt_syntax": "plain"}))
    assert plain.warnings and "tokens" in plain.warnings[0]


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_batching_weighted_long_and_plain_prompts_changes_no_image(engine, model):
    prompts = ["a (cat:1.3) in a garden", "a cat in a garden", LONG, "[misty] lake BREAK boat"]
    alone = [_image(engine, model, t, negative_prompt="blurry") for t in prompts]
    items = [BatchItem(GenerationParams(model=model, prompt=t, prompt_syntax="a1111", negative_prompt="blurry",
                                        **BASE)) for t in prompts]
    together = engine.generate_batch(items)
    for i, res in enumerate(together):
        # Batched kernels may round differently from single ones: the goldens' 2/255.
        assert np.abs(alone[i] - np.asarray(res.images[0], dtype=np.int16)).max() <= 2, prompts[i]


def test_unsupported_syntax_is_refused_naming_the_field(engine):
    from sdserve.errors import BadInput

    with pytest.raises(BadInput) as e:
        engine.prepare(GenerationParams(model=SD15, prompt="x <lora:detail:0.7>", prompt_syntax="a1111"))
    assert e.value.field == "prompt"
    with pytest.raises(BadInput) as e:
        engine.prepare(GenerationParams(model=SD15, prompt="x", negative_prompt="y <lora:detail:1:0.5>",
                                        prompt_syntax="a1111"))
    assert e.value.field == "negative_prompt"
    # Scheduled prompts are applied (tests/integration/test_scheduled_prompts.py); as plain
    # text the same characters are just words.
    engine.prepare(GenerationParams(model=SD15, prompt="a [cat:dog:0.5]", negative_prompt="[a|b]",
                                    prompt_syntax="a1111"))
    engine.prepare(GenerationParams(model=SD15, prompt="a [cat:dog:0.5]", prompt_syntax="plain"))
