"""OpenAI Images routes: thin glue between FastAPI and the adapter.

``base_url`` for the openai SDK is ``http://host:port/v1``. Edits and variations are
multipart forms read by hand, because clients send ``image`` or ``image[]`` and every
value as text; the form models in protocol.py coerce them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from sdserve.engine.catalog import ModelSpec
from sdserve.engine.params import GenerationParams
from sdserve.errors import BadInput, Canceled
from sdserve.service.jobs import Job, Output
from sdserve.api.deps import owner_of, require_key, service_of, settings_of, warning_headers
from .errors import render_error
from sdserve.api.responses import BINARY, JOB_ERRORS
from .adapter import (
    edit_params,
    generation_params,
    images_response,
    in_dialect_terms,
    model_object,
    resolve_model,
    variation_params,
)
from .protocol import ImageEditForm, ImageGenerateRequest, ImagesResponse, ImageVariationForm, Model, ModelList
from .streaming import StreamKind, image_event, partial_due, partial_image

__all__ = ["router"]

# The key is checked before the body is read: 401 whatever was sent.
router = APIRouter(tags=["OpenAI Images"], dependencies=[Depends(require_key)])



@dataclass
class _OpenAIState:
    """This dialect's per-app state (never module-global): when the models were first listed."""

    created: int = field(default_factory=lambda: int(time.time()))


def _state(request: Request) -> _OpenAIState:
    st = getattr(request.app.state, "openai_dialect", None)
    if st is None:
        st = request.app.state.openai_dialect = _OpenAIState()
    return st


def _publish(request: Request, out: Output) -> str:
    """Where a ``response_format=url`` image can be downloaded: the artifact store's
    unguessable (or presigned) link, kept for the configured retention (OpenAI keeps 60 min)."""
    base = settings_of(request).public_url or str(request.base_url)
    return service_of(request).output_url(out, base)


async def _run(request: Request, response: Response, params: GenerationParams, response_format: str | None,
               owner: str | None) -> dict[str, Any]:
    if "openai" in settings_of(request).enhance_prompt_dialects:
        # The operator enabled the enhancer for this dialect: data[].revised_prompt shows its prompt.
        params = params.model_copy(update={"enhance_prompt": "on"})
    try:
        job = await service_of(request).run(params, owner, disconnected=request.is_disconnected)
    except BadInput as e:
        raise in_dialect_terms(e) from None
    response.headers["X-Sdserve-Job"] = job.id
    response.headers.update(warning_headers(job.warnings))
    return images_response(job.outputs, response_format, int(time.time()), lambda o: _publish(request, o), job.params)


def _stream(request: Request, params: GenerationParams, owner: str | None, kind: StreamKind, partial_images: int | None,
            quality: str | None, background: str | None) -> EventSourceResponse:
    """``stream: true``: the job's previews as ``<kind>.partial_image`` events, then one
    ``<kind>.completed`` event per image (always b64_json, as OpenAI streams), or an ``error``
    event the SDK raises as APIError. A client that goes away cancels the job."""
    service = service_of(request)
    try:
        job = service.submit(params, owner)
    except BadInput as e:
        raise in_dialect_terms(e) from None
    p = job.params
    fields = {"size": f"{p.width}x{p.height}", "output_format": p.output_format,
              "quality": quality or "auto", "background": background or "auto"}

    def sse(body: dict[str, Any]) -> bytes:
        return format_sse_event(event=body["type"], data_str=json.dumps(body))

    async def events() -> AsyncIterator[bytes]:
        sent, ended = 0, None  # type: int, Job | None
        try:
            async for ev in service.events(job.id, owner):
                if "job" in ev:
                    ended = ev["job"]
                elif ev["event"] == "step" and "preview" in ev and partial_due(ev["step"], ev["total"],
                                                                                partial_images or 0, sent):
                    png = base64.b64decode(ev["preview"].split(",", 1)[1])
                    img = await asyncio.to_thread(partial_image, png, p.width or 0, p.height or 0, p.output_format)
                    yield sse(image_event(kind, img, fields=fields, created=int(time.time()), partial_index=sent))
                    sent += 1
        finally:
            if ended is None:  # the client went away (or the server stops): stop drawing
                service.cancel(job.id, owner)
        if ended is None:
            return
        if ended.status != "succeeded":
            err = ended.error or Canceled(f"job {job.id} was canceled")
            error = json.loads(bytes(render_error(err, settings_of(request).openai_error_types).body))
            yield sse({"type": "error", **error})
            return
        for out in ended.outputs:
            data = out.data if out.data is not None else await asyncio.to_thread(service.artifacts.get, out.key)
            yield sse(image_event(kind, data, fields=fields, created=int(time.time()), seed=out.seed))

    return EventSourceResponse(events(), headers={"X-Sdserve-Job": job.id, "Cache-Control": "no-store"})


def _spec(request: Request, model: str | None) -> ModelSpec:
    return resolve_model(model, service_of(request).catalog, settings_of(request).default_model)


def _check_multipart(request: Request) -> None:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadInput("image", "send multipart/form-data with the image as a file part (as the openai SDK does)")


def _fields(form: FormData, model: type[BaseModel]) -> Any:
    text = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    try:
        return model.model_validate(text)
    except ValidationError as e:
        # Same path as a JSON body's validation error: BadInput naming the field.
        raise RequestValidationError(e.errors()) from None


async def _files(form: FormData, *names: str) -> list[bytes]:
    out = []
    for name in names:
        for v in form.getlist(name):
            if not isinstance(v, UploadFile):
                raise BadInput(name.removesuffix("[]"), "must be a file part (an uploaded image), not text")
            out.append(await v.read())
    return out


def _form_doc(form: type[BaseModel], required: list[str], **files: dict[str, Any]) -> dict[str, Any]:
    """The multipart body as OpenAPI: the form model's text fields plus the file parts."""
    schema = form.model_json_schema()
    schema["properties"] = {**files, **schema["properties"]}
    schema["required"] = required
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}, "required": True}}


_FILE = BINARY["schema"]
_FILES = {"image": _FILE, "image[]": {"type": "array", "items": _FILE}}
# Unknown models are 404 model_not_found on OpenAI.
_ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "No such model."}, **JOB_ERRORS}
# With stream=true the answer is server-sent events instead of the JSON body.
_STREAMED: dict[int | str, dict[str, Any]] = {**_ERRORS, 200: {"content": {"text/event-stream": {"schema": {
    "type": "string", "description": "stream=true: `<kind>.partial_image` events (partial_images of them at most), "
                                     "then one `<kind>.completed` event per image, or an `error` event; <kind> is "
                                     "image_generation or image_edit."}}}}}


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=_STREAMED)
async def create_image(body: ImageGenerateRequest, request: Request, response: Response) -> Any:
    """Create images from a prompt (OpenAI ``images.generate``)."""
    owner = owner_of(request)
    params = generation_params(body, _spec(request, body.model))
    if body.stream:
        return _stream(request, params, owner, "image_generation", body.partial_images, body.quality, body.background)
    return await _run(request, response, params, body.response_format, owner)


@router.post("/v1/images/edits", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=_STREAMED, openapi_extra=_form_doc(ImageEditForm, ["image", "prompt"], **_FILES, mask=_FILE))
async def create_image_edit(request: Request, response: Response) -> Any:
    """Edit an image: repaint its transparent (or masked-transparent) area, else the whole image."""
    owner = owner_of(request)
    _check_multipart(request)
    async with request.form() as form:
        fields: ImageEditForm = _fields(form, ImageEditForm)
        images = await _files(form, "image", "image[]")
        masks = await _files(form, "mask")
    if len(masks) > 1:
        raise BadInput("mask", "send one mask")
    spec = _spec(request, fields.model)
    params = edit_params(fields, images, masks[0] if masks else None, spec, settings_of(request).max_image_pixels)
    if fields.stream:
        return _stream(request, params, owner, "image_edit", fields.partial_images, fields.quality, fields.background)
    return await _run(request, response, params, fields.response_format, owner)


@router.post("/v1/images/variations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=_ERRORS, openapi_extra=_form_doc(ImageVariationForm, ["image"], **_FILES))
async def create_image_variation(request: Request, response: Response) -> dict[str, Any]:
    """Variations of an image (img2img with strength 0.7 and an empty prompt)."""
    owner = owner_of(request)
    _check_multipart(request)
    async with request.form() as form:
        fields: ImageVariationForm = _fields(form, ImageVariationForm)
        images = await _files(form, "image", "image[]")
    if len(images) > 1:
        raise BadInput("image", f"got {len(images)} images; send one")
    spec = _spec(request, fields.model)
    params = variation_params(fields, images[0] if images else None, spec)
    return await _run(request, response, params, fields.response_format, owner)


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> dict[str, Any]:
    """Every catalog model under its slug, the name gateway clients use (``@cf/`` ids,
    aliases and OpenAI's own names also work; the latter mean the default model)."""
    owner_of(request)
    created = _state(request).created
    return {"object": "list", "data": [model_object(s.slug, created) for s in service_of(request).catalog]}


@router.get("/v1/models/{model:path}", response_model=Model)
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    """One model by id, alias or OpenAI name; unknown names are 404 ``model_not_found``."""
    owner_of(request)
    _spec(request, model)
    return model_object(model, _state(request).created)
