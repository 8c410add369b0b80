"""What each caller has spent: images and compute units, against its credits and limits.

A stored key's spend is its counters in ``api_keys`` (charged when a job is accepted, given
back when it fails or is canceled: the numbers credits are checked against). Callers
without a stored key (static config keys, an open server) have no counters; their spend is
summed from their jobs instead.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import func, select

from .db import Database
from .keys import ApiKey, KeyStore
from .limits import RequestLimits
from .tables import jobs, outputs

__all__ = ["owner_usage", "all_usage"]

_CHARGED = ("queued", "running", "succeeded")


def _from_jobs(db: Database, owners: list[str | None] | None = None) -> dict[str | None, dict[str, Any]]:
    """Per owner: jobs accepted and not given back, their compute units, and images made."""
    q_cost = select(jobs.c.owner, func.count().label("jobs"), func.coalesce(func.sum(jobs.c.cost), 0.0).label("cost")) \
        .where(jobs.c.status.in_(_CHARGED)).group_by(jobs.c.owner)
    q_images = select(jobs.c.owner, func.count().label("images")).select_from(
        outputs.join(jobs, outputs.c.job_id == jobs.c.id)).group_by(jobs.c.owner)
    with db.tx() as conn:
        rows = conn.execute(q_cost).all()
        images = {r.owner: int(r.images) for r in conn.execute(q_images)}
    out = {r.owner: {"jobs": int(r.jobs), "compute_used": round(float(r.cost), 6),
                     "images_used": images.get(r.owner, 0)} for r in rows}
    for owner, n in images.items():
        out.setdefault(owner, {"jobs": 0, "compute_used": 0.0, "images_used": n})
    return out if owners is None else {o: out.get(o, {"jobs": 0, "compute_used": 0.0, "images_used": 0})
                                       for o in owners}


def _key_usage(key: ApiKey, server: RequestLimits) -> dict[str, Any]:
    return {**key.usage(), "limits": asdict(server.tighter(key.limits)), "active": key.active}


def _jobs_usage(owner: str | None, spent: dict[str, Any], server: RequestLimits) -> dict[str, Any]:
    return {"key": owner, "name": None, "images_used": spent["images_used"], "image_credits": None,
            "images_left": None, "compute_used": spent["compute_used"], "compute_credits": None,
            "compute_left": None, "rate_limit": None, "limits": asdict(server), "active": True}


def owner_usage(db: Database, keys: KeyStore, owner: str | None, server: RequestLimits) -> dict[str, Any]:
    """One caller's spend, credits left and the per-request limits that apply to it."""
    key = keys.get(owner) if owner is not None else None
    if key is not None:
        return _key_usage(key, server)
    return _jobs_usage(owner, _from_jobs(db, [owner])[owner], server)


def all_usage(db: Database, keys: KeyStore, server: RequestLimits) -> list[dict[str, Any]]:
    """Every stored key's usage, then every other owner that has jobs (static keys, open)."""
    stored = keys.list()
    ids = {k.id for k in stored}
    others = {o: s for o, s in _from_jobs(db).items() if o not in ids}
    return [_key_usage(k, server) for k in stored] + [_jobs_usage(o, s, server) for o, s in others.items()]
