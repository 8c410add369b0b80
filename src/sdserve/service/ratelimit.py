"""Per-key request rate limits: a token bucket per key, refilled continuously, kept in the
job database, so that every server sharing it (Ray API replicas, several processes on one
PostgreSQL) enforces one limit per key instead of one per process.

Each check is one conditional UPDATE that refills and takes a token in the same statement,
so two servers checking the same key at once cannot both take the last token. (The maintained
rate-limit libraries, e.g. ``limits``, keep buckets in Redis or memory, not in SQL; the job
database is what every sdserve server already shares.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import case, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import RateLimited
from .db import Database
from .tables import rate_buckets

__all__ = ["RateLimiter"]


class RateLimiter:
    """``check(key, per_minute)`` admits a request or raises RateLimited with Retry-After.

    A bucket holds ``per_minute`` tokens and refills at ``per_minute / 60`` per second, so a
    key may burst up to its limit and then proceeds at the steady rate. The clock is wall
    time (servers share it, not a monotonic one); a clock behind the bucket's refills nothing.
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    def check(self, key: str, per_minute: int) -> None:
        now = self._clock()
        rate, cap = per_minute / 60.0, float(per_minute)
        b = rate_buckets.c
        elapsed = case((b.updated_at < now, now - b.updated_at), else_=0.0)
        refilled = b.tokens + elapsed * rate
        level = case((refilled > cap, cap), else_=refilled)
        for _ in range(2):
            with self.db.tx() as conn:
                taken = conn.execute(update(rate_buckets).where(b.key == key, level >= 1.0)
                                     .values(tokens=level - 1.0, updated_at=now)).rowcount
                row = None if taken else conn.execute(select(b.tokens, b.updated_at).where(b.key == key)).first()
            if taken:
                return
            if row is not None:
                break
            try:  # the key's first request anywhere: a full bucket, less this request's token
                with self.db.tx() as conn:
                    conn.execute(insert(rate_buckets).values(key=key, tokens=cap - 1.0, updated_at=now))
                return
            except IntegrityError:
                continue  # another server made the bucket first: take from it
        tokens = min(cap, row.tokens + max(0.0, now - row.updated_at) * rate) if row is not None else 0.0
        wait = (1.0 - tokens) / rate
        raise RateLimited(f"rate limit of {per_minute} requests per minute exceeded for this API key; "
                          f"retry in {wait:.0f}s", retry_after=wait)
