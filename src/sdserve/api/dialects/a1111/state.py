"""The A1111 dialect's per-app runtime state: the options dict (``/sdapi/v1/options``, with
the current ``sd_model_checkpoint``) and the generation requests in flight, which
``/progress``, ``/interrupt`` and ``/skip`` act on.

Kept on ``app.state`` (one per app, never module-global). A1111 itself is a single-user
program with global settings; here the options are shared by every caller of one server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["A1111State", "Batch"]


@dataclass
class Batch:
    """One txt2img/img2img request: ``job_count`` jobs (n_iter), run one after another."""

    kind: str
    job_count: int
    prompt: str
    owner: str | None
    previews: bool = True  # live_previews_enable for this request
    started: float = field(default_factory=time.time)
    job_no: int = 0
    current_seed: int | None = None
    interrupted: bool = False
    skipped: bool = False

    @property
    def timestamp(self) -> str:
        return time.strftime("%Y%m%d%H%M%S", time.localtime(self.started))


@dataclass
class A1111State:
    options: dict[str, Any]
    batches: list[Batch] = field(default_factory=list)

    def batch_of(self, seed: int | None, prompt: str, owner: str | None) -> Batch | None:
        """The request whose current job has this seed and prompt (jobs carry no request tag)."""
        return next((b for b in self.batches
                     if b.current_seed == seed and b.prompt == prompt and b.owner == owner), None)
