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
from .passes import Pass, Resize, decode_latents, plan_passes
from .pipelines import LoadedModel, Needs
from .lora_adapters import activate as activate_loras
from .preview import latents_to_preview_png
from .prompt_encoding import Conditioning, encode_item, has_schedule, needs_embeddings, plain_text
from .prompt_schedule import Timeline, prompt_schedule
from .prompt_syntax import without_tags
from .refiner_prompts import encode_single_encoder_item, needs_single_encoder_embeddings, single_encoder

__all__ = ["run_batch", "Rows", "Call", "Stage", "RECIPE"]


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
class Stage:
    """Where a denoising call sits among its request's passes (engine.passes)."""

    offset: int = 0  # steps the earlier passes ran: progress counts every pass
    total: int | None = None  # steps of all passes (None: this call's own)
    output: str = "pil"  # "latent" when a later pass starts from this call's latents
    extra: dict[str, Any] = field(default_factory=dict)  # this pass's own pipeline arguments
    done: int = 0  # steps run so far (set by the progress hook)
    interrupted: bool = False  # stopped early with its images kept (BatchItem.interrupt)
    # The steps scheduled prompts span in this pass (None: its own steps, from 0).
    timeline: Timeline | None = None


@dataclass
class Call:
    """One denoising call being assembled: which pipeline it needs and its arguments."""

    needs: Needs
    kwargs: dict[str, Any] = field(default_factory=dict)
    stage: Stage = field(default_factory=Stage)
    # Per row, what an earlier pass made for this one to start from (latents or images).
    start: list[Any] | None = None
    # Run by the one step callback (progress) after each step: (pipe, step, tensors) -> None;
    # a hook changes the loop's tensors in place in the dict (callback_on_step_end_tensor_inputs).
    step_hooks: list[Callable[[Any, int, dict[str, Any]], None]] = field(default_factory=list)


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
    call.kwargs.update(num_inference_steps=first.steps, **call.stage.extra)


def init_image(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """4. img2img/inpaint: the image each row starts from, and how much of it is redrawn."""
    if first.task == "txt2img":
        return
    if call.start is None:
        image: Any = rows.images("init")
    else:  # an earlier pass's latents (one batch tensor: diffusers skips the VAE encode) or images
        image = torch.cat(call.start) if isinstance(call.start[0], torch.Tensor) else call.start
    call.kwargs.update(image=image, strength=first.strength)


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
    call.kwargs.update(generator=[torch.Generator("cpu").manual_seed(s) for s in rows.seeds],
                       output_type=call.stage.output)


def prompt_switches(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """6b. Scheduled prompts: after each step, the rows whose conditioning changes at the next
    one get it in the loop's tensors (under CFG the pipeline holds negatives then positives in
    one batch: row r's negative at r, its prompt at rows + r; SDXL's pooled alike). A row
    without a schedule is never touched."""
    conds = [rows.conditioning[i] for i in rows.owner] if rows.conditioning else []
    if not any(c.schedule for c in conds):
        return
    pooled = conds[0].pooled is not None
    call.kwargs.update(callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]
                       + (["add_text_embeds"] if pooled else []))
    start = _first_step(call.stage)
    n = len(conds)

    def switch(p: Any, i: int, kw: dict[str, Any]) -> None:
        step = start + i + 1
        changed = [(r, c.at(step)) for r, c in enumerate(conds) if c.schedule and c.at(step) is not c.at(step - 1)]
        if not changed:
            return
        cfg = bool(p.do_classifier_free_guidance)
        names = ("prompt_embeds", "add_text_embeds") if pooled else ("prompt_embeds",)
        tensors = {name: kw[name].clone() for name in names}
        for r, now in changed:
            for name, pos, neg in (("prompt_embeds", now.prompt, now.negative),
                                   ("add_text_embeds", now.pooled, now.negative_pooled)):
                if name not in tensors or pos is None:
                    continue
                t = tensors[name]
                t[n + r if cfg else r] = pos[0]
                if cfg and neg is not None:
                    t[r] = neg[0]
        kw.update(tensors)

    call.step_hooks.append(switch)


def _first_step(stage: Stage) -> int:
    """The loop step this pass starts at on its prompt timeline: 0, or for a pass that goes
    on with the earlier passes' count (the refiner) the steps they ran."""
    return stage.offset if stage.timeline is not None and stage.timeline.continues else 0


def progress(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """7. Step hooks: progress (over all passes) and lazy previews per item; stop when every
    item is canceled, or when each is canceled or interrupted (the images are then decoded
    from where the loop stands, as A1111's interrupt returns them)."""
    items, arch, stage = rows.items, model.spec.arch, call.stage
    first_row = {idx: rows.owner.index(idx) for idx in range(len(items))}

    def callback(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        canceled = [it.cancel is not None and it.cancel() for it in items]
        if all(canceled):
            raise Canceled("job canceled")
        if all(c or (it.interrupt is not None and it.interrupt()) for c, it in zip(canceled, items, strict=True)):
            p._interrupt = stage.interrupted = True  # diffusers skips the remaining steps, then decodes
        stage.done = i + 1
        for hook in call.step_hooks:
            hook(p, i, kw)
        latents = kw.get("latents")
        own = int(getattr(p, "num_timesteps", 0) or first.steps or 0)
        total = stage.total or own
        step = min(stage.offset + i + 1, total)
        for idx, it in enumerate(items):
            if it.on_step is None:
                continue
            row = first_row[idx]
            preview = (lambda r=row: latents_to_preview_png(latents, arch, r)) if latents is not None else None
            it.on_step(StepInfo(step=step, total=total, preview=preview))
        return kw

    call.kwargs.update(callback_on_step_end=callback)


def vae(call: Call, first: GenerationParams, rows: Rows, model: LoadedModel) -> None:
    """8. Decoding: an add-on VAE in place of the model's own (one per loop: a batch-key field)."""
    if first.vae is not None:
        call.needs = replace(call.needs, vae=first.vae)


# The order diffusers' pipelines number their steps in; add-ons insert theirs where they act.
# A pass of several (engine.passes) runs this same recipe with its own params and Stage.
RECIPE: tuple[Contribution, ...] = (prompts, size, timesteps, init_image, inpaint_mask, control, noise,
                                    prompt_switches, progress, vae)


def run_batch(model: LoadedModel, items: Sequence[BatchItem], load: Callable[[str], LoadedModel] | None = None,
              resize: Resize | None = None) -> list[list[Image.Image]]:
    """Run ``items`` (equal batch keys, inputs decoded) on ``model``; images per item.

    Each of the request's passes (engine.passes: one, or two for hires fix and the refiner)
    is one recipe run over all items, on the model it names (``load``: another model by id;
    ``resize``: how an image upscaler is applied, engine.upscalers through the engine).
    The loop stops early (raising Canceled) only when every item is canceled; a single
    canceled item in a live batch is dropped by the caller afterwards. When the items are
    interrupted, the chain ends at the pass that was running and its images are returned.
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
                for i, images in zip(idx, run_batch(model, [items[i] for i in idx], load, resize), strict=True):
                    out[i] = images
            return out
    # Before any encoding (LoRAs may change the text encoders); on the request's model only:
    # a pass on another checkpoint (hr_checkpoint_name, the refiner) runs it as it is.
    activate_loras(model, first.loras)
    passes = plan_passes(first, resize)
    total = sum(ps.steps for ps in passes)
    outputs: list[list[Any]] = []
    offset = 0
    for k, ps in enumerate(passes):
        pass_model = model if k == 0 else _model_for(ps, first, model, load)
        later = passes[k + 1].takes if k + 1 < len(passes) else "pil"
        stage = Stage(offset=offset, total=total, output="latent" if later == "latent" else "pil", extra=ps.extra,
                      timeline=ps.timeline)
        run_items = items if k == 0 else [_later_pass(ps, it) for it in items]
        starts = None if k == 0 else [ps.start(rows) for rows in outputs]
        outputs = _denoise(pass_model, run_items, stage, starts)
        offset += stage.done
        if stage.interrupted or k + 1 == len(passes):
            if stage.output == "latent":
                outputs = [decode_latents(pass_model.base, rows) for rows in outputs]
            break
    return outputs


def _later_pass(ps: Pass, item: BatchItem) -> BatchItem:
    """``item`` as a later pass runs it. On the request's own model the ControlNet units and
    the image prompt guide this pass too, their images fitted to its size (as A1111's
    ControlNet extension does in the hires pass); another checkpoint (the refiner,
    ``hr_checkpoint_name``) runs without them: they were made for the first model's UNet."""
    q = ps.params(item.params)
    if q.model != item.params.model:
        # Nor the textual inversions: they are loaded into the first model's encoders only, so
        # on another one (the SDXL refiner) an embedding's name is read as the word it is.
        return BatchItem(q.model_copy(update={"control": (), "ip_adapter": None, "embeddings": ()}), {},
                         item.on_step, item.cancel, item.interrupt)
    assert q.width and q.height
    size = (q.width, q.height)
    carried = {role: img if role == "ip_adapter" or img.size == size else img.resize(size, Image.Resampling.LANCZOS)
               for role, img in item.images.items() if role == "ip_adapter" or role.startswith("control")}
    return BatchItem(q, carried, item.on_step, item.cancel, item.interrupt)


def _model_for(ps: Pass, first: GenerationParams, model: LoadedModel,
               load: Callable[[str], LoadedModel] | None) -> LoadedModel:
    name = ps.params(first).model
    if name == model.spec.id:
        return model
    if load is None:
        raise ValueError(f"a pass on {name} needs a model loader")
    return load(name)


def _denoise(model: LoadedModel, items: Sequence[BatchItem], stage: Stage,
             starts: list[list[Any]] | None) -> list[list[Any]]:
    """One pass over ``items``: text prompts in one loop; prompts needing embeddings (A1111
    syntax) in one loop per sequence length. Per item, its rows' outputs."""
    # The SDXL refiner has one text encoder: its prompts are read by refiner_prompts.
    needs = needs_single_encoder_embeddings if single_encoder(model.base) else needs_embeddings
    if not any(needs(model.base, it.params) for it in items):
        return _run(items, [], model, stage, starts)
    timeline, start = _timeline(model, items, stage)
    if single_encoder(model.base):
        conditioning = [encode_single_encoder_item(model.base, _text_at_start(it.params, timeline, start))
                        for it in items]
    else:
        conditioning = [encode_item(model.base, it.params, timeline, start) for it in items]
    # One loop takes one sequence length: prompts of different chunk counts run in loops of
    # their own (padding them to a common length would change their images).
    per_item: list[list[Any]] = [[] for _ in items]
    for length in sorted({c.length for c in conditioning}):
        idx = [i for i, c in enumerate(conditioning) if c.length == length]
        sub = None if starts is None else [starts[i] for i in idx]
        for i, out in zip(idx, _run([items[i] for i in idx], [conditioning[i] for i in idx], model, stage, sub),
                          strict=True):
            per_item[i] = out
    return per_item


def _text_at_start(params: GenerationParams, timeline: Timeline | None, start: int) -> GenerationParams:
    """``params`` with a scheduled prompt replaced by the text in effect at loop step
    ``start``: a one-encoder pass (the SDXL refiner) holds that text to its end."""
    if timeline is None or not has_schedule(params):
        return params

    def at_start(text: str) -> str:
        if not text:
            return text
        entries = prompt_schedule(without_tags(text), timeline.steps, timeline.first_pass_steps)
        return next((t for until, t in entries if start <= until), entries[-1][1])

    return params.model_copy(update={"prompt": at_start(params.prompt),
                                     "negative_prompt": at_start(params.negative_prompt)})


def _timeline(model: LoadedModel, items: Sequence[BatchItem], stage: Stage) -> tuple[Timeline | None, int]:
    """The steps scheduled prompts span in this pass and the loop step it starts at. A1111
    counts a second-order sampler's steps (Heun, DPM2) twice, as its loop calls the model
    about twice per step: diffusers' loop does the same, and its scheduler's ``order`` says
    so (the hires pass counts the first pass's steps with its own sampler's order)."""
    if not any(has_schedule(it.params) for it in items):
        return None, 0
    first = items[0].params
    order = int(getattr(model.scheduler(first.scheduler or "euler"), "order", 1))
    t = stage.timeline or Timeline(int(first.steps or 1))
    first_pass = None if t.first_pass_steps is None else t.first_pass_steps * order
    return Timeline(t.steps * order, first_pass, t.continues), _first_step(stage)


def _run(items: Sequence[BatchItem], conditioning: list[Conditioning], model: LoadedModel, stage: Stage,
         starts: list[list[Any]] | None) -> list[list[Any]]:
    """One denoising call for ``items`` (with their embeddings, or none: prompts as text)."""
    first = items[0].params
    assert first.task is not None
    rows = Rows.of(items, conditioning)
    call = Call(Needs(task=first.task), stage=stage,
                start=None if starts is None else [r for item_rows in starts for r in item_rows])
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
    per_item: list[list[Any]] = [[] for _ in items]
    for k, idx in enumerate(rows.owner):
        per_item[idx].append(out[k:k + 1] if isinstance(out, torch.Tensor) else out[k])
    return per_item
