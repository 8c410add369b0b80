"""ModelsLab webhooks: the reply body plus ``track_id``, queued in the service's delivery table.

ModelsLab webhooks are plain JSON (reference §3.4), not the Standard Webhooks envelope the
native API sends, so the row's payload is replaced by the ModelsLab body; the service's
sender then delivers it like any other (SSRF-safe fetcher, retries with backoff; its
signature headers are extra and harmless to ModelsLab receivers).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ....service.service import JobService
from ....service.tables import webhook_deliveries
from ....service.webhooks import delivery_row

__all__ = ["queue_webhook"]


def queue_webhook(service: JobService, job_id: str, url: str, body: dict[str, Any]) -> None:
    """Queue one delivery of ``body`` to ``url`` (blocking: a database write). The caller
    wakes the sender (``service.webhooks.wake``) on the event loop afterwards."""
    row = delivery_row(job_id, url, "completed", {}, time.time())
    row["payload"] = json.dumps(body, separators=(",", ":")).encode()
    with service.db.tx() as conn:
        conn.execute(webhook_deliveries.insert().values(**row))
