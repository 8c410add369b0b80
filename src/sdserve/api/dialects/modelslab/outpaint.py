"""ModelsLab outpainting (``/api/v6/image_editing/outpaint``): the image fitted inside
``width`` x ``height`` and centred (scaled by the smaller ratio, as upstream's fill pipeline
places it), the rest outpainted with ``overlap_width`` pixels of the image repainted on each
side that grows; an engine outpaint job (engine.outpaint), answered in ModelsLab's shape."""

from __future__ import annotations

import io
from typing import Annotated

from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from sdserve.engine.catalog import ModelSpec
from sdserve.engine.outpaint import Outpaint
from sdserve.engine.params import GenerationParams, input_images
from sdserve.errors import BadInput
from sdserve.images import decode_image
from .protocol import Flag, parse_int, parse_number

__all__ = ["OutpaintRequest", "OUTPAINT_FIELDS", "outpaint_params"]

# Engine field names -> this endpoint's: a margin too large is the output size asked for.
OUTPAINT_FIELDS = {"image": "image", "outpaint.left": "width", "outpaint.right": "width", "outpaint.top": "height",
                   "outpaint.bottom": "height", "outpaint.overlap": "overlap_width", "outpaint": "width",
                   "steps": "num_inference_steps", "guidance": "guidance_scale"}

# Upstream's documented limits (docs.modelslab.com image-editing/outpaint).
_Side = Annotated[int, Field(ge=64, le=1440)]
_Overlap = Annotated[int, Field(ge=0, le=42)]
_Steps = Annotated[int, Field(ge=1, le=30)]
_Seed = Annotated[int, Field(ge=-1, le=2**32 - 1)]
_Guidance = Annotated[float, Field(ge=0, le=50)]


class OutpaintRequest(BaseModel):
    """Body of ``/api/v6/image_editing/outpaint`` (defaults as upstream documents them)."""

    model_config = ConfigDict(extra="ignore")

    key: str | None = None
    model_id: str | None = Field(None, description="sdserve's: the model inpainting the border (default model "
                                                   "when unset; an inpainting checkpoint suits it best).")
    prompt: str = Field("high quality", description="What the extended picture shows.")
    negative_prompt: str = "low quality"
    image: str | None = Field(None, description="The image to extend: http(s) URL, data: URI or base64.")
    width: Annotated[_Side, BeforeValidator(parse_int)] = Field(1280, description="Output width (max 1440).")
    height: Annotated[_Side, BeforeValidator(parse_int)] = Field(720, description="Output height (max 1440).")
    overlap_width: Annotated[_Overlap, BeforeValidator(parse_int)] = Field(
        10, description="Pixels of the image repainted along each side that grows (max 42).")
    num_inference_steps: Annotated[_Steps, BeforeValidator(parse_int)] = 10
    guidance_scale: Annotated[_Guidance, BeforeValidator(parse_number)] = 8.0
    seed: Annotated[_Seed | None, BeforeValidator(parse_int)] = Field(None, description="-1, 0 or null: random.")
    temp: Flag = Field(None, description="Upstream's temporary links; no effect here (outputs follow the server's "
                                         "retention).")
    base64: Flag = None
    webhook: str | None = None
    track_id: Annotated[str | None, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)] = None


def _fitted(image: bytes, width: int, height: int, max_pixels: int) -> tuple[bytes, Outpaint]:
    """The image scaled to fit ``width`` x ``height`` (PNG) and the centring margins."""
    im = decode_image(image, "image", max_pixels, "RGB")
    scale = min(width / im.width, height / im.height)
    w, h = max(1, int(im.width * scale)), max(1, int(im.height * scale))
    if (w, h) != im.size:
        im = im.resize((w, h), Image.Resampling.LANCZOS)
    if (w, h) == (width, height):
        raise BadInput("width", f"the image already fills {width}x{height}: ask for a larger size (in width or "
                                "height) to outpaint into")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    left, top = (width - w) // 2, (height - h) // 2
    return buf.getvalue(), Outpaint(left=left, right=width - w - left, top=top, bottom=height - h - top)


def outpaint_params(req: OutpaintRequest, spec: ModelSpec, image: bytes, max_pixels: int) -> GenerationParams:
    """An inpaint job of the fitted image with its margins; the whole border redrawn (strength 1)."""
    data, margins = _fitted(image, req.width, req.height, max_pixels)
    return GenerationParams(
        model=spec.id, prompt=req.prompt, negative_prompt=req.negative_prompt, prompt_syntax="a1111",
        steps=req.num_inference_steps, guidance=req.guidance_scale, strength=1.0,
        seed=None if req.seed is None or req.seed <= 0 else req.seed, inputs=input_images(data),
        outpaint=margins.model_copy(update={"overlap": req.overlap_width}),
    )
