"""The batch worker: claims queued jobs, runs them on the engine, records each outcome.

Each of ``ServiceOptions.workers`` asyncio tasks runs ``BatchWorker.run`` over the shared
state here: it claims the next job in fair order (owners share the device by the compute
they were served, see ``fairness.py``) together with
queued jobs that can share its denoising loop, runs the blocking loop in a thread so the
event loop keeps answering HTTP, stores the outputs and records each job's end. A heartbeat
renews the running jobs' leases (and, on a shared database, writes their progress), and
turns a cancel from another process, or a lost lease, into a stop at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..engine.params import BatchItem, GenerationResult, StepInfo, batch_key
from ..errors import Canceled, GenerationFailed, Interrupted, SdserveError
from .artifacts import ArtifactStore
from .events import EventHub, data_uri
from .fairness import Waiting, fair_order, record_served
from .jobs import Job
from .options import GenerationEngine, ServiceOptions
from .outcomes import Outcomes
from .outputs import drop_orphans, save_outputs, storage_error
from .recording import Recorder
from .store import JobStore

__all__ = ["BatchWorker"]

log = logging.getLogger(__name__)


class BatchWorker:
    """What this process's worker tasks share: the jobs running here, the owners' turns,
    the cancels asked for, and the wake-up a new job or a stop gives them."""

    def __init__(self, engine: GenerationEngine, store: JobStore, artifacts: ArtifactStore,
                 options: ServiceOptions, hub: EventHub, recorder: Recorder, outcomes: Outcomes) -> None:
        self.engine = engine
        self.store = store
        self.artifacts = artifacts
        self.options = options
        self.hub = hub
        self.recorder = recorder
        self.outcomes = outcomes  # tells waiters, streams and observers a job ended
        self.running: dict[str, Job] = {}
        self.canceled = outcomes.canceled  # to stop at the next step and end as canceled
        self.served: dict[str | None, float] = {}  # owner -> compute units started while it had work waiting
        self.stopping = False
        self.wake = asyncio.Event()
        self.run_ema_s = 5.0  # how long a batch takes (QueueFull's Retry-After)
        self._last_batch_size = 1
        self._drained = False  # the queue held nothing more when the last batch was formed

    def reset(self) -> None:
        """Before the tasks (re)start: events bind to the loop that first waits on them, and a
        restarted service may run in a new one."""
        self.stopping = False
        self.wake = asyncio.Event()

    def line(self) -> list[str]:
        """Queued job ids in the order they will start (the queue positions clients see)."""
        return fair_order(self.store.waiting(), self.served)

    async def run(self) -> None:
        # The previous batch's outputs are encoded and stored while the next batch runs on
        # the engine (PNG encoding is real CPU work; on a GPU it would otherwise leave the
        # device idle). At most one batch is being concluded at a time, so memory stays bounded.
        concluding: asyncio.Task[None] | None = None
        try:
            while not self.stopping:
                concluding = await self._next_batch(concluding)
        finally:
            if concluding is not None:
                await concluding

    async def _next_batch(self, concluding: asyncio.Task[None] | None) -> asyncio.Task[None] | None:
        """Claim and run one batch. Returns the task concluding the newest batch run (the
        one passed in when there was nothing to run)."""
        if self._drained:
            # Nothing else was queued when the last batch formed: unless a job arrived here
            # since (wake), wait like an idle worker instead of querying the queue right
            # away, while the last batch's results are recorded and answered.
            self._drained = False
            if not self.wake.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.options.poll_s)
            if self.stopping:
                return concluding
        self.wake.clear()
        try:
            first = await asyncio.to_thread(self._claim_next)
        except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable: retry
            log.exception("could not claim a job")
            first = None
        if first is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.options.poll_s)
            return concluding
        batch = [first]
        try:
            if self.options.batch_wait_s and (self._last_batch_size > 1
                                             or await asyncio.to_thread(self.store.queue_length)):
                # Requests are arriving together: give the rest of a burst a moment to
                # land so they share this loop. A lone sequential client never waits.
                await asyncio.sleep(self.options.batch_wait_s)
            batch += await asyncio.to_thread(self._claim_companions, first)
        except Exception:  # noqa: BLE001 - batching is an optimisation: run the first job alone
            log.exception("could not gather a batch for job %s", first.id)
        self._last_batch_size = len(batch)
        try:
            results, heartbeat = await self._run_batch(batch)
        except Exception:  # noqa: BLE001 - the worker must outlive any one batch
            # They stay claimed without a heartbeat: lease recovery queues them again.
            log.exception("worker failed around jobs %s", [j.id for j in batch])
            for job in batch:
                self.running.pop(job.id, None)
            return concluding
        if concluding is not None:
            await concluding
        return asyncio.create_task(self._conclude_batch(batch, results, heartbeat))

    # -- claiming -------------------------------------------------------------------------

    def _claim(self, w: Waiting, waiting: list[Waiting]) -> Job | None:
        """Claim one queued job; if it is ours, count its cost as served to its owner."""
        job = self.store.claim(w.id, self.options.worker_id)
        if job is not None:
            self.served = record_served(self.served, waiting, w)
        return job

    def _claim_next(self) -> Job | None:
        waiting = self.store.waiting()
        by_id = {w.id: w for w in waiting}
        for job_id in fair_order(waiting, self.served):
            job = self._claim(by_id[job_id], waiting)
            if job is not None:  # else another worker took it first: try the next in line
                return job
        return None

    def _claim_companions(self, first: Job) -> list[Job]:
        """Queued jobs that can share ``first``'s denoising loop, taken in fair order up to
        the images the engine fits in one loop. Batching changes no image: each has its own
        seeded generator."""
        p = first.params
        room = self.engine.max_batch_images(*p.output_size) - p.n
        if room <= 0:
            return []
        key = batch_key(p)
        waiting = self.store.waiting()
        by_id = {w.id: w for w in waiting}
        order = fair_order(waiting, self.served)[:64]
        companions = []
        for job_id, params in self.store.params_of(order).items():
            if params.n <= room and batch_key(params) == key:
                job = self._claim(by_id[job_id], waiting)
                if job is not None:
                    companions.append(job)
                    room -= params.n
                    if room <= 0:
                        break
        self._drained = len(order) < 64 and len(companions) == len(order)
        return companions

    # -- running --------------------------------------------------------------------------

    def _generate(self, jobs: list[Job], loop: asyncio.AbstractEventLoop) -> list[GenerationResult | SdserveError]:
        """Run ``jobs`` on the engine (in a worker thread); a result or an error per job."""
        return self.engine.generate_batch(
            [BatchItem(job.params, on_step=self._step_hook(job, loop), cancel=self._cancel_hook(job),
                       interrupt=self._interrupt_hook(job)) for job in jobs])

    def _step_hook(self, job: Job, loop: asyncio.AbstractEventLoop) -> Callable[[StepInfo], None]:
        every = self.options.preview_every

        def on_step(info: StepInfo) -> None:  # in the engine's thread
            job.step, job.total_steps = info.step, info.total
            ev: dict[str, Any] = {"event": "step", "step": info.step, "total": info.total}
            if every and info.preview is not None and (info.step % every == 0 or info.step == info.total):
                job.preview = info.preview()
                ev["preview"] = data_uri(job.preview)
            loop.call_soon_threadsafe(self.hub.publish, job.id, ev)

        return on_step

    def _cancel_hook(self, job: Job) -> Callable[[], bool]:
        return lambda: job.id in self.canceled or self.stopping

    def _interrupt_hook(self, job: Job) -> Callable[[], bool]:
        """Stop and keep the images (A1111's /interrupt; JobService.interrupt)."""
        return lambda: job.id in self.outcomes.interrupted

    async def _run_batch(self, jobs: list[Job]) -> tuple[list[GenerationResult | SdserveError], asyncio.Task[None]]:
        """Start ``jobs`` and run them on the engine: a result or an error per job, and the
        heartbeat that keeps their leases until they are concluded."""
        images = sum(job.params.n for job in jobs)
        for job in jobs:
            if job.attempts > 1:
                await asyncio.to_thread(drop_orphans, self.artifacts, job.id)
            job.step, job.total_steps, job.batch_images = 0, job.params.steps or 0, images
            self.running[job.id] = job
            if job.webhook and "start" in job.webhook_events:
                await asyncio.to_thread(self.recorder.record_start, job)
                self.recorder.wake_sender()
            self.hub.notify("started", job)
        heartbeat = asyncio.create_task(self._heartbeat(jobs))
        t0 = time.time()
        try:
            results = await asyncio.to_thread(self._generate, jobs, asyncio.get_running_loop())
        except Exception as e:  # noqa: BLE001 - a bug must fail the jobs, not kill the worker
            log.exception("jobs %s crashed", [j.id for j in jobs])
            results = [GenerationFailed(f"internal error: {type(e).__name__}") for _ in jobs]
        self.run_ema_s = 0.8 * self.run_ema_s + 0.2 * (time.time() - t0)
        return results, heartbeat

    async def _conclude_batch(self, jobs: list[Job], results: list[GenerationResult | SdserveError],
                              heartbeat: asyncio.Task[None]) -> None:
        """Conclude a batch's jobs side by side (their outputs encode in parallel threads)."""
        try:
            await asyncio.gather(*(self._conclude_one(job, result) for job, result in zip(jobs, results, strict=True)))
        finally:
            heartbeat.cancel()

    async def _conclude_one(self, job: Job, result: GenerationResult | SdserveError) -> None:
        try:
            await self._conclude(job, result)
        except Exception:  # noqa: BLE001 - one job's bad end must not keep the others from theirs
            log.exception("concluding job %s failed", job.id)
        finally:
            self.running.pop(job.id, None)

    async def _conclude(self, job: Job, result: GenerationResult | SdserveError) -> None:
        """Record one job's outcome: outputs stored, or why not."""
        canceled_by_owner = job.id in self.canceled
        if isinstance(result, Canceled) and not canceled_by_owner:
            # Stopped by shutdown, not by its owner: it runs again after the restart.
            await asyncio.to_thread(self.store.requeue, job.id, job.attempts)
            log.info("job %s re-queued at shutdown", job.id)
            return
        if isinstance(result, Interrupted) and not canceled_by_owner:
            if job.attempts < self.options.max_attempts:
                # The replica running it died: the attempt is spent, the job runs again.
                await asyncio.to_thread(self.store.requeue, job.id, job.attempts)
                log.warning("job %s interrupted (attempt %d of %d): %s; queued again", job.id, job.attempts,
                            self.options.max_attempts, result.message)
                self.wake.set()
                return
            result = GenerationFailed(f"interrupted {job.attempts} times, giving up: {result.message}")
        if canceled_by_owner:
            # A canceled job in a batch that went on still got images: they are not delivered.
            job.status, job.error = "canceled", result if isinstance(result, Canceled) else Canceled("job canceled")
        elif isinstance(result, SdserveError):
            job.status, job.error = "failed", result
        else:
            try:
                job.outputs = await asyncio.to_thread(save_outputs, self.artifacts, job.id, result,
                                                      self.options.retention_s, self.options.sampler_label)
                job.status, job.error, job.device, job.dtype = "succeeded", None, result.device, result.dtype
                job.warnings = list(result.warnings)
                # The prompt that ran (the enhancer's), recorded with the one sent.
                job.params = job.params.model_copy(update={"prompt": result.params.prompt,
                                                           "original_prompt": result.params.original_prompt})
            except Exception as e:  # noqa: BLE001 - storage failure fails this job only
                log.exception("storing the outputs of job %s failed", job.id)
                job.status, job.error = "failed", GenerationFailed(f"could not store the outputs: {storage_error(e)}")
        job.finished_at = time.time()
        if await asyncio.to_thread(self.recorder.finish, job, "running", job.attempts):
            self.outcomes.announce(job)
        else:
            log.warning("job %s attempt %d was superseded; its result is dropped", job.id, job.attempts)
            for o in job.outputs:
                with contextlib.suppress(Exception):
                    self.artifacts.delete(o.key)

    async def _heartbeat(self, jobs: list[Job]) -> None:
        # A shared database also carries the progress, for the servers not running the job.
        shared = not self.store.db.is_sqlite
        every = min(self.options.heartbeat_s, self.options.progress_s) if shared else self.options.heartbeat_s
        stored: dict[str, bytes | None] = {}
        while True:
            await asyncio.sleep(every)
            for job in jobs:
                progress = (job.step, job.total_steps) if shared else None
                preview = job.preview if shared and job.preview is not stored.get(job.id) else None
                state = await asyncio.to_thread(self.store.heartbeat, job.id, job.attempts, progress, preview)
                stored[job.id] = preview or stored.get(job.id)
                if state is None or state:
                    # Canceled from another process, or the lease was lost: stop at the next step.
                    self.canceled.add(job.id)
