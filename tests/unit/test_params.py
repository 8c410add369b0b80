"""GenerationParams: defaults filled from the model, seeds per image, and the type's guards."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import ValidationError

from sdserve.engine.catalog import Catalog
from sdserve.engine.params import (
    MAX_SEED,
    PER_ROW,
    GenerationParams,
    batch_key,
    input_images,
    per_row_fields,
    random_seed,
)

CATALOG = Catalog.builtin()
SD15 = CATALOG.get("sd15")
LIGHTNING = CATALOG.get("sdxl-lightning")
INPAINTING = CATALOG.get("sd15-inpainting")


def test_resolve_fills_every_default_from_the_model() -> None:
    p = GenerationParams(model="sd15", prompt="a cat").resolve(SD15)
    d = SD15.defaults
    assert p.model == SD15.id  # the alias is replaced by the canonical id
    assert (p.width, p.height, p.steps, p.guidance, p.scheduler) == (d.width, d.height, d.steps, d.guidance, d.scheduler)
    assert p.strength == 1.0  # txt2img: the whole schedule runs
    assert p.seed is not None and 0 <= p.seed <= MAX_SEED


def test_resolve_uses_each_family_s_own_defaults() -> None:
    p = GenerationParams(model=LIGHTNING.id, prompt="x").resolve(LIGHTNING)
    assert (p.steps, p.guidance, p.scheduler) == (4, 0.0, "euler_trailing")
    assert (p.width, p.height) == (1024, 1024)


def test_resolve_keeps_what_the_caller_chose() -> None:
    p = GenerationParams(model="sd15", prompt="x", width=64, height=128, steps=3, guidance=0.0,
                         strength=0.4, seed=0, scheduler="euler", task="img2img",
                         inputs=input_images(init=b"png")).resolve(SD15)
    # guidance 0 and seed 0 are real choices, not "missing".
    assert (p.width, p.height, p.steps, p.guidance, p.strength, p.seed, p.scheduler) == (64, 128, 3, 0.0, 0.4, 0, "euler")


def test_resolve_strength_default_depends_on_task_and_model() -> None:
    img2img = GenerationParams(model="sd15", prompt="x", task="img2img").resolve(SD15)
    assert img2img.strength == SD15.defaults.strength == 0.75
    inpaint = GenerationParams(model=INPAINTING.id, prompt="x", task="inpaint").resolve(INPAINTING)
    assert inpaint.strength == 1.0  # the inpainting checkpoint repaints the masked area from noise


def test_resolve_is_idempotent_and_does_not_mutate() -> None:
    raw = GenerationParams(model="sd15", prompt="x")
    once = raw.resolve(SD15)
    assert raw.seed is None and raw.width is None
    assert once.resolve(SD15) == once  # a stored, resolved copy resolves to itself (same seed)


def test_missing_seed_is_drawn_fresh_each_time() -> None:
    seeds = {GenerationParams(model="sd15", prompt="x").resolve(SD15).seed for _ in range(20)}
    assert len(seeds) > 1
    assert all(0 <= random_seed() < MAX_SEED - 16 for _ in range(100))


def test_seeds_are_consecutive_and_wrap_below_2_32() -> None:
    assert GenerationParams(model="m", prompt="x", seed=7, n=3).seeds == [7, 8, 9]
    assert GenerationParams(model="m", prompt="x", seed=MAX_SEED, n=2).seeds == [MAX_SEED, 0]


@pytest.mark.parametrize("bad", [{"seed": -1}, {"seed": MAX_SEED + 1}, {"n": 0}, {"n": 17},
                                 {"task": "recolour"}, {"output_format": "gif"}, {"colour": "red"}])
def test_invalid_values_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        GenerationParams(model="m", prompt="x", **bad)


def test_params_are_frozen() -> None:
    p = GenerationParams(model="m", prompt="x")
    with pytest.raises(ValidationError):
        p.prompt = "y"  # type: ignore[misc]


def test_summary_leaves_out_image_bytes() -> None:
    p = GenerationParams(model="m", prompt="x", task="inpaint",
                         inputs=input_images(init=b"\x89PNG" * 1000, mask=b"m"))
    s = p.summary()
    assert "init_image" not in s and "mask_image" not in s
    assert s["has_init_image"] is True and s["has_mask_image"] is True
    assert s["prompt"] == "x" and s["task"] == "inpaint"


def test_resolved_params_round_trip_through_json() -> None:
    # The job store keeps resolved params as JSON (images go to their own column).
    p = GenerationParams(model="sd15", prompt="x", negative_prompt="y", n=2, seed=3).resolve(SD15)
    assert GenerationParams.model_validate_json(p.model_dump_json()) == p


def test_zero_is_not_missing() -> None:
    # A 0 the caller sent stays 0 so the engine can reject it by name; only None means "default".
    p = GenerationParams(model="sd15", prompt="x", width=0, height=0, steps=0).resolve(SD15)
    assert (p.width, p.height, p.steps) == (0, 0, 0)


def test_summary_of_params_read_back_without_image_bytes_still_shows_the_inputs():
    # The store keeps image bytes apart and drops them when a job ends; the task tells.
    from sdserve.engine.params import GenerationParams

    stored = GenerationParams(model="m", prompt="p", task="inpaint")
    s = stored.summary()
    assert s["has_init_image"] is True and s["has_mask_image"] is True
    s = GenerationParams(model="m", prompt="p", task="txt2img").summary()
    assert s["has_init_image"] is False and s["has_mask_image"] is False


# -- the batch key is derived from the field declarations ---------------------------------

def test_batch_key_keeps_apart_requests_that_differ_in_a_shared_field() -> None:
    a = GenerationParams(model="m", prompt="x", width=64, height=64, steps=2, guidance=7.0, scheduler="euler")
    assert batch_key(a) == batch_key(a.model_copy(update={"prompt": "y", "seed": 9, "n": 3, "output_format": "webp"}))
    for field, value in {"width": 128, "steps": 3, "guidance": 1.0, "scheduler": "ddim", "task": "img2img",
                         "strength": 0.5, "model": "other"}.items():
        assert batch_key(a) != batch_key(a.model_copy(update={field: value})), field


def test_a_new_field_is_part_of_the_batch_key_unless_marked_per_row() -> None:
    """What a contributor adding an add-on's field gets without thinking about batching:
    requests that differ only in it never share a loop."""

    class WithAddOn(GenerationParams):
        tone: str = "warm"
        caption: Annotated[str, PER_ROW] = ""

    warm = WithAddOn(model="m", prompt="x", seed=1)
    assert batch_key(warm) != batch_key(warm.model_copy(update={"tone": "cold"}))
    assert batch_key(warm) == batch_key(warm.model_copy(update={"caption": "per image"}))
    assert "tone" not in per_row_fields(WithAddOn) and "caption" in per_row_fields(WithAddOn)


def test_per_row_fields_are_exactly_what_may_differ_inside_a_loop() -> None:
    assert per_row_fields() == {"prompt", "negative_prompt", "prompt_syntax", "seed", "n", "inputs", "output_format",
                                "embeddings", "safety_check", "safety_mode", "enhance_prompt", "original_prompt",
                                "outpaint",
                                # applied to each request's own images after the loop (engine.faces)
                                "face_restoration"}


def test_whether_a_negative_prompt_is_given_is_shared() -> None:
    # SDXL encodes "no negative prompt" as zeros, not as the empty string's embedding.
    a = GenerationParams(model="m", prompt="x", negative_prompt="blur")
    assert batch_key(a) == batch_key(a.model_copy(update={"negative_prompt": "fog"}))
    assert batch_key(a) != batch_key(a.model_copy(update={"negative_prompt": ""}))


def test_inputs_by_role_and_the_image_shorthands() -> None:
    p = GenerationParams(model="m", prompt="x", inputs=input_images(init=b"img", mask=b"msk"))
    assert [(i.role, i.index, i.data) for i in p.inputs] == [("init", 0, b"img"), ("mask", 0, b"msk")]
    assert (p.init_image, p.mask_image, p.input("control")) == (b"img", b"msk", None)  # type: ignore[arg-type]
    assert p.inferred_task == "inpaint" and p.task is None
    assert GenerationParams(model="m", prompt="x", inputs=input_images(init=b"img")).inferred_task == "img2img"
    assert GenerationParams(model="m", prompt="x").inferred_task == "txt2img"
    assert input_images(init=None, mask=None) == ()
    with pytest.raises(ValidationError):
        GenerationParams(model="m", prompt="x", inputs=[{"role": "bogus", "data": b"x"}])
