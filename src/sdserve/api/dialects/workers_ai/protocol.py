"""Workers AI text-to-image wire schema (reference §1.3), fields in the upstream order.

The same input schema serves all five @cf Stable Diffusion models.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationInfo, field_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

__all__ = ["TextToImageInput", "ByteArray", "ModelSearchItem", "ModelSearchResponse", "MAX_STEPS"]

MAX_STEPS = 20

# An encoded file (PNG/JPEG) as a JSON array of byte values, as Workers clients send it.
ByteArray = Annotated[list[Annotated[StrictInt, Field(ge=0, le=255)]], Field(min_length=1)]
# Sides are checked against the 8-pixel latent grid by the engine (so the message is the same
# in every dialect); the schema says so too.
_GRID: JsonDict = {"multipleOf": 8}


class TextToImageInput(BaseModel):
    """Input of ``POST /ai/run/@cf/...`` for the Stable Diffusion models.

    Types are strict, as the upstream JSON-schema validator is: ``"0.5"`` is not a number
    and ``true`` is not an integer.
    """

    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr = Field(min_length=1, description="A text description of the image you want to generate.")
    negative_prompt: StrictStr | None = Field(None, description="Text describing elements to avoid.")
    height: StrictInt | None = Field(None, ge=256, le=2048, json_schema_extra=_GRID, description="Image height in pixels, a multiple of 8 (the model's default size if omitted).")
    width: StrictInt | None = Field(None, ge=256, le=2048, json_schema_extra=_GRID, description="Image width in pixels, a multiple of 8 (the model's default size if omitted).")
    image: ByteArray | None = Field(None, description="Input image for img2img/inpaint: the encoded file's bytes as integers 0-255 (or the object form {\"image\": [...]}).")
    image_b64: StrictStr | None = Field(None, description="Input image as base64 (bare or a data: URI).")
    mask: ByteArray | None = Field(None, description="Mask file bytes as integers 0-255; white = repaint (or the object form {\"mask\": [...]}).")
    num_steps: StrictInt | None = Field(None, ge=1, le=MAX_STEPS, description="Diffusion steps (default 20; few-step models use their own default).")
    strength: StrictFloat | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="How strongly to transform the input image (default 1).")
    guidance: StrictFloat | None = Field(None, ge=0, le=50, allow_inf_nan=False, description="Prompt adherence (default 7.5; few-step models use their own default).")
    seed: StrictInt | None = Field(None, ge=0, le=2**32 - 1, description="Random seed (random if omitted).")

    @field_validator("image", "mask", mode="before", json_schema_input_type=ByteArray | dict[str, ByteArray] | None)
    @classmethod
    def _unwrap_object_form(cls, v: Any, info: ValidationInfo) -> Any:
        # The task schema also allows {"image": [...]} / {"mask": [...]}. Taking the array out
        # here lets one type check both forms, so an error names the offending byte (image[3])
        # instead of reporting that the object is not a list.
        if isinstance(v, dict):
            if set(v) != {info.field_name}:
                raise PydanticCustomError("byte_array", 'expected an array of byte values or {"{name}": [...]}',
                                          {"name": info.field_name})
            return v[info.field_name]
        return v


class ModelSearchItem(BaseModel):
    """One result of the model search, shaped like a Workers AI catalog entry (reference §1.7)."""

    id: str
    source: int = 1
    name: str
    description: str
    task: dict[str, Any]
    created_at: str
    tags: list[str] = []
    properties: list[dict[str, Any]] = []


class ResultInfo(BaseModel):
    page: int
    per_page: int
    count: int
    total_count: int


class ModelSearchResponse(BaseModel):
    """``GET .../ai/models/search``: the v4 envelope around the matching models."""

    success: bool
    errors: list[Any]
    messages: list[Any]
    result: list[ModelSearchItem]
    result_info: ResultInfo
