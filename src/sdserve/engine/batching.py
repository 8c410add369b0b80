"""Which requests can share a denoising loop, and running them together.

Requests share one loop when their batch keys are equal (``params.batch_key``: every field
not marked per row). Prompts, negative prompts, seeds and input images may all differ.

The denoising call is built as a recipe: a short, ordered list of contributions, each a small
function that adds the pipeline arguments of one concern, in the order diffusers' pipelines
number their steps (prompts, size, timesteps, image + strength, mask, noise, progress). An
add-on (LoRA, ControlNet, a second pass) adds a contribution here, not a branch in a long
function.

Batching does not change anyone's image: every image has its own CPU generator (seed+i) for
its initial noise, image-encoding noise and any per-step noise, so an image made in a batch
matches the same request made alone, up to float rounding of the batched kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import Canceled
from .params import BatchItem, GenerationParams, StepInfo, batch_key
from .pipelines import LoadedModel, Needs
from .lora_adapters import activate as activate_loras
from .preview import latents_to_preview_png
from .prompt_encoding import Conditioning, encode_item, needs_embeddings, plain_text

__all__ = ["run_batch", "Rows", "Call", "RECIPE"]


@dataclass(frozen=True)
class Rows:
    """The batch flattened to one row per image: which item it belongs to, and its seed."""

    items: Sequence[BatchItem]
    owner: list[int]  # row -> index of its item
    seeds: list[int]
    # Per item, when any item's prompts need embeddings (A1111 syntax); empty: text for all.
    conditioning: list[Conditioning] = field(default_factory=list)

    @classmethod
    def of(cls, items: Sequence[BatchItem], conditioning: list[Conditioning] | None = None) -> Rows:
        owner, seeds = [], []
        for idx, it in enumerate(items):
            for seed in it.params.seeds:
                owner.append(idx)
                seeds.append(seed)
        return cls(items, owner, seeds, conditioning or [])

    def per_row(self, value: Callable[[BatchItem], Any]) -> list[Any]:
        """``value(item)`` repeated for each of the item's rows."""
        per_item = [value(it) for it in self.items]
        return [per_item[i] for i in self.owner]

    def images(self, role: str) -> list[Image.Image]:
        """The decoded input images of ``role``, one per row."""
        return self.per_row(lambda it: it.images[role])


@dataclass
class Call:
    """One denoising call being assembled: which pipeline it needs and its arguments."""

    needs: Needs
    kwargs: dict[str, Any] = field(default_factory=dict)


Contribution = Callable[[Call, GenerationParams, Rows, LoadedModel], None]


def prompts(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """1. Text: one prompt and negative prompt per row (None: SDXL encodes "none" as zeros),
    as text, or as embeddings when a row's A1111 syntax needs them (prompt_encoding)."""
    call.kwargs.update(num_images_per_prompt=1, guidance_scale=first.guidance)
    if not rows.conditioning:
        call.kwargs.update(prompt=rows.per_row(
                               lambda it: plain_text(it.params.prompt, it.params.prompt_syntax, it.params.embeddings)),
                           negative_prompt=rows.per_row(
                               lambda it: plain_text(it.params.negative_prompt, it.params.prompt_syntax,
                                                     it.params.embeddings))
                           if first.negative_prompt else None)
        return
    conds = [rows.conditioning[i] for i in rows.owner]
    call.kwargs.update(prompt_embeds=torch.cat([c.prompt for c in conds]))
    if conds[0].negative is not None:
        call.kwargs.update(negative_prompt_embeds=torch.cat([c.negative for c in conds if c.negative is not None]))
    if conds[0].pooled is not None:
        call.kwargs.update(pooled_prompt_embeds=torch.cat([c.pooled for c in conds if c.pooled is not None]))
    if conds[0].negative_pooled is not None:
        call.kwargs.update(negative_pooled_prompt_embeds=torch.cat(
            [c.negative_pooled for c in conds if c.negative_pooled is not None]))


def size(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """2. Output size: txt2img and inpaint take it explicitly; img2img keeps the image's."""
    if first.task in ("txt2img", "inpaint"):
        call.kwargs.update(width=first.width, height=first.height)


def timesteps(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """3. The schedule: step count (img2img/inpaint run its last ``strength`` share)."""
    call.kwargs.update(num_inference_steps=first.steps)


def init_image(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """4. img2img/inpaint: the image each row starts from, and how much of it is redrawn."""
    if first.task != "txt2img":
        call.kwargs.update(image=rows.images("init"), strength=first.strength)


def inpaint_mask(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """5. inpaint: each row's mask (white = repaint)."""
    if first.task == "inpaint":
        call.kwargs.update(mask_image=rows.images("mask"))


def control(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """5b. ControlNet: each row's control image per unit (the units' settings are shared, they
    are part of the batch key); "ControlNet is more important" is diffusers' guess_mode."""
    units = first.control
    if not units:
        return
    call.needs = replace(call.needs, control=tuple(u.model for u in units))
    images: list[Any] = [_control_rows(rows.images("control" if i == 0 else f"control.{i}")) for i in range(len(units))]

    def one_or_all(values: list[Any]) -> Any:
        return values[0] if len(units) == 1 else values

    if len(units) > 1 and first.task == "txt2img" and model.spec.arch != "sdxl":
        # This one pipeline reads a list of lists as rows x units (the others: units x rows).
        images = [list(row) for row in zip(*images, strict=True)]

    # txt2img pipelines take the control image as ``image``; img2img/inpaint as ``control_image``.
    call.kwargs.update({"image" if first.task == "txt2img" else "control_image": one_or_all(images)},
                       controlnet_conditioning_scale=one_or_all([u.weight for u in units]),
                       control_guidance_start=one_or_all([u.guidance_start for u in units]),
                       control_guidance_end=one_or_all([u.guidance_end for u in units]),
                       guess_mode=units[0].control_mode == "control")


def _control_rows(images: list[Image.Image]) -> list[Any]:
    """PIL images as they are; an inpaint unit's RGBA images as arrays in [0, 1] with the
    transparent (to repaint) pixels at -1, the input diffusers' inpaint ControlNet expects."""
    if all(img.mode != "RGBA" for img in images):
        return images
    out = []
    for img in images:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] < 0.5] = -1.0
        out.append(rgb)
    return out


def noise(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """6. One CPU generator per row, so no image depends on its batch or the device."""
    call.kwargs.update(generator=[torch.Generator("cpu").manual_seed(s) for s in rows.seeds], output_type="pil")


def progress(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """7. Step hooks: progress and lazy previews per item; stop when every item is canceled."""
    items, arch = rows.items, model.spec.arch
    first_row = {idx: rows.owner.index(idx) for idx in range(len(items))}

    def callback(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        if all(it.cancel is not None and it.cancel() for it in items):
            raise Canceled("job canceled")
        latents = kw.get("latents")
        total = int(getattr(p, "num_timesteps", 0) or first.steps or 0)
        for idx, it in enumerate(items):
            if it.on_step is None:
                continue
            row = first_row[idx]
            preview = (lambda r=row: latents_to_preview_png(latents, arch, r)) if latents is not None else None
            it.on_step(StepInfo(step=i + 1, total=total, preview=preview))
        return kw

    call.kwargs.update(callback_on_step_end=callback)


def vae(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """8. Decoding: an add-on VAE in place of the model's own (one per loop: a batch-key field)."""
    if first.vae is not None:
        call.needs = replace(call.needs, vae=first.vae)


# The order diffusers' pipelines number their steps in; add-ons insert theirs where they act.
RECIPE: tuple[Contribution, ...] = (prompts, size, timesteps, init_image, inpaint_mask, control, noise, progress, vae)


def run_batch(model: LoadedModel, items: Sequence[BatchItem]) -> list[list[Image.Image]]:
    """Run ``items`` (equal batch keys, inputs decoded) in one loop on ``model``; images per item.

    The loop stops early (raising Canceled) only when every item is canceled; a single
    canceled item in a live batch is dropped by the caller afterwards.
    """
    first = items[0].params
    if any(batch_key(it.params) != batch_key(first) for it in items):
        raise ValueError("run_batch needs items with equal batch keys")
    assert first.task is not None, "prepare() resolves the task"
    if first.ip_adapter is not None:
        # diffusers gives all rows of a call one image prompt: one loop per distinct image.
        by_image: dict[bytes | None, list[int]] = {}
        for i, it in enumerate(items):
            by_image.setdefault(it.params.input("ip_adapter"), []).append(i)
        if len(by_image) > 1:
            out: list[list[Image.Image]] = [[] for _ in items]
            for idx in by_image.values():
                for i, images in zip(idx, run_batch(model, [items[i] for i in idx]), strict=True):
                    out[i] = images
            return out
    activate_loras(model, first.loras)  # before any encoding: LoRAs may change the text encoders
    if not any(needs_embeddings(model.base, it.params) for it in items):
        return _run(items, [], model)
    conditioning = [encode_item(model.base, it.params) for it in items]
    # One loop takes one sequence length: prompts of different chunk counts run in loops of
    # their own (padding them to a common length would change their images).
    per_item: list[list[Image.Image]] = [[] for _ in items]
    for length in sorted({c.length for c in conditioning}):
        idx = [i for i, c in enumerate(conditioning) if c.length == length]
        for i, images in zip(idx, _run([items[i] for i in idx], [conditioning[i] for i in idx], model), strict=True):
            per_item[i] = images
    return per_item


def _run(items: Sequence[BatchItem], conditioning: list[Conditioning], model: LoadedModel) -> list[list[Image.Image]]:
    """One denoising call for ``items`` (with their embeddings, or none: prompts as text)."""
    first = items[0].params
    assert first.task is not None
    rows = Rows.of(items, conditioning)
    call = Call(Needs(task=first.task))
    for contribute in RECIPE:
        contribute(call, first, rows, model)
    pipe = model.pipeline(call.needs)
    pipe.scheduler = model.scheduler(first.scheduler or "euler")
    # IP-Adapter: loaded into the shared UNet for this call only; each row's image embedded.
    cfg = (first.guidance or 0) > 1 and model.base.unet.config.time_cond_proj_dim is None
    adapter_image = rows.images("ip_adapter")[0] if first.ip_adapter is not None else None
    with model.ip_adapters.applied(pipe, first.ip_adapter, adapter_image, cfg) as embeds, torch.inference_mode():
        if embeds is not None:
            call.kwargs["ip_adapter_image_embeds"] = embeds
        out = pipe(**call.kwargs).images
    per_item: list[list[Image.Image]] = [[] for _ in items]
    for img, idx in zip(out, rows.owner, strict=True):
        per_item[idx].append(img)
    return per_item

