"""ModelsLab upscaling: ``upscale`` on text2img (2x of each output) and the super-resolution
endpoint (``/api/v3/super_resolution``: ``url``/``init_image``, ``scale``, ``model_id`` as the
upscaler, ``face_enhance``: GFPGAN after the upscale), as an "upscale" job with ModelsLab's replies."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from sdserve.engine.addon_files import AddonFolders
from sdserve.engine.params import FaceRestoration, GenerationParams, UpscaleSettings, input_images
from sdserve.engine.upscalers import default_upscaler
from .protocol import Flag, parse_number

__all__ = ["SuperResolutionRequest", "UPSCALE_FIELDS", "generation_upscale", "super_resolution_params"]

# Engine field names -> ModelsLab's, for the super-resolution body.
UPSCALE_FIELDS = {"upscale.scale": "scale", "upscale.upscaler": "model_id", "image": "url",
                  "face_restoration": "face_enhance"}
# ModelsLab's "upscale": "yes" doubles the output.
GENERATION_SCALE = 2.0


class SuperResolutionRequest(BaseModel):
    """Body of ``/api/v3/super_resolution`` (and the v6 image_editing path)."""

    model_config = ConfigDict(extra="ignore")

    key: str | None = None
    url: str | None = Field(None, description="The image: http(s) URL (fetched SSRF-safely), data: URI or base64.")
    init_image: str | None = Field(None, description="Same as url (v6 naming).")
    scale: Annotated[float | None, BeforeValidator(parse_number)] = Field(
        None, description="Factor (default 4), at most 8 and the server's pixel cap.")
    model_id: str | None = Field(None, description="The upscaler (GET /sdapi/v1/upscalers); default: a "
                                                   "Real-ESRGAN file if installed, else the first model, else Lanczos.")
    face_enhance: Flag = None
    base64: Flag = None
    webhook: str | None = None
    track_id: str | None = None


def generation_upscale(addons: AddonFolders) -> UpscaleSettings:
    """What ``upscale: "yes"`` on a generation means here: 2x with the default upscaler."""
    return UpscaleSettings(upscaler=default_upscaler(addons), scale=GENERATION_SCALE)


def super_resolution_params(req: SuperResolutionRequest, model: str, image: bytes,
                            addons: AddonFolders) -> GenerationParams:
    s = UpscaleSettings(upscaler=req.model_id or default_upscaler(addons),
                        scale=4.0 if req.scale is None else req.scale)
    # face_enhance: GFPGAN over the upscaled image, as ModelsLab's (Real-ESRGAN's) does;
    # the engine checks it is installed (a 400 naming face_enhance if not).
    faces = (FaceRestoration(model="GFPGAN"),) if req.face_enhance else ()
    return GenerationParams(model=model, prompt="", task="upscale", upscale=s, inputs=input_images(image),
                            face_restoration=faces)
