"""Native job API <-> GenerationParams and Job, as pure functions."""

from __future__ import annotations

from collections.abc import Callable

from sdserve.engine.catalog import ModelSpec
from sdserve.engine.params import GenerationParams, Task
from sdserve.errors import BadInput
from sdserve.images import decode_base64, decode_image
from sdserve.service.jobs import Job, Output, job_view
from .protocol import CatalogModel, JobOut, JobRequest, ModelDefaults

__all__ = ["to_params", "job_out", "catalog_model"]


def to_params(req: JobRequest, spec: ModelSpec, max_pixels: int) -> GenerationParams:
    """Translate a job request for ``spec``; images are decoded here so a bad one is
    reported under its own field name."""
    image = decode_base64(req.image, "image") if req.image is not None else None
    mask = decode_base64(req.mask, "mask") if req.mask is not None else None
    if mask is not None and image is None:
        raise BadInput("mask", "a mask needs an input image (image)")
    img = decode_image(image, "image", max_pixels) if image is not None else None
    if mask is not None and img is not None:
        m = decode_image(mask, "mask", max_pixels, mode="L")
        if m.size != img.size:
            raise BadInput("mask", f"is {m.width}x{m.height} but the image is {img.width}x{img.height}; "
                                   "they must be the same size")
    task: Task = "inpaint" if mask is not None else "img2img" if image is not None else "txt2img"
    spec.check_task(task)
    width, height = req.width, req.height
    if img is not None and width is None and height is None:
        # An input image keeps its size (rounded down to the latent grid) unless asked otherwise.
        width, height = max(64, img.width // 8 * 8), max(64, img.height // 8 * 8)
    if task == "txt2img" and req.strength is not None:
        raise BadInput("strength", "applies only with an input image (img2img or inpaint)")
    return GenerationParams(
        model=spec.id, task=task, prompt=req.prompt, negative_prompt=req.negative_prompt, width=width,
        height=height, steps=req.steps, guidance=req.guidance, strength=req.strength, seed=req.seed, n=req.n,
        scheduler=req.scheduler, init_image=image, mask_image=mask, output_format=req.output_format,
    )


def job_out(job: Job, output_url: Callable[[Output], str], queue_position: int | None = None) -> JobOut:
    return JobOut.model_validate(job_view(job, output_url, queue_position))


def catalog_model(spec: ModelSpec, available: bool) -> CatalogModel:
    d = spec.defaults
    return CatalogModel(id=spec.id, aliases=list(spec.aliases), description=spec.description, arch=spec.arch,
                        tasks=list(spec.tasks), available=available,
                        defaults=ModelDefaults(width=d.width, height=d.height, steps=d.steps, guidance=d.guidance,
                                               scheduler=d.scheduler, strength=d.strength))
