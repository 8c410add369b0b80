"""AUTOMATIC1111 routes: thin glue between FastAPI, the adapter and the job service.

Each txt2img/img2img request runs its ``n_iter`` batches as jobs, one after another, and
registers itself in the dialect state so ``/progress`` can report A1111's job_no/job_count
and ``/interrupt`` (stop the request, return what is done) and ``/skip`` (drop the current
batch, go on with the next) can act on it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from sdserve.engine.catalog import ModelSpec
from sdserve.engine.faces import restorer_name
from sdserve.engine.params import OutputFormat
from sdserve.engine.upscalers import upscaler_names
from sdserve.errors import BadInput, Canceled, NotFound
from sdserve.api.deps import owner_of, require_key, service_of, settings_of, warning_headers
from sdserve.api.responses import JOB_ERRORS
from .adapter import (
    Plan,
    checkpoint_of,
    clip_skip_setting,
    finish_output,
    generation_response,
    img2img_plan,
    in_dialect_terms,
    output_format,
    progress_body,
    resolve_checkpoint,
    sampler_items,
    scheduler_items,
    sd_model_item,
    shared_settings,
    face_weight_setting,
    txt2img_plan,
    vae_setting,
)
from .controlnet import SCRIPT
from .scripts import IMG2IMG_SCRIPTS, is_sd_upscale
from .addons import embedding_listing, lora_items
from .infotext import parse_infotext, read_image_info
from .memory import cuda_info, ram_info
from .options import APPLIED, apply_options, effective_options, not_applied_reason
from .inputs import decode_b64
from .protocol import (
    GenerationResponse,
    MemoryResponse,
    OptionsNotApplied,
    Img2ImgRequest,
    InterrogateRequest,
    InterrogateResponse,
    PngInfoRequest,
    PngInfoResponse,
    ProgressResponse,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    PromptStyleItem,
    SDVaeItem,
    Txt2ImgRequest,
)
from .styles import apply_styles, read_styles
from .state import A1111State, Batch

__all__ = ["router"]

# The key is checked before the body or query is read: 401 whatever was sent.
router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"], dependencies=[Depends(require_key)])
# A1111 answers an unknown script with 422 and img2img without init_images with 404.
_ERRORS: dict[int | str, dict[str, Any]] = {**JOB_ERRORS, 422: {"description": "Unknown script_name."}}


def _state(request: Request) -> A1111State:
    st = getattr(request.app.state, "a1111_dialect", None)
    if st is None:
        catalog = service_of(request).catalog
        default = settings_of(request).default_model
        current = catalog.get(default).id if default in catalog else next(iter(catalog)).id
        # The service's preview cadence is what show_progress_every_n_steps means here.
        every = settings_of(request).preview_every
        st = request.app.state.a1111_dialect = A1111State(options=effective_options(current, every))
    return st


def _refuse_unapplied(req: Txt2ImgRequest | Img2ImgRequest, options: dict[str, Any]) -> None:
    """``override_settings`` sdserve cannot apply are refused, naming the key (the ones it
    applies: sd_model_checkpoint, samples_format, CLIP_stop_at_last_layers and sd_vae where
    the plan is made, live_previews_enable by /progress). A value equal to the one in effect
    changes nothing and passes, so a client echoing GET /options' values is served."""
    for k, v in (req.override_settings or {}).items():
        if k not in APPLIED and (k not in options or options[k] != v):
            shown = f"; leave it out or send the value in effect ({options[k]!r})" if k in options else ""
            raise BadInput(f"override_settings.{k}", f"cannot be applied: {not_applied_reason(k)}{shown}")


def _with_settings(plan: Plan, req: Txt2ImgRequest | Img2ImgRequest, options: dict[str, Any],
                   request: Request) -> Plan:
    """``plan`` with clip skip and VAE from override_settings or the options; a VAE name
    must be in the VAE folder (a 400 naming the key that chose it, with close matches)."""
    update = shared_settings(req, options)
    if update["vae"] is not None:
        key = "override_settings.sd_vae" if "sd_vae" in (req.override_settings or {}) else "sd_vae"
        service_of(request).engine.addons.find("vae", update["vae"], field=key)
    return replace(plan, params=plan.params.model_copy(update=update))


async def _generate(request: Request, response: Response, req: Txt2ImgRequest | Img2ImgRequest, kind: str,
                    make_plan: Callable[[Any, ModelSpec, OutputFormat], Plan]) -> dict[str, Any]:
    owner = owner_of(request)
    service = service_of(request)
    st = _state(request)
    spec = checkpoint_of(req, st.options["sd_model_checkpoint"], service.catalog)
    fmt_override = (req.override_settings or {}).get("samples_format")
    fmt = output_format(fmt_override, "override_settings.samples_format") if fmt_override is not None \
        else output_format(st.options.get("samples_format", "png"))
    _refuse_unapplied(req, st.options)
    if req.styles:
        prompt, negative = apply_styles(req.prompt, req.negative_prompt, req.styles,
                                        read_styles(settings_of(request).data_dir))
        req = req.model_copy(update={"prompt": prompt, "negative_prompt": negative})
    plan = await asyncio.to_thread(make_plan, req, spec, fmt)  # decodes and resizes images: off the event loop
    plan = _with_settings(plan, req, st.options, request)
    previews = (req.override_settings or {}).get("live_previews_enable", st.options["live_previews_enable"])
    try:  # the per-request limits count all n_iter batches: refuse before the first is queued
        service.check(plan.params, owner, jobs=plan.n_iter)
    except BadInput as e:
        raise in_dialect_terms(e, plan.names) from None
    batch = Batch(kind=kind, job_count=plan.n_iter, prompt=req.prompt, owner=owner, previews=bool(previews))
    st.batches.append(batch)
    images: list[bytes] = []
    seeds: list[int] = []
    # every job's, once each (n_iter jobs read the same prompt)
    warnings: list[str] = []
    resolved = plan.params
    try:
        for k in range(plan.n_iter):
            if batch.interrupted:
                break
            params = plan.iteration(k)
            batch.job_no, batch.current_seed, batch.skipped = k, params.seed, False
            try:
                job = await service.run(params, owner, disconnected=request.is_disconnected)
            except BadInput as e:
                raise in_dialect_terms(e, plan.names) from None
            except Canceled:
                if batch.interrupted:
                    break  # A1111 returns what is done so far
                if batch.skipped:
                    continue
                raise
            resolved = job.params
            warnings += [w for w in job.warnings if w not in warnings]
            for out in job.outputs:
                assert out.data is not None, "JobService.run returns outputs with their bytes"
                images.append(await asyncio.to_thread(finish_output, out.data, plan))
                seeds.append(out.seed)
    finally:
        st.batches.remove(batch)
    if not req.override_settings_restore_afterwards:  # A1111: the overrides stay as the settings
        over = req.override_settings or {}
        st.options.update({k: spec.id if k == "sd_model_checkpoint" else v for k, v in over.items() if k in APPLIED})
    response.headers.update(warning_headers(warnings))
    return await asyncio.to_thread(generation_response, req, plan, spec, resolved, images, seeds, batch.started,
                                   warnings, service.engine.annotate)


@router.post("/txt2img", response_model=GenerationResponse, responses=_ERRORS)
async def txt2img(body: Txt2ImgRequest, request: Request, response: Response) -> dict[str, Any]:
    """Text to image; ``info`` is a JSON string with all_seeds and infotexts."""
    px = settings_of(request).max_image_pixels
    return await _generate(request, response, body, "txt2img", lambda r, spec, fmt: txt2img_plan(r, spec, fmt, px))


@router.post("/img2img", response_model=GenerationResponse,
             responses={**_ERRORS, 404: {"description": "No init_images."}})
async def img2img(body: Img2ImgRequest, request: Request, response: Response) -> dict[str, Any]:
    """Image to image; with ``mask`` (white = repaint), inpainting."""
    px = settings_of(request).max_image_pixels
    # The SD upscale script picks its upscaler by index into /sdapi/v1/upscalers' list.
    ups = upscaler_names(service_of(request).engine.addons) if is_sd_upscale(body.script_name) else []
    return await _generate(request, response, body, "img2img",
                           lambda r, spec, fmt: img2img_plan(r, spec, fmt, px, ups))


def _stop(request: Request, owner: str | None, *, interrupt: bool) -> None:
    service = service_of(request)
    job = service.running()
    # On a server with keys, a caller can stop only its own work.
    if job is None or (owner is not None and job.owner != owner):
        return
    batch = _state(request).batch_of(job.params.seed, job.params.prompt, job.owner)
    if batch is not None:
        if interrupt:
            batch.interrupted = True
        else:
            batch.skipped = True
    if interrupt and batch is not None:
        # A1111 returns the images finished so far and the partial ones of the running batch
        # (its sampler stops and the latents as they stand are decoded): the job ends with them.
        service.interrupt(job.id, owner)
    else:
        service.cancel(job.id, owner)


@router.post("/interrupt")
async def interrupt(request: Request) -> dict[str, Any]:
    """Stop the running generation; its request returns the images finished so far."""
    _stop(request, owner_of(request), interrupt=True)
    return {}


@router.post("/skip")
async def skip(request: Request) -> None:
    """Drop the running batch; its request goes on with the next one (n_iter)."""
    _stop(request, owner_of(request), interrupt=False)


@router.get("/progress", response_model=ProgressResponse)
async def progress(request: Request, skip_current_image: bool = Query(False)) -> dict[str, Any]:
    """Progress of the running job, with its latest live preview as ``current_image``."""
    owner = owner_of(request)
    job = service_of(request).running()
    now = time.time()
    if job is None:
        return progress_body(step=0, total=0, job_no=0, job_count=0, started=None, now=now)
    batch = _state(request).batch_of(job.params.seed, job.params.prompt, job.owner)
    mine = owner is None or job.owner == owner  # another key's preview is its business
    wanted = batch.previews if batch else _state(request).options["live_previews_enable"]
    preview = job.preview if mine and wanted and not skip_current_image else None
    return progress_body(
        step=job.step, total=job.total_steps,
        job_no=batch.job_no if batch else 0, job_count=batch.job_count if batch else 1,
        started=batch.started if batch else job.started_at, now=now,
        job=f"scripts_{batch.kind}" if batch else "", timestamp=batch.timestamp if batch else "",
        current_image=preview,
        interrupted=batch.interrupted if batch else False, skipped=batch.skipped if batch else False,
    )


@router.get("/options")
async def get_options(request: Request) -> dict[str, Any]:
    """The settings, including the current ``sd_model_checkpoint``."""
    owner_of(request)
    return dict(_state(request).options)


@router.post("/options", response_model=OptionsNotApplied | None, response_model_exclude_none=True)
async def set_options(request: Request, response: Response, body: dict[str, Any] = Body(...)) -> dict[str, Any] | None:
    """Change settings: ``sd_model_checkpoint`` (the model later requests use), ``samples_format``,
    ``live_previews_enable``, ``CLIP_stop_at_last_layers`` (clip skip), ``sd_vae`` (a name from
    ``/sd-vae``, or Automatic/None: the checkpoint's own). Any other key is accepted but not applied: GET keeps showing the
    value in effect, and the answer lists such keys under ``not_applied`` (null when all applied)."""
    owner_of(request)
    catalog = service_of(request).catalog

    def check(key: str, value: Any) -> Any:
        if key == "sd_model_checkpoint":
            if not isinstance(value, str):
                raise BadInput(key, "must be a model title (string)")
            return resolve_checkpoint(value, catalog).id
        if key == "CLIP_stop_at_last_layers":
            return clip_skip_setting(value)
        if key == "sd_vae":
            name = vae_setting(value)
            if name is not None:
                service_of(request).engine.addons.find("vae", name, field="sd_vae")
            return value
        if key == "face_restoration_model":
            return restorer_name(str(value), field=key)
        if key == "code_former_weight":
            return face_weight_setting(value)
        if key == "samples_format":
            output_format(value)  # validate; stored as sent, as A1111 does
        elif not isinstance(value, bool):
            raise BadInput(key, "must be true or false")
        return value

    skipped = apply_options(_state(request).options, body, check)
    if not skipped:
        return None
    response.headers.update(warning_headers([f"{k} was not applied: {why}" for k, why in skipped.items()]))
    return {"not_applied": skipped}


@router.get("/sd-models", response_model=list[SDModelItem])
async def sd_models(request: Request) -> list[dict[str, Any]]:
    """The catalog's models, and the checkpoints in models/Stable-diffusion (A1111's titles)."""
    owner_of(request)
    engine = service_of(request).engine
    files = {f.name: f for f in engine.addons.files("checkpoint")}
    return await asyncio.to_thread(lambda: [sd_model_item(s, files.get(s.id)) for s in engine.catalog])


@router.post("/refresh-checkpoints")
async def refresh_checkpoints(request: Request) -> None:
    """Rescan models/Stable-diffusion: a checkpoint copied in becomes servable (also found by
    name on first use without this call)."""
    owner_of(request)
    await asyncio.to_thread(service_of(request).engine.refresh_checkpoints)


@router.get("/prompt-styles", response_model=list[PromptStyleItem])
async def prompt_styles(request: Request) -> list[dict[str, Any]]:
    """The styles of ``styles.csv`` in the data directory, which ``styles`` names."""
    owner_of(request)
    return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
            for s in read_styles(settings_of(request).data_dir)]


@router.get("/sd-vae", response_model=list[SDVaeItem])
async def sd_vae(request: Request) -> list[dict[str, Any]]:
    """The VAE folder's files (``models/VAE``), by the name ``sd_vae`` takes."""
    owner_of(request)
    return [{"model_name": f.filename, "filename": str(f.path)}
            for f in service_of(request).engine.addons.files("vae")]


@router.post("/refresh-vae")
async def refresh_vae(request: Request) -> None:
    """Rescan the VAE folder (a file copied in is also found on first use)."""
    owner_of(request)
    await asyncio.to_thread(service_of(request).engine.addons.refresh, "vae")


@router.get("/samplers", response_model=list[SamplerItem])
async def samplers(request: Request) -> list[dict[str, Any]]:
    owner_of(request)
    return sampler_items()


@router.get("/schedulers", response_model=list[SchedulerItem])
async def schedulers(request: Request) -> list[dict[str, Any]]:
    owner_of(request)
    return scheduler_items()


@router.post("/png-info", response_model=PngInfoResponse)
async def png_info(body: PngInfoRequest, request: Request) -> dict[str, Any]:
    """The generation parameters embedded in an image (PNG text or JPEG/WebP EXIF)."""
    owner_of(request)
    if not body.image.strip():
        return {"info": "", "items": {}, "parameters": {}}
    text, items = read_image_info(decode_b64(body.image, "image"))
    return {"info": text or "", "items": items, "parameters": parse_infotext(text) if text else {}}


@router.post("/interrogate", response_model=InterrogateResponse,
             responses={404: {"description": "An interrogator other than 'clip' (A1111: Model not found)."}})
async def interrogate(body: InterrogateRequest, request: Request) -> dict[str, Any]:
    """A caption of an image. A1111's "clip" interrogator is a BLIP caption followed by CLIP-ranked
    artist/medium/style phrases; sdserve gives the BLIP caption (docs/safety.md)."""
    owner_of(request)
    if body.model != "clip":
        err = BadInput("model", f"interrogator {body.model!r} is not available on this server; use 'clip' "
                                "(a caption from the server's captioner)")
        err.status = 404  # A1111 answers an interrogator it does not have with 404 "Model not found"
        raise err
    if not body.image.strip():
        raise BadInput("image", "is empty: send the image as base64 or a data: URI")
    return {"caption": await service_of(request).caption(decode_b64(body.image, "image"), "image")}


@router.get("/scripts")
async def scripts(request: Request) -> dict[str, list[str]]:
    """The scripts that run: ControlNet (always on; clients probe this to find it) and, on
    img2img, "sd upscale" (scripts.py)."""
    owner_of(request)
    return {"txt2img": [SCRIPT], "img2img": [SCRIPT, *IMG2IMG_SCRIPTS]}


@router.get("/cmd-flags")
async def cmd_flags(request: Request) -> dict[str, Any]:
    owner_of(request)
    return {"api": True, "nowebui": True}


@router.get("/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    """Textual-inversion embeddings: ``loaded`` fit the current checkpoint's family, ``skipped``
    do not (or cannot be read). A prompt uses one by its name."""
    owner_of(request)
    service = service_of(request)
    arch = service.catalog.get(_state(request).options["sd_model_checkpoint"]).arch
    return await asyncio.to_thread(embedding_listing, service.engine.addons.files("embedding"), arch)


@router.post("/refresh-embeddings")
async def refresh_embeddings(request: Request) -> None:
    """Scan the embeddings folder again."""
    owner_of(request)
    await asyncio.to_thread(service_of(request).engine.addons.refresh, "embedding")


@router.get("/loras")
async def loras(request: Request) -> list[dict[str, Any]]:
    """The LoRAs a prompt can name with ``<lora:name:weight>``, in the Lora extension's shape."""
    owner_of(request)
    return await asyncio.to_thread(lora_items, service_of(request).engine.addons.files("lora"))


@router.post("/refresh-loras")
async def refresh_loras(request: Request) -> None:
    """Scan the LoRA folders again (a file copied in is found without a restart)."""
    owner_of(request)
    await asyncio.to_thread(service_of(request).engine.addons.refresh, "lora")


@router.get("/extensions")
async def extensions(request: Request) -> list[Any]:
    """Installed extensions: none (clients probe this to find ControlNet and the like)."""
    owner_of(request)
    return []


@router.get("/memory", response_model=MemoryResponse)
async def memory(request: Request) -> dict[str, Any]:
    """RAM and device memory, as A1111 reports them (device memory only on CUDA)."""
    owner_of(request)
    return {"ram": ram_info(), "cuda": cuda_info(service_of(request).engine.health())}


async def _empty_listing(request: Request) -> list[Any]:
    owner_of(request)
    return []


# Features sdserve does not have: empty lists, so clients that probe them show nothing. One
# route each (not a catch-all, which would make unknown POSTs here 405 instead of 404).
# (upscalers, latent-upscale-modes, realesrgan-models, face-restorers: extras.py; loras: addons.py)
for _name in ("hypernetworks", "script-info"):
    router.add_api_route(f"/{_name}", _empty_listing, methods=["GET"], response_model=list[Any],
                         name=f"list_{_name.replace('-', '_')}", summary=f"{_name}: none in sdserve")
