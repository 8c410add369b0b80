"""Live progress of jobs in this process: the event hub, and one job's event stream.

``EventHub`` hands each event of a job to everyone streaming that job (the native API's SSE)
and tells observers (metrics) when a job is submitted, started or finished. ``follow``
turns those events, and the stored state of jobs another server runs, into the stream
``JobService.events`` returns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Container, Iterator
from typing import Any, Protocol

from .jobs import Job
from .options import Observer

__all__ = ["EventHub", "JobSource", "follow", "data_uri"]

log = logging.getLogger(__name__)


def data_uri(png: bytes) -> str:
    """A preview as events carry it."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


class EventHub:
    """Per-job subscribers and the job observers of one process."""

    def __init__(self) -> None:
        self._subs: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._observers: list[Observer] = []

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def notify(self, kind: str, job: Job) -> None:
        """A job was submitted, started or finished: observers first, then its streams."""
        for obs in self._observers:
            try:
                obs(kind, job)
            except Exception:  # noqa: BLE001 - an observer's bug must not break the job
                log.exception("job observer failed on %s", kind)
        self.publish(job.id, {"event": kind})

    def publish(self, job_id: str, ev: dict[str, Any]) -> None:
        for q in self._subs.get(job_id, ()):
            q.put_nowait(ev)

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """A queue that receives ``job_id``'s events while the block runs."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subs.setdefault(job_id, set()).add(queue)
        try:
            yield queue
        finally:
            subs = self._subs.get(job_id)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    self._subs.pop(job_id, None)


class JobSource(Protocol):
    """What a stream reads of the service (``JobService`` provides it)."""

    def get(self, job_id: str, owner: str | None = None) -> Job: ...

    def queue_position(self, job_id: str) -> int | None: ...


async def follow(hub: EventHub, jobs: JobSource, running_here: Container[str], job_id: str,
                 owner: str | None, poll_s: float) -> AsyncIterator[dict[str, Any]]:
    """The events of one job until it ends (see ``JobService.events``). Steps of a job this
    process runs come from the hub; those of a job ``running_here`` lacks come from the
    store, as the server running it last wrote them, read every ``poll_s``."""
    with hub.subscribe(job_id) as queue:  # before reading state: nothing is missed
        job = jobs.get(job_id, owner)
        last_pos: int | None = None
        started_attempt = 0
        last_step = 0
        last_preview: bytes | None = None
        while True:
            if job.done:
                yield {"event": job.status, "job": job}
                return
            if job.status == "queued":
                pos = jobs.queue_position(job.id)
                if pos is not None and pos != last_pos:
                    last_pos = pos
                    yield {"event": "queued", "position": pos}
            elif job.attempts != started_attempt:
                started_attempt, last_step = job.attempts, job.step
                yield {"event": "started", "attempt": job.attempts, "step": job.step, "total": job.total_steps}
            elif job.step > last_step and job.id not in running_here:
                # Another server runs it: its progress as that server last stored it.
                last_step = job.step
                ev: dict[str, Any] = {"event": "step", "step": job.step, "total": job.total_steps}
                if job.preview is not None and job.preview != last_preview:
                    last_preview = job.preview
                    ev["preview"] = data_uri(job.preview)
                yield ev
            try:
                ev = await asyncio.wait_for(queue.get(), poll_s)
            except asyncio.TimeoutError:
                job = jobs.get(job_id)
                continue
            if ev["event"] == "step" and started_attempt:
                if ev["step"] > last_step:
                    last_step = ev["step"]
                    yield ev
                continue
            job = jobs.get(job_id)
