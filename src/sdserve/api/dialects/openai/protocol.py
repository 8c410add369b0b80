"""OpenAI Images wire schema (reference §2), fields in the upstream order.

Requests accept every documented field (ignoring those Stable Diffusion has no use for, as
OpenAI-compatible gateways do) plus sdserve's extensions after them: ``negative_prompt``,
``seed``, ``steps``, ``guidance`` and, for edits and variations, ``strength``. Multipart
forms arrive as strings ("1", "true", ""), so the form models coerce them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from pydantic.config import JsonDict

from sdserve.engine.params import MAX_SEED

__all__ = [
    "ImageGenerateRequest",
    "ImageEditForm",
    "ImageVariationForm",
    "ImageData",
    "ImagesResponse",
    "Model",
    "ModelList",
    "ResponseFormat",
]

ResponseFormat = Literal["url", "b64_json"]
# What parse_size accepts (the adapter then checks the range and the 8-pixel grid).
SIZE_PATTERN: JsonDict = {"pattern": r"^\s*([Aa][Uu][Tt][Oo]|\d{1,5}\s*[xX]\s*\d{1,5})\s*$"}
OutputFormat = Literal["png", "jpeg", "webp"]


class _Extensions(BaseModel):
    """sdserve's own fields, accepted after OpenAI's."""

    negative_prompt: str | None = Field(None, description="sdserve extension: what to avoid.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="sdserve extension: random seed (random if omitted).")
    steps: int | None = Field(None, ge=1, le=200, description="sdserve extension: denoising steps (model default).")
    guidance: float | None = Field(None, ge=0, le=50, allow_inf_nan=False,
                                   description="sdserve extension: CFG scale (model default).")


class ImageGenerateRequest(_Extensions):
    """Body of ``POST /v1/images/generations``."""

    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr = Field(min_length=1, max_length=32000, description="What to draw.")
    model: StrictStr | None = Field(None, description="A catalog id or alias; OpenAI's names map to the default model.")
    n: int | None = Field(1, ge=1, le=10, description="How many images (1-10).")
    quality: str | None = Field(None, description="Accepted; no effect (steps decide quality here); echoed in "
                                                   "stream events.")
    response_format: ResponseFormat | None = Field(None, description="'url' (default) or 'b64_json'.")
    output_format: OutputFormat | None = Field(None, description="png (default), jpeg or webp.")
    output_compression: int | None = Field(None, ge=0, le=100, description="Accepted and ignored.")
    size: str | None = Field(None, json_schema_extra=SIZE_PATTERN,
                             description="'WIDTHxHEIGHT' (multiples of 8, 64-4096) or 'auto' (model's native size).")
    style: str | None = Field(None, description="Accepted; no effect (dall-e-3's vivid/natural; say it in the prompt).")
    user: str | None = Field(None, description="Accepted and ignored.")
    background: str | None = Field(None, description="Accepted; no effect (images are opaque); echoed in stream "
                                                      "events.")
    moderation: str | None = Field(None, description="Accepted; no effect (sdserve runs no moderation).")
    stream: bool | None = Field(None, description="true: answer with server-sent events (partial images, then "
                                                  "image_generation.completed per image).")
    partial_images: int | None = Field(None, ge=0, le=3, description="With stream: how many partial images (the "
                                                                     "live preview) to send at most; default 0.")


class _Form(_Extensions):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        # The SDK sends None as an empty text part.
        return None if isinstance(v, str) and v.strip() == "" else v


class ImageEditForm(_Form):
    """Text fields of ``POST /v1/images/edits`` (the files travel beside them)."""

    prompt: str = Field(min_length=1, max_length=32000, description="What the edited image should show.")
    model: str | None = None
    n: int | None = Field(1, ge=1, le=10)
    size: str | None = Field(None, json_schema_extra=SIZE_PATTERN)
    response_format: ResponseFormat | None = None
    output_format: OutputFormat | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    quality: str | None = None
    background: str | None = None
    input_fidelity: str | None = None
    user: str | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
    strength: float | None = Field(None, gt=0, le=1, allow_inf_nan=False,
                                   description="sdserve extension: how much to change (1 inside a mask; else model default).")


class ImageVariationForm(_Form):
    """Text fields of ``POST /v1/images/variations``."""

    model: str | None = None
    n: int | None = Field(1, ge=1, le=10)
    response_format: ResponseFormat | None = None
    size: str | None = Field(None, json_schema_extra=SIZE_PATTERN)
    user: str | None = None
    prompt: str | None = Field(None, max_length=32000, description="sdserve extension: steer the variation.")
    output_format: OutputFormat | None = None
    strength: float | None = Field(None, gt=0, le=1, allow_inf_nan=False,
                                   description="sdserve extension: how far from the input (default 0.7).")


class ImageData(BaseModel):
    """One image of an ``ImagesResponse``: ``url`` or ``b64_json``, never both."""

    model_config = ConfigDict(extra="allow")

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: str | None = None
    size: str | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sdserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
