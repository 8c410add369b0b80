"""ComfyUI's wire shapes (``server.py``, ``execution.py``), as pydantic models for the
OpenAPI document and for parsing. The graph itself (``prompt``) is read by the compiler
(``compile.py``), which reports its errors per node."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

__all__ = ["PromptRequest", "PromptAnswer", "QueueInfo", "ExecInfo", "ListAction", "InterruptRequest",
           "FileRef", "HistoryEntry", "HistoryStatus", "QueueLists", "UPLOAD_FORM"]


class PromptRequest(BaseModel):
    """Body of ``POST /prompt``: an API-format graph ({node id: {class_type, inputs}})."""

    model_config = ConfigDict(extra="allow")  # ComfyUI ignores keys it does not read (e.g. "workflow")

    prompt: dict[str, Any] = Field(description="The graph in API format: node id -> {class_type, inputs}.")
    client_id: StrictStr | None = Field(None, description="The websocket clientId that gets this prompt's messages.")
    extra_data: dict[str, Any] = Field(default_factory=dict, description="Kept with the prompt, shown in /queue and "
                                       "/history (extra_pnginfo, client_id).")
    front: StrictBool | None = Field(None, description="Queue ahead of this caller's other prompts.")
    number: float | None = Field(None, allow_inf_nan=False, description="Queue position number (lower runs first "
                                 "among this caller's prompts).")
    prompt_id: StrictStr | None = Field(None, description="A UUID for the prompt (default: the server makes one).")


class PromptAnswer(BaseModel):
    prompt_id: str
    number: int | float
    node_errors: dict[str, Any]


class ExecInfo(BaseModel):
    queue_remaining: int


class QueueInfo(BaseModel):
    """``GET /prompt`` and the websocket's ``status`` message."""

    exec_info: ExecInfo


class QueueLists(BaseModel):
    """``GET /queue``: each entry [number, prompt_id, prompt, extra_data, outputs_to_execute]."""

    queue_running: list[list[Any]]
    queue_pending: list[list[Any]]


class ListAction(BaseModel):
    """``POST /queue`` and ``POST /history``."""

    model_config = ConfigDict(extra="allow")

    clear: StrictBool | None = None
    delete: list[StrictStr] | None = Field(None, description="Prompt ids.")


class InterruptRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_id: StrictStr | None = Field(None, description="Interrupt only this prompt (default: yours running now).")


class FileRef(BaseModel):
    """An image as history and ``executed`` name it; ``GET /view`` takes the same three."""

    filename: str
    subfolder: str
    type: str = Field(description="output, temp or input")


class UploadAnswer(BaseModel):
    name: str
    subfolder: str
    type: str


class HistoryStatus(BaseModel):
    status_str: str = Field(description="success or error")
    completed: bool
    messages: list[list[Any]] = Field(description="[event, data] pairs: execution_start, execution_cached, then "
                                      "execution_success, execution_error or execution_interrupted.")


class HistoryEntry(BaseModel):
    prompt: list[Any] = Field(description="[number, prompt_id, prompt, extra_data, outputs_to_execute]")
    outputs: dict[str, dict[str, list[FileRef]]]
    status: HistoryStatus
    meta: dict[str, dict[str, Any]]


# multipart/form-data body of /upload/image and /upload/mask, for the OpenAPI document (the
# routes read the form themselves, as ComfyUI does).
UPLOAD_FORM: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"},
        "overwrite": {"type": "string", "description": "true or 1: replace a file of that name"},
        "subfolder": {"type": "string"},
        "type": {"type": "string", "enum": ["input", "temp", "output"]},
        "original_ref": {"type": "string", "description": "/upload/mask: JSON {filename, subfolder, type} of the "
                                                           "image whose alpha the mask replaces"}}}}}}}
