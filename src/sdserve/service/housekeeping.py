"""Housekeeping: jobs whose worker died go back in line, expired outputs are deleted.

A running job's heartbeat renews its lease; one whose lease lapsed (its process died) is
re-queued, up to ``max_attempts`` starts, then failed. Outputs past their retention are
deleted from the artifact store and marked removed. Recovery runs at start and every half
lease, expiry every ``cleanup_every_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container

from ..errors import GenerationFailed
from .artifacts import ArtifactStore
from .jobs import Job
from .options import ServiceOptions
from .outcomes import Outcomes
from .recording import Recorder
from .store import JobStore

__all__ = ["Housekeeping"]

log = logging.getLogger(__name__)


class Housekeeping:
    """Lease recovery and output expiry over one store; ``running_here`` are the jobs this
    process runs (never orphans, whatever their heartbeat says)."""

    def __init__(self, store: JobStore, artifacts: ArtifactStore, options: ServiceOptions,
                 running_here: Container[str], recorder: Recorder, outcomes: Outcomes) -> None:
        self.store = store
        self.artifacts = artifacts
        self.options = options
        self.running_here = running_here
        self.recorder = recorder
        self.outcomes = outcomes

    def recover(self, startup: bool = False) -> list[Job]:
        """Re-queue running jobs whose worker died; fail those out of attempts. Returns the
        failed ones (to announce on the event loop)."""
        now = time.time()
        # SQLite is the embedded single-server database: at start, every running job is an
        # orphan of this server's previous life. Shared databases wait for the lease to lapse.
        cutoff = now if (startup and self.store.db.is_sqlite) else now - self.options.lease_s
        failed = []
        for job in self.store.stale_running(cutoff):
            if job.id in self.running_here:
                continue
            if job.attempts >= self.options.max_attempts:
                job.status, job.finished_at = "failed", now
                job.error = GenerationFailed(f"the server stopped while running this job {job.attempts} times; "
                                             "giving up")
                if self.recorder.finish(job, "running", job.attempts):
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

    async def run(self) -> None:
        """Every half lease: recover (announcing the jobs it fails); every
        ``cleanup_every_s``: delete expired outputs."""
        last_cleanup = 0.0
        while True:
            await asyncio.sleep(self.options.lease_s / 2)
            try:
                for job in await asyncio.to_thread(self.recover):
                    self.outcomes.announce(job)
                if time.time() - last_cleanup >= self.options.cleanup_every_s:
                    last_cleanup = time.time()
                    n = await asyncio.to_thread(self.cleanup_expired)
                    if n:
                        log.info("deleted %d expired output(s)", n)
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("housekeeping failed")
