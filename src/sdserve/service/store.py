"""The durable job queue: jobs, their inputs and outputs in the database.

Every state change is one conditional UPDATE, so two workers (or a worker that lost its
lease) can never both move the same job: claiming needs ``status='queued'``, finishing
needs ``status='running'`` and the same attempt number that claimed it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..engine.params import GenerationParams, InputImage
from ..errors import QueueFull
from .db import Database
from .fairness import Waiting
from .jobs import Job, Output, error_from_json, error_to_json
from .keys import charge, refund
from .tables import job_inputs, jobs, meta, outputs, webhook_deliveries

__all__ = ["JobStore"]

# A job that stops running (finished, or back in line) has no live progress.
_NO_PROGRESS: dict[str, Any] = {"progress_step": None, "progress_total": None, "preview": None}


def _has_inputs(p: GenerationParams) -> bool:
    """Whether a job keeps input images (job_inputs): prepare() drops any a txt2img request
    was sent, so its hot path neither stores, reads nor deletes them; ControlNet and IP-Adapter
    images are kept for any task)."""
    return p.task != "txt2img" or bool(p.control) or p.ip_adapter is not None


def _owner_is(owner: str | None):  # type: ignore[no-untyped-def]
    return jobs.c.owner.is_(None) if owner is None else jobs.c.owner == owner


def _output(row: Any) -> Output:
    return Output(index=row.image_index, seed=row.seed, content_type=row.content_type, token=row.token,
                  key=row.key, size=row.size, expires_at=row.expires_at, removed=bool(row.removed),
                  nsfw=row.nsfw)


def _job(row: Any, outs: Iterable[Any] = ()) -> Job:
    return Job(
        id=row.id, params=GenerationParams.model_validate_json(row.params), owner=row.owner, status=row.status,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        outputs=sorted((_output(o) for o in outs), key=lambda o: o.index),
        error=error_from_json(row.error) if row.error else None, device=row.device or "", dtype=row.dtype or "",
        priority=row.priority, attempts=row.attempts, request=json.loads(row.request), webhook=row.webhook,
        webhook_events=tuple(e for e in (row.webhook_events or "").split(",") if e),
        cancel_requested=bool(row.cancel_requested), credits=row.credits, cost=row.cost,
        warnings=json.loads(row.warnings) if row.warnings else [],
        reply=json.loads(row.reply) if row.reply else {}, webhook_format=row.webhook_format,
        step=row.progress_step or 0, total_steps=row.progress_total or 0, preview=row.preview,
    )


class JobStore:
    """Jobs, inputs, outputs and small settings (``meta``) over one Database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- submitting -----------------------------------------------------------------------

    def add(self, job: Job, max_queue: int, retry_after: float) -> Job:
        """Insert a queued job, charging its images to the owner's key in the same
        transaction. Raises QueueFull or InsufficientCredits (and then stores nothing)."""
        p = job.params
        with self.db.tx() as conn:
            waiting = conn.execute(select(func.count()).select_from(jobs).where(jobs.c.status == "queued")).scalar_one()
            if waiting >= max_queue:
                raise QueueFull(f"the queue is full ({waiting} jobs waiting); retry shortly", retry_after=retry_after)
            job.credits = charge(conn, job.owner, p.n, job.cost)
            conn.execute(insert(jobs).values(
                id=job.id, owner=job.owner, status="queued", priority=job.priority, model=p.model,
                request=json.dumps(job.request), params=p.model_dump_json(exclude={"inputs"}),
                created_at=job.created_at, attempts=0, credits=job.credits, cost=job.cost, webhook=job.webhook,
                webhook_events=",".join(job.webhook_events), webhook_format=job.webhook_format,
                reply=json.dumps(job.reply) if job.reply else None,
            ))
            if _has_inputs(p) and p.inputs:
                conn.execute(insert(job_inputs), [dict(job_id=job.id, role=i.role, position=i.index, data=i.data)
                                                  for i in p.inputs])
        return job

    # -- reading --------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self.db.tx() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            outs = conn.execute(select(outputs).where(outputs.c.job_id == job_id)).all()
        return _job(row, outs)

    def newest(self, owner: str | None, limit: int = 50, all_owners: bool = False) -> list[Job]:
        """The newest jobs of ``owner`` (of everyone with ``all_owners``), newest first."""
        q = select(jobs).order_by(jobs.c.seq.desc()).limit(limit)
        if not all_owners:
            q = q.where(_owner_is(owner))
        with self.db.tx() as conn:
            rows = conn.execute(q).all()
            outs = conn.execute(select(outputs).where(outputs.c.job_id.in_([r.id for r in rows]))).all()
        by_job: dict[str, list[Any]] = {}
        for o in outs:
            by_job.setdefault(o.job_id, []).append(o)
        return [_job(r, by_job.get(r.id, ())) for r in rows]

    def queue_length(self) -> int:
        with self.db.tx() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs).where(jobs.c.status == "queued")).scalar_one())

    def queue_by_model(self) -> dict[str, int]:
        with self.db.tx() as conn:
            rows = conn.execute(select(jobs.c.model, func.count().label("n")).where(jobs.c.status == "queued")
                                .group_by(jobs.c.model)).all()
        return {r.model: int(r.n) for r in rows}

    def waiting(self) -> list[Waiting]:
        """Every queued job, as much as the fairness policy needs to order them."""
        with self.db.tx() as conn:
            rows = conn.execute(select(jobs.c.id, jobs.c.owner, jobs.c.priority, jobs.c.seq, jobs.c.cost)
                                .where(jobs.c.status == "queued")).all()
        return [Waiting(r.id, r.owner, r.priority, r.seq, r.cost) for r in rows]

    def params_of(self, job_ids: list[str]) -> dict[str, GenerationParams]:
        """The resolved parameters (without images) of queued jobs, in ``job_ids`` order."""
        with self.db.tx() as conn:
            rows: dict[str, str] = {r.id: r.params for r in conn.execute(
                select(jobs.c.id, jobs.c.params).where(jobs.c.id.in_(job_ids), jobs.c.status == "queued"))}
        return {i: GenerationParams.model_validate_json(rows[i]) for i in job_ids if i in rows}

    # -- the worker's side ----------------------------------------------------------------

    def claim(self, job_id: str, worker: str | None = None) -> Job | None:
        """Move a queued job to running (claimed by ``worker``, a server's name) and return
        it with its input images; None if it is no longer queued (another worker took it,
        or it was canceled)."""
        now = time.time()
        with self.db.tx() as conn:
            # One statement moves and reads the job (RETURNING: SQLite 3.35+, PostgreSQL).
            row = conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued").values(
                status="running", attempts=jobs.c.attempts + 1, started_at=now, heartbeat_at=now, claimed_by=worker,
            ).returning(*jobs.c)).first()
            if row is None:
                return None
            job = _job(row)
            rows: Sequence[Any] = []
            if _has_inputs(job.params):
                rows = conn.execute(select(job_inputs).where(job_inputs.c.job_id == job_id)
                                    .order_by(job_inputs.c.role, job_inputs.c.position)).all()
        if rows:
            job.params = job.params.model_copy(update={"inputs": tuple(
                InputImage(role=r.role, index=r.position, data=r.data) for r in rows)})
        return job

    def heartbeat(self, job_id: str, attempt: int, progress: tuple[int, int] | None = None,
                  preview: bytes | None = None) -> bool | None:
        """Renew a running job's lease, recording its ``(step, total)`` and a new preview
        when given; returns whether a cancel was requested, or None if the job is no
        longer this attempt's (a newer attempt or a terminal state)."""
        values: dict[str, Any] = {"heartbeat_at": time.time()}
        if progress is not None:
            values["progress_step"], values["progress_total"] = progress
        if preview is not None:
            values["preview"] = preview
        with self.db.tx() as conn:
            n = conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == "running",
                                                jobs.c.attempts == attempt).values(**values)).rowcount
            if not n:
                return None
            return bool(conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar_one())

    def request_cancel(self, job_id: str) -> None:
        with self.db.tx() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == "running")
                         .values(cancel_requested=True))

    def stale_running(self, heartbeat_before: float) -> list[Job]:
        """Running jobs whose worker stopped renewing the lease (it crashed or was killed)."""
        with self.db.tx() as conn:
            rows = conn.execute(select(jobs).where(jobs.c.status == "running",
                                                   or_(jobs.c.heartbeat_at.is_(None),
                                                       jobs.c.heartbeat_at < heartbeat_before))).all()
        return [_job(r) for r in rows]

    def requeue(self, job_id: str, attempt: int) -> bool:
        """Put an interrupted attempt back in line (its inputs are still stored)."""
        with self.db.tx() as conn:
            return bool(conn.execute(update(jobs).where(
                jobs.c.id == job_id, jobs.c.status == "running", jobs.c.attempts == attempt,
            ).values(status="queued", started_at=None, heartbeat_at=None, **_NO_PROGRESS)).rowcount)

    def finish(self, job: Job, expect: str, attempt: int | None = None,
               deliveries: Iterable[dict[str, Any]] = ()) -> bool:
        """Record ``job``'s terminal state, outputs, credit refund and webhook deliveries in
        one transaction, if the job is still ``expect`` (and ``attempt``). False otherwise:
        someone else finished or re-claimed it, and nothing was written."""
        cond = [jobs.c.id == job.id, jobs.c.status == expect]
        if attempt is not None:
            cond.append(jobs.c.attempts == attempt)
        with self.db.tx() as conn:
            n = conn.execute(update(jobs).where(*cond).values(
                status=job.status, finished_at=job.finished_at, device=job.device or None,
                dtype=job.dtype or None, error=error_to_json(job.error) if job.error else None,
                warnings=json.dumps(job.warnings) if job.warnings else None, **_NO_PROGRESS,
                # What ran: the enhancer may have rewritten the prompt (params.original_prompt).
                params=job.params.model_dump_json(exclude={"inputs"}),
            )).rowcount
            if not n:
                return False
            if job.outputs:  # one executemany: the statement is built once, not per image
                conn.execute(insert(outputs), [dict(
                    token=o.token, job_id=job.id, image_index=o.index, seed=o.seed, content_type=o.content_type,
                    key=o.key, size=o.size, created_at=job.finished_at, expires_at=o.expires_at, removed=False,
                    nsfw=o.nsfw,
                ) for o in job.outputs])
            if job.status != "succeeded":
                refund(conn, job.owner, job.credits, job.cost)
            if _has_inputs(job.params):
                conn.execute(delete(job_inputs).where(job_inputs.c.job_id == job.id))
            for d in deliveries:
                conn.execute(insert(webhook_deliveries).values(**d))
        return True

    # -- outputs --------------------------------------------------------------------------

    def output(self, token: str) -> tuple[str, Output] | None:
        """(job id, output) for an output URL's token."""
        with self.db.tx() as conn:
            row = conn.execute(select(outputs).where(outputs.c.token == token)).first()
        return (row.job_id, _output(row)) if row else None

    def expired_outputs(self, now: float, limit: int = 500) -> list[Output]:
        with self.db.tx() as conn:
            rows = conn.execute(select(outputs).where(outputs.c.removed.is_(False), outputs.c.expires_at.is_not(None),
                                                      outputs.c.expires_at <= now).limit(limit)).all()
        return [_output(r) for r in rows]

    def mark_removed(self, tokens: Iterable[str]) -> None:
        with self.db.tx() as conn:
            conn.execute(update(outputs).where(outputs.c.token.in_(list(tokens))).values(removed=True))

    # -- small settings -------------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        with self.db.tx() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()

    def meta_setdefault(self, key: str, value: str) -> str:
        """The stored value, storing ``value`` first if there is none (first writer wins)."""
        current = self.meta_get(key)
        if current is not None:
            return current
        try:
            with self.db.tx() as conn:
                conn.execute(insert(meta).values(key=key, value=value))
            return value
        except IntegrityError:  # another process stored one first: theirs wins
            return self.meta_get(key) or value
