"""A job's webhook deliveries, written with the state they report.

The terminal state and the completion webhook are stored in one transaction, so a crash
can delay a webhook but not drop it. The body is the standard job view, or a dialect's
own (``JobService.register_webhook_format``). After writing a delivery the caller wakes the
sender, which sends it (``webhooks.WebhookSender``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .jobs import Job, job_view
from .options import WebhookFormat
from .outcomes import Outcomes
from .store import JobStore
from .tables import webhook_deliveries
from .webhooks import WebhookSender, delivery_row

__all__ = ["Recorder"]

log = logging.getLogger(__name__)


class Recorder:
    """Records jobs' ends (and starts, for "start" webhooks) with their deliveries."""

    def __init__(self, store: JobStore, sender: WebhookSender, outcomes: Outcomes) -> None:
        self.store = store
        self.sender = sender
        self.outcomes = outcomes  # links the outputs in standard bodies
        self.formats: dict[str, WebhookFormat] = {}

    def finish(self, job: Job, expect: str, attempt: int | None = None) -> bool:
        """Store ``job``'s terminal state with its completion webhook, atomically; False if
        the job was no longer ``expect`` (or in ``attempt``), as ``JobStore.finish``."""
        deliveries = []
        if job.webhook and "completed" in job.webhook_events:
            now = job.finished_at or time.time()
            body = self._webhook_body(job)
            if body is not None:
                deliveries.append(delivery_row(job.id, job.webhook, job.status, body, now, envelope=False))
            else:
                deliveries.append(delivery_row(job.id, job.webhook, job.status, job_view(job, self.outcomes.output_url), now))
        return self.store.finish(job, expect, attempt, deliveries)

    def _webhook_body(self, job: Job) -> dict[str, Any] | None:
        """The job's dialect-formatted webhook body; None means the standard one (also when
        the format is unknown here or fails: the webhook still goes out)."""
        if not job.webhook_format:
            return None
        fmt = self.formats.get(job.webhook_format)
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

    def record_start(self, job: Job) -> None:
        """The "started" delivery of a job that asked for one (blocking: run in a thread)."""
        row = delivery_row(job.id, job.webhook or "", "started", job_view(job, self.outcomes.output_url), time.time())
        with self.store.db.tx() as conn:
            conn.execute(webhook_deliveries.insert().values(**row))

    def wake_sender(self) -> None:
        """Have the sender look for new deliveries now (on the event loop)."""
        self.sender.wake.set()
