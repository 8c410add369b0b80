"""Native job API wire schema: the internal parameters under their own names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from sdserve.engine.hires import HiresFix, Refiner
from sdserve.engine.outpaint import Outpaint
from sdserve.engine.params import MAX_SEED, ControlUnit, FaceRestoration, IPAdapterUnit

__all__ = ["JobRequest", "ControlUnitIn", "IPAdapterIn", "JobOut", "OutputOut", "ErrorOut", "ProgressOut", "JobList",
           "CatalogModel", "CatalogList", "UsageOut", "UsageList", "LimitsOut", "CostOut", "CaptionRequest", "CaptionOut",
           "AddonOut", "AddonList", "UpscaleIn", "UpscaleJobRequest"]


def _completed_only() -> list[Literal["start", "completed"]]:
    return ["completed"]


class ControlUnitIn(ControlUnit):
    """One ControlNet unit: the engine's unit settings plus its control image."""

    image: StrictStr = Field(description="The control image, base64 (bare or a data: URI); the preprocessor "
                             "turns it into the hint ('none': it is the hint).")


class IPAdapterIn(IPAdapterUnit):
    """An IP-Adapter (image prompt): its file in the server's ipadapter folder, scale and image."""

    image: StrictStr = Field(description="The image prompt, base64 (bare or a data: URI).")


class LoraIn(BaseModel):
    """A LoRA by its add-on name (``GET /v1/addons``) and weight."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=255, description="File name without extension, as listed.")
    weight: float = Field(1.0, ge=-10, le=10, allow_inf_nan=False, description="Strength (A1111's tag weight); "
                          "the UNet's when text_encoder_weight is given.")
    text_encoder_weight: float | None = Field(None, ge=-10, le=10, allow_inf_nan=False, description=(
        "The text encoders' strength, when it differs from the UNet's (A1111's <lora:name:te:unet>, ComfyUI's "
        "strength_clip; 0: the UNet only). Default: weight."))


# Face restoration steps (docs/faces.md), the same on a generation and an upscale job.
_FACES = ("Face restoration steps, in order: {model: GFPGAN, visibility: 0-1 (blended over the image), "
          "weight: CodeFormer's fidelity}; GET /sdapi/v1/face-restorers lists what is installed.")


class UpscaleIn(BaseModel):
    """How to upscale: by ``scale``, or to ``width`` x ``height`` (by the larger ratio; with
    ``crop``, centred on exactly that size). Upscaler names: ``GET /sdapi/v1/upscalers``."""

    model_config = ConfigDict(extra="forbid")

    upscaler: StrictStr = Field("Lanczos", description="None, Lanczos, Nearest or an upscaler file's name.")
    scale: float | None = Field(None, gt=0, le=8, allow_inf_nan=False, description="Factor (default 2 without a size).")
    width: StrictInt | None = Field(None, ge=1, le=8192, description="Target width (with height).")
    height: StrictInt | None = Field(None, ge=1, le=8192, description="Target height (with width).")
    crop: bool = Field(False, description="With a target size: crop to exactly it.")
    upscaler_2: StrictStr | None = Field(None, description="A second upscaler blended over the first.")
    upscaler_2_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False, description="Its weight.")


class UpscaleJobRequest(UpscaleIn):
    """Body of ``POST /v1/upscale``: one image upscaled as a job (no model, no denoising)."""

    image: StrictStr = Field(description="The image, base64 (bare or a data: URI).")
    face_restoration: list[FaceRestoration] = Field(default_factory=list, max_length=4, description=_FACES
                                                    + " After the upscale.")
    output_format: Literal["png", "jpeg", "webp"] = Field("png", description="Encoding of the output.")
    webhook: StrictStr | None = Field(None, description="URL to POST the job to when it ends.")
    webhook_events: list[Literal["start", "completed"]] = Field(default_factory=_completed_only)
    priority: StrictInt = Field(0, ge=-10, le=10)


class JobRequest(BaseModel):
    """Body of ``POST /v1/jobs``. The task follows from the inputs: image and mask is
    inpaint, image alone img2img, neither txt2img. Unset fields take the model's defaults."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr = Field(description="Catalog id or alias (see `sdserve models`).")
    prompt: StrictStr = Field(min_length=1, description="What to generate.")
    negative_prompt: StrictStr = Field("", description="What to avoid.")
    prompt_syntax: Literal["a1111", "plain", "comfyui"] = Field(
        "a1111", description="How prompts are read: 'a1111' is AUTOMATIC1111's syntax ((word:1.2), [word], BREAK, "
                             "chunks beyond 75 tokens); 'plain' is text as is (truncated at 75 tokens, with a warning); "
                             "'comfyui' is ComfyUI's ((word:1.2) sets the weight, no [word] or BREAK; docs/api-comfyui.md).")
    width: StrictInt | None = Field(None, ge=64, le=4096, description="Width in pixels, a multiple of 8.")
    height: StrictInt | None = Field(None, ge=64, le=4096, description="Height in pixels, a multiple of 8.")
    steps: StrictInt | None = Field(None, ge=1, le=200, description="Denoising steps.")
    guidance: float | None = Field(None, ge=0, le=50, allow_inf_nan=False, description="CFG scale.")
    seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED, description="Seed of the first image (random if unset).")
    n: StrictInt = Field(1, ge=1, le=16, description="Images to make (seeds seed, seed+1, ...).")
    strength: float | None = Field(None, gt=0, le=1, allow_inf_nan=False,
                                   description="How far img2img/inpaint may move from the input image.")
    image: StrictStr | None = Field(None, description="Input image, base64 (bare or a data: URI).")
    mask: StrictStr | None = Field(None, description="Inpainting mask, base64; white = repaint, black = keep.")
    scheduler: StrictStr | None = Field(None, description="Scheduler name (see `sdserve models --schedulers`).")
    output_format: Literal["png", "jpeg", "webp"] = Field("png", description="Encoding of the outputs.")
    loras: list[LoraIn] = Field(default_factory=list, max_length=16, description="LoRAs to apply (with "
                                "prompt_syntax 'a1111', <lora:name:weight> tags in the prompts are added to these).")
    clip_skip: StrictInt = Field(1, ge=1, le=12, description="Clip skip, A1111's numbering: 1 conditions on the "
                                 "text encoder's last layer, 2 on the one before (SDXL: counted from its penultimate).")
    vae: StrictStr | None = Field(None, description="A VAE from the server's VAE folder (models/VAE; GET /sdapi/v1/sd-vae lists them) "
                                  "decoding instead of the model's own; null: the model's own.")
    hires: HiresFix | None = Field(None, description="Hires fix: a second img2img pass at scale (or resize_x/"
                                   "resize_y) over the upscaled first pass; upscaler: a latent mode or an image "
                                   "upscaler (GET /sdapi/v1/upscalers). txt2img only.")
    refiner: Refiner | None = Field(None, description="SDXL refiner: `model` finishes the schedule from `switch_at`.")
    webhook: StrictStr | None = Field(None, description="URL to POST the job to when it ends (Standard Webhooks signed).")
    webhook_events: list[Literal["start", "completed"]] = Field(
        default_factory=_completed_only, description="Which moments the webhook reports.")
    priority: StrictInt = Field(0, ge=-10, le=10, description="Order among this key's own queued jobs (higher first).")
    control: list[ControlUnitIn] = Field(default_factory=list, description="ControlNet units: each a ControlNet "
                                         "from the server's ControlNet folder, its settings and control image.")
    ip_adapter: IPAdapterIn | None = Field(None, description="An image prompt through an IP-Adapter.")
    # -- safety checker and prompt enhancer (docs/safety.md) --
    safety_check: bool = Field(False, description="Run the safety checker on each image (the server's policy may "
                               "refuse it, or run it on every image whatever this says).")
    safety_mode: Literal["black", "blur", "pixelate"] = Field(
        "black", description="What a flagged image becomes.")
    enhance_prompt: bool = Field(False, description="Rewrite the prompt with the server's prompt enhancer, seeded by "
                                 "the seed (params.prompt then shows the prompt used, params.original_prompt yours).")
    # Issue 15: seamless tiling and an upscale of each output after the loop.
    tiling: bool = Field(False, description="Seamless tiling: the image wraps at its edges (circular padding).")
    upscale: UpscaleIn | None = Field(None, description="Upscale each output after generating it.")
    outpaint: Outpaint | None = Field(None, description="Outpainting: `image` extended by these margins (px) and "
                                      "the new border inpainted, reaching `overlap` px into the image on each side "
                                      "that grows; no mask (it is made from the margins). Output size: the image "
                                      "plus the margins unless width/height say otherwise.")
    face_restoration: list[FaceRestoration] = Field(default_factory=list, max_length=4, description=_FACES
                                                    + " After the VAE decode, before the safety checker.")


class OutputOut(BaseModel):
    index: int
    seed: int
    content_type: str
    url: str | None = Field(description="Where to GET the image; null once it expired.")
    expires_at: str | None
    nsfw: bool | None = Field(None, description="Whether the safety checker flagged this image (it is then "
                              "obscured); null when the checker did not run.")


class ErrorOut(BaseModel):
    type: str
    message: str
    field: str | None = None


class ProgressOut(BaseModel):
    step: int
    total: int


class JobOut(BaseModel):
    """A job as ``GET /v1/jobs/{id}`` shows it (and webhook payloads carry it as ``data``)."""

    id: str
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    model: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    queue_position: int | None = Field(description="1 = starts next; null unless queued.")
    progress: ProgressOut | None
    attempts: int
    priority: int
    cost: float = Field(description="Compute units (one: an SD 1.5 UNet evaluation at 512x512), priced when the job "
                        "was accepted; what compute credits are charged. See docs/jobs.md.")
    params: dict[str, Any] = Field(description="The parameters that ran (defaults filled in), without images.")
    seeds: list[int]
    outputs: list[OutputOut]
    error: ErrorOut | None
    webhook: str | None
    warnings: list[str] = Field(default_factory=list, description="How the request was read, e.g. a prompt "
                                "longer than the text encoder reads (the rest was ignored).")


class JobList(BaseModel):
    data: list[JobOut]


class LimitsOut(BaseModel):
    """Per-request limits that apply to the caller (null: no limit)."""

    max_steps: int | None
    max_side: int | None
    max_pixels: int | None
    max_images: int | None
    max_cost: float | None


class UsageOut(BaseModel):
    """What a key has spent and has left. Credits are charged when a job is accepted and
    given back when it fails or is canceled; null credits: no quota."""

    key: str | None = Field(description="The key's id (key_...), static-... for a config key, null on an open server.")
    name: str | None
    images_used: int
    image_credits: int | None
    images_left: int | None
    compute_used: float = Field(description="Compute units charged (see docs/jobs.md, 'Cost').")
    compute_credits: float | None
    compute_left: float | None
    rate_limit: int | None = Field(description="Requests per minute, over every server sharing the database.")
    limits: LimitsOut
    active: bool


class UsageList(BaseModel):
    data: list[UsageOut]


class CostOut(BaseModel):
    """What a job would cost; the request passed every check a submit makes before queuing."""

    cost: float = Field(description="Compute units the job would be charged (see docs/jobs.md, 'Cost').")
    compute_left: float | None = Field(description="Your compute credits left (null: no quota).")


class ModelDefaults(BaseModel):
    """What a job for this model gets where it leaves a field out."""

    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    strength: float


class CatalogModel(BaseModel):
    """One servable model, as ``GET /v1/catalog`` lists it."""

    id: str
    aliases: list[str]
    description: str
    arch: str
    tasks: list[Literal["txt2img", "img2img", "inpaint"]] = Field(
        description="What it does: txt2img (no image), img2img (image), inpaint (image and mask).")
    defaults: ModelDefaults
    available: bool = Field(description="Its weights are here (false: run `sdserve pull` first).")


class CatalogList(BaseModel):
    data: list[CatalogModel]


class AddonOut(BaseModel):
    """One add-on file, as ``GET /v1/addons`` lists it."""

    kind: str = Field(description="lora, embedding, vae, upscaler, ...")
    name: str = Field(description="What requests call it (loras[].name, <lora:name:w>, an embedding's prompt word).")
    filename: str
    size: int


class AddonList(BaseModel):
    data: list[AddonOut]


class CaptionRequest(BaseModel):
    """Body of ``POST /v1/caption``."""

    model_config = ConfigDict(extra="forbid")

    image: StrictStr = Field(description="The image, base64 (bare or a data: URI).")


class CaptionOut(BaseModel):
    caption: str = Field(description="What the server's captioner sees in the image.")
