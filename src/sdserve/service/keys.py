"""API keys in the job database: created once (only the hash is kept), listed, revoked,
checked in constant time, with an optional rate limit, credit quotas (images and compute
units) and per-request limits per key. Usage is counted on every stored key, quota or not."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, case, func, insert, or_, select, update

from ..errors import InsufficientCredits, NotFound
from .db import Database
from .limits import RequestLimits
from .tables import api_keys

__all__ = ["ApiKey", "KeyStore", "hash_key", "charge", "refund", "KEY_PREFIX"]

# Recognisable in logs and secret scanners; the random part carries 256 bits.
KEY_PREFIX = "sds_"


def hash_key(key: str) -> str:
    """sha256 is enough here: keys are 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key's record (never the key itself)."""

    id: str
    name: str | None
    prefix: str
    created_at: float
    revoked_at: float | None
    rate_limit: int | None
    credits: int | None
    credits_used: int
    compute_credits: float | None = None
    compute_used: float = 0.0
    limits: RequestLimits = RequestLimits()

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def credits_left(self) -> int | None:
        return None if self.credits is None else max(0, self.credits - self.credits_used)

    @property
    def compute_left(self) -> float | None:
        return None if self.compute_credits is None else max(0.0, round(self.compute_credits - self.compute_used, 6))

    def usage(self) -> dict[str, object]:
        """What the key has spent and has left (the usage route's body for one key)."""
        return {"key": self.id, "name": self.name, "images_used": self.credits_used, "image_credits": self.credits,
                "images_left": self.credits_left, "compute_used": round(self.compute_used, 6),
                "compute_credits": self.compute_credits, "compute_left": self.compute_left,
                "rate_limit": self.rate_limit, "limits": asdict(self.limits)}


def _key(row) -> ApiKey:  # type: ignore[no-untyped-def]
    return ApiKey(id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at, revoked_at=row.revoked_at,
                  rate_limit=row.rate_limit, credits=row.credits, credits_used=row.credits_used,
                  compute_credits=row.compute_credits, compute_used=row.compute_used,
                  limits=RequestLimits.from_json(row.limits))


class KeyStore:
    """The ``api_keys`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str | None = None, rate_limit: int | None = None, credits: int | None = None, *,
               compute_credits: float | None = None, limits: RequestLimits | None = None) -> tuple[ApiKey, str]:
        """A new key: its record and the key itself, which is shown once and not stored."""
        if rate_limit is not None and rate_limit < 1:
            raise ValueError("rate limit must be at least 1 request per minute")
        if (credits is not None and credits < 0) or (compute_credits is not None and compute_credits < 0):
            raise ValueError("credits must be 0 or more")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(id="key_" + secrets.token_hex(6), name=name, prefix=key[:10], created_at=time.time(),
                        revoked_at=None, rate_limit=rate_limit, credits=credits, credits_used=0,
                        compute_credits=compute_credits, limits=limits or RequestLimits())
        with self.db.tx() as conn:
            conn.execute(insert(api_keys).values(hash=hash_key(key), **{**asdict(record),
                                                                        "limits": record.limits.to_json()}))
        return record, key

    def grant(self, key_id: str, images: int = 0, compute: float = 0.0) -> ApiKey:
        """Add credits to a key (a key without a quota gets one of what it has used plus
        this). Jobs already accepted keep what they were charged."""
        if images < 0 or compute < 0:
            raise ValueError("credits to add must be 0 or more")
        c = api_keys.c
        values: dict[str, object] = {}
        if images:
            values["credits"] = func.coalesce(c.credits, c.credits_used) + images
        if compute:
            values["compute_credits"] = func.coalesce(c.compute_credits, c.compute_used) + compute
        with self.db.tx() as conn:
            if values:
                conn.execute(update(api_keys).where(c.id == key_id).values(**values))
        record = self.get(key_id)
        if record is None:
            raise NotFound(f"no API key {key_id}")
        return record

    def list(self) -> list[ApiKey]:
        with self.db.tx() as conn:
            return [_key(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.created_at))]

    def get(self, key_id: str) -> ApiKey | None:
        with self.db.tx() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return _key(row) if row else None

    def revoke(self, id_or_key: str) -> ApiKey:
        """Revoke by id (``key_...``) or by the key itself; NotFound if neither matches."""
        cond = api_keys.c.hash == hash_key(id_or_key) if id_or_key.startswith(KEY_PREFIX) \
            else api_keys.c.id == id_or_key
        with self.db.tx() as conn:
            conn.execute(update(api_keys).where(cond, api_keys.c.revoked_at.is_(None)).values(revoked_at=time.time()))
            row = conn.execute(select(api_keys).where(cond)).first()
        if row is None:
            raise NotFound(f"no API key {id_or_key}")
        return _key(row)

    def authenticate(self, key: str) -> ApiKey | None:
        """The active key's record, or None. The lookup is by hash, so response time says
        nothing about how much of a guess was right; the final compare is constant-time."""
        digest = hash_key(key)
        with self.db.tx() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.hash == digest,
                                                      api_keys.c.revoked_at.is_(None))).first()
        if row is None or not hmac.compare_digest(row.hash, digest):
            return None
        return _key(row)

    def any_active(self) -> bool:
        """Whether any key is live: with none (and no static keys) the server is open."""
        with self.db.tx() as conn:
            n = conn.execute(select(func.count()).select_from(api_keys)
                             .where(api_keys.c.revoked_at.is_(None))).scalar_one()
        return n > 0


def charge(conn: Connection, owner: str | None, images: int, cost: float = 0.0) -> int:
    """Charge ``images`` and ``cost`` compute units to the owner's key inside the caller's
    transaction; a key with a quota of either refuses what would overdraw it.

    Returns the images charged (0 for owners without a stored key: static keys, an open
    server). The UPDATE's condition makes the check and the debit one step, so concurrent
    requests, on this server or another sharing the database, cannot overdraw a key.
    """
    if owner is None:
        return 0
    c = api_keys.c
    row = conn.execute(select(c.credits, c.credits_used, c.compute_credits, c.compute_used)
                       .where(c.id == owner)).first()
    if row is None:
        return 0
    done = conn.execute(update(api_keys).where(
        c.id == owner,
        or_(c.credits.is_(None), c.credits - c.credits_used >= images),
        # A hair of slack: cost units are floats and a key given exactly a request's cost must afford it.
        or_(c.compute_credits.is_(None), c.compute_credits - c.compute_used >= cost - 1e-6),
    ).values(credits_used=c.credits_used + images, compute_used=c.compute_used + cost)).rowcount
    if not done:
        fresh = conn.execute(select(c.credits, c.credits_used, c.compute_credits, c.compute_used)
                             .where(c.id == owner)).first() or row
        if fresh.credits is not None and fresh.credits - fresh.credits_used < images:
            left = max(0, fresh.credits - fresh.credits_used)
            raise InsufficientCredits(f"this API key has {left} image credit(s) left; the request needs {images}")
        left_units = max(0.0, (fresh.compute_credits or 0.0) - fresh.compute_used)
        raise InsufficientCredits(f"this API key has {left_units:g} compute credit(s) left; the request costs "
                                  f"{cost:g} (see docs/jobs.md, 'Cost')")
    return images


def refund(conn: Connection, owner: str | None, images: int, cost: float = 0.0) -> None:
    """Give back what a job that did not succeed (failed or canceled) was charged."""
    if owner is None or (images <= 0 and cost <= 0):
        return
    c = api_keys.c
    conn.execute(update(api_keys).where(c.id == owner).values(
        credits_used=case((c.credits_used >= images, c.credits_used - images), else_=0),
        compute_used=case((c.compute_used >= cost, c.compute_used - cost), else_=0.0)))
