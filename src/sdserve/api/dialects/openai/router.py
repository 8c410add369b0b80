"""OpenAI Images routes: thin glue between FastAPI and the adapter.

``base_url`` for the openai SDK is ``http://host:port/v1``. Edits and variations are
multipart forms read by hand, because clients send ``image`` or ``image[]`` and every
value as text; the form models in protocol.py coerce them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from ....engine.catalog import ModelSpec
from ....engine.params import GenerationParams
from ....errors import BadInput
from ....service.jobs import Output
from ...deps import owner_of, require_key, service_of, settings_of, warning_headers
from ...openapi import BINARY, JOB_ERRORS
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
    try:
        job = await service_of(request).run(params, owner, disconnected=request.is_disconnected)
    except BadInput as e:
        raise in_dialect_terms(e) from None
    response.headers["X-Sdserve-Job"] = job.id
    response.headers.update(warning_headers(job.warnings))
    return images_response(job.outputs, response_format, int(time.time()), lambda o: _publish(request, o), job.params)


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


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=_ERRORS)
async def create_image(body: ImageGenerateRequest, request: Request, response: Response) -> dict[str, Any]:
    """Create images from a prompt (OpenAI ``images.generate``)."""
    owner = owner_of(request)
    params = generation_params(body, _spec(request, body.model))
    return await _run(request, response, params, body.response_format, owner)


@router.post("/v1/images/edits", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=_ERRORS, openapi_extra=_form_doc(ImageEditForm, ["image", "prompt"], **_FILES, mask=_FILE))
async def create_image_edit(request: Request, response: Response) -> dict[str, Any]:
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
    params = variation_params(fields, images[0] if images else None, spec, settings_of(request).max_image_pixels)
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
