"""ComfyUI's routes (``server.py``), plain and under ``/api`` as ComfyUI registers them: thin
glue between FastAPI, the graph compiler, the job service and this folder's storage,
history and websocket modules."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from sdserve.api.deps import owner_of, require_key, service_of, settings_of
from sdserve.api.responses import BINARY, JOB_ERRORS
from sdserve.errors import BadInput, NotFound, SdserveError
from .compile import GraphError, object_info
from .folders import FOLDER_KINDS, embedding_names, folder_files
from .history import history_entry, queue_entry, settle, states
from .prompts import compile_env, groups_of, submit_prompt
from .protocol import (
    UPLOAD_FORM,
    HistoryEntry,
    InterruptRequest,
    ListAction,
    PromptAnswer,
    PromptRequest,
    QueueInfo,
    QueueLists,
    UploadAnswer,
)
from .storage import DIALECT_NAME, FOLDERS, ComfyFiles, annotated, clean_filename, clean_subfolder, view_bytes
from .system import system_stats
from .websocket import FEATURES, ComfySockets, sockets_of

__all__ = ["router", "api_router", "ws_router"]

router = APIRouter(tags=["ComfyUI"], dependencies=[Depends(require_key)])
_EMPTY: dict[int | str, dict[str, Any]] = {200: {"description": "Done (an empty body, as ComfyUI answers)."}}


def _files(request: Request) -> ComfyFiles:
    service = service_of(request)
    return ComfyFiles(service.db, service.artifacts, settings_of(request).max_image_pixels)


def _sockets(request: Request) -> ComfySockets:
    return sockets_of(request.app.state, service_of(request))


def _json_safe(value: Any) -> Any:
    """``value`` with the non-finite numbers a caller sent (echoed as ``received_value``) as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# -- prompts -------------------------------------------------------------------------------


@router.post("/prompt", response_model=PromptAnswer,
             responses={**{k: v for k, v in JOB_ERRORS.items() if k in (402, 503)},
                        400: {"description": "An invalid graph: error and node_errors, as ComfyUI answers."}})
async def post_prompt(body: PromptRequest, request: Request) -> Any:
    """Queue an API-format graph. It is checked as a whole and compiled into sdserve jobs
    before anything is queued; an invalid graph is a 400 with ``error`` and ``node_errors``."""
    owner = owner_of(request)
    service = service_of(request)
    try:
        group = await submit_prompt(service, _files(request), body, owner)
    except GraphError as e:
        return JSONResponse(_json_safe({"error": e.error, "node_errors": e.node_errors}), status_code=400)
    sockets = _sockets(request)
    sockets.follow(group)
    await sockets.status(owner)
    # The invalid outputs that will not run (ComfyUI's 200 answer lists them; the others run).
    return PromptAnswer(prompt_id=group.id, number=group.data["number"],
                        node_errors=_json_safe(group.data.get("node_errors", {})))


@router.get("/prompt", response_model=QueueInfo)
async def get_prompt(request: Request) -> QueueInfo:
    """How many of your prompts are queued or running."""
    return QueueInfo.model_validate({"exec_info": {"queue_remaining": await _sockets(request).queue_remaining(
        owner_of(request))}})


@router.get("/queue", response_model=QueueLists)
async def get_queue(request: Request) -> QueueLists:
    """Your prompts running and pending, each as [number, prompt_id, prompt, extra_data, outputs]."""
    live = await asyncio.to_thread(settle, service_of(request), groups_of(service_of(request)), owner_of(request))
    live.sort(key=lambda st: st.group.data["number"])
    return QueueLists(queue_running=[queue_entry(st.group) for st in live if st.started],
                      queue_pending=[queue_entry(st.group) for st in live if not st.started])


@router.post("/queue", response_class=Response, responses=_EMPTY)
async def post_queue(body: ListAction, request: Request) -> Response:
    """``clear``: drop your pending prompts; ``delete``: drop these pending prompts (their jobs
    are canceled). Running prompts are stopped with /interrupt."""
    owner = owner_of(request)
    service = service_of(request)
    live = await asyncio.to_thread(settle, service, groups_of(service), owner)
    wanted = set(body.delete or ())
    dropped = [st.group.id for st in live if not st.started and (body.clear or st.group.id in wanted)]
    for st in live:
        if st.group.id in dropped:
            for job_id in st.group.job_ids:
                service.cancel(job_id, owner)
    if dropped:  # taken off the queue, as in ComfyUI, they never reach the history
        groups_of(service).delete(DIALECT_NAME, owner, dropped, finished_only=False)
    return Response(status_code=200)


@router.post("/interrupt", response_class=Response, responses=_EMPTY)
async def post_interrupt(request: Request, body: InterruptRequest | None = None) -> Response:
    """Stop your running prompt (``prompt_id``: only that one, if it runs): its jobs end as
    canceled and its history says ``execution_interrupted``."""
    owner = owner_of(request)
    service = service_of(request)
    target = body.prompt_id if body is not None else None
    for st in await asyncio.to_thread(settle, service, groups_of(service), owner):
        if st.started and (target is None or st.group.id == target):
            for job_id in st.group.job_ids:
                service.cancel(job_id, owner)
    return Response(status_code=200)


# -- history -------------------------------------------------------------------------------


@router.get("/history", response_model=dict[str, HistoryEntry])
async def get_history(request: Request, max_items: int | None = Query(None, ge=1),
                      offset: int = Query(-1, ge=-1)) -> dict[str, Any]:
    """Your finished prompts, oldest first (``max_items``: the newest that many, or from ``offset``)."""
    owner = owner_of(request)
    service = service_of(request)
    groups = groups_of(service)
    await asyncio.to_thread(settle, service, groups, owner)
    done = await asyncio.to_thread(groups.list, DIALECT_NAME, owner, finished=True)
    if offset < 0 and max_items is not None:
        offset = len(done) - max_items
    done = done[max(offset, 0):]
    if max_items is not None:
        done = done[:max_items]
    return {st.group.id: history_entry(st) for st in await asyncio.to_thread(states, service, done)}


@router.get("/history/{prompt_id}", response_model=dict[str, HistoryEntry])
async def get_history_prompt(request: Request, prompt_id: str = Path(max_length=64)) -> dict[str, Any]:
    """One finished prompt by id (``{}`` while it is queued or running, or unknown)."""
    owner = owner_of(request)
    service = service_of(request)
    group = groups_of(service).get(DIALECT_NAME, prompt_id, owner)
    if group is None:
        return {}
    [st] = await asyncio.to_thread(states, service, [group])
    if not st.done:
        return {}
    return {group.id: history_entry(st)}


@router.post("/history", response_class=Response, responses=_EMPTY)
async def post_history(body: ListAction, request: Request) -> Response:
    """``clear``: forget your finished prompts; ``delete``: forget these (their jobs and files stay)."""
    owner = owner_of(request)
    groups = groups_of(service_of(request))
    if body.clear:
        groups.delete(DIALECT_NAME, owner)
    if body.delete:
        groups.delete(DIALECT_NAME, owner, list(body.delete))
    return Response(status_code=200)


# -- files ---------------------------------------------------------------------------------


def _folder(value: str | None, field: str, default: str) -> str:
    folder = value or default
    if folder not in FOLDERS:
        raise BadInput(field, f"{folder!r} is not one of {', '.join(FOLDERS)}")
    return folder


@router.get("/view", response_class=Response,
            responses={200: {"content": {"image/png": BINARY, "image/jpeg": BINARY, "image/webp": BINARY}},
                       404: {"description": "No such file (or its output expired)."}})
async def view(request: Request, filename: str = Query(..., max_length=250), subfolder: str = Query("", max_length=250),
               type: str | None = Query(None, description="output (default), temp or input"),
               preview: str | None = Query(None, max_length=20, description="webp;90 or jpeg;90: re-encoded"),
               channel: str | None = Query(None, description="rgba (default), rgb or a")) -> Response:
    """A file by the name history, ``executed`` or an upload gave it."""
    owner = owner_of(request)
    name, tagged = annotated(filename)
    folder = tagged or _folder(type, "type", "output")
    name, sub = clean_filename(name), clean_subfolder(subfolder)
    data = await asyncio.to_thread(_files(request).read, owner, folder, sub, name)
    body, content_type = await asyncio.to_thread(view_bytes, data, channel, preview)
    quoted = name.replace("\\", "").replace('"', "")
    return Response(content=body, media_type=content_type,
                    headers={"Content-Disposition": f'filename="{quoted}"',
                             "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"})


async def _upload(request: Request, mask: bool) -> UploadAnswer:
    owner = owner_of(request)
    try:
        form = await request.form()
    except Exception:  # noqa: BLE001 - starlette raises several types for a body that is not a form
        raise BadInput("image", "send multipart/form-data with the file in 'image'") from None
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise BadInput("image", "is required (a file field of multipart/form-data)")
    text = {k: v for k, v in form.items() if isinstance(v, str)}
    folder = _folder(text.get("type"), "type", "input")
    sub = clean_subfolder(text.get("subfolder", ""))
    name = clean_filename(image.filename or "", "image")
    data = await image.read()
    files = _files(request)
    if mask:
        if "original_ref" not in text:
            raise BadInput("original_ref", "is required (JSON {filename, subfolder, type})")
        data = await asyncio.to_thread(files.masked, owner, text["original_ref"], data)
    overwrite = text.get("overwrite") in ("true", "1")
    stored = await asyncio.to_thread(files.upload, owner, folder, sub, name, data, overwrite)
    return UploadAnswer(name=stored, subfolder=sub, type=folder)


@router.post("/upload/image", response_model=UploadAnswer, openapi_extra=UPLOAD_FORM)
async def upload_image(request: Request) -> UploadAnswer:
    """Store an image for LoadImage (``type`` input by default); the answer names it."""
    return await _upload(request, mask=False)


@router.post("/upload/mask", response_model=UploadAnswer, openapi_extra=UPLOAD_FORM)
async def upload_mask(request: Request) -> UploadAnswer:
    """Store ``original_ref``'s image with this image's alpha as its mask (what LoadImageMask reads)."""
    return await _upload(request, mask=True)


# -- what the server has -------------------------------------------------------------------


@router.get("/object_info", response_model=dict[str, Any])
async def get_object_info(request: Request) -> dict[str, Any]:
    """Every node this server runs, with its inputs and their options (checkpoints, samplers, ...)."""
    env = compile_env(service_of(request), _files(request), owner_of(request))
    info: dict[str, Any] = await asyncio.to_thread(object_info, env)
    return info


@router.get("/object_info/{node_class}", response_model=dict[str, Any])
async def get_object_info_node(request: Request, node_class: str = Path(max_length=200)) -> dict[str, Any]:
    """One node's entry (``{}`` for a node this server does not have, as ComfyUI answers)."""
    info = await get_object_info(request)
    return {node_class: info[node_class]} if node_class in info else {}


@router.get("/system_stats", response_model=dict[str, Any])
async def get_system_stats(request: Request) -> dict[str, Any]:
    """RAM, versions and the device with its memory."""
    return system_stats(service_of(request).engine.health())


@router.get("/embeddings", response_model=list[str])
async def get_embeddings(request: Request) -> list[str]:
    """Textual-inversion embeddings, by name."""
    return embedding_names(service_of(request).engine.addons)


@router.get("/models", response_model=list[str])
async def get_model_folders(request: Request) -> list[str]:
    """The model folders ``/models/{folder}`` lists."""
    return list(FOLDER_KINDS)


@router.get("/models/{folder}", response_model=list[str], responses={404: {"description": "No such folder."}})
async def get_models(request: Request, folder: str = Path(max_length=100)) -> list[str]:
    """The files of one model folder (``checkpoints``: the catalog's models, then files found)."""
    service = service_of(request)
    files = folder_files(folder, service.catalog, service.engine.addons)
    if files is None:
        raise NotFound(f"no model folder {folder!r}; see /models")
    return files


@router.get("/features", response_model=dict[str, Any])
async def get_features(request: Request) -> dict[str, Any]:
    """What this server supports (preview metadata: no; the upload size limit)."""
    return {**FEATURES, "max_upload_size": settings_of(request).max_body_bytes}


# -- the websocket -------------------------------------------------------------------------

ws_router = APIRouter()  # no route dependencies: a websocket has no Request


@ws_router.websocket("/ws")
@ws_router.websocket("/api/ws")
async def websocket(ws: WebSocket) -> None:
    """``/ws?clientId=``; on a server with keys, the key as ``Authorization: Bearer`` or ``?token=``."""
    try:
        # KeyAuth reads the bearer header of any connection; ?token= is for clients that cannot set one.
        owner = ws.app.state.keys.owner(ws, ws.query_params.get("token") or None)
    except SdserveError:
        await ws.close(code=1008)  # policy violation: the handshake is refused (HTTP 403)
        return
    await ws.accept()
    sid = ws.query_params.get("clientId") or uuid.uuid4().hex
    await sockets_of(ws.app.state, ws.app.state.service).serve(ws, sid, owner)


# ComfyUI answers every route under /api too (its frontend uses those); listed once in the docs.
api_router = APIRouter(prefix="/api")
api_router.include_router(router, include_in_schema=False)
