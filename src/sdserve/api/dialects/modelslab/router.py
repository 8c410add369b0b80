"""ModelsLab routes: /api/v3/* and the v6 image (and realtime) routes modelslab_py calls.

Every route is POST with the key in the JSON body (an ``Authorization: Bearer`` header also
works). The body is read by hand so the key is checked before the fields: a caller without a
valid key gets 401 whatever it sent. Generation submits a job to the service and waits up to
``Settings.modelslab_wait_s``; a job still running then is answered ``processing`` and is
fetched later, or announced to the caller's webhook.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ValidationError

from sdserve.engine.params import GenerationParams, Task
from sdserve.errors import BadInput, NotFound, Unauthorized
from sdserve.service.jobs import Job
from sdserve.service.service import JobService
from sdserve.api.deps import owner_of, service_of, settings_of, warning_headers
from sdserve.api.responses import JOB_ERRORS, PUBLIC
from .adapter import (
    Extras,
    eta_s,
    estimate_run_s,
    extras_of,
    failed_body,
    fetch_processing_body,
    image_source,
    in_dialect_terms,
    meta,
    processing_body,
    _source_label,
    resolve_model,
    success_body,
    system_load_body,
    to_params,
)
from .controlnet import control_sources, control_task
from .protocol import FetchReply, GenerateReply, GenerateRequest, KeyRequest, SystemLoadReply
from .outpaint import OUTPAINT_FIELDS, OutpaintRequest, outpaint_params
from .upscale import UPSCALE_FIELDS, SuperResolutionRequest, generation_upscale, super_resolution_params

__all__ = ["router", "PREFIXES", "install"]

router = APIRouter(tags=["ModelsLab / stablediffusionapi"])

# v3 is the stablediffusionapi.com API; v6/images is what modelslab_py's Community calls and
# v6/realtime its Realtime (same request and response family).
PREFIXES = ("/api/v3/", "/api/v6/images/", "/api/v6/realtime/")
OUTPUT_LINK = "/api/v3/outputs/{job_id}/{index}.png"
WEBHOOK_FORMAT = "modelslab"
M = TypeVar("M", bound=BaseModel)


def _extras(job: Job, base_url: str) -> Extras:
    """The ModelsLab flags stored with ``job``; a job submitted through another dialect has
    none and is answered with links under ``base_url``. Unknown keys (a newer or older
    sdserve wrote them) are ignored rather than failing the reply."""
    known = {f.name for f in dataclasses.fields(Extras)}
    stored = {k: v for k, v in job.reply.items() if k in known}
    return Extras(**stored) if stored else Extras(base_url=base_url)


def install(service: JobService) -> None:
    """Register the ModelsLab webhook body with ``service``: the dialect's ``on_build`` hook,
    which ``build_app`` calls, so a job queued before a restart still sends it; the service writes it in the job's final
    transaction and its sender retries it (ModelsLab bodies are plain JSON, reference §3.4,
    not the Standard Webhooks envelope; the signature headers come along, harmless)."""

    def body(job: Job) -> dict[str, Any]:
        x = _extras(job, "")
        out = _final_body(job, x, [service.output_url(o, x.base_url) for o in job.outputs])
        out.setdefault("track_id", x.track_id)
        return out

    service.register_webhook_format(WEBHOOK_FORMAT, body)


async def _read(request: Request, model: type[M]) -> tuple[M, str | None]:
    """The body as ``model`` and the caller's owner id; the key is checked first."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise BadInput("body", "is not valid JSON (send Content-Type: application/json)") from None
    if not isinstance(data, dict):
        raise BadInput("body", "must be a JSON object")
    key = data.get("key")
    try:
        owner = owner_of(request, key if isinstance(key, str) and key else None)
    except Unauthorized:
        raise Unauthorized("Invalid Api Key") from None
    try:
        return model.model_validate(data), owner
    except ValidationError as e:
        # The app's validation handler turns it into BadInput naming the field.
        raise RequestValidationError(e.errors()) from None


def _base(request: Request) -> str:
    return (settings_of(request).public_url or str(request.base_url)).rstrip("/")


def _links(base: str, job: Job) -> list[str]:
    return [base + OUTPUT_LINK.format(job_id=job.id, index=i) for i in range(job.params.n)]


def _fetch_url(base: str, prefix: str, job_id: str) -> str:
    return f"{base}{prefix}fetch/{job_id}"


def _run_s(service: JobService) -> float:
    return estimate_run_s((j.finished_at or 0) - (j.started_at or 0) for j in service.list(None, 20)
                          if j.status == "succeeded" and j.started_at and j.finished_at)


def _eta(service: JobService, job: Job) -> float:
    pos = service.queue_position(job.id)
    return eta_s((pos - 1) if pos else 0, job.status == "running", _run_s(service))


def _final_body(job: Job, x: Extras, output: list[str]) -> dict[str, Any]:
    if job.status == "succeeded":
        took = (job.finished_at or 0) - (job.started_at or job.created_at)
        return success_body(job.id, took, output, meta(job.id, job.params, x), x.track_id, job.warnings,
                            [o.nsfw for o in job.outputs])
    reason = job.error.message if job.error is not None else job.status
    return failed_body(job.id, reason, x.track_id)


async def _done_body(request: Request, response: Response, job: Job, x: Extras) -> dict[str, Any]:
    """The finished job's reply; its warnings are in the body and in X-Sdserve-Warning (seen
    by clients that read only headers, as for the other sync dialects)."""
    response.headers.update(warning_headers(job.warnings))
    service = service_of(request)
    if job.status == "succeeded" and x.base64:
        datas = await asyncio.gather(*(asyncio.to_thread(service.artifacts.get, o.key) for o in job.outputs))
        output = [base64.b64encode(d).decode() for d in datas]
    else:
        output = [service.output_url(o, x.base_url) for o in job.outputs]
    return _final_body(job, x, output)


async def _image(request: Request, text: str | None, field: str) -> bytes | None:
    if text is None or not text.strip():
        return None
    src = image_source(text, field)
    if isinstance(src, bytes):
        return src
    return await service_of(request).fetcher.fetch_bytes(src, field)


async def _generate(request: Request, response: Response, task: Task | None, prefix: str) -> dict[str, Any]:
    """One generation; ``task`` None: the /controlnet endpoint's, from the images sent."""
    req, owner = await _read(request, GenerateRequest)
    task = task or control_task(req)
    service, settings = service_of(request), settings_of(request)
    spec = resolve_model(req.model_id, service.catalog, settings.default_model)
    if req.webhook:
        service.fetcher.precheck(req.webhook, "webhook")  # before fetching any image
    init = await _image(request, req.init_image, "init_image") if task != "txt2img" else None
    mask = await _image(request, req.mask_image, "mask_image") if task == "inpaint" else None
    hints = [h for h in [await _image(request, src, "control_image") for src in control_sources(req)]
             if h is not None] if req.controlnet_model else []
    ip_image = await _image(request, req.ip_adapter_image, "ip_adapter_image") if req.ip_adapter_id else None
    base = _base(request)
    x = extras_of(req, base)
    try:
        params = to_params(req, task, spec, init, mask, hints, ip_image)
        if req.upscale:  # each output 2x (upscale.py)
            params = params.model_copy(update={"upscale": generation_upscale(service.engine.addons)})
    except BadInput as e:
        raise in_dialect_terms(e) from None
    return await _submit_and_reply(request, response, params, owner, x, prefix, bool(req.instant_response))


async def _submit_and_reply(request: Request, response: Response, params: GenerationParams, owner: str | None,
                            x: Extras, prefix: str, instant: bool, names: dict[str, str] | None = None) -> dict[str, Any]:
    """Queue the job, wait up to modelslab_wait_s, and answer done or processing."""
    service, settings = service_of(request), settings_of(request)
    base = x.base_url
    try:
        job = service.submit(params, owner, webhook=x.webhook, reply=dataclasses.asdict(x),
                             webhook_format=WEBHOOK_FORMAT if x.webhook else None)
    except BadInput as e:
        raise _named(e, names) from None
    wait = 0.0 if instant else settings.modelslab_wait_s
    if wait > 0:
        with contextlib.suppress(TimeoutError):
            await service.wait(job, wait)
    if job.done:
        if isinstance(job.error, BadInput):
            raise _named(job.error, names)
        return await _done_body(request, response, job, x)
    return processing_body(job.id, _eta(service, job), _fetch_url(base, prefix, job.id), _links(base, job),
                           meta(job.id, job.params, x))


def _named(e: BadInput, names: dict[str, str] | None) -> BadInput:
    """``e`` in the route's terms: its own names first (an endpoint's fields), else the
    generation routes' (steps -> num_inference_steps)."""
    return e.renamed(names) if names and e.field in names else in_dialect_terms(e)


async def _fetch(request: Request, response: Response, job_id: str, prefix: str) -> dict[str, Any]:
    _, owner = await _read(request, KeyRequest)
    service = service_of(request)
    job = service.get(job_id, owner)
    x = _extras(job, _base(request))
    if job.done:
        return await _done_body(request, response, job, x)
    base = _base(request)
    return fetch_processing_body(job.id, _eta(service, job), _fetch_url(base, prefix, job.id), _links(base, job))


def _prefix(request: Request) -> str:
    # /api/v5/controlnet has no v5 fetch route: its jobs are fetched under v3.
    return next((p for p in PREFIXES if request.url.path.startswith(p)), PREFIXES[0])


def _routes(name: str) -> list[str]:
    return [p + name for p in PREFIXES]


def _body_doc(model: type[BaseModel], required: bool) -> dict[str, Any]:
    # The body is read by hand (the key first), so FastAPI cannot see it: declare it.
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": model.model_json_schema()}}}}


_GENERATE: dict[str, Any] = {"openapi_extra": _body_doc(GenerateRequest, True), "response_model": None,
                             "responses": {200: {"model": GenerateReply}, **JOB_ERRORS}}
_FETCH: dict[str, Any] = {"openapi_extra": _body_doc(KeyRequest, False), "response_model": None,
                          "responses": {200: {"model": FetchReply}}}


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _post_all(name: str, doc: dict[str, Any]) -> Callable[[_Handler], _Handler]:
    """Register one handler under every prefix (v3, v6 images, v6 realtime)."""

    def deco(fn: _Handler) -> _Handler:
        for path in _routes(name):
            router.add_api_route(path, fn, methods=["POST"], **doc)
        return fn

    return deco


@_post_all("text2img", _GENERATE)
async def text2img(request: Request, response: Response) -> dict[str, Any]:
    """Text to image."""
    return await _generate(request, response, "txt2img", _prefix(request))


@_post_all("img2img", _GENERATE)
async def img2img(request: Request, response: Response) -> dict[str, Any]:
    """Image to image: init_image is an http(s) URL (fetched SSRF-safely), a data: URI or base64."""
    return await _generate(request, response, "img2img", _prefix(request))


@_post_all("inpaint", _GENERATE)
async def inpaint(request: Request, response: Response) -> dict[str, Any]:
    """Inpainting: mask_image white = repaint, black = keep."""
    return await _generate(request, response, "inpaint", _prefix(request))


@router.post("/api/v5/controlnet", **_GENERATE)
@router.post("/api/v6/images/controlnet", **_GENERATE)
async def controlnet(request: Request, response: Response) -> dict[str, Any]:
    """ControlNet: controlnet_model (comma list for several), controlnet_type + auto_hint (make
    the hint from the image), control_image (default init_image; with both, init_image is the
    img2img start), mask_image (inpaint), guess_mode, controlnet_conditioning_scale."""
    return await _generate(request, response, None, _prefix(request))


@_post_all("super_resolution", {**_GENERATE, "openapi_extra": _body_doc(SuperResolutionRequest, True)})
async def super_resolution(request: Request, response: Response) -> dict[str, Any]:
    """Upscale an image (``url``/``init_image``) by ``scale`` with the upscaler ``model_id``."""
    req, owner = await _read(request, SuperResolutionRequest)
    service, settings = service_of(request), settings_of(request)
    if req.webhook:
        service.fetcher.precheck(req.webhook, "webhook")
    field = "url" if req.url else "init_image"
    image = await _image(request, req.url or req.init_image, field)
    if image is None:
        raise BadInput("url", "send the image to upscale (an http(s) URL, a data: URI or base64)")
    x = Extras(base64=bool(req.base64), track_id=req.track_id, webhook=req.webhook,
               init_image=_source_label(req.url or req.init_image), base_url=_base(request))
    spec = resolve_model(None, service.catalog, settings.default_model)
    names = {**UPSCALE_FIELDS, "image": field}
    try:
        params = super_resolution_params(req, spec.id, image, service.engine.addons)
    except BadInput as e:
        raise e.renamed(names) from None
    return await _submit_and_reply(request, response, params, owner, x, _prefix(request), False, names)


# The image-editing family (upstream's v6 image_editing server): outpaint and its fetch.
IMAGE_EDITING = "/api/v6/image_editing/"


@router.post(IMAGE_EDITING + "outpaint", **{**_GENERATE, "openapi_extra": _body_doc(OutpaintRequest, True)})
async def outpaint(request: Request, response: Response) -> dict[str, Any]:
    """Outpaint: ``image`` fitted inside ``width`` x ``height`` and centred, the border drawn
    by the model (an inpaint job; ``overlap_width`` px of the image repainted at each seam)."""
    req, owner = await _read(request, OutpaintRequest)
    service, settings = service_of(request), settings_of(request)
    if req.webhook:
        service.fetcher.precheck(req.webhook, "webhook")
    image = await _image(request, req.image, "image")
    if image is None:
        raise BadInput("image", "send the image to outpaint (an http(s) URL, a data: URI or base64)")
    spec = resolve_model(req.model_id, service.catalog, settings.default_model)
    x = Extras(base64=bool(req.base64), track_id=req.track_id, webhook=req.webhook,
               init_image=_source_label(req.image), base_url=_base(request))
    params = outpaint_params(req, spec, image, settings.max_image_pixels)
    return await _submit_and_reply(request, response, params, owner, x, IMAGE_EDITING, False, OUTPAINT_FIELDS)


@router.post(IMAGE_EDITING + "fetch/{job_id}", **_FETCH)
async def image_editing_fetch(job_id: str, request: Request, response: Response) -> dict[str, Any]:
    """An image-editing job's state (any job's, as the other fetch routes)."""
    return await _fetch(request, response, job_id, IMAGE_EDITING)


@_post_all("fetch/{job_id}", _FETCH)
async def fetch(job_id: str, request: Request, response: Response) -> dict[str, Any]:
    """A job's state: processing, success (with outputs) or failed."""
    return await _fetch(request, response, job_id, _prefix(request))


@router.post("/api/v3/system_load", openapi_extra=_body_doc(KeyRequest, False), response_model=None,
             responses={200: {"model": SystemLoadReply}})
async def system_load(request: Request) -> dict[str, Any]:
    """The real queue length and an estimated time to work through it (seconds)."""
    _, _owner = await _read(request, KeyRequest)
    service = service_of(request)
    queued, running = service.queue_length(), service.running()
    run_s = _run_s(service)
    return system_load_body(queued, queued * run_s + (run_s / 2 if running is not None else 0.0))


@router.get(OUTPUT_LINK, openapi_extra=PUBLIC, response_class=RedirectResponse, status_code=307,
            responses={307: {"description": "The stored image (Location)."}})
async def future_link(job_id: str, index: int, request: Request) -> RedirectResponse:
    """Where an output will appear (``future_links``): 404 until the job succeeds, then a
    redirect to the stored image. The unguessable job id is the capability, like an output
    token, so a browser or downloader can follow it without the key."""
    job = service_of(request).get(job_id)
    if job.status != "succeeded":
        raise NotFound(f"output {index} of job {job_id} is not ready: the job is {job.status}")
    out = next((o for o in job.outputs if o.index == index), None)
    if out is None or out.removed:
        raise NotFound(f"job {job_id} has no output {index}")
    return RedirectResponse(service_of(request).output_url(out, _base(request)), status_code=307)
