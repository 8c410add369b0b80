"""JobService: accepts jobs, runs them one at a time on the engine, and lets callers wait,
cancel, and follow progress.

The worker is an asyncio task; the blocking denoising loop runs in a thread so the event
loop keeps answering HTTP while an image is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..engine.catalog import Catalog
from ..engine.params import GenerationParams, GenerationResult, StepInfo
from ..errors import Canceled, GenerationFailed, NotFound, QueueFull, SdserveError
from .jobs import Job, new_job_id
from .outputs import encode_outputs

__all__ = ["JobService", "GenerationEngine"]

log = logging.getLogger(__name__)


class GenerationEngine(Protocol):
    """What the service needs of the engine (``sdserve.engine.engine.Engine`` provides it)."""

    catalog: Catalog

    def prepare(self, params: GenerationParams) -> GenerationParams: ...

    def generate(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult: ...

    def health(self) -> dict[str, Any]: ...

    def loaded_models(self) -> list[str]: ...

    def is_available(self, name: str) -> bool: ...


class JobService:
    """Queue, worker and job registry over one engine."""

    def __init__(self, engine: GenerationEngine, max_queue: int = 256) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._jobs: dict[str, Job] = {}
        self._queue: asyncio.Queue[str] | None = None
        self._done: dict[str, asyncio.Event] = {}
        self._cancel: set[str] = set()
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def catalog(self) -> Catalog:
        return self.engine.catalog

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name="sdserve-worker")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    # -- API ------------------------------------------------------------------------------

    def submit(self, params: GenerationParams, owner: str | None = None) -> Job:
        """Validate, resolve defaults and seeds, and queue. Raises BadInput/UnknownModel/QueueFull."""
        if self._queue is None:
            raise GenerationFailed("the job service is not running")
        resolved = self.engine.prepare(params)
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"the queue is full ({self.max_queue} jobs waiting); retry shortly", retry_after=5)
        job = Job(id=new_job_id(), params=resolved, owner=owner)
        self._jobs[job.id] = job
        self._done[job.id] = asyncio.Event()
        self._queue.put_nowait(job.id)
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job:
        job = self._jobs.get(job_id)
        # Another key's job answers exactly like a missing one, so ids cannot be probed.
        if job is None or (owner is not None and job.owner is not None and job.owner != owner):
            raise NotFound(f"no job {job_id}")
        return job

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        job = self.get(job_id, owner)
        if job.done:
            return job
        if job.status == "queued":
            self._finish(job, "canceled", Canceled("canceled before it started"))
        else:
            self._cancel.add(job.id)  # the running loop stops at its next step
        return job

    async def wait(self, job: Job, timeout: float | None = None) -> Job:
        await asyncio.wait_for(self._done[job.id].wait(), timeout)
        return job

    async def run(
        self,
        params: GenerationParams,
        owner: str | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> Job:
        """Submit and wait; cancel if the client goes away. Raises the job's error if it failed."""
        job = self.submit(params, owner)
        done = self._done[job.id]
        while not done.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)
            if not done.is_set() and disconnected is not None and await disconnected():
                log.info("client of job %s went away; canceling it", job.id)
                self.cancel(job.id)
                await done.wait()
        if job.error is not None:
            raise job.error
        return job

    def running(self) -> Job | None:
        """The job the worker is running now, if any (A1111's /progress reports it)."""
        return next((j for j in self._jobs.values() if j.status == "running"), None)

    def queue_length(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    # -- worker ---------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job_id = await self._queue.get()
            job = self._jobs.get(job_id)
            if job is None or job.done:
                continue
            await self._run_one(job)

    async def _run_one(self, job: Job) -> None:
        job.status = "running"
        job.started_at = time.time()

        def on_step(info: StepInfo) -> None:
            job.step, job.total_steps = info.step, info.total

        def canceled() -> bool:
            return job.id in self._cancel

        try:
            result = await asyncio.to_thread(self.engine.generate, job.params, on_step, canceled)
            job.outputs = await asyncio.to_thread(encode_outputs, result)
            job.device, job.dtype = result.device, result.dtype
            self._finish(job, "succeeded")
        except Canceled as e:
            self._finish(job, "canceled", e)
        except SdserveError as e:
            self._finish(job, "failed", e)
        except Exception as e:  # noqa: BLE001 - a bug must fail the job, not kill the worker
            log.exception("job %s crashed", job.id)
            self._finish(job, "failed", GenerationFailed(f"internal error: {type(e).__name__}"))

    def _finish(self, job: Job, status: str, error: SdserveError | None = None) -> None:
        job.status = status  # type: ignore[assignment]
        job.error = error
        job.finished_at = time.time()
        self._cancel.discard(job.id)
        self._done[job.id].set()
