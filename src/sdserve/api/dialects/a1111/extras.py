"""AUTOMATIC1111 "Extras" routes: ``extra-single-image``, ``extra-batch-images`` and the
upscaler listings (``upscalers``, ``latent-upscale-modes``, ``realesrgan-models``,
``face-restorers``).

Each image is one "upscale" job of the job service (queued, stored, with progress), so an
upscale waits its turn like a generation and shows up in the job listings.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from sdserve.api.deps import owner_of, require_key, service_of, settings_of, warning_headers
from sdserve.api.responses import JOB_ERRORS
from sdserve.engine.addon_files import AddonFolders
from sdserve.engine.faces import check_restorer, installed_restorers
from sdserve.engine.params import FaceRestoration, GenerationParams, UpscaleSettings, input_images
from sdserve.engine.upscalers import LATENT_UPSCALE_MODES, list_upscalers
from sdserve.errors import BadInput
from sdserve.images import face_fields, postprocess_fields
from .extras_protocol import (
    ExtrasBatchImagesRequest,
    ExtrasBatchImagesResponse,
    ExtrasSingleImageRequest,
    ExtrasSingleImageResponse,
    FaceRestorerItem,
    LatentUpscaleModeItem,
    RealesrganItem,
    UpscalerItem,
)
from .inputs import decode_b64

__all__ = ["extras_router", "extras_settings", "extras_faces", "EXTRAS_FIELDS"]

extras_router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"], dependencies=[Depends(require_key)])

# Engine field names -> the extras request's.
EXTRAS_FIELDS = {"upscale.scale": "upscaling_resize", "upscale.width": "upscaling_resize_w",
                 "upscale.height": "upscaling_resize_h", "upscale.upscaler": "upscaler_1",
                 "upscale.upscaler_2": "upscaler_2", "upscale.upscaler_2_visibility": "extras_upscaler_2_visibility",
                 "face_restoration": "gfpgan_visibility"}


def extras_faces(req: ExtrasSingleImageRequest | ExtrasBatchImagesRequest,
                 addons: AddonFolders) -> tuple[FaceRestoration, ...]:
    """The request's face restoration, after the upscale as A1111 orders its postprocessing:
    GFPGAN, then CodeFormer, each blended in by its visibility; a 400 naming the visibility
    field where that restorer cannot run here."""
    steps = []
    for model, field in (("GFPGAN", "gfpgan_visibility"), ("CodeFormer", "codeformer_visibility")):
        if getattr(req, field) > 0:
            check_restorer(addons, model, field=field)
            steps.append(FaceRestoration(model=model, visibility=getattr(req, field), weight=req.codeformer_weight))
    return tuple(steps)


def extras_settings(req: ExtrasSingleImageRequest | ExtrasBatchImagesRequest, addons: AddonFolders) -> UpscaleSettings:
    """The request's upscale, A1111's way: sides rounded down to 8."""
    to_size = req.resize_mode == 1
    return UpscaleSettings(upscaler=req.upscaler_1, scale=None if to_size else req.upscaling_resize,
                           width=req.upscaling_resize_w if to_size else None,
                           height=req.upscaling_resize_h if to_size else None, crop=to_size and req.upscaling_crop,
                           upscaler_2=req.upscaler_2, upscaler_2_visibility=req.extras_upscaler_2_visibility, grid=8)


def _html_info(s: UpscaleSettings, faces: tuple[FaceRestoration, ...] = ()) -> str:
    """A1111's extras ``html_info``: the postprocessing fields as one HTML paragraph."""
    import html

    fields = [*postprocess_fields(s.model_dump()),
              *face_fields({"task": "upscale", "face_restoration": [f.model_dump() for f in faces]})]
    text = ", ".join(f"{k}: {v}" for k, v in fields if v is not None)
    return f"<p>{html.escape(text)}</p>" if text else ""


async def _upscale_all(request: Request, response: Response, images: list[tuple[str, str]],
                       req: ExtrasSingleImageRequest | ExtrasBatchImagesRequest) -> tuple[str, list[str]]:
    """Each (field, base64) image upscaled (and its faces restored) as one job; the html_info
    and the results as base64."""
    owner = owner_of(request)
    service = service_of(request)
    current = getattr(request.app.state, "a1111_dialect", None)
    model = current.options["sd_model_checkpoint"] if current else settings_of(request).default_model
    try:
        s = extras_settings(req, service.engine.addons)
        faces = extras_faces(req, service.engine.addons)
        jobs = []
        for field, b64 in images:
            params = GenerationParams(model=model if model in service.catalog else next(iter(service.catalog)).id,
                                      prompt="", task="upscale", upscale=s, face_restoration=faces,
                                      inputs=input_images(decode_b64(b64, field)))
            try:
                service.check(params, owner)
            except BadInput as e:
                raise e.renamed({**EXTRAS_FIELDS, "image": field}) from None
            jobs.append(params)
        done = await asyncio.gather(*(service.run(p, owner, disconnected=request.is_disconnected) for p in jobs))
    except BadInput as e:
        raise e.renamed(EXTRAS_FIELDS) from None
    warnings = [w for job in done for w in job.warnings]
    response.headers.update(warning_headers(warnings))
    return _html_info(s, faces), [base64.b64encode(o.data or b"").decode() for job in done for o in job.outputs]


@extras_router.post("/extra-single-image", response_model=ExtrasSingleImageResponse, responses=JOB_ERRORS)
async def extra_single_image(body: ExtrasSingleImageRequest, request: Request, response: Response) -> dict[str, Any]:
    """Upscale one image (``upscaler_1``, by ``upscaling_resize`` or to ``upscaling_resize_w/h``)."""
    if not body.image.strip():
        raise BadInput("image", "send the image to work on (base64 or a data: URI)")
    info, out = await _upscale_all(request, response, [("image", body.image)], body)
    return {"html_info": info, "image": out[0] if body.show_extras_results else None}


@extras_router.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse, responses=JOB_ERRORS)
async def extra_batch_images(body: ExtrasBatchImagesRequest, request: Request, response: Response) -> dict[str, Any]:
    """Upscale several images, one job each (they queue and run like any jobs)."""
    if not body.imageList:
        raise BadInput("imageList", "send at least one image")
    info, out = await _upscale_all(request, response,
                                   [(f"imageList[{i}].data", f.data) for i, f in enumerate(body.imageList)], body)
    return {"html_info": info, "images": out if body.show_extras_results else []}


@extras_router.get("/upscalers", response_model=list[UpscalerItem])
async def upscalers(request: Request) -> list[dict[str, Any]]:
    """The built-ins (None, Lanczos, Nearest), then each file in the upscaler folders."""
    owner_of(request)
    return [{"name": e.name, "model_name": e.file.path.parent.name if e.file else None,
             "model_path": str(e.path) if e.path else None, "model_url": None, "scale": e.scale}
            for e in list_upscalers(service_of(request).engine.addons)]


@extras_router.get("/latent-upscale-modes", response_model=list[LatentUpscaleModeItem])
async def latent_upscale_modes(request: Request) -> list[dict[str, Any]]:
    owner_of(request)
    return [{"name": name} for name in LATENT_UPSCALE_MODES]


@extras_router.get("/realesrgan-models", response_model=list[RealesrganItem])
async def realesrgan_models(request: Request) -> list[dict[str, Any]]:
    """The Real-ESRGAN files among the upscalers (by folder or name)."""
    owner_of(request)
    return [{"name": e.name, "path": str(e.path), "scale": e.scale}
            for e in list_upscalers(service_of(request).engine.addons)
            if e.file is not None and ("realesrgan" in e.name.lower() or e.file.path.parent.name == "RealESRGAN")]


@extras_router.get("/face-restorers", response_model=list[FaceRestorerItem])
async def face_restorers_route(request: Request) -> list[dict[str, Any]]:
    """Face restorers this server can run now: built, with their weights and the face
    detector installed (docs/faces.md)."""
    owner_of(request)
    return [{"name": name, "cmd_dir": str(f.path.parent)}
            for name, f in installed_restorers(service_of(request).engine.addons)]
