"""Native job API <-> GenerationParams and Job, as pure functions."""

from __future__ import annotations

from collections.abc import Callable

from sdserve.engine.catalog import ModelSpec
from sdserve.engine.control import unit_field
from sdserve.engine.params import (ControlUnit, GenerationParams, InputImage, IPAdapterUnit, LoraRef, UpscaleSettings,
                                   input_images, normal_loras)
from sdserve.errors import BadInput
from sdserve.images import decode_base64
from sdserve.service.jobs import Job, Output, job_view
from .protocol import CatalogModel, JobOut, JobRequest, ModelDefaults, UpscaleIn, UpscaleJobRequest

__all__ = ["to_params", "job_out", "catalog_model", "upscale_params", "upscale_settings"]


def to_params(req: JobRequest, spec: ModelSpec) -> GenerationParams:
    """Translate a job request for ``spec``. The task follows from the inputs, and each side
    left out takes the input image's; ``prepare`` decides and checks both."""
    image = decode_base64(req.image, "image") if req.image is not None else None
    mask = decode_base64(req.mask, "mask") if req.mask is not None else None
    if image is None and req.strength is not None:
        raise BadInput("strength", "applies only with an input image (img2img or inpaint)")
    control = tuple(InputImage(role="control", index=i, data=decode_base64(u.image, unit_field(i, "image")))
                    for i, u in enumerate(req.control))
    ip = req.ip_adapter
    if ip is not None:
        control += (InputImage(role="ip_adapter", data=decode_base64(ip.image, "ip_adapter.image")),)
    return GenerationParams(
        model=spec.id, prompt=req.prompt, negative_prompt=req.negative_prompt, prompt_syntax=req.prompt_syntax,
        width=req.width,
        height=req.height, steps=req.steps, guidance=req.guidance, strength=req.strength, seed=req.seed, n=req.n,
        scheduler=req.scheduler, inputs=(*input_images(init=image, mask=mask), *control),
        output_format=req.output_format,
        control=tuple(ControlUnit(**u.model_dump(exclude={"image"})) for u in req.control),
        ip_adapter=IPAdapterUnit(**ip.model_dump(exclude={"image"})) if ip is not None else None,
        loras=normal_loras([LoraRef(name=r.name, weight=r.weight, text_encoder_weight=r.text_encoder_weight) for r in req.loras]),
        clip_skip=req.clip_skip, vae=req.vae,
        hires=req.hires, refiner=req.refiner,
        safety_check=req.safety_check, safety_mode=req.safety_mode, enhance_prompt="on" if req.enhance_prompt else "off",
        tiling=req.tiling, upscale=upscale_settings(req.upscale) if req.upscale else None,
        outpaint=req.outpaint,
        face_restoration=tuple(req.face_restoration),
    )


def upscale_settings(u: UpscaleIn) -> UpscaleSettings:
    sized = u.width is not None or u.height is not None
    return UpscaleSettings(upscaler=u.upscaler, scale=u.scale if u.scale is not None or sized else 2.0,
                           width=u.width, height=u.height, crop=u.crop, upscaler_2=u.upscaler_2,
                           upscaler_2_visibility=u.upscaler_2_visibility)


def upscale_params(req: UpscaleJobRequest, model: str) -> GenerationParams:
    """``POST /v1/upscale``: an "upscale" job of the image."""
    return GenerationParams(model=model, prompt="", task="upscale", upscale=upscale_settings(req),
                            inputs=input_images(decode_base64(req.image, "image")), output_format=req.output_format,
                            face_restoration=tuple(req.face_restoration))


def job_out(job: Job, output_url: Callable[[Output], str], queue_position: int | None = None) -> JobOut:
    return JobOut.model_validate(job_view(job, output_url, queue_position))


def catalog_model(spec: ModelSpec, available: bool) -> CatalogModel:
    d = spec.defaults
    return CatalogModel(id=spec.id, aliases=list(spec.aliases), description=spec.description, arch=spec.arch,
                        tasks=list(spec.tasks), available=available,
                        defaults=ModelDefaults(width=d.width, height=d.height, steps=d.steps, guidance=d.guidance,
                                               scheduler=d.scheduler, strength=d.strength))
