"""AUTOMATIC1111 wire schema (reference §4.2-4.4), fields in the upstream order with A1111's
defaults (steps 50, cfg_scale 7, sampler Euler, seed -1 = random, 512x512).

Unknown keys are ignored, as A1111's pydantic models do. Fields sdserve has no feature for
are accepted; the adapter refuses the ones whose effect the caller would miss (hires fix,
scripts, tiling, face restoration, variation seeds) rather than silently ignoring them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from sdserve.engine.params import MAX_SEED

__all__ = [
    "Txt2ImgRequest",
    "Img2ImgRequest",
    "GenerationResponse",
    "ProgressResponse",
    "PngInfoRequest",
    "PngInfoResponse",
    "SDModelItem",
    "SDVaeItem",
    "PromptStyleItem",
    "SamplerItem",
    "SchedulerItem",
    "MemoryResponse",
    "OptionsNotApplied",
]


# 64-4096; a side off the 8-pixel grid is rounded down, as A1111's latents are (width // 8).
_SIDE: JsonDict = {"minimum": 64, "maximum": 4096}
_SIDE_DOC = "Pixels, 64-4096; rounded down to a multiple of 8 (A1111's latent is width // 8)."
_Seed = Annotated[int, Field(ge=-1, le=MAX_SEED)] | Literal[""] | None


class _Common(BaseModel):
    """Fields txt2img and img2img share (StableDiffusionProcessing)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 (default) draws a random seed.")
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = Field(None, description="e.g. 'Euler a', 'DPM++ 2M' (GET /sdapi/v1/samplers).")
    scheduler: str | None = Field(None, description="Schedule type: 'Automatic' (the sampler's default), 'Karras', "
                                  "'Normal', ... (GET /sdapi/v1/schedulers).")
    batch_size: int = Field(1, ge=1, le=16, description="Images per batch (one job).")
    n_iter: int = Field(1, ge=1, le=100, description="Batches, run one after another; seeds continue.")
    steps: int = Field(50, ge=1, le=200)
    cfg_scale: float = Field(7.0, ge=0, le=50, allow_inf_nan=False)
    width: int = Field(512, json_schema_extra=_SIDE, description=_SIDE_DOC)
    height: int = Field(512, json_schema_extra=_SIDE, description=_SIDE_DOC)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    force_task_id: str | None = None
    sampler_index: str = "Euler"
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None

    @field_validator("seed", "subseed", mode="before", json_schema_input_type=_Seed)
    @classmethod
    def _blank_seed_is_random(cls, v: Any) -> Any:
        # A1111 treats "", None and -1 alike: draw a random seed.
        return -1 if v is None or v == "" else v


class Txt2ImgRequest(_Common):
    """Body of ``POST /sdapi/v1/txt2img``."""

    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgRequest(_Common):
    """Body of ``POST /sdapi/v1/img2img``."""

    init_images: list[str] | None = Field(None, description="One image: base64 or a data: URI.")
    resize_mode: int = Field(0, ge=0, le=3, description="0 just resize, 1 crop and resize, 2 resize and fill, "
                                                        "3 just resize (latent upscale; same as 0 here).")
    denoising_strength: float | None = Field(0.75, gt=0, le=1, allow_inf_nan=False)
    image_cfg_scale: float | None = None
    mask: str | None = Field(None, description="White = repaint; an RGBA mask with transparency is read by alpha.")
    mask_blur_x: int = Field(4, ge=0, le=64)
    mask_blur_y: int = Field(4, ge=0, le=64)
    mask_blur: int | None = Field(None, ge=0, le=64, description="Sets mask_blur_x and mask_blur_y.")
    mask_round: bool = True
    inpainting_fill: int = Field(0, ge=0, le=3)
    inpaint_full_res: bool = Field(True, description="'Only masked': inpaint a crop around the mask, paste it back.")
    inpaint_full_res_padding: int = Field(0, ge=0, le=1024)
    inpainting_mask_invert: int = Field(0, ge=0, le=1, description="1 repaints the black area instead.")
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = Field(False, description="Echo init_images and mask in `parameters`.")


class GenerationResponse(BaseModel):
    """``TextToImageResponse`` / ``ImageToImageResponse``: ``info`` is a JSON string."""

    images: list[str]
    parameters: dict[str, Any]
    info: str


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None


class PngInfoRequest(BaseModel):
    image: str = Field(description="base64 or data: URI of a PNG (text chunk) or JPEG/WebP (EXIF UserComment).")


class InterrogateRequest(BaseModel):
    image: str = Field(description="base64 or data: URI of the image to describe.")
    model: str = Field("clip", description="'clip': a caption from the server's captioner (a BLIP model, as "
                       "A1111's CLIP interrogator starts with); 'deepdanbooru' and others are not served here.")


class InterrogateResponse(BaseModel):
    caption: str


class PngInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class PromptStyleItem(BaseModel):
    """One entry of ``GET /sdapi/v1/prompt-styles`` (a row of styles.csv)."""

    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class SDVaeItem(BaseModel):
    """One entry of ``GET /sdapi/v1/sd-vae``: ``model_name`` is what ``sd_vae`` takes."""

    model_name: str
    filename: str


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class MemoryResponse(BaseModel):
    """``GET /sdapi/v1/memory``: each part is the numbers or ``{"error": ...}``."""

    ram: dict[str, Any] = Field(description="free, used (this process's resident size), total: bytes.")
    cuda: dict[str, Any] = Field(description="system {free, used, total}, active/allocated/reserved/inactive "
                                             "{current, peak}, events {retries, oom}; {error} off CUDA.")


class OptionsNotApplied(BaseModel):
    """``POST /sdapi/v1/options`` when some keys were not applied (null when all were)."""

    not_applied: dict[str, str] = Field(description="Each key sdserve did not apply, with why; GET shows the "
                                                    "value in effect.")
