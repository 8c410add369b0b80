"""Job groups: a dialect's request that became several jobs, kept under the dialect's id.

A ComfyUI prompt is compiled into one job per sampler chain; the dialect answers for the
prompt as a whole (its queue entry, its history, its websocket messages), so the prompt id,
its jobs in order and the dialect's own record of the request (JSON ``data``) are stored
together, durably: a restart, or another server on the database, answers the same.
"""

from __future__ import annotations

import builtins
import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from .db import Database
from .tables import job_groups

__all__ = ["JobGroup", "JobGroups"]


@dataclass
class JobGroup:
    id: str
    dialect: str
    owner: str | None
    job_ids: list[str]
    data: dict[str, Any]
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None


def _group(row: Any) -> JobGroup:
    return JobGroup(id=row.id, dialect=row.dialect, owner=row.owner, job_ids=json.loads(row.job_ids),
                    data=json.loads(row.data), created_at=row.created_at, finished_at=row.finished_at)


class JobGroups:
    """The groups of one database. Owners see only their own groups (everyone's on an open
    server, where the owner is None)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _mine(self, dialect: str, owner: str | None):  # type: ignore[no-untyped-def]
        q = select(job_groups).where(job_groups.c.dialect == dialect)
        return q if owner is None else q.where(job_groups.c.owner == owner)

    def add(self, group: JobGroup) -> None:
        with self.db.tx() as conn:
            conn.execute(insert(job_groups).values(
                id=group.id, dialect=group.dialect, owner=group.owner, created_at=group.created_at,
                job_ids=json.dumps(group.job_ids), data=json.dumps(group.data), finished_at=group.finished_at))

    def get(self, dialect: str, group_id: str, owner: str | None = None) -> JobGroup | None:
        with self.db.tx() as conn:
            row = conn.execute(self._mine(dialect, owner).where(job_groups.c.id == group_id)).first()
        return None if row is None else _group(row)

    def list(self, dialect: str, owner: str | None = None, *,
             finished: bool | None = None) -> builtins.list[JobGroup]:
        """Oldest first; ``finished``: only groups marked finished (True) or not yet (False)."""
        q = self._mine(dialect, owner).order_by(job_groups.c.created_at, job_groups.c.id)
        if finished is not None:
            q = q.where(job_groups.c.finished_at.is_not(None) if finished else job_groups.c.finished_at.is_(None))
        with self.db.tx() as conn:
            return [_group(r) for r in conn.execute(q).all()]

    def count(self, dialect: str, owner: str | None = None) -> int:
        q = select(func.count()).select_from(job_groups).where(job_groups.c.dialect == dialect)
        if owner is not None:
            q = q.where(job_groups.c.owner == owner)
        with self.db.tx() as conn:
            return int(conn.execute(q).scalar_one())

    def mark_finished(self, group_id: str, at: float) -> None:
        with self.db.tx() as conn:
            conn.execute(update(job_groups).where(job_groups.c.id == group_id, job_groups.c.finished_at.is_(None))
                         .values(finished_at=at))

    def delete(self, dialect: str, owner: str | None, ids: builtins.list[str] | None = None, *,
               finished_only: bool = True) -> int:
        """Forget groups (their jobs stay): ``ids``, or every one of the owner's; by default
        only finished ones (what ComfyUI's history holds)."""
        q = delete(job_groups).where(job_groups.c.dialect == dialect)
        if owner is not None:
            q = q.where(job_groups.c.owner == owner)
        if ids is not None:
            q = q.where(job_groups.c.id.in_(ids))
        if finished_only:
            q = q.where(job_groups.c.finished_at.is_not(None))
        with self.db.tx() as conn:
            return conn.execute(q).rowcount or 0
