"""Webhooks signed per Standard Webhooks v1, delivered from the database with retries.

A delivery row is written in the same transaction as the job state it reports, so a
crash can delay a webhook but not drop it. Each attempt is signed afresh
(``webhook-timestamp`` is the attempt's time) under the same ``webhook-id``, so receivers
can deduplicate. Retries back off exponentially with jitter on network errors, 408, 429
and 5xx, honouring Retry-After; 410 Gone stops at once; other answers are final failures.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from .db import Database
from .fetch import Fetcher, FetchFailed, FetchRefused
from .jobs import iso
from .store import JobStore
from .tables import webhook_deliveries

__all__ = ["WebhookPolicy", "WebhookSender", "new_secret", "sign", "delivery_row", "signing_secret", "SECRET_KEY"]

log = logging.getLogger(__name__)

SECRET_KEY = "webhook_secret"  # where the signing secret lives in the ``meta`` table
_RETRY_STATUSES = {408, 429}


def new_secret() -> str:
    """A ``whsec_`` secret: 32 random bytes, base64 (the spec asks for 24 to 64)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_secret(store: JobStore) -> str:
    """This installation's secret, made on first use (``sdserve webhooks secret`` prints it)."""
    return store.meta_setdefault(SECRET_KEY, new_secret())


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def delivery_row(job_id: str, url: str, event: str, data: dict[str, Any], now: float,
                 envelope: bool = True) -> dict[str, Any]:
    """A pending delivery of ``data`` as a Standard Webhooks payload (``type``, ``timestamp``,
    ``data``), or as the body itself for dialects with their own format (``envelope=False``;
    the signature headers still come with it)."""
    body = {"type": f"job.{event}", "timestamp": iso(now), "data": data} if envelope else data
    payload = json.dumps(body, separators=(",", ":")).encode()
    return {"id": "msg_" + secrets.token_hex(16), "job_id": job_id,
            "url": url, "event": event, "payload": payload, "status": "pending", "attempts": 0,
            "next_attempt_at": now, "created_at": now}


@dataclass(frozen=True)
class WebhookPolicy:
    max_attempts: int = 10
    retry_base_s: float = 5.0
    retry_cap_s: float = 6 * 3600.0
    concurrency: int = 8


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class WebhookSender:
    """Sends due deliveries; ``run`` loops until cancelled, waking early on ``wake``."""

    def __init__(self, db: Database, fetcher: Fetcher, policy: WebhookPolicy | None = None) -> None:
        self.db = db
        self.fetcher = fetcher
        self.secret = ""  # the installation's signing secret, read from the store by ``reset``
        self.policy = policy or WebhookPolicy()
        self.wake = asyncio.Event()

    def reset(self, secret: str) -> None:
        """Before ``run`` (re)starts: the signing secret, and a wake-up event for the loop
        that will wait on it (a restarted service may run in a new one)."""
        self.secret = secret
        self.wake = asyncio.Event()

    async def run(self, idle_s: float = 1.0) -> None:
        """Deliver due webhooks until cancelled. Each attempt runs on its own task (at most
        ``policy.concurrency`` at once), so a slow or dead receiver holds up no other delivery."""
        inflight: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            self.wake.set()  # a slot is free

        try:
            while True:
                self.wake.clear()
                room = self.policy.concurrency - len(inflight)
                try:
                    rows = await asyncio.to_thread(self._claim_due, time.time(), room) if room > 0 else []
                    next_at = await asyncio.to_thread(self._next_due) if room > len(rows) else None
                except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable: try again
                    log.exception("could not read the webhook deliveries")
                    rows, next_at = [], None
                for r in rows:
                    task = asyncio.create_task(self._attempt_logged(r))
                    inflight.add(task)
                    task.add_done_callback(done)
                wait = idle_s if next_at is None else min(idle_s, max(0.0, next_at - time.time()))
                try:
                    await asyncio.wait_for(self.wake.wait(), wait)
                except TimeoutError:
                    pass
        finally:
            for task in inflight:
                task.cancel()

    async def _attempt_logged(self, row: Any) -> None:
        try:
            await self._attempt(row)
        except Exception:  # noqa: BLE001 - the lease lapses and the delivery is tried again
            log.exception("webhook %s for job %s: the attempt could not be recorded", row.id, row.job_id)

    def _next_due(self) -> float | None:
        with self.db.tx() as conn:
            return conn.execute(select(webhook_deliveries.c.next_attempt_at)
                                .where(webhook_deliveries.c.status == "pending")
                                .order_by(webhook_deliveries.c.next_attempt_at).limit(1)).scalar_one_or_none()

    def _claim_due(self, now: float, limit: int | None = None) -> list[Any]:
        """Due deliveries (at most ``limit``), each leased (pushed into the future) so no
        other sender takes it."""
        lease = now + self.fetcher.policy.timeout_s + 5
        claimed = []
        with self.db.tx() as conn:
            rows = conn.execute(select(webhook_deliveries).where(
                webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at <= now,
            ).order_by(webhook_deliveries.c.next_attempt_at).limit(limit or self.policy.concurrency)).all()
            for r in rows:
                n = conn.execute(update(webhook_deliveries).where(
                    webhook_deliveries.c.id == r.id, webhook_deliveries.c.next_attempt_at == r.next_attempt_at,
                    webhook_deliveries.c.status == "pending").values(next_attempt_at=lease)).rowcount
                if n:
                    claimed.append(r)
        return claimed

    async def deliver_due(self) -> int:
        rows = await asyncio.to_thread(self._claim_due, time.time())
        await asyncio.gather(*(self._attempt(r) for r in rows))
        return len(rows)

    async def _attempt(self, row: Any) -> None:
        ts = int(time.time())
        headers = {"content-type": "application/json", "user-agent": "sdserve-webhooks",
                   "webhook-id": row.id, "webhook-timestamp": str(ts),
                   "webhook-signature": sign(self.secret, row.id, ts, row.payload)}
        retry_after: float | None = None
        try:
            # Standard Webhooks: a 3xx is a failure, never followed.
            resp = await self.fetcher.request("POST", row.url, field="webhook", content=row.payload,
                                              headers=headers, follow_redirects=False, max_bytes=64 * 1024)
        except FetchRefused as e:
            outcome, error = "failed", e.message
        except FetchFailed as e:
            outcome, error = ("retry" if e.retryable else "failed"), e.message
        else:
            error = f"HTTP {resp.status}"
            if 200 <= resp.status < 300:
                outcome, error = "delivered", ""
            elif resp.status == 410:
                outcome = "gone"
            elif resp.status in _RETRY_STATUSES or resp.status >= 500:
                outcome, retry_after = "retry", _retry_after(resp.headers.get("retry-after"))
            else:
                outcome = "failed"
        attempts = row.attempts + 1
        if outcome == "retry" and attempts >= self.policy.max_attempts:
            outcome = "failed"
        values: dict[str, Any] = {"attempts": attempts, "last_error": error or None}
        now = time.time()
        if outcome == "retry":
            backoff = min(self.policy.retry_cap_s, self.policy.retry_base_s * 2 ** (attempts - 1))
            delay = backoff * random.uniform(0.5, 1.5) if retry_after is None else min(retry_after,
                                                                                       self.policy.retry_cap_s)
            values["next_attempt_at"] = now + delay
            log.info("webhook %s for job %s: %s; retry %d in %.1fs", row.id, row.job_id, error, attempts, delay)
        else:
            values.update(status=outcome, finished_at=now)
            if outcome != "delivered":
                log.warning("webhook %s for job %s to %s %s after %d attempt(s): %s", row.id, row.job_id,
                            row.url, outcome, attempts, error)
        await asyncio.to_thread(self._save, row.id, values)

    def _save(self, delivery_id: str, values: dict[str, Any]) -> None:
        with self.db.tx() as conn:
            conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values))

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        """A job's deliveries and how they went (for operators and tests)."""
        with self.db.tx() as conn:
            rows = conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.job_id == job_id)
                                .order_by(webhook_deliveries.c.created_at)).all()
        return [{"id": r.id, "event": r.event, "status": r.status, "attempts": r.attempts,
                 "last_error": r.last_error} for r in rows]
