"""Native job API routes: thin glue between FastAPI, the adapter and the job service."""

from __future__ import annotations

from collections.abc import AsyncIterable
from functools import partial

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from sdserve.engine.addon_files import ADDON_KINDS, AddonKind
from sdserve.errors import BadInput, NotFound
from sdserve.images import decode_base64
from sdserve.service.jobs import Job
from sdserve.service.service import OUTPUTS_PATH
from sdserve.api.deps import owner_of, require_key, service_of, settings_of
from sdserve.api.responses import BINARY, JOB_ERRORS, PUBLIC
from .adapter import catalog_model, job_out, to_params, upscale_params
from .protocol import (AddonList, AddonOut, CaptionOut, CaptionRequest, CatalogList, CostOut, JobList, JobOut,
                       JobRequest, UpscaleJobRequest, UsageList, UsageOut)

__all__ = ["router"]

router = APIRouter(tags=["Jobs (native)"])
# Routes that take a body or query check the key first: 401 whatever was sent. (Output links
# are capabilities and need no key.)
_KEY_FIRST = [Depends(require_key)]


def _base(request: Request) -> str:
    return settings_of(request).public_url or str(request.base_url)


def _out(request: Request, job: Job) -> JobOut:
    service = service_of(request)
    pos = service.queue_position(job.id) if job.status == "queued" else None
    return job_out(job, partial(service.output_url, base_url=_base(request)), pos)


def _owned_job(job_id: str, request: Request) -> Job:
    return service_of(request).get(job_id, owner_of(request))


@router.post("/v1/jobs", status_code=201, response_model=JobOut, dependencies=_KEY_FIRST,
             responses={k: v for k, v in JOB_ERRORS.items() if k in (402, 503)})
async def create_job(body: JobRequest, request: Request, response: Response) -> JobOut:
    """Queue a generation; answers at once with the job (poll it, stream its events, or get a webhook)."""
    owner = owner_of(request)
    service = service_of(request)
    params = to_params(body, service.catalog.get(body.model))
    job = service.submit(params, owner, priority=body.priority, webhook=body.webhook,
                         webhook_events=tuple(body.webhook_events))
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return _out(request, job)


@router.post("/v1/upscale", status_code=201, response_model=JobOut, dependencies=_KEY_FIRST,
             responses={k: v for k, v in JOB_ERRORS.items() if k in (402, 503)})
async def create_upscale_job(body: UpscaleJobRequest, request: Request, response: Response) -> JobOut:
    """Queue an upscale of ``image`` (``GET /sdapi/v1/upscalers`` lists the upscalers); a job
    like any other: poll it, stream its events, or get a webhook."""
    owner = owner_of(request)
    service = service_of(request)
    default = settings_of(request).default_model
    model = default if default in service.catalog else next(iter(service.catalog)).id
    try:
        job = service.submit(upscale_params(body, model), owner, priority=body.priority, webhook=body.webhook,
                             webhook_events=tuple(body.webhook_events))
    except BadInput as e:  # the body's fields are top-level here
        raise e.renamed({f"upscale.{k}": k for k in ("scale", "width", "height", "upscaler", "upscaler_2",
                                                     "upscaler_2_visibility")}) from None
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return _out(request, job)


@router.post("/v1/cost", response_model=CostOut, dependencies=_KEY_FIRST)
async def quote_job(body: JobRequest, request: Request) -> CostOut:
    """What a job would cost, checked as ``POST /v1/jobs`` checks it (defaults, ranges, your
    per-request limits: the same 400s), without queuing it or charging anything."""
    owner = owner_of(request)
    service = service_of(request)
    params = to_params(body, service.catalog.get(body.model))
    _, cost = service.check(params, owner)
    key = service.keys.get(owner) if owner is not None else None
    return CostOut(cost=cost, compute_left=key.compute_left if key is not None else None)


@router.get("/v1/jobs", response_model=JobList, dependencies=_KEY_FIRST)
async def list_jobs(request: Request, limit: int = Query(50, ge=1, le=500)) -> JobList:
    """Your newest jobs, newest first."""
    owner = owner_of(request)
    return JobList(data=[_out(request, j) for j in service_of(request).list(owner, limit)])


@router.get("/v1/jobs/{job_id}", response_model=JobOut)
async def get_job(request: Request, job: Job = Depends(_owned_job)) -> JobOut:
    """A job's status, progress, parameters and outputs (each with its URL and seed)."""
    return _out(request, job)


@router.delete("/v1/jobs/{job_id}", response_model=JobOut)
async def cancel_job(job_id: str, request: Request) -> JobOut:
    """Cancel: a queued job ends at once, a running one at its next step. Ended jobs stay as they are."""
    return _out(request, service_of(request).cancel(job_id, owner_of(request)))


@router.get("/v1/jobs/{job_id}/events", response_class=EventSourceResponse)
async def job_events(request: Request, job: Job = Depends(_owned_job)) -> AsyncIterable[ServerSentEvent]:
    """Server-Sent Events: `queued` (position), `started`, `step` (step, total, sometimes a
    `preview` PNG data URI), then `succeeded`, `failed` or `canceled` with the job; then the stream ends."""
    n = 0
    async for ev in service_of(request).events(job.id):
        n += 1
        # Events are shared by every stream of the job: read them, never change them.
        data = _out(request, ev["job"]).model_dump(mode="json") if "job" in ev \
            else {k: v for k, v in ev.items() if k != "event"}
        yield ServerSentEvent(event=ev["event"], data=data, id=str(n))


@router.get(OUTPUTS_PATH + "{token}", response_class=Response, openapi_extra=PUBLIC,
            responses={200: {"content": {"image/png": BINARY, "image/jpeg": BINARY, "image/webp": BINARY}}})
async def get_output(token: str, request: Request) -> Response:
    """An output image. The token in the URL is the capability (unguessable), so links work
    in <img> tags and for webhook receivers without a key; they stop working when the output expires."""
    if not token.replace("-", "").replace("_", "").isalnum():
        raise BadInput("token", "is not an output token")
    out, data = await service_of(request).output_bytes(token)
    return Response(content=data, media_type=out.content_type,
                    headers={"Cache-Control": "private, max-age=3600", "X-Sdserve-Seed": str(out.seed)})


@router.get("/v1/usage", response_model=UsageOut, dependencies=_KEY_FIRST)
async def get_usage(request: Request) -> UsageOut:
    """Your spend (images and compute units), credits left, rate limit and per-request limits."""
    return UsageOut.model_validate(service_of(request).usage(owner_of(request)))


@router.get("/v1/usage/keys", response_model=UsageList, dependencies=_KEY_FIRST)
async def list_usage(request: Request) -> UsageList:
    """Every key's usage: for the server's operator (a key from the ``api_keys`` setting, or
    anyone on an open server). Other keys get 404, as for a route they cannot see."""
    owner = owner_of(request)
    if owner is not None and not owner.startswith("static-"):
        raise NotFound("the usage of every key is for the server's operator (a key from the api_keys setting); "
                       "GET /v1/usage shows your own")
    return UsageList(data=[UsageOut.model_validate(u) for u in service_of(request).usage_all()])


@router.get("/v1/catalog", response_model=CatalogList)
async def list_catalog(request: Request) -> CatalogList:
    """Every model this server serves: id, aliases, tasks, defaults, and whether its weights are here."""
    owner_of(request)
    service = service_of(request)
    return CatalogList(data=[catalog_model(s, service.engine.is_available(s.id)) for s in service.catalog])


@router.get("/v1/addons", response_model=AddonList)
async def list_addons(request: Request, kind: AddonKind | None = Query(None)) -> AddonList:
    """The add-on files this server has (LoRAs, embeddings, ...), scanned now: what ``loras[].name``,
    ``<lora:name:w>`` tags and embedding words in prompts can name."""
    owner_of(request)
    addons = service_of(request).engine.addons
    kinds = (kind,) if kind else ADDON_KINDS
    addons.refresh(kind)
    return AddonList(data=[AddonOut(kind=k, name=f.name, filename=f.filename, size=f.size)
                           for k in kinds for f in addons.files(k)])


@router.post("/v1/caption", response_model=CaptionOut, dependencies=_KEY_FIRST,
             responses={k: v for k, v in JOB_ERRORS.items() if k == 503})
async def caption_image(body: CaptionRequest, request: Request) -> CaptionOut:
    """A caption of an image from the server's captioner (a BLIP model, `sdserve pull captioner`)."""
    owner_of(request)
    return CaptionOut(caption=await service_of(request).caption(decode_base64(body.image, "image"), "image"))
