"""JobService: every generation is a job in a durable store, run by a worker on the engine.

The worker is an asyncio task that claims the next job from the database (round-robin
between owners) together with queued jobs that can share its denoising loop, runs the
blocking loop in a thread so the event loop keeps answering HTTP, writes the outputs to
the artifact store and records each result. A
heartbeat renews the running job's lease; a job whose lease lapses (its process died) is
re-queued, up to ``max_attempts`` starts. Synchronous dialects call ``run``; the native
API uses ``submit``/``get``/``cancel``/``events``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..engine.catalog import Catalog
from ..engine.params import BatchItem, GenerationParams, GenerationResult, StepInfo, batch_key
from ..errors import BadInput, Canceled, GenerationFailed, Interrupted, NotFound, SdserveError
from .artifacts import ArtifactStore, MemoryArtifacts
from .db import Database
from .fairness import fair_order
from .fetch import Fetcher
from .jobs import WEBHOOK_EVENTS, Job, Output, job_view, new_job_id
from .keys import KeyStore
from .outputs import encode_outputs
from .ratelimit import RateLimiter
from .store import JobStore
from .tables import webhook_deliveries
from .webhooks import WebhookPolicy, WebhookSender, delivery_row, signing_secret

__all__ = ["JobService", "GenerationEngine", "ServiceOptions", "OUTPUTS_PATH"]

log = logging.getLogger(__name__)

# Where the API serves an output by its token; the service builds links with it.
OUTPUTS_PATH = "/v1/outputs/"
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _storage_error(e: Exception) -> str:
    """What the caller may read about a storage failure: the OS's words (no paths) or the
    kind of S3 failure (no endpoints or keys)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()  # e.g. "no space left on device"
    name = type(e).__name__
    if "Connect" in name or "Endpoint" in name:
        return f"the output store could not be reached ({name})"
    response = getattr(e, "response", None)  # botocore's ClientError: the S3 error code
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return f"the output store refused it ({code})" if code else name


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

    def generate_batch(self, requests: Sequence[BatchItem]) -> list[GenerationResult | SdserveError]: ...

    def max_batch_images(self, width: int, height: int) -> int: ...


@dataclass(frozen=True)
class ServiceOptions:
    """How the service runs; the CLI fills it from Settings."""

    max_attempts: int = 3
    preview_every: int = 5
    retention_s: float | None = 7 * 24 * 3600.0
    url_ttl_s: int = 3600
    # Base of output links where no request supplies one (webhook payloads).
    public_url: str = "http://127.0.0.1:8000"
    poll_s: float = 1.0
    heartbeat_s: float = 5.0
    lease_s: float = 30.0
    cleanup_every_s: float = 300.0
    # How long a claimed job waits for compatible company while requests arrive concurrently.
    batch_wait_s: float = 0.005
    webhook: WebhookPolicy = field(default_factory=WebhookPolicy)
    # Batches this process runs at once. One suits a local engine (it runs one loop at a
    # time); an engine that hands batches to remote replicas (Ray) keeps several in flight.
    workers: int = 1
    # This server's name on the jobs it claims (Ray: the API replica's id).
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # How often a running job's progress reaches a database other servers read (not SQLite).
    progress_s: float = 1.0


Observer = Callable[[str, Job], None]
# A dialect's completion-webhook body for a finished job (see register_webhook_format).
WebhookFormat = Callable[[Job], dict[str, Any]]


class JobService:
    """Durable queue, worker, outputs, webhooks and keys over one engine."""

    def __init__(self, engine: GenerationEngine, max_queue: int = 256, *, db: Database | None = None,
                 artifacts: ArtifactStore | None = None, fetcher: Fetcher | None = None,
                 options: ServiceOptions | None = None) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.options = options or ServiceOptions()
        # Without a database the service keeps everything in memory (embedding, tests of
        # other layers); the CLI always passes one under the data dir.
        self.db = db or Database.memory()
        self.store = JobStore(self.db)
        self.keys = KeyStore(self.db)
        self.limiter = RateLimiter()
        self.artifacts: ArtifactStore = artifacts or MemoryArtifacts()
        self.fetcher = fetcher or Fetcher()
        self.webhooks: WebhookSender | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._running: dict[str, Job] = {}
        self._cancel: set[str] = set()
        self._served: dict[str | None, int] = {}
        self._serve_order = itertools.count()
        # Per job someone waits on: [future of the ended job, number of waiters].
        self._ended: dict[str, list[Any]] = {}
        self._subs: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._observers: list[Observer] = []
        self._run_ema_s = 5.0
        self._last_batch_size = 1
        self._webhook_formats: dict[str, WebhookFormat] = {}

    @property
    def catalog(self) -> Catalog:
        return self.engine.catalog

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        # Events bind to the loop that first waits on them; a restarted service may run in a new one.
        self._wake, self._ended = asyncio.Event(), {}
        for job in await asyncio.to_thread(self._recover, True):
            self._announce(job)
        secret = await asyncio.to_thread(signing_secret, self.store)
        self.webhooks = WebhookSender(self.db, self.fetcher, secret, self.options.webhook)
        self._workers = [asyncio.create_task(self._work(), name=f"sdserve-worker-{i}")
                         for i in range(max(1, self.options.workers))]
        self._tasks = [*self._workers,
                       asyncio.create_task(self.webhooks.run(self.options.poll_s), name="sdserve-webhooks"),
                       asyncio.create_task(self._housekeeping(), name="sdserve-housekeeping")]

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop taking jobs; a running job stops at its next step and goes back in line."""
        self._stopping = True
        self._wake.set()
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
        if webhook_format is not None and webhook_format not in self._webhook_formats:
            raise ValueError(f"webhook format {webhook_format!r} is not registered")
        resolved = self.engine.prepare(params)
        events = tuple(dict.fromkeys(webhook_events))
        bad = [e for e in events if e not in WEBHOOK_EVENTS]
        if bad:
            raise BadInput("webhook_events", f"{bad[0]!r} is not one of {', '.join(WEBHOOK_EVENTS)}")
        if webhook is not None:
            self.fetcher.precheck(webhook, "webhook")
        job = Job(id=new_job_id(), params=resolved, owner=owner, priority=priority, request=params.summary(),
                  webhook=webhook, webhook_events=events, webhook_format=webhook_format, reply=dict(reply or {}))
        self.store.add(job, self.max_queue, retry_after=max(1.0, self._run_ema_s))
        self._wake.set()
        self._notify("submitted", job)
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job, with live progress if it is running here. Another key's job answers
        exactly like a missing one, so ids cannot be probed."""
        job = self.store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise NotFound(f"no job {job_id}")
        cur = self._running.get(job.id)
        if cur is not None and job.status == "running":
            job.step, job.total_steps, job.preview = cur.step, cur.total_steps, cur.preview
        return job

    def list(self, owner: str | None = None, limit: int = 50) -> list[Job]:
        """The caller's newest jobs (everyone's on an open server)."""
        return self.store.list(owner, limit, all_owners=owner is None)

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel: a queued job ends now; a running one stops at its next step."""
        job = self.get(job_id, owner)
        if job.status == "queued":
            job.status, job.error, job.finished_at = "canceled", Canceled("canceled before it started"), time.time()
            if self._record_terminal(job, "queued"):
                self._announce(job)
                return job
            job = self.get(job_id, owner)  # it started meanwhile
        if job.status == "running":
            self._cancel.add(job.id)
            self.store.request_cancel(job.id)  # reaches the worker's heartbeat if it runs elsewhere
            job.cancel_requested = True
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
        ended = self._ended.get(job_id)
        if ended is None:
            ended = self._ended[job_id] = [asyncio.get_running_loop().create_future(), 0]
        ended[1] += 1
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
                done, _ = await asyncio.wait({ended[0]}, timeout=self.options.poll_s - (time.monotonic() - checked))
                if done:
                    return ended[0].result()  # type: ignore[no-any-return]
        finally:
            ended[1] -= 1
            if not ended[1] and self._ended.get(job_id) is ended:
                del self._ended[job_id]

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

    def running(self) -> Job | None:
        """The job the worker is running now (the first of its batch), if any; A1111's
        /progress reports it."""
        return next(iter(self._running.values()), None)

    def running_jobs(self) -> list[Job]:
        """Every job of the batch running now."""
        return list(self._running.values())

    def queue_length(self) -> int:
        return self.store.queue_length()

    def queue_position(self, job_id: str) -> int | None:
        """1-based place in line (1 = starts next), by the same policy the worker follows."""
        order = fair_order(self.store.waiting(), self._served)
        return order.index(job_id) + 1 if job_id in order else None

    def _claim_next(self) -> Job | None:
        for job_id in fair_order(self.store.waiting(), self._served):
            job = self.store.claim(job_id, self.options.worker_id)
            if job is not None:  # else another worker took it first: try the next in line
                return job
        return None

    def output_url(self, output: Output, base_url: str | None = None) -> str:
        """A presigned link where the artifact store gives one, else this server's unguessable one."""
        direct = self.artifacts.presigned_url(output.key, self.options.url_ttl_s)
        if direct is not None:
            return direct
        return f"{(base_url or self.options.public_url).rstrip('/')}{OUTPUTS_PATH}{output.token}"

    async def output_bytes(self, token: str) -> tuple[Output, bytes]:
        """An output by its URL token; NotFound once it expired or was removed."""
        found = self.store.output(token)
        if found is None:
            raise NotFound("no such output")
        _, out = found
        if out.removed or (out.expires_at is not None and out.expires_at <= time.time()):
            raise NotFound("this output has expired")
        return out, await asyncio.to_thread(self.artifacts.get, out.key)

    def register_webhook_format(self, name: str, body: WebhookFormat) -> None:
        """Let jobs submitted with ``webhook_format=name`` send ``body(job)`` as their
        completion webhook, written in the job's final transaction like any other."""
        self._webhook_formats[name] = body

    def observe(self, observer: Observer) -> None:
        """Call ``observer(kind, job)`` on "submitted", "started" and "finished" (metrics)."""
        self._observers.append(observer)

    def health(self) -> dict[str, Any]:
        worker_ok = bool(self._workers) and not any(w.done() for w in self._workers)
        db_ok = self.db.ping()
        return {"ready": worker_ok and db_ok, "database": "ok" if db_ok else "unreachable",
                "worker": "running" if worker_ok else "stopped"}

    async def events(self, job_id: str, owner: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Progress of one job as events: ``queued`` (with position, when it changes),
        ``started``, ``step`` (step, total, sometimes a preview), then the terminal state
        (``succeeded``, ``failed`` or ``canceled``) with the job. Ends after that."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subs.setdefault(job_id, set()).add(queue)  # before reading state: nothing is missed
        try:
            job = self.get(job_id, owner)
            last_pos: int | None = None
            started_attempt = 0
            last_step = 0
            last_preview: bytes | None = None
            while True:
                if job.done:
                    yield {"event": job.status, "job": job}
                    return
                if job.status == "queued":
                    pos = self.queue_position(job.id)
                    if pos is not None and pos != last_pos:
                        last_pos = pos
                        yield {"event": "queued", "position": pos}
                elif job.attempts != started_attempt:
                    started_attempt, last_step = job.attempts, job.step
                    yield {"event": "started", "attempt": job.attempts, "step": job.step, "total": job.total_steps}
                elif job.step > last_step and job.id not in self._running:
                    # Another server runs it: its progress as that server last stored it.
                    last_step = job.step
                    ev = {"event": "step", "step": job.step, "total": job.total_steps}
                    if job.preview is not None and job.preview != last_preview:
                        last_preview = job.preview
                        ev["preview"] = _data_uri(job.preview)
                    yield ev
                try:
                    ev = await asyncio.wait_for(queue.get(), self.options.poll_s)
                except asyncio.TimeoutError:
                    job = self.get(job_id)
                    continue
                if ev["event"] == "step" and started_attempt:
                    if ev["step"] > last_step:
                        last_step = ev["step"]
                        yield ev
                    continue
                job = self.get(job_id)
        finally:
            subs = self._subs.get(job_id)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    self._subs.pop(job_id, None)

    # -- worker ---------------------------------------------------------------------------

    async def _work(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                first = await asyncio.to_thread(self._claim_next)
            except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable: retry
                log.exception("could not claim a job")
                first = None
            if first is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.options.poll_s)
                continue
            self._served[first.owner] = next(self._serve_order)
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
            for job in batch[1:]:
                self._served[job.owner] = next(self._serve_order)
            self._last_batch_size = len(batch)
            try:
                await self._run_batch(batch)
            except Exception:  # noqa: BLE001 - the worker must outlive any one batch
                log.exception("worker failed around jobs %s", [j.id for j in batch])

    def _claim_companions(self, first: Job) -> list[Job]:
        """Queued jobs that can share ``first``'s denoising loop, taken in fair order up to
        the images the engine fits in one loop. Batching changes no image: each has its own
        seeded generator."""
        p = first.params
        room = self.engine.max_batch_images(p.width or 0, p.height or 0) - p.n
        if room <= 0:
            return []
        key = batch_key(p)
        order = fair_order(self.store.waiting(), self._served)[:64]
        companions = []
        for job_id, params in self.store.params_of(order).items():
            if params.n <= room and batch_key(params) == key:
                job = self.store.claim(job_id, self.options.worker_id)
                if job is not None:
                    companions.append(job)
                    room -= params.n
                    if room <= 0:
                        break
        return companions

    def _generate(self, jobs: list[Job], loop: asyncio.AbstractEventLoop) -> list[GenerationResult | SdserveError]:
        """Run ``jobs`` on the engine (in a worker thread); a result or an error per job."""
        hooks = [(job.params, self._step_hook(job, loop), self._cancel_hook(job)) for job in jobs]
        return self.engine.generate_batch(
            [BatchItem(params, on_step=on_step, cancel=cancel) for params, on_step, cancel in hooks])

    def _step_hook(self, job: Job, loop: asyncio.AbstractEventLoop) -> Callable[[StepInfo], None]:
        every = self.options.preview_every

        def on_step(info: StepInfo) -> None:  # in the engine's thread
            job.step, job.total_steps = info.step, info.total
            ev: dict[str, Any] = {"event": "step", "step": info.step, "total": info.total}
            if every and info.preview is not None and (info.step % every == 0 or info.step == info.total):
                job.preview = info.preview()
                ev["preview"] = _data_uri(job.preview)
            loop.call_soon_threadsafe(self._publish, job.id, ev)

        return on_step

    def _cancel_hook(self, job: Job) -> Callable[[], bool]:
        return lambda: job.id in self._cancel or self._stopping

    async def _run_batch(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.attempts > 1:
                await asyncio.to_thread(self._drop_orphans, job)
            job.step, job.total_steps = 0, job.params.steps or 0
            self._running[job.id] = job
            if job.webhook and "start" in job.webhook_events:
                await asyncio.to_thread(self._send_start_webhook, job)
            self._notify("started", job)
        heartbeat = asyncio.create_task(self._heartbeat(jobs))
        t0 = time.time()
        try:
            results = await asyncio.to_thread(self._generate, jobs, asyncio.get_running_loop())
        except Exception as e:  # noqa: BLE001 - a bug must fail the jobs, not kill the worker
            log.exception("jobs %s crashed", [j.id for j in jobs])
            results = [GenerationFailed(f"internal error: {type(e).__name__}") for _ in jobs]
        finally:
            heartbeat.cancel()
        self._run_ema_s = 0.8 * self._run_ema_s + 0.2 * (time.time() - t0)
        for job, result in zip(jobs, results, strict=True):
            try:
                await self._conclude(job, result)
            finally:
                self._running.pop(job.id, None)

    async def _conclude(self, job: Job, result: GenerationResult | SdserveError) -> None:
        """Record one job's outcome: outputs stored, or why not."""
        canceled_by_owner = job.id in self._cancel
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
                self._wake.set()
                return
            result = GenerationFailed(f"interrupted {job.attempts} times, giving up: {result.message}")
        if canceled_by_owner:
            # A canceled job in a batch that went on still got images: they are not delivered.
            job.status, job.error = "canceled", result if isinstance(result, Canceled) else Canceled("job canceled")
        elif isinstance(result, SdserveError):
            job.status, job.error = "failed", result
        else:
            try:
                job.outputs = await asyncio.to_thread(self._save_outputs, job, result)
                job.status, job.error, job.device, job.dtype = "succeeded", None, result.device, result.dtype
                job.warnings = list(result.warnings)
            except Exception as e:  # noqa: BLE001 - storage failure fails this job only
                log.exception("storing the outputs of job %s failed", job.id)
                job.status, job.error = "failed", GenerationFailed(f"could not store the outputs: {_storage_error(e)}")
        job.finished_at = time.time()
        if await asyncio.to_thread(self._record_terminal, job, "running", job.attempts):
            self._announce(job)
        else:
            log.warning("job %s attempt %d was superseded; its result is dropped", job.id, job.attempts)
            for o in job.outputs:
                with contextlib.suppress(Exception):
                    self.artifacts.delete(o.key)

    def _save_outputs(self, job: Job, result: GenerationResult) -> list[Output]:
        now = time.time()
        expires = now + self.options.retention_s if self.options.retention_s else None
        outs = encode_outputs(result)
        stored: list[str] = []
        try:
            for o in outs:
                o.token = secrets.token_urlsafe(24)
                o.key = f"{job.id}/{o.token}.{_EXT.get(o.content_type, 'bin')}"
                o.size = len(o.data or b"")
                o.expires_at = expires
                self.artifacts.put(o.key, o.data or b"", o.content_type)
                stored.append(o.key)
        except Exception:
            for key in stored:  # a failed job keeps no half of its outputs (the disk may be full)
                with contextlib.suppress(Exception):
                    self.artifacts.delete(key)
            raise
        return outs

    def _drop_orphans(self, job: Job) -> None:
        """Before a job runs again: outputs an earlier attempt stored but never recorded (the
        process died between storing and recording them) belong to no result; delete them."""
        try:
            n = self.artifacts.delete_prefix(f"{job.id}/")
        except Exception:  # noqa: BLE001 - leftovers cost space, not correctness
            log.exception("could not remove the leftovers of job %s", job.id)
            return
        if n:
            log.info("removed %d unrecorded output(s) of job %s's interrupted attempt", n, job.id)

    def _record_terminal(self, job: Job, expect: str, attempt: int | None = None) -> bool:
        """Store ``job``'s terminal state with its completion webhook, atomically."""
        deliveries = []
        if job.webhook and "completed" in job.webhook_events:
            now = job.finished_at or time.time()
            body = self._webhook_body(job)
            if body is not None:
                deliveries.append(delivery_row(job.id, job.webhook, job.status, body, now, envelope=False))
            else:
                deliveries.append(delivery_row(job.id, job.webhook, job.status, job_view(job, self.output_url), now))
        return self.store.finish(job, expect, attempt, deliveries)

    def _webhook_body(self, job: Job) -> dict[str, Any] | None:
        """The job's dialect-formatted webhook body; None means the standard one (also when
        the format is unknown here or fails: the webhook still goes out)."""
        if not job.webhook_format:
            return None
        fmt = self._webhook_formats.get(job.webhook_format)
        if fmt is None:
            log.error("webhook format %r of job %s is not registered; sending the standard body",
                      job.webhook_format, job.id)
            return None
        try:
            return fmt(job)
        except Exception:  # noqa: BLE001 - a formatting bug must not keep the job from finishing
            log.exception("webhook format %r failed for job %s; sending the standard body", job.webhook_format,
                          job.id)
            return None

    def _send_start_webhook(self, job: Job) -> None:
        row = delivery_row(job.id, job.webhook or "", "started", job_view(job, self.output_url), time.time())
        with self.db.tx() as conn:
            conn.execute(webhook_deliveries.insert().values(**row))
        if self.webhooks is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.webhooks.wake.set)

    def _announce(self, job: Job) -> None:
        """Tell this process a job ended: waiters, event streams, observers, webhooks."""
        self._cancel.discard(job.id)
        self._notify("finished", job)
        ended = self._ended.pop(job.id, None)
        if ended is not None and not ended[0].done():
            ended[0].set_result(job)  # the waiters get this very object, outputs' bytes included
        if job.webhook and self.webhooks is not None:
            self.webhooks.wake.set()

    def _notify(self, kind: str, job: Job) -> None:
        for obs in self._observers:
            try:
                obs(kind, job)
            except Exception:  # noqa: BLE001 - an observer's bug must not break the job
                log.exception("job observer failed on %s", kind)
        self._publish(job.id, {"event": kind})

    def _publish(self, job_id: str, ev: dict[str, Any]) -> None:
        for q in self._subs.get(job_id, ()):
            q.put_nowait(ev)

    async def _heartbeat(self, jobs: list[Job]) -> None:
        # A shared database also carries the progress, for the servers not running the job.
        shared = not self.db.is_sqlite
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
                    self._cancel.add(job.id)

    # -- housekeeping ---------------------------------------------------------------------

    def _recover(self, startup: bool = False) -> list[Job]:
        """Re-queue running jobs whose worker died; fail those out of attempts. Returns the
        failed ones (to announce on the event loop)."""
        now = time.time()
        # SQLite is the embedded single-server database: at start, every running job is an
        # orphan of this server's previous life. Shared databases wait for the lease to lapse.
        cutoff = now if (startup and self.db.is_sqlite) else now - self.options.lease_s
        failed = []
        for job in self.store.stale_running(cutoff):
            if job.id in self._running:
                continue
            if job.attempts >= self.options.max_attempts:
                job.status, job.finished_at = "failed", now
                job.error = GenerationFailed(f"the server stopped while running this job {job.attempts} times; "
                                             "giving up")
                if self._record_terminal(job, "running", job.attempts):
                    failed.append(job)
            elif self.store.requeue(job.id, job.attempts):
                log.warning("job %s was interrupted (attempt %d of %d); queued again", job.id, job.attempts,
                            self.options.max_attempts)
        return failed

    def cleanup_expired(self) -> int:
        """Delete outputs past their retention; returns how many."""
        removed = 0
        while True:
            outs = self.store.expired_outputs(time.time())
            if not outs:
                return removed
            for o in outs:
                try:
                    self.artifacts.delete(o.key)
                except Exception:  # noqa: BLE001 - retried on the next pass
                    log.exception("could not delete expired output %s", o.key)
            self.store.mark_removed(o.token for o in outs)
            removed += len(outs)

    async def _housekeeping(self) -> None:
        last_cleanup = 0.0
        while True:
            await asyncio.sleep(self.options.lease_s / 2)
            try:
                for job in await asyncio.to_thread(self._recover):
                    self._announce(job)
                if time.time() - last_cleanup >= self.options.cleanup_every_s:
                    last_cleanup = time.time()
                    n = await asyncio.to_thread(self.cleanup_expired)
                    if n:
                        log.info("deleted %d expired output(s)", n)
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("housekeeping failed")
