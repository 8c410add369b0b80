"""AUTOMATIC1111's "Extras" wire schema (modules/api/models.py): upscaling and face
restoration of given images, and the upscaler listings. Defaults are A1111's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ExtrasSingleImageRequest", "ExtrasBatchImagesRequest", "ExtrasSingleImageResponse",
           "ExtrasBatchImagesResponse", "FileData", "UpscalerItem", "LatentUpscaleModeItem", "RealesrganItem",
           "FaceRestorerItem"]


class _ExtrasBase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    resize_mode: Literal[0, 1] = Field(0, description="0: scale by upscaling_resize; 1: to upscaling_resize_w x _h.")
    show_extras_results: bool = Field(True, description="false: the answer carries no image.")
    gfpgan_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False,
                                     description="GFPGAN face restoration after the upscale, blended in by this much; "
                                                 "a 400 where it is not installed (GET /sdapi/v1/face-restorers).")
    codeformer_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False,
                                         description="CodeFormer face restoration after GFPGAN, blended in by this "
                                                     "much; a 400 where it is not installed.")
    codeformer_weight: float = Field(0, ge=0, le=1, allow_inf_nan=False,
                                     description="CodeFormer's fidelity w (0: the codebook's face, 1: nearer the input).")
    upscaling_resize: float = Field(2, ge=1, le=8, allow_inf_nan=False, description="Factor (resize_mode 0).")
    upscaling_resize_w: int = Field(512, ge=1, description="Target width (resize_mode 1).")
    upscaling_resize_h: int = Field(512, ge=1, description="Target height (resize_mode 1).")
    upscaling_crop: bool = Field(True, description="resize_mode 1: scale to cover, then crop to the target.")
    upscaler_1: str = Field("None", description="GET /sdapi/v1/upscalers; 'None' leaves the size as it is.")
    upscaler_2: str = Field("None", description="Blended over upscaler_1's result.")
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    upscale_first: bool = False


class ExtrasSingleImageRequest(_ExtrasBase):
    image: str = Field("", description="base64 or data: URI.")


class FileData(BaseModel):
    data: str = Field(description="base64 or data: URI.")
    name: str


class ExtrasBatchImagesRequest(_ExtrasBase):
    imageList: list[FileData] = Field(description="The images, each upscaled as one job.")  # noqa: N815 - A1111's


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str | None = None


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class LatentUpscaleModeItem(BaseModel):
    name: str


class RealesrganItem(BaseModel):
    name: str
    path: str | None = None
    scale: int | None = None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: str | None = None
