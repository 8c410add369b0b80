"""Job records: what was asked, what ran, what came out."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

from ..engine.params import GenerationParams
from ..errors import SdserveError

__all__ = ["Job", "JobStatus", "Output", "TERMINAL", "new_job_id"]

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})


def new_job_id() -> str:
    """Unguessable: a job id is also the capability to read its outputs when keys are off."""
    return secrets.token_urlsafe(16)


@dataclass
class Output:
    """One encoded image of a job."""

    index: int
    seed: int
    content_type: str
    data: bytes


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

    @property
    def done(self) -> bool:
        return self.status in TERMINAL
