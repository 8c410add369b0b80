"""Outcomes: what the parts of the job service do with a job's end, in one small object.

The worker, housekeeping, the recorder and the service's own cancel need the same two
things: tell this process a job ended (the waiters in ``JobService.wait``/``run``, event
streams and observers, the webhook sender), and the link of an output (job views, webhook
bodies, the dialects' answers). Built before the parts that use it, from what it needs, so
none of them calls back into the JobService that owns them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sdserve.service.artifacts import ArtifactStore
from sdserve.service.events import EventHub
from sdserve.service.jobs import Job, Output
from sdserve.service.options import ServiceOptions
from sdserve.service.webhooks import WebhookSender

__all__ = ["Outcomes", "Waiters", "OUTPUTS_PATH"]

# Where the API serves an output by its token; links are built with it.
OUTPUTS_PATH = "/v1/outputs/"


@dataclass
class Waiters:
    """Who waits in this process for one job to end, and the ended job once it has."""

    ended: asyncio.Future[Job]
    count: int = 0


class Outcomes:
    """Announces jobs' ends in this process and links their outputs."""

    def __init__(self, hub: EventHub, sender: WebhookSender, artifacts: ArtifactStore,
                 options: ServiceOptions) -> None:
        self.hub = hub
        self.sender = sender
        self.artifacts = artifacts
        self.options = options
        # Running jobs to stop at their next step and end as canceled (the worker reads it).
        self.canceled: set[str] = set()
        # Running jobs to stop at their next step but end with the images made so far
        # (A1111's interrupt): the engine decodes them from where the loop stands.
        self.interrupted: set[str] = set()
        self.waiters: dict[str, Waiters] = {}  # by job id, while someone waits on it

    def announce(self, job: Job) -> None:
        """Tell this process a job ended: waiters, event streams, observers, webhooks."""
        self.canceled.discard(job.id)
        self.interrupted.discard(job.id)
        self.hub.notify("finished", job)
        waiters = self.waiters.pop(job.id, None)
        if waiters is not None and not waiters.ended.done():
            waiters.ended.set_result(job)  # the waiters get this very object, outputs' bytes included
        if job.webhook:
            self.sender.wake.set()

    def output_url(self, output: Output, base_url: str | None = None) -> str:
        """A presigned link where the artifact store gives one, else this server's unguessable one."""
        direct = self.artifacts.presigned_url(output.key, self.options.url_ttl_s)
        if direct is not None:
            return direct
        return f"{(base_url or self.options.public_url).rstrip('/')}{OUTPUTS_PATH}{output.token}"
