"""Job records: what was asked, what ran, what came out, and how a job is shown to clients."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from .. import errors as _errors
from ..engine.params import GenerationParams
from ..errors import GenerationFailed, SdserveError

__all__ = [
    "Job",
    "JobStatus",
    "Output",
    "TERMINAL",
    "WEBHOOK_EVENTS",
    "new_job_id",
    "error_to_json",
    "error_from_json",
    "job_view",
    "iso",
]

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
# Which lifecycle moments a job's webhook is told about; "completed" is any terminal state.
WEBHOOK_EVENTS: tuple[str, ...] = ("start", "completed")


def new_job_id() -> str:
    """Unguessable: a job id is also the capability to read its outputs when keys are off."""
    return secrets.token_urlsafe(16)


@dataclass
class Output:
    """One encoded image of a job. ``data`` is loaded only where a caller needs the bytes
    (synchronous dialects); otherwise the artifact store holds them under ``key``."""

    index: int
    seed: int
    content_type: str
    data: bytes | None = None
    token: str = ""
    key: str = ""
    size: int = 0
    expires_at: float | None = None
    removed: bool = False
    # Whether the safety checker flagged this image (then obscured); None: not checked.
    nsfw: bool | None = None


@dataclass
class Job:
    """A generation request and its lifecycle."""

    id: str
    params: GenerationParams
    owner: str | None = None
    status: JobStatus = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    outputs: list[Output] = field(default_factory=list)
    error: SdserveError | None = None
    step: int = 0
    total_steps: int = 0
    device: str = ""
    dtype: str = ""
    priority: int = 0
    attempts: int = 0
    request: dict[str, Any] = field(default_factory=dict)
    webhook: str | None = None
    webhook_events: tuple[str, ...] = ("completed",)
    cancel_requested: bool = False
    credits: int = 0  # images charged to the owner's key
    # Compute units (engine.cost), priced at submit and charged to the owner's key with it.
    cost: float = 0.0
    # The latest live preview (PNG) while running; A1111's /progress shows it.
    preview: bytes | None = None
    # The engine's notes on how it read the request (e.g. a prompt cut to the encoder's length).
    warnings: list[str] = field(default_factory=list)
    # What the submitting dialect needs to answer later (its caller's flags), kept with the
    # job so a restart changes no reply; and which registered format its webhook body uses
    # (None: the Standard Webhooks envelope around job_view).
    reply: dict[str, Any] = field(default_factory=dict)
    webhook_format: str | None = None
    # Images in the denoising loop this attempt shares with other jobs (its own included);
    # set by the worker that runs it, not stored (metrics read it when the job starts).
    batch_images: int = 0

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def seeds(self) -> list[int]:
        return self.params.seeds


def error_to_json(err: SdserveError) -> str:
    return json.dumps({"class": type(err).__name__, "kind": err.kind, "message": err.message,
                       "field": getattr(err, "field", None), "detail": getattr(err, "detail", None)})


def error_from_json(text: str) -> SdserveError:
    """The stored error as the same domain class with the same message and field, so a
    synchronous dialect renders a job's failure exactly as if it had happened in-line."""
    d = json.loads(text)
    cls = getattr(_errors, d.get("class", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, SdserveError)):
        # A subclass defined outside sdserve.errors: keep its meaning (caller's input or not).
        cls = _errors.BadInput if d.get("field") is not None else GenerationFailed
    # Constructors format messages differently per class; restore the stored text as is.
    err = cls.__new__(cls)
    SdserveError.__init__(err, d.get("message", ""))
    if d.get("field") is not None:
        err.field = d["field"]  # type: ignore[attr-defined]
        err.detail = d.get("detail") or d.get("message", "")  # type: ignore[attr-defined]
    return err


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_view(job: Job, output_url: Callable[[Output], str], queue_position: int | None = None) -> dict[str, Any]:
    """The job as clients see it: the native API's body and the webhook payload's ``data``."""
    err = job.error
    return {
        "id": job.id,
        "status": job.status,
        "model": job.params.model,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "queue_position": queue_position if job.status == "queued" else None,
        "progress": {"step": job.step, "total": job.total_steps} if job.status == "running" else None,
        "attempts": job.attempts,
        "priority": job.priority,
        "cost": job.cost,
        # The prompt used; params.original_prompt is the one sent when the enhancer rewrote it.
        "params": job.params.summary(),
        "seeds": job.seeds,
        "outputs": [
            {"index": o.index, "seed": o.seed, "content_type": o.content_type,
             "url": None if o.removed else output_url(o), "expires_at": iso(o.expires_at), "nsfw": o.nsfw}
            for o in job.outputs
        ],
        "error": None if err is None else {"type": err.kind, "message": err.message,
                                           "field": getattr(err, "field", None)},
        "webhook": job.webhook,
        "warnings": job.warnings,
    }
