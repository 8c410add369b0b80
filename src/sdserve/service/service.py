"""JobService: every generation is a job in a durable store, run by a worker on the engine.

This is the one face of the service layer the API, the CLI and the Ray deployment use:
lifecycle (``start``/``stop``), ``submit``/``get``/``list``/``cancel``/``wait``/``events``,
``run`` for the synchronous dialects, and outputs by link. It wires together the pieces that
do the work: the batch worker (``worker.py``), the event hub (``events.py``), webhook
recording (``recording.py``) and lease recovery with output expiry (``housekeeping.py``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from ..engine.catalog import Catalog
from ..engine.cost import job_cost
from ..engine.params import GenerationParams
from ..errors import BadInput, Canceled, NotFound
from .artifacts import ArtifactStore, MemoryArtifacts
from .db import Database
from .events import EventHub, follow
from .fetch import Fetcher
from .housekeeping import Housekeeping
from .jobs import WEBHOOK_EVENTS, Job, Output, new_job_id
from .keys import KeyStore
from .limits import check_limits
from .options import GenerationEngine, Observer, ServiceOptions, WebhookFormat
from .outcomes import OUTPUTS_PATH, Outcomes, Waiters
from .ratelimit import RateLimiter
from .safety import apply_safety_policy
from .recording import Recorder
from .store import JobStore
from .usage import all_usage, owner_usage
from .webhooks import WebhookSender, signing_secret
from .worker import BatchWorker

__all__ = ["JobService", "GenerationEngine", "ServiceOptions", "OUTPUTS_PATH"]

log = logging.getLogger(__name__)

class JobService:
    """Durable queue, worker, outputs, webhooks and keys over one engine."""

    def __init__(self, engine: GenerationEngine, max_queue: int = 256, *, db: Database | None = None,
                 artifacts: ArtifactStore | None = None, fetcher: Fetcher | None = None,
                 options: ServiceOptions | None = None) -> None:
        self.max_queue = max_queue
        self.engine = engine
        self.options = options = options or ServiceOptions()
        # Without a database the service keeps everything in memory (embedding, tests of
        # other layers); the composition root always passes one (under the data dir, or database_url).
        self.db = db or Database.memory()
        self.store = JobStore(self.db)
        self.keys = KeyStore(self.db)
        self.limiter = RateLimiter(self.db)
        self.artifacts = artifacts = artifacts or MemoryArtifacts()
        self.fetcher = fetcher or Fetcher()
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._hub = EventHub()
        # Built in order, each from what it needs: nothing calls back into this service.
        sender = WebhookSender(self.db, self.fetcher, options.webhook)
        self._outcomes = Outcomes(self._hub, sender, artifacts, options)
        self._recorder = Recorder(self.store, sender, self._outcomes)
        self._worker = BatchWorker(engine, self.store, artifacts, options, self._hub, self._recorder, self._outcomes)
        self._housekeeping = Housekeeping(self.store, artifacts, options, self._worker.running, self._recorder,
                                          self._outcomes)

    @property
    def catalog(self) -> Catalog:
        return self.engine.catalog

    @property
    def webhooks(self) -> WebhookSender:
        """The webhook sender (it sends once the service started)."""
        return self._recorder.sender

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._worker.reset()
        # Futures bind to the loop that made them; a restarted service may run in a new one.
        self._outcomes.waiters.clear()
        for job in await asyncio.to_thread(self._housekeeping.recover, True):
            self._outcomes.announce(job)
        sender = self.webhooks
        sender.reset(await asyncio.to_thread(signing_secret, self.store))
        self._workers = [asyncio.create_task(self._worker.run(), name=f"sdserve-worker-{i}")
                         for i in range(max(1, self.options.workers))]
        self._tasks = [*self._workers,
                       asyncio.create_task(sender.run(self.options.poll_s), name="sdserve-webhooks"),
                       asyncio.create_task(self._housekeeping.run(), name="sdserve-housekeeping")]

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop taking jobs; a running job stops at its next step and goes back in line."""
        self._worker.stopping = True
        self._worker.wake.set()
        if self._workers:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(*self._workers)), grace_s)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks, self._workers = [], []

    # -- API ------------------------------------------------------------------------------

    def submit(self, params: GenerationParams, owner: str | None = None, *, priority: int = 0,
               webhook: str | None = None, webhook_events: tuple[str, ...] | list[str] = ("completed",),
               webhook_format: str | None = None, reply: dict[str, Any] | None = None) -> Job:
        """Validate, resolve defaults and seeds, charge credits and queue durably.

        ``reply`` is kept with the job for the dialect that answers it later (JSON-able);
        ``webhook_format`` names a body format registered with ``register_webhook_format``.
        Raises BadInput/UnknownModel (the request), InsufficientCredits or QueueFull.
        """
        if webhook_format is not None and webhook_format not in self._recorder.formats:
            raise ValueError(f"webhook format {webhook_format!r} is not registered")
        resolved, cost = self.check(params, owner)
        events = tuple(dict.fromkeys(webhook_events))
        bad = [e for e in events if e not in WEBHOOK_EVENTS]
        if bad:
            raise BadInput("webhook_events", f"{bad[0]!r} is not one of {', '.join(WEBHOOK_EVENTS)}")
        if webhook is not None:
            self.fetcher.precheck(webhook, "webhook")
        job = Job(id=new_job_id(), params=resolved, owner=owner, priority=priority, request=params.summary(),
                  cost=cost, webhook=webhook, webhook_events=events, webhook_format=webhook_format,
                  reply=dict(reply or {}))
        self.store.add(job, self.max_queue, retry_after=max(1.0, self._worker.run_ema_s))
        self._worker.wake.set()
        self._hub.notify("submitted", job)
        return job

    def check(self, params: GenerationParams, owner: str | None = None,
              jobs: int = 1) -> tuple[GenerationParams, float]:
        """Resolve ``params`` (``prepare``), price them, and check the request (``jobs`` jobs
        like it, e.g. A1111's ``n_iter``) against the server's and the owner's key's
        per-request limits. Returns the resolved parameters and the cost of one job; raises
        BadInput naming the field and the limit. Every submit passes here, so every dialect
        refuses the same way, before anything is queued."""
        params = apply_safety_policy(params, self.options.safety_policy)
        resolved = self.engine.prepare(params, self.options.max_image_pixels)
        cost = job_cost(resolved, self.catalog.get(resolved.model).arch)
        limits = self.options.limits
        key = self.keys.get(owner) if owner is not None else None  # static keys and open servers: none
        if key is not None:
            limits = limits.tighter(key.limits)
        check_limits(resolved, cost, limits, jobs)
        return resolved, cost

    def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job, with live progress if it is running here. Another key's job answers
        exactly like a missing one, so ids cannot be probed."""
        job = self.store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise NotFound(f"no job {job_id}")
        cur = self._worker.running.get(job.id)
        if cur is not None and job.status == "running":
            job.step, job.total_steps, job.preview = cur.step, cur.total_steps, cur.preview
        return job

    def list(self, owner: str | None = None, limit: int = 50) -> list[Job]:
        """The caller's newest jobs (everyone's on an open server)."""
        return self.store.newest(owner, limit, all_owners=owner is None)

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel: a queued job ends now; a running one stops at its next step."""
        job = self.get(job_id, owner)
        if job.status == "queued":
            job.status, job.error, job.finished_at = "canceled", Canceled("canceled before it started"), time.time()
            if self._recorder.finish(job, "queued"):
                self._outcomes.announce(job)
                return job
            job = self.get(job_id, owner)  # it started meanwhile
        if job.status == "running":
            self._outcomes.canceled.add(job.id)
            self.store.request_cancel(job.id)  # reaches the worker's heartbeat if it runs elsewhere
            job.cancel_requested = True
        return job

    def interrupt(self, job_id: str, owner: str | None = None) -> Job:
        """Stop a running job at its next step and keep what it made: its images are decoded
        from where the loop stands (A1111's /interrupt). A queued job is canceled. In a
        batch with jobs that go on, it finishes with them."""
        job = self.get(job_id, owner)
        if job.status == "queued":
            return self.cancel(job_id, owner)
        if job.status == "running":
            self._outcomes.interrupted.add(job.id)
        return job

    async def wait(self, job: Job, timeout: float | None = None) -> Job:
        """Wait until ``job`` ends (raises TimeoutError after ``timeout``); updates ``job`` in place."""
        fresh = await asyncio.wait_for(self._until_done(job.id, check_first=True), timeout)
        vars(job).update(vars(fresh))
        return job

    async def _until_done(self, job_id: str, *, check_first: bool) -> Job:
        """The ended job: handed over by this process's worker the moment it is recorded,
        or read from the store, which is polled for jobs another process runs. Without
        ``check_first`` the first read waits a poll period (the caller just queued it)."""
        ended = self._outcomes.waiters
        waiters = ended.get(job_id)
        if waiters is None:
            waiters = ended[job_id] = Waiters(asyncio.get_running_loop().create_future())
        waiters.count += 1
        try:
            checked = -float("inf") if check_first else time.monotonic()
            while True:
                if time.monotonic() - checked >= self.options.poll_s:
                    checked = time.monotonic()
                    fresh = self.store.get(job_id)
                    if fresh is None:
                        raise NotFound(f"no job {job_id}")
                    if fresh.done:
                        return fresh
                done, _ = await asyncio.wait({waiters.ended}, timeout=self.options.poll_s - (time.monotonic() - checked))
                if done:
                    return waiters.ended.result()
        finally:
            waiters.count -= 1
            if not waiters.count and ended.get(job_id) is waiters:
                del ended[job_id]

    async def run(
        self,
        params: GenerationParams,
        owner: str | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> Job:
        """Submit and wait; cancel if the client goes away. Raises the job's error if it
        failed. The returned job's outputs carry their bytes (``Output.data``)."""
        job = self.submit(params, owner)
        until_done = asyncio.ensure_future(self._until_done(job.id, check_first=False))
        try:
            while True:
                done, _ = await asyncio.wait({until_done}, timeout=0.25)
                if done:
                    break
                if disconnected is not None and not job.cancel_requested and await disconnected():
                    log.info("client of job %s went away; canceling it", job.id)
                    job = self.cancel(job.id)
        finally:
            until_done.cancel()
        job = until_done.result()
        if job.error is not None:
            raise job.error
        if any(o.data is None for o in job.outputs):  # ended in another process: read the store
            job.outputs = [replace(o, data=await asyncio.to_thread(self.artifacts.get, o.key)) for o in job.outputs]
        return job

    async def caption(self, image: bytes, field: str = "image") -> str:
        """A caption of an encoded image, from the engine's captioner (off the event loop;
        it waits for the engine like a batch does)."""
        return await asyncio.to_thread(self.engine.caption, image, field)

    def usage(self, owner: str | None) -> dict[str, Any]:
        """What ``owner`` has spent (images, compute units), its credits left and its limits."""
        return owner_usage(self.db, self.keys, owner, self.options.limits)

    def usage_all(self) -> builtins.list[dict[str, Any]]:
        """Every key's usage (the operator's view)."""
        return all_usage(self.db, self.keys, self.options.limits)

    def running(self) -> Job | None:
        """The job started last (one of the batch on the engine now; the previous batch may
        still be storing its outputs), if any; A1111's /progress reports it."""
        return next(reversed(self._worker.running.values()), None)

    def running_jobs(self) -> builtins.list[Job]:  # ``list`` here is the method above
        """Every job started here and not yet recorded as ended."""
        return list(self._worker.running.values())

    def queue_length(self) -> int:
        return self.store.queue_length()

    def queue_position(self, job_id: str) -> int | None:
        """1-based place in line (1 = starts next), by the same policy the worker follows."""
        order = self._worker.line()
        return order.index(job_id) + 1 if job_id in order else None

    def output_url(self, output: Output, base_url: str | None = None) -> str:
        """A presigned link where the artifact store gives one, else this server's unguessable one."""
        return self._outcomes.output_url(output, base_url)

    async def output_bytes(self, token: str) -> tuple[Output, bytes]:
        """An output by its URL token; NotFound once it expired or was removed."""
        found = self.store.output(token)
        if found is None:
            raise NotFound("no such output")
        _, out = found
        if out.removed or (out.expires_at is not None and out.expires_at <= time.time()):
            raise NotFound("this output has expired")
        return out, await asyncio.to_thread(self.artifacts.get, out.key)

    def cleanup_expired(self) -> int:
        """Delete outputs past their retention; returns how many."""
        return self._housekeeping.cleanup_expired()

    def register_webhook_format(self, name: str, body: WebhookFormat) -> None:
        """Let jobs submitted with ``webhook_format=name`` send ``body(job)`` as their
        completion webhook, written in the job's final transaction like any other."""
        self._recorder.formats[name] = body

    def observe(self, observer: Observer) -> None:
        """Call ``observer(kind, job)`` on "submitted", "started" and "finished" (metrics)."""
        self._hub.observe(observer)

    def health(self) -> dict[str, Any]:
        worker_ok = bool(self._workers) and not any(w.done() for w in self._workers)
        db_ok = self.db.ping()
        return {"ready": worker_ok and db_ok, "database": "ok" if db_ok else "unreachable",
                "worker": "running" if worker_ok else "stopped"}

    def events(self, job_id: str, owner: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Progress of one job as events: ``queued`` (with position, when it changes),
        ``started``, ``step`` (step, total, sometimes a preview), then the terminal state
        (``succeeded``, ``failed`` or ``canceled``) with the job. Ends after that."""
        return follow(self._hub, self, self._worker.running, job_id, owner, self.options.poll_s)
