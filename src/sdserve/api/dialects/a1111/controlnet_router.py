"""The ControlNet extension's own routes (``/controlnet/*``, scripts/api.py upstream):
version, model and module lists, settings, and ``detect`` (preprocessor previews)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request

from sdserve.api.deps import require_key, service_of, settings_of
from sdserve.engine.addon_files import AddonKind
from sdserve.engine.control import MAX_UNITS
from .controlnet import API_VERSION, detect, module_list

__all__ = ["router"]

_KINDS: tuple[AddonKind, ...] = ("controlnet", "ip_adapter")
router = APIRouter(prefix="/controlnet", tags=["AUTOMATIC1111 ControlNet"], dependencies=[Depends(require_key)])


@router.get("/version")
async def version() -> dict[str, int]:
    return {"version": API_VERSION}


@router.get("/model_list")
async def model_list(request: Request, update: bool = Query(True)) -> dict[str, list[str]]:
    """The ControlNets and IP-Adapters in the server's folders (rescanned unless update=false),
    one list as the extension keeps them."""
    addons = service_of(request).engine.addons
    if update:
        for kind in _KINDS:
            await asyncio.to_thread(addons.refresh, kind)
    return {"model_list": [f.name for kind in _KINDS for f in addons.files(kind)]}


@router.get("/module_list")
async def modules(request: Request, alias_names: bool = Query(False)) -> dict[str, Any]:
    """The preprocessors that run here (annotators whose models are pulled), with their sliders."""
    return module_list(alias_names, await asyncio.to_thread(service_of(request).engine.annotators))


@router.get("/settings")
async def cn_settings() -> dict[str, int]:
    return {"control_net_unit_count": MAX_UNITS}


@router.post("/detect")
async def detect_route(
    request: Request,
    controlnet_module: str = Body("none"),
    controlnet_input_images: list[str] = Body([]),
    controlnet_processor_res: int = Body(-1),
    controlnet_threshold_a: float = Body(-1),
    controlnet_threshold_b: float = Body(-1),
    controlnet_masks: list[str] = Body([]),
    low_vram: bool = Body(False),
) -> dict[str, Any]:
    """Each image through the preprocessor: ``{"images": [base64 PNG, ...], "info": "Success"}``."""
    # An annotator (depth, pose) runs on the engine's models; it waits for the engine like a batch.
    pngs = await asyncio.to_thread(detect, controlnet_module, controlnet_input_images, controlnet_processor_res,
                                   controlnet_threshold_a, controlnet_threshold_b, controlnet_masks,
                                   settings_of(request).max_image_pixels, service_of(request).engine.annotate)
    return {"images": [base64.b64encode(p).decode("ascii") for p in pngs], "info": "Success"}
