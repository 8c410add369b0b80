"""Per-key request rate limits: a token bucket per key, refilled continuously.

In-process state: each server process limits the requests it sees. That is exact for the
embedded single-process setup; replicas behind a balancer each allow the full rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import RateLimited

__all__ = ["RateLimiter"]


class RateLimiter:
    """``check(key, per_minute)`` admits a request or raises RateLimited with Retry-After.

    A bucket holds ``per_minute`` tokens and refills at ``per_minute / 60`` per second, so a
    key may burst up to its limit and then proceeds at the steady rate.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def check(self, key: str, per_minute: int) -> None:
        now = self._clock()
        rate = per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.get(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - at) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / rate
                raise RateLimited(f"rate limit of {per_minute} requests per minute exceeded for this API key; "
                                  f"retry in {wait:.0f}s", retry_after=wait)
            self._buckets[key] = (tokens - 1.0, now)
