"""A small in-memory, time-limited store for images returned with ``response_format=url``.

A stop-gap until the service's artifact store serves outputs: the router reaches it through
one function (``router._publish``), so swapping it for the store touches one place. Entries
live ``ttl_s`` seconds (OpenAI's URLs last 60 minutes) and the oldest go first when the
byte budget is spent, so memory stays bounded whatever clients do.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ....errors import NotFound

__all__ = ["UrlCache", "CachedImage"]


@dataclass(frozen=True)
class CachedImage:
    data: bytes
    content_type: str
    expires_at: float


class UrlCache:
    """Images by unguessable token, expiring after ``ttl_s``, at most ``max_bytes`` in total."""

    def __init__(self, ttl_s: float = 3600.0, max_bytes: int = 256 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._items: OrderedDict[str, CachedImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, data: bytes, content_type: str) -> str:
        """Store ``data``; the returned token is the only way to read it back."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._expire()
            self._items[token] = CachedImage(data, content_type, self._clock() + self.ttl_s)
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old.data)
        return token

    def get(self, token: str) -> CachedImage:
        with self._lock:
            self._expire()
            item = self._items.get(token)
        if item is None:
            raise NotFound("This image URL does not exist or has expired (image URLs last 60 minutes)")
        return item

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self) -> None:
        # Insertion order is expiry order (one TTL for all), so stop at the first live entry.
        now = self._clock()
        while self._items:
            token, item = next(iter(self._items.items()))
            if item.expires_at > now:
                break
            del self._items[token]
            self._bytes -= len(item.data)
