"""Which requests can share a denoising loop, and running them together.

Requests share one loop when everything that shapes the loop is equal: model, task, size,
steps, scheduler, strength and guidance (diffusers takes one CFG scale per call), and
whether a negative prompt is given (SDXL encodes "no negative prompt" as zeros, not as the
empty string). Prompts, negative prompts, seeds and input images may all differ.

Batching does not change anyone's image: every image has its own CPU generator (seed+i) for
its initial noise, image-encoding noise and any per-step noise, so an image made in a batch
matches the same request made alone, up to float rounding of the batched kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from ..errors import Canceled
from .params import BatchItem, StepInfo, batch_key
from .preview import latents_to_preview_png

__all__ = ["run_batch"]


def run_batch(model: Any, items: Sequence[BatchItem], make_scheduler: Callable[[str, Any], Any]) -> list[list[Image.Image]]:
    """Run ``items`` (equal batch keys) in one loop on ``model`` (a LoadedModel); images per item.

    The loop stops early (raising Canceled) only when every item is canceled; a single
    canceled item in a live batch is dropped by the caller afterwards.
    """
    first = items[0].params
    if any(batch_key(it.params) != batch_key(first) for it in items):
        raise ValueError("run_batch needs items with equal batch keys")
    pipe = model.pipeline(first.task)
    pipe.scheduler = make_scheduler(first.scheduler or "euler", model.scheduler_config)
    prompts: list[str] = []
    negatives: list[str] = []
    generators: list[torch.Generator] = []
    images: list[Image.Image] = []
    masks: list[Image.Image] = []
    owner: list[int] = []  # which item each row of the batch belongs to
    for idx, it in enumerate(items):
        for seed in it.params.seeds:
            prompts.append(it.params.prompt)
            negatives.append(it.params.negative_prompt)
            generators.append(torch.Generator("cpu").manual_seed(seed))
            owner.append(idx)
            if it.image is not None:
                images.append(it.image)
            if it.mask is not None:
                masks.append(it.mask)
    arch = model.spec.arch

    def callback(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        if all(it.cancel is not None and it.cancel() for it in items):
            raise Canceled("job canceled")
        latents = kw.get("latents")
        total = int(getattr(p, "num_timesteps", 0) or first.steps or 0)
        for idx, it in enumerate(items):
            if it.on_step is None:
                continue
            row = owner.index(idx)
            preview = (lambda r=row: latents_to_preview_png(latents, arch, r)) if latents is not None else None
            it.on_step(StepInfo(step=i + 1, total=total, preview=preview))
        return kw

    kwargs: dict[str, Any] = dict(
        prompt=prompts,
        negative_prompt=negatives if first.negative_prompt else None,
        num_inference_steps=first.steps,
        guidance_scale=first.guidance,
        num_images_per_prompt=1,
        generator=generators,
        output_type="pil",
        callback_on_step_end=callback,
    )
    if first.task == "txt2img":
        kwargs.update(width=first.width, height=first.height)
    else:
        kwargs.update(image=images, strength=first.strength)
    if first.task == "inpaint":
        kwargs.update(mask_image=masks, width=first.width, height=first.height)
    with torch.inference_mode():
        out = pipe(**kwargs).images
    per_item: list[list[Image.Image]] = [[] for _ in items]
    for img, idx in zip(out, owner, strict=True):
        per_item[idx].append(img)
    return per_item
