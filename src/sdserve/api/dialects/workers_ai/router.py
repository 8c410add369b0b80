"""Workers AI routes: thin glue between FastAPI and the adapter."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from sdserve.errors import BadInput, UnknownModel
from sdserve.api.deps import owner_of, require_key, service_of, warning_headers
from sdserve.api.responses import BINARY, JOB_ERRORS
from .adapter import field_names, search_item, to_params
from .protocol import ModelSearchResponse, TextToImageInput

__all__ = ["router"]


# The key is checked before the body (401, code 10000, whatever was sent), as behind Cloudflare's gateway.
router = APIRouter(tags=["Cloudflare Workers AI"], dependencies=[Depends(require_key)])

_PNG = {200: {"content": {"image/png": BINARY}, "description": "The generated image (raw bytes)."}, **JOB_ERRORS}


async def _run(model: str, body: TextToImageInput, request: Request) -> Response:
    owner = owner_of(request)
    service = service_of(request)
    try:
        spec = service.catalog.get(model)
    except UnknownModel:
        raise UnknownModel(f"{model} or task") from None
    params = to_params(body, spec)
    try:
        job = await service.run(params, owner, disconnected=request.is_disconnected)
    except BadInput as e:
        raise e.renamed(field_names(body)) from None
    out = job.outputs[0]
    run_ms = ((job.finished_at or 0) - (job.started_at or 0)) * 1000
    return Response(content=out.data, media_type=out.content_type,
                    headers={"X-Sdserve-Seed": str(out.seed), "X-Sdserve-Job": job.id,
                             "X-Sdserve-Run-Ms": f"{run_ms:.1f}", "Server-Timing": f"run;dur={run_ms:.1f}",
                             **warning_headers(job.warnings)})


@router.post("/client/v4/accounts/{account_id}/ai/run/{model:path}", responses=_PNG, response_class=Response)
async def run_account(account_id: str, model: str, body: TextToImageInput, request: Request) -> Response:
    """Run a text-to-image model; the image bytes are the response body."""
    return await _run(model, body, request)


@router.post("/ai/run/{model:path}", responses=_PNG, response_class=Response)
async def run(model: str, body: TextToImageInput, request: Request) -> Response:
    """Run a text-to-image model (short form without the account path)."""
    return await _run(model, body, request)


@router.get("/client/v4/accounts/{account_id}/ai/models/search", response_model=None,
            responses={200: {"model": ModelSearchResponse}})
async def models_search(
    account_id: str,
    request: Request,
    search: str | None = None,
    task: str | None = None,
    author: str | None = None,
    source: int | None = None,
    page: int = Query(1, ge=1),
    per_page: int = Query(20, ge=1, le=1000),
) -> dict[str, Any]:
    """List the catalog in Workers AI's model-search shape."""
    items = [search_item(s) for s in service_of(request).catalog]
    if search:
        items = [i for i in items if search.lower() in (i.name + " " + i.description).lower()]
    if task:
        items = [i for i in items if task.lower() == i.task["name"].lower()]
    if author:
        items = [i for i in items if i.name.lower().split("/")[1:2] == [author.lower()]]
    if source is not None:
        items = [i for i in items if i.source == source]
    start = (page - 1) * per_page
    chunk = items[start:start + per_page]
    return {
        "success": True,
        "errors": [],
        "messages": [],
        "result": [i.model_dump() for i in chunk],
        "result_info": {"page": page, "per_page": per_page, "count": len(chunk), "total_count": len(items)},
    }
