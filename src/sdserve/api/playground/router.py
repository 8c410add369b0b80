"""Serves the playground page, its static assets and its bootstrap facts.

Everything here is public: the page and its assets, and ``/playground/config`` (is this a
demo server, does it need a key). The page calls the key-protected API itself, with the
key the user types in.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from sdserve import __version__
from sdserve.api.deps import require_key, service_of, settings_of
from sdserve.api.dialects.a1111.samplers import a1111_label
from sdserve.api.dialects.comfyui.names import comfy_checkpoints, comfy_sampler_pairs
from sdserve.api.responses import PUBLIC
from sdserve.engine.control import controlnet_family, ip_adapter_family
from sdserve.engine.schedulers import SCHEDULERS, SCHEDULES, base_names

__all__ = ["router", "static_files", "STATIC_PATH", "DEMO_WARNING"]

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/playground/static"

DEMO_WARNING = ("DEMO MODE: every model is a tiny random-weight stand-in; generated images are noise. "
                "Run without --demo and `sdserve pull MODEL` for real weights.")

# The page may load only what sdserve serves; output images may live on a presigned S3 host.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https: http:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

router = APIRouter(tags=["Playground"])


def static_files() -> StaticFiles:
    """The page's assets (StaticFiles refuses paths that leave the directory)."""
    return StaticFiles(directory=STATIC_DIR)


@cache
def _template() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request) -> HTMLResponse:
    """The playground page; the demo banner is in the HTML itself so it shows even without JS."""
    demo = settings_of(request).demo
    banner = f'<p class="banner" id="demo-banner" role="note">{html.escape(DEMO_WARNING)}</p>' if demo else ""
    page = _template().replace("<!--DEMO_BANNER-->", banner).replace("{{VERSION}}", html.escape(__version__))
    return HTMLResponse(page, headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                                       "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})


@router.get("/playground/config", openapi_extra=PUBLIC)
async def config(request: Request) -> dict[str, Any]:
    """What the page needs before it has a key: whether keys are required, demo mode, the
    version, and the scheduler names each dialect uses (for "copy as curl")."""
    settings = settings_of(request)
    comfy = comfy_sampler_pairs()
    return {
        "version": __version__,
        "demo": settings.demo,
        "demo_warning": DEMO_WARNING if settings.demo else None,
        "auth_required": not request.app.state.keys.open,
        # A1111's label where it has one; else the engine's own name, which sdserve's A1111
        # dialect also takes as sampler_name (a k-diffusion sampler on the model's own
        # spacing, e.g. euler, has no A1111 label: "Euler" is Euler on uniform spacing there).
        "schedulers": [{"name": s.name, "a1111": a1111_label(s.name), "comfyui": comfy.get(s.name),
                        **_sampler_and_schedule(s.name)} for s in SCHEDULERS],
        # ComfyUI's ckpt_name for each model ("copy as ComfyUI workflow").
        "comfyui_checkpoints": comfy_checkpoints(service_of(request).catalog),
    }


def _sampler_and_schedule(name: str) -> dict[str, str | None]:
    """The sampler and schedule an engine scheduler name combines (``dpmpp_2m_karras``: dpmpp_2m
    on karras; a base name: the model's own schedule), for the page's two pickers."""
    for schedule in SCHEDULES:
        base = name.removesuffix(f"_{schedule}")
        if base != name and base in base_names():
            return {"sampler": base, "schedule": schedule}
    return {"sampler": name, "schedule": None}


@router.get("/playground/addon-families", dependencies=[Depends(require_key)])
async def addon_families(request: Request) -> dict[str, dict[str, str | None]]:
    """The family ("sd15", "sdxl"; null when the file does not say) of each ControlNet and
    IP-Adapter, so the page offers only those of the chosen model's family. ``GET /v1/addons``
    lists the files without it; this reads the same headers the job checks do."""
    addons = service_of(request).engine.addons
    for kind in ("controlnet", "ip_adapter"):
        addons.refresh(kind)
    return {"controlnet": {f.name: controlnet_family(f) for f in addons.files("controlnet")},
            "ip_adapter": {f.name: ip_adapter_family(f) for f in addons.files("ip_adapter")}}
